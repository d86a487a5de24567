/*
 * POSIX semantics of a real mount (a `scoutfs mount --foreground` agent serving FUSE), checked
 * from python (exact errno names) and from this process: open flags, O_APPEND, reads and
 * writes at offsets, sparse files and truncate.
 *
 * One agent serves the whole describe block (test/helpers/posix-mount.ts); every test works in
 * a directory of its own.
 */
import assert from 'node:assert/strict'
import { runPy } from '../helpers/mount-tests.js'
import { posixMount } from '../helpers/posix-mount.js'

describe('mount: POSIX semantics: file I/O', function () {
  this.timeout(180_000)
  /** a fresh directory on the mount for one test */
  const fresh = posixMount()

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
})
