/*
 * The in-process cluster itself: it starts, mounts see each other's changes, stops, checks
 * clean, and a crashed mount's slot can be mounted again.
 */
import assert from 'node:assert/strict'
import { InProcCluster } from '../harness/cluster.js'
import { ls, mkdir, readFile, writeFile } from '../harness/paths.js'
import { testSeed } from '../helpers/rng.js'

describe('inproc: the harness', function () {
  this.timeout(30_000)

  it('starts 2 mounts, shares a file between them, stops and checks clean', async () => {
    const c = await InProcCluster.start({ mounts: 2, seed: testSeed('harness smoke') })
    try {
      await mkdir(c.mount(0).fs, 'd')
      await writeFile(c.mount(0).fs, 'd/f', Buffer.from('hello'))
      assert.deepEqual(await ls(c.mount(1).fs, 'd'), ['f'])
      assert.equal((await readFile(c.mount(1).fs, 'd/f')).toString(), 'hello')
    } finally {
      await c.stop()
    }
    const r = await c.check()
    assert.deepEqual(r.problems, [])
  })

  it('survives every request delivered twice now and then (requests are idempotent)', async () => {
    const c = await InProcCluster.start({
      mounts: 2,
      seed: testSeed('harness duplicates'),
      duplicateRequests: 0.3,
      maxDelayTurns: 4,
    })
    try {
      await mkdir(c.mount(0).fs, 'd')
      for (let i = 0; i < 30; i++) {
        await writeFile(c.mount(i % 2).fs, `d/f${i}`, Buffer.from(`file ${i}`))
        if (i % 5 === 0) await c.sync(i % 2)
      }
      await c.unmount(1)
      await c.remount(1)
      for (let i = 0; i < 30; i++) assert.equal((await readFile(c.mount(1).fs, `d/f${i}`)).toString(), `file ${i}`)
      const dups = c.mount(0).link.counters.duplicates
      assert.ok(dups > 0, 'some requests were delivered twice')
    } finally {
      await c.stop()
    }
    assert.deepEqual((await c.check()).problems, [])
  })
})
