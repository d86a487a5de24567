/*
 * Issue 10 on a real 3-agent cluster: a file held open on the server's mount while another
 * mount removes it, then its directory removed (and made again) on the holding mount, syncs
 * everywhere, and the close.  The server's agent used to die of SIGSEGV at that close (libfuse
 * 2 released the file with a NULL path, which fuse-native cannot take); every agent must live
 * on and every mount keep serving, and the held descriptor reads the file after the remote
 * unlink (the open map, DESIGN §7).  Also from that report: an agent whose mount was detached
 * by `fusermount -uz` ends on SIGTERM, and leaves no admin socket behind; and a client whose
 * server is gone stops on SIGTERM (its stop finishes instead of running into the stop deadline),
 * which also ends a process waiting on it.
 */
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { existsSync, mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { adminSocketPath } from '../../node-agent/src/agent/admin.js'
import { scoutfs } from '../helpers/agent.js'
import type { Cluster } from '../helpers/cluster.js'
import { alive, clusterPerSuite, onMount } from '../helpers/cluster-tests.js'
import { testFrontend } from '../helpers/frontend.js'
import { sh, startPy } from '../helpers/fuse-harness.js'

describe('cluster: issue 10 (a file open on the server mount, removed from another)', function () {
  this.timeout(180_000)
  let c: Cluster
  clusterPerSuite(3, {}, (cl) => (c = cl))

  it('the server agent survives the close of a file whose directory this mount removed and made again', async function () {
    const m0 = c.agents[0]!.mnt
    await onMount(c, 0, '', `os.mkdir(p('D')); wfile(p('D', 'ou'), b'contents\\n'); out(None)`)
    const holder = startPy(
      `fd = os.open(sys.argv[1], os.O_RDONLY); ready(os.pread(fd, 8, 0).decode()); wait()
ready(err(lambda: os.pread(fd, 8, 0).decode())); wait(); os.close(fd); ready('closed')`,
      [join(m0, 'D', 'ou')],
    )
    assert.equal(await holder.next(), 'contents')
    await onMount(c, 1, '', `os.unlink(p('D', 'ou')); out(None)`)
    holder.send('go')
    // the open map: the remote unlink leaves the open file readable here
    assert.equal(await holder.next(), 'contents', 'the pread after the remote unlink')
    // this mount still holds a file below D (unlinked on another mount)
    const here = await onMount(
      c,
      0,
      '',
      `out([err(os.rmdir, p('D')), err(os.mkdir, p('D')), err(os.mkdir, p('D', 'w'))])`,
    )
    for (const a of c.agents) {
      const r = await scoutfs('sync', a.mnt)
      assert.equal(r.code, 0, r.stderr)
    }
    holder.send('go')
    assert.equal(await holder.next(), 'closed')
    await holder.done()
    await new Promise((r) => setTimeout(r, 1000)) // the release reaches the agent after the close
    for (const [i, a] of c.agents.entries())
      assert.ok(alive(a), `agent ${i} died at the close; log:\n${a.log().slice(-2000)}`)
    // fuse-native (libfuse 2 names open files by path) refuses to remove D here; the lowlevel
    // frontend removes it as a local fs would, and D can be made again
    assert.deepEqual(here, testFrontend() === 'fuse-native' ? ['ENOTEMPTY', 'EEXIST', null] : [null, null, null])
    // now it can go, and the agents are all alive and serving
    await onMount(c, 0, '', `os.rmdir(p('D', 'w')); os.rmdir(p('D')); out(None)`)
    for (const [i, a] of c.agents.entries()) {
      assert.ok(alive(a), `agent ${i} died; log:\n${a.log().slice(-2000)}`)
      assert.deepEqual(await onMount(c, i, '', `out(sorted(os.listdir(p())))`), [], `mount ${i}`)
    }
  })

  it('an agent whose mount was detached by fusermount -uz exits on SIGTERM and removes its admin socket', async function () {
    const a = c.agents[2]!
    const sock = adminSocketPath(a.mnt)
    assert.ok(existsSync(sock))
    const r = await sh('fusermount', ['-uz', a.mnt])
    assert.equal(r.code, 0, r.stderr)
    const t0 = Date.now()
    a.proc.kill('SIGTERM')
    const code = await Promise.race([a.exited, new Promise<'hung'>((res) => setTimeout(() => res('hung'), 10_000))])
    assert.notEqual(code, 'hung', `the agent still runs 10 s after SIGTERM; log:\n${a.log().slice(-2000)}`)
    assert.equal(code, 0, a.log().slice(-2000))
    assert.ok(Date.now() - t0 < 10_000)
    assert.ok(!existsSync(sock), 'admin socket left behind')
  })

  it('a client whose server was killed stops on SIGTERM, and a process waiting on it ends', async function () {
    const server = c.agents[0]!
    const client = c.agents[1]!
    // a file the server's mount wrote: reading it on the client needs a lock only a server grants
    mkdirSync(join(server.mnt, 'held-by-server'))
    writeFileSync(join(server.mnt, 'held-by-server', 'x'), 'x')
    server.proc.kill('SIGKILL')
    await server.exited
    await sh('fusermount', ['-uz', server.mnt])
    const reader = spawn('cat', [join(client.mnt, 'held-by-server', 'x')], { stdio: 'ignore' })
    const readerExited = new Promise<number | null>((res) => reader.on('exit', (code) => res(code)))
    const waiting = await Promise.race([
      readerExited,
      new Promise<'waiting'>((res) => setTimeout(() => res('waiting'), 2000)),
    ])
    assert.equal(waiting, 'waiting', 'the read did not wait for a server')
    client.proc.kill('SIGTERM')
    const code = await Promise.race([
      client.exited,
      new Promise<'hung'>((res) => setTimeout(() => res('hung'), 60_000)),
    ])
    assert.notEqual(code, 'hung', `the client still runs 60 s after SIGTERM; log:\n${client.log().slice(-2000)}`)
    // 0: its stop finished; the stop deadline (SCOUTFS_STOP_DEADLINE_MS) would exit 1
    assert.equal(code, 0, client.log().slice(-2000))
    assert.match(client.log(), /stopping without a server/)
    const readerCode = await Promise.race([
      readerExited,
      new Promise<'hung'>((res) => setTimeout(() => res('hung'), 10_000)),
    ])
    assert.notEqual(readerCode, 'hung', 'the waiting read still runs after its agent stopped')
    assert.notEqual(readerCode, 0, 'the read succeeded without a server')
  })
})
