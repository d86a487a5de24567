/*
 * The state one mount's filesystem shares between its subsystems (inode.ts, dir.ts,
 * xattr.ts, data.ts, orphan.ts): the item cache, the transactions, the server, the data
 * device, the cluster and local locks, the open counts, and the helpers that take locks
 * around an operation.
 *
 * Cluster locks (DESIGN §8) guard every item this mount reads or writes, so what another
 * mount did is what the next operation here sees.  A read takes READ on the inode group of
 * each inode it reads, one group at a time (reading()).  A change (op()) locks the inodes it
 * touches locally (inode-number order), then takes their groups' cluster locks in WRITE, the
 * seq index's in WRITE_ONLY (and the orphan zone's when it may orphan or delete an inode),
 * and only then holds the transaction; it never waits for a lock while holding it.  Its
 * items carry max(transaction seq, the write seqs of those locks), so a later holder's
 * always win.  The lock ranges themselves are protocol/lock-ranges.ts's.
 */
import type { BlockDevice } from '../storage/device.js'
import { FsError, isFsError } from '../util/errors.js'
import { InodeLocks } from '../lock/inode-locks.js'
import type { ItemCache } from '../client/item-cache.js'
import type { LockHandle, UnlockOpts } from '../lock/lock-client.js'
import { LockMode, LockOrderClass, type OrderedLockRequest } from '../protocol/lock-modes.js'
import {
  ORPHAN_RANGE,
  QUOTA_RANGE,
  RENAME_LOCK_RANGE,
  SEQ_INDEX_RANGE,
  SRCH_RANGE,
  XATTR_TOTL_RANGE,
  inodeGroupRange,
} from '../protocol/lock-ranges.js'
import type { ServerApi } from '../protocol/server-api.js'
import type { Trans } from '../client/trans.js'
import { DataWaiters } from './data-wait.js'

const INO_BATCH = 1024

/**
 * The seqs of one changing operation: `trans` is its transaction's (meta_seq, data_seq and
 * the index keys use it); `seq` is the version its items carry, max(trans, the write seqs of
 * the cluster locks it holds), so a later holder's items always sort after an earlier one's.
 */
export interface Tx {
  trans: number
  seq: number
  /** whether the operation holds the quota records' WRITE lock (quota.ts charges only then) */
  quota: boolean
}

/** What the filesystem needs of the cluster lock client (lock-client.ts LockClient). */
export interface ClusterLocks {
  lockAll(reqs: readonly OrderedLockRequest[]): Promise<LockHandle[]>
  /** the same, when no lock would wait: taken now (undefined: nothing taken, call lockAll) */
  tryLockAll(reqs: readonly OrderedLockRequest[]): LockHandle[] | undefined
  unlockAll(handles: readonly LockHandle[], opts?: UnlockOpts): void
}

export interface FsCounters {
  inodesCreated: number
  inodesDeleted: number
  orphansDeleted: number
  dataBytesWritten: number
  dataBytesRead: number
  /** data blocks freed by release (release-stage.ts) */
  blocksReleased: number
  /** bytes written into offline blocks by stage */
  bytesStaged: number
}

/** The cluster lock of the inode group holding `ino`. */
function inodeLock(ino: number, mode: LockMode): OrderedLockRequest {
  return { cls: LockOrderClass.INODE, range: inodeGroupRange(ino), mode, ino }
}
const INDEX_WRITE_ONLY: OrderedLockRequest = {
  cls: LockOrderClass.WRITE_ONLY,
  range: SEQ_INDEX_RANGE,
  mode: LockMode.WRITE_ONLY,
}
export const INDEX_READ: OrderedLockRequest = { cls: LockOrderClass.INDEX, range: SEQ_INDEX_RANGE, mode: LockMode.READ }
const ORPHAN_WRITE_ONLY: OrderedLockRequest = {
  cls: LockOrderClass.WRITE_ONLY,
  range: ORPHAN_RANGE,
  mode: LockMode.WRITE_ONLY,
}
export const ORPHAN_READ: OrderedLockRequest = { cls: LockOrderClass.INDEX, range: ORPHAN_RANGE, mode: LockMode.READ }
const QUOTA_WRITE: OrderedLockRequest = { cls: LockOrderClass.INDEX, range: QUOTA_RANGE, mode: LockMode.WRITE }
export const QUOTA_READ: OrderedLockRequest = { cls: LockOrderClass.INDEX, range: QUOTA_RANGE, mode: LockMode.READ }
/* the xattr tags' items (srch.ts, totl.ts): written blind from every mount, read by searches */
const TAGS_WRITE_ONLY: OrderedLockRequest[] = [SRCH_RANGE, XATTR_TOTL_RANGE].map((range) => ({
  cls: LockOrderClass.WRITE_ONLY,
  range,
  mode: LockMode.WRITE_ONLY,
}))
export const SRCH_READ: OrderedLockRequest = { cls: LockOrderClass.INDEX, range: SRCH_RANGE, mode: LockMode.READ }
export const TOTL_READ: OrderedLockRequest = { cls: LockOrderClass.INDEX, range: XATTR_TOTL_RANGE, mode: LockMode.READ }
export const RENAME_WRITE: OrderedLockRequest = {
  cls: LockOrderClass.RENAME,
  range: RENAME_LOCK_RANGE,
  mode: LockMode.WRITE,
}

export class FsContext {
  readonly counters: FsCounters = {
    inodesCreated: 0,
    inodesDeleted: 0,
    orphansDeleted: 0,
    dataBytesWritten: 0,
    dataBytesRead: 0,
    blocksReleased: 0,
    bytesStaged: 0,
  }
  /**
   * open counts by inode: an unlinked inode open here stays as an orphan, and this is what
   * the mount answers the open map with (orphan.ts openInodes); an open is counted while its
   * group's READ lock is still held
   */
  readonly opens = new Map<number, number>()
  /** quota trees of inodes this mount met in one (quota.ts opInTree: hints, checked under locks) */
  readonly quotaHints = new Map<number, number>()
  /** this mount's operations waiting for offline data (data-wait.ts) */
  readonly dataWaiters = new DataWaiters()
  /** the tail of the queue of this mount's cross-directory renames */
  renameLock: Promise<void> = Promise.resolve()
  private readonly locks = new InodeLocks()
  private inoNext = 0
  private inoEnd = 0
  /** the next batch of inode numbers, asked for when a quarter of this one is left */
  private inoSpare: { first: number; count: number } | undefined
  private inoAsking: Promise<void> | undefined

  constructor(
    readonly items: ItemCache,
    readonly trans: Trans,
    readonly server: ServerApi,
    readonly data: BlockDevice,
    readonly rid: number,
    private readonly cluster: ClusterLocks,
  ) {}

  /**
   * Run `fn` with `inos` locked (locally, then their cluster locks in WRITE with the seq
   * index's WRITE_ONLY lock, the orphan zone's when `orphans`, the xattr tags' when `tags` or
   * `orphans` (deleting an inode drops its tagged xattrs), the quota records' WRITE lock when
   * `quota`: the operation changes a quota tree's usage) and the transaction held.
   * A data allocator that ran dry in this transaction (ENOBUFS) is refilled by a commit and
   * the operation retried once; still dry means the device is full (ENOSPC).
   */
  async op<T>(
    inos: number[],
    fn: (t: Tx) => Promise<T>,
    o: { orphans?: boolean; quota?: boolean; tags?: boolean } = {},
  ): Promise<T> {
    const reqs: OrderedLockRequest[] = inos.map((ino) => inodeLock(ino, LockMode.WRITE))
    reqs.push(INDEX_WRITE_ONLY)
    if (o.orphans) reqs.push(ORPHAN_WRITE_ONLY)
    if (o.orphans || o.tags) reqs.push(...TAGS_WRITE_ONLY)
    if (o.quota) reqs.push(QUOTA_WRITE)
    for (let attempt = 0; ; attempt++) {
      // each step is taken at once when it need not wait (the usual case), awaited otherwise
      const unlock = this.locks.tryLock(inos) ?? (await this.locks.lock(inos))
      try {
        const held = this.cluster.tryLockAll(reqs) ?? (await this.cluster.lockAll(reqs))
        let transSeq: number | undefined
        try {
          transSeq = this.trans.tryHold() ?? (await this.trans.hold())
          // an item's seq also exceeds the write seqs of its locks (DESIGN §5)
          const t: Tx = {
            trans: transSeq,
            seq: Math.max(transSeq, ...held.map((h) => h.writeSeq)),
            quota: o.quota === true,
          }
          try {
            return await fn(t)
          } catch (e) {
            if (!isFsError(e, 'ENOBUFS')) throw e
            if (attempt > 0) throw new FsError('ENOSPC', 'the data device is full')
          } finally {
            this.trans.release()
          }
        } finally {
          this.cluster.unlockAll(held, { transSeq })
        }
      } finally {
        unlock()
      }
      // only a dry data allocator (ENOBUFS) gets here: a commit refills it, then once more
      await this.trans.commit()
    }
  }

  /** Run `fn` with READ cluster locks on the groups of `inos` (reads take no local locks). */
  reading<T>(inos: number[], fn: () => Promise<T>): Promise<T> {
    return this.withLocks(
      inos.map((ino) => inodeLock(ino, LockMode.READ)),
      fn,
    )
  }

  /** Run `fn` holding cluster locks (taken in the deadlock-free order). */
  async withLocks<T>(reqs: readonly OrderedLockRequest[], fn: () => Promise<T>): Promise<T> {
    const held = this.cluster.tryLockAll(reqs) ?? (await this.cluster.lockAll(reqs))
    try {
      return await fn()
    } finally {
      this.cluster.unlockAll(held)
    }
  }

  /**
   * A new inode number, from the batch the server gave this mount.  The next batch is asked
   * for (once, however many creates run) when a quarter of this one is left, so creates do
   * not wait for the server's commit of it.
   */
  async allocIno(): Promise<number> {
    for (;;) {
      if (this.inoNext < this.inoEnd) {
        if (this.inoEnd - this.inoNext <= INO_BATCH / 4 && !this.inoSpare) this.askInos().catch(() => undefined) // a create that needs it sees the error
        return this.inoNext++
      }
      if (this.inoSpare) {
        this.inoNext = this.inoSpare.first
        this.inoEnd = this.inoSpare.first + this.inoSpare.count
        this.inoSpare = undefined
        continue
      }
      await this.askInos()
    }
  }

  private askInos(): Promise<void> {
    this.inoAsking ??= this.server
      .allocInodes(this.rid, INO_BATCH)
      .then((r) => {
        this.inoSpare = r
      })
      .finally(() => (this.inoAsking = undefined))
    return this.inoAsking
  }
}
