/*
 * FileDevice: buffered I/O on regular files, and O_DIRECT on a real block device (a loop
 * device over a temp file).  The loop tests need root and the loop driver; without them they
 * are skipped with the reason printed.  The loop device is always detached afterwards.
 */
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { constants as fsc, promises as fsp } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, join } from 'node:path'
import { promisify } from 'node:util'
import { DIRECT_ALIGN, FileDevice } from '../../node-agent/src/storage/device.js'
import { FsError, type Errno } from '../../node-agent/src/util/errors.js'
import { settles } from '../helpers/settles.js'

const run = promisify(execFile)
const KiB = 1024
const MiB = 1024 * KiB

/** `p` rejects with an FsError of `code` whose message matches `re` (when given). */
async function rejectsWith(p: Promise<unknown>, code: Errno, re?: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof FsError, `expected an FsError, got ${String(e)}`)
    assert.equal(e.code, code, e.message)
    if (re) assert.match(e.message, re)
    return true
  })
}

/** Open, run `fn`, and close whatever happens. */
async function withDevice<T>(
  path: string,
  opts: Parameters<typeof FileDevice.open>[1],
  fn: (d: FileDevice) => Promise<T>,
): Promise<T> {
  const d = await FileDevice.open(path, opts)
  try {
    return await fn(d)
  } finally {
    await d.close()
  }
}

async function readFileAt(path: string, off: number, len: number): Promise<Buffer> {
  const fh = await fsp.open(path, 'r')
  try {
    const b = Buffer.alloc(len)
    const { bytesRead } = await fh.read(b, 0, len, off)
    assert.equal(bytesRead, len, `short read of ${path} at ${off}`)
    return b
  } finally {
    await fh.close()
  }
}

describe('FileDevice on a regular file', function () {
  let dir: string

  before(async () => {
    dir = await fsp.mkdtemp(join(tmpdir(), 'scoutfs-device-'))
  })
  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true })
  })

  async function sizedFile(name: string, size: number): Promise<string> {
    const p = join(dir, name)
    await fsp.writeFile(p, '')
    await fsp.truncate(p, size)
    return p
  }

  it('round-trips buffered writes through read, flush and the file itself', async () => {
    const path = await sizedFile('rt.img', 4 * MiB)
    const writes = [
      { off: 0, buf: randomBytes(4 * KiB) },
      { off: 64 * KiB, buf: randomBytes(64 * KiB) },
      { off: 1 * MiB + 123, buf: randomBytes(777) }, // buffered I/O takes any offset and length
      { off: 4 * MiB - 10, buf: randomBytes(10) }, // up to the last byte
    ]
    await withDevice(path, {}, async (d) => {
      assert.equal(d.direct, false, 'a regular file defaults to buffered I/O')
      assert.equal(d.path, path)
      for (const w of writes) await d.write(w.off, w.buf)
      for (const w of writes) assert.deepEqual(await d.read(w.off, w.buf.length), w.buf, `read back at ${w.off}`)
      // a read spanning written data and holes sees both
      const span = await d.read(64 * KiB - 16, 32)
      assert.deepEqual(span.subarray(0, 16), Buffer.alloc(16))
      assert.deepEqual(span.subarray(16), writes[1]!.buf.subarray(0, 16))
      await d.flush()
    })
    for (const w of writes)
      assert.deepEqual(await readFileAt(path, w.off, w.buf.length), w.buf, `file bytes at ${w.off}`)
    // and a fresh open sees the same
    await withDevice(path, {}, async (d) => {
      for (const w of writes) assert.deepEqual(await d.read(w.off, w.buf.length), w.buf)
    })
  })

  it('syncs in the background after every 32 MiB written; a failed background sync fails every flush after it', async () => {
    const path = await sizedFile('wb.img', 80 * MiB)
    await withDevice(path, {}, async (d) => {
      // count the device's syncs (the kernel's fdatasync, on its file handle)
      const fh = (d as unknown as { fh: { datasync(): Promise<void> } }).fh
      const real = fh.datasync.bind(fh)
      let syncs = 0
      let fail = false
      fh.datasync = async () => {
        syncs++
        if (fail) throw Object.assign(new Error('injected writeback error'), { code: 'EIO' })
        return real()
      }
      // 64 KiB writes go through the page cache (larger aligned ones would go behind, direct)
      const chunk = randomBytes(64 * KiB)
      const PER_32M = (32 * MiB) / chunk.length
      for (let i = 0; i < PER_32M - 1; i++) await d.write(i * chunk.length, chunk)
      assert.equal(syncs, 0, 'no sync before 32 MiB were written')
      await d.write((PER_32M - 1) * chunk.length, chunk)
      assert.equal(syncs, 1, 'the 32nd MiB started a sync, without a flush')
      await d.flush() // waits for it (nothing written since it began)
      assert.equal(syncs, 1)
      // the kernel reports a lost write to one sync only: the flush after a failed background
      // sync must fail, although its own sync would succeed
      fail = true
      for (let i = PER_32M; i < 2 * PER_32M; i++) await d.write(i * chunk.length, chunk)
      assert.equal(syncs, 2)
      fail = false
      await new Promise((r) => setImmediate(r))
      await rejectsWith(d.flush(), 'EIO', /injected writeback error|wb\.img/)
      await rejectsWith(d.flush(), 'EIO')
    })
  })

  /** The device's O_DIRECT handle, its writes held until release() (or failed with `fail`). */
  function holdStreamWrites(d: FileDevice): { release(fail?: string): void; started(): number } {
    const sfh = (d as unknown as { streamFh?: FileHandle }).streamFh
    assert.ok(sfh, 'the device has an O_DIRECT handle for its large writes')
    const real = sfh.write.bind(sfh) as (
      b: Buffer,
      o: number,
      l: number,
      p: number,
    ) => Promise<{ bytesWritten: number }>
    let gate!: (fail?: string) => void
    const opened = new Promise<string | undefined>((r) => (gate = r))
    let started = 0
    ;(sfh as unknown as { write: typeof real }).write = async (b, o, l, p) => {
      started++
      const fail = await opened
      if (fail) throw Object.assign(new Error(fail), { code: 'EIO' })
      return real(b, o, l, p)
    }
    return { release: (fail) => gate(fail), started: () => started }
  }

  /** Whether `p` is still pending after 20 turns of the event loop. */
  const pending = async (p: Promise<unknown>): Promise<boolean> => !(await settles(p, 20))

  it('writes large aligned spans behind, through O_DIRECT: reads, overlapping writes and flushes wait for them', async () => {
    const path = await sizedFile('behind.img', 16 * MiB)
    const other = await fsp.open(path, 'r') // another reader of the file (an agent sharing the page cache)
    try {
      await withDevice(path, {}, async (d) => {
        const plain = (d as unknown as { streamFh?: FileHandle }).streamFh
        assert.equal(plain, undefined, 'only a device opened to stream large writes has an O_DIRECT handle')
      })
      await withDevice(path, { streamLargeWrites: true }, async (d) => {
        const sfh = (d as unknown as { streamFh?: FileHandle }).streamFh
        assert.ok(sfh, 'a regular file on this file system opens an O_DIRECT handle')
        const flags = /flags:\s*(\d+)/.exec(await fsp.readFile(`/proc/self/fdinfo/${sfh.fd}`, 'utf8'))
        assert.ok(flags && (parseInt(flags[1]!, 8) & fsc.O_DIRECT) !== 0, 'the handle is O_DIRECT')
        // the other reader caches the old (zero) bytes of the range
        assert.deepEqual((await other.read(Buffer.alloc(4 * KiB), 0, 4 * KiB, 3 * MiB)).buffer, Buffer.alloc(4 * KiB))
        const hold = holdStreamWrites(d)
        const big = randomBytes(2 * MiB + 256 * KiB) // three bounce buffers
        const small = randomBytes(4 * KiB)
        let read: Promise<Buffer>, overlapping: Promise<void>, flushed: Promise<void>
        try {
          await d.write(2 * MiB, big) // accepted while its transfers are held
          assert.equal(hold.started(), 3, 'three transfers in flight')
          read = d.read(3 * MiB, 8 * KiB)
          overlapping = d.write(4 * MiB + 4 * KiB, small) // buffered, inside the third part
          const apart = d.write(8 * MiB, small) // touches nothing in flight
          flushed = d.flush()
          assert.ok(await pending(read), 'a read of a range in flight waits for it')
          assert.ok(await pending(overlapping), 'an overlapping write waits for the one in flight')
          assert.ok(!(await pending(apart)), 'a write elsewhere does not wait')
          assert.ok(await pending(flushed), 'a flush waits for the writes in flight')
        } finally {
          hold.release() // else the device's close would wait for them forever
        }
        assert.deepEqual(await read, big.subarray(MiB, MiB + 8 * KiB), 'the read sees the write it waited for')
        await overlapping
        await flushed
        await d.flush()
        const want = Buffer.from(big)
        small.copy(want, 2 * MiB + 4 * KiB)
        assert.deepEqual(await d.read(2 * MiB, want.length), want, 'the later, overlapping write is on top')
        assert.deepEqual(await readFileAt(path, 2 * MiB, want.length), want, 'the file holds both')
        const seen = Buffer.alloc(4 * KiB)
        await other.read(seen, 0, 4 * KiB, 3 * MiB)
        assert.deepEqual(seen, big.subarray(MiB, MiB + 4 * KiB), "the other reader's cached pages were dropped")
      })
    } finally {
      await other.close()
    }
  })

  it('a failed write behind fails every flush after it, naming the range', async () => {
    const path = await sizedFile('behind-eio.img', 4 * MiB)
    await withDevice(path, { streamLargeWrites: true }, async (d) => {
      const hold = holdStreamWrites(d)
      await d.write(MiB, randomBytes(MiB)) // accepted: its failure comes later, as the kernel's writeback errors do
      hold.release('injected write error')
      await rejectsWith(d.flush(), 'EIO', /write at 1048576\+1048576/)
      await d.write(0, randomBytes(4 * KiB))
      await rejectsWith(d.flush(), 'EIO', /injected write error|behind-eio\.img/)
    })
  })

  it('reports the file size, to the byte', async () => {
    for (const size of [1, 4 * KiB, 64 * MiB + 123]) {
      const path = await sizedFile(`size-${size}.img`, size)
      await withDevice(path, {}, async (d) => assert.equal(d.size, size))
    }
  })

  it('refuses I/O past the end of the device with EIO', async () => {
    const size = 1 * MiB
    const path = await sizedFile('end.img', size)
    await withDevice(path, {}, async (d) => {
      assert.equal((await d.read(size - 4 * KiB, 4 * KiB)).length, 4 * KiB, 'the last block is readable')
      await rejectsWith(d.read(size - 4 * KiB, 4 * KiB + 1), 'EIO', /past the device end/)
      await rejectsWith(d.read(size, 1), 'EIO', /past the device end/)
      await rejectsWith(d.read(-4096, 4096), 'EIO')
      await rejectsWith(d.write(size - 10, Buffer.alloc(11)), 'EIO', /past the device end/)
      await rejectsWith(d.write(2 * size, Buffer.alloc(1)), 'EIO', /past the device end/)
    })
    assert.equal((await fsp.stat(path)).size, size, 'a refused write does not grow the file')
  })

  it('fails with ENOENT naming the path when the device does not exist', async () => {
    const path = join(dir, 'no-such-device.img')
    await rejectsWith(FileDevice.open(path), 'ENOENT', new RegExp(path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')))
  })

  it('fails with ENODEV on a directory', async () => {
    const path = join(dir, 'a-directory')
    await fsp.mkdir(path)
    await rejectsWith(FileDevice.open(path), 'ENODEV', /neither a regular file nor a block device/)
  })

  it('refuses writes with EROFS when opened read-only', async () => {
    const path = await sizedFile('ro.img', 1 * MiB)
    await withDevice(path, { readOnly: true }, async (d) => {
      await rejectsWith(d.write(0, Buffer.alloc(4 * KiB)), 'EROFS')
      assert.deepEqual(await d.read(0, 4 * KiB), Buffer.alloc(4 * KiB))
      await d.flush() // a no-op, not an error
    })
  })
})

describe('FileDevice with O_DIRECT on a loop device', function () {
  const FILE_SIZE = 64 * MiB
  let dir: string | undefined
  let backing = ''
  let loop: string | undefined

  async function detach(): Promise<void> {
    if (loop) {
      const l = loop
      loop = undefined
      await run('losetup', ['-d', l]).catch((e: unknown) => console.log(`      could not detach ${l}: ${String(e)}`))
    }
  }

  before(async function () {
    dir = await fsp.mkdtemp(join(tmpdir(), 'scoutfs-loop-'))
    backing = join(dir, 'backing.img')
    await fsp.writeFile(backing, '')
    await fsp.truncate(backing, FILE_SIZE)
    try {
      const { stdout } = await run('losetup', ['-f', '--show', backing])
      loop = stdout.trim()
      if (!loop.startsWith('/dev/')) throw new Error(`losetup printed ${JSON.stringify(stdout)}`)
    } catch (e) {
      await detach()
      const why = e instanceof Error ? e.message.split('\n')[0] : String(e)
      console.log(`      skipping O_DIRECT loop device tests: cannot attach a loop device (${why})`)
      this.skip()
    }
  })

  after(async () => {
    await detach()
    if (dir) await fsp.rm(dir, { recursive: true, force: true })
  })

  it('opens a block device with O_DIRECT and the size sysfs reports, equal to the backing file', async () => {
    const name = basename(loop!)
    const sectors = Number((await fsp.readFile(`/sys/block/${name}/size`, 'utf8')).trim())
    assert.equal(sectors * 512, FILE_SIZE, 'sysfs size of the loop device')
    assert.equal((await fsp.stat(backing)).size, FILE_SIZE)
    const bf = await fsp.readFile(`/sys/block/${name}/loop/backing_file`, 'utf8').catch(() => undefined)
    if (bf !== undefined) assert.equal(bf.trim(), backing, 'the loop device is backed by our file')
    await withDevice(loop!, {}, async (d) => {
      assert.equal(d.direct, true, "'auto' means O_DIRECT on a block device")
      assert.equal(d.size, FILE_SIZE)
    })
  })

  it('writes and reads 64 KiB and 4 KiB blocks at aligned offsets, visible in the backing file', async () => {
    const writes = [
      { off: 0, buf: randomBytes(64 * KiB) },
      { off: 1 * MiB, buf: randomBytes(64 * KiB) },
      { off: 16 * 4 * KiB, buf: randomBytes(4 * KiB) }, // SUPER_BLKNOS[0] * 4 KiB
      { off: 17 * 4 * KiB, buf: randomBytes(4 * KiB) },
      { off: 3 * MiB + 4 * KiB, buf: randomBytes(2 * MiB + 4 * KiB) }, // more than one bounce buffer
      { off: FILE_SIZE - 4 * KiB, buf: randomBytes(4 * KiB) }, // the last block
    ]
    await withDevice(loop!, {}, async (d) => {
      assert.equal(d.direct, true)
      for (const w of writes) await d.write(w.off, w.buf)
      for (const w of writes) assert.deepEqual(await d.read(w.off, w.buf.length), w.buf, `read back at ${w.off}`)
      // several transfers in flight at once share the bounce buffers correctly
      const again = await Promise.all(writes.map((w) => d.read(w.off, w.buf.length)))
      again.forEach((b, i) => assert.deepEqual(b, writes[i]!.buf, `concurrent read ${i}`))
      await d.flush()
    })
    for (const w of writes)
      assert.deepEqual(await readFileAt(backing, w.off, w.buf.length), w.buf, `backing file bytes at ${w.off}`)
    // a fresh O_DIRECT open reads the device, not a cache of this process
    await withDevice(loop!, {}, async (d) => {
      for (const w of writes) assert.deepEqual(await d.read(w.off, w.buf.length), w.buf)
    })
  })

  it('refuses unaligned offsets and lengths with EINVAL, and I/O past the end with EIO', async () => {
    await withDevice(loop!, {}, async (d) => {
      await rejectsWith(d.read(512, 4 * KiB), 'EINVAL', /not 4096-aligned/)
      await rejectsWith(d.read(4 * KiB + 1, 4 * KiB), 'EINVAL')
      await rejectsWith(d.read(0, 1000), 'EINVAL')
      await rejectsWith(d.write(100, Buffer.alloc(4 * KiB)), 'EINVAL', /not 4096-aligned/)
      await rejectsWith(d.write(8 * KiB, Buffer.alloc(DIRECT_ALIGN + 512)), 'EINVAL')
      await rejectsWith(d.read(FILE_SIZE, 4 * KiB), 'EIO', /past the device end/)
      await rejectsWith(d.write(FILE_SIZE - 4 * KiB, Buffer.alloc(8 * KiB)), 'EIO', /past the device end/)
    })
  })
})
