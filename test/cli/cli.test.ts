/*
 * The scoutfs CLI as a user runs it: a real process per command, on file-backed devices.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, truncateSync, writeFileSync, openSync, readSync, writeSync, closeSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const BIN = join(__dirname, '..', '..', '..', 'bin', 'scoutfs')

interface Run {
  code: number
  stdout: string
  stderr: string
}

function scoutfs(...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(BIN, args, { encoding: 'utf8' }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0
      resolve({ code, stdout, stderr })
    })
  })
}

describe('scoutfs CLI', function () {
  let dir: string
  let meta: string
  let data: string

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'scoutfs-cli-'))
    meta = join(dir, 'meta.img')
    data = join(dir, 'data.img')
    writeFileSync(meta, '')
    writeFileSync(data, '')
    truncateSync(meta, 256 << 20)
    truncateSync(data, 256 << 20)
  })
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  it('with no command prints usage and exits 2', async () => {
    const r = await scoutfs()
    assert.equal(r.code, 2)
    assert.match(r.stderr, /Usage: scoutfs/)
  })

  it('has --help on every command', async () => {
    for (const cmd of ['mkfs', 'print', 'check']) {
      const r = await scoutfs(cmd, '--help')
      assert.equal(r.code, 0, `${cmd} --help`)
      assert.match(r.stdout, new RegExp(`Usage: scoutfs ${cmd}`))
    }
  })

  it('rejects an unknown command and a missing -Q with exit 2', async () => {
    assert.equal((await scoutfs('frobnicate')).code, 2)
    const r = await scoutfs('mkfs', meta, data)
    assert.equal(r.code, 2)
    assert.match(r.stderr, /give -Q N/)
    const bad = await scoutfs('mkfs', '-Q', 'three', meta, data)
    assert.equal(bad.code, 2)
    assert.match(bad.stderr, /-Q takes a slot count/)
    const many = await scoutfs('mkfs', '-Q', '16', meta, data)
    assert.equal(many.code, 2)
    assert.match(many.stderr, /1 to 15 slots/)
  })

  it('mkfs formats, prints a summary, and check is clean', async () => {
    const r = await scoutfs('mkfs', '-Q', '0,127.0.0.1,7001', '-Q', '3', meta, data)
    assert.equal(r.code, 0, r.stderr)
    const fsid = /Created scoutfs filesystem ([0-9a-f]{16})/.exec(r.stdout)?.[1]
    assert.ok(fsid, r.stdout)
    assert.match(r.stdout, /4096 blocks of 64 KiB/)
    assert.match(r.stdout, /65536 blocks of 4 KiB/)
    const c = await scoutfs('check', meta, data)
    assert.equal(c.code, 0, c.stdout + c.stderr)
    assert.match(c.stdout, /clean/)
    const p = await scoutfs('print', meta)
    assert.equal(p.code, 0, p.stderr)
    assert.match(p.stdout, new RegExp(`fsid +${fsid}`))
    assert.match(p.stdout, /slot 0 +127\.0\.0\.1:7001/)
    assert.match(p.stdout, /quorum_slots +3/)
  })

  it('mkfs on a missing path says how to create one', async () => {
    const r = await scoutfs('mkfs', '-Q', '1', join(dir, 'nope.img'), data)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /ENOENT/)
    assert.match(r.stderr, /nope\.img does not exist/)
    assert.match(r.stderr, /truncate -s/)
  })

  it('mkfs on a tiny device names the minimum', async () => {
    truncateSync(meta, 1 << 20)
    const r = await scoutfs('mkfs', '-Q', '1', meta, data)
    assert.equal(r.code, 1)
    assert.match(r.stderr, /metadata device .* is 1\.0 MiB; it must be at least 64\.0 MiB/)
    truncateSync(meta, 256 << 20)
    truncateSync(data, 1 << 20)
    const d = await scoutfs('mkfs', '-Q', '1', meta, data)
    assert.equal(d.code, 1)
    assert.match(d.stderr, /data device .* it must be at least 16\.0 MiB/)
  })

  it('mkfs refuses an existing filesystem without --force', async () => {
    const first = await scoutfs('mkfs', '-Q', '1', meta, data)
    assert.equal(first.code, 0, first.stderr)
    const again = await scoutfs('mkfs', '-Q', '1', meta, data)
    assert.equal(again.code, 1)
    assert.match(again.stderr, /EEXIST: .* already holds scoutfs filesystem [0-9a-f]{16}; use --force/)
    const forced = await scoutfs('mkfs', '--force', '-Q', '1', meta, data)
    assert.equal(forced.code, 0, forced.stderr)
    const id = (s: string): string | undefined => /filesystem ([0-9a-f]{16})/.exec(s)?.[1]
    assert.notEqual(id(forced.stdout), id(first.stdout))
  })

  it('print and check refuse a device that is not scoutfs', async () => {
    const p = await scoutfs('print', meta)
    assert.equal(p.code, 1)
    assert.match(p.stderr, /no valid scoutfs super block/)
    const c = await scoutfs('check', meta, data)
    assert.equal(c.code, 1)
    assert.match(c.stderr, /no valid scoutfs super block/)
    const dataAsMeta = await scoutfs('mkfs', '-Q', '1', meta, data)
    assert.equal(dataAsMeta.code, 0)
    const swapped = await scoutfs('print', data)
    assert.equal(swapped.code, 1)
    assert.match(swapped.stderr, /is a scoutfs data device; give the metadata device/)
  })

  it('check reports a corrupt block and a foreign data device with exit 4', async () => {
    assert.equal((await scoutfs('mkfs', '-Q', '1', meta, data)).code, 0)
    // the meta_alloc root block: find it in print's output, then flip a byte in it
    const p = await scoutfs('print', meta)
    const blkno = Number(/meta_alloc +\d+ free, blkno (\d+)\./.exec(p.stdout)?.[1])
    assert.ok(blkno > 0, p.stdout)
    const fd = openSync(meta, 'r+')
    const b = Buffer.alloc(1)
    readSync(fd, b, 0, 1, blkno * 65536 + 100)
    b[0] = b[0]! ^ 0x40
    writeSync(fd, b, 0, 1, blkno * 65536 + 100)
    closeSync(fd)
    const c = await scoutfs('check', meta, data)
    assert.equal(c.code, 4, c.stdout + c.stderr)
    assert.match(c.stdout, new RegExp(`problem: meta_alloc: EIO: metadata block ${blkno} is corrupt: checksum`))
    assert.match(c.stdout, /problems? found/)

    const other = join(dir, 'other-meta.img')
    const otherData = join(dir, 'other-data.img')
    writeFileSync(other, '')
    writeFileSync(otherData, '')
    truncateSync(other, 128 << 20)
    truncateSync(otherData, 64 << 20)
    assert.equal((await scoutfs('mkfs', '-Q', '1', other, otherData)).code, 0)
    const mixed = await scoutfs('check', other, data)
    assert.equal(mixed.code, 4)
    assert.match(mixed.stdout, /belongs to filesystem [0-9a-f]+, not [0-9a-f]+/)
  })
})
