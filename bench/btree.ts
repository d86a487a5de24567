/*
 * Btree benchmark: the fs tree of a SuperWriter on file-backed devices, against an in-memory
 * baseline (a JS Map plus a sorted array) running the same workload in the same process.
 *
 *   npm run bench:btree                       1,000,000 items, 64-byte values
 *   node dist/bench/btree.js --items 200000 --value-size 128 --commit-every 20000 --dir /tmp
 *   BENCH_ITEMS=200000 BENCH_VALUE_SIZE=128 BENCH_COMMIT_EVERY=20000 BENCH_DIR=/tmp  (same, by env)
 *   --json                                    also print the figures as one JSON line
 *
 * Workload: random keys (a bijective hash of the item number, so all distinct) inserted in
 * transactions of `commit-every` puts; point lookups of random existing keys, first with the
 * block cache cold (a fresh SuperWriter.open: every block is read and validated again; the
 * kernel's page cache still holds the file) and then warm; full forward and reverse range
 * scans; deletes of every item in random order, in transactions like the inserts.  Metadata
 * per item is the fs tree's blocks (found by walking it) times 64 KiB over the item count.
 * The block cache is sized to hold the tree twice over (--cache-blocks overrides): with
 * SuperWriter's default of 1024 blocks a 1M-item tree (~2,100 blocks) does not fit, and warm
 * lookups and copy-on-write would measure cache misses instead.
 *
 * Temp files live in a fresh directory under --dir (default: the OS temp dir) and are removed
 * at the end, also on failure or Ctrl-C.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { open as fopen } from 'node:fs/promises'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { Btree, btreeCountersOf, MAX_VAL_LEN } from '../node-agent/src/storage/btree.js'
import { FileDevice } from '../node-agent/src/storage/device.js'
import {
  KEY_SIZE,
  KeyType,
  MAX_KEY,
  META_BLOCK_SIZE,
  MIN_DATA_BLOCKS,
  MIN_KEY,
  MIN_META_BLOCKS,
  DATA_BLOCK_SIZE,
  Zone,
  makeKey,
} from '../node-agent/src/storage/format.js'
import { mkfs } from '../node-agent/src/tools/mkfs.js'
import { SuperWriter } from '../node-agent/src/storage/super-writer.js'

/* ---- options ------------------------------------------------------------------------------ */

interface Options {
  items: number
  valueSize: number
  commitEvery: number
  coldLookups: number
  cacheBlocks: number
  dir: string
  json: boolean
}

function parseOptions(argv: string[]): Options {
  const arg = (name: string): string | undefined => {
    const i = argv.indexOf(`--${name}`)
    if (i >= 0) return argv[i + 1]
    const eq = argv.find((a) => a.startsWith(`--${name}=`))
    return eq?.slice(name.length + 3)
  }
  const int = (name: string, env: string, def: number, min: number, max: number): number => {
    const raw = arg(name) ?? process.env[env]
    if (raw === undefined || raw === '') return def
    const v = Number(raw.replace(/_/g, ''))
    if (!Number.isInteger(v) || v < min || v > max) {
      console.error(`--${name} (${env}) must be an integer from ${min} to ${max}, not ${raw}`)
      process.exit(2)
    }
    return v
  }
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(
      'usage: node dist/bench/btree.js [--items N] [--value-size BYTES] [--commit-every N] ' +
        '[--cold-lookups N] [--cache-blocks N] [--dir DIR] [--json]\n' +
        '   env: BENCH_ITEMS BENCH_VALUE_SIZE BENCH_COMMIT_EVERY BENCH_COLD_LOOKUPS BENCH_CACHE_BLOCKS BENCH_DIR BENCH_JSON=1',
    )
    process.exit(0)
  }
  const items = int('items', 'BENCH_ITEMS', 1_000_000, 1, 0xffffffff)
  const valueSize = int('value-size', 'BENCH_VALUE_SIZE', 64, 0, MAX_VAL_LEN)
  // room for the whole tree twice over (estimated at 60% full leaves), so "warm" means warm
  const treeEstimate = Math.ceil((items * (KEY_SIZE + 11 + valueSize)) / (0.6 * META_BLOCK_SIZE))
  return {
    items,
    valueSize,
    commitEvery: int('commit-every', 'BENCH_COMMIT_EVERY', 50_000, 1, Number.MAX_SAFE_INTEGER),
    coldLookups: Math.min(items, int('cold-lookups', 'BENCH_COLD_LOOKUPS', 10_000, 1, Number.MAX_SAFE_INTEGER)),
    cacheBlocks: int('cache-blocks', 'BENCH_CACHE_BLOCKS', Math.max(4096, 2 * treeEstimate), 16, 1 << 24),
    dir: arg('dir') ?? process.env.BENCH_DIR ?? tmpdir(),
    json: argv.includes('--json') || process.env.BENCH_JSON === '1',
  }
}

/* ---- workload ----------------------------------------------------------------------------- */

/** murmur3's 32-bit finalizer: a bijection, so distinct item numbers give distinct keys */
function mix32(h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** a small seeded PRNG (xorshift32) so every run does the same work */
function prng(seed: number): () => number {
  let s = seed >>> 0 || 1
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 0x100000000
  }
}

interface Workload {
  keys: Buffer[] // item i's key
  vals: Buffer[] // item i's value (views into one random pool)
  lookupOrder: Uint32Array // random item numbers, with repeats
  deleteOrder: Uint32Array // a permutation of the item numbers
}

function makeWorkload(o: Options): Workload {
  const rand = prng(0x5c0f75)
  const keyBuf = Buffer.allocUnsafe(o.items * KEY_SIZE)
  const keys: Buffer[] = new Array(o.items)
  for (let i = 0; i < o.items; i++) {
    // inode numbers above 2^32: clear of whatever mkfs puts in the fs tree (the root inode)
    const k = makeKey(Zone.FS, 0x100000000 + mix32(i ^ 0x2545f491), KeyType.INODE)
    k.copy(keyBuf, i * KEY_SIZE)
    keys[i] = keyBuf.subarray(i * KEY_SIZE, (i + 1) * KEY_SIZE)
  }
  const poolSize = 1 << 20
  const pool = Buffer.allocUnsafe(poolSize + o.valueSize)
  for (let i = 0; i < pool.length; i++) pool[i] = (rand() * 256) | 0
  const vals: Buffer[] = new Array(o.items)
  for (let i = 0; i < o.items; i++) {
    const off = (i * 7919) % poolSize
    vals[i] = pool.subarray(off, off + o.valueSize)
  }
  const lookupOrder = new Uint32Array(o.items)
  for (let i = 0; i < o.items; i++) lookupOrder[i] = Math.floor(rand() * o.items)
  const deleteOrder = new Uint32Array(o.items)
  for (let i = 0; i < o.items; i++) deleteOrder[i] = i
  for (let i = o.items - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1))
    const t = deleteOrder[i]!
    deleteOrder[i] = deleteOrder[j]!
    deleteOrder[j] = t
  }
  return { keys, vals, lookupOrder, deleteOrder }
}

/* ---- measurement helpers ------------------------------------------------------------------ */

function check(cond: boolean, what: string): void {
  if (!cond) throw new Error(`benchmark self-check failed: ${what}`)
}

/** Wall time, and the share of it this process spent on a CPU (low: the machine is busy, or I/O). */
async function timed<T>(fn: () => Promise<T> | T): Promise<{ ms: number; cpu: number; result: T }> {
  const t0 = performance.now()
  const c0 = process.cpuUsage()
  const result = await fn()
  const ms = performance.now() - t0
  const c = process.cpuUsage(c0)
  return { ms, cpu: (c.user + c.system) / 1000 / ms, result }
}

const fmtCpu = (share: number): string => `${Math.round(share * 100)}%`
const fmtLoad = (): string =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(' ')

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US')
function fmtRate(n: number): string {
  if (!Number.isFinite(n)) return '-'
  if (n >= 100) return fmtInt(n)
  return n.toPrecision(3)
}
function fmtRatio(r: number): string {
  if (!Number.isFinite(r)) return '-'
  return r >= 10 ? `${r.toFixed(0)}x` : r >= 1 ? `${r.toFixed(1)}x` : `${r.toFixed(2)}x`
}
function fmtMs(ms: number): string {
  return ms >= 10_000 ? `${(ms / 1000).toFixed(1)} s` : `${ms.toFixed(0)} ms`
}

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)))
  const line = (cells: string[]): string =>
    cells.map((s, c) => (c === 0 ? s.padEnd(w[c]!) : s.padStart(w[c]!))).join('  ')
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n')
}

/* ---- the in-memory baseline --------------------------------------------------------------- */

interface BaselineResult {
  insertMs: number
  sortMs: number
  lookupMs: number
  scanMs: number
  reverseScanMs: number
  deleteMs: number
}

function runBaseline(o: Options, wl: Workload): BaselineResult {
  const n = o.items
  const map = new Map<string, Buffer>()
  // inserts: same key buffers, value copied like Btree.put copies it
  let t0 = performance.now()
  for (let i = 0; i < n; i++) map.set(wl.keys[i]!.toString('latin1'), Buffer.from(wl.vals[i]!))
  const insertMs = performance.now() - t0
  check(map.size === n, `baseline holds ${map.size} items, expected ${n}`)

  // the sorted array a range scan needs (latin1 strings compare like the key bytes)
  t0 = performance.now()
  const sorted: Array<[string, Buffer]> = [...map.keys()].sort().map((k) => [k, map.get(k)!])
  const sortMs = performance.now() - t0

  t0 = performance.now()
  let found = 0
  for (let i = 0; i < n; i++) if (map.get(wl.keys[wl.lookupOrder[i]!]!.toString('latin1')) !== undefined) found++
  const lookupMs = performance.now() - t0
  check(found === n, `baseline found ${found} of ${n} lookups`)

  t0 = performance.now()
  let bytes = 0
  let prev = ''
  for (const [k, v] of sorted) {
    check(k > prev, 'baseline scan out of order')
    prev = k
    bytes += v.length
  }
  const scanMs = performance.now() - t0
  t0 = performance.now()
  prev = '\uffff'
  for (let i = sorted.length - 1; i >= 0; i--) {
    const [k, v] = sorted[i]!
    check(k < prev, 'baseline reverse scan out of order')
    prev = k
    bytes += v.length
  }
  const reverseScanMs = performance.now() - t0
  check(bytes === 2 * n * o.valueSize, 'baseline scan byte count')

  t0 = performance.now()
  for (let i = 0; i < n; i++) map.delete(wl.keys[wl.deleteOrder[i]!]!.toString('latin1'))
  const deleteMs = performance.now() - t0
  check(map.size === 0, 'baseline not empty after deletes')
  return { insertMs, sortMs, lookupMs, scanMs, reverseScanMs, deleteMs }
}

/* ---- the btree run ------------------------------------------------------------------------ */

interface TreeShape {
  blocks: number
  leaves: number
  parents: number
  height: number
  leafBytes: number
}

async function treeShape(w: SuperWriter): Promise<TreeShape> {
  const s: TreeShape = { blocks: 0, leaves: 0, parents: 0, height: w.sb.fsRoot.height, leafBytes: 0 }
  await new Btree(w.sb.fsRoot, w.cache).walk((node) => {
    s.blocks++
    if (node.isLeaf) {
      s.leaves++
      s.leafBytes += node.bytes
    } else s.parents++
  })
  return s
}

async function countItems(t: Btree): Promise<number> {
  let n = 0
  for await (const _ of t.range(MIN_KEY, MAX_KEY)) n++
  return n
}

/** Run `n` operations in transactions of `commitEvery`, keeping the avail list stocked. */
async function inTransactions(
  w: SuperWriter,
  n: number,
  commitEvery: number,
  op: (i: number, seq: number) => Promise<unknown>,
): Promise<{ commits: number; commitMs: number; blocksWritten: number }> {
  let commits = 0
  let commitMs = 0 // commit and begin: writing the transaction and merging its frees into meta_alloc
  let blocksWritten = 0
  const commit = async (): Promise<void> => {
    const t0 = performance.now()
    const st = await w.commit()
    commitMs += performance.now() - t0
    blocksWritten += st.blocks
    commits++
  }
  const begin = async (): Promise<void> => {
    const t0 = performance.now()
    await w.begin()
    commitMs += performance.now() - t0
  }
  await begin()
  let seq = w.nextSeq()
  for (let i = 0; i < n; i++) {
    if (w.availBlocks < 300) await w.reserve()
    await op(i, seq)
    if ((i + 1) % commitEvery === 0 && i + 1 < n) {
      await commit()
      await begin()
      seq = w.nextSeq()
    }
  }
  await commit()
  return { commits, commitMs, blocksWritten }
}

async function createFile(path: string, size: number): Promise<void> {
  const fh = await fopen(path, 'w')
  try {
    await fh.truncate(size)
  } finally {
    await fh.close()
  }
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  const n = o.items
  const tmp = mkdtempSync(join(o.dir, 'scoutfs-bench-btree-'))
  const cleanup = (): void => rmSync(tmp, { recursive: true, force: true })
  const onSignal = (sig: NodeJS.Signals): void => {
    cleanup()
    process.kill(process.pid, sig)
  }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const devices: FileDevice[] = []
  const tStart = performance.now()
  const loadAtStart = fmtLoad()
  try {
    const itemPayload = KEY_SIZE + o.valueSize
    // room for the tree at worst half full, its copy-on-write copy in the open transaction and the
    // blocks freed by the previous one, plus the allocator's own trees
    const metaBlocks = Math.max(
      4 * MIN_META_BLOCKS,
      Math.ceil((n * (itemPayload + 11) * 2 * 4) / META_BLOCK_SIZE) + 4 * MIN_META_BLOCKS,
    )
    const metaPath = join(tmp, 'meta')
    const dataPath = join(tmp, 'data')
    await createFile(metaPath, metaBlocks * META_BLOCK_SIZE)
    await createFile(dataPath, MIN_DATA_BLOCKS * DATA_BLOCK_SIZE)
    const meta = await FileDevice.open(metaPath)
    const data = await FileDevice.open(dataPath)
    devices.push(meta, data)
    await mkfs(meta, data, { quorumSlots: 1 })

    console.log(
      `scoutfs btree bench: ${fmtInt(n)} items, ${o.valueSize}-byte values, ${KEY_SIZE}-byte keys, ` +
        `commit every ${fmtInt(o.commitEvery)} ops`,
    )
    console.log(
      `  devices: ${tmp} (meta ${fmtInt((metaBlocks * META_BLOCK_SIZE) / 2 ** 20)} MiB sparse, ` +
        `${meta.direct ? 'O_DIRECT' : 'buffered'}), block cache ${fmtInt(o.cacheBlocks)} blocks, node ${process.version}`,
    )

    const wl = makeWorkload(o)

    // baseline first: it needs no disk, and its garbage is gone before the btree runs
    const base = runBaseline(o, wl)
    if (global.gc) global.gc()

    /* inserts */
    const w = await SuperWriter.open(meta, o.cacheBlocks)
    // mkfs may have put items of its own in the fs tree (the root directory); they stay put
    const baseItems = await countItems(new Btree(w.sb.fsRoot, w.cache))
    const ins = await timed(() =>
      inTransactions(w, n, o.commitEvery, (i, seq) => w.fs.put(wl.keys[i]!, wl.vals[i]!, seq)),
    )
    const shape = await treeShape(w)

    /* lookups: a fresh writer has an empty block cache */
    const r = await SuperWriter.open(meta, o.cacheBlocks)
    const tree = new Btree(r.sb.fsRoot, r.cache)
    const c0 = { ...r.cache.counters }
    const cold = await timed(async () => {
      let found = 0
      for (let i = 0; i < o.coldLookups; i++) {
        const it = await tree.lookup(wl.keys[wl.lookupOrder[i]!]!)
        if (it && it.val.length === o.valueSize) found++
      }
      return found
    })
    check(cold.result === o.coldLookups, `cold lookups found ${cold.result} of ${o.coldLookups}`)
    const coldMisses = r.cache.counters.cacheMisses - c0.cacheMisses
    const coldReads = r.cache.counters.reads - c0.reads
    const c1 = { ...r.cache.counters }
    const warm = await timed(async () => {
      let found = 0
      for (let i = 0; i < n; i++) {
        const j = wl.lookupOrder[i]!
        const it = await tree.lookup(wl.keys[j]!)
        if (it && it.val.length === o.valueSize) found++
      }
      return found
    })
    check(warm.result === n, `warm lookups found ${warm.result} of ${n}`)
    const warmMisses = r.cache.counters.cacheMisses - c1.cacheMisses
    const warmHits = r.cache.counters.cacheHits - c1.cacheHits
    // spot-check values
    for (let i = 0; i < Math.min(n, 1000); i++) {
      const j = wl.lookupOrder[i]!
      const it = await tree.lookup(wl.keys[j]!)
      check(!!it && it.val.equals(wl.vals[j]!), `value of item ${j}`)
    }

    /* scans */
    const fwd = await timed(async () => {
      let count = 0
      let prev: Buffer = Buffer.alloc(0)
      for await (const it of tree.range(MIN_KEY, MAX_KEY)) {
        if (Buffer.compare(prev, it.key) >= 0) throw new Error('forward scan out of order')
        prev = it.key
        count++
      }
      return count
    })
    check(fwd.result === n + baseItems, `forward scan saw ${fwd.result} of ${n + baseItems}`)
    const rev = await timed(async () => {
      let count = 0
      let prev: Buffer = MAX_KEY
      for await (const it of tree.range(MIN_KEY, MAX_KEY, { reverse: true })) {
        if (Buffer.compare(it.key, prev) >= 0) throw new Error('reverse scan out of order')
        prev = it.key
        count++
      }
      return count
    })
    check(rev.result === n + baseItems, `reverse scan saw ${rev.result} of ${n + baseItems}`)

    /* deletes, through the writer whose cache is warm */
    const del = await timed(() =>
      inTransactions(r, n, o.commitEvery, async (i) => {
        const old = await r.fs.delete(wl.keys[wl.deleteOrder[i]!]!)
        if (!old) throw new Error(`delete of item ${wl.deleteOrder[i]} found nothing`)
      }),
    )
    const left = await countItems(new Btree(r.sb.fsRoot, r.cache))
    check(left === baseItems, `fs tree holds ${left} items after deleting every item, expected ${baseItems}`)

    /* report */
    const rate = (ops: number, ms: number): number => (ops * 1000) / ms
    const bt = {
      inserts: rate(n, ins.ms),
      insertsNoCommit: rate(n, ins.ms - ins.result.commitMs),
      coldLookups: rate(o.coldLookups, cold.ms),
      warmLookups: rate(n, warm.ms),
      scan: rate(fwd.result, fwd.ms),
      reverseScan: rate(rev.result, rev.ms),
      deletes: rate(n, del.ms),
      deletesNoCommit: rate(n, del.ms - del.result.commitMs),
    }
    const bl = {
      inserts: rate(n, base.insertMs),
      insertsSorted: rate(n, base.insertMs + base.sortMs),
      lookups: rate(n, base.lookupMs),
      scan: rate(n, base.scanMs),
      reverseScan: rate(n, base.reverseScanMs),
      deletes: rate(n, base.deleteMs),
    }
    const metaPerItem = (shape.blocks * META_BLOCK_SIZE) / n
    const rows: string[][] = [
      [
        'inserts/s, random keys (incl. commits)',
        fmtRate(bt.inserts),
        fmtCpu(ins.cpu),
        fmtRate(bl.inserts),
        fmtRatio(bt.inserts / bl.inserts),
      ],
      ['  excluding commit+begin time', fmtRate(bt.insertsNoCommit), '', '', fmtRatio(bt.insertsNoCommit / bl.inserts)],
      [
        '  baseline incl. sorting into an array',
        '',
        '',
        fmtRate(bl.insertsSorted),
        fmtRatio(bt.inserts / bl.insertsSorted),
      ],
      [
        `lookups/s, cold cache (first ${fmtInt(o.coldLookups)})`,
        fmtRate(bt.coldLookups),
        fmtCpu(cold.cpu),
        fmtRate(bl.lookups),
        fmtRatio(bt.coldLookups / bl.lookups),
      ],
      [
        'lookups/s, warm cache',
        fmtRate(bt.warmLookups),
        fmtCpu(warm.cpu),
        fmtRate(bl.lookups),
        fmtRatio(bt.warmLookups / bl.lookups),
      ],
      ['range scan items/s, forward', fmtRate(bt.scan), fmtCpu(fwd.cpu), fmtRate(bl.scan), fmtRatio(bt.scan / bl.scan)],
      [
        'range scan items/s, reverse',
        fmtRate(bt.reverseScan),
        fmtCpu(rev.cpu),
        fmtRate(bl.reverseScan),
        fmtRatio(bt.reverseScan / bl.reverseScan),
      ],
      [
        'deletes/s, random order (incl. commits)',
        fmtRate(bt.deletes),
        fmtCpu(del.cpu),
        fmtRate(bl.deletes),
        fmtRatio(bt.deletes / bl.deletes),
      ],
      ['  excluding commit+begin time', fmtRate(bt.deletesNoCommit), '', '', fmtRatio(bt.deletesNoCommit / bl.deletes)],
      ['metadata bytes/item (tree blocks x 64 KiB)', metaPerItem.toFixed(1), '', '', ''],
      [
        'payload bytes/item (key + value)',
        String(itemPayload),
        '',
        '',
        fmtRatio(metaPerItem / itemPayload) + ' overhead',
      ],
    ]
    console.log()
    console.log(table(['', 'btree', 'cpu', 'Map baseline', 'btree/baseline'], rows))
    console.log()
    console.log(
      `  tree: height ${shape.height}, ${fmtInt(shape.blocks)} blocks (${fmtInt(shape.leaves)} leaves, ` +
        `${fmtInt(shape.parents)} parents), leaves ${((100 * shape.leafBytes) / (shape.leaves * (META_BLOCK_SIZE - 36))).toFixed(0)}% full, ` +
        `${(n / shape.leaves).toFixed(0)} items/leaf`,
    )
    console.log(
      `  inserts: ${fmtMs(ins.ms)}, ${ins.result.commits} commits (with begins) took ${fmtMs(ins.result.commitMs)} ` +
        `writing ${fmtInt(ins.result.blocksWritten)} blocks (${fmtInt((ins.result.blocksWritten * META_BLOCK_SIZE) / 2 ** 20)} MiB)`,
    )
    console.log(
      `  deletes: ${fmtMs(del.ms)}, ${del.result.commits} commits (with begins) took ${fmtMs(del.result.commitMs)} ` +
        `writing ${fmtInt(del.result.blocksWritten)} blocks`,
    )
    console.log(
      `  lookups: cold ${fmtInt(coldMisses)} cache misses (${fmtInt(coldReads)} device reads; the kernel page cache ` +
        `was warm), warm ${fmtInt(warmHits)} hits / ${fmtInt(warmMisses)} misses; scans ${fmtMs(fwd.ms)} fwd, ${fmtMs(rev.ms)} rev`,
    )
    console.log(
      `  baseline: Map<latin1 string, Buffer>, sorted entry array built in ${fmtMs(base.sortMs)}; ` +
        `btree counters: inserts ${JSON.stringify(btreeCountersOf(w.cache))}, lookups and deletes ${JSON.stringify(btreeCountersOf(r.cache))}`,
    )
    console.log(
      `  cpu: this process's CPU time (all threads: GC, I/O) / wall time per phase, ${cpus().length} CPUs; well under 100%: the machine was busy ` +
        `or the phase waited for I/O; load average ${loadAtStart} at start, ${fmtLoad()} at the end`,
    )
    console.log(`  total ${fmtMs(performance.now() - tStart)}`)
    if (o.json)
      console.log(
        JSON.stringify({
          items: n,
          valueSize: o.valueSize,
          commitEvery: o.commitEvery,
          btree: bt,
          baseline: bl,
          metaBytesPerItem: metaPerItem,
          payloadBytesPerItem: itemPayload,
          tree: shape,
        }),
      )
  } finally {
    for (const d of devices) await d.close().catch(() => undefined)
    cleanup()
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
  }
}

main().catch((e: unknown) => {
  console.error(e instanceof Error ? (e.stack ?? e.message) : e)
  process.exit(1)
})
