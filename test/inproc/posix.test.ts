/*
 * POSIX namespace semantics of the Filesystem itself, in process (the core cases of
 * test/mount/posix-*.test.ts without FUSE, so nothing the kernel checks on the way stands in for
 * the filesystem): create, mkdir, unlink, rmdir with ENOTEMPTY, rename over files and
 * directories with its errnos, 255/256-byte names, hard links, symlinks, directory nlink.
 * Each test works in a fresh directory of one single-mount cluster.
 */
import assert from 'node:assert/strict'
import {
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  ROOT_INO,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  type FsApi,
} from '../../node-agent/src/fs/fs-api.js'
import { InProcCluster } from '../harness/cluster.js'
import { ROOT, create, errnoOf, ls, lstat, mkdir, parentOf, readFile, writeFile } from '../harness/paths.js'
import { testSeed } from '../helpers/rng.js'

describe('inproc: POSIX namespace operations and their errnos', function () {
  this.timeout(30_000)
  let c: InProcCluster
  let fs: FsApi
  let n = 0
  /** a fresh directory for one test; returns a path maker inside it */
  const fresh = async (name: string): Promise<(...parts: string[]) => string> => {
    const d = `${++n}-${name}`
    await mkdir(fs, d)
    return (...parts) => [d, ...parts].join('/')
  }
  const rename = async (from: string, to: string): Promise<void> => {
    const a = await parentOf(fs, from)
    const b = await parentOf(fs, to)
    await fs.rename(a.dir, a.name, b.dir, b.name)
  }
  const unlink = async (path: string): Promise<void> => {
    const a = await parentOf(fs, path)
    await fs.unlink(a.dir, a.name)
  }
  const rmdir = async (path: string): Promise<void> => {
    const a = await parentOf(fs, path)
    await fs.rmdir(a.dir, a.name)
  }
  const link = async (from: string, to: string): Promise<void> => {
    const t = await parentOf(fs, to)
    await fs.link((await lstat(fs, from)).ino, t.dir, t.name)
  }
  const symlink = async (target: string, path: string): Promise<void> => {
    const a = await parentOf(fs, path)
    await fs.symlink(a.dir, a.name, target, ROOT)
  }

  before(async () => {
    c = await InProcCluster.start({ mounts: 1, seed: testSeed('inproc posix') })
    fs = c.mount(0).fs
  })
  after(async () => {
    await c.stop()
    assert.deepEqual((await c.check()).problems, [])
  })

  it('create and mkdir: types and modes, EEXIST on any existing name, ENOTDIR under a file, ENOENT', async () => {
    const p = await fresh('create')
    const d0 = await lstat(fs, p())
    const f = await create(fs, p('f'), 0o640)
    assert.equal(f.mode, S_IFREG | 0o640)
    assert.equal(f.nlink, 1)
    assert.equal(f.size, 0)
    const d = await mkdir(fs, p('d'), 0o750)
    assert.equal(d.mode, S_IFDIR | 0o750)
    assert.equal(d.nlink, 2)
    assert.equal((await lstat(fs, p())).nlink, d0.nlink + 1, 'the parent gains a link for the subdirectory')
    await symlink('d', p('l'))
    for (const name of ['f', 'd', 'l']) {
      assert.equal(await errnoOf(create(fs, p(name))), 'EEXIST', `create over ${name}`)
      assert.equal(await errnoOf(mkdir(fs, p(name))), 'EEXIST', `mkdir over ${name}`)
    }
    assert.equal(await errnoOf(fs.mkdir(f.ino, 'x', 0o755, ROOT)), 'ENOTDIR')
    assert.equal(await errnoOf(fs.mknod(f.ino, 'x', S_IFREG | 0o644, 0, ROOT)), 'ENOTDIR')
    assert.equal(await errnoOf(fs.lookup(f.ino, 'x')), 'ENOTDIR')
    assert.equal(await errnoOf(mkdir(fs, p('nope', 'x'))), 'ENOENT')
    assert.equal(await errnoOf(lstat(fs, p('nope'))), 'ENOENT')
    assert.deepEqual(await ls(fs, p()), ['d', 'f', 'l'])
  })

  it('unlink and rmdir: EISDIR, ENOTDIR, ENOENT, ENOTEMPTY; nlink follows subdirectories', async () => {
    const p = await fresh('remove')
    await mkdir(fs, p('d'))
    await mkdir(fs, p('d', 'sub'))
    await writeFile(fs, p('d', 'sub', 'g'), Buffer.from('y'))
    await writeFile(fs, p('f'), Buffer.from('x'))
    await symlink('d', p('l'))
    assert.equal((await lstat(fs, p('d'))).nlink, 3)
    assert.equal(await errnoOf(rmdir(p('d', 'sub'))), 'ENOTEMPTY')
    assert.equal(await errnoOf(rmdir(p('d'))), 'ENOTEMPTY')
    assert.equal(await errnoOf(rmdir(p('f'))), 'ENOTDIR')
    assert.equal(await errnoOf(rmdir(p('l'))), 'ENOTDIR')
    assert.equal(await errnoOf(rmdir(p('missing'))), 'ENOENT')
    assert.equal(await errnoOf(unlink(p('d'))), 'EISDIR')
    assert.equal(await errnoOf(unlink(p('missing'))), 'ENOENT')
    const f = await lstat(fs, p('f'))
    assert.equal(await errnoOf(fs.unlink(f.ino, 'x')), 'ENOTDIR')
    assert.equal(await errnoOf(fs.rmdir(f.ino, 'x')), 'ENOTDIR')
    assert.deepEqual(await ls(fs, p()), ['d', 'f', 'l'], 'failed removals change nothing')
    // a symlink is removed, not what it points at
    await unlink(p('l'))
    assert.deepEqual(await ls(fs, p()), ['d', 'f'])
    await unlink(p('d', 'sub', 'g'))
    await rmdir(p('d', 'sub'))
    assert.equal((await lstat(fs, p('d'))).nlink, 2)
    await rmdir(p('d'))
    await unlink(p('f'))
    assert.equal(await errnoOf(fs.getattr(f.ino)), 'ENOENT', 'the unlinked inode is gone')
    assert.deepEqual(await ls(fs, p()), [])
    assert.equal((await lstat(fs, p())).nlink, 2)
    await mkdir(fs, p('d'))
    assert.deepEqual(await ls(fs, p('d')), [], 'a directory made again under the name is empty')
  })

  it('rename: files, directories, over a file, over an empty directory, between links of one inode', async () => {
    const p = await fresh('rename')
    const f = await writeFile(fs, p('f'), Buffer.from('F'))
    await rename(p('f'), p('g'))
    assert.equal(await errnoOf(lstat(fs, p('f'))), 'ENOENT')
    assert.equal((await lstat(fs, p('g'))).ino, f.ino)
    await mkdir(fs, p('d'))
    await writeFile(fs, p('d', 'x'), Buffer.from('X'))
    const d = await lstat(fs, p('d'))
    await rename(p('d'), p('e'))
    assert.equal((await lstat(fs, p('e'))).ino, d.ino)
    assert.equal((await readFile(fs, p('e', 'x'))).toString(), 'X')
    // over a file: the target's inode goes
    const t = await writeFile(fs, p('t'), Buffer.from('TARGET'))
    await rename(p('g'), p('t'))
    assert.equal((await readFile(fs, p('t'))).toString(), 'F')
    assert.equal(await errnoOf(fs.getattr(t.ino)), 'ENOENT', 'the replaced file is deleted')
    // over a file with another link: that link stays, one link fewer
    await writeFile(fs, p('h1'), Buffer.from('H'))
    await link(p('h1'), p('h2'))
    await writeFile(fs, p('s'), Buffer.from('S'))
    await rename(p('s'), p('h1'))
    assert.equal((await readFile(fs, p('h1'))).toString(), 'S')
    assert.equal((await readFile(fs, p('h2'))).toString(), 'H')
    assert.equal((await lstat(fs, p('h2'))).nlink, 1)
    // over an empty directory
    await mkdir(fs, p('empty'))
    const n0 = (await lstat(fs, p())).nlink
    await rename(p('e'), p('empty'))
    assert.equal((await lstat(fs, p('empty'))).ino, d.ino)
    assert.equal((await lstat(fs, p())).nlink, n0 - 1)
    // between two links of one inode, and onto itself: nothing happens
    await writeFile(fs, p('k1'), Buffer.from('K'))
    await link(p('k1'), p('k2'))
    await rename(p('k1'), p('k2'))
    await rename(p('k1'), p('k1'))
    assert.equal((await lstat(fs, p('k1'))).nlink, 2)
    assert.deepEqual(await ls(fs, p()), ['empty', 'h1', 'h2', 'k1', 'k2', 't'])
  })

  it('rename errors: ENOTEMPTY, ENOTDIR, EISDIR, EINVAL into itself, ENOENT, and nothing changes', async () => {
    const p = await fresh('rename-err')
    await mkdir(fs, p('full'))
    await writeFile(fs, p('full', 'x'), Buffer.alloc(0))
    await mkdir(fs, p('d'))
    await mkdir(fs, p('d', 'c'))
    await mkdir(fs, p('d', 'c', 'cc'))
    await writeFile(fs, p('f'), Buffer.alloc(0))
    const cases: Array<[string, string, string]> = [
      [p('d'), p('full'), 'ENOTEMPTY'],
      [p('d'), p('f'), 'ENOTDIR'],
      [p('f'), p('d'), 'EISDIR'],
      [p('f'), p('full'), 'EISDIR'],
      [p('d'), p('d', 'x'), 'EINVAL'],
      [p('d'), p('d', 'c', 'x'), 'EINVAL'],
      [p('d'), p('d', 'c', 'cc', 'x'), 'EINVAL'],
      [p('d'), p('d', 'c'), 'EINVAL'],
      [p('d', 'c'), p('d'), 'ENOTEMPTY'],
      [p('nope'), p('x'), 'ENOENT'],
    ]
    for (const [from, to, want] of cases) assert.equal(await errnoOf(rename(from, to)), want, `${from} -> ${to}`)
    assert.deepEqual(await ls(fs, p()), ['d', 'f', 'full'])
    assert.deepEqual(await ls(fs, p('full')), ['x'])
    assert.deepEqual(await ls(fs, p('d')), ['c'])
    assert.deepEqual(await ls(fs, p('d', 'c')), ['cc'])
    assert.deepEqual(
      [(await lstat(fs, p('d'))).nlink, (await lstat(fs, p('d', 'c'))).nlink, (await lstat(fs, p('full'))).nlink],
      [3, 3, 2],
    )
  })

  it("rename across directories moves '..' and both parents' nlink", async () => {
    const p = await fresh('rename-xdir')
    await mkdir(fs, p('a'))
    await mkdir(fs, p('b'))
    await mkdir(fs, p('a', 'sub'))
    await writeFile(fs, p('a', 'sub', 'f'), Buffer.from('z'))
    await rename(p('a', 'sub'), p('b', 'moved'))
    assert.equal((await lstat(fs, p('a'))).nlink, 2)
    assert.equal((await lstat(fs, p('b'))).nlink, 3)
    const moved = await lstat(fs, p('b', 'moved'))
    assert.equal((await fs.lookup(moved.ino, '..')).ino, (await lstat(fs, p('b'))).ino, "'..' names the new parent")
    assert.equal((await readFile(fs, p('b', 'moved', 'f'))).toString(), 'z')
  })

  it('RENAME_EXCHANGE swaps a directory and a file across directories: both parents, nlink and .. follow', async () => {
    const p = await fresh('exchange')
    await mkdir(fs, p('a'))
    await mkdir(fs, p('b'))
    await mkdir(fs, p('a', 'sub'))
    await writeFile(fs, p('a', 'sub', 'f'), Buffer.from('z'))
    await writeFile(fs, p('b', 'file'), Buffer.from('y'))
    const [a, b] = [await lstat(fs, p('a')), await lstat(fs, p('b'))]
    await fs.rename(a.ino, 'sub', b.ino, 'file', RENAME_EXCHANGE)
    assert.equal((await readFile(fs, p('a', 'sub'))).toString(), 'y')
    assert.equal((await readFile(fs, p('b', 'file', 'f'))).toString(), 'z')
    assert.equal((await lstat(fs, p('a'))).nlink, 2)
    assert.equal((await lstat(fs, p('b'))).nlink, 3)
    assert.equal((await fs.lookup((await lstat(fs, p('b', 'file'))).ino, '..')).ino, b.ino, "'..' names the new parent")
    assert.equal(await errnoOf(fs.rename(a.ino, 'sub', b.ino, 'none', RENAME_EXCHANGE)), 'ENOENT')
    assert.equal(await errnoOf(fs.rename(a.ino, 'sub', b.ino, 'file', RENAME_EXCHANGE | RENAME_NOREPLACE)), 'EINVAL')
    // the directory may not go below itself, whichever side it is on
    await writeFile(fs, p('b', 'file', 'g'), Buffer.from('g'))
    const moved = await lstat(fs, p('b', 'file'))
    assert.equal(await errnoOf(fs.rename(ROOT_INO, `${n}-exchange`, moved.ino, 'g', RENAME_EXCHANGE)), 'EINVAL')
    assert.equal(await errnoOf(fs.rename(moved.ino, 'g', ROOT_INO, `${n}-exchange`, RENAME_EXCHANGE)), 'EINVAL')
  })

  it('names of 255 bytes work and 256 bytes give ENAMETOOLONG everywhere', async () => {
    const p = await fresh('names')
    const n255 = 'a'.repeat(255)
    const n256 = 'b'.repeat(256)
    const u255 = '\u20ac'.repeat(85) // 255 bytes of UTF-8
    const u256 = u255 + 'x'
    assert.equal(await errnoOf(create(fs, p(n255))), 'OK')
    assert.equal(await errnoOf(create(fs, p(n256))), 'ENAMETOOLONG')
    assert.equal(await errnoOf(create(fs, p(u255))), 'OK')
    assert.equal(await errnoOf(create(fs, p(u256))), 'ENAMETOOLONG')
    assert.equal(await errnoOf(mkdir(fs, p('d'.repeat(255)))), 'OK')
    assert.equal(await errnoOf(mkdir(fs, p('d'.repeat(256)))), 'ENAMETOOLONG')
    assert.equal(await errnoOf(lstat(fs, p(n255))), 'OK')
    assert.equal(await errnoOf(lstat(fs, p(n256))), 'ENAMETOOLONG')
    assert.equal(await errnoOf(lstat(fs, p(u256))), 'ENAMETOOLONG')
    await writeFile(fs, p('src'), Buffer.from('S'))
    assert.equal(await errnoOf(rename(p('src'), p('r'.repeat(256)))), 'ENAMETOOLONG')
    assert.equal(await errnoOf(rename(p('s'.repeat(256)), p('t'))), 'ENAMETOOLONG')
    assert.equal(await errnoOf(rename(p('src'), p('r'.repeat(255)))), 'OK')
    assert.equal(await errnoOf(link(p('r'.repeat(255)), p('l'.repeat(256)))), 'ENAMETOOLONG')
    assert.equal(await errnoOf(link(p('r'.repeat(255)), p('l'.repeat(255)))), 'OK')
    assert.equal(await errnoOf(symlink('target', p('y'.repeat(256)))), 'ENAMETOOLONG')
    assert.equal(await errnoOf(symlink('target', p('y'.repeat(255)))), 'OK')
    assert.equal(await errnoOf(unlink(p(n256))), 'ENAMETOOLONG')
    assert.equal(await errnoOf(rmdir(p('d'.repeat(256)))), 'ENAMETOOLONG')
    assert.deepEqual(
      await ls(fs, p()),
      [n255, 'd'.repeat(255), 'l'.repeat(255), 'r'.repeat(255), 'y'.repeat(255), u255].sort(),
    )
  })

  it('hard links: nlink counts, shared data, EPERM for directories, EEXIST, ENOENT', async () => {
    const p = await fresh('links')
    const a = await writeFile(fs, p('a'), Buffer.from('one'))
    await link(p('a'), p('b'))
    await mkdir(fs, p('sub'))
    await link(p('a'), p('sub', 'c'))
    for (const name of ['a', 'b', 'sub/c']) assert.equal((await lstat(fs, p(name))).nlink, 3)
    assert.equal((await lstat(fs, p('sub', 'c'))).ino, a.ino)
    await fs.write(a.ino, 3, Buffer.from('+two'))
    assert.equal((await readFile(fs, p('b'))).toString(), 'one+two')
    await unlink(p('a'))
    assert.equal((await lstat(fs, p('b'))).nlink, 2)
    assert.equal((await readFile(fs, p('sub', 'c'))).toString(), 'one+two')
    assert.equal(await errnoOf(link(p('sub'), p('subl'))), 'EPERM')
    assert.equal(await errnoOf(link(p('b'), p('sub'))), 'EEXIST')
    assert.equal(await errnoOf(link(p('b'), p('b'))), 'EEXIST')
    assert.equal(await errnoOf(link(p('b'), p('nodir', 'x'))), 'ENOENT')
    assert.equal((await lstat(fs, p('b'))).nlink, 2, 'failed links change no count')
  })

  it('symlinks: readlink, 4095-byte targets, ENAMETOOLONG past that, EINVAL on non-links', async () => {
    const p = await fresh('symlinks')
    await symlink('target', p('l'))
    const l = await lstat(fs, p('l'))
    assert.equal(l.mode & S_IFMT, S_IFLNK)
    assert.equal(l.size, 6)
    assert.equal(await fs.readlink(l.ino), 'target')
    const long = 'x/'.repeat(2047) + 'y' // 4095 bytes
    await symlink(long, p('long'))
    assert.equal(await fs.readlink((await lstat(fs, p('long'))).ino), long)
    assert.equal(await errnoOf(symlink(long + 'z', p('toolong'))), 'ENAMETOOLONG')
    assert.equal(await errnoOf(lstat(fs, p('toolong'))), 'ENOENT', 'a refused symlink is not made')
    await writeFile(fs, p('f'), Buffer.from('x'))
    assert.equal(await errnoOf(fs.readlink((await lstat(fs, p('f'))).ino)), 'EINVAL')
    assert.equal(await errnoOf(fs.readlink((await lstat(fs, p())).ino)), 'EINVAL')
    assert.equal(await errnoOf(symlink('t', p('f'))), 'EEXIST')
    assert.equal(await errnoOf(symlink('t', p('l'))), 'EEXIST')
  })

  it('everything above survives a remount, and check is clean', async () => {
    await c.sync(0)
    const before = await ls(fs, '')
    await c.unmount(0)
    fs = (await c.remount(0)).fs
    assert.deepEqual(await ls(fs, ''), before)
    assert.equal((await readFile(fs, '3-rename/h2')).toString(), 'H')
    assert.deepEqual((await c.check()).problems, [])
  })
})
