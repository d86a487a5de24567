/*
 * Cluster locks, the server side (test/helpers/lock-harness.ts runs a LockServer and
 * LockClients over a seeded loopback and checks the model): write_seq, duplicate and late
 * invalidation responses, resent invalidations, client removal, lock recovery on a new server
 * and the server view across failover.
 *
 * Replay a failure with SCOUTFS_TEST_SEED=<seed>; LOCK_TRACE=1 prints the last 600 messages and
 * hooks at the first violation.
 */
import assert from 'node:assert/strict'
import { isFsError } from '../../node-agent/src/util/errors.js'
import { type LockClientMsg, type LockServerMsg } from '../../node-agent/src/protocol/lock-modes.js'
import { LockServer } from '../../node-agent/src/lock/lock-server.js'
import { testRng } from '../helpers/rng.js'
import {
  NULL,
  READ,
  WRITE,
  WRITE_ONLY,
  type Mode,
  immediate,
  Harness,
  waitFor,
  settled,
  L1,
  L2,
  L3,
  checkModelAfterEach,
} from '../helpers/lock-harness.js'

describe('cluster locks: server', function () {
  this.timeout(30_000)
  checkModelAfterEach()

  describe('directed', function () {
    it('write_seq increases across WRITE grants', async function () {
      const h = new Harness(testRng('locks write_seq'))
      let last = 0
      for (let i = 0; i < 12; i++) {
        const c = h.clients[i % 3]!
        const mode = i % 4 === 3 ? WRITE_ONLY : WRITE
        const hd = await h.acquire(c, L1, mode)
        assert.ok(hd.writeSeq > last, `grant ${i}: ${hd.writeSeq} after ${last}`)
        last = hd.writeSeq
        h.release(c, hd)
        const rd = await h.acquire(h.clients[(i + 1) % 3]!, L1, READ)
        assert.equal(rd.writeSeq, 0)
        h.release(h.clients[(i + 1) % 3]!, rd)
      }
      await h.settle()
    })

    it('duplicate and late invalidation responses are harmless', async function () {
      const h = new Harness(testRng('locks dup responses'))
      const [a, b] = [h.client(1), h.client(2)]
      h.release(a, await h.acquire(a, L1, WRITE))
      await h.settle()
      const replies: LockClientMsg[] = []
      const origReceive = h.server.receive.bind(h.server)
      h.server.receive = (rid, msg) => {
        if (msg.kind === 'invalidated') replies.push(msg)
        origReceive(rid, msg)
      }
      h.release(b, await h.acquire(b, L1, READ))
      await h.settle()
      assert.equal(replies.length, 1)
      // a now holds READ; b READ.  Replay a's reply, then ask for WRITE from b: the old reply
      // must not count as the answer to the new invalidation
      const ignored = h.server.counters.ignoredResponses
      h.server.receive(1, replies[0]!)
      assert.equal(h.server.counters.ignoredResponses, ignored + 1)
      let gate!: () => void
      h.hookGate = (rid) => (rid === 1 ? new Promise<void>((r) => (gate = r)) : Promise.resolve())
      const wb = h.acquire(b, L1, WRITE)
      await waitFor(h, () => gate !== undefined, 'a hook')
      h.server.receive(1, { ...replies[0]!, mode: NULL }) // stale id, even with the right mode
      assert.equal(await settled(wb), false, 'a stale reply does not grant')
      assert.equal(h.server.grantedMode(L1[0], 1), READ)
      h.hookGate = undefined
      gate()
      h.release(b, await wb)
      await h.settle()
      assert.equal(a.heldMode(L1[0]), NULL)
    })

    it('sends an unanswered invalidation again when the client reconnects (one sent while away is lost)', function () {
      const sent: Array<[number, LockServerMsg]> = []
      let connected = new Set([1, 2])
      const ls = new LockServer({
        send: (rid, m) => {
          if (connected.has(rid)) sent.push([rid, m])
        },
        nextSeq: () => 7,
        rootsVersion: () => 1,
      })
      const req = (rid: number, mode: Mode, reqId: number): void =>
        ls.receive(rid, { kind: 'request', start: L1[0], end: L1[1], oldMode: NULL, mode, reqId })
      req(1, WRITE, 1)
      assert.deepEqual(
        sent.map(([r, m]) => [r, m.kind, m.mode]),
        [[1, 'grant', WRITE]],
      )
      connected = new Set([2]) // client 1's stream is down: the invalidation is lost
      req(2, WRITE, 1)
      assert.equal(sent.length, 1)
      assert.equal(ls.resendInvalidations(2), 0, 'nothing is owed by client 2')
      connected = new Set([1, 2])
      assert.equal(ls.resendInvalidations(1), 1)
      const inv = sent[1]!
      assert.equal(inv[0], 1)
      assert.ok(inv[1].kind === 'invalidate' && inv[1].mode === NULL && inv[1].oldMode === WRITE)
      ls.receive(1, { kind: 'invalidated', start: L1[0], end: L1[1], mode: NULL, invId: inv[1].invId })
      assert.deepEqual(
        sent.slice(2).map(([r, m]) => [r, m.kind, m.mode]),
        [[2, 'grant', WRITE]],
      )
      assert.equal(ls.resendInvalidations(1), 0, 'answered: nothing left to resend')
    })

    it('removing a client drops its locks and unblocks the waiters', async function () {
      const h = new Harness(testRng('locks removal'))
      const [a, b, c] = [h.client(1), h.client(2), h.client(3)]
      const stuck = await h.acquire(c, L1, WRITE) // c dies holding it
      const heldL2 = await h.acquire(a, L2, WRITE)
      const cWaitsL2 = c.lock(L2, READ) // c also has a request queued behind a
      const ra = h.acquire(a, L1, READ)
      const wb = h.acquire(b, L1, WRITE)
      for (let i = 0; i < 50; i++) await immediate()
      assert.equal(await settled(ra), false)
      assert.equal(await settled(wb), false)
      assert.equal(h.server.state(L1[0])!.invalidating.length, 1)
      h.disconnect(3)
      c.shutdown()
      await assert.rejects(cWaitsL2, (e) => isFsError(e, 'ENOTCONN'))
      h.forgetClient(3)
      h.server.removeClient(3)
      h.server.removeClient(3) // idempotent
      assert.equal(h.server.grantedMode(L1[0], 3), NULL)
      assert.ok(!h.server.state(L2[0])!.queue.some((q) => q.rid === 3))
      // a and b were queued in either order; each lets go as soon as it has the lock
      await Promise.all([ra.then((x) => h.release(a, x)), wb.then((x) => h.release(b, x))])
      h.release(a, heldL2)
      await h.settle()
      void stuck
    })

    it('recovery rebuilds the lock state on a new server and grants nothing until it finishes', async function () {
      const h = new Harness(testRng('locks recovery'))
      const [a, b, c] = [h.client(1), h.client(2), h.client(3)]
      const wa = await h.acquire(a, L1, WRITE) // a keeps using it across the failover
      h.release(b, await h.acquire(b, L2, READ))
      const rc = h.acquire(c, L1, READ) // waits on a
      await waitFor(h, () => h.server.state(L1[0])?.invalidating.length === 1, 'the invalidation of a')
      await h.settle()
      const oldSeq = wa.writeSeq

      // the server dies: everything in flight is lost
      for (const cl of h.clients) h.disconnect(cl.rid)
      h.seq = 1000 // the new server's core counter (it must exceed every recovered write_seq)
      h.server = h.newServer(true)
      for (const cl of h.clients) {
        h.connect(cl)
        h.server.recover(cl.rid, cl.recoveryReport())
      }
      assert.ok(h.server.maxRecoveredWriteSeq >= oldSeq)
      assert.ok(h.seq > h.server.maxRecoveredWriteSeq)
      assert.equal(h.server.grantedMode(L1[0], 1), WRITE)
      assert.equal(h.server.grantedMode(L2[0], 2), READ)
      for (const cl of h.clients) cl.resendRequests()
      const rb = h.acquire(b, L3, READ) // nobody holds L3, still nothing is granted yet
      await h.settle()
      assert.equal(await settled(rb), false, 'no grant during recovery')
      assert.equal(await settled(rc), false)
      assert.equal(h.server.state(L1[0])!.queue.length, 1, 'the resent request is queued')

      h.server.finishRecovery()
      h.release(b, await rb)
      await h.settle()
      // the recovered WRITE of a still blocks c until a lets go
      assert.equal(await settled(rc), false)
      h.release(a, wa)
      const hc = await rc
      assert.equal(c.heldMode(L1[0]), READ)
      h.release(c, hc)
      // write grants of the new server continue above the recovered seqs
      const w2 = await h.acquire(b, L1, WRITE)
      assert.ok(w2.writeSeq > oldSeq)
      h.release(b, w2)
      await h.settle()
    })

    it('a request for less than the mount holds never lowers the server view (failover mid-invalidation)', async function () {
      const h = new Harness(testRng('locks no lowering grant'))
      const [a, c] = [h.client(1), h.client(3)]
      const wa = await h.acquire(a, L1, WRITE)
      const wc = h.acquire(c, L1, WRITE) // the server invalidates a to NULL; a waits for wa
      await waitFor(h, () => h.server.state(L1[0])?.invalidating.length === 1, 'the invalidation of a')
      await h.settle()
      const ra = h.acquire(a, L1, READ) // held back by the queued invalidation: a asks for READ
      await h.settle()
      assert.equal(await settled(ra), false)
      // the new server learns WRITE from a's report, then a's resent READ request: granting
      // READ would let the server believe less than a holds while wa is still in use
      await h.failover(3)
      await h.settle()
      assert.equal(h.server.grantedMode(L1[0], 1), WRITE)
      assert.equal(await settled(wc), false, 'c still waits for a')
      h.release(a, wa)
      await Promise.all([ra.then((x) => h.release(a, x)), wc.then((x) => h.release(c, x))])
      await h.settle()
    })
  })
})
