/*
 * In-memory block devices for tests.
 *
 *  - MemDevice: a fixed-size, sparse in-memory device (unwritten bytes read as zero).
 *  - CrashDevice: a device with a volatile write cache.  Reads see every write issued (like a
 *    page cache); flush() makes the issued writes durable.  It can be armed to lose power after
 *    K more device operations (write or flush calls): from then on every operation throws
 *    EIO.  powerLoss(rng) then gives the device as it could be found after the power came
 *    back: the durable image plus, for each write issued since the last flush and
 *    independently, all of it, none of it, or a torn part of it (a prefix of its 512-byte
 *    sectors, or a random subset of them).
 *
 * Both keep their contents as a map of immutable 64 KiB chunks: a write replaces the chunks
 * it touches, so snapshots (durable images, recovered devices) are cheap map copies.
 */
import type { BlockDevice } from '../../node-agent/src/storage/device.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import type { Rng } from './rng.js'

export const SECTOR_SIZE = 512
const CHUNK_SHIFT = 16
const CHUNK = 1 << CHUNK_SHIFT

type Image = Map<number, Buffer>

function checkRange(path: string, size: number, off: number, len: number): void {
  if (!Number.isInteger(off) || !Number.isInteger(len) || off < 0 || len < 0 || off + len > size)
    throw new FsError('EIO', `${path}: I/O at ${off}+${len} is past the device end ${size}`)
}

function readImage(img: Image, off: number, len: number): Buffer {
  const out = Buffer.alloc(len)
  let done = 0
  while (done < len) {
    const pos = off + done
    const ci = Math.floor(pos / CHUNK)
    const co = pos - ci * CHUNK
    const n = Math.min(CHUNK - co, len - done)
    const c = img.get(ci)
    if (c) c.copy(out, done, co, co + n)
    done += n
  }
  return out
}

/** Write `data` into the image, replacing (never modifying) the chunks it touches. */
function writeImage(img: Image, off: number, data: Buffer): void {
  let done = 0
  while (done < data.length) {
    const pos = off + done
    const ci = Math.floor(pos / CHUNK)
    const co = pos - ci * CHUNK
    const n = Math.min(CHUNK - co, data.length - done)
    const c = Buffer.alloc(CHUNK)
    if (n < CHUNK) img.get(ci)?.copy(c)
    data.copy(c, co, done, done + n)
    img.set(ci, c)
    done += n
  }
}

export interface IoCounters {
  reads: number
  writes: number
  flushes: number
  bytesWritten: number
}

/** A sparse in-memory device of a fixed size. */
export class MemDevice implements BlockDevice {
  readonly direct = false
  readonly counters: IoCounters = { reads: 0, writes: 0, flushes: 0, bytesWritten: 0 }
  /** called before every write is applied (tests use it to watch what is written where) */
  onWrite: ((off: number, len: number) => void) | undefined
  private closed = false
  private readonly img: Image

  constructor(
    readonly size: number,
    readonly path = 'memdev',
    image?: Map<number, Buffer>,
  ) {
    if (!Number.isInteger(size) || size < 0) throw new Error(`bad device size ${size}`)
    this.img = image ? new Map(image) : new Map()
  }

  private live(): void {
    if (this.closed) throw new FsError('EIO', `${this.path}: device is closed`)
  }

  async read(off: number, len: number): Promise<Buffer> {
    this.live()
    checkRange(this.path, this.size, off, len)
    this.counters.reads++
    return readImage(this.img, off, len)
  }

  async readInto(off: number, buf: Buffer): Promise<void> {
    ;(await this.read(off, buf.length)).copy(buf)
  }

  async write(off: number, buf: Buffer): Promise<void> {
    this.live()
    checkRange(this.path, this.size, off, buf.length)
    this.onWrite?.(off, buf.length)
    this.counters.writes++
    this.counters.bytesWritten += buf.length
    writeImage(this.img, off, buf)
  }

  async flush(): Promise<void> {
    this.live()
    this.counters.flushes++
  }

  async close(): Promise<void> {
    this.closed = true
  }

  /** An independent copy of this device (cheap: chunks are shared until written). */
  clone(path = this.path): MemDevice {
    return new MemDevice(this.size, path, this.img)
  }

  /** Synchronous raw access for tests that corrupt or inspect the image. */
  peek(off: number, len: number): Buffer {
    checkRange(this.path, this.size, off, len)
    return readImage(this.img, off, len)
  }
  poke(off: number, data: Buffer): void {
    checkRange(this.path, this.size, off, data.length)
    writeImage(this.img, off, data)
  }
  /** Flip bit `bit` (0..7) of the byte at `off`. */
  flipBit(off: number, bit: number): void {
    const b = this.peek(off, 1)
    b[0]! ^= 1 << bit
    this.poke(off, b)
  }

  /** A copy of the chunk map (chunks are immutable, so this is a snapshot). */
  image(): Map<number, Buffer> {
    return new Map(this.img)
  }

  /** Bytes of memory held by written chunks. */
  get residentBytes(): number {
    return this.img.size * CHUNK
  }
}

export interface PendingWrite {
  off: number
  data: Buffer
}

/** What powerLoss did to each pending write. */
export type WriteFate =
  | { kind: 'applied' }
  | { kind: 'dropped' }
  | { kind: 'torn-prefix'; sectors: number; of: number }
  | { kind: 'torn-subset'; sectors: number; of: number }

export class CrashDevice implements BlockDevice {
  readonly direct = false
  /** device operations (write and flush calls) that succeeded */
  ops = 0
  readonly counters: IoCounters = { reads: 0, writes: 0, flushes: 0, bytesWritten: 0 }
  /** called for every write that is issued (after the power check, before it is applied) */
  onWrite: ((off: number, len: number) => void) | undefined
  /** the fates of the pending writes at the last powerLoss() */
  lastFates: Array<{ off: number; len: number; fate: WriteFate }> = []

  private durable: Image
  private current: Image
  private pendingWrites: PendingWrite[] = []
  private opsLeft: number | undefined
  private lost = false

  constructor(
    readonly size: number,
    readonly path = 'crashdev',
    image?: Map<number, Buffer>,
  ) {
    this.durable = image ? new Map(image) : new Map()
    this.current = new Map(this.durable)
  }

  /** A crash device whose durable contents are those of `dev`. */
  static from(dev: MemDevice, path = dev.path): CrashDevice {
    return new CrashDevice(dev.size, path, dev.image())
  }

  /** Lose power after `ops` more successful write/flush calls (0: the very next one fails). */
  armPowerLoss(ops: number): void {
    if (!Number.isInteger(ops) || ops < 0) throw new Error(`bad op count ${ops}`)
    this.opsLeft = ops
  }

  disarm(): void {
    this.opsLeft = undefined
  }

  get powerLost(): boolean {
    return this.lost
  }

  /** writes issued since the last flush, in issue order */
  get pending(): readonly PendingWrite[] {
    return this.pendingWrites
  }

  private dead(): FsError {
    return new FsError('EIO', `${this.path}: power lost`)
  }

  /** Count one write or flush; throws once the power is gone. */
  private op(): void {
    if (this.lost) throw this.dead()
    if (this.opsLeft !== undefined) {
      if (this.opsLeft === 0) {
        this.lost = true
        throw this.dead()
      }
      this.opsLeft--
    }
    this.ops++
  }

  async read(off: number, len: number): Promise<Buffer> {
    if (this.lost) throw this.dead()
    checkRange(this.path, this.size, off, len)
    this.counters.reads++
    return readImage(this.current, off, len)
  }

  async readInto(off: number, buf: Buffer): Promise<void> {
    ;(await this.read(off, buf.length)).copy(buf)
  }

  async write(off: number, buf: Buffer): Promise<void> {
    checkRange(this.path, this.size, off, buf.length)
    this.op()
    this.onWrite?.(off, buf.length)
    this.counters.writes++
    this.counters.bytesWritten += buf.length
    const data = Buffer.from(buf)
    this.pendingWrites.push({ off, data })
    writeImage(this.current, off, data)
  }

  async flush(): Promise<void> {
    this.op()
    this.counters.flushes++
    this.durable = new Map(this.current)
    this.pendingWrites = []
  }

  async close(): Promise<void> {}

  /** The durable image alone, as a device (what a crash that drops every pending write leaves). */
  durableImage(path = `${this.path}-durable`): MemDevice {
    return new MemDevice(this.size, path, this.durable)
  }

  /**
   * The device as found after a power loss now: the durable image plus each pending write
   * applied whole, dropped, or torn, chosen independently per write by `rng` (or by `choose`).
   * The power stays lost on this device; the result is a new device.
   */
  powerLoss(rng: Rng, choose?: (w: PendingWrite, i: number) => WriteFate['kind']): MemDevice {
    this.lost = true
    const img = new Map(this.durable)
    this.lastFates = []
    this.pendingWrites.forEach((w, i) => {
      const sectors = Math.ceil(w.data.length / SECTOR_SIZE)
      let kind = choose ? choose(w, i) : (['applied', 'dropped', 'torn-prefix', 'torn-subset'] as const)[rng.int(4)]!
      if (sectors < 2 && (kind === 'torn-prefix' || kind === 'torn-subset')) kind = rng.bool() ? 'applied' : 'dropped'
      let fate: WriteFate
      if (kind === 'applied') {
        writeImage(img, w.off, w.data)
        fate = { kind }
      } else if (kind === 'dropped') {
        fate = { kind }
      } else if (kind === 'torn-prefix') {
        const n = rng.range(1, sectors - 1)
        writeImage(img, w.off, w.data.subarray(0, n * SECTOR_SIZE))
        fate = { kind, sectors: n, of: sectors }
      } else {
        // a random proper, non-empty subset of the sectors
        let picked: number[] = []
        while (picked.length === 0 || picked.length === sectors) {
          picked = []
          for (let s = 0; s < sectors; s++) if (rng.bool()) picked.push(s)
        }
        for (const s of picked)
          writeImage(
            img,
            w.off + s * SECTOR_SIZE,
            w.data.subarray(s * SECTOR_SIZE, Math.min((s + 1) * SECTOR_SIZE, w.data.length)),
          )
        fate = { kind, sectors: picked.length, of: sectors }
      }
      this.lastFates.push({ off: w.off, len: w.data.length, fate })
    })
    return new MemDevice(this.size, `${this.path}-recovered`, img)
  }
}
