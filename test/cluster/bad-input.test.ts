/*
 * Agents a cluster must refuse, on real processes: a client of another filesystem pointed at
 * this cluster's server (fsid mismatch), a second server on devices already served, quorum
 * slots that do not exist or have no address, and malformed addresses.  Each refused agent
 * must exit by itself, non-zero, with a message that says why, and leave no mount behind;
 * the cluster must go on serving its mounts afterwards.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { FileDevice } from '../../node-agent/src/storage/device.js'
import { readSuper } from '../../node-agent/src/storage/super.js'
import { agentStatus, makeClusterDevices, type Cluster } from '../helpers/cluster.js'
import { clusterPerSuite, onMount, runRefusedMount } from '../helpers/cluster-tests.js'
import { fuseMountsUnder } from '../helpers/fuse-harness.js'

async function fsidOf(meta: string): Promise<string> {
  const dev = await FileDevice.open(meta)
  try {
    return (await readSuper(dev)).fsid.toString(16)
  } finally {
    await dev.close()
  }
}

describe('cluster: refused agents', function () {
  this.timeout(180_000)
  let c: Cluster
  let n = 0
  clusterPerSuite(2, {}, (cl) => (c = cl))
  const mnt = (): string => join(c.dev.dir, `refused-${++n}`)

  /** the cluster still works: both mounts connected, a write on one read on the other */
  async function stillServes(what: string): Promise<void> {
    const s = await agentStatus(c.agents[0]!.mnt)
    assert.equal(s.serverState?.mounts.length, 2, `after ${what}: the server has its two mounts`)
    const name = `after-${n}`
    await onMount(c, 1, '', `wfile(p('${name}'), b'${what}'); out(None)`)
    assert.equal(await onMount(c, 0, '', `out(rfile(p('${name}')).decode())`), what, `after ${what}`)
  }

  it('refuses an agent of another filesystem at TLS, both ends saying why', async () => {
    const other = await makeClusterDevices({ metaBytes: 256 << 20, dataBytes: 256 << 20 })
    const mine = await fsidOf(c.dev.meta)
    const theirs = await fsidOf(other.meta)
    assert.notEqual(mine, theirs)
    const m = mnt()
    // its own filesystem's certificates (runRefusedMount adds them), pointed at our server
    const r = await runRefusedMount(other, m, `server_addr=${c.dev.serverAddr}`)
    const log = r.stdout + r.stderr
    assert.equal(r.signal, undefined, `the agent exits by itself (it was killed after 60 s):\n${log}`)
    assert.notEqual(r.code, 0, `exit code ${r.code}`)
    assert.equal(r.mountedAtSomePoint, false, `it never reported a mount:\n${log}`)
    assert.match(log, /certificate/i, `the refused agent says the server's certificate is not trusted:\n${log}`)
    assert.deepEqual(await fuseMountsUnder(m), [], 'no mount left behind')
    const serverLog = c.agents[0]!.log()
    assert.match(
      serverLog,
      /"reason":"(untrusted|handshake)","why":"[^"]+","role":"tls","msg":"refused a TLS peer"/,
      `the server logs the refusal and why:\n${serverLog
        .split('\n')
        .filter((l) => /tls|TLS/.test(l))
        .slice(-5)
        .join('\n')}`,
    )
    await stillServes('the refused agent of another filesystem')
  })

  it('refuses a second server on devices already served (EBUSY)', async () => {
    const m = mnt()
    const r = await runRefusedMount(c.dev, m, 'quorum_slot_nr=0')
    const log = r.stdout + r.stderr
    assert.equal(r.signal, undefined, `the agent exits by itself (it was killed after 60 s):\n${log}`)
    assert.notEqual(r.code, 0, `exit code ${r.code}`)
    assert.equal(r.mountedAtSomePoint, false, `it never reported a mount:\n${log}`)
    assert.match(log, /EBUSY|already served/i, `the message says the devices are served already:\n${log}`)
    assert.deepEqual(await fuseMountsUnder(m), [], 'no mount left behind')
    await stillServes('the second server')
  })

  it('refuses quorum slots that do not exist or have no address, and malformed server addresses', async () => {
    const cases: Array<[string, RegExp]> = [
      ['quorum_slot_nr=1', /slot 1.*(no address|not.*address)/i],
      ['quorum_slot_nr=9', /slot 9/i],
      ['quorum_slot_nr=x', /quorum_slot_nr/],
      ['server_addr=nonsense', /server_addr/],
      ['server_addr=127.0.0.1:99999', /server_addr|port/i],
    ]
    for (const [opt, why] of cases) {
      const m = mnt()
      const r = await runRefusedMount(c.dev, m, opt)
      const log = r.stdout + r.stderr
      assert.equal(r.signal, undefined, `-o ${opt}: exits by itself:\n${log}`)
      assert.notEqual(r.code, 0, `-o ${opt}: exit code ${r.code}`)
      assert.equal(r.mountedAtSomePoint, false, `-o ${opt}: never mounted`)
      assert.match(log, why, `-o ${opt}: the message says why:\n${log}`)
      assert.deepEqual(await fuseMountsUnder(m), [], `-o ${opt}: no mount left behind`)
    }
    await stillServes('the bad options')
  })
})
