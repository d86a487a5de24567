/*
 * Crash consistency: run random btree transactions on a device with a volatile write cache,
 * cut the power at a random device operation, and check that what comes back is exactly the
 * last committed state (or the in-flight one, when its super block made it to the platter
 * whole), that the checker finds it clean, and that it can be written again.
 *
 * SCOUTFS_TEST_SEED replays a run; SCOUTFS_TEST_CRASHES sets the number of crashes per test.
 */
import assert from 'node:assert/strict'
import { BlockCache } from '../../node-agent/src/storage/block.js'
import { Btree, MAX_VAL_LEN, type Item } from '../../node-agent/src/storage/btree.js'
import { checkFilesystem } from '../../node-agent/src/tools/check.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import {
  KeyType,
  MAX_KEY,
  MIN_KEY,
  SMALL_BLOCK_SIZE,
  SUPER_BLKNOS,
  Zone,
  keyToString,
  makeKey,
} from '../../node-agent/src/storage/format.js'
import { mkfs } from '../../node-agent/src/tools/mkfs.js'
import { readSuper, readSuperCopies } from '../../node-agent/src/storage/super.js'
import { SERVER_AVAIL_LOW, SuperWriter } from '../../node-agent/src/storage/super-writer.js'
import { CrashDevice, MemDevice, SECTOR_SIZE } from '../helpers/mem-device.js'
import { Rng, envInt, testRng } from '../helpers/rng.js'

const MiB = 1 << 20
const FSID = 0xc4a5_11n
const SUPER_OFFS = SUPER_BLKNOS.map((b) => b * SMALL_BLOCK_SIZE) // 65536, 69632

interface MItem {
  val: Buffer
  seq: number
}
type State = Map<string, MItem> // hex key -> item

function isPowerLoss(e: unknown): boolean {
  return e instanceof FsError && e.code === 'EIO' && /power lost/.test(e.message)
}

async function readTree(dev: MemDevice | CrashDevice): Promise<{ items: Item[]; writeSeq: number }> {
  const sb = await readSuper(dev)
  const tree = new Btree(sb.fsRoot, new BlockCache(dev, sb.fsid, 64))
  const items: Item[] = []
  for await (const it of tree.range(MIN_KEY, MAX_KEY)) items.push(it)
  return { items, writeSeq: sb.writeSeq }
}

/** '' when the tree holds exactly `state`, else the first difference */
function diff(items: Item[], state: State): string {
  const keys = [...state.keys()].sort()
  if (items.length !== keys.length) {
    let i = 0
    while (i < items.length && i < keys.length && items[i]!.key.toString('hex') === keys[i]) i++
    return `${items.length} items, want ${keys.length}; first difference at ${i}`
  }
  for (let i = 0; i < keys.length; i++) {
    const it = items[i]!
    const want = state.get(keys[i]!)!
    if (it.key.toString('hex') !== keys[i]) return `item ${i} is ${keyToString(it.key)}, want ${keys[i]}`
    if (it.seq !== want.seq || !it.val.equals(want.val)) return `item ${i} (${keyToString(it.key)}) has another version`
  }
  return ''
}

/** A random transaction's worth of changes, applied to the writer's fs tree and to `state`. */
async function randomTxn(w: SuperWriter, state: State, rng: Rng, seq: number): Promise<void> {
  const ops = rng.pick([1, 5, 40, 150, 400])
  const keySpace = rng.pick([20, 300, 3000])
  for (let i = 0; i < ops; i++) {
    if (w.availBlocks < SERVER_AVAIL_LOW) await w.reserve()
    // xattr-typed items of inodes mkfs does not create: the checker gives their values no meaning
    const key = makeKey(Zone.FS, 1_000_000 + rng.int(keySpace), KeyType.XATTR, rng.int(4))
    const k = key.toString('hex')
    if (rng.bool(state.size > 2500 ? 0.3 : 0.65)) {
      const len = rng.bool(0.15) ? MAX_VAL_LEN : rng.int(rng.pick([16, 400, 2000]))
      const val = Buffer.alloc(len, rng.int(256))
      if (len >= 4) val.writeUInt32LE(seq, 0)
      await w.fs.put(key, val, seq, 0)
      state.set(k, { val, seq })
    } else {
      await w.fs.delete(key)
      state.delete(k)
    }
  }
}

/** The items of the committed fs tree on `dev`, as a State. */
async function stateOf(dev: MemDevice | CrashDevice): Promise<State> {
  const s: State = new Map()
  for (const it of (await readTree(dev)).items) s.set(it.key.toString('hex'), { val: Buffer.from(it.val), seq: it.seq })
  return s
}

async function freshFs(): Promise<{ meta: CrashDevice; data: MemDevice; state: State }> {
  const meta = new CrashDevice(64 * MiB, 'meta')
  const data = new MemDevice(16 * MiB, 'data')
  await mkfs(meta, data, { quorumSlots: 1, fsid: FSID })
  return { meta, data, state: await stateOf(meta) } // mkfs makes the root directory
}

async function assertClean(meta: MemDevice, data: MemDevice | undefined, what: string): Promise<void> {
  const report = await checkFilesystem(meta, data)
  assert.deepEqual(report.problems, [], `${what}: the checker found problems`)
}

describe('CrashDevice', function () {
  it('reads see unflushed writes; only flushed writes survive a power loss that drops the rest', async () => {
    const d = new CrashDevice(1 * MiB, 'cd')
    await d.write(0, Buffer.alloc(4096, 1))
    await d.flush()
    await d.write(4096, Buffer.alloc(4096, 2))
    await d.write(0, Buffer.alloc(512, 3))
    assert.equal((await d.read(0, 1))[0], 3)
    assert.equal((await d.read(4096, 1))[0], 2)
    assert.equal(d.pending.length, 2)
    const dropped = d.powerLoss(new Rng(1), () => 'dropped')
    assert.deepEqual(
      [...(await dropped.read(0, 8192))].filter((b, i) => b !== (i < 4096 ? 1 : 0)),
      [],
    )
    assert.ok(d.powerLost)
    await assert.rejects(d.read(0, 1), /power lost/)
    const applied = d.powerLoss(new Rng(1), () => 'applied')
    assert.equal((await applied.read(0, 1))[0], 3)
    assert.equal((await applied.read(512, 1))[0], 1)
    assert.equal((await applied.read(4096 + 4095, 1))[0], 2)
  })

  it('loses power after exactly K device operations', async () => {
    for (const k of [0, 1, 2, 5]) {
      const d = new CrashDevice(1 * MiB, 'cd')
      d.armPowerLoss(k)
      let done = 0
      const err = await (async () => {
        for (;;) {
          if (done % 3 === 2) await d.flush()
          else await d.write(done * 512, Buffer.alloc(512, 9))
          done++
        }
      })().catch((e: unknown) => e)
      assert.ok(isPowerLoss(err), String(err))
      assert.equal(done, k)
      assert.equal(d.ops, k)
      await assert.rejects(d.write(0, Buffer.alloc(512)), /power lost/)
      await assert.rejects(d.flush(), /power lost/)
    }
  })

  it('tears a pending write at sector granularity', async () => {
    const rng = testRng('crashdev torn')
    let prefixes = 0
    let subsets = 0
    for (let i = 0; i < 200; i++) {
      const d = new CrashDevice(1 * MiB, 'cd')
      const sectors = rng.range(2, 40)
      const off = rng.int(100) * SECTOR_SIZE
      await d.write(off, Buffer.alloc(sectors * SECTOR_SIZE, 0xee))
      const r = d.powerLoss(rng)
      const fate = d.lastFates[0]!.fate
      const got = await r.read(off, sectors * SECTOR_SIZE)
      const written: boolean[] = []
      for (let s = 0; s < sectors; s++) {
        const sec = got.subarray(s * SECTOR_SIZE, (s + 1) * SECTOR_SIZE)
        const all = sec.every((b) => b === 0xee)
        assert.ok(all || sec.every((b) => b === 0), `sector ${s} is torn inside`)
        written.push(all)
      }
      const n = written.filter((x) => x).length
      if (fate.kind === 'applied') assert.equal(n, sectors)
      else if (fate.kind === 'dropped') assert.equal(n, 0)
      else {
        assert.equal(n, fate.sectors)
        assert.ok(n > 0 && n < sectors, `a torn write keeps some but not all sectors (${n}/${sectors})`)
        if (fate.kind === 'torn-prefix') {
          prefixes++
          assert.deepEqual(
            written,
            written.map((_, s) => s < n),
          )
        } else subsets++
      }
      // nothing outside the write changed
      assert.ok((await r.read(0, off)).every((b) => b === 0))
      assert.ok((await r.read(off + sectors * SECTOR_SIZE, 4096)).every((b) => b === 0))
    }
    assert.ok(prefixes > 10 && subsets > 10)
  })
})

describe('crash consistency', function () {
  this.timeout(300_000)

  it('recovers exactly the committed (or the whole in-flight) state after power loss at random points', async () => {
    const rng = testRng('crash consistency')
    const CRASHES = envInt('SCOUTFS_TEST_CRASHES', 80)
    let { meta, data, state: committed } = await freshFs()
    let committedSeq = (await readSuper(meta)).writeSeq
    let seq = 1
    const outcomes = { committed: 0, inflight: 0, fresh: 0, commitsBetween: 0, tornSuper: 0 }

    for (let crash = 0; crash < CRASHES; crash++) {
      if (crash > 0 && rng.bool(0.15)) {
        ;({ meta, data, state: committed } = await freshFs())
        committedSeq = (await readSuper(meta)).writeSeq
        outcomes.fresh++
      }
      const w = await SuperWriter.open(meta, rng.pick([16, 1024]))
      assert.equal(w.sb.writeSeq, committedSeq)
      await w.begin()
      if (rng.bool(0.35)) {
        // right at the super write of some commit: it is issued, its flush is not done
        let skip = rng.int(3)
        meta.onWrite = (off) => {
          if (SUPER_OFFS.includes(off) && skip-- === 0) meta.armPowerLoss(0)
        }
      } else {
        // anywhere: a commit is a few runs of dirty blocks, the lists, flush, super, flush
        meta.armPowerLoss(rng.int(rng.pick([4, 12, 40, 150])))
      }
      let inflight: State = new Map(committed)
      for (;;) {
        await randomTxn(w, inflight, rng, seq++)
        try {
          await w.commit()
        } catch (e) {
          if (!isPowerLoss(e)) throw e
          break
        }
        committed = inflight
        committedSeq = w.sb.writeSeq
        inflight = new Map(committed)
        outcomes.commitsBetween++
        await w.begin()
      }
      meta.onWrite = undefined
      // the super of the crashed commit, if it was issued (it is written after a flush, so it
      // is pending only if it belongs to the commit that crashed)
      const pendingSuper = meta.pending.find((p) => SUPER_OFFS.includes(p.off))
      const recovered = meta.powerLoss(rng)
      const what = `crash ${crash} (seed ${rng.seed}, fates ${meta.lastFates.map((f) => f.fate.kind).join(',')})`

      // the in-flight commit counts only if its whole super reached the device
      const superLanded = !!pendingSuper && recovered.peek(pendingSuper.off, SMALL_BLOCK_SIZE).equals(pendingSuper.data)
      if (pendingSuper && !superLanded) outcomes.tornSuper++
      const want = superLanded ? inflight : committed
      const got = await readTree(recovered)
      assert.equal(got.writeSeq, committedSeq + (superLanded ? 1 : 0), `${what}: super write seq`)
      const d = diff(got.items, want)
      assert.equal(d, '', `${what}: recovered tree is not the ${superLanded ? 'in-flight' : 'committed'} state`)
      if (superLanded) outcomes.inflight++
      else outcomes.committed++
      const copies = await readSuperCopies(recovered)
      assert.ok(
        copies.copies.some((c) => c.sb),
        `${what}: no valid super copy`,
      )
      await assertClean(recovered, data, what)

      // carry on from what came back
      committed = want
      committedSeq = got.writeSeq
      meta = CrashDevice.from(recovered, 'meta')
    }

    // the survivor still takes commits and checks clean
    const w = await SuperWriter.open(meta)
    await w.begin()
    await randomTxn(w, committed, rng, seq)
    await w.commit()
    assert.equal(diff((await readTree(meta)).items, committed), '')
    await assertClean(meta.durableImage(), data, 'after the last crash')
    console.log(
      `      ${CRASHES} crashes: ${outcomes.committed} back to the committed state, ${outcomes.inflight} to the ` +
        `in-flight one (${outcomes.tornSuper} torn or lost supers), ${outcomes.commitsBetween} commits between ` +
        `crashes, ${outcomes.fresh} fresh filesystems`,
    )
    if (CRASHES >= 40) {
      assert.ok(outcomes.committed > 0, 'no crash fell back to the committed state')
      assert.ok(outcomes.inflight > 0, 'no crash kept the in-flight commit')
      assert.ok(outcomes.commitsBetween > CRASHES / 2, 'crashes hit only the first commit')
    }
  })

  it('a crash during mkfs leaves no filesystem or a clean new one', async () => {
    const rng = testRng('crash mkfs')
    const CRASHES = Math.max(10, Math.floor(envInt('SCOUTFS_TEST_CRASHES', 80) / 2))
    let none = 0
    let empty = 0
    const reference = new MemDevice(64 * MiB, 'reference')
    await mkfs(reference, new MemDevice(16 * MiB, 'refdata'), { quorumSlots: 1, fsid: FSID })
    const refKeys = [...(await stateOf(reference)).keys()]
    for (let crash = 0; crash < CRASHES; crash++) {
      const meta = new CrashDevice(64 * MiB, 'meta')
      const data = new MemDevice(16 * MiB, 'data')
      meta.armPowerLoss(rng.int(16))
      const err = await mkfs(meta, data, { quorumSlots: 1, fsid: FSID }).then(
        () => undefined,
        (e: unknown) => e,
      )
      if (err === undefined) {
        meta.disarm()
        continue // it finished before the power went
      }
      assert.ok(isPowerLoss(err), String(err))
      const recovered = meta.powerLoss(rng)
      const what = `mkfs crash ${crash} (fates ${meta.lastFates.map((f) => f.fate.kind).join(',')})`
      const sb = await readSuper(recovered).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))))
      if (sb instanceof Error) {
        assert.ok(
          sb instanceof FsError && sb.code === 'EINVAL' && /no valid scoutfs super/.test(sb.message),
          `${what}: ${sb}`,
        )
        none++
        // and mkfs can run again without --force
        await mkfs(recovered, new MemDevice(16 * MiB, 'data2'), { quorumSlots: 1, fsid: FSID })
        await assertClean(recovered, undefined, `${what}, mkfs again`)
        continue
      }
      // what mkfs puts in the tree, all of it
      assert.deepEqual([...(await stateOf(recovered)).keys()], refKeys, what)
      // the data device may not have its super yet: check the metadata alone
      await assertClean(recovered, undefined, what)
      empty++
    }
    console.log(`      ${CRASHES} mkfs crashes: ${none} left no filesystem, ${empty} a clean new one`)
    assert.ok(none > 0, 'no crash was early enough to leave no filesystem')
  })

  it('a commit that fails on a write error issues no more writes, and the writer recovers', async () => {
    const rng = testRng('crash failed commit')
    let late = 0
    let rounds = 0
    for (let round = 0; round < 8; round++) {
      const meta = new FlakyDevice(64 * MiB, 'meta', rng)
      const data = new MemDevice(16 * MiB, 'data')
      await mkfs(meta, data, { quorumSlots: 1, fsid: FSID })
      const w = await SuperWriter.open(meta)
      const state = await stateOf(meta)
      await w.begin()
      for (let i = 0; i < 4; i++) await randomTxn(w, state, rng, 1)
      await w.commit()
      const before = new Map(state)
      const beforeSeq = w.sb.writeSeq

      // a big transaction, so its commit has many writes in flight; one of them fails
      await w.begin()
      const failed = new Map(state)
      while (w.txn.dirtyBlocks < 64) await randomTxn(w, failed, rng, 2) // several runs of 16 blocks
      meta.delayMs = 3
      meta.failWriteIn = rng.range(0, 3)
      await assert.rejects(w.commit(), /injected write error/)
      meta.generation++
      meta.delayMs = 0
      assert.equal(w.inTxn, false)
      assert.equal(w.sb.writeSeq, beforeSeq, 'a failed commit keeps the previous super')
      assert.equal(diff((await readTree(meta)).items, before), '', 'after the failed commit')

      // the same writer carries on from the previous commit
      await w.begin()
      const next = new Map(before)
      await randomTxn(w, next, rng, 3)
      await w.commit()
      await new Promise((r) => setTimeout(r, 20)) // let anything still in flight land
      late += meta.lateLandings
      rounds++
      // a write of the failed commit landing now could overwrite a block the next commit reused
      assert.equal(late, 0, `${late} writes of the failed commit landed after commit() had rejected`)
      assert.equal(diff((await readTree(meta)).items, next), '', 'after the next commit')
      await assertClean(meta, data, 'after a failed and a good commit')
    }
    assert.equal(rounds, 8)
  })
})

/** A memory device whose writes take a little while, one of which can be made to fail. */
class FlakyDevice extends MemDevice {
  delayMs = 0
  /** fail the write this many writes from now (0: the next one) */
  failWriteIn: number | undefined
  /** bumped by the test when a commit has returned: writes issued before it must have landed */
  generation = 0
  /** writes that landed after the generation they were issued in had ended */
  lateLandings = 0

  constructor(
    size: number,
    path: string,
    private readonly rng: Rng,
  ) {
    super(size, path)
  }

  override async write(off: number, buf: Buffer): Promise<void> {
    const gen = this.generation
    if (this.failWriteIn !== undefined && this.failWriteIn-- === 0) {
      this.failWriteIn = undefined
      throw new FsError('EIO', `${this.path}: injected write error at ${off}`)
    }
    if (this.delayMs > 0) await new Promise((r) => setTimeout(r, this.rng.int(this.delayMs + 1)))
    await super.write(off, buf)
    if (gen !== this.generation) this.lateLandings++
  }
}
