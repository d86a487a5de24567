/*
 * Block devices: a regular file or a block device holding the metadata or data of a
 * filesystem.  This layer knows only byte offsets; the block layer above it decides sizes.
 *
 * Two modes:
 *  - buffered: plain pread/pwrite through the page cache, fdatasync on flush.  For
 *    file-backed devices of a local cluster, where every agent shares one page cache.
 *  - direct:   O_DIRECT, every transfer bounced through 4 KiB-aligned buffers carved from a
 *    WebAssembly.Memory arena (whose base is page-aligned), so no host ever reads a stale
 *    copy of a block another host wrote.  Offsets and lengths must be 4 KiB multiples.
 *
 * Block devices default to direct, regular files to buffered.  Nothing here blocks the event
 * loop: all I/O is asynchronous.
 *
 * Writes behind.  A write of a direct device, and a large aligned write of a buffered one
 * opened to stream them (STREAM_MIN bytes or more, through a second, O_DIRECT handle on the
 * same file: the data device), is accepted once its bytes are copied into the bounce buffers
 * and completes in the background, as the kernel's page cache would take it: the caller (a
 * FUSE WRITE) answers while the device works, and a file's data is not cached twice (the FUSE
 * mount's page cache holds it already; with a second copy in the device file's, a sequential
 * writer on a machine short of memory paid the reclaim of both and wrote at half the speed of
 * a passthrough).  The invariants:
 *  - a read or write overlapping a write still in flight waits for it first (so no two
 *    transfers of one range are ever in flight, and a read sees every accepted write);
 *  - flush() waits for every write accepted before it, then syncs;
 *  - a failed write behind fails every flush after it, as a failed sync does (below);
 *  - the bounce buffers (AlignedPool) bound what is in flight: a writer waits for one.
 * The kernel keeps the two handles of a file coherent: an O_DIRECT write writes back and
 * drops the cached pages of its range, so buffered reads (here, or by another agent of a
 * local cluster sharing the page cache) see it.  A file system without O_DIRECT (tmpfs on
 * older kernels) keeps every write buffered.
 *
 * A buffered device starts a sync of its own after every WRITEBACK_BYTES written through the
 * page cache (one at a time, off the event loop), as the original starts writeback every 16
 * MiB: the kernel would otherwise hold a sequential writer's data in the page cache until the
 * commit's flush, which then waits for all of it at once (a commit after 1 GiB written
 * stalled the writer for up to a second).  A failed background sync fails every flush after
 * it: the kernel reports a lost write once, and a later sync that succeeds would hide it.
 */
import { promises as fsp, constants as fsc, writeSync, type Stats } from 'node:fs'
import { FsError, fromNodeError } from '../util/errors.js'

export const DIRECT_ALIGN = 4096
/** buffered writes up to this size are written synchronously (writeFully) */
const SYNC_WRITE_MAX = 64 * 1024
/** a buffered device starts a background sync after this many bytes written through the page cache */
const WRITEBACK_BYTES = 32 << 20
/** aligned writes of a buffered device of at least this many bytes go behind, with O_DIRECT */
const STREAM_MIN = 128 * 1024

export interface BlockDevice {
  readonly path: string
  readonly size: number
  readonly direct: boolean
  read(off: number, len: number): Promise<Buffer>
  /** read buf.length bytes at off into buf (file data into a buffer the caller reuses) */
  readInto(off: number, buf: Buffer): Promise<void>
  write(off: number, buf: Buffer): Promise<void>
  flush(): Promise<void>
  close(): Promise<void>
}

export interface OpenOptions {
  /** 'auto' (default): O_DIRECT on block devices, buffered on regular files */
  direct?: boolean | 'auto'
  readOnly?: boolean
  /**
   * A buffered device writes its large aligned spans behind, with O_DIRECT (the data device:
   * the FUSE mount's page cache holds a file's data already).  Not for the metadata device:
   * its commit writes and flushes at once, and the page cache was cheaper there (a commit of
   * a few blocks took 1 ms longer written direct).
   */
  streamLargeWrites?: boolean
}

/** Aligned bounce buffers for O_DIRECT, shared by every direct device in the process. */
class AlignedPool {
  static readonly SLOT = 1 << 20
  static readonly SLOTS = 16
  private readonly memory = new WebAssembly.Memory({
    initial: (AlignedPool.SLOT * AlignedPool.SLOTS) / 65536,
    maximum: (AlignedPool.SLOT * AlignedPool.SLOTS) / 65536,
  })
  private readonly free: number[] = []
  private readonly waiters: Array<(slot: number) => void> = []

  constructor() {
    for (let i = AlignedPool.SLOTS - 1; i >= 0; i--) this.free.push(i)
  }

  async get(): Promise<{ slot: number; buf: Buffer }> {
    const slot = this.free.pop() ?? (await new Promise<number>((res) => this.waiters.push(res)))
    return { slot, buf: Buffer.from(this.memory.buffer, slot * AlignedPool.SLOT, AlignedPool.SLOT) }
  }

  put(slot: number): void {
    const w = this.waiters.shift()
    if (w) w(slot)
    else this.free.push(slot)
  }
}

let pool: AlignedPool | undefined

/** a write in flight: bytes [off, end) of the device; settled resolves when it is done, never rejects */
interface InFlight {
  off: number
  end: number
  settled: Promise<void>
}

async function deviceSize(path: string, st: Stats): Promise<number> {
  if (st.isFile()) return st.size
  if (st.isBlockDevice()) {
    const major = Number(BigInt(st.rdev) >> 8n) & 0xfff
    const minor = (st.rdev & 0xff) | ((st.rdev >> 12) & 0xfff00)
    try {
      const sectors = await fsp.readFile(`/sys/dev/block/${major}:${minor}/size`, 'utf8')
      return Number(sectors.trim()) * 512
    } catch (e) {
      throw fromNodeError(e, `cannot learn the size of block device ${path}`)
    }
  }
  throw new FsError('ENODEV', `${path} is neither a regular file nor a block device`)
}

export class FileDevice implements BlockDevice {
  /** a write completed since the last sync began */
  private unflushed = false
  /** the sync running now, if any */
  private syncing: Promise<void> | undefined
  /** bytes written since the last sync began (buffered) */
  private sinceSync = 0
  /** a background sync or write failed: every flush fails with this */
  private lost: FsError | undefined
  /** writes accepted and still in flight, [off, end) each; settled never rejects */
  private behind: InFlight[] = []

  private constructor(
    readonly path: string,
    private readonly fh: fsp.FileHandle,
    readonly size: number,
    readonly direct: boolean,
    readonly readOnly: boolean,
    /** a buffered device's O_DIRECT handle on the same file, for its large aligned writes */
    private readonly streamFh: fsp.FileHandle | undefined,
  ) {}

  static async open(path: string, opts: OpenOptions = {}): Promise<FileDevice> {
    let st: Stats
    try {
      st = await fsp.stat(path)
    } catch (e) {
      throw fromNodeError(e, `cannot open device ${path}`)
    }
    const size = await deviceSize(path, st)
    const direct = opts.direct === undefined || opts.direct === 'auto' ? st.isBlockDevice() : opts.direct
    let flags = opts.readOnly ? fsc.O_RDONLY : fsc.O_RDWR
    if (direct) flags |= fsc.O_DIRECT
    let fh: fsp.FileHandle
    try {
      fh = await fsp.open(path, flags)
    } catch (e) {
      throw fromNodeError(e, `cannot open device ${path}`)
    }
    let streamFh: fsp.FileHandle | undefined
    if (opts.streamLargeWrites && !direct && !opts.readOnly && st.isFile()) {
      // EINVAL: the file system has no O_DIRECT; every write then stays buffered
      streamFh = await fsp.open(path, fsc.O_RDWR | fsc.O_DIRECT).catch(() => undefined)
    }
    return new FileDevice(path, fh, size, direct, !!opts.readOnly, streamFh)
  }

  /** A write in flight that overlaps [off, off + len), if any. */
  private overlapping(off: number, len: number): InFlight | undefined {
    return this.behind.find((w) => w.off < off + len && off < w.end)
  }

  /** Wait until no write in flight overlaps [off, off + len). */
  private async settleOverlap(off: number, len: number): Promise<void> {
    for (let w = this.overlapping(off, len); w; w = this.overlapping(off, len)) await w.settled
  }

  private checkRange(off: number, len: number): void {
    if (off < 0 || off + len > this.size)
      throw new FsError('EIO', `${this.path}: I/O at ${off}+${len} is past the device end ${this.size}`)
  }

  private check(off: number, len: number): void {
    this.checkRange(off, len)
    if (this.direct && (off % DIRECT_ALIGN || len % DIRECT_ALIGN))
      throw new FsError('EINVAL', `${this.path}: direct I/O at ${off}+${len} is not ${DIRECT_ALIGN}-aligned`)
  }

  async read(off: number, len: number): Promise<Buffer> {
    this.check(off, len)
    const out = Buffer.allocUnsafe(len)
    await this.readInto(off, out)
    return out
  }

  /** direct I/O reads aligned spans through the bounce buffers and copies the part asked for */
  async readInto(off: number, out: Buffer): Promise<void> {
    const len = out.length
    this.checkRange(off, len)
    if (this.behind.length) await this.settleOverlap(off, len)
    try {
      if (!this.direct) {
        await this.readFully(out, 0, len, off)
        return
      }
      pool ??= new AlignedPool()
      const { slot, buf } = await pool.get()
      try {
        for (let done = 0; done < len;) {
          const at = off + done
          const start = at - (at % DIRECT_ALIGN)
          const span = Math.min(AlignedPool.SLOT, Math.ceil((off + len - start) / DIRECT_ALIGN) * DIRECT_ALIGN)
          await this.readFully(buf, 0, span, start)
          const n = Math.min(len - done, span - (at - start))
          buf.copy(out, done, at - start, at - start + n)
          done += n
        }
      } finally {
        pool.put(slot)
      }
    } catch (e) {
      throw fromNodeError(e, `${this.path}: read at ${off}+${len}`)
    }
  }

  private async readFully(buf: Buffer, bufOff: number, len: number, pos: number): Promise<void> {
    for (let done = 0; done < len;) {
      const { bytesRead } = await this.fh.read(buf, bufOff + done, len - done, pos + done)
      if (bytesRead === 0) {
        buf.fill(0, bufOff + done, bufOff + len) // sparse tail of a short file
        return
      }
      done += bytesRead
    }
  }

  /**
   * A small buffered write only copies into the page cache: done here, it costs less than
   * the trip to libuv's thread pool and back (a 4 KiB file's data, a 64 KiB metadata block of
   * a commit).
   */
  private writeSyncFully(buf: Buffer, pos: number): void {
    try {
      for (let done = 0; done < buf.length;) done += writeSync(this.fh.fd, buf, done, buf.length - done, pos + done)
    } catch (e) {
      throw fromNodeError(e, `${this.path}: write at ${pos}+${buf.length}`)
    }
  }

  private async writeFully(fh: fsp.FileHandle, buf: Buffer, bufOff: number, len: number, pos: number): Promise<void> {
    for (let done = 0; done < len;) {
      const { bytesWritten } = await fh.write(buf, bufOff + done, len - done, pos + done)
      done += bytesWritten
    }
  }

  async write(off: number, data: Buffer): Promise<void> {
    if (this.readOnly) throw new FsError('EROFS', `${this.path} is open read-only`)
    this.check(off, data.length)
    const len = data.length
    // inline, so that nothing runs between the last check and the write's registration below
    for (let w = this.overlapping(off, len); w; w = this.overlapping(off, len)) await w.settled
    if (this.direct) return this.writeBehind(this.fh, off, data)
    if (this.streamFh && len >= STREAM_MIN && off % DIRECT_ALIGN === 0 && len % DIRECT_ALIGN === 0)
      return this.writeBehind(this.streamFh, off, data)
    if (len <= SYNC_WRITE_MAX) this.writeSyncFully(data, off)
    else {
      const w = this.inFlight(off, len)
      try {
        await this.writeFully(this.fh, data, 0, len, off)
      } catch (e) {
        throw fromNodeError(e, `${this.path}: write at ${off}+${len}`)
      } finally {
        w.done()
      }
    }
    this.unflushed = true
    this.sinceSync += len
    // a failure is kept in `lost` by flush() itself: every later flush fails with it
    if (this.sinceSync >= WRITEBACK_BYTES && !this.syncing) this.flush().catch(() => undefined)
  }

  /** Register [off, off + len) as in flight until done() is called. */
  private inFlight(off: number, len: number): InFlight & { done(): void } {
    let settle!: () => void
    const w = { off, end: off + len, settled: new Promise<void>((r) => (settle = r)), done: () => undefined }
    w.done = () => {
      this.behind.splice(this.behind.indexOf(w), 1)
      settle()
    }
    this.behind.push(w)
    return w
  }

  /**
   * Accept a write behind: register its slot-sized parts as in flight at once, then copy
   * each into a bounce buffer and write it from there through `fh` (O_DIRECT) in the
   * background; returns once the last part is copied.  A failure is kept in `lost`.
   */
  private async writeBehind(fh: fsp.FileHandle, off: number, data: Buffer): Promise<void> {
    const parts: Array<InFlight & { done(): void }> = []
    for (let at = off; at < off + data.length; at += AlignedPool.SLOT)
      parts.push(this.inFlight(at, Math.min(AlignedPool.SLOT, off + data.length - at)))
    pool ??= new AlignedPool()
    for (const w of parts) {
      const { slot, buf } = await pool.get()
      const n = w.end - w.off
      data.copy(buf, 0, w.off - off, w.off - off + n)
      this.writeFully(fh, buf, 0, n, w.off)
        .then(
          () => {
            this.unflushed = true
          },
          (e: unknown) => {
            this.lost ??= fromNodeError(e, `${this.path}: write at ${w.off}+${n}`)
          },
        )
        .finally(() => {
          pool!.put(slot)
          w.done()
        })
    }
  }

  /**
   * Make every write accepted before this call durable: wait for those still in flight, then
   * sync.  Nothing to do when this device completed no write since the last sync began (a
   * metadata-only commit does not flush the data device) but to wait for a sync still
   * running.  The flag is set when a write completes and cleared as a sync starts, so a write
   * that completes during a sync is flushed by the next call, and one that completed before
   * it is covered by it.  Writes accepted after this call are not waited for: a flush ends
   * even while a writer keeps streaming.
   */
  flush(): Promise<void> {
    if (this.readOnly) return Promise.resolve()
    if (!this.behind.length) return this.sync()
    return Promise.all(this.behind.map((w) => w.settled)).then(() => this.sync())
  }

  private sync(): Promise<void> {
    if (this.lost) return Promise.reject(this.lost)
    if (!this.unflushed) return this.syncing ?? Promise.resolve()
    this.unflushed = false
    this.sinceSync = 0
    const p = this.fh.datasync().then(
      () => undefined,
      (e: unknown) => {
        this.lost ??= fromNodeError(e, `${this.path}: flush`)
        throw this.lost
      },
    )
    const done = p.finally(() => {
      if (this.syncing === done) this.syncing = undefined
    })
    this.syncing = done
    return done
  }

  /** Close the device once the writes in flight are done (a failed one is lost: flush first). */
  async close(): Promise<void> {
    await Promise.all(this.behind.map((w) => w.settled))
    await this.streamFh?.close()
    await this.fh.close()
  }
}
