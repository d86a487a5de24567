/*
 * File data and xattrs against an in-memory model, seeded (the core of
 * test/mount/xattr-data.test.ts, in process): random writes at random offsets (into holes,
 * over data, across block boundaries), truncates down and up, holes punched (fallocate
 * PUNCH_HOLE), reads of random ranges (also into
 * a reused buffer holding old bytes, as the FUSE frontend reads), xattrs
 * set with and without XATTR_CREATE / XATTR_REPLACE, replaced, removed, with the errnos the
 * model predicts (EEXIST, ENODATA, E2BIG), from two mounts taking turns, with syncs and
 * remounts between; then a restart of the cluster, every byte and xattr compared again, and
 * check() clean.
 */
import assert from 'node:assert/strict'
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  XATTR_CREATE,
  XATTR_REPLACE,
  type FsApi,
} from '../../node-agent/src/fs/fs-api.js'
import { InProcCluster } from '../harness/cluster.js'
import { create, errnoOf, mkdir } from '../harness/paths.js'
import { envInt, testRng, testSeed } from '../helpers/rng.js'

interface FileModel {
  ino: number
  data: Buffer
  xattrs: Map<string, Buffer>
}

const NAMES = ['user.a', 'user.b', 'user.long-' + 'n'.repeat(200), 'trusted.t', 'security.s', 'user.big']

describe('inproc: file data and xattrs against a model', function () {
  this.timeout(120_000)

  it('random writes, truncates, reads and xattr changes from 2 mounts match the model', async () => {
    const seed = testSeed('inproc model')
    const rng = testRng('inproc model ops')
    const OPS = envInt('SCOUTFS_TEST_INPROC_MODEL_OPS', 800)
    let c = await InProcCluster.start({ mounts: 2, seed })
    const fsOf = (i: number): FsApi => c.mount(i).fs
    const files: FileModel[] = []
    const scratch = Buffer.alloc(70_000)
    const verify = async (fs: FsApi, f: FileModel, what: string): Promise<void> => {
      const a = await fs.getattr(f.ino)
      assert.equal(a.size, f.data.length, `${what}: size of ${f.ino}`)
      assert.ok((await fs.read(f.ino, 0, f.data.length + 10)).equals(f.data), `${what}: data of ${f.ino}`)
      assert.deepEqual((await fs.listxattr(f.ino)).sort(), [...f.xattrs.keys()].sort(), `${what}: xattr names`)
      for (const [k, v] of f.xattrs) assert.ok((await fs.getxattr(f.ino, k)).equals(v), `${what}: xattr ${k}`)
    }
    try {
      await mkdir(fsOf(0), 'm')
      for (let i = 0; i < 4; i++) {
        const a = await create(fsOf(i % 2), `m/f${i}`)
        files.push({ ino: a.ino, data: Buffer.alloc(0), xattrs: new Map() })
      }
      const counts: Record<string, number> = {}
      for (let op = 0; op < OPS; op++) {
        const m = rng.int(2)
        const fs = fsOf(m)
        const f = rng.pick(files)
        const what = `op ${op} on mount ${m}`
        const kind = rng.pick([
          'write',
          'write',
          'write',
          'truncate',
          'punch',
          'read',
          'setxattr',
          'setxattr',
          'remove',
          'get',
        ])
        counts[kind] = (counts[kind] ?? 0) + 1
        if (kind === 'write') {
          const off = rng.bool(0.3) ? f.data.length + rng.int(10_000) : rng.int(Math.max(1, f.data.length + 1))
          const len = rng.bool(0.1) ? rng.range(65536, 300_000) : rng.range(1, 9000)
          if (off + len > 4 << 20) continue
          const buf = rng.bytes(len)
          assert.equal(await fs.write(f.ino, off, buf), len)
          if (off + len > f.data.length) {
            const grown = Buffer.alloc(off + len)
            f.data.copy(grown)
            f.data = grown
          }
          buf.copy(f.data, off)
        } else if (kind === 'truncate') {
          const size = rng.bool(0.5) ? rng.int(f.data.length + 1) : f.data.length + rng.int(100_000)
          await fs.setattr(f.ino, { size })
          const t = Buffer.alloc(size)
          f.data.copy(t, 0, 0, Math.min(size, f.data.length))
          f.data = t
        } else if (kind === 'punch') {
          // fallocate PUNCH_HOLE|KEEP_SIZE: zeros in the range, the size stays, whole blocks freed
          const off = rng.int(f.data.length + 100)
          const len = rng.range(1, rng.bool(0.3) ? 200_000 : 9000)
          const before = (await fs.getattr(f.ino)).blocks
          const a = await fs.fallocate(f.ino, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len)
          f.data.fill(0, Math.min(off, f.data.length), Math.min(off + len, f.data.length))
          assert.equal(a.size, f.data.length, `${what}: punch keeps the size`)
          assert.ok(a.blocks <= before, `${what}: punch frees blocks, never adds (${before} -> ${a.blocks})`)
        } else if (kind === 'read') {
          const off = rng.int(f.data.length + 100)
          const len = rng.range(0, 70_000)
          const got = await fs.read(f.ino, off, len)
          assert.ok(got.equals(f.data.subarray(off, off + len)), `${what}: read ${off}+${len} of ${f.ino}`)
          // into a reused buffer (as the FUSE frontend reads) that holds old bytes: holes
          // must read as zeros, not as what the buffer held
          const into = scratch.fill(0xa5)
          const got2 = await fs.read(f.ino, off, len, into)
          assert.ok(got2.equals(f.data.subarray(off, off + len)), `${what}: read ${off}+${len} into a buffer`)
          if (got2.length > 0) assert.equal(got2.buffer, into.buffer, `${what}: the answer is a part of the buffer`)
        } else if (kind === 'setxattr') {
          const name = rng.pick(NAMES)
          const size = name === 'user.big' ? rng.range(60_000, 65_537) : rng.int(300)
          const val = rng.bytes(size)
          const flags = rng.pick([0, 0, XATTR_CREATE, XATTR_REPLACE])
          const had = f.xattrs.has(name)
          const want =
            size > 65536
              ? 'E2BIG'
              : flags === XATTR_CREATE && had
                ? 'EEXIST'
                : flags === XATTR_REPLACE && !had
                  ? 'ENODATA'
                  : 'OK'
          assert.equal(await errnoOf(fs.setxattr(f.ino, name, val, flags)), want, `${what}: setxattr ${name}`)
          if (want === 'OK') f.xattrs.set(name, val)
        } else if (kind === 'remove') {
          const name = rng.pick(NAMES)
          const want = f.xattrs.has(name) ? 'OK' : 'ENODATA'
          assert.equal(await errnoOf(fs.removexattr(f.ino, name)), want, `${what}: removexattr ${name}`)
          f.xattrs.delete(name)
        } else {
          await verify(fs, f, what)
        }
        if (rng.bool(0.02)) await c.sync(rng.int(2))
        if (rng.bool(0.004)) {
          const r = rng.int(2)
          await c.unmount(r)
          await c.remount(r)
        }
      }
      console.log(`      ops: ${JSON.stringify(counts)}`)
      for (const f of files) for (let m = 0; m < 2; m++) await verify(fsOf(m), f, `end, mount ${m}`)
      await c.stop()
      assert.deepEqual((await c.check()).problems, [])
      c = await InProcCluster.start({ mounts: 1, seed: seed + 1, devices: c.devices() })
      for (const f of files) await verify(fsOf(0), f, 'after a restart')
    } finally {
      await c.stop()
    }
    assert.deepEqual((await c.check()).problems, [])
  })
})
