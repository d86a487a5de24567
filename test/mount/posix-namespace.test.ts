/*
 * POSIX semantics of a real mount (a `scoutfs mount --foreground` agent serving FUSE), checked
 * from python (exact errno names) and from this process: mkdir/rmdir/unlink, unlinked open
 * files, rename, hard links and symlinks.
 *
 * One agent serves the whole describe block (test/helpers/posix-mount.ts); every test works in
 * a directory of its own.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { startPy } from '../helpers/fuse-harness.js'
import { HELPER, dedent, runPy, walkInodes } from '../helpers/mount-tests.js'
import { lsInodes, posixMount } from '../helpers/posix-mount.js'

describe('mount: POSIX semantics: namespace', function () {
  this.timeout(180_000)
  let M: string
  /** a fresh directory on the mount for one test */
  const fresh = posixMount((d, a) => {
    M = a.mnt
  })

  it('mkdir and rmdir, with EEXIST, ENOTDIR, ENOENT and ENOTEMPTY', async () => {
    const r = await runPy(
      fresh('mkdir'),
      String.raw`
      r = {}
      n0 = os.stat(D).st_nlink
      os.mkdir(p('d'), 0o750)
      st = os.stat(p('d'))
      r['made'] = [oct(st.st_mode), st.st_nlink, os.stat(D).st_nlink - n0, os.listdir(p('d'))]
      wfile(p('f'), b'x')
      os.symlink('d', p('l'))
      r['mk_exist_dir'] = E(os.mkdir, p('d'))
      r['mk_exist_file'] = E(os.mkdir, p('f'))
      r['mk_exist_symlink'] = E(os.mkdir, p('l'))
      r['mk_under_file'] = E(os.mkdir, p('f', 'x'))
      r['mk_missing_parent'] = E(os.mkdir, p('nope', 'x'))
      os.mkdir(p('d', 'sub'))
      wfile(p('d', 'sub', 'g'), b'y')
      r['rm_nonempty_file'] = E(os.rmdir, p('d', 'sub'))
      r['rm_nonempty_dir'] = E(os.rmdir, p('d'))
      r['rm_file'] = E(os.rmdir, p('f'))
      r['rm_symlink'] = E(os.rmdir, p('l'))
      r['rm_missing'] = E(os.rmdir, p('missing'))
      r['rm_through_file'] = E(os.rmdir, p('f', 'x'))
      r['rm_dot'] = E(os.rmdir, p('d', '.'))
      r['still'] = sorted(os.listdir(D))
      os.unlink(p('d', 'sub', 'g'))
      r['rm_sub'] = E(os.rmdir, p('d', 'sub'))
      r['nlink_after_sub'] = os.stat(p('d')).st_nlink
      r['rm_d'] = E(os.rmdir, p('d'))
      r['gone'] = [E(os.stat, p('d')), sorted(os.listdir(D)), os.stat(D).st_nlink - n0]
      r['remake'] = [E(os.mkdir, p('d')), os.listdir(p('d'))]
      # setgid directories: new entries take the directory's group, subdirectories stay setgid
      os.mkdir(p('sg'), 0o775)
      os.chown(p('sg'), -1, 4321)
      os.chmod(p('sg'), 0o2775)
      wfile(p('sg', 'f'), b'')
      os.mkdir(p('sg', 'sd'), 0o755)
      r['setgid'] = [os.stat(p('sg', 'f')).st_gid, os.stat(p('sg', 'sd')).st_gid,
                     bool(os.stat(p('sg', 'sd')).st_mode & 0o2000)]
      out(r)
      `,
    )
    assert.deepEqual(r.made, ['0o40750', 2, 1, []])
    assert.equal(r.mk_exist_dir, 'EEXIST')
    assert.equal(r.mk_exist_file, 'EEXIST')
    assert.equal(r.mk_exist_symlink, 'EEXIST')
    assert.equal(r.mk_under_file, 'ENOTDIR')
    assert.equal(r.mk_missing_parent, 'ENOENT')
    assert.equal(r.rm_nonempty_file, 'ENOTEMPTY')
    assert.equal(r.rm_nonempty_dir, 'ENOTEMPTY')
    assert.equal(r.rm_file, 'ENOTDIR')
    assert.equal(r.rm_symlink, 'ENOTDIR')
    assert.equal(r.rm_missing, 'ENOENT')
    assert.equal(r.rm_through_file, 'ENOTDIR')
    assert.equal(r.rm_dot, 'EINVAL')
    assert.deepEqual(r.still, ['d', 'f', 'l'])
    assert.equal(r.rm_sub, 'OK')
    assert.equal(r.nlink_after_sub, 2)
    assert.equal(r.rm_d, 'OK')
    assert.deepEqual(r.gone, ['ENOENT', ['f', 'l'], 0])
    assert.deepEqual(r.remake, ['OK', []])
    assert.deepEqual(r.setgid, [4321, 4321, true])
  })

  it('unlink: removes names, EISDIR on a directory, ENOENT, ENOTDIR, symlinks not followed', async () => {
    const r = await runPy(
      fresh('unlink'),
      String.raw`
      r = {}
      wfile(p('f'), b'data')
      os.mkdir(p('d'))
      os.symlink('f', p('l'))
      ino = os.stat(p('f')).st_ino
      r['dir'] = E(os.unlink, p('d'))
      r['missing'] = E(os.unlink, p('missing'))
      r['through_file'] = E(os.unlink, p('f', 'x'))
      r['symlink'] = [E(os.unlink, p('l')), rfile(p('f')).decode(), sorted(os.listdir(D))]
      r['file'] = [E(os.unlink, p('f')), E(os.stat, p('f')), E(os.unlink, p('f')), sorted(os.listdir(D))]
      wfile(p('f'), b'again')
      r['recreate'] = [rfile(p('f')).decode(), os.stat(p('f')).st_nlink]
      out(r)
      `,
    )
    assert.equal(r.dir, 'EISDIR')
    assert.equal(r.missing, 'ENOENT')
    assert.equal(r.through_file, 'ENOTDIR')
    assert.deepEqual(r.symlink, ['OK', 'data', ['d', 'f']])
    assert.deepEqual(r.file, ['OK', 'ENOENT', 'ENOENT', ['d']])
    assert.deepEqual(r.recreate, ['again', 1])
  })

  it('an unlinked open file stays readable and writable until the last close, then is gone', async () => {
    const base = fresh('orphan')
    const script = String.raw`
      r = {}
      os.mkdir(p('ud'))
      f = p('ud', 'f')
      wfile(f, b'first')
      fd = os.open(f, os.O_RDWR)
      fd2 = os.open(f, os.O_RDONLY)
      ino = os.fstat(fd).st_ino
      os.unlink(f)
      r['ino'] = ino
      r['listed'] = os.listdir(p('ud'))
      r['stat'] = E(os.stat, f)
      r['nlink'] = os.fstat(fd).st_nlink
      r['read'] = os.pread(fd, 100, 0).decode()
      os.pwrite(fd, b'+more', 5)
      big = bytes(range(256)) * 4096
      write_all(fd, big, 4096)
      r['read_other_fd'] = os.pread(fd2, 10, 0).decode()
      r['big_other_fd'] = os.pread(fd2, len(big), 4096) == big
      r['size'] = os.fstat(fd2).st_size
      r['blocks'] = os.fstat(fd2).st_blocks
      wfile(f, b'new')  # the name is free for a new, different inode
      r['new'] = [os.stat(f).st_ino != ino, rfile(f).decode(), os.pread(fd, 5, 0).decode()]
      os.unlink(f)
      r['listed_again'] = os.listdir(p('ud'))
      ready(r)
      wait()
      os.ftruncate(fd, 3)
      r2 = {'after_trunc': os.pread(fd2, 100, 0).decode()}
      os.close(fd)
      r2['still_open_read'] = os.pread(fd2, 100, 0).decode()
      os.close(fd2)
      r2['listed_after'] = os.listdir(p('ud'))
      r2['rmdir'] = E(os.rmdir, p('ud'))
      r2['gone'] = E(os.stat, p('ud'))
      ready(r2)
    `
    const child = startPy(
      dedent(String.raw`
      exec(compile(open(sys.argv[1]).read(), sys.argv[1], 'exec'))
      D = sys.argv[2]
      def p(*x): return os.path.join(D, *x)
      `) +
        '\n' +
        dedent(script),
      [HELPER, base],
    )
    try {
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const r = await child.next<any>(60_000)
      assert.deepEqual(r.listed, [], 'an unlinked open file is not listed')
      assert.equal(r.stat, 'ENOENT')
      assert.equal(r.nlink, 0)
      assert.equal(r.read, 'first')
      assert.equal(r.read_other_fd, 'first+more')
      assert.equal(r.big_other_fd, true)
      assert.equal(r.size, 4096 + 256 * 4096)
      assert.equal(r.blocks, 8 * 257)
      assert.deepEqual(r.new, [true, 'new', 'first'])
      assert.deepEqual(r.listed_again, [])
      const rl = await lsInodes(join(base, 'ud'))
      assert.deepEqual([...rl.keys()].sort(), ['.', '..'], 'no .fuse_hidden name is listed')
      const open = await walkInodes(M, 'meta_seq')
      assert.ok(
        open.some((e) => e.ino === r.ino),
        'the open orphan keeps its index items while it is open',
      )
      child.send('close')
      // eslint-disable-next-line @typescript-eslint/no-explicit-any
      const r2 = await child.next<any>(60_000)
      assert.equal(r2.after_trunc, 'fir')
      assert.equal(r2.still_open_read, 'fir', 'readable through the last open fd')
      assert.deepEqual(r2.listed_after, [])
      assert.equal(r2.rmdir, 'OK', 'the parent can be removed once the file is closed')
      assert.equal(r2.gone, 'ENOENT')
      assert.equal((await child.done()).code, 0)
      // the release reaches the agent asynchronously after close(2): wait for the deletion
      let present = true
      for (let i = 0; i < 50 && present; i++) {
        present = (await walkInodes(M, 'meta_seq')).some((e) => e.ino === r.ino)
        if (present) await new Promise((res) => setTimeout(res, 200))
      }
      assert.equal(present, false, `inode ${r.ino} is deleted after the last close`)
    } finally {
      child.kill()
    }
  })

  it('rename: files, directories, replacing a file or an empty directory, same-inode no-op', async () => {
    const r = await runPy(
      fresh('rename'),
      String.raw`
      r = {}
      wfile(p('f'), b'F')
      ino_f = os.stat(p('f')).st_ino
      os.rename(p('f'), p('g'))
      r['file'] = [E(os.stat, p('f')), os.stat(p('g')).st_ino == ino_f, rfile(p('g')).decode()]
      os.mkdir(p('d'))
      wfile(p('d', 'x'), b'X')
      ino_d = os.stat(p('d')).st_ino
      os.rename(p('d'), p('e'))
      r['dir'] = [E(os.stat, p('d')), os.stat(p('e')).st_ino == ino_d, rfile(p('e', 'x')).decode()]
      wfile(p('t'), b'TARGET')
      ino_t = os.stat(p('t')).st_ino
      os.rename(p('g'), p('t'))
      r['replace'] = [rfile(p('t')).decode(), os.stat(p('t')).st_ino == ino_f, E(os.stat, p('g')),
                      sorted(os.listdir(D))]
      r['replaced_ino'] = ino_t
      wfile(p('h1'), b'H')
      os.link(p('h1'), p('h2'))
      wfile(p('s'), b'S')
      os.rename(p('s'), p('h1'))
      r['replace_linked'] = [rfile(p('h1')).decode(), rfile(p('h2')).decode(), os.stat(p('h2')).st_nlink]
      os.mkdir(p('empty'))
      n0 = os.stat(D).st_nlink
      os.rename(p('e'), p('empty'))
      r['replace_dir'] = [rfile(p('empty', 'x')).decode(), os.stat(p('empty')).st_ino == ino_d,
                          E(os.stat, p('e')), os.stat(D).st_nlink - n0]
      wfile(p('k1'), b'K')
      os.link(p('k1'), p('k2'))
      r['same_inode'] = [E(os.rename, p('k1'), p('k2')), os.path.exists(p('k1')), os.path.exists(p('k2')),
                         os.stat(p('k1')).st_nlink]
      r['self'] = [E(os.rename, p('k1'), p('k1')), E(os.rename, p('empty'), p('empty')), rfile(p('k1')).decode()]
      os.symlink('k1', p('sl'))
      os.rename(p('sl'), p('sl2'))
      r['symlink'] = [os.readlink(p('sl2')), rfile(p('sl2')).decode(), E(os.lstat, p('sl'))]
      r['final'] = sorted(os.listdir(D))
      out(r)
      `,
    )
    assert.deepEqual(r.file, ['ENOENT', true, 'F'])
    assert.deepEqual(r.dir, ['ENOENT', true, 'X'])
    assert.deepEqual(r.replace, ['F', true, 'ENOENT', ['e', 't']])
    assert.deepEqual(r.replace_linked, ['S', 'H', 1], "the replaced file's other link stays, one link fewer")
    assert.deepEqual(r.replace_dir, ['X', true, 'ENOENT', -1])
    assert.deepEqual(r.same_inode, ['OK', true, true, 2], 'rename between links of one inode does nothing')
    assert.deepEqual(r.self, ['OK', 'OK', 'K'])
    assert.deepEqual(r.symlink, ['k1', 'K', 'ENOENT'])
    assert.deepEqual(r.final, ['empty', 'h1', 'h2', 'k1', 'k2', 'sl2', 't'])
    const inos = (await walkInodes(M, 'meta_seq')).map((e) => e.ino)
    assert.ok(!inos.includes(r.replaced_ino), 'the replaced file is deleted')
  })

  it('rename errors: ENOTEMPTY, ENOTDIR, EISDIR, EINVAL into itself, ENOENT', async () => {
    const r = await runPy(
      fresh('rename-err'),
      String.raw`
      r = {}
      os.mkdir(p('full'))
      wfile(p('full', 'x'), b'')
      os.mkdir(p('d'))
      os.makedirs(p('d', 'c', 'cc'))
      wfile(p('f'), b'')
      r['nonempty'] = E(os.rename, p('d'), p('full'))
      r['dir_onto_file'] = E(os.rename, p('d'), p('f'))
      r['file_onto_dir'] = E(os.rename, p('f'), p('d'))
      r['file_onto_nonempty_dir'] = E(os.rename, p('f'), p('full'))
      r['into_itself'] = E(os.rename, p('d'), p('d', 'x'))
      r['into_child'] = E(os.rename, p('d'), p('d', 'c', 'x'))
      r['into_grandchild'] = E(os.rename, p('d'), p('d', 'c', 'cc', 'x'))
      r['onto_own_child'] = E(os.rename, p('d'), p('d', 'c'))
      r['onto_own_parent'] = E(os.rename, p('d', 'c'), p('d'))
      r['missing_src'] = E(os.rename, p('nope'), p('x'))
      r['missing_dst_dir'] = E(os.rename, p('f'), p('nodir', 'x'))
      r['dst_through_file'] = E(os.rename, p('f'), p('f', 'x'))
      r['src_through_file'] = E(os.rename, p('f', 'x'), p('y'))
      r['after'] = [sorted(os.listdir(D)), os.listdir(p('full')), os.listdir(p('d')), os.listdir(p('d', 'c'))]
      r['nlink'] = [os.stat(p('d')).st_nlink, os.stat(p('d', 'c')).st_nlink, os.stat(p('full')).st_nlink]
      out(r)
      `,
    )
    assert.equal(r.nonempty, 'ENOTEMPTY')
    assert.equal(r.dir_onto_file, 'ENOTDIR')
    assert.equal(r.file_onto_dir, 'EISDIR')
    assert.equal(r.file_onto_nonempty_dir, 'EISDIR')
    assert.equal(r.into_itself, 'EINVAL')
    assert.equal(r.into_child, 'EINVAL')
    assert.equal(r.into_grandchild, 'EINVAL')
    assert.equal(r.onto_own_child, 'EINVAL')
    assert.equal(r.onto_own_parent, 'ENOTEMPTY')
    assert.equal(r.missing_src, 'ENOENT')
    assert.equal(r.missing_dst_dir, 'ENOENT')
    assert.equal(r.dst_through_file, 'ENOTDIR')
    assert.equal(r.src_through_file, 'ENOTDIR')
    assert.deepEqual(r.after, [['d', 'f', 'full'], ['x'], ['c'], ['cc']], 'failed renames change nothing')
    assert.deepEqual(r.nlink, [3, 3, 2])
  })

  it("rename across directories moves '..' and updates both parents' nlink and times", async () => {
    const base = fresh('rename-x')
    const r = await runPy(
      base,
      String.raw`
      r = {}
      os.mkdir(p('x'))
      os.mkdir(p('y'))
      os.makedirs(p('x', 'm', 'inner'))
      wfile(p('x', 'file'), b'F')
      r['before'] = [os.stat(p('x')).st_nlink, os.stat(p('y')).st_nlink]
      xs0, ys0 = os.stat(p('x')), os.stat(p('y'))
      m0 = os.stat(p('x', 'm'))
      time.sleep(0.02)
      os.rename(p('x', 'm'), p('y', 'm'))
      xs1, ys1, m1 = os.stat(p('x')), os.stat(p('y')), os.stat(p('y', 'm'))
      r['dir_move'] = [xs1.st_nlink, ys1.st_nlink, m1.st_nlink, m1.st_ino == m0.st_ino,
                       os.listdir(p('x')), os.listdir(p('y')), os.listdir(p('y', 'm'))]
      r['dir_move_times'] = [xs1.st_mtime_ns > xs0.st_mtime_ns, ys1.st_mtime_ns > ys0.st_mtime_ns,
                             xs1.st_ctime_ns > xs0.st_ctime_ns, ys1.st_ctime_ns > ys0.st_ctime_ns,
                             m1.st_ctime_ns > m0.st_ctime_ns]
      r['dotdot'] = os.stat(p('y', 'm', 'inner', '..', '..')).st_ino == ys1.st_ino
      os.rename(p('x', 'file'), p('y', 'file'))
      r['file_move'] = [os.stat(p('x')).st_nlink, os.stat(p('y')).st_nlink, rfile(p('y', 'file')).decode()]
      os.mkdir(p('x', 'm2'))
      os.mkdir(p('y', 'empty'))
      os.rename(p('x', 'm2'), p('y', 'empty'))
      r['replace_empty'] = [os.stat(p('x')).st_nlink, os.stat(p('y')).st_nlink, sorted(os.listdir(p('y')))]
      os.rename(p('y', 'm'), p('m-top'))
      r['to_parent'] = [os.stat(p('y')).st_nlink, os.stat(D).st_nlink, os.listdir(p('m-top'))]
      r['inos'] = {'y': os.stat(p('y')).st_ino, 'D': os.stat(D).st_ino, 'mtop': os.stat(p('m-top')).st_ino}
      os.rename(p('m-top'), p('y', 'm'))
      out(r)
      `,
    )
    assert.deepEqual(r.before, [3, 2])
    assert.deepEqual(r.dir_move, [2, 3, 3, true, ['file'], ['m'], ['inner']])
    assert.deepEqual(r.dir_move_times, [true, true, true, true, true])
    assert.equal(r.dotdot, true)
    assert.deepEqual(r.file_move, [2, 3, 'F'], 'moving a file changes no nlink')
    assert.deepEqual(r.replace_empty, [2, 4, ['empty', 'file', 'm']])
    assert.deepEqual(r.to_parent, [3, 5, ['inner']])
    // the '..' entry readdir returns (from the filesystem, not the kernel's dcache)
    const ls = await lsInodes(join(base, 'y', 'm'))
    assert.equal(ls.get('..'), r.inos.y, "readdir's '..' of a moved directory is its new parent")
    const ls2 = await lsInodes(join(base, 'y', 'm', 'inner'))
    assert.equal(ls2.get('..'), ls.get('.'))
  })

  it('rename over an open file: the old inode stays readable through its fd', async () => {
    const r = await runPy(
      fresh('rename-open'),
      String.raw`
      r = {}
      wfile(p('x'), b'old')
      wfile(p('y'), b'new')
      fd = os.open(p('x'), os.O_RDWR)
      os.rename(p('y'), p('x'))
      r['fd'] = [os.pread(fd, 10, 0).decode(), os.fstat(fd).st_nlink]
      r['name'] = [rfile(p('x')).decode(), sorted(os.listdir(D))]
      os.pwrite(fd, b'OLD!', 0)
      r['write'] = [os.pread(fd, 10, 0).decode(), rfile(p('x')).decode()]
      os.close(fd)
      r['after'] = sorted(os.listdir(D))
      out(r)
      `,
    )
    assert.deepEqual(r.fd, ['old', 0])
    assert.deepEqual(r.name, ['new', ['x']])
    assert.deepEqual(r.write, ['OLD!', 'new'])
    assert.deepEqual(r.after, ['x'])
  })

  it('hard links: nlink counts, shared data, EPERM for directories, EEXIST, ENOENT', async () => {
    const r = await runPy(
      fresh('link'),
      String.raw`
      r = {}
      wfile(p('f'), b'one')
      os.mkdir(p('sub'))
      s0 = os.stat(p('f'))
      time.sleep(0.02)
      os.link(p('f'), p('g'))
      os.link(p('f'), p('sub', 'h'))
      sts = [os.stat(p(x)) for x in ('f', 'g', 'sub/h')]
      r['three'] = [[s.st_nlink for s in sts], len({s.st_ino for s in sts}), sts[0].st_ctime_ns > s0.st_ctime_ns,
                    sts[0].st_mtime_ns == s0.st_mtime_ns]
      fd = os.open(p('g'), os.O_WRONLY | os.O_APPEND)
      os.write(fd, b'+two')
      os.close(fd)
      r['shared'] = rfile(p('sub', 'h')).decode()
      os.unlink(p('f'))
      r['after_unlink'] = [os.stat(p('g')).st_nlink, rfile(p('g')).decode(), E(os.stat, p('f'))]
      os.mkdir(p('d'))
      wfile(p('a'), b'')
      wfile(p('b'), b'')
      r['dir'] = E(os.link, p('d'), p('dl'))
      r['exist_file'] = E(os.link, p('a'), p('b'))
      r['exist_dir'] = E(os.link, p('a'), p('d'))
      r['exist_self'] = E(os.link, p('a'), p('a'))
      r['missing'] = E(os.link, p('nope'), p('x'))
      r['into_missing_dir'] = E(os.link, p('a'), p('nodir', 'x'))
      r['nlinks_unchanged'] = [os.stat(p('a')).st_nlink, os.stat(p('b')).st_nlink, os.stat(p('d')).st_nlink]
      os.symlink('a', p('sl'))
      os.link(p('sl'), p('sl2'), follow_symlinks=False)
      r['symlink'] = [os.lstat(p('sl2')).st_ino == os.lstat(p('sl')).st_ino, os.readlink(p('sl2')),
                      os.lstat(p('sl')).st_nlink, os.stat(p('a')).st_nlink]
      out(r)
      `,
    )
    assert.deepEqual(r.three, [[3, 3, 3], 1, true, true])
    assert.equal(r.shared, 'one+two')
    assert.deepEqual(r.after_unlink, [2, 'one+two', 'ENOENT'])
    assert.equal(r.dir, 'EPERM')
    assert.equal(r.exist_file, 'EEXIST')
    assert.equal(r.exist_dir, 'EEXIST')
    assert.equal(r.exist_self, 'EEXIST')
    assert.equal(r.missing, 'ENOENT')
    assert.equal(r.into_missing_dir, 'ENOENT')
    assert.deepEqual(r.nlinks_unchanged, [1, 1, 2])
    assert.deepEqual(r.symlink, [true, 'a', 2, 1])
  })

  it('symlinks and readlink: long targets, ENAMETOOLONG past 4095 bytes, EINVAL on non-links', async () => {
    const r = await runPy(
      fresh('symlink'),
      String.raw`
      r = {}
      wfile(p('target'), b'T')
      os.symlink('target', p('l'))
      lst = os.lstat(p('l'))
      r['basic'] = [os.readlink(p('l')), stat.S_ISLNK(lst.st_mode), lst.st_size, oct(stat.S_IMODE(lst.st_mode)),
                    rfile(p('l')).decode(), os.stat(p('l')).st_ino == os.stat(p('target')).st_ino]
      os.symlink('nowhere/x', p('dangling'))
      r['dangling'] = [E(os.stat, p('dangling')), os.readlink(p('dangling')), E(os.lstat, p('dangling'))]
      os.mkdir(p('sd'))
      os.symlink('../target', p('sd', 'up'))
      r['relative'] = rfile(p('sd', 'up')).decode()
      os.symlink(D, p('abs'))
      r['absolute'] = rfile(p('abs', 'target')).decode()
      t4000 = ''.join('abc/'[i % 4] for i in range(4000))
      r['4000'] = [E(os.symlink, t4000, p('long')), os.readlink(p('long')) == t4000, os.lstat(p('long')).st_size]
      t4095 = 'y' * 4095
      r['4095'] = [E(os.symlink, t4095, p('l4095')), os.readlink(p('l4095')) == t4095]
      u = '\u00fc' * 2000  # 4000 bytes of UTF-8
      r['utf8'] = [E(os.symlink, u, p('lu')), os.readlink(p('lu')) == u, os.lstat(p('lu')).st_size]
      r['4096'] = E(os.symlink, 'x' * 4096, p('toolong'))
      r['8000'] = E(os.symlink, 'x' * 8000, p('toolong'))
      r['toolong_made'] = os.path.lexists(p('toolong'))
      r['readlink_file'] = E(os.readlink, p('target'))
      r['readlink_dir'] = E(os.readlink, p('sd'))
      r['readlink_missing'] = E(os.readlink, p('missing'))
      r['exists'] = E(os.symlink, 'x', p('target'))
      r['exists_link'] = E(os.symlink, 'x', p('l'))
      r['empty_target'] = E(os.symlink, '', p('empty'))
      os.symlink('loop2', p('loop1'))
      os.symlink('loop1', p('loop2'))
      r['loop'] = E(os.open, p('loop1'), os.O_RDONLY)
      out(r)
      `,
    )
    assert.deepEqual(r.basic, ['target', true, 6, '0o777', 'T', true])
    assert.deepEqual(r.dangling, ['ENOENT', 'nowhere/x', 'OK'])
    assert.equal(r.relative, 'T')
    assert.equal(r.absolute, 'T')
    assert.deepEqual(r['4000'], ['OK', true, 4000])
    assert.deepEqual(r['4095'], ['OK', true])
    assert.deepEqual(r.utf8, ['OK', true, 4000])
    assert.equal(r['4096'], 'ENAMETOOLONG')
    assert.equal(r['8000'], 'ENAMETOOLONG')
    assert.equal(r.toolong_made, false)
    assert.equal(r.readlink_file, 'EINVAL')
    assert.equal(r.readlink_dir, 'EINVAL')
    assert.equal(r.readlink_missing, 'ENOENT')
    assert.equal(r.exists, 'EEXIST')
    assert.equal(r.exists_link, 'EEXIST')
    assert.equal(r.empty_target, 'ENOENT')
    assert.equal(r.loop, 'ELOOP')
  })
})
