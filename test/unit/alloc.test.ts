/*
 * Allocators: ExtentAlloc against a model bitmap, ListAllocator's free rules and persistence,
 * and the SuperWriter's promise that a block freed in a commit is not reused before that
 * commit is durable.
 */
import assert from 'node:assert/strict'
import { ExtentAlloc, ListAllocator, readList, type Extent } from '../../node-agent/src/storage/alloc.js'
import { BlockCache } from '../../node-agent/src/storage/block.js'
import { Btree, BtreeTxn, MAX_VAL_LEN } from '../../node-agent/src/storage/btree.js'
import { checkFilesystem } from '../../node-agent/src/tools/check.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import {
  DATA_FIRST_BLKNO,
  EMPTY_ROOT,
  KeyType,
  LIST_BLOCK_CAPACITY,
  MAX_KEY,
  META_BLOCK_SIZE,
  META_FIRST_BLKNO,
  MIN_KEY,
  Zone,
  makeKey,
  type AllocRoot,
} from '../../node-agent/src/storage/format.js'
import { mkfs } from '../../node-agent/src/tools/mkfs.js'
import { type SuperBlock } from '../../node-agent/src/storage/super.js'
import { SERVER_AVAIL_LOW, SuperWriter } from '../../node-agent/src/storage/super-writer.js'
import { MemDevice } from '../helpers/mem-device.js'
import { Rng, testRng } from '../helpers/rng.js'

const MiB = 1 << 20
const FSID = 0xa110c_a7e5n

async function rejects(p: Promise<unknown>, code: string, msg?: RegExp): Promise<FsError> {
  try {
    await p
  } catch (e) {
    assert.ok(e instanceof FsError, `expected an FsError, got ${String(e)}`)
    assert.equal(e.code, code, e.message)
    if (msg) assert.match(e.message, msg)
    return e
  }
  assert.fail(`expected ${code}, but it succeeded`)
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const x of it) out.push(x)
  return out
}

/** A standalone extent allocator whose btree lives on an in-memory device. */
class Harness {
  readonly dev = new MemDevice(64 * MiB, 'alloc-test')
  cache = new BlockCache(this.dev, FSID, 2048)
  readonly meta: ListAllocator
  txn: BtreeTxn

  constructor() {
    const avail: number[] = []
    for (let b = Math.floor(this.dev.size / META_BLOCK_SIZE) - 1; b >= META_FIRST_BLKNO; b--) avail.push(b)
    this.meta = new ListAllocator(avail, [], 'test meta')
    this.txn = new BtreeTxn(this.cache, this.meta)
  }

  alloc(name: string, root: AllocRoot = { root: EMPTY_ROOT, totalLen: 0 }): ExtentAlloc {
    return new ExtentAlloc(root, this.cache, this.txn, name)
  }

  /** Write the transaction, make its frees reusable, and reopen every allocator from disk. */
  async commitAndReopen(allocs: ExtentAlloc[]): Promise<ExtentAlloc[]> {
    await this.txn.write()
    this.meta.committed()
    this.meta.avail.push(...this.meta.freed.splice(0))
    this.cache = new BlockCache(this.dev, FSID, 2048)
    this.txn = new BtreeTxn(this.cache, this.meta)
    return allocs.map((a) => new ExtentAlloc(a.root, this.cache, this.txn, a.name))
  }
}

/**
 * The model: owner[b] is 0 when block BASE+b is allocated, else the index + 1 of the allocator
 * it is free in.
 */
const BASE = 1000

class BitmapModel {
  readonly owner: Uint8Array

  constructor(readonly n: number) {
    this.owner = new Uint8Array(n)
  }

  set(start: number, len: number, v: number): void {
    this.owner.fill(v, start - BASE, start - BASE + len)
  }

  all(start: number, len: number, v: number): boolean {
    for (let b = start - BASE; b < start - BASE + len; b++) if (this.owner[b] !== v) return false
    return true
  }

  /** maximal runs of blocks free in allocator `a`, by position */
  runs(a: number): Extent[] {
    const out: Extent[] = []
    for (let b = 0; b < this.n;) {
      if (this.owner[b] !== a) {
        b++
        continue
      }
      let e = b
      while (e < this.n && this.owner[e] === a) e++
      out.push({ start: BASE + b, len: e - b })
      b = e
    }
    return out
  }

  total(a: number): number {
    let n = 0
    for (let b = 0; b < this.n; b++) if (this.owner[b] === a) n++
    return n
  }

  /** the run of blocks with the same owner around block `at` */
  runAround(at: number): Extent {
    const v = this.owner[at - BASE]
    let s = at - BASE
    let e = s + 1
    while (s > 0 && this.owner[s - 1] === v) s--
    while (e < this.n && this.owner[e] === v) e++
    return { start: BASE + s, len: e - s }
  }

  /** what allocLargest(max) must return: the front of the largest run, lowest start on ties */
  largest(a: number, max: number): Extent | undefined {
    let best: Extent | undefined
    for (const r of this.runs(a)) if (!best || r.len > best.len) best = r
    return best && { start: best.start, len: Math.min(best.len, max) }
  }
}

const fmt = (es: Extent[]): string => es.map((e) => `${e.start}+${e.len}`).join(' ')

async function checkAlloc(a: ExtentAlloc, model: BitmapModel, id: number, what: string): Promise<void> {
  const want = model.runs(id)
  const byPos = await collect(a.extents())
  assert.equal(fmt(byPos), fmt(want), `${what}: ${a.name} extents by position`)
  const bySize = await collect(a.sizeIndex())
  const wantSize = want.slice().sort((x, y) => y.len - x.len || x.start - y.start)
  assert.equal(fmt(bySize), fmt(wantSize), `${what}: ${a.name} size index`)
  assert.equal(a.totalLen, model.total(id), `${what}: ${a.name} totalLen`)
  // nothing but the two indexes in the tree
  const items = await collect(a.btree.range(MIN_KEY, MAX_KEY))
  assert.equal(
    items.length,
    2 * want.length,
    `${what}: ${a.name} holds ${items.length} items for ${want.length} extents`,
  )
}

describe('ExtentAlloc', function () {
  this.timeout(120_000)

  it('merges a freed extent with its free neighbours on either side', async () => {
    const h = new Harness()
    const a = h.alloc('merge')
    await a.free(100, 10)
    await a.free(120, 10)
    assert.equal(fmt(await collect(a.extents())), '100+10 120+10')
    await a.free(110, 5) // merges left only
    assert.equal(fmt(await collect(a.extents())), '100+15 120+10')
    await a.free(116, 4) // merges right only
    assert.equal(fmt(await collect(a.extents())), '100+15 116+14')
    await a.free(115, 1) // merges both
    assert.equal(fmt(await collect(a.extents())), '100+30')
    assert.equal(fmt(await collect(a.sizeIndex())), '100+30')
    await a.free(99, 1)
    await a.free(130, 1)
    assert.equal(fmt(await collect(a.extents())), '99+32')
    assert.equal(a.totalLen, 32)
    await a.free(200, 1)
    await a.free(1, 1) // block numbers at the low end
    assert.equal(fmt(await collect(a.sizeIndex())), '99+32 1+1 200+1')
  })

  it('rejects a double free with EIO and leaves the allocator unchanged', async () => {
    const h = new Harness()
    const a = h.alloc('dbl')
    await a.free(100, 10)
    await a.free(200, 1)
    const before = fmt(await collect(a.extents()))
    for (const [s, l] of [
      [100, 10],
      [105, 1],
      [95, 6], // overlaps the first block
      [109, 5], // overlaps the last block
      [90, 30], // covers all of it
      [150, 51], // ends on a single free block
      [200, 1],
    ] as const) {
      const e = await rejects(a.free(s, l), 'EIO', new RegExp(`${s}\\+${l}`))
      assert.match(e.message, /already free/)
      assert.equal(fmt(await collect(a.extents())), before, `after freeing ${s}+${l}`)
      assert.equal(fmt(await collect(a.sizeIndex())), '100+10 200+1')
      assert.equal(a.totalLen, 11)
    }
    // and the blocks right next to free extents are still freeable
    await a.free(110, 90)
    assert.equal(fmt(await collect(a.extents())), '100+101')
  })

  it('allocExact takes exactly the blocks asked for, or fails with ENOSPC', async () => {
    const h = new Harness()
    const a = h.alloc('exact')
    await a.free(100, 50)
    await a.allocExact(110, 10)
    assert.equal(fmt(await collect(a.extents())), '100+10 120+30')
    await a.allocExact(100, 10) // a whole extent
    await a.allocExact(145, 5) // the tail of one
    assert.equal(fmt(await collect(a.extents())), '120+25')
    await rejects(a.allocExact(118, 4), 'ENOSPC')
    await rejects(a.allocExact(140, 6), 'ENOSPC')
    await rejects(a.allocExact(300, 1), 'ENOSPC')
    assert.equal(fmt(await collect(a.extents())), '120+25')
    assert.equal(a.totalLen, 25)
  })

  it('matches a model bitmap over random free, allocLargest, allocExact and moveTo', async () => {
    const rng = testRng('extent alloc model')
    const h = new Harness()
    const N = 20_000
    const model = new BitmapModel(N)
    let allocs = [h.alloc('A'), h.alloc('B')]
    const counts = new Map<string, number>()
    const count = (k: string): void => void counts.set(k, (counts.get(k) ?? 0) + 1)

    // a random block, biased toward the ones allocator `id` (or nobody, 0) owns
    const blockOwnedBy = (id: number): number | undefined => {
      for (let tries = 0; tries < 50; tries++) {
        const b = BASE + rng.int(N)
        if (model.owner[b - BASE] === id) return b
      }
      return undefined
    }
    const lenIn = (r: Extent, from: number): number => {
      const room = r.start + r.len - from
      return rng.bool(0.3) ? room : rng.range(1, Math.min(room, rng.pick([1, 8, 64, 1000])))
    }

    const OPS = 4000
    for (let op = 0; op < OPS; op++) {
      const id = rng.int(2) + 1
      const a = allocs[id - 1]!
      const what = `op ${op}`
      switch (rng.weighted([40, 8, 20, 12, 6, 2])) {
        case 0: {
          // free allocated blocks, sometimes a whole hole between free extents
          const b = blockOwnedBy(0)
          if (b === undefined) break
          const r = model.runAround(b)
          const start = rng.bool(0.3) ? r.start : b
          const len = lenIn(r, start)
          await a.free(start, len)
          model.set(start, len, id)
          count('free')
          break
        }
        case 1: {
          // double free: a range overlapping blocks free in this allocator
          const b = blockOwnedBy(id)
          if (b === undefined) break
          const start = Math.max(BASE, b - rng.int(20))
          const len = Math.min(b - start + 1 + rng.int(20), BASE + N - start)
          const before = a.totalLen
          await rejects(a.free(start, len), 'EIO', /already free/)
          assert.equal(a.totalLen, before)
          count('double-free')
          break
        }
        case 2: {
          const max = rng.pick([1, 7, 100, 5000, Number.MAX_SAFE_INTEGER])
          const want = model.largest(id, max)
          const got = await a.allocLargest(max)
          assert.equal(got && fmt([got]), want && fmt([want]), `${what}: allocLargest(${max}) from ${a.name}`)
          if (want) model.set(want.start, want.len, 0)
          count('allocLargest')
          break
        }
        case 3: {
          const b = rng.bool(0.7) ? blockOwnedBy(id) : BASE + rng.int(N)
          if (b === undefined) break
          const r = model.runAround(b)
          const len = Math.min(lenIn(r, b) + (rng.bool(0.2) ? rng.range(1, 10) : 0), BASE + N - b)
          const free = model.all(b, len, id)
          if (!free && rng.bool(0.5)) break
          if (free) {
            await a.allocExact(b, len)
            model.set(b, len, 0)
            count('allocExact')
          } else {
            await rejects(a.allocExact(b, len), 'ENOSPC')
            count('allocExact-busy')
          }
          break
        }
        case 4: {
          const other = allocs[2 - id]!
          const n = rng.bool(0.1) ? 1e9 : rng.pick([1, 50, 3000])
          let moved = 0
          while (moved < n) {
            const e = model.largest(id, n - moved)
            if (!e) break
            model.set(e.start, e.len, 3 - id)
            moved += e.len
          }
          assert.equal(await a.moveTo(other, n), moved, `${what}: moveTo(${n}) count`)
          count('moveTo')
          break
        }
        default:
          allocs = await h.commitAndReopen(allocs)
          count('reopen')
      }
      if (op % 500 === 0 || op === OPS - 1) {
        await checkAlloc(allocs[0]!, model, 1, what)
        await checkAlloc(allocs[1]!, model, 2, what)
      }
    }
    allocs = await h.commitAndReopen(allocs)
    await checkAlloc(allocs[0]!, model, 1, 'reopened at the end')
    await checkAlloc(allocs[1]!, model, 2, 'reopened at the end')
    console.log(`      ${[...counts].map(([k, v]) => `${k} ${v}`).join(', ')}`)
    for (const k of ['free', 'double-free', 'allocLargest', 'allocExact', 'allocExact-busy', 'moveTo', 'reopen'])
      assert.ok((counts.get(k) ?? 0) >= 20, `too few ${k}`)
  })
})

describe('ListAllocator', function () {
  it('returns blocks freed in the transaction that allocated them to avail, others to freed', () => {
    const la = new ListAllocator([10, 11, 12, 13], [], 'la')
    const a = la.alloc()
    const b = la.alloc()
    assert.deepEqual([a, b], [13, 12])
    la.free(a)
    assert.deepEqual(la.avail, [10, 11, 13])
    assert.deepEqual(la.freed, [])
    la.free(500) // a committed block
    assert.deepEqual(la.freed, [500])
    assert.equal(la.alloc(), 13) // the same block again, still fresh in this transaction
    la.free(13)
    assert.deepEqual(la.avail, [10, 11, 13])
    // after the transaction is durable, b is committed state: its free must wait
    la.committed()
    la.free(b)
    assert.deepEqual(la.freed, [500, 12])
    assert.deepEqual(la.avail, [10, 11, 13])
  })

  it('fails with ENOSPC when avail is empty', () => {
    const la = new ListAllocator([7], [], 'tiny')
    assert.equal(la.alloc(), 7)
    assert.throws(
      () => la.alloc(),
      (e: unknown) => e instanceof FsError && e.code === 'ENOSPC' && /tiny/.test(e.message),
    )
  })

  describe('persist and readList round trip', function () {
    const CAP = LIST_BLOCK_CAPACITY
    const cases: Array<[number, number]> = [
      [0, 0],
      [1, 0],
      [2, 0],
      [3, 0],
      [50, 1],
      [CAP - 1, 0],
      [CAP, 0],
      [CAP + 1, 0],
      [CAP + 2, 0],
      [CAP + 3, 0],
      [2 * CAP + 3, 0],
      [2 * CAP + 5, 2],
      [3 * CAP, CAP],
      [200, CAP + 1],
      [3 * CAP + 4, 2 * CAP + 1],
    ]
    for (const [nAvail, nFreed] of cases) {
      it(`keeps ${nAvail} avail and ${nFreed} freed entries`, async () => {
        const rng = new Rng(nAvail * 7919 + nFreed)
        const blocks = nAvail + META_FIRST_BLKNO + 1
        const dev = new MemDevice(blocks * META_BLOCK_SIZE, 'list-dev')
        const avail = rng.shuffle(Array.from({ length: nAvail }, (_, i) => META_FIRST_BLKNO + i))
        const freed = Array.from({ length: nFreed }, () => rng.int(2 ** 40) + 1)
        const la = new ListAllocator(avail.slice(), freed.slice(), 'persist')
        const p = la.persist(FSID)
        await new BlockCache(dev, FSID).writeBlocks(p.blocks.slice())

        const cache = new BlockCache(dev, FSID) // nothing cached: read from the device
        const ra = await readList(cache, p.avail)
        const rf = await readList(cache, p.freed)
        assert.deepEqual(rf.entries, freed, 'freed entries in order')
        assert.deepEqual(ra.entries, la.avail, 'avail entries as the allocator has them')
        assert.equal(p.avail.totalNr, ra.entries.length)
        assert.equal(p.freed.totalNr, nFreed)
        assert.equal(rf.blocks.length, Math.ceil(nFreed / CAP), 'freed list blocks')
        assert.ok(ra.blocks.length <= Math.ceil(ra.entries.length / CAP) + 1, 'avail list blocks')
        assert.equal(p.blocks.length, ra.blocks.length + rf.blocks.length, 'blocks written')
        // every avail block is exactly one of: still avail, holding the avail list, holding
        // the freed list -- none lost, none twice
        const listBlocks = [...ra.blocks, ...rf.blocks].map((r) => r.blkno)
        const all = [...ra.entries, ...listBlocks].sort((x, y) => x - y)
        assert.deepEqual(
          all,
          avail.slice().sort((x, y) => x - y),
          'avail blocks accounted for',
        )
      })
    }

    it('detects a list whose head claims more entries than its chain holds', async () => {
      const dev = new MemDevice(64 * META_BLOCK_SIZE, 'list-dev')
      const la = new ListAllocator(
        Array.from({ length: 40 }, (_, i) => 10 + i),
        [1, 2, 3],
      )
      const p = la.persist(FSID)
      await new BlockCache(dev, FSID).writeBlocks(p.blocks.slice())
      await rejects(readList(new BlockCache(dev, FSID), { ...p.freed, totalNr: 4 }), 'EIO', /head says 4/)
    })
  })
})

/* ---- the SuperWriter's reuse rule ---------------------------------------------------------- */

interface Accounting {
  referenced: Set<number>
  free: Set<number>
}

/** Every metadata block the super references, and every one it says is free; checks the partition. */
async function account(dev: MemDevice, sb: SuperBlock, what: string): Promise<Accounting> {
  const cache = new BlockCache(dev, sb.fsid, 256)
  const referenced = new Set<number>()
  const free = new Set<number>()
  const own = (set: Set<number>, b: number, why: string): void => {
    assert.ok(b >= META_FIRST_BLKNO && b < sb.totalMetaBlocks, `${what}: ${why} block ${b} out of range`)
    assert.ok(!referenced.has(b) && !free.has(b), `${what}: ${why} block ${b} is owned twice`)
    set.add(b)
  }
  for (const [name, root] of [
    ['fs', sb.fsRoot],
    ['logs', sb.logsRoot],
    ['mounted', sb.mountedClients],
    ['srch', sb.srchRoot],
    ['meta_alloc', sb.metaAlloc.root],
    ['data_alloc', sb.dataAlloc.root],
  ] as const)
    await new Btree(root, cache).walk((_n, ref) => own(referenced, ref.blkno, `${name} tree`))
  for (const [name, head] of [
    ['avail', sb.serverAvail],
    ['freed', sb.serverFreed],
  ] as const) {
    const l = await readList(cache, head)
    for (const r of l.blocks) own(referenced, r.blkno, `${name} list`)
    for (const b of l.entries) own(free, b, `on ${name} list`)
  }
  const ma = new ExtentAlloc(sb.metaAlloc, cache)
  for await (const e of ma.extents()) for (let b = e.start; b < e.start + e.len; b++) own(free, b, 'meta_alloc free')
  const missing: number[] = []
  for (let b = META_FIRST_BLKNO; b < sb.totalMetaBlocks; b++) if (!referenced.has(b) && !free.has(b)) missing.push(b)
  assert.deepEqual(missing.slice(0, 20), [], `${what}: ${missing.length} metadata blocks neither referenced nor free`)
  return { referenced, free }
}

describe('SuperWriter block reuse', function () {
  this.timeout(120_000)

  it('never writes or allocates a block the durable super references, yet reuses freed blocks', async () => {
    const rng = testRng('super writer reuse')
    const meta = new MemDevice(128 * MiB, 'meta')
    const data = new MemDevice(32 * MiB, 'data')
    await mkfs(meta, data, { quorumSlots: 1, fsid: FSID })
    let w = await SuperWriter.open(meta, 256)
    let durable = await account(meta, w.sb, 'after mkfs')
    /* every block any super ever referenced, to see that freed blocks do come back */
    const everReferenced = new Set(durable.referenced)
    const violations: string[] = []
    meta.onWrite = (off, len) => {
      for (let b = Math.floor(off / META_BLOCK_SIZE); b * META_BLOCK_SIZE < off + len; b++)
        if (durable.referenced.has(b))
          violations.push(`write at ${off}+${len} overwrites block ${b} of the durable super`)
    }
    const model = new Map<string, Buffer>()
    for await (const it of new Btree(w.sb.fsRoot, w.cache).range(MIN_KEY, MAX_KEY))
      model.set(it.key.toString('hex'), Buffer.from(it.val))
    let committed = new Map(model)
    const dataExtents: Extent[] = []
    let committedData: Extent[] = []
    let reused = 0
    let aborts = 0

    const checkDirty = (what: string): void => {
      for (const n of w.txn.dirty.values()) {
        assert.ok(
          !durable.referenced.has(n.blkno),
          `${what}: dirty block ${n.blkno} is referenced by the durable super`,
        )
      }
    }

    await w.begin()
    for (let t = 0; t < 60; t++) {
      const ops = rng.range(20, 400)
      for (let i = 0; i < ops; i++) {
        if (w.availBlocks < SERVER_AVAIL_LOW) await w.reserve()
        const key = makeKey(Zone.FS, 1_000_000 + rng.int(400), KeyType.XATTR, rng.int(8))
        const k = key.toString('hex')
        const r = rng.int(10)
        if (r < 6) {
          const val = Buffer.alloc(rng.bool(0.3) ? MAX_VAL_LEN : rng.int(1000), t)
          await w.fs.put(key, val, t, 0)
          model.set(k, val)
        } else if (r < 9) {
          await w.fs.delete(key)
          model.delete(k)
        } else if (rng.bool() || dataExtents.length === 0) {
          const e = await w.dataAlloc.allocLargest(rng.range(1, 64))
          assert.ok(e)
          dataExtents.push(e)
        } else {
          const [e] = dataExtents.splice(rng.int(dataExtents.length), 1)
          await w.dataAlloc.free(e!.start, e!.len)
        }
        if (i % 50 === 0) checkDirty(`txn ${t} op ${i}`)
      }
      checkDirty(`txn ${t} end`)
      for (const n of w.txn.dirty.values()) if (everReferenced.has(n.blkno)) reused++

      if (rng.bool(0.1)) {
        // an abandoned transaction changes nothing
        w.abort()
        aborts++
        model.clear()
        for (const [k, v] of committed) model.set(k, v)
        dataExtents.splice(0, dataExtents.length, ...committedData.map((e) => ({ ...e })))
      } else {
        await w.commit()
        committed = new Map(model)
        committedData = dataExtents.map((e) => ({ ...e }))
      }
      assert.deepEqual(violations, [], `txn ${t}`)
      if (rng.bool(0.2)) w = await SuperWriter.open(meta, 256)
      durable = await account(meta, w.sb, `after txn ${t}`)
      for (const b of durable.referenced) everReferenced.add(b)
      // data: what is not free in data_alloc is exactly what the model holds
      const dfree = await collect(new ExtentAlloc(w.sb.dataAlloc, new BlockCache(meta, FSID)).extents())
      const dtotal = dfree.reduce((s, e) => s + e.len, 0) + committedData.reduce((s, e) => s + e.len, 0)
      assert.equal(dtotal, w.sb.totalDataBlocks - DATA_FIRST_BLKNO, `after txn ${t}: data blocks accounted for`)
      // and the tree holds what was committed
      const items = await collect(new Btree(w.sb.fsRoot, w.cache).range(MIN_KEY, MAX_KEY))
      assert.equal(items.length, committed.size, `after txn ${t}: item count`)
      for (const it of items)
        assert.ok(committed.get(it.key.toString('hex'))?.equals(it.val), `after txn ${t}: item value`)
      await w.begin()
    }
    // give the data blocks back (the checker counts data blocks no file uses as leaked)
    for (const e of dataExtents) await w.dataAlloc.free(e.start, e.len)
    await w.commit()
    assert.deepEqual(violations, [], 'last commit')
    meta.onWrite = undefined
    console.log(`      ${reused} dirty blocks reused blocks of older supers, ${aborts} aborted transactions`)
    assert.ok(reused > 50, `freed blocks were never reused (${reused})`)
    const report = await checkFilesystem(meta, data)
    assert.deepEqual(report.problems, [])
    assert.equal(report.stats.freeDataBlocks, w.sb.totalDataBlocks - DATA_FIRST_BLKNO)
  })
})

describe('SuperWriter core counter', function () {
  it('never goes back below seqs issued while a commit was writing (lock grants issue them outside transactions)', async () => {
    const meta = new MemDevice(128 * MiB, 'meta')
    const data = new MemDevice(32 * MiB, 'data')
    await mkfs(meta, data, { quorumSlots: 1, fsid: FSID })
    const w = await SuperWriter.open(meta, 256)
    const issued: number[] = []
    for (let round = 0; round < 5; round++) {
      await w.begin()
      issued.push(w.nextSeq())
      const commit = w.commit() // captures the super, then awaits its writes
      issued.push(w.nextSeq(), w.nextSeq()) // a grant's write seqs, mid-commit
      await commit
      issued.push(w.nextSeq())
    }
    assert.equal(new Set(issued).size, issued.length, `no seq issued twice: ${issued.join(' ')}`)
    assert.deepEqual(
      issued,
      [...issued].sort((a, b) => a - b),
      'seqs only grow',
    )
  })
})
