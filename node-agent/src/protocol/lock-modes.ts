/*
 * Cluster lock modes, their compatibility, the lock identity (a key range named by its start
 * key), the messages the lock server and the lock clients exchange, and the order in which
 * one operation takes several locks (DESIGN §8).  Shared by lock-server.ts and lock-client.ts;
 * pure definitions, no I/O and no state.
 *
 * Transport contract for the messages below (the network layer, a gRPC stream or an
 * in-process loopback, must keep it):
 *  - the messages of one direction between one client and one server arrive in the order they
 *    were sent (a stream, not datagrams); delays are fine, reordering is not;
 *  - a message may be lost only when the connection is lost; the client then resends its
 *    outstanding requests (LockClient.resendRequests) to whichever server it reaches next,
 *    and duplicates of requests and invalidation responses are harmless at the server;
 *  - a new server rebuilds its state from the clients' reports (LockClient.recoveryReport ->
 *    LockServer.recover) before it grants anything.
 */
import { FsError } from '../util/errors.js'
import { KEY_SIZE, compareKeys } from '../storage/format.js'

/* ---- modes ------------------------------------------------------------------------------ */

export const LockMode = {
  NULL: 0,
  READ: 1,
  WRITE: 2,
  WRITE_ONLY: 3,
} as const
export type LockMode = (typeof LockMode)[keyof typeof LockMode]

const NAMES = ['NULL', 'READ', 'WRITE', 'WRITE_ONLY'] as const

export function lockModeName(m: LockMode): string {
  return NAMES[m] ?? `mode${m as number}`
}

export function isLockMode(m: unknown): m is LockMode {
  return m === 0 || m === 1 || m === 2 || m === 3
}

/** A mode that lets its holder write items (its grants carry a write_seq). */
export function isWriteMode(m: LockMode): boolean {
  return m === LockMode.WRITE || m === LockMode.WRITE_ONLY
}

/** A mode under which items may be read (and cached). */
export function isReadableMode(m: LockMode): boolean {
  return m === LockMode.READ || m === LockMode.WRITE
}

/**
 * Whether a mount that holds `held` may serve a use of `need` locally, without asking the
 * server: the same mode, or WRITE for READ.  (WRITE does not cover WRITE_ONLY: a mount
 * switching between them goes through NULL.)  Everything covers NULL.
 */
export function modeCovers(held: LockMode, need: LockMode): boolean {
  return need === LockMode.NULL || held === need || (held === LockMode.WRITE && need === LockMode.READ)
}

/**
 * Server compatibility of a granted mode with a requested one, exactly as DESIGN §8:
 *  1. the same mode, when it is READ or WRITE_ONLY;
 *  2. one mount upgrading its own READ to WRITE;
 *  3. anything against a mount that holds nothing (either side NULL).
 * Everything else conflicts, including one mount going WRITE -> WRITE_ONLY (via NULL).
 */
export function lockModesCompatible(granted: LockMode, requested: LockMode, sameMount: boolean): boolean {
  if (granted === LockMode.NULL || requested === LockMode.NULL) return true
  if (granted === requested && (granted === LockMode.READ || granted === LockMode.WRITE_ONLY)) return true
  if (sameMount && granted === LockMode.READ && requested === LockMode.WRITE) return true
  return false
}
export type LockCompatFn = typeof lockModesCompatible

/**
 * The mode an incompatible holder is invalidated to for a request: READ when a READ request
 * meets a WRITE holder (the writer keeps reading, its cache stays), otherwise NULL.
 */
export function invalidationTarget(granted: LockMode, requested: LockMode): LockMode {
  return requested === LockMode.READ && granted === LockMode.WRITE ? LockMode.READ : LockMode.NULL
}

/**
 * Whether an invalidation from `oldMode` to `newMode` must drop the cached items (and the
 * kernel/path caches) of the range: always, except WRITE -> READ, where what the mount holds
 * is exactly what it just committed.
 */
export function invalidationDropsCache(oldMode: LockMode, newMode: LockMode): boolean {
  return !(oldMode === LockMode.WRITE && newMode === LockMode.READ)
}

/* ---- identity --------------------------------------------------------------------------- */

/** A lock's key range [start, end]; lock-ranges.ts defines every one. */
export type LockRange = readonly [start: Buffer, end: Buffer]

/** The map key of a lock: its start key. */
export function lockId(start: Buffer): string {
  return start.toString('latin1')
}

export function lockRangeString(r: LockRange): string {
  return `${r[0].toString('hex')}..${r[1].toString('hex')}`
}

export function checkLockRange(start: Buffer, end: Buffer): void {
  if (start.length !== KEY_SIZE || end.length !== KEY_SIZE || compareKeys(start, end) > 0)
    throw new FsError('EINVAL', `bad lock range ${start.toString('hex')}..${end.toString('hex')}`)
}

export function keyInLockRange(r: LockRange, key: Buffer): boolean {
  return compareKeys(r[0], key) <= 0 && compareKeys(key, r[1]) <= 0
}

/* ---- messages --------------------------------------------------------------------------- */

/** client -> server: "give me `mode` on this lock" (the client's single outstanding request). */
export interface LockRequestMsg {
  kind: 'request'
  start: Buffer
  end: Buffer
  /** the mode the client believes it holds (informational: the server trusts its own state) */
  oldMode: LockMode
  mode: LockMode
  /** per-client request number, echoed by the grant; a resend keeps its number */
  reqId: number
}

/** client -> server: an invalidation is done; the client now holds `mode`. */
export interface LockInvalidatedMsg {
  kind: 'invalidated'
  start: Buffer
  end: Buffer
  mode: LockMode
  /** the invalidation this answers; an unknown or stale id is ignored */
  invId: number
}

export type LockClientMsg = LockRequestMsg | LockInvalidatedMsg

/** server -> client: the answer to a request. */
export interface LockGrantMsg {
  kind: 'grant'
  start: Buffer
  end: Buffer
  mode: LockMode
  /** write_seq for WRITE and WRITE_ONLY grants (the next core seq), else 0 */
  writeSeq: number
  /** the server's committed-roots version: a client behind it refreshes before reading */
  rootsVersion: number
  reqId: number
}

/** server -> client: "go from `oldMode` down to `mode`, then answer with `invId`". */
export interface LockInvalidateMsg {
  kind: 'invalidate'
  start: Buffer
  end: Buffer
  oldMode: LockMode
  mode: LockMode
  invId: number
}

export type LockServerMsg = LockGrantMsg | LockInvalidateMsg

/** What a client reports of one held lock to a new server (lock recovery). */
export interface RecoveredLock {
  start: Buffer
  end: Buffer
  /** the mode held; while an invalidation is in progress, the mode before it */
  mode: LockMode
  writeSeq: number
}

/* ---- ordering (DESIGN §8) ------------------------------------------------------------------ */

/** The classes of locks, in the order one operation must take them. */
export const LockOrderClass = {
  /** the global rename lock (cross-directory renames only) */
  RENAME: 0,
  /** inode-group locks, by inode number */
  INODE: 1,
  /** write-only locks (orphan, seq-index adds/deletes, tags) */
  WRITE_ONLY: 2,
  /** index locks, by key */
  INDEX: 3,
} as const
export type LockOrderClass = (typeof LockOrderClass)[keyof typeof LockOrderClass]

export interface OrderedLockRequest {
  cls: LockOrderClass
  range: LockRange
  mode: LockMode
  /** for INODE locks: the inode number the lock was asked for */
  ino?: number
}

function compareOrdered(a: OrderedLockRequest, b: OrderedLockRequest): number {
  if (a.cls !== b.cls) return a.cls - b.cls
  if (a.cls === LockOrderClass.INODE && a.ino !== undefined && b.ino !== undefined && a.ino !== b.ino) {
    // inode groups are consecutive numbers, so inode order and group-key order agree; the
    // number is what the rule names
    return a.ino < b.ino ? -1 : 1
  }
  return compareKeys(a.range[0], b.range[0])
}

/**
 * Sort the locks one operation needs into the order that cannot deadlock: the rename lock,
 * inode locks by inode number, write-only locks, index locks by key.  Requests for the same
 * lock (two inodes of one group, say) are merged into one: if one mode covers the other the
 * stronger is kept (WRITE over READ); modes that cannot be merged (WRITE_ONLY with READ or
 * WRITE) are an EINVAL — the caller must not ask one lock twice in modes that would make the
 * mount invalidate itself while holding it.
 */
export function sortLockRequests<T extends OrderedLockRequest>(reqs: readonly T[]): T[] {
  const sorted = [...reqs].sort(compareOrdered)
  const out: T[] = []
  const seen = new Map<string, number>()
  for (const r of sorted) {
    checkLockRange(r.range[0], r.range[1])
    const id = lockId(r.range[0])
    const at = seen.get(id)
    if (at === undefined) {
      seen.set(id, out.length)
      out.push(r)
      continue
    }
    const prev = out[at]!
    if (modeCovers(prev.mode, r.mode)) continue
    if (modeCovers(r.mode, prev.mode)) {
      out[at] = { ...prev, mode: r.mode } as T
      continue
    }
    throw new FsError(
      'EINVAL',
      `lock ${lockRangeString(r.range)} asked twice in ${lockModeName(prev.mode)} and ${lockModeName(r.mode)}`,
    )
  }
  return out
}
