/*
 * Quorum blocks (DESIGN §11, reference §8): one 4 KiB block per quorum slot on the metadata
 * device, at QUORUM_BLKNO + slot.  Only the member mounted on a slot writes its block; every
 * agent reads them all.  A block records the slot's events, each with the term and the mount
 * (rid) it happened in, and who holds the slot (pid, its start time, host) so a successor can
 * fence it:
 *
 *   BEGIN  a member mounted on the slot
 *   TERM   the highest term the member has seen, and whom it voted for in it (raft's
 *          persistent state: one vote per term, across restarts too)
 *   ELECT  the member was elected leader in `term`: its server is about to start
 *   FENCE  its server is up: every leader elected before `term` is fenced or stopped
 *   STOP   its server stopped cleanly (a leader with ELECT > STOP did not)
 *   END    the member unmounted cleanly
 *
 * Mounts find the server from the blocks alone (leaderOf): the slot with the greatest ELECT
 * term above its STOP term.  A new leader fences every slot whose leadership may still be
 * running (suspectLeaders) before its server writes anything.
 *
 * Invariants: a block is written whole and flushed before the event it records counts; a
 * block that fails its checksum or names another filesystem reads as absent (`invalid`
 * counts it), never as a leader.
 */
import { hostname } from 'node:os'
import { blockChecksum, sealBlock } from './block.js'
import type { BlockDevice } from './device.js'
import {
  HDR_CRC,
  HDR_MAGIC,
  HDR_SIZE,
  Magic,
  QUORUM_BLKNO,
  QUORUM_MAX_SLOTS,
  SMALL_BLOCK_SIZE,
  readHeader,
  readU64,
  writeU64,
} from './format.js'
import { FsError } from '../util/errors.js'

export const QUORUM_EVENTS = ['begin', 'term', 'elect', 'fence', 'stop', 'end'] as const
export type QuorumEventName = (typeof QUORUM_EVENTS)[number]

export interface QuorumEvent {
  /** the mount the event happened in (0: never happened) */
  rid: number
  term: number
  /** Date.now() when it was written */
  ts: number
}

export interface QuorumBlock {
  slot: number
  /** how many times the block was written (its header seq) */
  writes: number
  events: Record<QuorumEventName, QuorumEvent>
  /** the slot the member voted for in events.term.term (-1: none) */
  votedFor: number
  /** the member agent holding the slot: process, its start time (clock ticks), host */
  pid: number
  pidStart: number
  host: string
}

const NO_EVENT: QuorumEvent = { rid: 0, term: 0, ts: 0 }
const O_PID = HDR_SIZE
const O_VOTED = HDR_SIZE + 4
const O_PIDSTART = HDR_SIZE + 8
const O_EVENTS = HDR_SIZE + 16
const EVENT_SIZE = 24
const O_HOST = O_EVENTS + QUORUM_EVENTS.length * EVENT_SIZE
const HOST_MAX = 255

export function quorumBlockOffset(slot: number): number {
  if (!Number.isInteger(slot) || slot < 0 || slot >= QUORUM_MAX_SLOTS)
    throw new FsError('EINVAL', `quorum slot ${slot} is out of range 0..${QUORUM_MAX_SLOTS - 1}`)
  return (QUORUM_BLKNO + slot) * SMALL_BLOCK_SIZE
}

/** A block for `slot` with no events, held by this process. */
export function newQuorumBlock(slot: number, pidStart: number): QuorumBlock {
  const events = Object.fromEntries(QUORUM_EVENTS.map((e) => [e, { ...NO_EVENT }])) as QuorumBlock['events']
  return { slot, writes: 0, events, votedFor: -1, pid: process.pid, pidStart, host: hostname() }
}

export function encodeQuorumBlock(fsid: bigint, q: QuorumBlock): Buffer {
  const b = Buffer.alloc(SMALL_BLOCK_SIZE)
  b.writeUInt32LE(q.pid, O_PID)
  b.writeInt32LE(q.votedFor, O_VOTED)
  writeU64(b, O_PIDSTART, q.pidStart)
  QUORUM_EVENTS.forEach((name, i) => {
    const e = q.events[name]
    writeU64(b, O_EVENTS + i * EVENT_SIZE, e.rid)
    writeU64(b, O_EVENTS + i * EVENT_SIZE + 8, e.term)
    writeU64(b, O_EVENTS + i * EVENT_SIZE + 16, e.ts)
  })
  const h = Buffer.from(q.host, 'utf8').subarray(0, HOST_MAX)
  b.writeUInt8(h.length, O_HOST)
  h.copy(b, O_HOST + 1)
  sealBlock(b, fsid, Magic.QUORUM, QUORUM_BLKNO + q.slot, q.writes)
  return b
}

/** The block of `slot`; undefined when never written; 'invalid' when corrupt or foreign. */
export function decodeQuorumBlock(fsid: bigint, slot: number, b: Buffer): QuorumBlock | undefined | 'invalid' {
  const crc = b.readUInt32LE(HDR_CRC)
  if (crc === 0 && b.readUInt32LE(HDR_MAGIC) === 0) return undefined
  // the checksum first: the header's u64 fields of a corrupt block may not even parse
  if (crc !== blockChecksum(b)) return 'invalid'
  const h = readHeader(b)
  if (h.magic !== Magic.QUORUM || h.fsid !== fsid || h.blkno !== QUORUM_BLKNO + slot) return 'invalid'
  const events = Object.fromEntries(
    QUORUM_EVENTS.map((name, i) => [
      name,
      {
        rid: readU64(b, O_EVENTS + i * EVENT_SIZE),
        term: readU64(b, O_EVENTS + i * EVENT_SIZE + 8),
        ts: readU64(b, O_EVENTS + i * EVENT_SIZE + 16),
      },
    ]),
  ) as QuorumBlock['events']
  return {
    slot,
    writes: h.seq,
    events,
    votedFor: b.readInt32LE(O_VOTED),
    pid: b.readUInt32LE(O_PID),
    pidStart: readU64(b, O_PIDSTART),
    host: b.subarray(O_HOST + 1, O_HOST + 1 + b.readUInt8(O_HOST)).toString('utf8'),
  }
}

export interface QuorumBlocks {
  /** by slot: undefined where never written or unreadable */
  blocks: Array<QuorumBlock | undefined>
  /** slots whose block failed its checksum or names another filesystem */
  invalid: number[]
}

/** Read the blocks of slots 0..slots-1 straight from the device (no cache: others write them). */
export async function readQuorumBlocks(dev: BlockDevice, fsid: bigint, slots: number): Promise<QuorumBlocks> {
  const raw = await dev.read(quorumBlockOffset(0), slots * SMALL_BLOCK_SIZE)
  const out: QuorumBlocks = { blocks: [], invalid: [] }
  for (let s = 0; s < slots; s++) {
    const d = decodeQuorumBlock(fsid, s, raw.subarray(s * SMALL_BLOCK_SIZE, (s + 1) * SMALL_BLOCK_SIZE))
    if (d === 'invalid') out.invalid.push(s)
    out.blocks.push(d === 'invalid' ? undefined : d)
  }
  return out
}

/** Write a slot's block (its write count advances) and flush it. */
export async function writeQuorumBlock(dev: BlockDevice, fsid: bigint, q: QuorumBlock): Promise<void> {
  q.writes++
  await dev.write(quorumBlockOffset(q.slot), encodeQuorumBlock(fsid, q))
  await dev.flush()
}

/** Zero the blocks of slots 0..QUORUM_MAX_SLOTS-1 (mkfs, change-quorum-config). */
export async function clearQuorumBlocks(dev: BlockDevice): Promise<void> {
  await dev.write(quorumBlockOffset(0), Buffer.alloc(QUORUM_MAX_SLOTS * SMALL_BLOCK_SIZE))
  await dev.flush()
}

export interface QuorumLeader {
  slot: number
  term: number
  /** the leader's mount */
  rid: number
}

/** Whether the slot's member is elected and its server has not stopped cleanly. */
export function electedNotStopped(q: QuorumBlock): boolean {
  return q.events.elect.term > 0 && q.events.elect.term > q.events.stop.term
}

/** The server the blocks name: the greatest ELECT term above its slot's STOP term. */
export function leaderOf(blocks: ReadonlyArray<QuorumBlock | undefined>): QuorumLeader | undefined {
  let best: QuorumLeader | undefined
  for (const q of blocks) {
    if (!q || !electedNotStopped(q)) continue
    if (!best || q.events.elect.term > best.term)
      best = { slot: q.slot, term: q.events.elect.term, rid: q.events.elect.rid }
  }
  return best
}

/** The highest term any block records: a member starts from it. */
export function highestTerm(blocks: ReadonlyArray<QuorumBlock | undefined>): number {
  let t = 0
  for (const q of blocks) if (q) for (const e of QUORUM_EVENTS) t = Math.max(t, q.events[e].term)
  return t
}

/**
 * The leaders a new leader (slot `slot`, mount `rid`, elected in `term`) must fence before its
 * server writes: every slot elected in a term below ours and not below the highest FENCE term
 * (older ones were fenced by the leader that wrote it) that did not stop cleanly, unless it is
 * this very mount.
 */
export function suspectLeaders(
  blocks: ReadonlyArray<QuorumBlock | undefined>,
  me: { slot: number; rid: number; term: number },
): QuorumBlock[] {
  let fenced = 0
  for (const q of blocks) if (q) fenced = Math.max(fenced, q.events.fence.term)
  return blocks.filter(
    (q): q is QuorumBlock =>
      !!q &&
      electedNotStopped(q) &&
      q.events.elect.term < me.term &&
      q.events.elect.term >= fenced &&
      !(q.slot === me.slot && q.events.elect.rid === me.rid),
  )
}
