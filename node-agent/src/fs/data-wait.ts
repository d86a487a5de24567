/*
 * Data waiters: the operations of this mount that found offline extents in their way and wait
 * for them to be staged (the original's data waiters in data.c, per mount).
 *
 * A waiter is registered while its operation still holds the cluster lock of the inode's
 * group, and the operation re-checks the extents under that lock when it is woken.  Whatever
 * can bring the data online wakes it: a stage (or any change) of the inode on this mount
 * (wakeInode, after the change), and on another mount the loss of this mount's lock on the
 * inode's group (wakeRange from the lock-invalidation hook: another mount cannot change the
 * extents without taking that lock away first).  Since the waiter exists before its lock is
 * dropped, no stage can slip between its check and its wait; a wake that changed nothing only
 * costs a re-check.  An archive agent fails waiters with an errno (fail, `data-wait-err`);
 * unmount fails all of them (EIO, ESHUTDOWN has no errno of ours) so no FUSE request is left
 * hanging.
 */
import { FsError, type Errno } from '../util/errors.js'

/** What the waiter was doing (the original's SCOUTFS_IOC_DWO_* bits). */
export const DataWaitOp = { READ: 1, WRITE: 2, CHANGE_SIZE: 4 } as const
export type DataWaitOp = (typeof DataWaitOp)[keyof typeof DataWaitOp]

export const DATA_WAIT_OP_NAMES: Readonly<Record<DataWaitOp, string>> = {
  1: 'read',
  2: 'write',
  4: 'change_size',
}

export interface DataWaiting {
  ino: number
  iblock: number
  op: DataWaitOp
}

interface Waiter extends DataWaiting {
  wake: () => void
  fail: (e: FsError) => void
}

export class DataWaiters {
  private readonly waiters = new Set<Waiter>()
  /** waits started and waiters failed, for the metrics */
  readonly counters = { waits: 0, failed: 0 }

  /**
   * Register a waiter for block `iblock` of `ino`; the promise resolves when it is woken (the
   * caller then re-checks) and rejects with the errno an archive agent gave.
   */
  wait(ino: number, iblock: number, op: DataWaitOp): Promise<void> {
    this.counters.waits++
    const p = new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        ino,
        iblock,
        op,
        wake: () => {
          this.waiters.delete(w)
          resolve()
        },
        fail: (e) => {
          this.waiters.delete(w)
          this.counters.failed++
          reject(e)
        },
      }
      this.waiters.add(w)
    })
    // failed before its operation got to awaiting it (it first drops its locks): not unhandled
    p.catch(() => undefined)
    return p
  }

  /** Wake the waiters of inode `ino` (it changed on this mount). */
  wakeInode(ino: number): void {
    this.wakeRange(ino, ino)
  }

  /** Wake the waiters of inodes first..last (this mount lost their group's lock). */
  wakeRange(first: number, last: number): void {
    for (const w of [...this.waiters]) if (w.ino >= first && w.ino <= last) w.wake()
  }

  /** The waiters after (ino, iblock), in (ino, iblock) order, at most `max`. */
  list(afterIno: number, afterIblock: number, max: number): DataWaiting[] {
    const seen = new Map<string, DataWaiting>()
    for (const w of this.waiters) {
      if (w.ino < afterIno || (w.ino === afterIno && w.iblock <= afterIblock)) continue
      // one entry per (ino, iblock), its ops or-ed together, as the original lists them
      const k = `${w.ino}:${w.iblock}`
      const e = seen.get(k)
      if (e) e.op = (e.op | w.op) as DataWaitOp
      else seen.set(k, { ino: w.ino, iblock: w.iblock, op: w.op })
    }
    return [...seen.values()].sort((a, b) => a.ino - b.ino || a.iblock - b.iblock).slice(0, max)
  }

  /**
   * Fail the waiters of `ino` doing `op` on a block of [iblock, iblock + blocks) with `code`;
   * returns how many.
   */
  fail(ino: number, iblock: number, blocks: number, op: DataWaitOp, code: Errno): number {
    let n = 0
    for (const w of [...this.waiters]) {
      if (w.ino !== ino || w.op !== op || w.iblock < iblock || w.iblock >= iblock + blocks) continue
      w.fail(new FsError(code, `inode ${ino} block ${w.iblock} was not staged: the archive agent returned ${code}`))
      n++
    }
    return n
  }

  /** Fail every waiter (unmount). */
  failAll(code: Errno, why: string): void {
    for (const w of [...this.waiters]) w.fail(new FsError(code, why))
  }

  get size(): number {
    return this.waiters.size
  }
}

/** An operation that found offline data: it waits for this, then starts over. */
export interface Waiting {
  waiting: Promise<void>
}

/** Run `attempt` until it has an answer, waiting for offline data whenever it asks to. */
export async function untilOnline<T>(attempt: () => Promise<T | Waiting>): Promise<T> {
  for (;;) {
    const r = await attempt()
    if (typeof r !== 'object' || r === null || !('waiting' in r)) return r
    await r.waiting
  }
}
