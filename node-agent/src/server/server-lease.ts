/*
 * The server's lease on the devices: the server heartbeats a counter into quorum slot 0's
 * block; a server starting on devices whose block says another server is running waits a few
 * heartbeat periods and refuses (EBUSY) if the counter moves, so two agents never both write
 * the super block.  A clean stop marks the block stopped; after a crash the counter stops
 * moving and the next server takes over once it has seen that.
 *
 * This is the single-server precursor of quorum election (DESIGN §11): the same block will
 * carry election terms; the operator's fencing replaces the waiting.
 */
import { hostname } from 'node:os'
import type { BlockDevice } from '../storage/device.js'
import { blockChecksum, sealBlock } from '../storage/block.js'
import { FsError } from '../util/errors.js'
import {
  HDR_CRC,
  HDR_MAGIC,
  HDR_SIZE,
  Magic,
  QUORUM_BLKNO,
  SMALL_BLOCK_SIZE,
  readHeader,
  readU64,
  writeU64,
} from '../storage/format.js'

export const HEARTBEAT_MS = 500
const STATE_STOPPED = 0
const STATE_RUNNING = 1

interface LeaseBlock {
  state: number
  rid: number
  counter: number
  pid: number
  host: string
}

function encode(fsid: bigint, l: LeaseBlock): Buffer {
  const b = Buffer.alloc(SMALL_BLOCK_SIZE)
  b.writeUInt32LE(l.state, HDR_SIZE)
  b.writeUInt32LE(l.pid, HDR_SIZE + 4)
  writeU64(b, HDR_SIZE + 8, l.rid)
  writeU64(b, HDR_SIZE + 16, l.counter)
  const h = Buffer.from(l.host.slice(0, 64), 'utf8')
  b.writeUInt8(h.length, HDR_SIZE + 24)
  h.copy(b, HDR_SIZE + 25)
  sealBlock(b, fsid, Magic.QUORUM, QUORUM_BLKNO, l.counter)
  return b
}

function decode(fsid: bigint, b: Buffer): LeaseBlock | undefined {
  // magic and checksum before the header's u64 fields, which a torn block may have out of range
  if (b.readUInt32LE(HDR_MAGIC) !== Magic.QUORUM || b.readUInt32LE(HDR_CRC) !== blockChecksum(b)) return undefined
  if (readHeader(b).fsid !== fsid) return undefined
  return {
    state: b.readUInt32LE(HDR_SIZE),
    pid: b.readUInt32LE(HDR_SIZE + 4),
    rid: readU64(b, HDR_SIZE + 8),
    counter: readU64(b, HDR_SIZE + 16),
    host: b.subarray(HDR_SIZE + 25, HDR_SIZE + 25 + b.readUInt8(HDR_SIZE + 24)).toString('utf8'),
  }
}

export class ServerLease {
  private timer: NodeJS.Timeout | undefined
  private counter = 0
  private writing: Promise<void> = Promise.resolve()

  private constructor(
    private readonly dev: BlockDevice,
    private readonly fsid: bigint,
    private readonly rid: number,
  ) {}

  private async read(): Promise<LeaseBlock | undefined> {
    return decode(this.fsid, await this.dev.read(QUORUM_BLKNO * SMALL_BLOCK_SIZE, SMALL_BLOCK_SIZE))
  }

  private write(state: number): Promise<void> {
    this.counter++
    const b = encode(this.fsid, { state, rid: this.rid, counter: this.counter, pid: process.pid, host: hostname() })
    this.writing = this.writing.then(async () => {
      await this.dev.write(QUORUM_BLKNO * SMALL_BLOCK_SIZE, b)
      await this.dev.flush()
    })
    return this.writing
  }

  /** Take the lease, or fail with EBUSY naming the server that holds it. */
  static async acquire(dev: BlockDevice, fsid: bigint, rid: number): Promise<ServerLease> {
    const l = new ServerLease(dev, fsid, rid)
    const first = await l.read()
    if (first && first.state === STATE_RUNNING) {
      await new Promise((r) => setTimeout(r, HEARTBEAT_MS * 5))
      const second = await l.read()
      if (second && second.state === STATE_RUNNING && second.counter !== first.counter)
        throw new FsError(
          'EBUSY',
          `the filesystem is already served by agent pid ${second.pid} on ${second.host}; ` +
            `unmount it there first (a second server on the same devices would corrupt them)`,
        )
      l.counter = Math.max(first.counter, second?.counter ?? 0)
    } else if (first) l.counter = first.counter
    await l.write(STATE_RUNNING)
    l.timer = setInterval(() => void l.write(STATE_RUNNING).catch(() => undefined), HEARTBEAT_MS)
    l.timer.unref()
    return l
  }

  /** Mark the lease released (a clean stop). */
  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    await this.writing.catch(() => undefined)
    await this.write(STATE_STOPPED)
  }
}

/**
 * What the lease block says, for offline tools (change-quorum-config): undefined when no lease
 * was ever written.  Only meaningful on a single-node filesystem (no slot has an address),
 * where slot 0's block is the lease and not a quorum block.
 */
export async function readServerLease(
  dev: BlockDevice,
  fsid: bigint,
): Promise<{ running: boolean; pid: number; host: string } | undefined> {
  const l = decode(fsid, await dev.read(QUORUM_BLKNO * SMALL_BLOCK_SIZE, SMALL_BLOCK_SIZE))
  return l && { running: l.state === STATE_RUNNING, pid: l.pid, host: l.host }
}
