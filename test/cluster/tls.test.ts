/*
 * Mutual TLS between agents (issue 17) on a real cluster: a quorum member serving over TLS
 * 1.3 with the filesystem's CA, and clients that present no certificate, a self-signed one,
 * one of another filesystem's CA, an expired one, or speak plaintext.  Each is refused: the
 * server logs why and counts it (scoutfs_tls_refusals_total{reason} on a real scrape), and
 * nothing it sends reaches the server (no greeting is recorded, no lock stream opens).  A
 * certificate replaced on disk is served without a remount; -o insecure warns; a cluster
 * mount without certificates is refused with what to do.
 */
import assert from 'node:assert/strict'
import { copyFileSync, mkdtempSync, readFileSync, renameSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import * as tls from 'node:tls'
import { NetClient } from '../../node-agent/src/net/net-client.js'
import { makeAgentCert, makeCa } from '../../node-agent/src/net/certs.js'
import { tlsName } from '../../node-agent/src/net/tls.js'
import { FORMAT_VERSION } from '../../node-agent/src/storage/format.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import { fsidOf } from '../../node-agent/src/tools/launcher/devices.js'
import { makeDevices, startAgent, stopAllAgents } from '../helpers/agent.js'
import { agentStatus, type Cluster } from '../helpers/cluster.js'
import { clusterPerSuite, onMount, runRefusedMount } from '../helpers/cluster-tests.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

async function scrape(addr: string): Promise<string> {
  return (await fetch(`http://${addr}/metrics`)).text()
}

function refusals(metrics: string, reason: string): number {
  const m = new RegExp(`^scoutfs_tls_refusals_total\\{[^}]*reason="${reason}"[^}]*\\} (\\d+)`, 'm').exec(metrics)
  return m ? Number(m[1]) : 0
}

describe('cluster: mutual TLS between agents', function () {
  this.timeout(300_000)
  let c: Cluster
  clusterPerSuite(2, { metrics: true }, (cl) => (c = cl))
  let work: string
  let fsid: bigint
  let tlsDir: string
  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'scoutfs-tls-test-'))
    fsid = await fsidOf(c.dev.meta)
    tlsDir = join(c.dev.dir, 'tls')
  })
  after(() => rmSync(work, { recursive: true, force: true }))

  /**
   * A raw TLS connection to the server as the cluster's own agent (its CA, certificate and
   * key): what `inspect` reads from the established socket, or `refused: CODE`.
   */
  function connectAsAgent<T>(
    inspect: (s: tls.TLSSocket) => T,
    versions: { minVersion?: tls.SecureVersion; maxVersion?: tls.SecureVersion } = {},
  ): Promise<T | string> {
    const [host, port] = [c.dev.serverAddr.split(':')[0]!, Number(c.dev.serverAddr.split(':')[1])]
    return new Promise((res) => {
      const s = tls.connect({
        host,
        port,
        ca: readFileSync(join(tlsDir, 'ca.crt')),
        cert: readFileSync(join(tlsDir, 'agent.crt')),
        key: readFileSync(join(tlsDir, 'agent.key')),
        servername: tlsName(fsid),
        ALPNProtocols: ['h2'],
        ...versions,
      })
      s.once('secureConnect', () => {
        const v = inspect(s)
        s.destroy()
        res(v)
      })
      s.once('error', (e: NodeJS.ErrnoException) => res(`refused: ${e.code ?? e.message}`))
    })
  }

  /** A client with `files` that greets the server; the error it ends with. */
  async function tryClient(files: { ca: string; cert: string; key: string } | 'plaintext'): Promise<unknown> {
    const cl = new NetClient(c.dev.serverAddr, {
      security: files === 'plaintext' ? { insecure: true } : { files, fsid },
      retryForMs: 1500,
      callTimeoutMs: 1500,
      heartbeatMs: 0,
    })
    try {
      await cl.greeting(0x7e57, fsid, FORMAT_VERSION)
      return undefined
    } catch (e) {
      return e
    } finally {
      cl.close()
    }
  }

  const cases: Array<{
    what: string
    reason: string | RegExp
    make: () => Promise<{ ca: string; cert: string; key: string } | 'plaintext'>
  }> = [
    { what: 'plaintext (no TLS at all)', reason: 'handshake', make: async () => 'plaintext' },
    {
      what: 'a self-signed certificate',
      reason: 'untrusted',
      make: async () => {
        const a = await makeAgentCert({ fsid, name: 'selfsigned', dir: work, selfSigned: true })
        return { ca: join(tlsDir, 'ca.crt'), cert: a.cert, key: a.key }
      },
    },
    {
      what: "another filesystem's certificate",
      reason: 'untrusted',
      make: async () => {
        const other = fsid ^ 0x5a5an
        const d = join(work, 'other')
        await makeCa({ fsid: other, dir: d })
        const a = await makeAgentCert({ caDir: d, fsid: other, name: 'other', dir: d })
        // it trusts our CA (so it gets as far as the server's check), but is not of it
        return { ca: join(tlsDir, 'ca.crt'), cert: a.cert, key: a.key }
      },
    },
    {
      what: 'an expired certificate of the right CA',
      reason: 'expired',
      make: async () => {
        const day = 86_400_000
        const a = await makeAgentCert({
          caDir: tlsDir,
          fsid,
          name: 'expired',
          dir: work,
          notBefore: new Date(Date.now() - 10 * day),
          notAfter: new Date(Date.now() - day),
        })
        return { ca: join(tlsDir, 'ca.crt'), cert: a.cert, key: a.key }
      },
    },
  ]

  for (const k of cases)
    it(`refuses a client with ${k.what}: logged with its reason, counted, and nothing reaches the server`, async () => {
      const server = c.agents[0]!
      const before = await scrape(server.metricsAddr!)
      const statusBefore = await agentStatus(server.mnt)
      const files = await k.make()
      const err = await tryClient(files)
      assert.ok(err, 'the client was refused')
      assert.ok(err instanceof FsError, `an errno: ${String(err)}`)
      console.log(`      ${k.what}: the client ends with ${String(err).slice(0, 160)}`)
      await sleep(200)
      const after = await scrape(server.metricsAddr!)
      const reason = k.reason as string
      assert.ok(
        refusals(after, reason) > refusals(before, reason),
        `scoutfs_tls_refusals_total{reason="${reason}"} grew`,
      )
      assert.match(
        server.log(),
        new RegExp(`"reason":"${reason}","why":"[^"]+","role":"tls","msg":"refused a TLS peer"`),
      )
      const statusAfter = await agentStatus(server.mnt)
      assert.deepEqual(statusAfter.serverState?.mounts, statusBefore.serverState?.mounts, 'no mount was added')
      assert.equal(statusAfter.serverState?.recorded, statusBefore.serverState?.recorded, 'nothing was recorded')
      assert.doesNotMatch(
        server.log(),
        /"rid":32343|"rid":"7e57"/,
        'no greeting of the refused client reached the server',
      )
      // the cluster goes on
      await onMount(c, 1, '', `wfile(p('after-refusal'), b'ok'); out(None)`)
      assert.equal(await onMount(c, 0, '', `out(rfile(p('after-refusal')).decode())`), 'ok')
    })

  it('serves a certificate replaced on disk without a remount (rotation)', async () => {
    const serial = async (): Promise<string> => {
      const v = await connectAsAgent((sock) => sock.getPeerCertificate().serialNumber)
      if (v.startsWith('refused')) throw new Error(v)
      return v
    }
    const before = await serial()
    // a new certificate of the same CA for the same key name, written over the agents' files
    const fresh = await makeAgentCert({ caDir: tlsDir, fsid, name: 'agent', dir: join(work, 'fresh') })
    copyFileSync(fresh.key, join(tlsDir, 'agent.key.new'))
    copyFileSync(fresh.cert, join(tlsDir, 'agent.crt.new'))
    // key and certificate must change together: rename both (a watcher may read in between once)
    renameSync(join(tlsDir, 'agent.key.new'), join(tlsDir, 'agent.key'))
    renameSync(join(tlsDir, 'agent.crt.new'), join(tlsDir, 'agent.crt'))
    let now = before
    const t0 = Date.now()
    while (now === before && Date.now() - t0 < 20_000) {
      await sleep(500)
      now = await serial().catch(() => before)
    }
    console.log(`      the server presented the new certificate ${Date.now() - t0} ms after it was written`)
    assert.notEqual(now, before, 'the new certificate is served')
    await onMount(c, 1, '', `wfile(p('after-rotation'), b'ok'); out(None)`)
    assert.equal(await onMount(c, 0, '', `out(rfile(p('after-rotation')).decode())`), 'ok')
  })

  it('speaks TLS 1.3 only: a TLS 1.2 client with a valid certificate is refused', async () => {
    const connect = (maxVersion: tls.SecureVersion): Promise<string> =>
      connectAsAgent((sock) => sock.getProtocol() ?? '?', { minVersion: 'TLSv1.2', maxVersion })
    assert.equal(await connect('TLSv1.3'), 'TLSv1.3')
    const old = await connect('TLSv1.2')
    console.log(`      a TLS 1.2 client: ${old}`)
    assert.match(old, /^refused/)
  })

  it('refuses a cluster mount without certificates, saying what to do', async () => {
    const r = await runRefusedMount(
      { meta: c.dev.meta, data: c.dev.data },
      join(c.dev.dir, 'no-certs'),
      undefined,
      30_000,
    )
    assert.notEqual(r.code, 0)
    assert.match(r.stderr + r.stdout, /needs certificates.*scoutfs certs local.*-o insecure/s)
  })
})

describe('mount: -o insecure', function () {
  this.timeout(120_000)
  after(stopAllAgents)
  it('runs plaintext only when asked, with a warning at every start', async () => {
    const dev = await makeDevices(256 << 20, 256 << 20)
    for (let i = 0; i < 2; i++) {
      const a = await startAgent(dev, join(dev.dir, 'mnt'), { options: 'insecure' })
      assert.match(a.log(), /PLAINTEXT between agents \(-o insecure\)/)
      assert.equal(await a.stop(), 0)
    }
  })
})
