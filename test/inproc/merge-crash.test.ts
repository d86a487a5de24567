/*
 * Log trees, merges and crashes of an in-process cluster (the core cases of
 * test/cluster/merge.test.ts and crash.test.ts):
 *  - a workload of many commits from 3 mounts (own files, rewrites of other mounts' files,
 *    unlinks, renames): the server finalizes and merges log trees, never holds more than 2 per
 *    mount, check() is clean, and every file reads back on every mount and after a restart
 *    of the whole cluster on the same devices;
 *  - a mount that crashes keeps what it fsynced (committed) and loses what it did not; the
 *    others go on and see it, so does its remount;
 *  - the server role restarts under live mounts: they recover their locks and go on.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import type { FsApi } from '../../node-agent/src/fs/fs-api.js'
import { InProcCluster } from '../harness/cluster.js'
import { errnoOf, ls, lstat, mkdir, parentOf, readFile, writeFile } from '../harness/paths.js'
import { envInt, testRng, testSeed } from '../helpers/rng.js'

const N = 3
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

describe('inproc: log merge under a 3-mount workload, check, restart', function () {
  this.timeout(120_000)

  it('merges log trees, keeps them bounded, checks clean, and every file reads back after a restart', async () => {
    const seed = testSeed('inproc merge')
    const rng = testRng('inproc merge workload')
    const FILES = envInt('SCOUTFS_TEST_INPROC_MERGE_FILES', 160) // per mount
    let c = await InProcCluster.start({ mounts: N, seed })
    const want = new Map<string, string>() // path -> sha
    const maxTrees: number[] = []
    const sample = (): void => void maxTrees.push(c.server.server.logTrees.length)
    try {
      for (let m = 0; m < N; m++) await mkdir(c.mount(m).fs, `own-${m}`)
      await mkdir(c.mount(0).fs, 'shared')
      const put = async (m: number, path: string, data: Buffer): Promise<void> => {
        await writeFile(c.mount(m).fs, path, data)
        want.set(path, sha(data))
      }
      // every mount creates its own files, syncing every so often
      for (let i = 0; i < FILES; i++) {
        for (let m = 0; m < N; m++) {
          await put(m, `own-${m}/f${i}`, rng.bytes(rng.range(0, 3000)))
          if (rng.bool(0.05)) await c.sync(m)
        }
        if (i % 20 === 0) sample()
      }
      // rewrites of other mounts' files, unlinks, renames across mounts, and the shared directory
      for (let k = 0; k < FILES; k++) {
        const m = rng.int(N)
        const fs = c.mount(m).fs
        const owner = rng.int(N)
        const path = `own-${owner}/f${rng.int(FILES)}`
        const op = rng.int(4)
        if (!want.has(path)) continue
        if (op === 0) await put(m, path, rng.bytes(rng.range(1, 5000)))
        else if (op === 1) {
          const { dir, name } = await parentOf(fs, path)
          await fs.unlink(dir, name)
          want.delete(path)
        } else if (op === 2) {
          const to = `shared/from-${owner}-${k}`
          const a = await parentOf(fs, path)
          const b = await parentOf(fs, to)
          await fs.rename(a.dir, a.name, b.dir, b.name)
          want.set(to, want.get(path)!)
          want.delete(path)
        } else await put(m, `shared/new-${k}`, rng.bytes(rng.range(0, 2000)))
        if (rng.bool(0.05)) await c.sync(m)
        if (k % 20 === 0) sample()
      }
      for (let m = 0; m < N; m++) await c.sync(m)
      await c.drainMerges()
      sample()
      const counters = c.server.server.counters
      console.log(
        `      ${want.size} files; server: ${counters.logCommits} log commits, ${counters.merges} merges, ` +
          `${counters.mergedItems} items merged; log trees at most ${Math.max(...maxTrees)}`,
      )
      assert.ok(counters.merges > 0, 'the server merged log trees')
      assert.ok(Math.max(...maxTrees) <= 2 * N, `at most 2 log trees per mount (saw ${Math.max(...maxTrees)})`)
      assert.deepEqual((await c.check()).problems, [], 'check is clean with the mounts live')
      await c.stop()
      assert.deepEqual((await c.check()).problems, [], 'check is clean after a clean stop')
      c = await InProcCluster.start({ mounts: N, seed: seed + 1, devices: c.devices() })
      for (let m = 0; m < N; m++) {
        const fs = c.mount(m).fs
        for (const [path, h] of want) assert.equal(sha(await readFile(fs, path)), h, `${path} on mount ${m}`)
        const listed = new Set<string>()
        for (const d of ['own-0', 'own-1', 'own-2', 'shared'])
          for (const name of await ls(fs, d)) listed.add(`${d}/${name}`)
        assert.deepEqual([...listed].sort(), [...want.keys()].sort(), `the names on mount ${m}`)
      }
    } finally {
      await c.stop()
    }
    assert.deepEqual((await c.check()).problems, [])
  })
})

describe('inproc: when a transaction commits and a log tree is merged', function () {
  this.timeout(60_000)

  it('the commit timer restarts at every commit: a change made just after a sync waits the whole interval, then commits', async () => {
    const INTERVAL = 1000
    const c = await InProcCluster.start({
      mounts: 1,
      seed: testSeed('inproc commit timer'),
      commitIntervalMs: INTERVAL,
    })
    try {
      const fs = c.mount(0).fs
      const trans = c.mount(0).trans
      // syncs at different points of the interval: a timer on its own period would fire within
      // 90 % of the interval after most of them
      for (const [round, offset] of [0, 0.45, 0.25, 0.7].entries()) {
        await new Promise((r) => setTimeout(r, offset * INTERVAL))
        await c.sync(0)
        const commits = trans.counters.commits
        await writeFile(fs, `f${round}`, Buffer.from(`round ${round}`))
        // timers never fire early: nothing commits within 90 % of the interval after the sync
        await new Promise((r) => setTimeout(r, INTERVAL * 0.9))
        assert.equal(trans.counters.commits, commits, `round ${round}: committed before the interval`)
        const end = Date.now() + 30_000
        while (trans.counters.commits === commits && Date.now() < end) await new Promise((r) => setTimeout(r, 20))
        assert.equal(trans.counters.commits, commits + 1, `round ${round}: the timer committed the change`)
      }
    } finally {
      await c.stop()
    }
  })

  it('a committed tree that outgrew a leaf is finalized by its commit and merged while its mount stays idle', async () => {
    const c = await InProcCluster.start({ mounts: 1, seed: testSeed('inproc idle merge'), commitIntervalMs: 3_600_000 })
    try {
      const fs = c.mount(0).fs
      await mkdir(fs, 'd')
      for (let i = 0; i < 300; i++) await writeFile(fs, `d/f${i}`, Buffer.from(`file ${i}`))
      await c.sync(0)
      // no further operation on the mount: nothing opens its next transaction
      await c.drainMerges()
      const trees = c.server.server.logTrees
      assert.ok(c.server.server.counters.merges >= 1, 'the committed tree was merged')
      assert.deepEqual(
        trees.filter((lt) => lt.itemRoot.height > 0).map((lt) => `${lt.rid.toString(16)}.${lt.nr}`),
        [],
        'no log tree holds items: they are all in the fs root',
      )
      assert.equal((await readFile(fs, 'd/f299')).toString(), 'file 299')
      assert.deepEqual((await c.check()).problems, [])
    } finally {
      await c.stop()
    }
  })
})

describe('inproc: crashes and server restarts', function () {
  this.timeout(60_000)
  let c: InProcCluster
  const fsOf = (i: number): FsApi => c.mount(i).fs

  before(async () => {
    c = await InProcCluster.start({ mounts: N, seed: testSeed('inproc crash'), recoveryMs: 2000 })
  })
  after(async () => {
    await c.stop()
    assert.deepEqual((await c.check()).problems, [])
  })

  it("keeps a mount's fsynced data when it crashes, loses what it never committed; the others go on", async () => {
    const rng = testRng('inproc crash data')
    const fs = fsOf(1)
    await mkdir(fs, 'c1')
    const files = new Map<string, Buffer>()
    for (const [i, size] of [1, 4097, 100_003, 1 << 20].entries()) {
      const data = rng.bytes(size)
      const a = await writeFile(fs, `c1/f${i}`, data)
      await fs.fsync(a.ino, false)
      files.set(`c1/f${i}`, data)
    }
    // a rewrite in place, fsynced
    const f2 = await lstat(fs, 'c1/f2')
    await fs.write(f2.ino, 50_000, Buffer.from('patched'))
    await fs.fsync(f2.ino, false)
    Buffer.from('patched').copy(files.get('c1/f2')!, 50_000)
    // written, never synced, touched by nobody else: gone with the mount
    await writeFile(fs, 'c1/unsynced', Buffer.from('lost'))
    await fs.write(f2.ino, 0, Buffer.from('also lost'))
    await c.crash(1)
    assert.equal(await errnoOf(lstat(fs, 'c1')), 'ENOTCONN', 'the dead mount answers nothing')
    // an unsynced overwrite of committed blocks may or may not have reached them (as on a
    // local filesystem after a power loss): f2's first bytes are the old or the new ones
    const sameAs = (got: Buffer, path: string): boolean => {
      const want = files.get(path)!
      if (path !== 'c1/f2' || got.length !== want.length) return got.equals(want)
      const head = got.subarray(0, 9)
      return (
        got.subarray(9).equals(want.subarray(9)) &&
        (head.equals(want.subarray(0, 9)) || head.toString() === 'also lost')
      )
    }
    for (const m of [0, 2]) {
      for (const path of files.keys()) assert.ok(sameAs(await readFile(fsOf(m), path), path), `${path} on ${m}`)
      assert.equal(await errnoOf(lstat(fsOf(m), 'c1/unsynced')), 'ENOENT')
    }
    // the others change what the dead mount held locks on
    await writeFile(fsOf(0), 'c1/after', Buffer.from('after the crash'))
    await c.remount(1)
    for (const path of files.keys()) assert.ok(sameAs(await readFile(fsOf(1), path), path), `${path} on remount`)
    assert.deepEqual(await ls(fsOf(1), 'c1'), ['after', 'f0', 'f1', 'f2', 'f3'])
    assert.deepEqual((await c.check()).problems, [])
  })

  it('a crash in the middle of work on every mount leaves a consistent filesystem', async () => {
    const rng = testRng('inproc crash mid-work')
    await mkdir(fsOf(0), 'busy')
    let stop = false
    const worker = async (m: number): Promise<void> => {
      const fs = fsOf(m)
      for (let i = 0; !stop; i++) {
        const r = await errnoOf(writeFile(fs, `busy/m${m}-${i % 20}`, rng.bytes(rng.range(0, 20_000))))
        if (r !== 'OK') return // the dead mount's own work fails (ENOTCONN, EIO)
        if (i % 7 === 0) await errnoOf(fs.sync())
      }
    }
    const work = [0, 1, 2].map(worker)
    await new Promise((r) => setTimeout(r, 300))
    await c.crash(2)
    await new Promise((r) => setTimeout(r, 200))
    stop = true
    await Promise.all(work)
    const names = await ls(fsOf(0), 'busy')
    assert.ok(names.some((n) => n.startsWith('m0-')) && names.some((n) => n.startsWith('m1-')))
    for (const n of names) await readFile(fsOf(1), `busy/${n}`) // every listed file reads
    await c.remount(2)
    assert.deepEqual(await ls(fsOf(2), 'busy'), names)
    assert.deepEqual((await c.check()).problems, [])
  })

  it('the server role restarts under live mounts: they recover their locks and carry on', async () => {
    await mkdir(fsOf(0), 'rs')
    await writeFile(fsOf(1), 'rs/a', Buffer.from('before'))
    await c.restartServer()
    assert.equal((await readFile(fsOf(2), 'rs/a')).toString(), 'before')
    await writeFile(fsOf(2), 'rs/a', Buffer.from('after'))
    assert.equal((await readFile(fsOf(1), 'rs/a')).toString(), 'after')
    await writeFile(fsOf(0), 'rs/b', Buffer.from('b'))
    assert.deepEqual(await ls(fsOf(1), 'rs'), ['a', 'b'])
  })

  it('a mount that crashed unreclaimed is reclaimed by the recovery of a server restart', async () => {
    await writeFile(fsOf(1), 'rs/c', Buffer.from('c'))
    await c.sync(1)
    await c.crash(1, { reclaim: false })
    const t0 = Date.now()
    await c.restartServer()
    assert.ok(Date.now() - t0 >= 1500, 'the server waited for the dead mount to say hello')
    assert.equal((await readFile(fsOf(0), 'rs/c')).toString(), 'c')
    await writeFile(fsOf(2), 'rs/c', Buffer.from('c2'))
    await c.remount(1)
    assert.equal((await readFile(fsOf(1), 'rs/c')).toString(), 'c2')
  })
})
