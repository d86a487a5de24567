/*
 * What a mounted scoutfs promises across crashes and remounts, on real agents and real FUSE
 * mounts: fsynced data survives kill -9; a 10,000-file tree survives unmount/remount byte for
 * byte; a full device gives ENOSPC and works again once space is freed; walk-inodes lists
 * exactly the committed changes in seq order; metrics are scraped over HTTP.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { makeDevices, scoutfs, startAgent, stopAllAgents } from '../helpers/agent.js'
import { testRng } from '../helpers/rng.js'
import { walkInodes } from '../helpers/mount-tests.js'

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

describe('mount: durability', function () {
  this.timeout(600_000)
  after(stopAllAgents)

  it('keeps fsynced data after kill -9 of the agent, and check is clean', async () => {
    const dev = await makeDevices()
    const a = await startAgent(dev, undefined, { options: 'commit_interval_ms=600000' })
    const rng = testRng('kill9')
    const files: Record<string, string> = {}
    for (let i = 0; i < 20; i++) {
      const data = Buffer.alloc(1 + Math.floor(rng.next() * 300_000))
      for (let j = 0; j < data.length; j += 997) data[j] = Math.floor(rng.next() * 256)
      const p = join(a.mnt, `f${i}`)
      const fh = await fsp.open(p, 'w')
      await fh.write(data)
      await fh.sync()
      await fh.close()
      files[`f${i}`] = sha(data)
    }
    await fsp.mkdir(join(a.mnt, 'dir'))
    await fsp.writeFile(join(a.mnt, 'dir', 'x'), 'x')
    const fh = await fsp.open(join(a.mnt, 'dir', 'x'), 'r+')
    await fh.sync()
    await fh.close()
    // written but never synced: may or may not survive, must not break anything
    await fsp.writeFile(join(a.mnt, 'unsynced'), 'maybe')
    await a.kill9()

    const b = await startAgent(dev)
    for (const [name, h] of Object.entries(files)) assert.equal(sha(await fsp.readFile(join(b.mnt, name))), h, name)
    assert.equal(await fsp.readFile(join(b.mnt, 'dir', 'x'), 'utf8'), 'x')
    await b.stop()
    const c = await scoutfs('check', dev.meta, dev.data)
    assert.equal(c.code, 0, c.stdout + c.stderr)
    dev.remove()
  })

  it('round-trips a tree of 10,000 files through unmount and remount', async () => {
    const dev = await makeDevices(1 << 30, 1 << 30)
    const a = await startAgent(dev)
    const want = new Map<string, string>()
    const rng = testRng('tree')
    for (let d = 0; d < 20; d++) {
      const dir = join(a.mnt, `d${d}`)
      await fsp.mkdir(dir)
      const writes: Array<Promise<void>> = []
      for (let f = 0; f < 500; f++) {
        const data = Buffer.from(`${d}/${f}:${Math.floor(rng.next() * 1e9)}`.repeat(1 + (f % 7)))
        want.set(`d${d}/f${f}`, sha(data))
        writes.push(fsp.writeFile(join(dir, `f${f}`), data))
      }
      await Promise.all(writes)
    }
    assert.equal(await a.stop(), 0, a.log())
    const b = await startAgent(dev)
    let n = 0
    for (let d = 0; d < 20; d++) {
      const names = await fsp.readdir(join(b.mnt, `d${d}`))
      assert.equal(names.length, 500)
      for (const name of names) {
        const h = sha(await fsp.readFile(join(b.mnt, `d${d}`, name)))
        assert.equal(h, want.get(`d${d}/${name}`), `d${d}/${name}`)
        n++
      }
    }
    assert.equal(n, 10_000)
    await b.stop()
    const c = await scoutfs('check', dev.meta, dev.data)
    assert.equal(c.code, 0, c.stdout + c.stderr)
    dev.remove()
  })

  it('returns ENOSPC when the data device is full and works again after deletes', async () => {
    const dev = await makeDevices(256 << 20, 64 << 20)
    const a = await startAgent(dev)
    const chunk = Buffer.alloc(1 << 20, 7)
    let written = 0
    let err: NodeJS.ErrnoException | undefined
    const fh = await fsp.open(join(a.mnt, 'fill'), 'w')
    try {
      for (let i = 0; i < 200; i++) {
        await fh.write(chunk)
        written += chunk.length
      }
    } catch (e) {
      err = e as NodeJS.ErrnoException
    } finally {
      await fh.close().catch(() => undefined)
    }
    assert.equal(err?.code, 'ENOSPC', `expected ENOSPC after ${written} bytes, got ${err?.code}`)
    assert.ok(written >= 40 << 20, `only ${written} bytes fit on a 64 MiB data device`)
    // small files fail too while it is full
    await assert.rejects(fsp.writeFile(join(a.mnt, 'more'), Buffer.alloc(1 << 20, 1)), { code: 'ENOSPC' })
    // free the space: after the freeing commit, it is usable again
    await fsp.unlink(join(a.mnt, 'fill'))
    await fsp.rm(join(a.mnt, 'more'), { force: true })
    assert.equal((await scoutfs('sync', a.mnt)).code, 0)
    const again = Buffer.alloc(8 << 20, 9)
    await fsp.writeFile(join(a.mnt, 'after'), again)
    assert.ok((await fsp.readFile(join(a.mnt, 'after'))).equals(again))
    await a.stop()
    const c = await scoutfs('check', dev.meta, dev.data)
    assert.equal(c.code, 0, c.stdout + c.stderr)
    dev.remove()
  })

  it('walk-inodes lists committed changes in seq order after creates, writes, chmods and deletes', async () => {
    const dev = await makeDevices()
    const a = await startAgent(dev, undefined, { options: 'commit_interval_ms=600000' })
    const ino = async (name: string): Promise<number> => (await fsp.stat(join(a.mnt, name))).ino
    for (const n of ['a', 'b', 'c']) await fsp.writeFile(join(a.mnt, n), n)
    const first = await walkInodes(a.mnt, 'meta_seq')
    const byIno = new Map(first.map((e) => [e.ino, e.seq]))
    for (const n of ['a', 'b', 'c']) assert.ok(byIno.has(await ino(n)), `${n} in the meta_seq index`)
    const seq0 = Math.max(...first.map((e) => e.seq))

    await fsp.chmod(join(a.mnt, 'a'), 0o600) // a: meta change only
    await scoutfs('sync', a.mnt)
    await fsp.appendFile(join(a.mnt, 'b'), 'more') // b: data change, later transaction
    const ia = await ino('a')
    const ib = await ino('b')
    const ic = await ino('c')
    await fsp.unlink(join(a.mnt, 'c'))

    const meta = await walkInodes(a.mnt, 'meta_seq', String(seq0 + 1))
    const metaInos = meta.map((e) => e.ino)
    assert.ok(metaInos.includes(ia) && metaInos.includes(ib), `a and b changed after ${seq0}: ${JSON.stringify(meta)}`)
    assert.ok(!metaInos.includes(ic), 'unlinked c is gone from the index')
    assert.ok(meta.find((e) => e.ino === ia)!.seq < meta.find((e) => e.ino === ib)!.seq, 'a changed before b')
    for (let i = 1; i < meta.length; i++) assert.ok(meta[i - 1]!.seq <= meta[i]!.seq, 'entries in seq order')
    const everything = await walkInodes(a.mnt, 'meta_seq')
    assert.equal(new Set(everything.map((e) => e.ino)).size, everything.length, 'each inode appears once')

    const data = await walkInodes(a.mnt, 'data_seq', String(seq0 + 1))
    assert.deepEqual(
      data.map((e) => e.ino),
      [ib],
      'only b had a data change',
    )
    const root = (await fsp.stat(a.mnt)).ino
    assert.ok(!(await walkInodes(a.mnt, 'data_seq')).some((e) => e.ino === root), 'directories have no data_seq entry')

    const st = await scoutfs('stat', '-s', 'data_seq', join(a.mnt, 'b'))
    assert.equal(Number(st.stdout), data[0]!.seq)
    const dv = await scoutfs('stat', '-s', 'data_version', join(a.mnt, 'b'))
    assert.equal(Number(dv.stdout), 2, 'written twice')
    await a.stop()
    dev.remove()
  })

  it('serves Prometheus metrics that count what happened', async () => {
    const dev = await makeDevices()
    const a = await startAgent(dev, undefined, { metricsAddr: '127.0.0.1:0' })
    assert.ok(a.metricsAddr, a.log())
    for (let i = 0; i < 10; i++) await fsp.writeFile(join(a.mnt, `m${i}`), 'x')
    await scoutfs('sync', a.mnt)
    const res = await fetch(`http://${a.metricsAddr}/metrics`)
    assert.equal(res.status, 200)
    const text = await res.text()
    const value = (name: string, label = ''): number => {
      const m = new RegExp(`^${name}\\{[^}]*${label}[^}]*\\} (\\S+)$`, 'm').exec(text)
      assert.ok(m, `${name} ${label} in /metrics`)
      return Number(m[1])
    }
    assert.ok(value('scoutfs_fs_ops_total', 'op="mknod",result="ok"') >= 10)
    assert.ok(value('scoutfs_trans_commits_total') >= 1)
    assert.ok(value('scoutfs_item_cache_items') > 0)
    assert.ok(value('scoutfs_fs_op_seconds_count', 'op="write"') >= 10)
    await a.stop()
    dev.remove()
  })
})
