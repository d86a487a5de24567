/*
 * Randomized model test of the COW btree: a long run of mixed operations on the fs tree of a
 * SuperWriter (so through real transactions, allocators, commits and reopens) checked against
 * an in-memory sorted map after every operation, with structural invariants checked by walking
 * the tree at checkpoints.
 *
 * SCOUTFS_TEST_SEED replays a run; SCOUTFS_TEST_OPS sets the number of operations.
 */
import assert from 'node:assert/strict'
import {
  Btree,
  ITEM_DELETION,
  MAX_VAL_LEN,
  NODE_CAPACITY,
  keyDec,
  keyInc,
  type Item,
} from '../../node-agent/src/storage/btree.js'
import {
  KEY_SIZE,
  KeyType,
  MAX_KEY,
  MIN_KEY,
  Zone,
  keyToString,
  makeKey,
  type KeyField,
} from '../../node-agent/src/storage/format.js'
import { mkfs } from '../../node-agent/src/tools/mkfs.js'
import { SERVER_AVAIL_LOW, SuperWriter } from '../../node-agent/src/storage/super-writer.js'
import { MemDevice } from '../helpers/mem-device.js'
import { Rng, envInt, testRng } from '../helpers/rng.js'

const MiB = 1 << 20
const LOW_WATER = Math.floor(NODE_CAPACITY / 4)
const FSID = 0x5c0_7f5_7e57n

/* ---- the model: a sorted map of items ------------------------------------------------- */

interface MItem {
  key: Buffer
  val: Buffer
  seq: number
  flags: number
}

/* latin1 strings compare (as UTF-16 code units 0..255) exactly like the bytes they hold */
const ks = (k: Buffer): string => k.toString('latin1')

class Model {
  keys: string[] = []
  map = new Map<string, MItem>()

  get size(): number {
    return this.keys.length
  }

  /** first index whose key is >= k */
  lowerBound(k: string): number {
    let lo = 0
    let hi = this.keys.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.keys[mid]! < k) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  get(key: Buffer): MItem | undefined {
    return this.map.get(ks(key))
  }

  put(it: MItem): MItem | undefined {
    const k = ks(it.key)
    const old = this.map.get(k)
    if (!old) this.keys.splice(this.lowerBound(k), 0, k)
    this.map.set(k, it)
    return old
  }

  delete(key: Buffer): MItem | undefined {
    const k = ks(key)
    const old = this.map.get(k)
    if (old) {
      this.keys.splice(this.lowerBound(k), 1)
      this.map.delete(k)
    }
    return old
  }

  at(i: number): MItem {
    return this.map.get(this.keys[i]!)!
  }

  next(key: Buffer): MItem | undefined {
    const i = this.lowerBound(ks(key))
    return i < this.keys.length ? this.at(i) : undefined
  }

  prev(key: Buffer): MItem | undefined {
    const k = ks(key)
    let i = this.lowerBound(k)
    if (i >= this.keys.length || this.keys[i]! > k) i--
    return i >= 0 ? this.at(i) : undefined
  }

  range(start: Buffer, end: Buffer, reverse: boolean, limit: number): MItem[] {
    const out: MItem[] = []
    if (Buffer.compare(start, end) > 0) return out
    const s = ks(start)
    const e = ks(end)
    if (!reverse) {
      for (let i = this.lowerBound(s); i < this.keys.length && this.keys[i]! <= e && out.length < limit; i++)
        out.push(this.at(i))
    } else {
      let i = this.lowerBound(e)
      if (i >= this.keys.length || this.keys[i]! > e) i--
      for (; i >= 0 && this.keys[i]! >= s && out.length < limit; i--) out.push(this.at(i))
    }
    return out
  }

  all(): MItem[] {
    return this.keys.map((k) => this.map.get(k)!)
  }
}

function describeItem(it: Item | MItem | undefined): string {
  if (!it) return 'none'
  return `${keyToString(it.key)} seq ${it.seq} flags ${it.flags} val ${it.val.length}B`
}

function sameItem(got: Item | undefined, want: MItem | undefined, what: string): void {
  if (!want || !got) {
    assert.equal(describeItem(got), describeItem(want), what)
    return
  }
  if (!got.key.equals(want.key) || got.seq !== want.seq || got.flags !== want.flags || !got.val.equals(want.val))
    assert.fail(
      `${what}: got ${describeItem(got)}, want ${describeItem(want)}` +
        (got.val.equals(want.val) ? '' : ' (values differ)'),
    )
}

async function collect(it: AsyncIterable<Item>, limit = Infinity): Promise<Item[]> {
  const out: Item[] = []
  if (limit <= 0) return out
  for await (const x of it) {
    out.push(x)
    if (out.length >= limit) break
  }
  return out
}

function sameItems(got: Item[], want: MItem[], what: string): void {
  if (got.length !== want.length) {
    let i = 0
    while (i < got.length && i < want.length && got[i]!.key.equals(want[i]!.key)) i++
    assert.fail(
      `${what}: got ${got.length} items, want ${want.length}; first difference at ${i}: ` +
        `got ${describeItem(got[i])}, want ${describeItem(want[i])}`,
    )
  }
  for (let i = 0; i < got.length; i++) sameItem(got[i], want[i], `${what}, item ${i}`)
}

/* ---- structural invariants ------------------------------------------------------------ */

export interface TreeShape {
  height: number
  blocks: number
  leaves: number
  items: number
}

/**
 * Walk the tree and check what its comment promises: keys sorted and inside the bounds their
 * parent gives, parents' last key equal to their bound (MAX_KEY on the right spine), byte
 * counts right and within capacity, non-root nodes at least a quarter full, a parent root with
 * at least two children, no block referenced twice, and the leaves holding exactly `expect`.
 */
async function checkTree(tree: Btree, expect: MItem[] | undefined, what: string): Promise<TreeShape> {
  const bounds = new Map<number, { lo: Buffer | undefined; hi: Buffer }>()
  const seen = new Set<number>()
  const items: Item[] = []
  const shape: TreeShape = { height: tree.root.height, blocks: 0, leaves: 0, items: 0 }
  await tree.walk((n, ref, depth) => {
    const where = `${what}: block ${ref.blkno} (depth ${depth}, level ${n.level})`
    assert.ok(!seen.has(ref.blkno), `${where} is referenced twice`)
    seen.add(ref.blkno)
    shape.blocks++
    assert.equal(n.blkno, ref.blkno, `${where}: node blkno`)
    assert.equal(n.seq, ref.seq, `${where}: node seq`)
    assert.equal(n.level, tree.root.height - 1 - depth, `${where}: level vs depth`)
    const b = depth === 0 ? { lo: undefined, hi: MAX_KEY } : bounds.get(ref.blkno)
    assert.ok(b, `${where}: no bounds recorded by its parent`)
    assert.ok(n.nr > 0, `${where} is empty`)
    let bytes = 0
    for (let i = 0; i < n.nr; i++) {
      const k = n.keys[i]!
      assert.equal(k.length, KEY_SIZE, `${where}: key ${i} size`)
      if (i > 0) assert.ok(Buffer.compare(n.keys[i - 1]!, k) < 0, `${where}: keys ${i - 1} and ${i} out of order`)
      if (b.lo)
        assert.ok(Buffer.compare(k, b.lo) > 0, `${where}: key ${keyToString(k)} <= lower bound ${keyToString(b.lo)}`)
      assert.ok(Buffer.compare(k, b.hi) <= 0, `${where}: key ${keyToString(k)} > upper bound ${keyToString(b.hi)}`)
      bytes += n.itemBytes(i)
    }
    assert.equal(n.bytes, bytes, `${where}: byte count`)
    assert.ok(n.bytes <= NODE_CAPACITY, `${where}: ${n.bytes} bytes exceed capacity ${NODE_CAPACITY}`)
    if (depth > 0) assert.ok(n.bytes >= LOW_WATER, `${where}: ${n.bytes} bytes, under a quarter full (${LOW_WATER})`)
    if (n.isLeaf) {
      shape.leaves++
      for (let i = 0; i < n.nr; i++)
        items.push({ key: n.keys[i]!, seq: n.seqs[i]!, flags: n.flags[i]!, val: n.vals[i]! })
    } else {
      if (depth === 0) assert.ok(n.nr >= 2, `${where}: a parent root with ${n.nr} child`)
      assert.ok(n.keys[n.nr - 1]!.equals(b.hi), `${where}: last key ${keyToString(n.keys[n.nr - 1]!)} is not its bound`)
      for (let i = 0; i < n.nr; i++) bounds.set(n.refs[i]!.blkno, { lo: i > 0 ? n.keys[i - 1] : b.lo, hi: n.keys[i]! })
    }
  })
  shape.items = items.length
  if (tree.root.height === 0) assert.equal(shape.blocks, 0, `${what}: empty root`)
  if (expect) sameItems(items, expect, `${what}: leaf contents`)
  return shape
}

/* ---- the workload ---------------------------------------------------------------------- */

type KeyMode = 'small' | 'medium' | 'wide' | 'ascending'

const ZONES = Object.values(Zone)
const TYPES = [...new Set(Object.values(KeyType))]

class Workload {
  ascending = 0

  constructor(readonly rng: Rng) {}

  field(): KeyField {
    const r = this.rng
    switch (r.int(6)) {
      case 0:
        return 0
      case 1:
        return r.int(16)
      case 2:
        return r.int(2 ** 32)
      case 3:
        return r.int(2 ** 53)
      case 4:
        return r.u64() // hashes use all 64 bits
      default:
        return 0xffffffffffffffffn
    }
  }

  key(mode: KeyMode): Buffer {
    const r = this.rng
    switch (mode) {
      case 'small':
        return makeKey(Zone.FS, r.int(4), r.pick([KeyType.INODE, KeyType.XATTR, KeyType.DIRENT]), r.int(32))
      case 'medium':
        return makeKey(r.pick([Zone.FS, Zone.INODE_INDEX]), r.int(3000), r.pick(TYPES), r.int(8), r.int(4))
      case 'ascending':
        return makeKey(Zone.FS, 1000 + this.ascending++, KeyType.DATA_EXTENT, r.int(2))
      case 'wide': {
        if (r.bool(0.002)) return Buffer.from(r.bool() ? MIN_KEY : MAX_KEY)
        return makeKey(
          r.bool(0.9) ? r.pick(ZONES) : r.int(256),
          this.field(),
          r.int(256),
          this.field(),
          this.field(),
          this.field(),
        )
      }
    }
  }

  valLen(): number {
    const r = this.rng
    switch (r.weighted([25, 30, 25, 12, 8])) {
      case 0:
        return r.int(17)
      case 1:
        return r.range(17, 256)
      case 2:
        return r.range(257, 1500)
      case 3:
        return r.range(1501, MAX_VAL_LEN - 1)
      default:
        return r.bool(0.7) ? MAX_VAL_LEN : 0
    }
  }

  val(len: number, op: number): Buffer {
    const b = Buffer.alloc(len, this.rng.int(256))
    if (len >= 4) b.writeUInt32LE(op, 0)
    if (len >= 8) b.writeUInt32LE(this.rng.u32(), len - 4)
    if (len > 0 && len < 4) this.rng.bytes(len).copy(b)
    return b
  }
}

interface Phase {
  name: string
  mode: KeyMode
  /** weights: put new, put replace, delete present, delete absent, lookup, next, prev, range */
  weights: [number, number, number, number, number, number, number, number]
  ops: number
}

function pickPhase(rng: Rng, size: number, maxItems: number): Phase {
  const ops = rng.range(2000, 8000)
  if (size > maxItems) return { name: 'shrink', mode: 'wide', weights: [4, 4, 60, 4, 8, 6, 6, 8], ops }
  const p = rng.int(6)
  if (p === 0) return { name: 'grow-wide', mode: 'wide', weights: [45, 10, 8, 3, 10, 8, 8, 8], ops }
  if (p === 1) return { name: 'churn-small', mode: 'small', weights: [25, 20, 25, 8, 8, 5, 5, 4], ops }
  if (p === 2) return { name: 'grow-medium', mode: 'medium', weights: [35, 15, 15, 5, 10, 7, 7, 6], ops }
  if (p === 3) return { name: 'append', mode: 'ascending', weights: [50, 5, 10, 2, 10, 8, 8, 7], ops }
  if (p === 4) return { name: 'shrink', mode: 'wide', weights: [5, 5, 55, 5, 10, 7, 6, 7], ops }
  return { name: 'read-mostly', mode: 'medium', weights: [10, 10, 10, 5, 25, 15, 15, 10], ops }
}

async function readAll(tree: Btree, reverse = false): Promise<Item[]> {
  return collect(tree.range(MIN_KEY, MAX_KEY, { reverse }))
}

async function newFs(metaBytes: number, dataBytes: number): Promise<{ meta: MemDevice; data: MemDevice }> {
  const meta = new MemDevice(metaBytes, 'meta')
  const data = new MemDevice(dataBytes, 'data')
  await mkfs(meta, data, { quorumSlots: 1, fsid: FSID })
  return { meta, data }
}

describe('btree against a model', function () {
  this.timeout(300_000)

  it('matches a sorted map over a long random run of mixed operations', async () => {
    const rng = testRng('btree model')
    const totalOps = envInt('SCOUTFS_TEST_OPS', 100_000)
    const { meta } = await newFs(256 * MiB, 64 * MiB)
    const wl = new Workload(rng)
    const model = new Model()
    const maxItems = 12_000

    let w = await SuperWriter.open(meta, 1024)
    await w.begin()
    for (const it of await readAll(w.fs)) model.put({ ...it, key: Buffer.from(it.key), val: Buffer.from(it.val) }) // mkfs's items
    let phase = pickPhase(rng, 0, maxItems)
    let phaseLeft = phase.ops
    let sinceCommit = 0
    let commitEvery = rng.range(200, 3000)
    let commits = 0
    let reopens = 0
    let checks = 0
    let maxHeight = 0
    let emptied = 0
    let lastCheck = 0
    const counts = new Map<string, number>()
    const count = (k: string): void => void counts.set(k, (counts.get(k) ?? 0) + 1)

    const fullCheck = async (what: string): Promise<void> => {
      checks++
      const all = model.all()
      const shape = await checkTree(w.fs, all, what)
      maxHeight = Math.max(maxHeight, shape.height)
      sameItems(await readAll(w.fs), all, `${what}: forward scan`)
      sameItems(await readAll(w.fs, true), all.slice().reverse(), `${what}: reverse scan`)
    }

    /** a key for reads and deletes: present, absent, or next to a present one */
    const probeKey = (): Buffer => {
      const r = rng.int(10)
      if (model.size > 0 && r < 5) {
        const k = model.at(rng.int(model.size)).key
        if (r === 3) return keyInc(k)
        if (r === 4) return keyDec(k)
        return Buffer.from(k)
      }
      return wl.key(r === 9 ? 'wide' : phase.mode)
    }

    for (let op = 0; op < totalOps; op++) {
      if (phaseLeft-- <= 0) {
        phase = pickPhase(rng, model.size, maxItems)
        phaseLeft = phase.ops
        // now and then empty the whole tree, to take the root down to nothing and back
        if (rng.bool(0.15) && model.size < 6000) {
          for (const k of rng.shuffle(model.all().map((m) => m.key))) {
            if (w.availBlocks < SERVER_AVAIL_LOW) await w.reserve()
            sameItem(await w.fs.delete(k), model.delete(k), `draining delete ${keyToString(k)}`)
          }
          assert.equal(w.fs.root.height, 0, 'a drained tree has an empty root')
          emptied++
        }
      }
      if (w.availBlocks < SERVER_AVAIL_LOW) await w.reserve()

      const kind = rng.weighted(phase.weights)
      switch (kind) {
        case 0: // put, usually new
        case 1: {
          if (rng.bool(0.03)) {
            // a commit's batch: putSorted of up to 300 items in key order, new and replacing
            const batch = new Map<string, MItem>()
            for (let n = rng.range(1, 300); n > 0; n--) {
              const replace = model.size > 0 && rng.bool(0.3)
              const key = replace ? Buffer.from(model.at(rng.int(model.size)).key) : wl.key(phase.mode)
              const it: MItem = {
                key,
                val: wl.val(wl.valLen(), op),
                seq: rng.int(2 ** 53),
                flags: rng.bool(0.1) ? ITEM_DELETION : 0,
              }
              batch.set(ks(key), it)
            }
            const sorted = [...batch.keys()].sort().map((k) => batch.get(k)!)
            await w.fs.putSorted(sorted)
            for (const it of sorted) count(model.put(it) ? 'batch-replace' : 'batch-insert')
            break
          }
          // put, replacing when there is something to replace
          const replace = kind === 1 && model.size > 0
          const key = replace ? Buffer.from(model.at(rng.int(model.size)).key) : wl.key(phase.mode)
          const val = wl.val(wl.valLen(), op)
          const it: MItem = {
            key: Buffer.from(key),
            val: Buffer.from(val),
            seq: rng.int(2 ** 53),
            flags: rng.bool(0.1) ? ITEM_DELETION : 0,
          }
          const old = await w.fs.put(key, val, it.seq, it.flags)
          // the tree must have copied what it keeps: callers reuse their buffers
          key.fill(0xa5)
          val.fill(0x5a)
          sameItem(old, model.put(it), `put ${keyToString(it.key)} returned`)
          count(old ? 'replace' : 'insert')
          break
        }
        case 2:
        case 3: {
          if (rng.bool(0.03) && model.size > 0) {
            // a merge's slice: deleteSorted of a run of present keys (from a random start, or
            // the tree's first items, as a merge consumes them), and some absent ones
            const keys = new Map<string, Buffer>()
            const from = rng.bool(0.5) ? 0 : rng.int(model.size)
            for (let j = from, n = rng.range(1, 400); j < model.size && n > 0; j++, n--) {
              const k = Buffer.from(model.at(j).key)
              keys.set(ks(k), k)
            }
            for (let n = rng.range(0, 5); n > 0; n--) {
              const k = probeKey()
              keys.set(ks(k), k)
            }
            const sorted = [...keys.keys()].sort().map((k) => keys.get(k)!)
            await w.fs.deleteSorted(sorted)
            for (const k of sorted) count(model.delete(k) ? 'batch-delete' : 'batch-delete-absent')
            break
          }
          const key = kind === 2 && model.size > 0 ? Buffer.from(model.at(rng.int(model.size)).key) : probeKey()
          const want = model.delete(key)
          sameItem(await w.fs.delete(key), want, `delete ${keyToString(key)} returned`)
          count(want ? 'delete' : 'delete-absent')
          break
        }
        case 4: {
          const key = probeKey()
          const want = model.get(key)
          sameItem(await w.fs.lookup(key), want, `lookup ${keyToString(key)}`)
          count(want ? 'lookup-hit' : 'lookup-miss')
          break
        }
        case 5: {
          const key = probeKey()
          sameItem(await w.fs.next(key), model.next(key), `next ${keyToString(key)}`)
          count('next')
          break
        }
        case 6: {
          const key = probeKey()
          sameItem(await w.fs.prev(key), model.prev(key), `prev ${keyToString(key)}`)
          count('prev')
          break
        }
        default: {
          let a = rng.bool(0.05) ? Buffer.from(MIN_KEY) : probeKey()
          let b = rng.bool(0.05) ? Buffer.from(MAX_KEY) : probeKey()
          if (rng.bool(0.9) && Buffer.compare(a, b) > 0) [a, b] = [b, a] // sometimes an empty (inverted) range
          const reverse = rng.bool()
          const limit = rng.bool(0.1) ? Infinity : rng.range(1, 300)
          const got = await collect(w.fs.range(a, b, { reverse }), limit)
          sameItems(
            got,
            model.range(a, b, reverse, limit),
            `range ${keyToString(a)}..${keyToString(b)}${reverse ? ' reverse' : ''}`,
          )
          count('range')
        }
      }

      if (++sinceCommit >= commitEvery || w.txn.dirtyBlocks > 600) {
        if (rng.bool(0.3)) await fullCheck(`before commit ${commits + 1} at op ${op}`)
        await w.commit()
        commits++
        sinceCommit = 0
        commitEvery = rng.range(200, 3000)
        if (rng.bool(0.3)) {
          // reopen from disk: a new writer with an empty cache must see exactly the model
          w = await SuperWriter.open(meta, rng.pick([64, 1024]))
          reopens++
          sameItems(await readAll(new Btree(w.sb.fsRoot, w.cache)), model.all(), `after reopen ${reopens} at op ${op}`)
        }
        await w.begin()
      }
      if (op - lastCheck >= 10_000) {
        lastCheck = op
        await fullCheck(`checkpoint at op ${op} (${phase.name})`)
      }
    }

    await fullCheck('end of run, uncommitted')
    await w.commit()
    commits++
    const w2 = await SuperWriter.open(meta, 256)
    await w2.begin()
    w = w2
    await fullCheck('end of run, reopened')
    w2.abort()

    console.log(
      `      ${totalOps} ops, ${commits} commits, ${reopens} reopens, ${checks} full checks, ` +
        `max height ${maxHeight}, emptied ${emptied}x, final ${model.size} items; ` +
        [...counts].map(([k, v]) => `${k} ${v}`).join(', '),
    )
    if (totalOps >= 50_000) {
      // the run must have exercised what it claims to
      assert.ok(maxHeight >= 2, 'the tree never grew past one leaf')
      for (const k of [
        'insert',
        'replace',
        'delete',
        'delete-absent',
        'lookup-hit',
        'lookup-miss',
        'next',
        'prev',
        'range',
      ])
        assert.ok((counts.get(k) ?? 0) > 100, `too few ${k} operations`)
    }
  })

  it('putSorted and deleteSorted refuse keys out of ascending order, and a repeated key', async () => {
    const { meta } = await newFs(64 * MiB, 16 * MiB)
    const w = await SuperWriter.open(meta, 256)
    await w.begin()
    const k = (n: number): Buffer => makeKey(Zone.FS, n, KeyType.INODE, 0)
    const item = (n: number): Item => ({ key: k(n), val: Buffer.from([n]), seq: 1, flags: 0 })
    await assert.rejects(w.fs.putSorted([item(5), item(4)]), /EINVAL.*ascending/)
    await assert.rejects(w.fs.putSorted([item(6), item(6)]), /EINVAL.*ascending/)
    await w.fs.putSorted([item(7), item(8)])
    assert.deepEqual((await w.fs.lookup(k(8)))?.val, Buffer.from([8]))
    await assert.rejects(w.fs.deleteSorted([k(8), k(7)]), /EINVAL.*ascending/)
    await w.fs.deleteSorted([k(7), k(8)])
    assert.equal(await w.fs.lookup(k(7)), undefined)
    assert.equal(await w.fs.lookup(k(8)), undefined)
  })

  it('grows to height 3 with large values and shrinks back to empty (half by deleteSorted from the first key)', async () => {
    const rng = testRng('btree tall tree')
    // sparse in memory: only written blocks cost memory
    const { meta } = await newFs(1024 * MiB, 16 * MiB)
    const wl = new Workload(rng)
    const model = new Model()
    let w = await SuperWriter.open(meta, 512)
    await w.begin()
    for (const it of await readAll(w.fs)) model.put({ ...it, key: Buffer.from(it.key), val: Buffer.from(it.val) }) // mkfs's items
    const step = async (op: number): Promise<void> => {
      if (w.availBlocks < SERVER_AVAIL_LOW) await w.reserve()
      if (op % 2500 === 2499) {
        await w.commit()
        await w.begin()
      }
    }

    // ascending keys fill leaves only half before they split: few items make many leaves
    let op = 0
    while (w.fs.root.height < 3) {
      const key = wl.key('ascending')
      const val = wl.val(rng.bool(0.8) ? MAX_VAL_LEN : rng.range(2000, MAX_VAL_LEN), op)
      const it = { key, val, seq: op, flags: 0 }
      assert.equal(await w.fs.put(key, val, op, 0), undefined)
      model.put(it)
      await step(op++)
      assert.ok(op < 40_000, 'the tree did not reach height 3')
    }
    // and some random inserts and replaces in between
    for (let i = 0; i < 2000; i++, op++) {
      const replace = rng.bool(0.5)
      const key = replace
        ? Buffer.from(model.at(rng.int(model.size)).key)
        : makeKey(Zone.FS, 1000 + rng.int(wl.ascending), KeyType.DATA_EXTENT, 2 + rng.int(1000))
      const it = { key, val: wl.val(wl.valLen(), op), seq: op, flags: 0 }
      sameItem(await w.fs.put(key, it.val, op, 0), model.put(it), 'put')
      await step(op)
    }
    let shape = await checkTree(w.fs, model.all(), 'tall tree')
    assert.equal(shape.height, 3)
    await w.commit()
    w = await SuperWriter.open(meta, 512)
    await w.begin()
    shape = await checkTree(w.fs, model.all(), 'tall tree reopened')
    console.log(`      ${model.size} items in ${shape.leaves} leaves, ${shape.blocks} blocks, height ${shape.height}`)

    // the first half in sorted slices from the first key, as a merge consumes a finalized tree
    const first = model
      .all()
      .slice(0, model.size >> 1)
      .map((m) => Buffer.from(m.key))
    for (let at = 0; at < first.length; at += 64) {
      const slice = first.slice(at, at + 64)
      await w.fs.deleteSorted(slice)
      for (const k of slice) assert.ok(model.delete(k), `deleteSorted: ${keyToString(k)} was in the model`)
      await step(op++)
      if ((at / 64) % 25 === 0) await checkTree(w.fs, model.all(), `after deleteSorted of ${at + slice.length}`)
    }
    await checkTree(w.fs, model.all(), `after deleteSorted of the first half`)
    // the rest in random order, watching the height come down
    const keys = rng.shuffle(model.all().map((m) => m.key))
    let height = w.fs.root.height
    for (const [i, k] of keys.entries()) {
      sameItem(await w.fs.delete(k), model.delete(k), `delete ${keyToString(k)}`)
      await step(op++)
      if (w.fs.root.height !== height || i % 4000 === 0) {
        assert.ok(w.fs.root.height <= height, 'deletes grew the tree')
        height = w.fs.root.height
        await checkTree(w.fs, model.all(), `after ${i + 1} deletes (height ${height})`)
      }
    }
    assert.equal(w.fs.root.height, 0)
    assert.equal(model.size, 0)
    await w.commit()
    w = await SuperWriter.open(meta)
    assert.equal(w.sb.fsRoot.height, 0)
    assert.equal((await readAll(new Btree(w.sb.fsRoot, w.cache))).length, 0)
  })
})
