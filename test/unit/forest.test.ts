/*
 * The forest's roots: an invalidation (this mount's commit, or a lock grant naming a newer
 * roots version) must win over a roots fetch already in flight, whose answer may predate the
 * commit the next read has to see.  The server here is a function answering GetRoots with
 * whatever the test decides, when the test decides.
 *
 * And a block that fails validation under old roots (stale, or torn: read while the block's new
 * owner rewrote it) makes the forest refresh its roots and read again; only what fails again
 * from the roots the server still calls current is an error, EIO naming the block.
 */
import assert from 'node:assert/strict'
import { BlockCache } from '../../node-agent/src/storage/block.js'
import { Btree, BtreeTxn } from '../../node-agent/src/storage/btree.js'
import { EMPTY_ROOT, META_BLOCK_SIZE, makeKey, Zone, type BtreeRoot } from '../../node-agent/src/storage/format.js'
import { isFsError } from '../../node-agent/src/util/errors.js'
import { Forest } from '../../node-agent/src/client/forest.js'
import type { Roots } from '../../node-agent/src/protocol/server-api.js'
import { MemDevice } from '../helpers/mem-device.js'

const roots = (version: number): Roots => ({ fsRoot: EMPTY_ROOT, logTrees: [], version })
const KEY = makeKey(Zone.FS, 5)
const LO = makeKey(Zone.FS)
const HI = makeKey(Zone.FS, 1023, 0xff)

describe('forest roots', function () {
  /** a GetRoots whose answers the test releases one by one */
  function controlledServer(): { fetch: () => Promise<Roots>; pending: Array<(r: Roots) => void>; calls: number } {
    const s = {
      pending: [] as Array<(r: Roots) => void>,
      calls: 0,
      fetch: (): Promise<Roots> => {
        s.calls++
        return new Promise<Roots>((res) => s.pending.push(res))
      },
    }
    return s
  }
  const turn = (): Promise<void> => new Promise((r) => setImmediate(r))

  it('drops the answer of a fetch that an invalidation overtook, and fetches again', async function () {
    const srv = controlledServer()
    const f = new Forest(new BlockCache(new MemDevice(64 << 20), 1n, 16), srv.fetch)
    const read = f.readAround(KEY, LO, HI)
    await turn()
    assert.equal(srv.calls, 1)
    f.invalidateRoots() // e.g. our own commit just became durable
    srv.pending.shift()!(roots(10)) // the old answer arrives after it
    await turn()
    assert.equal(srv.calls, 2, 'the overtaken answer is not used: the roots are fetched again')
    srv.pending.shift()!(roots(11))
    await read
    // the next read uses the fresh roots without asking again
    await f.readAround(KEY, LO, HI)
    assert.equal(srv.calls, 2)
  })

  it('never uses roots older than the version a lock grant named', async function () {
    const srv = controlledServer()
    const f = new Forest(new BlockCache(new MemDevice(64 << 20), 1n, 16), srv.fetch)
    const first = f.readAround(KEY, LO, HI)
    await turn()
    srv.pending.shift()!(roots(20))
    await first
    f.invalidateRoots(22) // a grant carrying roots version 22
    const read = f.readAround(KEY, LO, HI)
    await turn()
    srv.pending.shift()!(roots(21)) // a reply that crossed the grant
    for (let i = 0; i < 50 && srv.pending.length === 0; i++) await new Promise((r) => setTimeout(r, 5))
    assert.equal(srv.calls, 3, 'version 21 < 22: asked again')
    srv.pending.shift()!(roots(22))
    await read
  })
})

describe('forest reads of blocks that fail validation', function () {
  const FSID = 1n

  /** a one-leaf tree holding KEY -> val, written to blocks from `next` on */
  async function tree(dev: MemDevice, next: { blkno: number }, val: string): Promise<BtreeRoot> {
    const cache = new BlockCache(dev, FSID, 16)
    const txn = new BtreeTxn(cache, { alloc: () => next.blkno++, free: () => {} })
    const t = new Btree({ ...EMPTY_ROOT }, cache, txn)
    await t.put(KEY, Buffer.from(val), 1)
    await txn.write()
    return t.root
  }

  /** the block rewritten only in part, as a read sees it while its new owner's write is under way */
  async function tear(dev: MemDevice, blkno: number): Promise<void> {
    const torn = dev.peek(blkno * META_BLOCK_SIZE, META_BLOCK_SIZE).fill(0x5a, META_BLOCK_SIZE / 2)
    await dev.write(blkno * META_BLOCK_SIZE, torn)
  }

  /** a forest over `dev` whose GetRoots answers `answers` in turn (the last one from then on) */
  function forest(
    dev: MemDevice,
    answers: Roots[],
  ): { f: Forest; cache: BlockCache; calls: () => number; reported: Array<[string, number]> } {
    const cache = new BlockCache(dev, FSID, 16)
    const reported: Array<[string, number]> = []
    cache.onBadBlock = (e, blkno) => reported.push([e.code, blkno])
    let calls = 0
    const f = new Forest(cache, async () => answers[Math.min(calls++, answers.length - 1)]!)
    return { f, cache, calls: () => calls, reported }
  }

  it('a torn block under old roots: refreshes them and reads the current tree; a stale read, not corruption', async function () {
    const dev = new MemDevice(64 << 20)
    const next = { blkno: 10 }
    const old = await tree(dev, next, 'old')
    const cur = await tree(dev, next, 'new')
    await tear(dev, old.ref.blkno)
    const { f, cache, calls, reported } = forest(dev, [
      { fsRoot: old, logTrees: [], version: 1 },
      { fsRoot: cur, logTrees: [], version: 2 },
    ])
    const r = await f.readAround(KEY, LO, HI)
    assert.deepEqual(
      r.items.map((it) => it.val.toString()),
      ['new'],
    )
    assert.equal(calls(), 2, 'the roots were fetched again')
    assert.equal(f.counters.staleRetries, 1)
    assert.equal(cache.counters.corruptReads, 0)
    assert.equal(cache.counters.staleReads, 1)
    assert.deepEqual(reported, [['ESTALE', old.ref.blkno]])
  })

  for (const how of ['from the same roots version', 'through the same reference from newer roots'] as const) {
    it(`a block that fails its checksum again ${how} is corrupt: EIO naming it, counted and reported once`, async function () {
      const dev = new MemDevice(64 << 20)
      const old = await tree(dev, { blkno: 10 }, 'old')
      await tear(dev, old.ref.blkno)
      const { f, cache, calls, reported } = forest(
        dev,
        how === 'from the same roots version'
          ? [{ fsRoot: old, logTrees: [], version: 7 }]
          : [1, 2, 3, 4].map((version) => ({ fsRoot: old, logTrees: [], version })),
      )
      await assert.rejects(f.readAround(KEY, LO, HI), (e: unknown) => {
        assert.ok(isFsError(e, 'EIO'), String(e))
        assert.match(e.message, new RegExp(`^EIO: metadata block ${old.ref.blkno} is corrupt: checksum`))
        return true
      })
      assert.equal(calls(), 2, 'read again once from refreshed roots before giving up')
      assert.equal(cache.counters.corruptReads, 1)
      assert.equal(cache.counters.staleReads, 0, 'the first failure was the same corruption, not a stale read')
      assert.deepEqual(reported, [['EIO', old.ref.blkno]])
    })
  }
})
