/*
 * Several mounts of one in-process cluster (the core cases of test/cluster/visibility.test.ts
 * and concurrency.test.ts, without FUSE or processes): every kind of change made on one mount
 * is what the others see at once, with no sync between; same-name creates racing from three
 * mounts have exactly one winner; appends from three mounts all land, untorn, each writer's
 * in its order.
 */
import assert from 'node:assert/strict'
import { XATTR_CREATE, XATTR_REPLACE, type Attr, type FsApi } from '../../node-agent/src/fs/fs-api.js'
import { InProcCluster } from '../harness/cluster.js'
import { ROOT, create, errnoOf, ls, lstat, mkdir, parentOf, readFile, writeFile } from '../harness/paths.js'
import { testRng, testSeed } from '../helpers/rng.js'

const N = 3

describe('inproc: visibility of every kind of change across 3 mounts', function () {
  this.timeout(60_000)
  let c: InProcCluster
  const fsOf = (i: number): FsApi => c.mount(i).fs
  const others = (i: number): number[] => [0, 1, 2].filter((j) => j !== i)
  /** what every other mount than `i` has at `path`: attributes, or the errno */
  const seenElsewhere = async (i: number, path: string): Promise<Array<Attr | string>> =>
    Promise.all(others(i).map((j) => lstat(fsOf(j), path).catch((e: { code?: string }) => e.code ?? String(e))))

  before(async () => {
    c = await InProcCluster.start({ mounts: N, seed: testSeed('inproc visibility') })
  })
  after(async () => {
    await c.stop()
    assert.deepEqual((await c.check()).problems, [])
  })

  for (let a = 0; a < N; a++) {
    it(`mount ${a}'s creates, writes, truncates, chmods, renames, unlinks and xattrs are what the others see`, async () => {
      const rng = testRng(`inproc visibility from ${a}`)
      const fs = fsOf(a)
      const d = `from-${a}`
      await mkdir(fs, d)
      // create: a file, a directory, a symlink
      const f = await create(fs, `${d}/f`)
      await mkdir(fs, `${d}/sub`)
      await fs.symlink((await lstat(fs, d)).ino, 'l', 'f', ROOT)
      for (const name of ['', '/f', '/sub', '/l']) {
        const want = await lstat(fs, d + name)
        assert.deepEqual(await seenElsewhere(a, d + name), [want, want], `create of ${d + name}`)
      }
      for (const j of others(a)) assert.deepEqual(await ls(fsOf(j), d), ['f', 'l', 'sub'])
      // write: odd sizes, then an overwrite in the middle
      const data = rng.bytes(rng.range(5000, 200_000))
      await fs.write(f.ino, 0, data)
      for (const j of others(a)) assert.ok((await readFile(fsOf(j), `${d}/f`)).equals(data), `data on mount ${j}`)
      const at = rng.int(data.length)
      const patch = rng.bytes(rng.range(1, 9000))
      await fs.write(f.ino, at, patch)
      const want = Buffer.alloc(Math.max(data.length, at + patch.length))
      data.copy(want)
      patch.copy(want, at)
      for (const j of others(a)) assert.ok((await readFile(fsOf(j), `${d}/f`)).equals(want), `overwrite on ${j}`)
      // truncate down and up
      const cut = rng.int(want.length)
      await fs.setattr(f.ino, { size: cut })
      await fs.setattr(f.ino, { size: cut + 1000 })
      const grown = Buffer.concat([want.subarray(0, cut), Buffer.alloc(1000)])
      for (const j of others(a)) {
        assert.equal((await lstat(fsOf(j), `${d}/f`)).size, cut + 1000)
        assert.ok((await readFile(fsOf(j), `${d}/f`)).equals(grown), `truncate seen on ${j}`)
      }
      // chmod, chown, times
      await fs.setattr(f.ino, { mode: 0o100600, uid: 1234, gid: 99, mtimeMs: 1_000_000_000_123 })
      const after = await fs.getattr(f.ino)
      assert.equal(after.mode, 0o100600)
      assert.deepEqual(await seenElsewhere(a, `${d}/f`), [after, after], 'setattr')
      // rename within and across directories
      await fs.rename((await lstat(fs, d)).ino, 'f', (await lstat(fs, `${d}/sub`)).ino, 'g')
      for (const j of others(a)) {
        assert.equal(await errnoOf(lstat(fsOf(j), `${d}/f`)), 'ENOENT')
        assert.equal((await lstat(fsOf(j), `${d}/sub/g`)).ino, f.ino)
        assert.deepEqual(await ls(fsOf(j), d), ['l', 'sub'])
      }
      // xattrs: set, replace, remove
      await fs.setxattr(f.ino, 'user.a', Buffer.from('1'), XATTR_CREATE)
      const big = rng.bytes(rng.range(1000, 60_000))
      await fs.setxattr(f.ino, 'user.big', big, 0)
      for (const j of others(a)) {
        assert.deepEqual((await fsOf(j).listxattr(f.ino)).sort(), ['user.a', 'user.big'])
        assert.ok((await fsOf(j).getxattr(f.ino, 'user.big')).equals(big))
      }
      await fs.setxattr(f.ino, 'user.a', Buffer.from('2'), XATTR_REPLACE)
      await fs.removexattr(f.ino, 'user.big')
      for (const j of others(a)) {
        assert.equal((await fsOf(j).getxattr(f.ino, 'user.a')).toString(), '2')
        assert.equal(await errnoOf(fsOf(j).getxattr(f.ino, 'user.big')), 'ENODATA')
        assert.deepEqual(await fsOf(j).listxattr(f.ino), ['user.a'])
      }
      // unlink and rmdir
      const sub = await parentOf(fs, `${d}/sub/g`)
      await fs.unlink(sub.dir, 'g')
      for (const j of others(a)) {
        assert.equal(await errnoOf(lstat(fsOf(j), `${d}/sub/g`)), 'ENOENT')
        assert.equal(await errnoOf(fsOf(j).getattr(f.ino)), 'ENOENT', 'the inode is gone everywhere')
      }
      await fs.rmdir((await lstat(fs, d)).ino, 'sub')
      for (const j of others(a)) assert.deepEqual(await ls(fsOf(j), d), ['l'])
      // and a change on another mount is what this one sees next
      const b = others(a)[0]!
      await writeFile(fsOf(b), `${d}/back`, Buffer.from('from ' + b))
      assert.equal((await readFile(fs, `${d}/back`)).toString(), 'from ' + b)
    })
  }
})

describe('inproc: concurrent work on shared names and files from 3 mounts', function () {
  this.timeout(60_000)
  let c: InProcCluster
  const fsOf = (i: number): FsApi => c.mount(i).fs

  before(async () => {
    c = await InProcCluster.start({ mounts: N, seed: testSeed('inproc concurrency') })
  })
  after(async () => {
    await c.stop()
    assert.deepEqual((await c.check()).problems, [])
  })

  it('same-name creates and mkdirs racing from 3 mounts: exactly one wins, the others get EEXIST', async () => {
    await mkdir(fsOf(0), 'race')
    const dir = (await lstat(fsOf(0), 'race')).ino
    const ROUNDS = 24
    for (let r = 0; r < ROUNDS; r++) {
      const name = `n${r}`
      const asDir = r % 2 === 1
      const results = await Promise.all(
        [0, 1, 2].map((i) =>
          errnoOf(asDir ? fsOf(i).mkdir(dir, name, 0o755, ROOT) : fsOf(i).mknod(dir, name, 0o100644, 0, ROOT)),
        ),
      )
      assert.deepEqual(
        results.filter((x) => x === 'OK').length,
        1,
        `round ${r}: ${JSON.stringify(results)} (exactly one create wins)`,
      )
      assert.equal(results.filter((x) => x === 'EEXIST').length, 2, `round ${r}: ${JSON.stringify(results)}`)
      const inos = await Promise.all([0, 1, 2].map(async (i) => (await fsOf(i).lookup(dir, name)).ino))
      assert.equal(new Set(inos).size, 1, 'every mount sees the one winner')
    }
    for (let i = 0; i < N; i++) assert.equal((await ls(fsOf(i), 'race')).length, ROUNDS)
    assert.equal((await lstat(fsOf(1), 'race')).nlink, 2 + ROUNDS / 2)
  })

  it('appends from 3 mounts into one file: none lost or torn, each writer in order', async () => {
    const rng = testRng('inproc appends')
    const f = await create(fsOf(0), 'log')
    const PER = 40
    const writers = [0, 1, 2].map(async (m) => {
      const fs = fsOf(m)
      for (let i = 0; i < PER; i++) {
        const rec = Buffer.from(`${m}:${i}:${'x'.repeat(rng.int(300))}\n`)
        const n = await fs.write(f.ino, 0, rec, true)
        assert.equal(n, rec.length)
        if (rng.bool(0.2)) await new Promise((r) => setImmediate(r))
      }
    })
    await Promise.all(writers)
    for (let j = 0; j < N; j++) {
      const text = (await readFile(fsOf(j), 'log')).toString()
      const lines = text.split('\n')
      assert.equal(lines.pop(), '', 'the file ends with a whole record')
      assert.equal(lines.length, N * PER, 'no record lost or overwritten')
      const next = [0, 0, 0]
      for (const l of lines) {
        const m = /^(\d):(\d+):x*$/.exec(l)
        assert.ok(m, `a torn record on mount ${j}: ${l.slice(0, 40)}`)
        const w = Number(m[1])
        assert.equal(Number(m[2]), next[w], `writer ${w}'s records in order`)
        next[w]!++
      }
    }
  })
})
