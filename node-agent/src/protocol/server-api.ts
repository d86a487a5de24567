/*
 * What a mount asks of the server, and the log_trees record they exchange.  The server runs
 * in-process for a single mount and over the network in a cluster; both sides see only this.
 *
 * Every request is safe to send twice: the server deduplicates by (rid, transaction seq).
 */
import { FsError } from '../util/errors.js'
import {
  ALLOC_ROOT_SIZE,
  LIST_HEAD_SIZE,
  ROOT_SIZE,
  Zone,
  makeKey,
  readAllocRoot,
  readListHead,
  readRoot,
  readU64,
  writeAllocRoot,
  writeListHead,
  writeRoot,
  writeU64,
  type AllocRoot,
  type BtreeRoot,
  type ListHead,
} from '../storage/format.js'

export const LOG_TREES_FINALIZED = 1

/** One mount's commit log: its item btree and the allocators it writes it with. */
export interface LogTrees {
  rid: number
  nr: number
  itemRoot: BtreeRoot
  metaAvail: ListHead
  metaFreed: ListHead
  dataAvail: AllocRoot
  dataFreed: AllocRoot
  /** seq of the transaction this tree is open for (0: none open) */
  getTransSeq: number
  /** seq of the last transaction committed into it */
  commitTransSeq: number
  /** the greatest item seq it holds */
  maxItemSeq: number
  flags: number
  /** inodes created and deleted by the transaction being committed (for the super's count) */
  inodesCreated: number
  inodesDeleted: number
}

const LT = {
  rid: 0,
  nr: 8,
  itemRoot: 16,
  metaAvail: 16 + ROOT_SIZE,
  metaFreed: 16 + ROOT_SIZE + LIST_HEAD_SIZE,
  dataAvail: 16 + ROOT_SIZE + 2 * LIST_HEAD_SIZE,
  dataFreed: 16 + ROOT_SIZE + 2 * LIST_HEAD_SIZE + ALLOC_ROOT_SIZE,
  getTransSeq: 16 + ROOT_SIZE + 2 * LIST_HEAD_SIZE + 2 * ALLOC_ROOT_SIZE,
} as const
export const LOG_TREES_SIZE = LT.getTransSeq + 48

export function encodeLogTrees(lt: LogTrees): Buffer {
  const b = Buffer.alloc(LOG_TREES_SIZE)
  writeU64(b, LT.rid, lt.rid)
  writeU64(b, LT.nr, lt.nr)
  writeRoot(b, LT.itemRoot, lt.itemRoot)
  writeListHead(b, LT.metaAvail, lt.metaAvail)
  writeListHead(b, LT.metaFreed, lt.metaFreed)
  writeAllocRoot(b, LT.dataAvail, lt.dataAvail)
  writeAllocRoot(b, LT.dataFreed, lt.dataFreed)
  writeU64(b, LT.getTransSeq, lt.getTransSeq)
  writeU64(b, LT.getTransSeq + 8, lt.commitTransSeq)
  writeU64(b, LT.getTransSeq + 16, lt.maxItemSeq)
  writeU64(b, LT.getTransSeq + 24, lt.flags)
  writeU64(b, LT.getTransSeq + 32, lt.inodesCreated)
  writeU64(b, LT.getTransSeq + 40, lt.inodesDeleted)
  return b
}

export function decodeLogTrees(b: Buffer): LogTrees {
  if (b.length !== LOG_TREES_SIZE) throw new FsError('EIO', `log_trees item of ${b.length} bytes is corrupt`)
  return {
    rid: readU64(b, LT.rid),
    nr: readU64(b, LT.nr),
    itemRoot: readRoot(b, LT.itemRoot),
    metaAvail: readListHead(b, LT.metaAvail),
    metaFreed: readListHead(b, LT.metaFreed),
    dataAvail: readAllocRoot(b, LT.dataAvail),
    dataFreed: readAllocRoot(b, LT.dataFreed),
    getTransSeq: readU64(b, LT.getTransSeq),
    commitTransSeq: readU64(b, LT.getTransSeq + 8),
    maxItemSeq: readU64(b, LT.getTransSeq + 16),
    flags: readU64(b, LT.getTransSeq + 24),
    inodesCreated: readU64(b, LT.getTransSeq + 32),
    inodesDeleted: readU64(b, LT.getTransSeq + 40),
  }
}

export function logTreesKey(rid: number, nr: number): Buffer {
  return makeKey(Zone.LOG_TREES, rid, 0, nr)
}
export const LOG_TREES_FIRST = makeKey(Zone.LOG_TREES)
export const LOG_TREES_LAST = makeKey(Zone.LOG_TREES, 0x1fffffffffffff, 0xff, 0x1fffffffffffff)

export function mountedClientKey(rid: number): Buffer {
  return makeKey(Zone.MOUNTED_CLIENT, rid)
}

/** The roots a reader needs: the fs root and every committed log tree. */
export interface Roots {
  fsRoot: BtreeRoot
  logTrees: LogTrees[]
  /** bumps whenever the roots change */
  version: number
}

export interface ServerStatfs {
  fsid: bigint
  totalMetaBlocks: number
  freeMetaBlocks: number
  totalDataBlocks: number
  freeDataBlocks: number
  inodeCount: number
  committedSeq: number
}

export interface GreetingReply {
  fsid: bigint
  formatVersion: number
}

/**
 * Who a mount is, as its greeting tells the server and the mounted-client record keeps it:
 * what a fence agent needs to stop it (DESIGN §11) after this server, or a successor, finds it
 * silent.  Fields are 0 / '' where unknown.
 */
export interface MountIdentity {
  /** its agent's process id, and that process's start time (clock ticks since boot) */
  pid: number
  pidStart: number
  host: string
  /** its IP address as the server saw it */
  addr: string
}

export const NO_IDENTITY: MountIdentity = { pid: 0, pidStart: 0, host: '', addr: '' }

/** The mounted-client record's value: the mount's identity. */
export function encodeMountIdentity(m: MountIdentity): Buffer {
  const host = Buffer.from(m.host, 'utf8').subarray(0, 255)
  const addr = Buffer.from(m.addr, 'utf8').subarray(0, 255)
  const b = Buffer.alloc(16 + 2 + host.length + addr.length)
  b.writeUInt32LE(m.pid, 0)
  writeU64(b, 8, m.pidStart)
  b.writeUInt8(host.length, 16)
  host.copy(b, 17)
  b.writeUInt8(addr.length, 17 + host.length)
  addr.copy(b, 18 + host.length)
  return b
}

/** A mounted-client record's value (an older, 8-byte record: identity unknown). */
export function decodeMountIdentity(b: Buffer): MountIdentity {
  if (b.length < 18) return { ...NO_IDENTITY }
  const hl = b.readUInt8(16)
  return {
    pid: b.readUInt32LE(0),
    pidStart: readU64(b, 8),
    host: b.subarray(17, 17 + hl).toString('utf8'),
    addr: b.subarray(18 + hl, 18 + hl + b.readUInt8(17 + hl)).toString('utf8'),
  }
}

export interface ServerApi {
  /**
   * a mount introduces itself (`who`: what fencing it needs; the transport fills in addr;
   * `quorumSlot`: the slot it is a quorum member of, if any)
   */
  greeting(
    rid: number,
    fsid: bigint,
    formatVersion: number,
    who?: MountIdentity,
    quorumSlot?: number,
  ): Promise<GreetingReply>
  /** open the mount's next transaction: its seq and refilled allocators */
  getLogTrees(rid: number): Promise<LogTrees>
  /** record a committed log tree; durable when this resolves */
  commitLogTrees(lt: LogTrees): Promise<void>
  /** a range of unused inode numbers */
  allocInodes(rid: number, count: number): Promise<{ first: number; count: number }>
  getRoots(): Promise<Roots>
  /** the last seq no mount still has open: index walks stop here */
  getLastSeq(): Promise<number>
  statfs(): Promise<ServerStatfs>
  /** the rids of the mounts recorded as mounted (live, or not yet reclaimed) */
  listMounts(): Promise<number[]>
  /**
   * the mount is leaving cleanly: reclaim its allocators, forget it.  A quorum member's
   * (`quorumSlot`) waits while leaving would take the members below a majority
   * (server/farewell-gate.ts)
   */
  farewell(rid: number, quorumSlot?: number): Promise<void>
  /**
   * The inodes of inode group `group` (open-map.ts openMapGroup) that mounts other than
   * `rid` have open now (the open map, DESIGN §7); a mount that leaves or is reclaimed while
   * asked has nothing open.  ETIMEDOUT if some mount does not answer in time.
   */
  openInodes(rid: number, group: number): Promise<number[]>
}
