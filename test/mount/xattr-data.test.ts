/*
 * Extended attributes and file data on a real mount (a `scoutfs mount --foreground` agent
 * serving FUSE): the xattr namespaces, flags, limits and errnos (ERANGE through libc with a
 * small buffer), values spanning several items, many xattrs on one file; random-offset writes
 * and reads of a 64 MiB file against an in-memory model (seed printed; SCOUTFS_TEST_SEED
 * replays it), unaligned writes across block boundaries with exact st_blocks, a write that
 * straddles a transaction's data allocation, and content after unmount + remount, then a
 * clean `scoutfs check`.
 */
import assert from 'node:assert/strict'
import * as fs from 'node:fs'
import { join } from 'node:path'
import { XATTR_HDR, XATTR_PART_MAX } from '../../node-agent/src/fs/fs-items.js'
import { makeDevices, scoutfs, startAgent, stopAllAgents, type Agent, type Devices } from '../helpers/agent.js'
import { fuseMountsUnder } from '../helpers/fuse-harness.js'
import { agentPerSuite, errorLines, freshDirs, runPy } from '../helpers/mount-tests.js'
import { testRng, testSeed, type Rng } from '../helpers/rng.js'

const MiB = 1 << 20
const BS = 4096

/** every xattr under a directory: relative path -> name -> sha256 of the value (symlinks not followed) */
const SNAPSHOT = String.raw`
  snap = {}
  def one(path):
      rel = os.path.relpath(path, D)
      snap[rel] = {n: hashlib.sha256(os.getxattr(path, n, follow_symlinks=False)).hexdigest()
                   for n in os.listxattr(path, follow_symlinks=False)}
  one(D)
  for dp, dirs, files in os.walk(D):
      for n in dirs + files:
          one(os.path.join(dp, n))
  out(snap)
`

describe('mount: xattrs', function () {
  this.timeout(180_000)
  let dev: Devices
  let agent: Agent
  let M: string
  const logs: string[] = []
  const fresh = freshDirs(() => M)

  agentPerSuite((d, a) => {
    dev = d
    agent = a
    M = a.mnt
  })

  it('user., trusted. and security. xattrs: set, get, list, remove on files, directories, links', async () => {
    const r = await runPy(
      fresh('basic'),
      String.raw`
      r = {}
      wfile(p('f'), b'')
      os.mkdir(p('d'))
      vals = {'user.a': b'alpha', 'trusted.b': b'\x00\x01\x02\xff\x00', 'security.c': b'',
              'user.with.dots-and_dash': b'x' * 100}
      res = {}
      for t in ('f', 'd'):
          for k, v in vals.items():
              os.setxattr(p(t), k, v)
          res[t] = [all(os.getxattr(p(t), k) == v for k, v in vals.items()), sorted(os.listxattr(p(t)))]
      r['set'] = res
      s0 = os.stat(p('f'))
      time.sleep(0.02)
      os.setxattr(p('f'), 'user.a', b'ALPHA-longer')
      s1 = os.stat(p('f'))
      r['replace'] = [os.getxattr(p('f'), 'user.a').decode(), s1.st_ctime_ns > s0.st_ctime_ns,
                      s1.st_mtime_ns == s0.st_mtime_ns, sorted(os.listxattr(p('f'))) == sorted(vals)]
      time.sleep(0.02)
      r['remove'] = [E(os.removexattr, p('f'), 'user.a'), E(os.getxattr, p('f'), 'user.a'),
                     'user.a' in os.listxattr(p('f')), os.stat(p('f')).st_ctime_ns > s1.st_ctime_ns]
      r['remove_again'] = E(os.removexattr, p('f'), 'user.a')
      r['missing'] = [E(os.getxattr, p('f'), 'user.none'), E(os.getxattr, p('f'), 'trusted.none'),
                      E(os.getxattr, p('f'), 'security.none'), E(os.removexattr, p('f'), 'user.none')]
      r['dir_unaffected'] = os.getxattr(p('d'), 'user.a').decode()
      os.link(p('f'), p('f2'))
      r['hardlink'] = os.getxattr(p('f2'), 'trusted.b').hex()
      os.symlink('f', p('l'))
      r['symlink_follow'] = os.getxattr(p('l'), 'trusted.b').hex()
      r['symlink_trusted'] = [E(os.setxattr, p('l'), 'trusted.s', b'1', follow_symlinks=False),
                              os.getxattr(p('l'), 'trusted.s', follow_symlinks=False).decode(),
                              E(os.getxattr, p('f'), 'trusted.s'), os.listxattr(p('l'), follow_symlinks=False)]
      r['symlink_user'] = E(os.setxattr, p('l'), 'user.s', b'1', follow_symlinks=False)
      r['missing_file'] = [E(os.getxattr, p('missing'), 'user.a'), E(os.setxattr, p('missing'), 'user.a', b''),
                           E(os.listxattr, p('missing')), E(os.removexattr, p('missing'), 'user.a')]
      fd = os.open(p('f'), os.O_RDONLY)
      os.setxattr(fd, 'user.fd', b'via-fd')
      r['fd'] = [os.getxattr(fd, 'user.fd').decode(), 'user.fd' in os.listxattr(fd)]
      os.close(fd)
      r['hide'] = [E(os.setxattr, p('f'), 'scoutfs.hide.x', b'h'), os.getxattr(p('f'), 'scoutfs.hide.x').decode(),
                   'scoutfs.hide.x' in os.listxattr(p('f'))]
      wfile(p('g'), b'')
      r['fresh_file'] = os.listxattr(p('g'))
      out(r)
      `,
    )
    const names = ['security.c', 'trusted.b', 'user.a', 'user.with.dots-and_dash']
    assert.deepEqual(r.set, { f: [true, names], d: [true, names] })
    assert.deepEqual(r.replace, ['ALPHA-longer', true, true, true], 'setxattr changes ctime, not mtime')
    assert.deepEqual(r.remove, ['OK', 'ENODATA', false, true])
    assert.equal(r.remove_again, 'ENODATA')
    assert.deepEqual(r.missing, ['ENODATA', 'ENODATA', 'ENODATA', 'ENODATA'])
    assert.equal(r.dir_unaffected, 'alpha')
    assert.equal(r.hardlink, '000102ff00', 'xattrs belong to the inode')
    assert.equal(r.symlink_follow, '000102ff00')
    assert.deepEqual(r.symlink_trusted, ['OK', '1', 'ENODATA', ['trusted.s']])
    assert.equal(r.symlink_user, 'EPERM')
    assert.deepEqual(r.missing_file, ['ENOENT', 'ENOENT', 'ENOENT', 'ENOENT'])
    assert.deepEqual(r.fd, ['via-fd', true])
    assert.deepEqual(r.hide, ['OK', 'h', false], 'scoutfs.hide. names are readable but not listed')
    assert.deepEqual(r.fresh_file, [])
  })

  it('XATTR_CREATE gives EEXIST on an existing name, XATTR_REPLACE ENODATA on a missing one', async () => {
    const r = await runPy(
      fresh('flags'),
      String.raw`
      r = {}
      wfile(p('f'), b'')
      f = p('f')
      r['create_new'] = E(os.setxattr, f, 'user.x', b'1', os.XATTR_CREATE)
      r['create_existing'] = E(os.setxattr, f, 'user.x', b'2', os.XATTR_CREATE)
      r['kept'] = os.getxattr(f, 'user.x').decode()
      r['replace_missing'] = E(os.setxattr, f, 'user.y', b'1', os.XATTR_REPLACE)
      r['not_created'] = [E(os.getxattr, f, 'user.y'), sorted(os.listxattr(f))]
      r['replace_existing'] = [E(os.setxattr, f, 'user.x', b'3', os.XATTR_REPLACE), os.getxattr(f, 'user.x').decode()]
      os.removexattr(f, 'user.x')
      r['replace_removed'] = E(os.setxattr, f, 'user.x', b'4', os.XATTR_REPLACE)
      r['create_removed'] = [E(os.setxattr, f, 'user.x', b'5', os.XATTR_CREATE), os.getxattr(f, 'user.x').decode()]
      big = os.urandom(65536)
      r['big_create'] = E(os.setxattr, f, 'trusted.big', big, os.XATTR_CREATE)
      r['big_create_again'] = E(os.setxattr, f, 'trusted.big', b'small', os.XATTR_CREATE)
      r['big_kept'] = os.getxattr(f, 'trusted.big') == big
      r['big_replace'] = [E(os.setxattr, f, 'trusted.big', b'small', os.XATTR_REPLACE),
                          os.getxattr(f, 'trusted.big').decode()]
      r['security'] = [E(os.setxattr, f, 'security.s', b'1', os.XATTR_REPLACE),
                       E(os.setxattr, f, 'security.s', b'1', os.XATTR_CREATE),
                       E(os.setxattr, f, 'security.s', b'2', os.XATTR_CREATE)]
      r['final'] = sorted(os.listxattr(f))
      out(r)
      `,
    )
    assert.equal(r.create_new, 'OK')
    assert.equal(r.create_existing, 'EEXIST')
    assert.equal(r.kept, '1', 'a failed XATTR_CREATE leaves the value')
    assert.equal(r.replace_missing, 'ENODATA')
    assert.deepEqual(r.not_created, ['ENODATA', ['user.x']])
    assert.deepEqual(r.replace_existing, ['OK', '3'])
    assert.equal(r.replace_removed, 'ENODATA')
    assert.deepEqual(r.create_removed, ['OK', '5'])
    assert.equal(r.big_create, 'OK')
    assert.equal(r.big_create_again, 'EEXIST')
    assert.equal(r.big_kept, true)
    assert.deepEqual(r.big_replace, ['OK', 'small'])
    assert.deepEqual(r.security, ['ENODATA', 'OK', 'EEXIST'])
    assert.deepEqual(r.final, ['security.s', 'trusted.big', 'user.x'])
  })

  it("ERANGE when the caller's buffer is too small (libc getxattr/listxattr); size 0 asks the size", async () => {
    const r = await runPy(
      fresh('erange'),
      String.raw`
      r = {}
      c = libc()
      wfile(p('f'), b'')
      f = p('f').encode()
      os.setxattr(p('f'), 'user.k', b'0123456789')
      os.setxattr(p('f'), 'user.e', b'')
      buf = ctypes.create_string_buffer(65536)
      r['size_query'] = c_result(c.getxattr(f, b'user.k', None, 0))
      r['small'] = c_result(c.getxattr(f, b'user.k', buf, 4))
      r['one_short'] = c_result(c.getxattr(f, b'user.k', buf, 9))
      r['exact'] = [c_result(c.getxattr(f, b'user.k', buf, 10)), buf.raw[:10].decode()]
      r['bigger'] = c_result(c.getxattr(f, b'user.k', buf, 65536))
      r['empty'] = [c_result(c.getxattr(f, b'user.e', None, 0)), c_result(c.getxattr(f, b'user.e', buf, 1))]
      r['missing'] = [c_result(c.getxattr(f, b'user.none', buf, 1)), c_result(c.getxattr(f, b'user.none', None, 0))]
      r['lget'] = c_result(c.lgetxattr(f, b'user.k', buf, 3))
      fd = os.open(p('f'), os.O_RDONLY)
      r['fget'] = c_result(c.fgetxattr(fd, b'user.k', buf, 3))
      os.close(fd)
      r['list_size'] = c_result(c.listxattr(f, None, 0))
      r['list_small'] = c_result(c.listxattr(f, buf, 13))
      r['list_exact'] = [c_result(c.listxattr(f, buf, 14)), sorted(x.decode() for x in buf.raw[:14].split(b'\0')[:-1])]
      os.setxattr(p('f'), 'user.big', b'z' * 65536)
      r['big_size'] = c_result(c.getxattr(f, b'user.big', None, 0))
      r['big_small'] = c_result(c.getxattr(f, b'user.big', buf, 65535))
      r['big_exact'] = [c_result(c.getxattr(f, b'user.big', buf, 65536)), buf.raw == b'z' * 65536]
      out(r)
      `,
    )
    assert.equal(r.size_query, 10)
    assert.equal(r.small, 'ERANGE')
    assert.equal(r.one_short, 'ERANGE')
    assert.deepEqual(r.exact, [10, '0123456789'])
    assert.equal(r.bigger, 10)
    assert.deepEqual(r.empty, [0, 0])
    assert.deepEqual(r.missing, ['ENODATA', 'ENODATA'])
    assert.equal(r.lget, 'ERANGE')
    assert.equal(r.fget, 'ERANGE')
    assert.equal(r.list_size, 14)
    assert.equal(r.list_small, 'ERANGE')
    assert.deepEqual(r.list_exact, [14, ['user.e', 'user.k']])
    assert.equal(r.big_size, 65536)
    assert.equal(r.big_small, 'ERANGE')
    assert.deepEqual(r.big_exact, [65536, true])
  })

  it('limits: 64 KiB values work and larger give E2BIG; 256-byte names ERANGE; other namespaces EOPNOTSUPP', async () => {
    const r = await runPy(
      fresh('limits'),
      String.raw`
      r = {}
      wfile(p('f'), b'')
      f = p('f')
      v64 = os.urandom(65536)
      r['64k'] = [E(os.setxattr, f, 'user.big', v64), os.getxattr(f, 'user.big') == v64]
      r['64k+1'] = E(os.setxattr, f, 'user.big', os.urandom(65537))
      r['1M'] = E(os.setxattr, f, 'user.big2', bytes(1 << 20))
      r['big_kept'] = [os.getxattr(f, 'user.big') == v64, E(os.getxattr, f, 'user.big2')]
      n255 = 'user.' + 'n' * 250
      n256 = 'user.' + 'n' * 251
      r['n255'] = [E(os.setxattr, f, n255, b'v'), os.getxattr(f, n255).decode(), n255 in os.listxattr(f),
                   E(os.removexattr, f, n255)]
      r['n256'] = [E(os.setxattr, f, n256, b'v'), E(os.getxattr, f, n256), E(os.removexattr, f, n256)]
      t255 = 'trusted.' + 't' * 247
      r['t255'] = [E(os.setxattr, f, t255, b'w'), os.getxattr(f, t255).decode()]
      r['foo'] = [E(os.setxattr, f, 'foo.bar', b'1'), E(os.getxattr, f, 'foo.bar'), E(os.removexattr, f, 'foo.bar')]
      r['nodot'] = E(os.setxattr, f, 'user', b'1')
      r['case'] = E(os.setxattr, f, 'USER.x', b'1')
      r['empty_name'] = E(os.setxattr, f, '', b'1')
      r['final'] = sorted(os.listxattr(f))
      out(r)
      `,
    )
    assert.deepEqual(r['64k'], ['OK', true])
    assert.equal(r['64k+1'], 'E2BIG')
    assert.equal(r['1M'], 'E2BIG')
    assert.deepEqual(r.big_kept, [true, 'ENODATA'])
    assert.deepEqual(r.n255, ['OK', 'v', true, 'OK'])
    assert.deepEqual(r.n256, ['ERANGE', 'ERANGE', 'ERANGE'])
    assert.deepEqual(r.t255, ['OK', 'w'])
    assert.deepEqual(r.foo, ['EOPNOTSUPP', 'EOPNOTSUPP', 'EOPNOTSUPP'])
    assert.equal(r.nodot, 'EOPNOTSUPP')
    assert.equal(r.case, 'EOPNOTSUPP')
    assert.equal(r.empty_name, 'ERANGE')
    assert.deepEqual(r.final, ['trusted.' + 't'.repeat(247), 'user.big'])
  })

  it('a name with nothing after its namespace prefix gives EINVAL', async () => {
    const r = await runPy(
      fresh('empty-suffix'),
      String.raw`
      wfile(p('f'), b'')
      f = p('f')
      out([E(os.setxattr, f, 'user.', b'1'), E(os.setxattr, f, 'trusted.', b'1'), E(os.getxattr, f, 'user.'),
           E(os.removexattr, f, 'user.'), os.listxattr(f)])
      `,
    )
    assert.deepEqual(r, ['EINVAL', 'EINVAL', 'EINVAL', 'EINVAL', []], 'as the Linux VFS answers for user. and trusted.')
  })

  it('values spanning several items round-trip exactly through replaces and removes', async () => {
    const seed = testSeed('xattr-parts')
    const r = await runPy(
      fresh('parts'),
      String.raw`
      r = {}
      HDR, PART, seed = int(ARGS[0]), int(ARGS[1]), int(ARGS[2])
      rnd = random.Random(seed)
      f = p('f')
      wfile(f, b'')
      NAME = 11  # len('user.spanNN')
      sizes = {0, 1, 100, 65535, 65536}
      for k in range(1, 17):
          for dlt in (-1, 0, 1):
              sizes.add(k * PART - HDR - NAME + dlt)
      sizes = sorted(s for s in sizes if 0 <= s <= 65536)
      vals = {}
      for i, n in enumerate(sizes):
          name = 'user.span%02d' % i
          vals[name] = rnd.randbytes(n)
          os.setxattr(f, name, vals[name])
      r['count'] = len(sizes)
      r['set_bad'] = [k for k, v in vals.items() if os.getxattr(f, k) != v]
      r['listed'] = sorted(os.listxattr(f)) == sorted(vals)
      names = sorted(vals)
      for i, k in enumerate(names):  # large values become small and small ones large
          vals[k] = rnd.randbytes(sizes[len(sizes) - 1 - i])
          os.setxattr(f, k, vals[k], os.XATTR_REPLACE)
      r['replaced_bad'] = [k for k, v in vals.items() if os.getxattr(f, k) != v]
      for k in names[::2]:
          os.removexattr(f, k)
          del vals[k]
      r['removed'] = [sorted(os.listxattr(f)) == sorted(vals), [k for k, v in vals.items() if os.getxattr(f, k) != v],
                      [E(os.getxattr, f, k) for k in names[::2]].count('ENODATA')]
      # a 64 KiB value replaced by one byte leaves no part behind
      os.setxattr(f, 'trusted.g', rnd.randbytes(65536))
      os.setxattr(f, 'trusted.g', b'1')
      r['shrunk'] = [os.getxattr(f, 'trusted.g').decode(), sorted(os.listxattr(f)) == sorted(list(vals) + ['trusted.g'])]
      os.removexattr(f, 'trusted.g')
      os.setxattr(f, 'trusted.g', b'')
      r['again'] = os.getxattr(f, 'trusted.g').hex()
      out(r)
      `,
      String(XATTR_HDR),
      String(XATTR_PART_MAX),
      String(seed),
    )
    assert.ok(r.count >= 50)
    assert.deepEqual(r.set_bad, [], `values that read back wrong (seed ${seed})`)
    assert.equal(r.listed, true)
    assert.deepEqual(r.replaced_bad, [], `replaced values that read back wrong (seed ${seed})`)
    assert.deepEqual(r.removed, [true, [], Math.ceil(r.count / 2)])
    assert.deepEqual(r.shrunk, ['1', true])
    assert.equal(r.again, '')
  })

  it('many xattrs on one file: all listed, all readable, removals exact', async () => {
    const seed = testSeed('xattr-many')
    const r = await runPy(
      fresh('many'),
      String.raw`
      r = {}
      rnd = random.Random(int(ARGS[0]))
      f = p('many')
      wfile(f, b'')
      N = 2000
      names = ['user.k%04d-%s' % (i, rnd.randbytes(3).hex()) for i in range(N)]
      names += ['trusted.t%03d' % i for i in range(100)] + ['security.s%03d' % i for i in range(100)]
      vals = {n: rnd.randbytes(i % 300) for i, n in enumerate(names)}
      for n in names:
          os.setxattr(f, n, vals[n])
      lst = os.listxattr(f)
      r['list'] = [len(lst), len(set(lst)), set(lst) == set(names)]
      r['get_bad'] = sum(1 for n in names if os.getxattr(f, n) != vals[n])
      for n in names[::2]:
          os.removexattr(f, n)
      lst2 = os.listxattr(f)
      r['after_remove'] = [len(lst2), set(lst2) == set(names[1::2])]
      r['removed_enodata'] = [E(os.getxattr, f, n) for n in names[::2]].count('ENODATA')
      r['kept_bad'] = sum(1 for n in names[1::2] if os.getxattr(f, n) != vals[n])
      wfile(p('other'), b'')
      r['other'] = os.listxattr(p('other'))
      out(r)
      `,
      String(seed),
    )
    assert.deepEqual(r.list, [2200, 2200, true])
    assert.equal(r.get_bad, 0, `seed ${seed}`)
    assert.deepEqual(r.after_remove, [1100, true])
    assert.equal(r.removed_enodata, 1100)
    assert.equal(r.kept_bad, 0)
    assert.deepEqual(r.other, [])
  })

  it('xattrs are the same after unmount and remount, and check exits 0', async () => {
    const before = await runPy<Record<string, Record<string, string>>>(M, SNAPSHOT)
    assert.ok(Object.values(before).reduce((a, x) => a + Object.keys(x).length, 0) > 1000)
    logs.push(agent.log())
    assert.equal(await agent.stop(), 0, agent.log())
    agent = await startAgent(dev)
    const after = await runPy<Record<string, Record<string, string>>>(M, SNAPSHOT)
    assert.deepEqual(after, before)
    logs.push(agent.log())
    assert.equal(await agent.stop(), 0, agent.log())
    const c = await scoutfs('check', dev.meta, dev.data)
    assert.equal(c.code, 0, c.stdout + c.stderr)
  })

  it('the agents logged no errors', () => {
    if (logs.length === 0) logs.push(agent.log())
    assert.deepEqual(logs.flatMap(errorLines), [])
  })
})

/** write all of buf at off through fd */
function writeAll(fd: number, buf: Buffer, off: number): void {
  let done = 0
  while (done < buf.length) done += fs.writeSync(fd, buf, done, buf.length - done, off + done)
}

/** read up to len bytes at off (short only at EOF) */
function readAt(fd: number, len: number, off: number): Buffer {
  const b = Buffer.alloc(len)
  let got = 0
  while (got < len) {
    const k = fs.readSync(fd, b, got, len - got, off + got)
    if (k === 0) break
    got += k
  }
  return b.subarray(0, got)
}

function firstDiff(a: Buffer, b: Buffer): number {
  const n = Math.min(a.length, b.length)
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i
  return a.length === b.length ? -1 : n
}

/** compare a whole file with its model, in chunks */
function compareFile(path: string, model: Buffer, size: number, what: string): void {
  const fd = fs.openSync(path, 'r')
  try {
    assert.equal(fs.fstatSync(fd).size, size, `${what}: size`)
    for (let off = 0; off < size; off += 8 * MiB) {
      const len = Math.min(8 * MiB, size - off)
      const got = readAt(fd, len, off)
      const want = model.subarray(off, off + len)
      if (!got.equals(want)) assert.fail(`${what}: content differs at byte ${off + firstDiff(got, want)}`)
    }
  } finally {
    fs.closeSync(fd)
  }
}

describe('mount: file data', function () {
  this.timeout(180_000)
  let dev: Devices
  let agent: Agent
  let M: string
  const logs: string[] = []
  const SIZE = 64 * MiB
  const big = { model: Buffer.alloc(0), size: 0, blocks: 0 }
  const una = { model: Buffer.alloc(0), size: 0, blocks: 0 }

  agentPerSuite((d, a) => {
    dev = d
    agent = a
    M = a.mnt
  })

  it('random-offset writes and reads of a 64 MiB file match an in-memory model', () => {
    const rng: Rng = testRng('data-64m')
    const at = `(seed ${rng.seed}; replay with SCOUTFS_TEST_SEED=${rng.seed})`
    const model = Buffer.alloc(SIZE)
    let size: number
    const path = join(M, 'big')
    const fd = fs.openSync(path, 'w+')
    try {
      // the first half written sequentially; the rest is left to random writes (and holes)
      for (let off = 0; off < SIZE / 2; off += MiB) {
        const b = rng.bytes(MiB)
        writeAll(fd, b, off)
        b.copy(model, off)
      }
      size = SIZE / 2
      const length = (): number => {
        switch (rng.weighted([3, 4, 3])) {
          case 0:
            return rng.range(1, 64)
          case 1:
            return rng.range(1, 3 * BS)
          default:
            return rng.range(1, MiB)
        }
      }
      const stats = { writes: 0, reads: 0, truncates: 0, written: 0 }
      for (let i = 0; i < 3000; i++) {
        const kind = rng.weighted([50, 46, 4])
        if (kind === 0) {
          const off = rng.int(SIZE)
          const len = Math.min(length(), SIZE - off)
          const data = rng.bytes(len)
          writeAll(fd, data, off)
          data.copy(model, off)
          size = Math.max(size, off + len)
          stats.writes++
          stats.written += len
        } else if (kind === 1) {
          const off = rng.int(SIZE + 2 * BS)
          const len = length()
          const got = readAt(fd, len, off)
          const want = off >= size ? Buffer.alloc(0) : model.subarray(off, Math.min(size, off + len))
          if (!got.equals(want))
            assert.fail(
              `op ${i}: read of ${len} at ${off} (size ${size}) differs at +${firstDiff(got, want)}, ` +
                `got ${got.length} bytes, want ${want.length} ${at}`,
            )
          stats.reads++
        } else {
          const to = rng.int(SIZE)
          fs.ftruncateSync(fd, to)
          if (to < size) model.fill(0, to, size)
          size = to
          stats.truncates++
        }
        if (i % 100 === 0) assert.equal(fs.fstatSync(fd).size, size, `op ${i}: size ${at}`)
      }
      const st = fs.fstatSync(fd)
      assert.equal(st.size, size, at)
      assert.ok(st.blocks > 0 && st.blocks <= Math.ceil(size / BS) * 8, `st_blocks ${st.blocks} for ${size} bytes`)
      big.blocks = st.blocks
      console.log(`      ${JSON.stringify(stats)}, final size ${size}`)
    } finally {
      fs.closeSync(fd)
    }
    compareFile(path, model, size, `64 MiB file ${at}`)
    big.model = model
    big.size = size
  })

  it('unaligned writes across block boundaries, into holes and over data, with exact st_blocks', () => {
    const rng = testRng('data-unaligned')
    const at = `(seed ${rng.seed})`
    const U = 2 * MiB
    const model = Buffer.alloc(U)
    const touched = new Set<number>()
    let size = 0
    const path = join(M, 'unaligned')
    const fd = fs.openSync(path, 'w+')
    const write = (off: number, len: number, i: number | string): void => {
      const data = rng.bytes(len)
      writeAll(fd, data, off)
      data.copy(model, off)
      size = Math.max(size, off + len)
      for (let b = Math.floor(off / BS); b <= Math.floor((off + len - 1) / BS); b++) touched.add(b)
      // the written range and a block either side
      const from = Math.max(0, off - BS)
      const to = Math.min(size, off + len + BS)
      const got = readAt(fd, to - from, from)
      const want = model.subarray(from, to)
      if (!got.equals(want))
        assert.fail(`write ${i} (${len} at ${off}): bytes differ at ${from + firstDiff(got, want)} ${at}`)
      const st = fs.fstatSync(fd)
      assert.equal(st.size, size, `write ${i}: size`)
      assert.equal(st.blocks, touched.size * 8, `write ${i} (${len} at ${off}): st_blocks counts the blocks written`)
    }
    try {
      const fixed: Array<[number, number]> = [
        [4095, 2],
        [8191, 4098],
        [1, 4094],
        [12287, 1],
        [12289, 3],
        [65535, 65538],
        [131071, 131074],
        [200_000, 300_000],
        [BS * 200 + 7, BS * 3],
        [1_000_000, 48_575],
        [MiB, 1],
        [MiB - 1, 2],
        [BS * 300 - 1, 1],
        [BS * 300 + 1, BS - 2],
      ]
      fixed.forEach(([off, len], i) => write(off, len, `fixed ${i}`))
      for (let i = 0; i < 400; i++) {
        const block = rng.int(U / BS - 4)
        const off = Math.max(0, block * BS + rng.pick([-3, -2, -1, 0, 1, 2, 3]))
        const len = Math.min(rng.pick([1, 2, 3, 4095, 4096, 4097, 8191, 8193, rng.range(1, 20_000)]), U - off)
        write(off, len, i)
      }
    } finally {
      fs.closeSync(fd)
    }
    compareFile(path, model, size, `unaligned file ${at}`)
    una.model = model
    una.size = size
    una.blocks = touched.size * 8
  })

  it('content after unmount and remount equals what was written, and check exits 0', async () => {
    assert.ok(big.size > 0 && una.size > 0, 'the tests above ran')
    logs.push(agent.log())
    assert.equal(await agent.stop(), 0, agent.log())
    agent = await startAgent(dev)
    compareFile(join(M, 'big'), big.model, big.size, '64 MiB file after remount')
    compareFile(join(M, 'unaligned'), una.model, una.size, 'unaligned file after remount')
    assert.equal(fs.statSync(join(M, 'big')).blocks, big.blocks)
    assert.equal(fs.statSync(join(M, 'unaligned')).blocks, una.blocks)
    logs.push(agent.log())
    assert.equal(await agent.stop(), 0, agent.log())
    const c = await scoutfs('check', dev.meta, dev.data)
    assert.equal(c.code, 0, c.stdout + c.stderr)
  })

  it('the agents logged no errors', () => {
    if (logs.length === 0) logs.push(agent.log())
    assert.deepEqual(logs.flatMap(errorLines), [])
  })
})

describe("mount: file data across a transaction's data allocation", function () {
  this.timeout(180_000)
  let dev: Devices
  let agent: Agent
  let path: string
  const CHUNK = 100 * 1024
  const COUNT = 3000 // 300 MiB: more than one transaction's 256 MiB of data blocks

  before(async () => {
    dev = await makeDevices(512 * MiB, 1024 * MiB)
    // one transaction for everything: the write that empties its data allocation is retried after a commit
    agent = await startAgent(dev, undefined, { options: 'commit_interval_ms=600000' })
    path = join(agent.mnt, 'f')
  })

  after(async () => {
    const devDir = dev?.dir
    await stopAllAgents()
    if (devDir) assert.deepEqual(await fuseMountsUnder(devDir), [], 'no mount left behind')
  })

  it('st_blocks counts every block of 300 MiB written in 100 KiB writes, and the data reads back', async () => {
    const fd = fs.openSync(path, 'w+')
    const chunk = Buffer.alloc(CHUNK)
    try {
      for (let i = 0; i < COUNT; i++) {
        chunk.fill(i % 251)
        chunk.writeUInt32LE(i, 0)
        writeAll(fd, chunk, i * CHUNK)
      }
      for (let i = 0; i < COUNT; i += 80) {
        const got = readAt(fd, 80 * CHUNK, i * CHUNK)
        for (let j = 0; j < 80 && i + j < COUNT; j++) {
          const c = got.subarray(j * CHUNK, (j + 1) * CHUNK)
          assert.equal(c.readUInt32LE(0), i + j, `chunk ${i + j}`)
          assert.ok(
            c.subarray(4).every((x) => x === (i + j) % 251),
            `chunk ${i + j} content`,
          )
        }
      }
    } finally {
      fs.closeSync(fd)
    }
    const st = fs.statSync(path)
    assert.equal(st.size, COUNT * CHUNK)
    const ob = await scoutfs('stat', '-s', 'online_blocks', path)
    assert.equal(ob.code, 0, ob.stderr)
    assert.equal(Number(ob.stdout), (COUNT * CHUNK) / BS, 'online_blocks')
    assert.equal(st.blocks, (COUNT * CHUNK) / 512, 'st_blocks')
  })

  it('truncating that file succeeds, or else leaves it as it was', async () => {
    const chunkAt = (i: number): number => {
      const fd = fs.openSync(path, 'r')
      try {
        return readAt(fd, 4, i * CHUNK).readUInt32LE(0)
      } finally {
        fs.closeSync(fd)
      }
    }
    let err: NodeJS.ErrnoException | undefined
    try {
      fs.truncateSync(path, BS)
    } catch (e) {
      err = e as NodeJS.ErrnoException
    }
    if (err) {
      const st = fs.statSync(path)
      const lost = [1, 1000, 2000, 2999].filter((i) => chunkAt(i) !== i)
      assert.fail(
        `truncate to ${BS} failed with ${err.code}; the file still has size ${st.size} and ${st.blocks} blocks, ` +
          `and chunks ${JSON.stringify(lost)} of [1, 1000, 2000, 2999] no longer read back (zeros): ` +
          'the failed truncate freed their extents',
      )
    }
    const st = fs.statSync(path)
    assert.deepEqual([st.size, st.blocks], [BS, 8])
    assert.equal(chunkAt(0), 0)
    fs.truncateSync(path, 0)
    assert.equal(fs.statSync(path).blocks, 0)
    const ob = await scoutfs('stat', '-s', 'online_blocks', path)
    assert.equal(Number(ob.stdout), 0)
  })

  it('check is clean after unmount', async () => {
    const log = agent.log()
    assert.equal(await agent.stop(), 0, log)
    assert.deepEqual(errorLines(log), [])
    const c = await scoutfs('check', dev.meta, dev.data)
    assert.equal(c.code, 0, c.stdout + c.stderr)
  })
})
