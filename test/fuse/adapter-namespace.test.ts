/*
 * The FUSE adapter over the in-memory FsApi, exercised the way users reach it: from child
 * processes (shell tools, python3) against a real FUSE mount.  This process serves the mount,
 * so it never touches it with synchronous fs calls.
 *
 * This file: directories and their errnos, symlinks, hard links, rename, mknod, xattrs,
 * unlinked and renamed-over open files, name lengths, statfs and large directories.
 */
import assert from 'node:assert/strict'
import { ROOT_INO } from '../../node-agent/src/fs/fs-api.js'
import { MemFs } from '../helpers/mem-fs.js'
import { bash, mountFs, py, pyJson, sh, startPy, type TestMount } from '../helpers/fuse-harness.js'
import { RecordingLog, memFsMount, ok, waitFor, who } from '../helpers/adapter-mount.js'

describe('fuse: adapter over an in-memory FsApi', function () {
  this.timeout(60_000)
  let fs: MemFs
  let m: TestMount
  let mnt: string
  let log: RecordingLog
  memFsMount((x) => {
    ;({ fs, m, mnt, log } = x)
  })

  it('mkdir, rmdir, and the directory errnos', async function () {
    const r = await pyJson<Record<string, unknown>>(
      `
D = sys.argv[1]
os.mkdir(D)
os.mkdir(D + '/s1'); os.mkdir(D + '/s2')
open(D + '/f', 'w').close()
res = {}
res['mkdir_exists'] = err(os.mkdir, D)
res['nlink'] = os.stat(D).st_nlink
res['rmdir_nonempty'] = err(os.rmdir, D)
res['rmdir_file'] = err(os.rmdir, D + '/f')
res['unlink_dir'] = err(os.unlink, D + '/s1')
res['open_missing'] = err(os.open, D + '/nope', os.O_RDONLY)
res['file_as_dir'] = err(os.stat, D + '/f/x')
res['mkdir_under_file'] = err(os.mkdir, D + '/f/x')
res['open_dir_write'] = err(os.open, D, os.O_WRONLY)
res['list'] = sorted(os.listdir(D))
os.rmdir(D + '/s1')
res['nlink_after'] = os.stat(D).st_nlink
res['rmdir_missing'] = err(os.rmdir, D + '/s1')
os.rmdir(D + '/s2'); os.unlink(D + '/f'); os.rmdir(D)
res['gone'] = err(os.stat, D)
out(res)
`,
      [`${mnt}/dirs`],
    )
    assert.deepEqual(r, {
      mkdir_exists: 'EEXIST',
      nlink: 4,
      rmdir_nonempty: 'ENOTEMPTY',
      rmdir_file: 'ENOTDIR',
      unlink_dir: 'EISDIR',
      open_missing: 'ENOENT',
      file_as_dir: 'ENOTDIR',
      mkdir_under_file: 'ENOTDIR',
      open_dir_write: 'EISDIR',
      list: ['f', 's1', 's2'],
      nlink_after: 3,
      rmdir_missing: 'ENOENT',
      gone: 'ENOENT',
    })
  })

  it('symlinks and readlink', async function () {
    const r = await pyJson<Record<string, unknown>>(
      `
D = sys.argv[1]
os.mkdir(D)
with open(D + '/target', 'w') as f: f.write('through the link')
os.symlink('target', D + '/l')
os.symlink('nowhere/at/all', D + '/dangling')
res = {}
res['readlink'] = os.readlink(D + '/l')
res['is_link'] = stat.S_ISLNK(os.lstat(D + '/l').st_mode)
res['lsize'] = os.lstat(D + '/l').st_size
res['follow'] = open(D + '/l').read()
res['dangling_stat'] = err(os.stat, D + '/dangling')
res['dangling_lstat'] = stat.S_ISLNK(os.lstat(D + '/dangling').st_mode)
res['exists'] = err(os.symlink, 'x', D + '/l')
res['readlink_file'] = err(os.readlink, D + '/target')
out(res)
`,
      [`${mnt}/links`],
    )
    assert.deepEqual(r, {
      readlink: 'target',
      is_link: true,
      lsize: 6,
      follow: 'through the link',
      dangling_stat: 'ENOENT',
      dangling_lstat: true,
      exists: 'EEXIST',
      readlink_file: 'EINVAL',
    })
    assert.equal(ok(await sh('readlink', [`${mnt}/links/dangling`])), 'nowhere/at/all\n')
  })

  it('hard links', async function () {
    const r = await pyJson<Record<string, unknown>>(
      `
D = sys.argv[1]
os.mkdir(D)
with open(D + '/a', 'w') as f: f.write('shared')
os.link(D + '/a', D + '/b')
res = {}
sa, sb = os.stat(D + '/a'), os.stat(D + '/b')
res['same_ino'] = sa.st_ino == sb.st_ino
res['nlink'] = [sa.st_nlink, sb.st_nlink]
res['link_exists'] = err(os.link, D + '/a', D + '/b')
res['link_dir'] = err(os.link, D, D + '/dirlink')
os.unlink(D + '/a')
res['after_unlink'] = [os.stat(D + '/b').st_nlink, open(D + '/b').read()]
out(res)
`,
      [`${mnt}/hard`],
    )
    assert.deepEqual(r, {
      same_ino: true,
      nlink: [2, 2],
      link_exists: 'EEXIST',
      link_dir: 'EPERM',
      after_unlink: [1, 'shared'],
    })
  })

  it('rename: replace, directories, and the POSIX errnos', async function () {
    const r = await pyJson<Record<string, unknown>>(
      `
D = sys.argv[1]
os.makedirs(D + '/a/b/c'); os.makedirs(D + '/full/x'); os.mkdir(D + '/empty')
for n, t in (('f1', 'one'), ('f2', 'two'), ('a/b/c/deep', 'deep')):
    with open(D + '/' + n, 'w') as f: f.write(t)
res = {}
os.stat(D + '/a/b/c/deep')            # into the path cache
os.rename(D + '/f1', D + '/f2')
res['replaced'] = [open(D + '/f2').read(), err(os.stat, D + '/f1')]
res['into_itself'] = err(os.rename, D + '/a', D + '/a/b/inside')
res['onto_nonempty'] = err(os.rename, D + '/a', D + '/full')
res['file_onto_dir'] = err(os.rename, D + '/f2', D + '/empty')
res['dir_onto_file'] = err(os.rename, D + '/empty', D + '/f2')
res['missing'] = err(os.rename, D + '/nope', D + '/nope2')
n0 = os.stat(D).st_nlink
os.rename(D + '/a/b', D + '/moved')   # a directory moves between parents
res['nlinks'] = [os.stat(D).st_nlink - n0, os.stat(D + '/a').st_nlink]
res['new_path'] = open(D + '/moved/c/deep').read()
res['old_path'] = err(os.stat, D + '/a/b/c/deep')
os.rename(D + '/moved', D + '/empty')  # onto an empty directory
res['onto_empty'] = [open(D + '/empty/c/deep').read(), err(os.stat, D + '/moved')]
os.link(D + '/f2', D + '/f2twin')
os.rename(D + '/f2', D + '/f2twin')   # same inode: nothing happens
res['twins'] = [os.path.exists(D + '/f2'), os.path.exists(D + '/f2twin'), os.stat(D + '/f2twin').st_nlink]
out(res)
`,
      [`${mnt}/ren`],
    )
    assert.deepEqual(r, {
      replaced: ['one', 'ENOENT'],
      into_itself: 'EINVAL',
      onto_nonempty: 'ENOTEMPTY',
      file_onto_dir: 'EISDIR',
      dir_onto_file: 'ENOTDIR',
      missing: 'ENOENT',
      nlinks: [1, 2],
      new_path: 'deep',
      old_path: 'ENOENT',
      onto_empty: ['deep', 'ENOENT'],
      twins: [true, true, 2],
    })
    // RENAME_NOREPLACE cannot pass through libfuse 2: the kernel answers EINVAL
    const nr = await py(
      `
libc = ctypes.CDLL(None, use_errno=True)
D = sys.argv[1].encode()
r = libc.renameat2(-100, D + b'/f2twin', -100, D + b'/noreplace', 1)
out(errno.errorcode.get(ctypes.get_errno()) if r != 0 else 'ok')
`,
      [`${mnt}/ren`],
    )
    assert.equal(ok(nr).trim(), '"EINVAL"')
  })

  it('mknod: fifos and device nodes', async function () {
    const out = ok(
      await bash(
        `mkfifo ${mnt}/fifo && mknod ${mnt}/null c 1 3 && stat -c '%F|%t|%T' ${mnt}/fifo ${mnt}/null && ls -l ${mnt}/null`,
      ),
    )
    const lines = out.split('\n')
    assert.equal(lines[0], 'fifo|0|0')
    assert.equal(lines[1], 'character special file|1|3')
    const n = await fs.resolvePath('null')
    assert.equal(n.mode & 0o170000, 0o020000)
  })

  it('xattrs: set/get/list/remove, CREATE/REPLACE, ENODATA and ERANGE', async function () {
    const r = await pyJson<Record<string, unknown>>(
      `
P = sys.argv[1]
open(P, 'w').close()
res = {}
os.setxattr(P, 'user.a', b'alpha')
os.setxattr(P, 'user.bin', b'\\x00\\x01\\x00\\xff')
os.setxattr(P, 'user.empty', b'')
res['get'] = os.getxattr(P, 'user.a').decode()
res['bin'] = list(os.getxattr(P, 'user.bin'))
res['empty'] = list(os.getxattr(P, 'user.empty'))
res['list'] = sorted(os.listxattr(P))
res['create_exists'] = err(os.setxattr, P, 'user.a', b'x', os.XATTR_CREATE)
res['replace_missing'] = err(os.setxattr, P, 'user.zz', b'x', os.XATTR_REPLACE)
os.setxattr(P, 'user.a', b'replaced', os.XATTR_REPLACE)
res['replaced'] = os.getxattr(P, 'user.a').decode()
res['get_missing'] = err(os.getxattr, P, 'user.zz')
res['remove_missing'] = err(os.removexattr, P, 'user.zz')
os.removexattr(P, 'user.empty')
res['after_remove'] = sorted(os.listxattr(P))
libc = ctypes.CDLL(None, use_errno=True)
libc.getxattr.restype = ctypes.c_ssize_t
libc.listxattr.restype = ctypes.c_ssize_t
bp = P.encode()
res['size_query'] = libc.getxattr(bp, b'user.a', None, 0)
buf = ctypes.create_string_buffer(64)
r = libc.getxattr(bp, b'user.a', buf, 3)
res['small_get'] = [r, errno.errorcode.get(ctypes.get_errno())]
res['list_size'] = libc.listxattr(bp, None, 0)
r = libc.listxattr(bp, buf, 4)
res['small_list'] = [r, errno.errorcode.get(ctypes.get_errno())]
fd = os.open(P, os.O_RDONLY)
res['fget'] = os.getxattr(fd, 'user.bin') == b'\\x00\\x01\\x00\\xff'
os.close(fd)
out(res)
`,
      [`${mnt}/xattr`],
    )
    assert.deepEqual(r, {
      get: 'alpha',
      bin: [0, 1, 0, 255],
      empty: [],
      list: ['user.a', 'user.bin', 'user.empty'],
      create_exists: 'EEXIST',
      replace_missing: 'ENODATA',
      replaced: 'replaced',
      get_missing: 'ENODATA',
      remove_missing: 'ENODATA',
      after_remove: ['user.a', 'user.bin'],
      size_query: 8,
      small_get: [-1, 'ERANGE'],
      list_size: 'user.a\0user.bin\0'.length,
      small_list: [-1, 'ERANGE'],
      fget: true,
    })
    // POSIX ACLs cannot work through libfuse 2 (no FUSE_POSIX_ACL): refused, so tools fall back to the mode
    const acl = await py(
      `out([err(os.setxattr, sys.argv[1], 'system.posix_acl_access', b'\\x02\\x00\\x00\\x00'), err(os.getxattr, sys.argv[1], 'system.posix_acl_access')])`,
      [`${mnt}/xattr`],
    )
    assert.equal(ok(acl).trim(), '["ENOTSUP", "ENOTSUP"]') // python's name for EOPNOTSUPP (95)
  })

  it('unlink of an open file: gone from the namespace, readable until the last close, then deleted', async function () {
    ok(await bash(`mkdir ${mnt}/ou && printf 'still here' > ${mnt}/ou/f && touch ${mnt}/ou/other`))
    const ino = (await fs.resolvePath('ou/f')).ino
    const child = startPy(
      `
D = sys.argv[1]
fd = os.open(D + '/f', os.O_RDWR)
fd2 = os.open(D + '/f', os.O_RDONLY)
os.unlink(D + '/f')
ready({'list': sorted(os.listdir(D)), 'stat': err(os.stat, D + '/f'), 'nlink': os.fstat(fd).st_nlink})
wait()
res = {'read': os.pread(fd, 100, 0).decode()}
os.pwrite(fd, b'!', 10)
res['read2'] = os.pread(fd2, 100, 0).decode()
res['fsize'] = os.fstat(fd).st_size
os.ftruncate(fd, 5)
res['truncated'] = os.pread(fd2, 100, 0).decode()
os.setxattr(fd, 'user.k', b'v')
res['xattr'] = os.getxattr(fd, 'user.k').decode()
os.close(fd)
res['after_one_close'] = os.pread(fd2, 100, 0).decode()
ready(res)
wait()
os.close(fd2)
ready('closed')
`,
      [`${mnt}/ou`],
    )
    const first = await child.next<{ list: string[]; stat: string; nlink: number }>()
    assert.deepEqual(first, { list: ['other'], stat: 'ENOENT', nlink: 0 })
    // the fs: no name, the inode alive (nlink 0, open), no hidden name anywhere
    const dir = (await fs.resolvePath('ou')).ino
    const names = (await fs.readdir(dir, 0, 100)).map((e) => e.name)
    assert.deepEqual(names, ['.', '..', 'other'])
    assert.ok(fs.exists(ino))
    assert.equal((await fs.getattr(ino)).nlink, 0)
    assert.equal(fs.openCount(ino), 2)
    assert.equal(m.adapter.hiddenCount(), 1)
    // ls -a from another process does not see it either
    assert.equal(ok(await sh('ls', ['-a', `${mnt}/ou`])), '.\n..\nother\n')
    child.send('go')
    const second = await child.next<Record<string, string | number>>()
    assert.deepEqual(second, {
      read: 'still here',
      read2: 'still here!',
      fsize: 11,
      truncated: 'still',
      xattr: 'v',
      after_one_close: 'still',
    })
    await waitFor('first release', () => fs.openCount(ino) === 1)
    assert.ok(fs.exists(ino))
    // on this mount the directory is not empty while the orphan is open (libfuse 2 could not
    // name the orphan any more, and fuse-native crashes on the nameless release)...
    ok(await sh('rm', [`${mnt}/ou/other`]))
    const busy = await sh('rmdir', [`${mnt}/ou`])
    assert.notEqual(busy.code, 0)
    assert.match(busy.stderr, /not empty/)
    const busy2 = await py(`out(err(os.rename, sys.argv[1] + '/x', sys.argv[1] + '/ou'))`, [mnt])
    ok(await sh('mkdir', [`${mnt}/x`]))
    assert.equal(
      ok(await py(`out(err(os.rename, sys.argv[1] + '/x', sys.argv[1] + '/ou'))`, [mnt])).trim(),
      '"ENOTEMPTY"',
    )
    assert.equal(ok(busy2).trim(), '"ENOENT"')
    ok(await sh('rmdir', [`${mnt}/x`]))
    // ...while every other mount sees it empty and can remove it
    const other = await mountFs(fs, { log })
    try {
      assert.equal(ok(await sh('ls', ['-a', `${other.mnt}/ou`])), '.\n..\n')
      ok(await sh('rmdir', [`${other.mnt}/ou`]))
    } finally {
      await other.cleanup()
    }
    child.send('go')
    assert.equal(await child.next(), 'closed')
    await child.done()
    await waitFor('the inode to be freed at its last release', () => !fs.exists(ino))
    assert.equal(m.adapter.hiddenCount(), 0)
    for (const e of fs.log) {
      if (['lookup', 'getattr', 'readdir', 'read', 'write', 'getxattr', 'listxattr'].includes(e.op)) continue
      for (const a of e.args) assert.ok(!(typeof a === 'string' && a.startsWith('.fuse_hidden')), `${e.op} ${a}`)
    }
    assert.ok(!fs.allNames().some((n) => n.startsWith('.fuse_hidden')))
  })

  it('rename onto an open file replaces it; the old file stays readable through its descriptor', async function () {
    ok(await bash(`mkdir ${mnt}/ro && printf old > ${mnt}/ro/t && printf new > ${mnt}/ro/s`))
    const oldIno = (await fs.resolvePath('ro/t')).ino
    const newIno = (await fs.resolvePath('ro/s')).ino
    const child = startPy(
      `
D = sys.argv[1]
fd = os.open(D + '/t', os.O_RDONLY)
os.rename(D + '/s', D + '/t')
ready({'list': sorted(os.listdir(D)), 'now': open(D + '/t').read(), 'old': os.pread(fd, 10, 0).decode(),
       'ino': os.stat(D + '/t').st_ino})
wait()
os.close(fd)
ready('closed')
`,
      [`${mnt}/ro`],
    )
    const r = await child.next<Record<string, unknown>>()
    assert.deepEqual(r, { list: ['t'], now: 'new', old: 'old', ino: newIno })
    assert.equal((await fs.resolvePath('ro/t')).ino, newIno)
    assert.ok(fs.exists(oldIno))
    child.send('go')
    assert.equal(await child.next(), 'closed')
    await child.done()
    await waitFor('the replaced inode to be freed', () => !fs.exists(oldIno))
  })

  it('names: 255 bytes of UTF-8 at most (ENAMETOOLONG), multibyte names round trip', async function () {
    const r = await pyJson<Record<string, unknown>>(
      `
D = sys.argv[1]
os.mkdir(D)
res = {}
a255, a256 = 'a' * 255, 'a' * 256
e255, e256 = '\\u00e9' * 127 + 'a', '\\u00e9' * 128     # 255 and 256 bytes of UTF-8
res['ok255'] = err(lambda: os.close(os.open(D + '/' + a255, os.O_CREAT | os.O_WRONLY)))
res['long_create'] = err(os.open, D + '/' + a256, os.O_CREAT | os.O_WRONLY)
res['long_stat'] = err(os.stat, D + '/' + a256)
res['long_mkdir'] = err(os.mkdir, D + '/' + a256)
res['long_middle'] = err(os.stat, D + '/' + a256 + '/x')
res['utf8_255'] = err(lambda: os.close(os.open(D + '/' + e255, os.O_CREAT | os.O_WRONLY)))
res['utf8_256'] = err(os.open, D + '/' + e256, os.O_CREAT | os.O_WRONLY)
res['long_rename'] = err(os.rename, D + '/' + a255, D + '/' + a256)
res['long_symlink'] = err(os.symlink, 'x', D + '/' + a256)
res['long_link'] = err(os.link, D + '/' + a255, D + '/' + a256)
u = 'h\\u00e9llo-\\u65e5\\u672c\\u8a9e-\\U0001f642'
with open(D + '/' + u, 'w') as f: f.write('utf8')
res['listed'] = u in os.listdir(D)
res['read'] = open(D + '/' + u).read()
out(res)
`,
      [`${mnt}/names`],
    )
    assert.deepEqual(r, {
      ok255: null,
      long_create: 'ENAMETOOLONG',
      long_stat: 'ENAMETOOLONG',
      long_mkdir: 'ENAMETOOLONG',
      long_middle: 'ENAMETOOLONG',
      utf8_255: null,
      utf8_256: 'ENAMETOOLONG',
      long_rename: 'ENAMETOOLONG',
      long_symlink: 'ENAMETOOLONG',
      long_link: 'ENAMETOOLONG',
      listed: true,
      read: 'utf8',
    })
    const dir = (await fs.resolvePath('names')).ino
    const u = 'h\u00e9llo-\u65e5\u672c\u8a9e-\u{1f642}'
    assert.equal((await fs.lookup(dir, u)).size, 4)
    assert.ok(await fs.lookup(dir, '\u00e9'.repeat(127) + 'a'))
  })

  it('statfs: df and statvfs see the fs numbers, scaled to fit 32-bit fields', async function () {
    const r = await pyJson<number[]>(
      `s = os.statvfs(sys.argv[1]); out([s.f_bsize, s.f_frsize, s.f_blocks, s.f_namemax, s.f_files])`,
      [mnt],
    )
    assert.deepEqual(r, [4096, 4096, 1 << 20, 255, 1 << 20])
    fs.statfsOverride = {
      bsize: 4096,
      frsize: 4096,
      blocks: 2 ** 40, // 4 PiB
      bfree: 2 ** 39,
      bavail: 2 ** 39,
      files: 2 ** 40,
      ffree: 2 ** 39,
      namemax: 255,
    }
    try {
      const s = await pyJson<number[]>(
        `s = os.statvfs(sys.argv[1]); out([s.f_frsize * s.f_blocks, s.f_frsize * s.f_bfree, s.f_files])`,
        [mnt],
      )
      assert.deepEqual(s, [2 ** 52, 2 ** 51, 0xffffffff])
    } finally {
      fs.statfsOverride = undefined
    }
  })

  it('readdir of a large directory', async function () {
    const dir = await fs.mkdir(ROOT_INO, 'many', 0o755, who)
    const inos = new Map<string, number>()
    for (let i = 0; i < 3000; i++) {
      const a = await fs.mknod(dir.ino, `file-${i}`, 0o100644, 0, who)
      inos.set(`file-${i}`, a.ino)
    }
    assert.equal(ok(await bash(`ls -f ${mnt}/many | wc -l`)).trim(), '3002')
    const seen = await pyJson<Record<string, number>>(`out({e.name: e.inode() for e in os.scandir(sys.argv[1])})`, [
      `${mnt}/many`,
    ])
    assert.equal(Object.keys(seen).length, 3000)
    for (const [n, ino] of inos) assert.equal(seen[n], ino)
  })

  it('at the end, the fs holds no open references and no hidden names', async function () {
    await waitFor('all releases', () => fs.totalOpens() === 0)
    assert.equal(m.adapter.openHandles(), 0)
    assert.equal(m.adapter.hiddenCount(), 0)
    assert.equal(fs.lifetimeCalls.get('open'), fs.lifetimeCalls.get('release'))
    assert.ok(!log.errors.some((e) => /release/.test(e)), log.errors.join('; '))
  })
})
