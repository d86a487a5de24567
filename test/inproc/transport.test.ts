/*
 * The harness's in-process transport keeps the contracts it stands in for: lock messages
 * arrive in order per direction, never synchronously inside the sender's call, as copies;
 * ServerApi results are copies a mount cannot use to change the server's state; a cut link
 * fails its calls in flight with ENOTCONN and delivers nothing more.
 */
import assert from 'node:assert/strict'
import { LockMode, type LockClientMsg, type LockServerMsg } from '../../node-agent/src/protocol/lock-modes.js'
import { makeKey, Zone } from '../../node-agent/src/storage/format.js'
import { InProcCluster } from '../harness/cluster.js'
import { MountLink, type ServerEnd } from '../harness/transport.js'
import { errnoOf } from '../harness/paths.js'
import { Rng, testSeed } from '../helpers/rng.js'

/** a server end that records what reaches it and answers getRoots from a held object */
function fakeServer(): ServerEnd & { got: Array<[string, unknown]>; hang: boolean } {
  const s = {
    got: [] as Array<[string, unknown]>,
    hang: false,
    api: {
      greeting: async () => ({ fsid: 1n, formatVersion: 1 }),
      listMounts: async () => {
        if (s.hang) await new Promise(() => undefined)
        return [1, 2]
      },
    } as unknown as ServerEnd['api'],
    receiveLock: (_rid: number, m: LockClientMsg) => void s.got.push(['msg', m]),
    hello: (_rid: number, held: unknown) => void s.got.push(['hello', held]),
    farewell: () => undefined,
    touch: () => undefined,
    openMapReply: (_rid: number, m: unknown) => void s.got.push(['openMap', m]),
  }
  return s
}

const req = (reqId: number): LockClientMsg => ({
  kind: 'request',
  start: makeKey(Zone.FS, reqId),
  end: makeKey(Zone.FS, reqId, 0xff),
  oldMode: LockMode.NULL,
  mode: LockMode.READ,
  reqId,
})

describe('inproc: the transport', function () {
  it('delivers lock messages in order, asynchronously, as copies, the hello first', async () => {
    const link = new MountLink(7, { rng: new Rng(testSeed('transport order')), maxDelayTurns: 5 })
    const srv = fakeServer()
    link.connect(srv)
    const down: LockServerMsg[] = []
    const send = link.openLocks({
      receive: (m) => down.push(m),
      recoveryReport: () => [],
      resendRequests: () => undefined,
    })
    send(req(0)) // before the greeting: waits in the backlog
    await link.api.greeting(7, 1n, 1)
    const sent = Array.from({ length: 50 }, (_, i) => req(i + 1))
    for (const m of sent) send(m)
    assert.equal(srv.got.length, 0, 'nothing is delivered inside the send')
    sent[3]!.start.fill(0xee) // the sender reuses its buffer: what was sent is unchanged
    for (let i = 0; i < 500 && srv.got.length < 52; i++) await new Promise((r) => setImmediate(r))
    assert.equal(srv.got[0]![0], 'hello')
    const ids = srv.got.slice(1).map(([, m]) => (m as LockClientMsg & { reqId: number }).reqId)
    assert.deepEqual(
      ids,
      Array.from({ length: 51 }, (_, i) => i),
      'in order, the backlog first',
    )
    assert.ok(!(srv.got[4]![1] as LockClientMsg).start.equals(sent[3]!.start), 'a copy was delivered')
    const grant: LockServerMsg = {
      kind: 'grant',
      start: makeKey(Zone.FS, 1),
      end: makeKey(Zone.FS, 1, 0xff),
      mode: LockMode.READ,
      writeSeq: 0,
      rootsVersion: 1,
      reqId: 1,
    }
    link.sendDown(grant)
    assert.equal(down.length, 0, 'nothing is delivered inside the server send')
    for (let i = 0; i < 50 && down.length === 0; i++) await new Promise((r) => setImmediate(r))
    assert.equal(down.length, 1)
    assert.notEqual(down[0]!.start, grant.start)
  })

  it('a cut link fails its calls in flight with ENOTCONN and delivers nothing more', async () => {
    const link = new MountLink(9, { rng: new Rng(1) })
    const srv = fakeServer()
    link.connect(srv)
    srv.hang = true
    const pending = errnoOf(link.api.listMounts())
    await new Promise((r) => setImmediate(r))
    link.cut()
    assert.equal(await pending, 'ENOTCONN')
    assert.equal(await errnoOf(link.api.listMounts()), 'ENOTCONN')
  })

  it("results are copies: changing what a mount got leaves the server's state as it was", async () => {
    const c = await InProcCluster.start({ mounts: 1, seed: testSeed('transport copies') })
    try {
      await c.mount(0).fs.mkdir(1, 'd', 0o755, { uid: 0, gid: 0 })
      await c.sync(0)
      const api = c.mount(0).link.api
      const r = await api.getRoots()
      assert.ok(r.logTrees.length > 0)
      r.logTrees[0]!.itemRoot.ref.blkno = 12345
      r.logTrees.length = 0
      r.fsRoot.height = 99
      const again = await c.server.server.getRoots()
      assert.ok(again.logTrees.length > 0 && again.fsRoot.height !== 99)
      assert.notEqual(again.logTrees[0]!.itemRoot.ref.blkno, 12345)
    } finally {
      await c.stop()
    }
  })
})
