/*
 * The FUSE adapter over the in-memory FsApi, exercised the way users reach it: from child
 * processes (shell tools, python3) against a real FUSE mount.  This process serves the mount,
 * so it never touches it with synchronous fs calls.
 *
 * This file: every request is answered exactly once (respond()), and the mount lifecycle:
 * unmount with open files, a rejected mount, two mounts of one fs.
 */
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FsError } from '../../node-agent/src/util/errors.js'
import { FuseAdapter } from '../../node-agent/src/fuse/fuse-native-adapter.js'
import { respond } from '../../node-agent/src/fuse/reply.js'
import { MemFs } from '../helpers/mem-fs.js'
import { bash, fuseMountsUnder, mountFs, py, sh, startPy, unmountAll } from '../helpers/fuse-harness.js'
import { RecordingLog, ok, waitFor } from '../helpers/adapter-mount.js'

describe('fuse: every request is answered exactly once', function () {
  const answers = (): { log: RecordingLog; got: number[][]; reply: (res: number, ...r: unknown[]) => void } => {
    const got: number[][] = []
    return { log: new RecordingLog(), got, reply: (res, ...r) => got.push([res, ...(r as number[])]) }
  }

  it('a second answer is logged and dropped', async function () {
    const { log, got, reply } = answers()
    respond(
      log,
      'op',
      reply,
      reply,
      async () => 7,
      (v, r) => {
        r(0, v)
        r(0, v)
      },
    )
    await new Promise((r) => setImmediate(r))
    assert.deepEqual(got, [[0, 7]])
    assert.equal(log.errors.length, 1)
    assert.match(log.errors[0]!, /second answer/)
  })

  it('a throw after the answer does not answer again; throws and rejections before it answer with the errno', async function () {
    const { log, got, reply } = answers()
    respond(
      log,
      'late',
      reply,
      reply,
      async () => 1,
      (_v, r) => {
        r(0)
        throw new Error('after')
      },
    )
    respond(
      log,
      'sync',
      reply,
      reply,
      () => {
        throw new FsError('ENOENT', 'x')
      },
      () => undefined,
    )
    respond(
      log,
      'async',
      reply,
      reply,
      () => Promise.reject(new FsError('EEXIST', 'x')),
      () => undefined,
    )
    respond(
      log,
      'odd',
      reply,
      reply,
      () => Promise.reject(new Error('odd')),
      () => undefined,
    )
    await new Promise((r) => setImmediate(r))
    assert.deepEqual(got, [[-2], [0], [-17], [-5]])
    assert.deepEqual(
      log.errors.map((e) => e.split(':')[0]),
      ['late', 'odd failed'],
    )
  })
})

describe('fuse: mount lifecycle', function () {
  this.timeout(60_000)

  afterEach(async function () {
    await unmountAll()
  })

  it('unmount with a file still open removes the mount and releases the handle in the fs', async function () {
    const fs = new MemFs()
    const m = await mountFs(fs, { log: new RecordingLog() })
    ok(await bash(`printf x > ${m.mnt}/f`))
    const ino = (await fs.resolvePath('f')).ino
    const child = startPy(`fd = os.open(sys.argv[1], os.O_RDONLY); ready(os.read(fd, 1).decode()); wait()`, [
      `${m.mnt}/f`,
    ])
    assert.equal(await child.next(), 'x')
    assert.equal(fs.openCount(ino), 1)
    await m.adapter.unmount()
    assert.deepEqual(await fuseMountsUnder(m.mnt), [])
    assert.equal(fs.openCount(ino), 0)
    child.kill()
    await child.done()
    await m.cleanup()
    await m.adapter.unmount() // idempotent
  })

  it('a mount that libfuse rejects fails cleanly and leaves nothing mounted', async function () {
    const dir = await mkdtemp(join(tmpdir(), 'scoutfs-bad-'))
    try {
      await assert.rejects(FuseAdapter.mount(new MemFs(), dir, { extraOptions: ['no_such_option_xyz'] }))
      assert.deepEqual(await fuseMountsUnder(dir), [])
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('issue 10: a file open under a directory another mount emptied keeps its path here (no crash at its close)', async function () {
    // libfuse 2 calls flush/release with a NULL path once the open file's directory lost its
    // name on this mount, and fuse-native dies of SIGSEGV on it: this mount must refuse to
    // remove (rmdir, rename over) a directory with a file open below it, even when another
    // mount removed that file
    const fs = new MemFs()
    const log = new RecordingLog()
    const a = await mountFs(fs, { log })
    const b = await mountFs(fs, { log })
    ok(await bash(`mkdir ${a.mnt}/D && echo contents > ${a.mnt}/D/ou`))
    const child = startPy(
      `fd = os.open(sys.argv[1], os.O_RDONLY); ready(os.pread(fd, 8, 0).decode()); wait(); os.close(fd); ready('closed')`,
      [`${a.mnt}/D/ou`],
    )
    assert.equal(await child.next(), 'contents')
    ok(await sh('rm', [`${b.mnt}/D/ou`]))
    const tryRm = `out([err(os.rmdir, p) for p in sys.argv[1:]])`
    assert.deepEqual(JSON.parse(ok(await py(tryRm, [`${a.mnt}/D`]))), ['ENOTEMPTY'])
    // rename over it is refused too; renaming it keeps the open file below it
    ok(await sh('mkdir', [`${a.mnt}/x`]))
    assert.equal(
      ok(await py(`out(err(os.rename, sys.argv[1] + '/x', sys.argv[1] + '/D'))`, [a.mnt])).trim(),
      '"ENOTEMPTY"',
    )
    ok(await sh('mv', [`${a.mnt}/D`, `${a.mnt}/E`]))
    assert.deepEqual(JSON.parse(ok(await py(tryRm, [`${a.mnt}/E`]))), ['ENOTEMPTY'])
    child.send('go')
    assert.equal(await child.next(), 'closed')
    await child.done()
    await waitFor('the release', () => a.adapter.openHandles() === 0)
    // after the close: removable, and the mount still serves
    ok(await sh('rmdir', [`${a.mnt}/E`, `${a.mnt}/x`]))
    assert.equal(ok(await sh('ls', ['-a', a.mnt])), '.\n..\n')
    assert.deepEqual(log.errors, [])
  })

  it('two mounts of one fs see each other at once', async function () {
    const fs = new MemFs()
    const a = await mountFs(fs)
    const b = await mountFs(fs)
    ok(await bash(`printf one > ${a.mnt}/shared`))
    assert.equal(ok(await sh('cat', [`${b.mnt}/shared`])), 'one')
    // rewrite on A while B holds the file open: B reads the new bytes (direct_io, no page cache)
    const child = startPy(
      `fd = os.open(sys.argv[1], os.O_RDONLY); ready(os.pread(fd, 10, 0).decode()); wait(); ready(os.pread(fd, 10, 0).decode())`,
      [`${b.mnt}/shared`],
    )
    assert.equal(await child.next(), 'one')
    ok(await bash(`printf two > ${a.mnt}/shared`))
    child.send('go')
    assert.equal(await child.next(), 'two')
    await child.done()
    ok(await sh('mkdir', [`${a.mnt}/d`]))
    assert.equal(ok(await sh('stat', ['-c', '%F', `${b.mnt}/d`])), 'directory\n')
    ok(await sh('rmdir', [`${b.mnt}/d`]))
    assert.notEqual((await sh('stat', [`${a.mnt}/d`])).code, 0)
  })
})
