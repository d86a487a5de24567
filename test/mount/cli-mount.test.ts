/*
 * Mounting as a user does it: `scoutfs mount` daemonizes and returns once mounted, `scoutfs
 * umount` commits and stops the agent, a second agent on the same devices is refused, and
 * bad input gets a clear error and a meaningful exit code.
 */
import assert from 'node:assert/strict'
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { forceUnmount, makeDevices, scoutfs, startAgent, stopAllAgents } from '../helpers/agent.js'

async function isMounted(mnt: string): Promise<boolean> {
  return (await fsp.readFile('/proc/mounts', 'utf8')).split('\n').some((l) => l.split(' ')[1] === mnt)
}

describe('mount: CLI', function () {
  this.timeout(120_000)
  const cleanup: string[] = []
  after(async () => {
    for (const m of cleanup) await forceUnmount(m)
    await stopAllAgents()
  })

  it('mounts in the background, and umount commits and stops the agent', async () => {
    const dev = await makeDevices()
    const mnt = join(dev.dir, 'bg')
    cleanup.push(mnt)
    const r = await scoutfs('mount', '--metadev', dev.meta, dev.data, mnt)
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /mounted .*bg/)
    assert.ok(await isMounted(mnt))
    await fsp.writeFile(join(mnt, 'kept'), 'across umount')
    const u = await scoutfs('umount', mnt)
    assert.equal(u.code, 0, u.stderr)
    assert.ok(!(await isMounted(mnt)))
    const again = await scoutfs('mount', '--metadev', dev.meta, dev.data, mnt)
    assert.equal(again.code, 0, again.stderr)
    assert.equal(await fsp.readFile(join(mnt, 'kept'), 'utf8'), 'across umount')
    assert.equal((await scoutfs('umount', mnt)).code, 0)
    const c = await scoutfs('check', dev.meta, dev.data)
    assert.equal(c.code, 0, c.stdout)
  })

  it('refuses a second agent on the same devices', async () => {
    const dev = await makeDevices()
    const a = await startAgent(dev)
    const mnt2 = join(dev.dir, 'second')
    cleanup.push(mnt2)
    const r = await scoutfs('mount', '--metadev', dev.meta, dev.data, mnt2)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /EBUSY: the filesystem is already served by agent pid \d+/)
    assert.ok(!(await isMounted(mnt2)))
    // the first mount is unharmed
    await fsp.writeFile(join(a.mnt, 'still'), 'fine')
    assert.equal(await fsp.readFile(join(a.mnt, 'still'), 'utf8'), 'fine')
    assert.equal(await a.stop(), 0)
  })

  it('gives clear errors for bad mount input', async () => {
    const dev = await makeDevices()
    const mnt = join(dev.dir, 'bad')
    cleanup.push(mnt)
    const opt = await scoutfs('mount', '--metadev', dev.meta, dev.data, mnt, '-o', 'bogus=1')
    assert.equal(opt.code, 2)
    assert.match(opt.stderr, /unknown mount option 'bogus'/)
    const scan = await scoutfs('mount', '--metadev', dev.meta, dev.data, mnt, '-o', 'orphan_scan_delay_ms=5')
    assert.equal(scan.code, 2)
    assert.match(scan.stderr, /orphan_scan_delay_ms must be 0 \(off\) or 100\.\.600000, not 5/)
    const spin = await scoutfs('mount', '--metadev', dev.meta, dev.data, mnt, '-o', 'fuse_spin_us=2000000')
    assert.equal(spin.code, 2)
    assert.match(spin.stderr, /fuse_spin_us is at most 1000000 \(1 s\), not 2000000/)
    const spinWord = await scoutfs('mount', '--metadev', dev.meta, dev.data, mnt, '-o', 'fuse_spin_us=soon')
    assert.equal(spinWord.code, 2)
    assert.match(spinWord.stderr, /fuse_spin_us needs a whole number/)
    const missing = await scoutfs('mount', '--metadev', dev.meta, join(dev.dir, 'nope.img'), mnt)
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /nope\.img/)
    assert.doesNotMatch(missing.stderr, /mounted/)
    const other = await makeDevices()
    const wrongData = await scoutfs('mount', '--metadev', dev.meta, other.data, mnt)
    assert.equal(wrongData.code, 1)
    assert.match(wrongData.stderr, /is not the data device of filesystem/)
    const notScoutfs = await scoutfs('umount', dev.dir)
    assert.equal(notScoutfs.code, 1)
    assert.match(notScoutfs.stderr, /cannot reach the scoutfs agent/)
    const noWalk = await scoutfs('walk-inodes', 'inode_seq', '0', '-1', dev.dir)
    assert.equal(noWalk.code, 2)
    assert.match(noWalk.stderr, /INDEX is meta_seq or data_seq/)
    assert.ok(!(await isMounted(mnt)))
  })
})
