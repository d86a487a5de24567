/*
 * POSIX semantics of a real mount (a `scoutfs mount --foreground` agent serving FUSE), checked
 * from python (exact errno names) and from this process: chmod/chown/utimens, ownership of
 * new files, timestamps and statfs.
 *
 * One agent serves the whole describe block (test/helpers/posix-mount.ts); every test works in
 * a directory of its own.
 */
import assert from 'node:assert/strict'
import { chmodSync } from 'node:fs'
import { join } from 'node:path'
import { scoutfs, type Devices } from '../helpers/agent.js'
import { bash } from '../helpers/fuse-harness.js'
import { runPy } from '../helpers/mount-tests.js'
import { knownLimit, posixMount } from '../helpers/posix-mount.js'

describe('mount: POSIX semantics: attributes and statfs', function () {
  this.timeout(180_000)
  let dev: Devices
  let M: string
  /** a fresh directory on the mount for one test */
  const fresh = posixMount((d, a) => {
    dev = d
    M = a.mnt
  })

  it('chmod, chown and utimens set what they are asked and update ctime', async () => {
    const r = await runPy(
      fresh('attrs'),
      String.raw`
      r = {}
      wfile(p('f'), b'data')
      s0 = os.stat(p('f'))
      time.sleep(0.02)
      os.chmod(p('f'), 0o4751)
      s1 = os.stat(p('f'))
      r['chmod'] = [oct(s1.st_mode), s1.st_ctime_ns > s0.st_ctime_ns, s1.st_mtime_ns == s0.st_mtime_ns]
      time.sleep(0.02)
      os.chown(p('f'), 1234, 5678)
      s2 = os.stat(p('f'))
      r['chown'] = [s2.st_uid, s2.st_gid, s2.st_ctime_ns > s1.st_ctime_ns, s2.st_mtime_ns == s0.st_mtime_ns,
                    oct(s2.st_mode)]
      os.chown(p('f'), -1, 99)
      r['chown_gid'] = [os.stat(p('f')).st_uid, os.stat(p('f')).st_gid]
      os.chown(p('f'), 77, -1)
      r['chown_uid'] = [os.stat(p('f')).st_uid, os.stat(p('f')).st_gid]
      os.mkdir(p('d'), 0o755)
      os.chmod(p('d'), 0o1700)
      r['chmod_dir'] = oct(os.stat(p('d')).st_mode)
      os.symlink('f', p('l'))
      os.chown(p('l'), 5, 6, follow_symlinks=False)
      r['lchown'] = [os.lstat(p('l')).st_uid, os.lstat(p('l')).st_gid, os.stat(p('f')).st_uid]
      os.chmod(p('l'), 0o600)
      r['chmod_follows'] = [oct(stat.S_IMODE(os.stat(p('f')).st_mode)), oct(stat.S_IMODE(os.lstat(p('l')).st_mode))]
      r['missing'] = [E(os.chmod, p('missing'), 0o600), E(os.chown, p('missing'), 1, 1),
                      E(os.utime, p('missing'), (1, 1))]
      s3 = os.stat(p('f'))
      time.sleep(0.02)
      os.utime(p('f'), ns=(1600000000123000000, 1500000000456000000))
      s4 = os.stat(p('f'))
      r['utime'] = [s4.st_atime_ns, s4.st_mtime_ns, s4.st_ctime_ns > s3.st_ctime_ns]
      os.utime(p('f'), (0, 1))
      s5 = os.stat(p('f'))
      r['utime_epoch'] = [s5.st_atime_ns, s5.st_mtime_ns]
      before = time.time_ns()
      os.utime(p('f'))
      after = time.time_ns()
      s6 = os.stat(p('f'))
      r['utime_now'] = [before - 10**9 <= s6.st_mtime_ns <= after + 10**9, s6.st_atime_ns == s6.st_mtime_ns]
      os.utime(p('d'), (1000, 2000))
      r['utime_dir'] = [os.stat(p('d')).st_atime_ns, os.stat(p('d')).st_mtime_ns]
      out(r)
      `,
    )
    assert.deepEqual(r.chmod, ['0o104751', true, true], 'chmod changes the mode and ctime, not mtime')
    assert.deepEqual(r.chown, [1234, 5678, true, true, '0o100751'], 'chown clears set-user-ID as Linux does')
    assert.deepEqual(r.chown_gid, [1234, 99])
    assert.deepEqual(r.chown_uid, [77, 99])
    assert.equal(r.chmod_dir, '0o41700')
    assert.deepEqual(r.lchown, [5, 6, 77])
    assert.deepEqual(r.chmod_follows, ['0o600', '0o777'])
    assert.deepEqual(r.missing, ['ENOENT', 'ENOENT', 'ENOENT'])
    assert.deepEqual(r.utime, [1600000000123000000, 1500000000456000000, true])
    assert.deepEqual(r.utime_epoch, [0, 1000000000])
    assert.deepEqual(r.utime_now, [true, true])
    assert.deepEqual(r.utime_dir, [1000000000000, 2000000000000])
  })

  it('utimensat with UTIME_OMIT sets only the other timestamp (touch -m, touch -a)', async function () {
    knownLimit(this, 'utimensat with UTIME_OMIT never reaches the filesystem (flag_utime_omit_ok unset)')
    const d = fresh('utime-omit')
    const f = join(d, 'f')
    const stamp = async (): Promise<string[]> => {
      const s = await bash(`stat -c '%X %Y %Z' -- ${JSON.stringify(f)}`)
      assert.equal(s.code, 0, s.stderr)
      return s.stdout.trim().split(' ')
    }
    assert.equal((await bash(`touch -d @1000 -- ${JSON.stringify(f)}`)).code, 0)
    assert.deepEqual((await stamp()).slice(0, 2), ['1000', '1000'])
    const m = await bash(`touch -m -d @2000 -- ${JSON.stringify(f)}`)
    assert.equal(m.code, 0, m.stderr)
    assert.deepEqual((await stamp()).slice(0, 2), ['1000', '2000'], 'touch -m sets mtime and leaves atime')
    const a = await bash(`touch -a -d @3000 -- ${JSON.stringify(f)}`)
    assert.equal(a.code, 0, a.stderr)
    assert.deepEqual((await stamp()).slice(0, 2), ['3000', '2000'], 'touch -a sets atime and leaves mtime')
  })

  it('files, directories and symlinks another user creates belong to that user', async function () {
    knownLimit(this, 'the caller uid/gid is not passed to the filesystem; new files belong to the agent')
    // the devices directory is mkdtemp's 0700: let uid 1000 through to the mountpoint
    chmodSync(dev.dir, 0o755)
    const d = fresh('owner')
    chmodSync(d, 0o777)
    const r = await bash(
      `setpriv --reuid=1000 --regid=1000 --clear-groups -- sh -c 'cd "$1" && echo one > f && mkdir sub && ln -s f l && echo two >> f && cat f' sh ${JSON.stringify(d)}`,
    )
    const st = await runPy(
      d,
      String.raw`
      out({'x': [[os.lstat(p(n)).st_uid, os.lstat(p(n)).st_gid] if os.path.lexists(p(n)) else None for n in ('f', 'sub', 'l')]})
      `,
    )
    assert.deepEqual(st.x, [
      [1000, 1000],
      [1000, 1000],
      [1000, 1000],
    ])
    assert.equal(r.code, 0, `uid 1000 could not write the file it created: ${r.stderr}`)
    assert.equal(r.stdout, 'one\ntwo\n')
  })

  it('timestamps: write sets mtime and ctime, chmod ctime, directory times follow their entries', async () => {
    const r = await runPy(
      fresh('times'),
      String.raw`
      r = {}
      def st(*x): return os.stat(p(*x))
      os.mkdir(p('d'))
      d0 = st('d')
      time.sleep(0.02)
      wfile(p('d', 'f'), b'a')
      d1, f1 = st('d'), st('d', 'f')
      r['create'] = [d1.st_mtime_ns > d0.st_mtime_ns, d1.st_ctime_ns > d0.st_ctime_ns,
                     f1.st_mtime_ns >= d1.st_mtime_ns - 10**6]
      time.sleep(0.02)
      fd = os.open(p('d', 'f'), os.O_WRONLY)
      os.pwrite(fd, b'bb', 1)
      os.close(fd)
      f2 = st('d', 'f')
      r['write'] = [f2.st_mtime_ns > f1.st_mtime_ns, f2.st_ctime_ns > f1.st_ctime_ns,
                    st('d').st_mtime_ns == d1.st_mtime_ns]
      time.sleep(0.02)
      rfile(p('d', 'f'))
      f3 = st('d', 'f')
      r['read'] = [f3.st_mtime_ns == f2.st_mtime_ns, f3.st_ctime_ns == f2.st_ctime_ns]
      time.sleep(0.02)
      os.chmod(p('d', 'f'), 0o600)
      f4 = st('d', 'f')
      r['chmod'] = [f4.st_ctime_ns > f3.st_ctime_ns, f4.st_mtime_ns == f3.st_mtime_ns]
      time.sleep(0.02)
      os.truncate(p('d', 'f'), 1)
      f5 = st('d', 'f')
      r['truncate'] = [f5.st_mtime_ns > f4.st_mtime_ns, f5.st_ctime_ns > f4.st_ctime_ns]
      time.sleep(0.02)
      os.setxattr(p('d', 'f'), 'user.t', b'1')
      f6 = st('d', 'f')
      r['setxattr'] = [f6.st_ctime_ns > f5.st_ctime_ns, f6.st_mtime_ns == f5.st_mtime_ns]
      time.sleep(0.02)
      os.link(p('d', 'f'), p('d', 'g'))
      d2, f7 = st('d'), st('d', 'f')
      r['link'] = [d2.st_mtime_ns > d1.st_mtime_ns, f7.st_ctime_ns > f6.st_ctime_ns, f7.st_mtime_ns == f6.st_mtime_ns]
      time.sleep(0.02)
      os.unlink(p('d', 'g'))
      d3, f8 = st('d'), st('d', 'f')
      r['unlink'] = [d3.st_mtime_ns > d2.st_mtime_ns, d3.st_ctime_ns > d2.st_ctime_ns, f8.st_ctime_ns > f7.st_ctime_ns]
      time.sleep(0.02)
      os.mkdir(p('d', 'sub'))
      d4 = st('d')
      r['mkdir'] = d4.st_mtime_ns > d3.st_mtime_ns
      time.sleep(0.02)
      os.rmdir(p('d', 'sub'))
      d5 = st('d')
      r['rmdir'] = d5.st_mtime_ns > d4.st_mtime_ns
      time.sleep(0.02)
      os.symlink('f', p('d', 's'))
      d6 = st('d')
      r['symlink'] = d6.st_mtime_ns > d5.st_mtime_ns
      time.sleep(0.02)
      os.rename(p('d', 's'), p('d', 's2'))
      d7 = st('d')
      r['rename'] = d7.st_mtime_ns > d6.st_mtime_ns
      time.sleep(0.02)
      wfile(p('d', 'f'), b'')  # O_TRUNC of an existing file
      f9 = st('d', 'f')
      r['o_trunc'] = [f9.st_mtime_ns > f8.st_mtime_ns, f9.st_size]
      out(r)
      `,
    )
    assert.deepEqual(r.create, [true, true, true])
    assert.deepEqual(r.write, [true, true, true], 'write: mtime and ctime of the file, not of its directory')
    assert.deepEqual(r.read, [true, true])
    assert.deepEqual(r.chmod, [true, true])
    assert.deepEqual(r.truncate, [true, true])
    assert.deepEqual(r.setxattr, [true, true])
    assert.deepEqual(r.link, [true, true, true])
    assert.deepEqual(r.unlink, [true, true, true])
    assert.equal(r.mkdir, true)
    assert.equal(r.rmdir, true)
    assert.equal(r.symlink, true)
    assert.equal(r.rename, true)
    assert.deepEqual(r.o_trunc, [true, 0])
  })

  it('statfs: df and statvfs report the devices, and writes use data blocks', async () => {
    const d = fresh('statfs')
    const df = await bash(`df -P -B1 -- ${JSON.stringify(M)}`)
    assert.equal(df.code, 0, df.stderr)
    const line = df.stdout.trim().split('\n').pop()!.split(/\s+/)
    assert.equal(Number(line[1]), 1 << 30, `df total of a 1 GiB data device: ${df.stdout}`)
    assert.ok(Number(line[3]) <= Number(line[1]) && Number(line[3]) > 0)
    assert.equal(line[5], M)
    const dfi = await bash(`df -P -i -- ${JSON.stringify(M)}`)
    assert.equal(dfi.code, 0, dfi.stderr)
    const sdf = await scoutfs('df', M)
    assert.equal(sdf.code, 0, sdf.stderr)
    assert.match(sdf.stdout, /MetaData/)
    assert.match(sdf.stdout, /Data/)
    const sv = `
      s = os.statvfs(D)
      out([s.f_bsize, s.f_frsize, s.f_blocks, s.f_bfree, s.f_bavail, s.f_files, s.f_ffree, s.f_namemax])
    `
    assert.equal((await scoutfs('sync', M)).code, 0)
    const [bsize, frsize, blocks, bfree, bavail, files, ffree, namemax] = await runPy<number[]>(d, sv)
    assert.equal(bsize, 4096)
    assert.equal(frsize * blocks, 1 << 30)
    assert.ok(bfree <= blocks && bavail <= bfree && bfree > 0)
    assert.ok(files > 0 && ffree <= files)
    assert.equal(namemax, 255)
    await runPy(d, `wfile(p('eight'), b'8' * (8 << 20)); out(0)`)
    assert.equal((await scoutfs('sync', M)).code, 0)
    const after = await runPy<number[]>(d, sv)
    assert.ok(bfree - after[3]! >= 2048, `8 MiB used ${bfree - after[3]!} blocks of 4 KiB`)
  })

  it('statfs: df -i counts the inodes in use', async () => {
    const d = fresh('statfs-i')
    const used = async (): Promise<number> => {
      assert.equal((await scoutfs('sync', M)).code, 0)
      const s = await runPy<number[]>(d, `s = os.statvfs(D); out([s.f_files, s.f_ffree])`)
      return s[0]! - s[1]!
    }
    const before = await used()
    await runPy(d, `[wfile(p('f%d' % i), b'') for i in range(10)]; os.mkdir(p('sub')); out(0)`)
    assert.equal((await used()) - before, 11, 'f_files - f_ffree grows by the 11 inodes created')
    await runPy(d, `[os.unlink(p('f%d' % i)) for i in range(10)]; out(0)`)
    assert.equal((await used()) - before, 1, 'and shrinks when they are deleted')
  })
})
