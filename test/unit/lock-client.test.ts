/*
 * Cluster locks, the client side (test/helpers/lock-harness.ts runs a LockServer and
 * LockClients over a seeded loopback and checks the model): lock modes and request ordering,
 * local service of held locks, EDEADLK under a transaction, downgrade and upgrade with their
 * hooks, roots refresh, queued invalidations and idle release.
 *
 * Replay a failure with SCOUTFS_TEST_SEED=<seed>; LOCK_TRACE=1 prints the last 600 messages and
 * hooks at the first violation.
 */
import assert from 'node:assert/strict'
import { isFsError } from '../../node-agent/src/util/errors.js'
import { Zone, makeKey } from '../../node-agent/src/storage/format.js'
import { RENAME_LOCK_RANGE, lockRange } from '../../node-agent/src/protocol/lock-ranges.js'
import { LOCK_DEADLOCK_ERRNO, LockClient } from '../../node-agent/src/lock/lock-client.js'
import {
  LockOrderClass,
  invalidationDropsCache,
  lockModeName,
  lockModesCompatible,
  sortLockRequests,
  type LockClientMsg,
  type LockRequestMsg,
  type OrderedLockRequest,
} from '../../node-agent/src/protocol/lock-modes.js'
import { testRng } from '../helpers/rng.js'
import {
  NULL,
  READ,
  WRITE,
  WRITE_ONLY,
  type Mode,
  crossOk,
  immediate,
  Harness,
  settled,
  L1,
  L2,
  L3,
  checkModelAfterEach,
} from '../helpers/lock-harness.js'

describe('cluster locks: client', function () {
  this.timeout(30_000)
  checkModelAfterEach()

  describe('modes and ordering', function () {
    it('compatibility is exactly DESIGN §8', function () {
      const modes: Mode[] = [NULL, READ, WRITE, WRITE_ONLY]
      for (const g of modes)
        for (const r of modes) {
          assert.equal(
            lockModesCompatible(g, r, false),
            crossOk(g, r),
            `other mount ${lockModeName(g)} vs ${lockModeName(r)}`,
          )
          const same = crossOk(g, r) || (g === READ && r === WRITE)
          assert.equal(lockModesCompatible(g, r, true), same, `same mount ${lockModeName(g)} -> ${lockModeName(r)}`)
        }
      assert.equal(invalidationDropsCache(WRITE, READ), false)
      assert.equal(invalidationDropsCache(WRITE, NULL), true)
      assert.equal(invalidationDropsCache(WRITE_ONLY, NULL), true)
      assert.equal(invalidationDropsCache(READ, NULL), true)
    })

    it('sorts lock requests: rename, inodes by number, write-only, index by key', function () {
      const ino = (n: number, mode: Mode = WRITE): OrderedLockRequest & { tag: string } => ({
        tag: `ino${n}`,
        cls: LockOrderClass.INODE,
        ino: n,
        range: lockRange(makeKey(Zone.FS, n)),
        mode,
      })
      const idxMeta = {
        tag: 'meta',
        cls: LockOrderClass.INDEX,
        range: lockRange(makeKey(Zone.INODE_INDEX, 0)),
        mode: WRITE_ONLY,
      }
      const idxX = {
        tag: 'xattr',
        cls: LockOrderClass.INDEX,
        range: lockRange(makeKey(Zone.XATTR_INDX, 0)),
        mode: WRITE_ONLY,
      }
      const orphan = {
        tag: 'orphan',
        cls: LockOrderClass.WRITE_ONLY,
        range: lockRange(makeKey(Zone.ORPHAN, 0)),
        mode: WRITE_ONLY,
      }
      const rename = { tag: 'rename', cls: LockOrderClass.RENAME, range: RENAME_LOCK_RANGE, mode: WRITE }
      const out = sortLockRequests([idxX, ino(9000), orphan, ino(3), idxMeta, rename, ino(2000, READ)])
      assert.deepEqual(
        out.map((r) => r.tag),
        ['rename', 'ino3', 'ino2000', 'ino9000', 'orphan', 'meta', 'xattr'],
      )
      // two inodes of one group are one lock, in the stronger mode
      const merged = sortLockRequests([ino(7, READ), ino(8, WRITE), ino(2000, READ)])
      assert.equal(merged.length, 2)
      assert.equal(merged[0]!.mode, WRITE)
      assert.throws(
        () => sortLockRequests([ino(7, READ), ino(8, WRITE_ONLY)]),
        (e) => isFsError(e, 'EINVAL'),
      )
    })
  })

  describe('directed', function () {
    it('serves a held compatible lock locally; WRITE satisfies READ', async function () {
      const h = new Harness(testRng('locks local'))
      const a = h.client(1)
      const w = await h.acquire(a, L1, WRITE)
      const reqs = a.counters.requests
      const r1 = await h.acquire(a, L1, READ)
      const r2 = await h.acquire(a, L1, READ)
      assert.equal(a.counters.requests, reqs, 'no message for uses the grant covers')
      h.release(a, r1)
      h.release(a, r2)
      h.release(a, w)
      const wo = h.acquire(a, L1, WRITE_ONLY) // WRITE does not cover WRITE_ONLY: via NULL
      await wo
      assert.equal(a.counters.requests, reqs + 1)
      assert.ok(h.hooks.some((x) => x.rid === 1 && x.oldMode === WRITE && x.newMode === NULL && x.info.wrote))
      h.release(a, await wo)
      await h.settle()
      assert.throws(
        () => a.unlock(r1),
        (e) => isFsError(e, 'EINVAL'),
      )
    })

    it('tryLockAll takes locks this mount holds at once, and nothing when any would wait', async function () {
      const h = new Harness(testRng('locks try'))
      const [a, b] = [h.client(1), h.client(2)]
      h.release(a, await h.acquire(a, L1, WRITE))
      const req = (range: typeof L1, mode: Mode): OrderedLockRequest => ({ cls: LockOrderClass.INDEX, range, mode })
      const reqs = a.counters.requests
      const held = a.tryLockAll([req(L1, READ), req(L1, WRITE)])
      assert.ok(held, 'a WRITE grant serves READ and WRITE at once')
      assert.deepEqual(
        held.map((x) => x.mode),
        [WRITE],
        'the two uses of one lock merge into the stronger',
      )
      a.unlockAll(held)
      assert.equal(a.counters.requests, reqs, 'no message')
      // any lock that would wait: nothing is taken
      assert.equal(a.tryLockAll([req(L1, READ), req(L2, READ)]), undefined, 'L2 is not held')
      assert.equal(a.tryLockAll([req(L1, WRITE_ONLY)]), undefined, 'WRITE does not cover WRITE_ONLY')
      assert.equal(a.tryLockAll([req(L1, READ)], { holdsTrans: true }), undefined)
      assert.equal(a.counters.requests, reqs, 'still no message')
      // had a use of L1 been left behind, b's WRITE would wait for it forever
      const wb = h.acquire(b, L1, WRITE)
      await h.settle()
      assert.equal(await settled(wb), true, 'b gets L1: a holds no use of it')
      h.release(b, await wb)
    })

    it('counts the calls waiting and how long the oldest has waited (the stuck-lock alert), 0 once none waits', async function () {
      const h = new Harness(testRng('locks oldest wait'))
      const [a, b] = [h.client(1), h.client(2)]
      assert.equal(b.oldestWaitSeconds, 0, 'nothing waits yet')
      const w = await h.acquire(a, L1, WRITE) // a's use holds the lock: b waits until it ends
      const first = h.acquire(b, L1, READ)
      await new Promise((r) => setTimeout(r, 30))
      const second = h.acquire(b, L1, READ)
      await h.settle()
      assert.equal(b.waiting, 2)
      const oldest = b.oldestWaitSeconds
      assert.ok(oldest >= 0.03, `the first call has waited ${oldest} s, at least the 30 ms slept since`)
      assert.equal(await settled(first), false)
      h.release(a, w)
      h.release(b, await first)
      h.release(b, await second)
      assert.equal(b.waiting, 0)
      assert.equal(b.oldestWaitSeconds, 0)
    })

    it(`refuses to wait while the caller holds a transaction (${LOCK_DEADLOCK_ERRNO}, EDEADLK)`, async function () {
      const h = new Harness(testRng('locks edeadlk'))
      const a = h.client(1)
      await assert.rejects(a.lock(L1, READ, { holdsTrans: true }), (e: unknown) => {
        assert.ok(isFsError(e, LOCK_DEADLOCK_ERRNO))
        assert.match((e as Error).message, /EDEADLK/)
        return true
      })
      assert.equal(a.counters.requests, 0)
    })

    it('downgrades WRITE to READ when a reader asks, hook first (wrote=true), then the reply', async function () {
      const h = new Harness(testRng('locks downgrade'))
      const [a, b] = [h.client(1), h.client(2)]
      const w = await h.acquire(a, L1, WRITE)
      const rb = h.acquire(b, L1, READ)
      assert.equal(await settled(rb), false, 'the reader waits while the writer uses the lock')
      h.release(a, w)
      h.release(b, await rb)
      await h.settle()
      assert.equal(a.heldMode(L1[0]), READ)
      assert.equal(b.heldMode(L1[0]), READ)
      const hk = h.hooks.filter((x) => x.rid === 1)
      assert.equal(hk.length, 1)
      assert.equal(hk[0]!.oldMode, WRITE)
      assert.equal(hk[0]!.newMode, READ)
      assert.equal(hk[0]!.info.wrote, true)
      assert.equal(hk[0]!.info.release, false)
      const iHook = h.events.indexOf('1 hook WRITE->READ')
      const iReply = h.events.indexOf('1 reply READ')
      assert.ok(iHook >= 0 && iReply > iHook, `hook before reply: ${h.events.join(' | ')}`)
      // the writer still reads locally
      const reqs = a.counters.requests
      h.release(a, await h.acquire(a, L1, READ))
      assert.equal(a.counters.requests, reqs)
    })

    it('upgrades READ to WRITE without going through NULL, invalidating the other readers', async function () {
      const h = new Harness(testRng('locks upgrade'))
      const [a, b] = [h.client(1), h.client(2)]
      const ra = await h.acquire(a, L1, READ)
      h.release(b, await h.acquire(b, L1, READ))
      await h.settle()
      // a still uses READ while it asks for WRITE: the upgrade must not wait for a itself
      const wa = await h.acquire(a, L1, WRITE)
      assert.equal(a.heldMode(L1[0]), WRITE)
      assert.equal(b.heldMode(L1[0]), NULL)
      assert.equal(h.hooks.filter((x) => x.rid === 1).length, 0, 'the upgrading mount is not invalidated')
      const hb = h.hooks.filter((x) => x.rid === 2)
      assert.deepEqual(
        hb.map((x) => [x.oldMode, x.newMode, x.info.wrote]),
        [[READ, NULL, false]],
      )
      assert.ok(!h.events.some((e) => e === 'server->1 invalidate NULL'))
      h.release(a, ra)
      h.release(a, wa)
      await h.settle()
    })

    it('refreshes the roots view before a grant that makes a lock readable is used', async function () {
      let version = 5
      const h = new Harness(testRng('locks roots'), { rootsVersion: () => version })
      const a = h.client(1)
      h.release(a, await h.acquire(a, L1, READ))
      assert.deepEqual(h.refreshes, [{ rid: 1, version: 5 }])
      h.release(a, await h.acquire(a, L2, WRITE))
      assert.equal(h.refreshes.length, 1, 'same version: no refresh')
      version = 7
      h.release(a, await h.acquire(a, L3, WRITE_ONLY))
      assert.equal(h.refreshes.length, 1, 'WRITE_ONLY does not read')
      const hb = h.client(2)
      h.release(hb, await h.acquire(hb, L1, WRITE))
      assert.deepEqual(h.refreshes[1], { rid: 2, version: 7 })
      assert.equal(hb.knownRootsVersion, 7)
      await h.settle()
    })

    it('handles the queued invalidations of one lock in order, each as soon as its own users allow', async function () {
      // a client alone, fed by hand
      const sent: LockClientMsg[] = []
      const hooks: string[] = []
      const c = new LockClient({
        rid: 1,
        send: (m) => sent.push(m),
        onInvalidate: async (_r, o, n, info) => {
          await immediate()
          hooks.push(`${lockModeName(o)}->${lockModeName(n)}${info.wrote ? ' wrote' : ''}`)
        },
      })
      const replies = (): number[] => sent.flatMap((m) => (m.kind === 'invalidated' ? [m.invId] : []))
      const p = c.lock(L1, WRITE)
      const req = sent.find((m) => m.kind === 'request') as LockRequestMsg
      c.receive({
        kind: 'grant',
        start: L1[0],
        end: L1[1],
        mode: WRITE,
        writeSeq: 7,
        rootsVersion: 0,
        reqId: req.reqId,
      })
      const w = await p
      assert.equal(w.writeSeq, 7)
      const r = await c.lock(L1, READ)
      c.receive({ kind: 'invalidate', start: L1[0], end: L1[1], oldMode: WRITE, mode: READ, invId: 11 })
      c.receive({ kind: 'invalidate', start: L1[0], end: L1[1], oldMode: READ, mode: NULL, invId: 12 })
      const r2 = c.lock(L1, READ)
      assert.equal(await settled(r2), false, 'a queued invalidation to NULL holds new READ uses back')
      for (let i = 0; i < 20; i++) await immediate()
      assert.deepEqual([hooks, replies()], [[], []], 'nothing happens while the WRITE use is active')
      c.unlock(w)
      for (let i = 0; i < 20; i++) await immediate()
      assert.deepEqual(hooks, ['WRITE->READ wrote'])
      assert.deepEqual(replies(), [11], 'the first is answered while the READ use (which it allows) goes on')
      assert.equal(c.heldMode(L1[0]), READ)
      c.unlock(r)
      for (let i = 0; i < 20; i++) await immediate()
      assert.deepEqual(hooks, ['WRITE->READ wrote', 'READ->NULL'])
      assert.deepEqual(replies(), [11, 12])
      assert.equal(c.heldMode(L1[0]), NULL)
      // an invalidation of a lock it does not hold is answered at once
      c.receive({ kind: 'invalidate', start: L2[0], end: L2[1], oldMode: READ, mode: NULL, invId: 13 })
      assert.deepEqual(replies(), [11, 12, 13])
      c.shutdown()
      await assert.rejects(r2, (e) => isFsError(e, 'ENOTCONN'))
    })

    it('releases idle locks beyond lock_idle_count, hook first, then NULL', async function () {
      const h = new Harness(testRng('locks idle'), { lockIdleCount: 1 })
      const a = h.client(1)
      for (const r of [L1, L2, L3]) h.release(a, await h.acquire(a, r, WRITE))
      await h.settle()
      assert.equal(a.idleCount, 1)
      assert.equal(a.heldMode(L1[0]), NULL)
      assert.equal(a.heldMode(L2[0]), NULL)
      assert.equal(a.heldMode(L3[0]), WRITE)
      assert.equal(h.server.grantedMode(L1[0], 1), NULL)
      assert.equal(h.server.grantedMode(L2[0], 1), NULL)
      const rel = h.hooks.filter((x) => x.info.release)
      assert.equal(rel.length, 2)
      assert.ok(rel.every((x) => x.oldMode === WRITE && x.newMode === NULL && x.info.wrote))
      // a released lock comes back with a new request
      h.release(a, await h.acquire(a, L1, READ))
      await h.settle()
      assert.equal(a.heldMode(L3[0]), NULL)
    })
  })
})
