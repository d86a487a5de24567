/*
 * kill -9 of agents of a real 3-mount cluster: what a mount fsynced survives the death of its
 * agent, the other mounts go on (the dead mount's locks are recovered by the server), and the
 * agent restarted on the same mountpoint mounts again and sees it all.  The same for the
 * server's agent: its restart must let the client mounts carry on where they were.
 */
import assert from 'node:assert/strict'
import type { Cluster } from '../helpers/cluster.js'
import { agentStatus } from '../helpers/cluster.js'
import { clusterPerSuite, onMount, others, restartAgent } from '../helpers/cluster-tests.js'
import { testRng } from '../helpers/rng.js'

const FSYNCED = String.raw`
name, seed = ARGS[0], int(ARGS[1])
rnd = random.Random(seed)
os.mkdir(p(name))
r = {}
for i, size in enumerate([1, 4097, 100_003, 1 << 20]):
    data = gen(rnd.getrandbits(32), size)
    fd = os.open(p(name, 'f%d' % i), os.O_CREAT | os.O_WRONLY, 0o644)
    write_all(fd, data)
    os.fsync(fd)
    os.close(fd)
    r['f%d' % i] = sha(data)
# a rewrite in place, fsynced
fd = os.open(p(name, 'f2'), os.O_WRONLY)
write_all(fd, b'patched', 50_000)
os.fsync(fd)
os.close(fd)
r['f2'] = fsha(p(name, 'f2'))
# written but never synced: may or may not survive, must not break anything
wfile(p(name, 'unsynced'), b'maybe')
out(r)
`
const READ = String.raw`
name = ARGS[0]
out({f: fsha(p(name, f)) for f in ['f0', 'f1', 'f2', 'f3']})
`

describe('cluster: kill -9 of agents', function () {
  this.timeout(300_000)
  let c: Cluster
  clusterPerSuite(3, {}, (cl) => (c = cl))

  it("keeps a client's fsynced data when its agent is killed; the others see it, and so does its restart", async () => {
    const rng = testRng('kill9-client')
    const V = 2
    const wrote = await onMount(c, V, '', FSYNCED, 'client', String(rng.u32()))
    const deadRid = (await agentStatus(c.agents[V]!.mnt)).rid
    await c.agents[V]!.kill9()
    for (const m of others(c, V)) {
      assert.deepEqual(await onMount(c, m, '', READ, 'client'), wrote, `mount ${m} after mount ${V} was killed`)
      const listed = await onMount(c, m, '', `out(sorted(os.listdir(p('client'))))`)
      assert.ok(
        ['f0', 'f1', 'f2', 'f3'].every((f) => listed.includes(f)),
        `mount ${m} lists the files: ${listed}`,
      )
    }
    // the others can change what the dead mount held locks on
    await onMount(c, 0, '', `wfile(p('client', 'f0'), b'after'); out(None)`)
    const s = await agentStatus(c.agents[0]!.mnt)
    assert.ok(!s.serverState!.mounts.includes(deadRid), `the dead mount ${deadRid} is gone from the server`)

    const back = await restartAgent(c, V)
    const again = await onMount(c, V, '', READ, 'client')
    assert.deepEqual(again, { ...wrote, f0: await onMount(c, 0, '', `out(fsha(p('client', 'f0')))`) })
    assert.equal(await onMount(c, V, '', `out(rfile(p('client', 'f0')).decode())`), 'after')
    await onMount(c, V, '', `wfile(p('client', 'back'), b'back'); out(None)`)
    assert.equal(await onMount(c, 1, '', `out(rfile(p('client', 'back')).decode())`), 'back')
    assert.equal((await agentStatus(c.agents[0]!.mnt)).serverState!.mounts.length, 3)
    assert.ok(back.mnt.endsWith('m2'))
  })

  it("keeps fsynced data when the server's agent is killed; its restart lets the clients go on", async () => {
    const rng = testRng('kill9-server')
    const wrote = await onMount(c, 1, '', FSYNCED, 'server', String(rng.u32()))
    const before = await onMount(c, 2, '', READ, 'server')
    assert.deepEqual(before, wrote, 'mount 2 sees it before the kill')
    // mount 2 writes without syncing: it lives through the server's death, so this must not be lost
    const pending = await onMount(c, 2, '', `d = gen(5, 70_001); wfile(p('server', 'pending'), d); out(sha(d))`)
    await c.agents[0]!.kill9()
    // a write and fsync on mount 1 while no server runs: it waits for the new one
    const during = onMount(
      c,
      1,
      '',
      String.raw`
      d = gen(6, 12_345)
      fd = os.open(p('server', 'during'), os.O_CREAT | os.O_WRONLY, 0o644)
      write_all(fd, d)
      r = E(os.fsync, fd)
      os.close(fd)
      out([r, sha(d)])
      `,
    )
    await restartAgent(c, 0)
    const [fsynced, duringSha] = await during
    assert.equal(fsynced, 'OK', 'the fsync issued while the server was down completes once it is back')
    // the server's own mount, and both clients, which never stopped
    for (let m = 0; m < 3; m++)
      assert.deepEqual(await onMount(c, m, '', READ, 'server'), wrote, `mount ${m} after the server's restart`)
    for (let m = 0; m < 3; m++)
      assert.deepEqual(
        await onMount(c, m, '', `out([fsha(p('server', 'pending')), fsha(p('server', 'during'))])`),
        [pending, duringSha],
        `mount ${m}: mount 2's unsynced write from before the kill, mount 1's write from while the server was down`,
      )
    await onMount(c, 1, '', `wfile(p('server', 'new'), b'from 1'); out(None)`)
    await onMount(c, 2, '', `wfile(p('server', 'f1'), b'from 2'); out(None)`)
    for (let m = 0; m < 3; m++)
      assert.deepEqual(
        await onMount(c, m, '', `out([rfile(p('server', 'new')).decode(), rfile(p('server', 'f1')).decode()])`),
        ['from 1', 'from 2'],
        `mount ${m}: the clients' writes after the server's restart`,
      )
    const s = await agentStatus(c.agents[0]!.mnt)
    assert.equal(s.serverState!.mounts.length, 3, `the new server has every mount: ${JSON.stringify(s.serverState)}`)
    assert.equal(s.serverState!.recovering, false)
  })
})
