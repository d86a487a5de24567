/*
 * Corrupt and stale metadata: damaged btree blocks must be refused with EIO naming the block
 * (counted, never cached, never fatal to the process) and reported by the checker; a reference
 * whose seq does not match the block is ESTALE; a damaged super copy falls back to the other.
 *
 * SCOUTFS_TEST_SEED replays a run.
 */
import assert from 'node:assert/strict'
import { BlockCache, sealBlock } from '../../node-agent/src/storage/block.js'
import { Btree, type Item } from '../../node-agent/src/storage/btree.js'
import { checkFilesystem } from '../../node-agent/src/tools/check.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import {
  HDR_BLKNO,
  HDR_SEQ,
  HDR_SIZE,
  KeyType,
  MAX_KEY,
  META_BLOCK_SIZE,
  MIN_KEY,
  Magic,
  SMALL_BLOCK_SIZE,
  SUPER_BLKNOS,
  Zone,
  makeKey,
  readHeader,
  type BlockRef,
} from '../../node-agent/src/storage/format.js'
import { mkfs } from '../../node-agent/src/tools/mkfs.js'
import { readSuper, readSuperCopies } from '../../node-agent/src/storage/super.js'
import { SERVER_AVAIL_LOW, SuperWriter } from '../../node-agent/src/storage/super-writer.js'
import { MemDevice } from '../helpers/mem-device.js'
import { Rng, testRng } from '../helpers/rng.js'

const MiB = 1 << 20
const FSID = 0xc0ffee47n

type State = Map<string, Buffer> // hex key -> value

interface BlockInfo {
  blkno: number
  seq: number
  level: number
  depth: number
}

/** A filesystem with a few thousand items in a tree of height 2 or more, and what it holds. */
async function buildFs(rng: Rng, items = 3000): Promise<{ meta: MemDevice; data: MemDevice; state: State }> {
  const meta = new MemDevice(64 * MiB, 'meta')
  const data = new MemDevice(16 * MiB, 'data')
  await mkfs(meta, data, { quorumSlots: 1, fsid: FSID })
  const w = await SuperWriter.open(meta)
  await w.begin()
  const state: State = new Map()
  for await (const it of new Btree(w.sb.fsRoot, w.cache).range(MIN_KEY, MAX_KEY))
    state.set(it.key.toString('hex'), Buffer.from(it.val))
  for (let i = 0; i < items; i++) {
    if (w.availBlocks < SERVER_AVAIL_LOW) await w.reserve()
    const key = makeKey(Zone.FS, 1_000_000 + rng.int(items), KeyType.XATTR, rng.int(4))
    const val = rng.bytes(rng.range(100, 600))
    await w.fs.put(key, val, 1, 0)
    state.set(key.toString('hex'), val)
  }
  await w.commit()
  return { meta, data, state }
}

/** Every block of the fs tree, and for every item key the blocks on its path from the root. */
async function fsBlocks(dev: MemDevice): Promise<{ blocks: BlockInfo[]; paths: Map<string, number[]> }> {
  const sb = await readSuper(dev)
  const blocks: BlockInfo[] = []
  const paths = new Map<string, number[]>()
  const stack: number[] = []
  await new Btree(sb.fsRoot, new BlockCache(dev, sb.fsid)).walk((n, ref, depth) => {
    blocks.push({ blkno: ref.blkno, seq: ref.seq, level: n.level, depth })
    stack.length = depth
    stack.push(ref.blkno)
    if (n.isLeaf) for (const k of n.keys) paths.set(k.toString('hex'), stack.slice())
  })
  return { blocks, paths }
}

function isErr(e: unknown, code: string, blkno?: number): e is FsError {
  return (
    e instanceof FsError && e.code === code && (blkno === undefined || new RegExp(`\\b${blkno}\\b`).test(e.message))
  )
}

async function scan(tree: Btree): Promise<Item[]> {
  const out: Item[] = []
  for await (const it of tree.range(MIN_KEY, MAX_KEY)) out.push(it)
  return out
}

function sameState(items: Item[], state: State, what: string): void {
  assert.equal(items.length, state.size, `${what}: item count`)
  for (const it of items) assert.ok(state.get(it.key.toString('hex'))?.equals(it.val), `${what}: item value`)
}

describe('corrupt metadata blocks', function () {
  this.timeout(120_000)
  let rng: Rng
  let base: { meta: MemDevice; data: MemDevice; state: State }
  let layout: Awaited<ReturnType<typeof fsBlocks>>

  before(async () => {
    rng = testRng('corruption')
    base = await buildFs(rng)
    layout = await fsBlocks(base.meta)
    const height = Math.max(...layout.blocks.map((b) => b.depth)) + 1
    assert.ok(height >= 2, `the test tree has height ${height}`)
  })

  it('refuses a btree block with flipped bits with EIO naming it, everywhere, without crashing', async () => {
    for (let round = 0; round < 16; round++) {
      const meta = base.meta.clone()
      // the root, a parent or (mostly) a leaf
      const victim = round === 0 ? layout.blocks[0]! : rng.pick(layout.blocks)
      const what = `round ${round}: block ${victim.blkno} (level ${victim.level})`
      const flips = new Set<number>()
      const nflips = rng.range(1, 2)
      while (flips.size < nflips) flips.add(rng.int(META_BLOCK_SIZE * 8))
      for (const bit of flips) meta.flipBit(victim.blkno * META_BLOCK_SIZE + (bit >> 3), bit & 7)

      const w = await SuperWriter.open(meta) // an empty cache: everything is read from the device
      const bad: number[] = []
      w.cache.onBadBlock = (_e, blkno) => bad.push(blkno)
      const tree = new Btree(w.sb.fsRoot, w.cache)
      const err = await scan(tree).then(
        () => undefined,
        (e: unknown) => e,
      )
      assert.ok(isErr(err, 'EIO', victim.blkno), `${what}: a full scan gave ${String(err)}`)
      assert.match((err as Error).message, /corrupt/)
      assert.equal(w.cache.counters.corruptReads, 1, `${what}: corruptReads`)

      // every lookup through the block fails the same way (it was not cached); the rest work
      let failed = 0
      for (const [k, val] of base.state) {
        const key = Buffer.from(k, 'hex')
        const through = layout.paths.get(k)!.includes(victim.blkno)
        const got = await tree.lookup(key).then(
          (it) => it,
          (e: unknown) => e,
        )
        if (through) {
          assert.ok(isErr(got, 'EIO', victim.blkno), `${what}: lookup through it gave ${String(got)}`)
          failed++
        } else {
          assert.ok(got && !(got instanceof Error), `${what}: lookup elsewhere gave ${String(got)}`)
          assert.ok((got as Item).val.equals(val), `${what}: lookup elsewhere, value`)
        }
      }
      assert.ok(failed > 0)
      assert.equal(w.cache.counters.corruptReads, 1 + failed, `${what}: corruptReads after ${failed} failed lookups`)
      assert.deepEqual(new Set(bad), new Set([victim.blkno]), `${what}: onBadBlock`)

      // a transaction that runs into it fails cleanly and can be abandoned
      await w.begin()
      const inside = [...layout.paths].find(([, p]) => p.includes(victim.blkno))![0]
      await assert.rejects(w.fs.put(Buffer.from(inside, 'hex'), Buffer.from('x'), 2), (e: unknown) =>
        isErr(e, 'EIO', victim.blkno),
      )
      await assert.rejects(w.fs.delete(Buffer.from(inside, 'hex')), (e: unknown) => isErr(e, 'EIO', victim.blkno))
      w.abort()

      const report = await checkFilesystem(meta, base.data)
      assert.ok(
        report.problems.some((p) => new RegExp(`\\b${victim.blkno}\\b`).test(p) && /corrupt/.test(p)),
        `${what}: the checker did not name it: ${JSON.stringify(report.problems)}`,
      )
    }
  })

  it('refuses a well-formed block of the wrong kind, filesystem, or place', async () => {
    const leaf = layout.blocks.find((b) => b.level === 0 && b.depth > 0)!
    const other = layout.blocks.find((b) => b.level === 0 && b.blkno !== leaf.blkno)!
    const cases: Array<[string, (b: Buffer) => void, RegExp]> = [
      ['another magic', (b) => sealBlock(b, FSID, Magic.ALLOC_LIST, leaf.blkno, leaf.seq), /magic ALLOC_LIST/],
      ['another fsid', (b) => sealBlock(b, FSID ^ 1n, Magic.BTREE, leaf.blkno, leaf.seq), /fsid/],
      ['all zeros', (b) => b.fill(0), /checksum/],
      [
        'a torn write (old tail)',
        (b) => base.meta.peek(other.blkno * META_BLOCK_SIZE + 4096, 8192).copy(b, 4096),
        /checksum/,
      ],
    ]
    for (const [name, damage, msg] of cases) {
      const meta = base.meta.clone()
      const b = meta.peek(leaf.blkno * META_BLOCK_SIZE, META_BLOCK_SIZE)
      damage(b)
      meta.poke(leaf.blkno * META_BLOCK_SIZE, b)
      const w = await SuperWriter.open(meta)
      const err = await scan(new Btree(w.sb.fsRoot, w.cache)).then(
        () => undefined,
        (e: unknown) => e,
      )
      assert.ok(isErr(err, 'EIO', leaf.blkno), `${name}: ${String(err)}`)
      assert.match((err as Error).message, msg, name)
      assert.equal(w.cache.counters.corruptReads, 1, name)
      assert.equal(w.cache.counters.staleReads, 0, name)
      const report = await checkFilesystem(meta, base.data)
      assert.ok(
        report.problems.some((p) => p.includes(`${leaf.blkno}`)),
        `${name}: checker: ${JSON.stringify(report.problems)}`,
      )
    }
  })

  it('checksums a block whose header is intact but whose items were changed', async () => {
    const meta = base.meta.clone()
    const leaf = layout.blocks.find((b) => b.level === 0)!
    const off = leaf.blkno * META_BLOCK_SIZE + HDR_SIZE + 4 + rng.int(200)
    meta.flipBit(off, rng.int(8))
    assert.equal(readHeader(meta.peek(leaf.blkno * META_BLOCK_SIZE, HDR_SIZE)).blkno, leaf.blkno)
    const w = await SuperWriter.open(meta)
    await assert.rejects(scan(new Btree(w.sb.fsRoot, w.cache)), (e: unknown) => isErr(e, 'EIO', leaf.blkno))
  })

  it('refuses a block whose header seq or blkno has a flipped high bit as corrupt (EIO), not undecodable', async () => {
    // bit 7 of the u64's top byte: past 2^53, so decoding the header before the checksum threw EUCLEAN
    for (const field of [HDR_SEQ, HDR_BLKNO]) {
      const meta = base.meta.clone()
      const leaf = layout.blocks.find((b) => b.level === 0)!
      meta.flipBit(leaf.blkno * META_BLOCK_SIZE + field + 7, 7)
      const w = await SuperWriter.open(meta)
      await assert.rejects(
        scan(new Btree(w.sb.fsRoot, w.cache)),
        (e: unknown) => isErr(e, 'EIO', leaf.blkno) && /corrupt: checksum/.test(e.message),
        `header field at ${field}`,
      )
      assert.equal(w.cache.counters.corruptReads, 1)
    }
  })

  it('counts a block with a valid checksum whose items do not decode as corrupt', async () => {
    const meta = base.meta.clone()
    const leaf = layout.blocks.find((b) => b.level === 0)!
    const at = leaf.blkno * META_BLOCK_SIZE
    const block = Buffer.from(meta.peek(at, META_BLOCK_SIZE))
    // the first item's key becomes all-ones: keys out of order, and the checksum is made right again
    block.fill(0xff, HDR_SIZE + 4, HDR_SIZE + 4 + 34)
    sealBlock(block, FSID, Magic.BTREE, leaf.blkno, leaf.seq)
    meta.poke(at, block)
    const w = await SuperWriter.open(meta)
    const bad: number[] = []
    w.cache.onBadBlock = (_e, blkno) => bad.push(blkno)
    await assert.rejects(scan(new Btree(w.sb.fsRoot, w.cache)), (e: unknown) => isErr(e, 'EIO', leaf.blkno))
    assert.equal(w.cache.counters.corruptReads, 1)
    assert.deepEqual(bad, [leaf.blkno])
  })
})

describe('stale block references', function () {
  let rng: Rng
  let base: { meta: MemDevice; data: MemDevice; state: State }
  let layout: Awaited<ReturnType<typeof fsBlocks>>

  before(async () => {
    rng = testRng('stale')
    base = await buildFs(rng, 1500)
    layout = await fsBlocks(base.meta)
  })

  it('gives ESTALE for a reference whose seq does not match, and counts it apart from corruption', async () => {
    const root = layout.blocks[0]!
    const sb = await readSuper(base.meta)
    const cache = new BlockCache(base.meta, sb.fsid)
    const wrongSeq: BlockRef = { blkno: root.blkno, seq: root.seq === 1 ? 2 : root.seq - 1 }
    const stale = new Btree({ ref: wrongSeq, height: sb.fsRoot.height }, cache)
    const err = await stale.lookup(makeKey(Zone.FS, 1)).catch((e: unknown) => e)
    assert.ok(isErr(err, 'ESTALE', root.blkno), String(err))
    assert.match((err as Error).message, /stale/)
    assert.equal(cache.counters.staleReads, 1)
    assert.equal(cache.counters.corruptReads, 0)

    // the right reference still reads, and is cached; a stale one then misses the cache and fails
    const good = new Btree(sb.fsRoot, cache)
    sameState(await scan(good), base.state, 'with the right root')
    const hits = cache.counters.cacheHits
    await assert.rejects(stale.lookup(MIN_KEY), (e: unknown) => isErr(e, 'ESTALE', root.blkno))
    assert.equal(cache.counters.staleReads, 2)
    assert.equal(cache.counters.cacheHits, hits, 'a stale reference must not hit the cached block')
    // and the good root reads again after that (from the device)
    sameState(await scan(good), base.state, 'after the stale read')
  })

  it('gives ESTALE for a block found at another place than its header says', async () => {
    const meta = base.meta.clone()
    const leaf = layout.blocks.find((b) => b.level === 0)!
    const sb = await readSuper(meta)
    // a copy of the leaf at a free block: its header still names the leaf's own blkno
    const free = sb.totalMetaBlocks - 1
    meta.poke(free * META_BLOCK_SIZE, meta.peek(leaf.blkno * META_BLOCK_SIZE, META_BLOCK_SIZE))
    const cache = new BlockCache(meta, sb.fsid)
    const misplaced = new Btree({ ref: { blkno: free, seq: leaf.seq }, height: 1 }, cache)
    await assert.rejects(misplaced.lookup(MIN_KEY), (e: unknown) => isErr(e, 'ESTALE', free))
    assert.equal(cache.counters.staleReads, 1)
  })

  it('refuses a reference past the end of the device with EIO', async () => {
    const sb = await readSuper(base.meta)
    const cache = new BlockCache(base.meta, sb.fsid)
    const far = sb.totalMetaBlocks + 5
    await assert.rejects(new Btree({ ref: { blkno: far, seq: 1 }, height: 1 }, cache).lookup(MIN_KEY), (e: unknown) =>
      isErr(e, 'EIO', far),
    )
    assert.equal(cache.counters.corruptReads, 1)
  })
})

describe('super block copies', function () {
  this.timeout(60_000)

  /** mkfs and two commits, A then B: the current super is B's, the other copy A's. */
  async function twoCommits(rng: Rng): Promise<{ meta: MemDevice; data: MemDevice; a: State; b: State; seqB: number }> {
    const { meta, data, state } = await buildFs(rng, 500)
    const a = new Map(state)
    const w = await SuperWriter.open(meta)
    await w.begin()
    const b = new Map(a)
    for (let i = 0; i < 300; i++) {
      const key = makeKey(Zone.FS, 2_000_000 + i, KeyType.XATTR)
      const val = rng.bytes(rng.range(0, 900))
      await w.fs.put(key, val, 2, 0)
      b.set(key.toString('hex'), val)
    }
    for (const k of [...a.keys()].slice(0, 100)) {
      await w.fs.delete(Buffer.from(k, 'hex'))
      b.delete(k)
    }
    await w.commit()
    return { meta, data, a, b, seqB: w.sb.writeSeq }
  }

  const superOff = (blkno: number): number => blkno * SMALL_BLOCK_SIZE
  const currentCopy = (seq: number): number => SUPER_BLKNOS[seq % 2]!
  const otherCopy = (seq: number): number => SUPER_BLKNOS[(seq + 1) % 2]!

  it('falls back to the other copy when the current one is corrupt, and writes over it next', async () => {
    const rng = testRng('super fallback')
    const { meta, data, a, b, seqB } = await twoCommits(rng)
    const cur = currentCopy(seqB)
    assert.equal((await readSuper(meta)).writeSeq, seqB)
    sameState(await scan(new Btree((await readSuper(meta)).fsRoot, new BlockCache(meta, FSID))), b, 'B before damage')

    meta.flipBit(superOff(cur) + 8 + rng.int(SMALL_BLOCK_SIZE - 8), rng.int(8)) // past the magic
    const copies = await readSuperCopies(meta)
    const bad = copies.copies.find((c) => c.blkno === cur)!
    assert.equal(bad.sb, undefined)
    assert.match(bad.problem ?? '', /checksum/)
    const sb = await readSuper(meta)
    assert.equal(sb.writeSeq, seqB - 1, 'the older copy is current now')
    // commit A is whole: nothing it references was reused by B's transaction
    const w = await SuperWriter.open(meta)
    sameState(await scan(new Btree(w.sb.fsRoot, w.cache)), a, 'fell back to A')
    const report = await checkFilesystem(meta, data)
    assert.deepEqual(report.problems, [])
    assert.ok(
      report.notes.some((n) => n.includes(`${cur}`)),
      `the checker notes the bad copy: ${JSON.stringify(report.notes)}`,
    )

    // the next commit goes to the damaged copy's place, and both are valid again
    await w.begin()
    await w.fs.put(makeKey(Zone.FS, 3_000_000, KeyType.XATTR), Buffer.from('after'), 3, 0)
    await w.commit()
    assert.equal(w.sb.writeSeq, seqB)
    const after = await readSuperCopies(meta)
    assert.deepEqual(
      after.copies.map((c) => c.sb?.writeSeq),
      SUPER_BLKNOS.map((blk) => (blk === cur ? seqB : seqB - 1)),
    )
    assert.deepEqual((await checkFilesystem(meta, data)).problems, [])
  })

  it('ignores a corrupt older copy', async () => {
    const rng = testRng('super old copy')
    const { meta, b, seqB } = await twoCommits(rng)
    const old = otherCopy(seqB)
    meta.flipBit(superOff(old) + rng.int(SMALL_BLOCK_SIZE), rng.int(8))
    const sb = await readSuper(meta)
    assert.equal(sb.writeSeq, seqB)
    sameState(await scan(new Btree(sb.fsRoot, new BlockCache(meta, FSID))), b, 'B')
  })

  it('fails with a clear message when both copies are corrupt', async () => {
    const rng = testRng('super both')
    const { meta, data } = await twoCommits(rng)
    for (const blk of SUPER_BLKNOS) meta.flipBit(superOff(blk) + 8 + rng.int(SMALL_BLOCK_SIZE - 8), rng.int(8))
    const err = await readSuper(meta).catch((e: unknown) => e)
    assert.ok(err instanceof FsError, String(err))
    assert.equal(err.code, 'EINVAL')
    for (const blk of SUPER_BLKNOS) assert.match(err.message, new RegExp(`block ${blk}: checksum mismatch`))
    assert.match(err.message, /no valid scoutfs super block/)
    assert.match(err.message, new RegExp(meta.path))
    await assert.rejects(SuperWriter.open(meta), /no valid scoutfs super block/)
    const report = await checkFilesystem(meta, data)
    assert.ok(
      report.problems.some((p) => /no valid scoutfs super block/.test(p)),
      JSON.stringify(report.problems),
    )
  })
})
