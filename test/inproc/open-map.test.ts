/*
 * The open map across mounts (issue 10, DESIGN §7): a file unlinked on one mount while open on
 * others stays usable (read, write, getattr with nlink 0) through their descriptors, is listed
 * nowhere, and is deleted (items gone on every mount, data blocks freed) only at the last
 * release on every mount; a mount that dies with it open leaves it to the orphan scan of a
 * surviving mount once the server has reclaimed the dead one.
 */
import assert from 'node:assert/strict'
import type { FsApi } from '../../node-agent/src/fs/fs-api.js'
import { InProcCluster } from '../harness/cluster.js'
import { errnoOf, ls, lstat, mkdir, parentOf, writeFile } from '../harness/paths.js'
import { openMapGroup } from '../../node-agent/src/protocol/open-map.js'
import { testSeed } from '../helpers/rng.js'

const MiB = 1 << 20

describe('inproc: files unlinked while open on other mounts (the open map)', function () {
  this.timeout(120_000)
  let c: InProcCluster
  const fsOf = (i: number): FsApi => c.mount(i).fs
  const live = [0, 1, 2]

  before(async () => {
    c = await InProcCluster.start({ mounts: 3, seed: testSeed('inproc open map') })
  })
  after(async () => {
    await c.stop()
    assert.deepEqual((await c.check()).problems, [])
  })

  /** the data blocks in use once every live mount has committed */
  const usedData = async (): Promise<number> => {
    for (const i of live) await fsOf(i).sync()
    const r = await c.check()
    assert.deepEqual(r.problems, [])
    return r.stats.usedDataBlocks
  }

  /** `path` written with `bytes` bytes on mount 0 and committed */
  const makeFile = async (path: string, bytes: number): Promise<{ ino: number; data: Buffer }> => {
    const data = Buffer.alloc(bytes, path.length)
    for (let i = 0; i < bytes; i += 4096) data.write(`${path}@${i}`, i)
    const a = await writeFile(fsOf(0), path, data)
    await fsOf(0).sync()
    return { ino: a.ino, data }
  }

  const goneEverywhere = async (ino: number): Promise<void> => {
    for (const i of live) {
      assert.equal(await errnoOf(fsOf(i).getattr(ino)), 'ENOENT', `mount ${i} still has inode ${ino}`)
      assert.equal(await errnoOf(fsOf(i).open(ino)), 'ENOENT', `mount ${i} can still open inode ${ino}`)
    }
  }

  it('stays usable on the opener after an unlink elsewhere, and is freed at its last release', async () => {
    await mkdir(fsOf(0), 'd1')
    const before = await usedData()
    const { ino, data } = await makeFile('d1/f', MiB)
    const withFile = await usedData()
    assert.ok(withFile >= before + MiB / 4096, `${withFile} data blocks in use, ${before} before`)

    await fsOf(1).open(ino)
    const { dir } = await parentOf(fsOf(0), 'd1/f')
    await fsOf(0).unlink(dir, 'f')

    // the name is gone on every mount
    for (const i of live) {
      assert.deepEqual(await ls(fsOf(i), 'd1'), [], `mount ${i} lists the unlinked name`)
      assert.equal(await errnoOf(lstat(fsOf(i), 'd1/f')), 'ENOENT')
    }
    // the opener still reads, writes and stats it
    const m1 = fsOf(1)
    assert.equal((await m1.getattr(ino)).nlink, 0)
    assert.ok((await m1.read(ino, 0, MiB)).equals(data))
    await m1.write(ino, MiB, Buffer.from('more'))
    assert.equal((await m1.read(ino, MiB, 10)).toString(), 'more')
    assert.equal((await m1.getattr(ino)).size, MiB + 4)
    // and the others still see it by inode number (it is not deleted), nlink 0
    assert.equal((await fsOf(2).getattr(ino)).nlink, 0)
    // an orphan scan anywhere leaves it alone while it is open
    for (const i of live) assert.equal(await c.mount(i).core.fs.deleteOrphans(), 0)
    assert.equal((await m1.getattr(ino)).size, MiB + 4)

    await m1.release(ino)
    await goneEverywhere(ino)
    const after = await usedData()
    assert.ok(after <= before, `${after} data blocks in use after the deletion, ${before} before the file`)
  })

  it('with two openers on two mounts, only the last release deletes it', async () => {
    await mkdir(fsOf(0), 'd2')
    const before = await usedData()
    const { ino, data } = await makeFile('d2/f', MiB / 2)
    await fsOf(1).open(ino)
    await fsOf(2).open(ino)
    await fsOf(2).open(ino) // two descriptors on mount 2
    const { dir } = await parentOf(fsOf(0), 'd2/f')
    await fsOf(0).unlink(dir, 'f')
    for (const i of live) assert.deepEqual(await ls(fsOf(i), 'd2'), [])

    await fsOf(1).release(ino)
    // mount 1 closed: mount 2's descriptors still work
    assert.equal((await fsOf(2).getattr(ino)).nlink, 0)
    assert.ok((await fsOf(2).read(ino, 0, MiB / 2)).equals(data))
    await fsOf(2).release(ino)
    assert.ok((await fsOf(2).read(ino, 0, 100)).equals(data.subarray(0, 100)))
    await fsOf(2).write(ino, 0, Buffer.from('still here'))
    assert.equal((await fsOf(1).read(ino, 0, 10)).toString(), 'still here')

    await fsOf(2).release(ino)
    await goneEverywhere(ino)
    assert.ok((await usedData()) <= before)
  })

  it('unlinked on the opening mount itself while open on another: deleted after both close', async () => {
    await mkdir(fsOf(0), 'd3')
    const { ino } = await makeFile('d3/f', 8192)
    await fsOf(0).open(ino)
    await fsOf(2).open(ino)
    const { dir } = await parentOf(fsOf(0), 'd3/f')
    await fsOf(0).unlink(dir, 'f')
    await fsOf(0).release(ino) // mount 0 closes first: mount 2 still has it
    assert.equal((await fsOf(2).getattr(ino)).nlink, 0)
    assert.equal((await fsOf(2).read(ino, 0, 8192)).length, 8192)
    await fsOf(2).release(ino)
    await goneEverywhere(ino)
  })

  it('the server relays the question to the other mounts only, and counts a reclaimed mount as nothing open', async () => {
    await mkdir(fsOf(0), 'd5')
    const { ino } = await makeFile('d5/f', 100)
    const group = openMapGroup(ino)
    await fsOf(1).open(ino)
    await fsOf(1).open(ino)
    await fsOf(2).open(ino)
    const rid = (i: number): number => c.mount(i).rid
    assert.deepEqual(await c.server.openInodes(rid(0), group), [ino])
    assert.deepEqual(await c.server.openInodes(rid(1), group), [ino]) // mount 2's
    await fsOf(2).release(ino)
    assert.deepEqual(await c.server.openInodes(rid(0), group), [ino]) // mount 1's
    assert.deepEqual(await c.server.openInodes(rid(1), group), []) // the asker's own are not asked
    assert.deepEqual(await c.server.openInodes(rid(0), group + 1), [])
    // asked while its process is dead but not yet reclaimed: the answer waits for the reclaim
    await c.crash(1, { reclaim: false })
    let answer: number[] | undefined
    const asked = c.server.openInodes(rid(0), group).then((r) => (answer = r))
    await new Promise((r) => setTimeout(r, 50))
    assert.equal(answer, undefined, 'answered without mount 1')
    await c.crash(1) // now reclaimed
    await asked
    assert.deepEqual(answer, [])
    live.splice(live.indexOf(1), 1)
    const { dir } = await parentOf(fsOf(0), 'd5/f')
    await fsOf(0).unlink(dir, 'f')
    await goneEverywhere(ino)
  })

  it('a mount that dies with it open leaves it to a later orphan scan of a surviving mount', async () => {
    await c.remount(1) // the test before left slot 1 dead
    live.push(1)
    await mkdir(fsOf(0), 'd4')
    const before = await usedData()
    const { ino } = await makeFile('d4/f', MiB / 4)
    await fsOf(1).open(ino)
    const { dir } = await parentOf(fsOf(0), 'd4/f')
    await fsOf(0).unlink(dir, 'f')
    assert.equal((await fsOf(2).getattr(ino)).nlink, 0)

    await c.crash(1) // reclaimed by the server: its opens are gone with it
    live.splice(live.indexOf(1), 1)
    assert.equal(await c.mount(2).core.fs.deleteOrphans(), 1)
    await goneEverywhere(ino)
    assert.ok((await usedData()) <= before)
    assert.equal(await c.mount(0).core.fs.deleteOrphans(), 0)
  })
})

describe('inproc: the periodic orphan scan', function () {
  this.timeout(60_000)
  let c: InProcCluster

  before(async () => {
    c = await InProcCluster.start({ mounts: 2, seed: testSeed('inproc orphan scan'), orphanScanDelayMs: 50 })
  })
  after(async () => {
    await c.stop()
    assert.deepEqual((await c.check()).problems, [])
  })

  it("frees a dead mount's open unlinked file without being called", async () => {
    const fs0 = c.mount(0).fs
    const { ino } = await writeFile(fs0, 'f', Buffer.alloc(10_000, 1))
    await c.mount(1).fs.open(ino)
    await fs0.unlink((await parentOf(fs0, 'f')).dir, 'f')
    await new Promise((r) => setTimeout(r, 300)) // scans run meanwhile: it is open, they keep it
    assert.equal((await fs0.getattr(ino)).nlink, 0)
    await c.crash(1)
    const t0 = Date.now()
    while ((await errnoOf(fs0.getattr(ino))) !== 'ENOENT') {
      assert.ok(Date.now() - t0 < 10_000, 'the orphan is still there 10 s after the crash')
      await new Promise((r) => setTimeout(r, 20))
    }
    assert.ok(c.mount(0).core.fs.counters.orphansDeleted >= 1)
  })
})
