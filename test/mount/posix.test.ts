/*
 * POSIX semantics of a real mount (a `scoutfs mount --foreground` agent serving FUSE), checked
 * from python (exact errno names) and from this process: open flags, offsets, sparse files,
 * truncate, mkdir/rmdir/unlink, unlinked open files, rename, hard links, symlinks,
 * chmod/chown/utimens and timestamps, statfs, name lengths, directory nlink, large
 * directories, and inode numbers against `scoutfs walk-inodes`.
 *
 * One agent serves the whole describe block; every test works in a directory of its own.
 */
import assert from 'node:assert/strict'
import { chmodSync } from 'node:fs'
import { join } from 'node:path'
import { scoutfs, type Agent, type Devices } from '../helpers/agent.js'
import { bash, sh, startPy } from '../helpers/fuse-harness.js'
import { HELPER, agentPerSuite, dedent, errorLines, freshDirs, runPy, walkInodes } from '../helpers/mount-tests.js'

/** `ls -fai DIR` as name -> inode number (getdents order, with . and ..) */
async function lsInodes(dir: string): Promise<Map<string, number>> {
  const r = await sh('ls', ['-fai', '--', dir])
  assert.equal(r.code, 0, r.stderr)
  const m = new Map<string, number>()
  for (const line of r.stdout.split('\n')) {
    const x = /^\s*(\d+)\s+(.*)$/.exec(line)
    if (x) m.set(x[2]!, Number(x[1]))
  }
  return m
}

/**
 * A test of behaviour the fuse-native binding cannot deliver today (docs/mount.md lists these;
 * our own low-level binding, DESIGN §12, is the fix).  It is skipped, loudly, unless
 * SCOUTFS_TEST_KNOWN_LIMITS=1 runs it; it is not counted as working.
 */
function knownLimit(ctx: Mocha.Context, what: string): void {
  if (process.env.SCOUTFS_TEST_KNOWN_LIMITS === '1') return
  console.log(`      KNOWN LIMIT (fuse-native): ${what}; run with SCOUTFS_TEST_KNOWN_LIMITS=1 to see it fail`)
  ctx.skip()
}

describe('mount: POSIX semantics', function () {
  this.timeout(180_000)
  let dev: Devices
  let agent: Agent
  let M: string
  /** a fresh directory on the mount for one test */
  const fresh = freshDirs(() => M)

  agentPerSuite((d, a) => {
    dev = d
    agent = a
    M = a.mnt
  })

  it('open flags: O_CREAT|O_EXCL gives EEXIST, O_TRUNC empties, O_CREAT keeps, wrong modes fail', async () => {
    const r = await runPy(
      fresh('open'),
      String.raw`
      r = {}
      wfile(p('f'), b'0123456789')
      os.mkdir(p('d'))
      os.symlink('nowhere', p('dangling'))
      r['excl_file'] = E(os.open, p('f'), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      r['excl_dir'] = E(os.open, p('d'), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      r['excl_dangling'] = E(os.open, p('dangling'), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      r['dangling_target_made'] = os.path.lexists(p('nowhere'))
      r['excl_new'] = E(os.open, p('new'), os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o640)
      st = os.stat(p('new'))
      r['new'] = [oct(st.st_mode), st.st_size, st.st_nlink, st.st_blocks]
      fd = os.open(p('f'), os.O_CREAT | os.O_RDWR, 0o600)
      r['creat_existing'] = os.read(fd, 100).decode()
      os.close(fd)
      r['creat_existing_mode'] = oct(stat.S_IMODE(os.stat(p('f')).st_mode))
      r['noent'] = E(os.open, p('missing'), os.O_RDONLY)
      r['creat_missing_dir'] = E(os.open, p('nodir', 'x'), os.O_CREAT | os.O_WRONLY, 0o644)
      r['creat_under_file'] = E(os.open, p('f', 'x'), os.O_CREAT | os.O_WRONLY, 0o644)
      r['dir_for_write'] = E(os.open, p('d'), os.O_WRONLY)
      r['odirectory_on_file'] = E(os.open, p('f'), os.O_RDONLY | os.O_DIRECTORY)
      fd = os.open(p('f'), os.O_RDONLY)
      r['write_rdonly'] = E(os.write, fd, b'x')
      os.close(fd)
      fd = os.open(p('f'), os.O_WRONLY)
      r['read_wronly'] = E(os.read, fd, 1)
      os.close(fd)
      wfile(p('t'), b'x' * 20000)
      fd = os.open(p('t'), os.O_WRONLY | os.O_TRUNC)
      os.close(fd)
      st = os.stat(p('t'))
      r['trunc'] = [st.st_size, st.st_blocks, len(rfile(p('t')))]
      fd = os.open(p('t'), os.O_RDWR | os.O_TRUNC)
      os.write(fd, b'abc')
      os.close(fd)
      r['trunc_rewrite'] = rfile(p('t')).decode()
      out(r)
      `,
    )
    assert.equal(r.excl_file, 'EEXIST')
    assert.equal(r.excl_dir, 'EEXIST')
    assert.equal(r.excl_dangling, 'EEXIST', 'O_EXCL does not follow a dangling symlink')
    assert.equal(r.dangling_target_made, false)
    assert.equal(r.excl_new, 'OK')
    assert.deepEqual(r.new, ['0o100640', 0, 1, 0])
    assert.equal(r.creat_existing, '0123456789', 'O_CREAT without O_EXCL opens the existing file')
    assert.equal(r.creat_existing_mode, '0o644', 'and leaves its mode alone')
    assert.equal(r.noent, 'ENOENT')
    assert.equal(r.creat_missing_dir, 'ENOENT')
    assert.equal(r.creat_under_file, 'ENOTDIR')
    assert.equal(r.dir_for_write, 'EISDIR')
    assert.equal(r.odirectory_on_file, 'ENOTDIR')
    assert.equal(r.write_rdonly, 'EBADF')
    assert.equal(r.read_wronly, 'EBADF')
    assert.deepEqual(r.trunc, [0, 0, 0], 'O_TRUNC empties the file and frees its blocks')
    assert.equal(r.trunc_rewrite, 'abc')
  })

  it('O_APPEND from several fds, and from concurrent processes, never overwrites', async () => {
    const r = await runPy(
      fresh('append'),
      String.raw`
      r = {}
      a1 = os.open(p('ap'), os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o644)
      a2 = os.open(p('ap'), os.O_WRONLY | os.O_APPEND)
      plain = os.open(p('ap'), os.O_WRONLY)
      os.write(a1, b'aaa')
      os.write(a2, b'bbbb')
      os.write(a1, b'cc')
      os.write(plain, b'Z')  # at its own position 0
      os.write(a2, b'dd')
      for fd in (a1, a2, plain):
          os.close(fd)
      r['interleaved'] = rfile(p('ap')).decode()
      # four processes appending records at once
      path = p('log')
      wfile(path, b'')
      N, K = 4, 200
      pids = []
      for w in range(N):
          pid = os.fork()
          if pid == 0:
              try:
                  fd = os.open(path, os.O_WRONLY | os.O_APPEND)
                  for i in range(K):
                      os.write(fd, ('w%d:%05d:' % (w, i) + 'x' * (20 + i % 17) + '\n').encode())
                  os.close(fd)
              finally:
                  os._exit(0)
          pids.append(pid)
      r['exit'] = [os.waitpid(pid, 0)[1] for pid in pids]
      data = rfile(path)
      lines = data.split(b'\n')
      r['trailing_empty'] = lines[-1] == b''
      lines = lines[:-1]
      want_size = N * sum(len('w0:00000:') + 20 + i % 17 + 1 for i in range(K))
      r['size'] = [len(data), want_size]
      seqs = {w: [] for w in range(N)}
      bad = 0
      for l in lines:
          parts = l.split(b':')
          if len(parts) != 3 or not parts[0].startswith(b'w') or set(parts[2]) != {ord('x')}:
              bad += 1
              continue
          i = int(parts[1])
          if len(parts[2]) != 20 + i % 17:
              bad += 1
              continue
          seqs[int(parts[0][1:])].append(i)
      r['bad_records'] = bad
      r['in_order'] = all(seqs[w] == list(range(K)) for w in range(N))
      out(r)
      `,
    )
    assert.equal(r.interleaved, 'Zaabbbbccdd', 'appends go to the end whatever the other fds did')
    assert.deepEqual(r.exit, [0, 0, 0, 0])
    assert.equal(r.trailing_empty, true)
    assert.equal(r.bad_records, 0, 'no record overwritten or torn')
    assert.deepEqual(r.size[0], r.size[1])
    assert.equal(r.in_order, true, "each writer's records complete and in its order")
  })

  it('reads and writes at offsets: gaps read zeros, reads at and past EOF are short or empty', async () => {
    const r = await runPy(
      fresh('offsets'),
      String.raw`
      r = {}
      fd = os.open(p('o'), os.O_CREAT | os.O_RDWR, 0o644)
      os.pwrite(fd, b'hello', 0)
      os.pwrite(fd, b'world', 10)
      r['size'] = os.fstat(fd).st_size
      r['all'] = os.pread(fd, 100, 0).hex()
      r['at_eof'] = os.pread(fd, 10, 15).hex()
      r['past_eof'] = os.pread(fd, 10, 1 << 30).hex()
      r['short'] = os.pread(fd, 10, 12).decode()
      os.pwrite(fd, b'XY', 4)
      r['over'] = os.pread(fd, 100, 0).hex()
      os.lseek(fd, 0, os.SEEK_END)
      os.write(fd, b'!')
      r['end'] = os.pread(fd, 100, 0).hex()
      os.lseek(fd, 2, os.SEEK_SET)
      r['read_pos'] = os.read(fd, 3).decode()
      r['pos_after'] = os.lseek(fd, 0, os.SEEK_CUR)
      os.write(fd, b'__')
      r['write_pos'] = os.pread(fd, 100, 0).hex()
      # one write crossing many blocks and the 128 KiB request size, read back at odd offsets
      pat = bytes((i * 31 + 7) % 256 for i in range(300001))
      os.pwrite(fd, pat, 4093)
      ok = True
      for off, ln in ((4093, 300001), (4096, 5000), (131071, 3), (135165, 131075), (304000, 200)):
          got = os.pread(fd, ln, off)
          if got != pat[off - 4093:off - 4093 + ln]:
              ok = False
      r['big_ok'] = ok
      r['big_size'] = os.fstat(fd).st_size
      os.close(fd)
      out(r)
      `,
    )
    const z = (k: number): string => '00'.repeat(k)
    const hex = (s: string): string => Buffer.from(s).toString('hex')
    assert.equal(r.size, 15)
    assert.equal(r.all, hex('hello') + z(5) + hex('world'))
    assert.equal(r.at_eof, '')
    assert.equal(r.past_eof, '')
    assert.equal(r.short, 'rld')
    assert.equal(r.over, hex('hellXY') + z(4) + hex('world'))
    assert.equal(r.end, hex('hellXY') + z(4) + hex('world!'))
    assert.equal(r.read_pos, 'llX')
    assert.equal(r.pos_after, 5)
    assert.equal(r.write_pos, hex('hellX__') + z(3) + hex('world!'))
    assert.equal(r.big_ok, true)
    assert.equal(r.big_size, 4093 + 300001)
  })

  it('sparse files: holes read zeros and take no blocks, far past EOF too', async () => {
    const r = await runPy(
      fresh('sparse'),
      String.raw`
      r = {}
      fd = os.open(p('s'), os.O_CREAT | os.O_RDWR, 0o644)
      off = 100 * 2**20 + 3
      os.pwrite(fd, b'0123456789', off)
      st = os.fstat(fd)
      r['one'] = [st.st_size, st.st_blocks]
      r['hole_start'] = os.pread(fd, 65536, 0) == bytes(65536)
      r['hole_mid'] = os.pread(fd, 65536, 50 * 2**20) == bytes(65536)
      r['edge'] = os.pread(fd, 20, off - 10).hex()
      tb = 2**40
      os.pwrite(fd, b'TB', tb)
      st = os.fstat(fd)
      r['tb'] = [st.st_size, st.st_blocks]
      r['tb_edge'] = os.pread(fd, 10, tb - 6).hex()
      r['tb_hole'] = os.pread(fd, 4096, tb // 2) == bytes(4096)
      os.pwrite(fd, b'M' * 4096, 50 * 2**20)  # fill one block of the hole
      st = os.fstat(fd)
      r['filled'] = st.st_blocks
      r['filled_edges'] = os.pread(fd, 4098, 50 * 2**20 - 1) == b'\0' + b'M' * 4096 + b'\0'
      os.ftruncate(fd, tb + 2 + 2**30)  # growing by truncate allocates nothing
      st = os.fstat(fd)
      r['grown'] = [st.st_size, st.st_blocks]
      r['grown_tail'] = os.pread(fd, 4096, tb + 2**29) == bytes(4096)
      r['data_kept'] = [os.pread(fd, 10, off).decode(), os.pread(fd, 2, tb).decode()]
      os.close(fd)
      out(r)
      `,
    )
    assert.deepEqual(r.one, [100 * 2 ** 20 + 13, 8], 'ten bytes far past EOF take one 4 KiB block')
    assert.equal(r.hole_start, true)
    assert.equal(r.hole_mid, true)
    assert.equal(r.edge, '00'.repeat(10) + Buffer.from('0123456789').toString('hex'))
    assert.deepEqual(r.tb, [2 ** 40 + 2, 16])
    assert.equal(r.tb_edge, '00'.repeat(6) + Buffer.from('TB').toString('hex'), 'a read across EOF stops at EOF')
    assert.equal(r.tb_hole, true)
    assert.equal(r.filled, 24)
    assert.equal(r.filled_edges, true)
    assert.deepEqual(r.grown, [2 ** 40 + 2 + 2 ** 30, 24])
    assert.equal(r.grown_tail, true)
    assert.deepEqual(r.data_kept, ['0123456789', 'TB'])
  })

  it('truncate down and up: data past the new size is gone, growing again reads zeros', async () => {
    const r = await runPy(
      fresh('truncate'),
      String.raw`
      r = {}
      pat = bytes((i * 7 + 3) % 251 + 1 for i in range(3 * 4096 + 1000))
      wfile(p('t'), pat)
      r['b0'] = os.stat(p('t')).st_blocks
      os.truncate(p('t'), 5000)  # into the middle of the second block
      st = os.stat(p('t'))
      r['down'] = [st.st_size, st.st_blocks, rfile(p('t')) == pat[:5000]]
      os.truncate(p('t'), 20000)
      d = rfile(p('t'))
      r['up'] = [len(d), d[:5000] == pat[:5000], d[5000:] == bytes(15000), os.stat(p('t')).st_blocks]
      os.truncate(p('t'), 4096)  # a block boundary, then write past it
      fd = os.open(p('t'), os.O_RDWR)
      os.pwrite(fd, b'Q', 9000)
      d = rfile(p('t'))
      r['boundary'] = [len(d), d[:4096] == pat[:4096], d[4096:9000] == bytes(4904), d[9000:] == b'Q']
      # partial last block: shrink into a block, write beyond EOF inside that same block
      os.ftruncate(fd, 100)
      os.pwrite(fd, b'R', 3000)
      d = rfile(p('t'))
      r['partial'] = [len(d), d[:100] == pat[:100], d[100:3000] == bytes(2900), d[3000:] == b'R']
      os.ftruncate(fd, 0)
      st = os.fstat(fd)
      r['zero'] = [st.st_size, st.st_blocks]
      os.ftruncate(fd, 8192)
      st = os.fstat(fd)
      r['regrow'] = [st.st_size, st.st_blocks, os.pread(fd, 8192, 0) == bytes(8192)]
      os.close(fd)
      # a multi-block file cut in the middle of an extent, then extended by a write
      big = bytes((i * 13) % 256 for i in range(64 * 4096))
      wfile(p('m'), big)
      os.truncate(p('m'), 10 * 4096 + 123)
      fd = os.open(p('m'), os.O_RDWR)
      os.pwrite(fd, b'E' * 10, 40 * 4096)
      os.close(fd)
      d = rfile(p('m'))
      st = os.stat(p('m'))
      r['cut'] = [len(d), d[:10 * 4096 + 123] == big[:10 * 4096 + 123],
                  d[10 * 4096 + 123:40 * 4096] == bytes(30 * 4096 - 123), d[40 * 4096:] == b'E' * 10, st.st_blocks]
      wfile(p('u'), b'keep')
      os.truncate(p('u'), 4)
      r['same'] = rfile(p('u')).decode()
      os.mkdir(p('dir'))
      r['e_dir'] = E(os.truncate, p('dir'), 0)
      r['e_noent'] = E(os.truncate, p('missing'), 0)
      r['e_neg'] = E(os.truncate, p('u'), -1)
      fd = os.open(p('u'), os.O_RDONLY)
      r['e_rdonly'] = E(os.ftruncate, fd, 0)
      os.close(fd)
      out(r)
      `,
    )
    assert.equal(r.b0, 32)
    assert.deepEqual(r.down, [5000, 16, true])
    assert.deepEqual(r.up, [20000, true, true, 16], 'the tail of the partial block reads zeros after growing')
    assert.deepEqual(r.boundary, [9001, true, true, true])
    assert.deepEqual(r.partial, [3001, true, true, true])
    assert.deepEqual(r.zero, [0, 0])
    assert.deepEqual(r.regrow, [8192, 0, true])
    assert.deepEqual(r.cut, [40 * 4096 + 10, true, true, true, 8 * 12])
    assert.equal(r.same, 'keep')
    assert.equal(r.e_dir, 'EISDIR')
    assert.equal(r.e_noent, 'ENOENT')
    assert.equal(r.e_neg, 'EINVAL')
    assert.equal(r.e_rdonly, 'EINVAL')
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

  it('names of 255 bytes work and 256 bytes give ENAMETOOLONG everywhere', async () => {
    const r = await runPy(
      fresh('names'),
      String.raw`
      r = {}
      n255, n256 = 'a' * 255, 'b' * 256
      u255 = '\u20ac' * 85  # 255 bytes of UTF-8
      u256 = '\u20ac' * 85 + 'x'
      r['create'] = [E(os.open, p(n255), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
                     E(os.open, p(n256), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
                     E(os.open, p(u255), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
                     E(os.open, p(u256), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)]
      r['mkdir'] = [E(os.mkdir, p('d' * 255)), E(os.mkdir, p('d' * 256))]
      r['lookup'] = [E(os.stat, p(n255)), E(os.stat, p(n256)), E(os.stat, p(u255)), E(os.stat, p(u256)),
                     E(os.stat, p('d' * 256))]
      r['listed'] = sorted(os.listdir(D)) == sorted([n255, u255, 'd' * 255])
      r['nested'] = E(os.open, p('d' * 255, 'e' * 255), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      wfile(p('src'), b'S')
      r['rename'] = [E(os.rename, p('src'), p('r' * 256)), E(os.rename, p('src'), p('r' * 255)),
                     E(os.rename, p('s' * 256), p('t')), rfile(p('r' * 255)).decode()]
      r['link'] = [E(os.link, p('r' * 255), p('l' * 256)), E(os.link, p('r' * 255), p('l' * 255))]
      r['symlink'] = [E(os.symlink, 'target', p('y' * 256)), E(os.symlink, 'target', p('y' * 255)),
                      os.readlink(p('y' * 255))]
      r['remove'] = [E(os.unlink, p(n256)), E(os.rmdir, p('d' * 256)), E(os.unlink, p(n255)),
                     E(os.unlink, p(u255)), E(os.unlink, p('d' * 255, 'e' * 255)), E(os.rmdir, p('d' * 255))]
      r['final'] = sorted(os.listdir(D)) == sorted(['r' * 255, 'l' * 255, 'y' * 255])
      out(r)
      `,
    )
    assert.deepEqual(r.create, ['OK', 'ENAMETOOLONG', 'OK', 'ENAMETOOLONG'])
    assert.deepEqual(r.mkdir, ['OK', 'ENAMETOOLONG'])
    assert.deepEqual(r.lookup, ['OK', 'ENAMETOOLONG', 'OK', 'ENAMETOOLONG', 'ENAMETOOLONG'])
    assert.equal(r.listed, true)
    assert.equal(r.nested, 'OK')
    assert.deepEqual(r.rename, ['ENAMETOOLONG', 'OK', 'ENAMETOOLONG', 'S'])
    assert.deepEqual(r.link, ['ENAMETOOLONG', 'OK'])
    assert.deepEqual(r.symlink, ['ENAMETOOLONG', 'OK', 'target'])
    assert.deepEqual(r.remove, ['ENAMETOOLONG', 'ENAMETOOLONG', 'OK', 'OK', 'OK', 'OK'])
    assert.equal(r.final, true)
  })

  it('names are bytes: names that are not UTF-8 are kept apart and listed as created', async function () {
    knownLimit(this, 'paths reach JavaScript as UTF-8 strings, so invalid bytes become U+FFFD')
    const r = await runPy(
      fresh('bytes'),
      String.raw`
      B = os.fsencode(D)
      names = [b'\xff', b'\xfe', b'caf\xe9', b'\xc3\x28', b'ok-\xe2\x82']
      res = [E(os.open, os.path.join(B, n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644) for n in names]
      listed = sorted(n.hex() for n in os.listdir(B))
      out({'create': res, 'listed': listed, 'want': sorted(n.hex() for n in names),
           'stat': [E(os.stat, os.path.join(B, n)) for n in names]})
      `,
    )
    assert.deepEqual(r.create, ['OK', 'OK', 'OK', 'OK', 'OK'], 'distinct byte names are distinct files')
    assert.deepEqual(r.listed, r.want, 'readdir returns the bytes that were created')
    assert.deepEqual(r.stat, ['OK', 'OK', 'OK', 'OK', 'OK'])
  })

  it('directory nlink is 2 + its subdirectories', async () => {
    const d = fresh('nlink')
    const r = await runPy(
      d,
      String.raw`
      r = {}
      os.mkdir(p('d'))
      for i in range(7):
          os.mkdir(p('d', 's%d' % i))
      for i in range(5):
          wfile(p('d', 'f%d' % i), b'')
      os.symlink('s0', p('d', 'l'))
      nl = lambda *x: os.stat(p(*x)).st_nlink
      r['n'] = [nl('d'), nl('d', 's0')]
      os.rmdir(p('d', 's6'))
      r['rmdir'] = nl('d')
      os.mkdir(p('e'))
      os.rename(p('d', 's5'), p('e', 's5'))
      r['move_dir'] = [nl('d'), nl('e')]
      os.rename(p('d', 'f0'), p('e', 'f0'))
      r['move_file'] = [nl('d'), nl('e')]
      os.rename(p('d', 's4'), p('d', 's4b'))
      r['rename_in_place'] = nl('d')
      os.rename(p('d', 's3'), p('e', 's5'))
      r['replace_empty'] = [nl('d'), nl('e')]
      os.unlink(p('d', 'f1'))
      os.link(p('d', 'f2'), p('d', 'f2b'))
      r['files'] = nl('d')
      subdirs = lambda dp: sum(1 for e in os.scandir(dp) if e.is_dir(follow_symlinks=False))
      r['all_match'] = all(os.stat(dp).st_nlink == 2 + subdirs(dp) for dp, _, _ in os.walk(D))
      out(r)
      `,
    )
    assert.deepEqual(r.n, [9, 2])
    assert.equal(r.rmdir, 8)
    assert.deepEqual(r.move_dir, [7, 3])
    assert.deepEqual(r.move_file, [7, 3])
    assert.equal(r.rename_in_place, 7)
    assert.deepEqual(r.replace_empty, [6, 3])
    assert.equal(r.files, 6)
    assert.equal(r.all_match, true)
    const root = await runPy(
      M,
      String.raw`
      out([os.stat(D).st_nlink, sum(1 for e in os.scandir(D) if e.is_dir(follow_symlinks=False))])
      `,
    )
    assert.equal(root[0], 2 + root[1], 'the root too')
  })

  it('readdir of 5,000 entries is complete, has no duplicates and keeps creation order', async () => {
    const d = fresh('readdir')
    const r = await runPy(
      d,
      String.raw`
      r = {}
      N = 5000
      names = ['%s-%d' % (hashlib.sha1(str(i).encode()).hexdigest()[:12], i) for i in range(N)]
      for n in names:
          os.close(os.open(p(n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
      got = [e.name for e in os.scandir(D)]
      r['count'] = [len(got), len(set(got))]
      r['complete'] = set(got) == set(names)
      r['creation_order'] = got == names
      r['sorted_differs'] = sorted(names) != names
      inos = {e.name: e.inode() for e in os.scandir(D)}
      r['d_ino_mismatch'] = sum(1 for n in names if os.stat(p(n)).st_ino != inos.get(n))
      r['distinct_inos'] = len(set(inos.values()))
      r['nlink'] = os.stat(D).st_nlink
      for n in names[::3]:
          os.unlink(p(n))
      new = ['new-%d' % i for i in range(10)]
      for n in new:
          wfile(p(n), b'')
      got2 = [e.name for e in os.scandir(D)]
      r['after'] = got2 == [n for i, n in enumerate(names) if i % 3] + new
      r['count2'] = len(got2)
      out(r)
      `,
    )
    assert.deepEqual(r.count, [5000, 5000], 'every entry once')
    assert.equal(r.complete, true)
    assert.equal(r.sorted_differs, true)
    assert.equal(r.creation_order, true, 'readdir returns entries in creation order')
    assert.equal(r.d_ino_mismatch, 0, 'd_ino equals st_ino')
    assert.equal(r.distinct_inos, 5000)
    assert.equal(r.nlink, 2)
    assert.equal(r.count2, 5000 - 1667 + 10)
    assert.equal(r.after, true, 'removals leave the order; new entries come last')
    const ls = await bash(`ls -fa -- ${JSON.stringify(d)} | wc -l`)
    assert.equal(Number(ls.stdout.trim()), 5000 - 1667 + 10 + 2, 'getdents through ls: the same count with . and ..')
  })

  it('inode numbers from stat and readdir equal what scoutfs walk-inodes reports', async () => {
    const d = fresh('inodes')
    await runPy(
      d,
      String.raw`
      os.makedirs(p('a', 'b', 'c'))
      for i in range(20):
          wfile(p('a', 'f%d' % i), b'x' * i)
      wfile(p('a', 'b', 'g'), b'g')
      os.link(p('a', 'b', 'g'), p('a', 'c-link'))
      os.symlink('f1', p('a', 'sym'))
      wfile(p('empty'), b'')
      out(0)
      `,
    )
    // the whole tree: every inode reachable from the root, with its type
    const tree = await runPy<{ all: Array<[number, string]>; dino_bad: number; root: number }>(
      M,
      String.raw`
      seen = {}
      bad = 0
      seen[os.lstat(D).st_ino] = 'dir'
      for dp, dirs, files in os.walk(D):
          for e in os.scandir(dp):
              st = os.lstat(e.path)
              if e.inode() != st.st_ino:
                  bad += 1
              seen[st.st_ino] = 'dir' if stat.S_ISDIR(st.st_mode) else 'reg' if stat.S_ISREG(st.st_mode) else 'other'
      out({'all': sorted(seen.items()), 'dino_bad': bad, 'root': os.stat(D).st_ino})
      `,
    )
    assert.equal(tree.root, 1, 'the root is inode 1')
    assert.equal(tree.dino_bad, 0, 'readdir d_ino equals lstat st_ino everywhere')
    const meta = await walkInodes(M, 'meta_seq')
    const data = await walkInodes(M, 'data_seq')
    const metaInos = meta.map((e) => e.ino)
    assert.equal(new Set(metaInos).size, metaInos.length, 'each inode once in meta_seq')
    assert.deepEqual(
      [...metaInos].sort((x, y) => x - y),
      tree.all.map(([ino]) => Number(ino)).sort((x, y) => x - y),
      'meta_seq lists exactly the inodes in the tree',
    )
    assert.deepEqual(
      data.map((e) => e.ino).sort((x, y) => x - y),
      tree.all
        .filter(([, t]) => t === 'reg')
        .map(([ino]) => Number(ino))
        .sort((x, y) => x - y),
      'data_seq lists exactly the regular files',
    )
    for (const name of ['a/f3', 'a/b/g', 'empty']) {
      const s = await scoutfs('stat', '-s', 'meta_seq', join(d, name))
      assert.equal(s.code, 0, s.stderr)
      const ino = await runPy<number>(d, `out(os.stat(p(ARGS[0])).st_ino)`, name)
      assert.equal(meta.find((e) => e.ino === ino)?.seq, Number(s.stdout), `${name}: walk-inodes seq = stat meta_seq`)
    }
  })

  it('the agent logged no errors', () => {
    const errs = errorLines(agent.log())
    assert.deepEqual(errs, [], 'error-level lines in the agent log')
  })
})
