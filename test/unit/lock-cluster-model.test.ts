/*
 * Cluster locks under storms (test/helpers/lock-harness.ts runs a LockServer and LockClients
 * over a seeded loopback and checks the model): thousands of random lock/unlock operations,
 * with duplicated messages, failing hooks, idle releases and server failovers, must all
 * finish — no deadlock, no starvation — and a broken compatibility rule injected into the
 * server must be caught.
 *
 * Replay a failure with SCOUTFS_TEST_SEED=<seed>; SCOUTFS_LOCK_STORM_ITERS=<n> lengthens the
 * storms (default 400 per task); LOCK_TRACE=1 prints the last 600 messages and hooks at the
 * first violation.
 */
import assert from 'node:assert/strict'
import { isFsError } from '../../node-agent/src/util/errors.js'
import { KeyType, Zone, makeKey } from '../../node-agent/src/storage/format.js'
import { RENAME_LOCK_RANGE, lockRange } from '../../node-agent/src/protocol/lock-ranges.js'
import { LOCK_DEADLOCK_ERRNO, LockClient, type LockHandle } from '../../node-agent/src/lock/lock-client.js'
import {
  LockOrderClass,
  lockModesCompatible,
  sortLockRequests,
  type LockCompatFn,
  type OrderedLockRequest,
} from '../../node-agent/src/protocol/lock-modes.js'
import { Rng, envInt, testRng } from '../helpers/rng.js'
import { READ, WRITE, WRITE_ONLY, type Mode, immediate, Harness, checkModelAfterEach } from '../helpers/lock-harness.js'

/* ---- the lock set of the storms --------------------------------------------------------- */

interface StormLock extends OrderedLockRequest {
  name: string
}

function stormLocks(): StormLock[] {
  const inode = (ino: number): StormLock => ({
    name: `ino${ino}`,
    cls: LockOrderClass.INODE,
    ino,
    range: lockRange(makeKey(Zone.FS, ino, KeyType.INODE)),
    mode: READ,
  })
  return [
    { name: 'rename', cls: LockOrderClass.RENAME, range: RENAME_LOCK_RANGE, mode: WRITE },
    inode(5),
    inode(1500),
    inode(5000),
    inode(70_000),
    { name: 'orphan', cls: LockOrderClass.WRITE_ONLY, range: lockRange(makeKey(Zone.ORPHAN, 0)), mode: WRITE_ONLY },
    {
      name: 'meta_seq',
      cls: LockOrderClass.INDEX,
      range: lockRange(makeKey(Zone.INODE_INDEX, 0, KeyType.META_SEQ)),
      mode: READ,
    },
    { name: 'xattr_indx', cls: LockOrderClass.INDEX, range: lockRange(makeKey(Zone.XATTR_INDX, 0)), mode: READ },
  ]
}

interface StormResult {
  ops: number
  lockCalls: number
  maxWaitMs: number
  ms: number
}

/**
 * Every client runs `tasks` tasks; each takes 1..3 locks in the sorted order, holds them a
 * random while, and lets go.  Fails if no lock call completes for `stallMs`.
 */
async function storm(
  h: Harness,
  tasks: number,
  iterations: number,
  stallMs = 5000,
  chaos?: (done: () => boolean) => Promise<void>,
): Promise<StormResult> {
  const locks = stormLocks()
  const t0 = Date.now()
  let ops = 0
  let lockCalls = 0
  let maxWaitMs = 0
  let lastProgress = Date.now()
  let stop = false
  const runTask = async (c: LockClient, rng: Rng): Promise<void> => {
    for (let i = 0; i < iterations && !stop; i++) {
      const n = rng.range(1, 3)
      const picked = rng.shuffle([...locks]).slice(0, n)
      const reqs = picked.map((l) => ({ ...l, mode: [READ, WRITE, WRITE_ONLY][rng.weighted([5, 3, 2])] as Mode }))
      const held: LockHandle[] = []
      for (const r of sortLockRequests(reqs)) {
        const w0 = Date.now()
        held.push(await h.acquire(c, r.range, r.mode))
        lockCalls++
        maxWaitMs = Math.max(maxWaitMs, Date.now() - w0)
        lastProgress = Date.now()
      }
      if (rng.bool(0.05)) {
        // while "holding a transaction" a lock call must be refused, not wait
        await assert.rejects(c.lock(rng.pick(locks).range, WRITE, { holdsTrans: true }), (e) =>
          isFsError(e, LOCK_DEADLOCK_ERRNO),
        )
      }
      const hold = rng.int(4)
      for (let k = 0; k < hold; k++) await immediate()
      for (let k = held.length - 1; k >= 0; k--) h.release(c, held[k]!, rng.bool(0.8))
      ops++
      if (rng.bool(0.3)) await immediate()
    }
  }
  let finished = false
  const work = Promise.all(
    h.clients.flatMap((c) => Array.from({ length: tasks }, () => runTask(c, h.rng.fork()))),
  ).then(() => void (finished = true))
  const all = Promise.all([work, chaos?.(() => finished || stop)])
  let timer: NodeJS.Timeout | undefined
  const watchdog = new Promise<never>((_, reject) => {
    timer = setInterval(() => {
      if (h.errors.length) reject(h.errors[0])
      if (!h.o.collect && h.violations.length) reject(new Error(`model violation: ${h.violations[0]}`))
      if (Date.now() - lastProgress > stallMs)
        reject(new Error(`no lock granted for ${stallMs} ms: deadlock or starvation\n${h.dump()}`))
    }, 50)
  })
  try {
    await Promise.race([all, watchdog])
  } finally {
    stop = true
    clearInterval(timer)
  }
  await h.settle()
  return { ops, lockCalls, maxWaitMs, ms: Date.now() - t0 }
}

describe('cluster locks: model', function () {
  this.timeout(30_000)
  checkModelAfterEach()

  describe('storms', function () {
    const iterations = envInt('SCOUTFS_LOCK_STORM_ITERS', 400)

    it('exclusion, progress and invalidation order under a random request/unlock storm', async function () {
      const h = new Harness(testRng('locks storm'), { maxHops: 3, hookMaxHops: 3 })
      const r = await storm(h, 4, iterations)
      console.log(
        `      ${r.ops} operations, ${r.lockCalls} lock calls in ${r.ms} ms; longest wait ${r.maxWaitMs} ms; ` +
          `${h.server.counters.invalidations} invalidations, ${h.hooks.length} hooks`,
      )
      assert.ok(r.lockCalls >= 2000, `only ${r.lockCalls} lock calls`)
      assert.deepEqual(h.violations, [])
      assert.ok(h.server.counters.invalidations > 100)
      assert.ok(
        h.hooks.some((x) => x.oldMode === WRITE && x.newMode === READ),
        'some WRITE->READ downgrade',
      )
      assert.ok(h.hooks.some((x) => x.info.wrote) && h.hooks.some((x) => !x.info.wrote))
    })

    it('survives duplicated messages, failing hooks and idle releases', async function () {
      const h = new Harness(testRng('locks storm faults'), {
        maxHops: 4,
        dupProb: 0.1,
        hookFailProb: 0.05,
        lockIdleCount: 2,
      })
      const r = await storm(h, 3, iterations)
      const hk = h.clients.reduce((n, c) => n + c.counters.hookErrors, 0)
      const rel = h.clients.reduce((n, c) => n + c.counters.idleReleases, 0)
      console.log(
        `      ${r.ops} operations, ${r.lockCalls} lock calls in ${r.ms} ms; longest wait ${r.maxWaitMs} ms; ` +
          `${h.server.counters.duplicateRequests + h.server.counters.ignoredResponses} duplicates absorbed, ${hk} hook failures, ${rel} idle releases`,
      )
      assert.ok(r.lockCalls >= 1500, `only ${r.lockCalls} lock calls`)
      assert.deepEqual(h.violations, [])
      assert.ok(hk > 0 && rel > 0)
      assert.ok(h.server.counters.ignoredResponses > 0)
    })

    it('keeps exclusion and progress across server failovers (lock recovery under load)', async function () {
      const h = new Harness(testRng('locks storm failover'), { maxHops: 3, lockIdleCount: 3, dupProb: 0.05 })
      let failovers = 0
      const r = await storm(h, 3, Math.ceil(iterations / 2), 5000, async (done) => {
        while (!done()) {
          const wait = h.rng.range(100, 1500)
          for (let i = 0; i < wait && !done(); i++) await immediate()
          if (done()) break
          await h.failover(h.rng.range(0, 30))
          failovers++
        }
      })
      console.log(
        `      ${r.ops} operations, ${r.lockCalls} lock calls in ${r.ms} ms across ${failovers} failovers; longest wait ${r.maxWaitMs} ms; ` +
          `${h.clients.reduce((n, c) => n + c.counters.resends, 0)} requests resent`,
      )
      assert.ok(failovers >= 3, `only ${failovers} failovers`)
      assert.deepEqual(h.violations, [])
    })

    it('catches a broken compatibility rule (the model can fail)', async function () {
      // READ and WRITE of different mounts "compatible"
      const broken: LockCompatFn = (g, r, same) =>
        lockModesCompatible(g, r, same) || (g === READ && r === WRITE) || (g === WRITE && r === READ)
      const h = new Harness(testRng('locks broken compat'), { compatible: broken, collect: true })
      await storm(h, 3, 40, 2000).catch(() => undefined)
      assert.ok(h.violations.length > 0, 'the model must notice conflicting holders')
      console.log(`      caught: ${h.violations[0]}`)
    })
  })
})
