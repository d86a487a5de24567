/*
 * Transactions of one mount.  All changes a mount makes between commits form one
 * transaction, identified by a seq the server issued (getLogTrees).  Operations *hold* the
 * transaction while they change items; a commit waits for holders to drain and makes new
 * holders wait until the next transaction is open, so a commit never sees half an operation.
 *
 * Commit: flush file data while writing every dirty item into this mount's log tree with
 * blocks from the mount's own allocator, persisting its allocator lists, and writing and
 * flushing the blocks; once both are durable, hand the log tree to the server, which makes
 * it durable in the super block.  Only then do the items become clean.  A crash before the
 * server's super write loses the whole transaction; after it, none of it.
 *
 * Commit triggers: a timer, dirty bytes over a limit, the allocators running low, fsync/sync,
 * unmount, and an invalidated cluster lock that was written under.  The timer restarts at the
 * end of every commit, whatever triggered it (the original restarts its sync deadline after
 * each commit): nothing stays uncommitted longer than the interval plus a commit, and a sync
 * is not followed by a needless small commit a moment later.  Never wait for a commit
 * while holding the transaction.
 *
 * The next transaction opens when it is first held, not when the last one commits: an idle
 * mount has no open transaction, so it holds back neither the last stable seq that index
 * walks stop at nor the lock invalidation that made it commit.  A commit of an open
 * transaction always reaches the server, even with nothing dirty, so that it stops counting
 * as open.
 */
import { ExtentAlloc, ListAllocator, readList, type Extent } from '../storage/alloc.js'
import type { BlockCache } from '../storage/block.js'
import { Btree, BtreeTxn, ITEM_DELETION, type Item } from '../storage/btree.js'
import type { BlockDevice } from '../storage/device.js'
import { FsError } from '../util/errors.js'
import type { Forest } from './forest.js'
import type { ItemCache } from './item-cache.js'
import type { LogTrees, ServerApi } from '../protocol/server-api.js'

export interface TransOptions {
  commitIntervalMs?: number
  /** commit once this many bytes of items are dirty */
  dirtyLimitBytes?: number
  log?: (msg: string, fields?: Record<string, unknown>) => void
}

export interface TransCounters {
  commits: number
  commitItems: number
  commitBlocks: number
  commitMs: number
  lastCommitMs: number
}

const EMPTY = Buffer.alloc(0)
/**
 * Commit when the mount's metadata avail list falls below this, or below half of what the
 * server handed out (a small device gets smaller lists; the server refills below half of its
 * target, so the commit that follows gets a full list again).
 */
const META_AVAIL_RESERVE = 256
/** data blocks taken from the allocator tree at a time and handed out from memory (8 MiB) */
const DATA_PREALLOC = 2048

/** where one commit's time went (ms), for the commit log line */
export interface CommitPhases {
  /** listing the item cache's dirty items in key order */
  list: number
  /** waiting for the file data's flush once the blocks are flushed (it runs alongside them) */
  data: number
  items: number
  write: number
  flush: number
  server: number
  /** marking the committed items clean in the item cache */
  done: number
}

interface Open {
  lt: LogTrees
  alloc: ListAllocator
  txn: BtreeTxn
  logTree: Btree
  dataAvail: ExtentAlloc
  dataFreed: ExtentAlloc
  /** the front of an extent taken from dataAvail, allocated from without touching the tree */
  cached: Extent | undefined
  /** commit when alloc's avail list falls below this many blocks */
  metaReserve: number
}

export class Trans {
  readonly counters: TransCounters = { commits: 0, commitItems: 0, commitBlocks: 0, commitMs: 0, lastCommitMs: 0 }
  private cur: Open | undefined
  private holders = 0
  private drained: (() => void) | undefined
  private committing: Promise<void> | undefined
  private dataLock: Promise<unknown> = Promise.resolve()
  private timer: NodeJS.Timeout | undefined
  private closed = false
  /** inodes created and deleted in the open transaction (the server keeps the total) */
  inodesCreated = 0
  inodesDeleted = 0
  /** listeners told after every commit (durable seq) */
  onCommit: ((seq: number, ms: number, items: number, phases: CommitPhases) => void) | undefined

  constructor(
    private readonly server: ServerApi,
    readonly rid: number,
    private readonly cache: BlockCache,
    private readonly items: ItemCache,
    private readonly forest: Forest,
    private readonly meta: BlockDevice,
    private readonly data: BlockDevice,
    private readonly opts: TransOptions = {},
  ) {}

  private opening: Promise<void> | undefined
  /** seq of the last transaction committed (0: none yet) */
  committedSeq = 0

  /** seq of the open transaction, 0 when none is open */
  get openSeq(): number {
    return this.cur?.lt.getTransSeq ?? 0
  }

  private get seq(): number {
    if (!this.cur) throw new FsError('EIO', 'no transaction is open')
    return this.cur.lt.getTransSeq
  }

  start(): void {
    this.armTimer()
  }

  /** (Re)start the commit timer: a commit of what is open `commitIntervalMs` from now. */
  private armTimer(): void {
    if (this.timer) clearTimeout(this.timer)
    if (this.closed) return
    this.timer = setTimeout(() => {
      this.timer = undefined
      // a commit running now re-arms the timer when it ends
      if (this.committing) return
      if (this.cur) void this.commit().catch((e: unknown) => this.commitFailed(e))
      else this.armTimer()
    }, this.opts.commitIntervalMs ?? 10_000)
    this.timer.unref()
  }

  private async open(): Promise<void> {
    const lt = await this.server.getLogTrees(this.rid)
    const avail = await readList(this.cache, lt.metaAvail)
    const alloc = new ListAllocator(avail.entries, [], 'mount meta')
    for (const r of avail.blocks) alloc.free(r.blkno)
    const txn = new BtreeTxn(this.cache, alloc)
    this.cur = {
      lt,
      alloc,
      txn,
      logTree: new Btree(lt.itemRoot, this.cache, txn),
      dataAvail: new ExtentAlloc(lt.dataAvail, this.cache, txn, 'mount data_avail'),
      dataFreed: new ExtentAlloc(lt.dataFreed, this.cache, txn, 'mount data_freed'),
      cached: undefined,
      metaReserve: Math.min(META_AVAIL_RESERVE, Math.floor(avail.entries.length / 2)),
    }
  }

  /** hold() when it need not wait (a transaction is open and no commit runs); else undefined. */
  tryHold(): number | undefined {
    if (this.closed || this.committing || !this.cur) return undefined
    this.holders++
    return this.cur.lt.getTransSeq
  }

  /** Enter the open transaction (opening it if none is); returns its seq.  Pair with release(). */
  async hold(): Promise<number> {
    for (;;) {
      if (this.closed) throw new FsError('EROFS', 'the filesystem is unmounting')
      if (this.committing) {
        await this.committing.catch(() => undefined)
        continue
      }
      if (!this.cur) {
        this.opening ??= this.open().finally(() => (this.opening = undefined))
        await this.opening
        continue
      }
      this.holders++
      return this.seq
    }
  }

  release(): void {
    this.holders--
    if (this.holders === 0 && this.drained) this.drained()
    if (
      !this.committing &&
      (this.items.dirtyBytes > (this.opts.dirtyLimitBytes ?? 16 << 20) ||
        (this.cur && this.cur.alloc.avail.length < this.cur.metaReserve))
    )
      void this.commit().catch((e: unknown) => this.commitFailed(e))
  }

  /** A commit nobody waits for failed: say so (the next commit tries again). */
  private commitFailed(e: unknown): void {
    this.opts.log?.('background commit failed', { err: e instanceof Error ? e.message : String(e) })
  }

  /** Commit the open transaction (if anything is dirty) and open the next one. */
  commit(): Promise<void> {
    if (this.committing) {
      // a commit is running: wait for it, then commit whatever came after it
      const prev = this.committing
      return prev.catch(() => undefined).then(() => (this.cur ? this.commit() : undefined))
    }
    const p = this.doCommit().finally(() => {
      this.committing = undefined
      this.armTimer()
    })
    this.committing = p
    return p
  }

  private async doCommit(): Promise<void> {
    if (this.opening) await this.opening.catch(() => undefined)
    if (this.holders > 0) await new Promise<void>((res) => (this.drained = res))
    this.drained = undefined
    const t0 = Date.now()
    const c = this.cur
    if (!c) return // nothing was held since the last commit
    let tp = performance.now()
    const phases: CommitPhases = { list: 0, data: 0, items: 0, write: 0, flush: 0, server: 0, done: 0 }
    const phase = (k: keyof CommitPhases): void => {
      const now = performance.now()
      phases[k] += Math.round((now - tp) * 100) / 100
      tp = now
    }
    const dirty = this.items.dirtyList()
    phase('list')
    // file data is flushed while the items are written (as the original starts data writeback
    // and waits for it after writing its btree blocks): both are durable before the server
    // hears of the tree, and nothing references the tree's blocks until then
    const dataFlushed = this.data.flush()
    dataFlushed.catch(() => undefined) // awaited below; not unhandled if a step before fails
    // what is left of the cached data extent goes back to the allocator it came from
    if (c.cached) {
      await c.dataAvail.free(c.cached.start, c.cached.len)
      c.cached = undefined
    }
    let maxSeq = c.lt.maxItemSeq
    const puts: Item[] = new Array<Item>(dirty.length)
    for (let i = 0; i < dirty.length; i++) {
      const d = dirty[i]!
      puts[i] = { key: d.key, val: d.val ?? EMPTY, seq: d.seq, flags: d.val ? 0 : ITEM_DELETION }
      if (d.seq > maxSeq) maxSeq = d.seq
    }
    // the item cache's buffers: it never changes them, it replaces them
    await c.logTree.putSorted(puts)
    const lists = c.alloc.persist(this.cache.fsid)
    const blocks = c.txn.dirtyBlocks + lists.blocks.length
    phase('items')
    await c.txn.write()
    await this.cache.writeBlocks(lists.blocks)
    phase('write')
    await this.meta.flush()
    phase('flush')
    await dataFlushed
    phase('data')
    const lt: LogTrees = {
      ...c.lt,
      itemRoot: c.logTree.root,
      metaAvail: lists.avail,
      metaFreed: lists.freed,
      dataAvail: c.dataAvail.root,
      dataFreed: c.dataFreed.root,
      maxItemSeq: maxSeq,
      inodesCreated: this.inodesCreated,
      inodesDeleted: this.inodesDeleted,
    }
    await this.server.commitLogTrees(lt)
    phase('server')
    this.inodesCreated = 0
    this.inodesDeleted = 0
    c.alloc.committed()
    this.items.commitDone(dirty)
    this.forest.invalidateRoots()
    phase('done')
    const ms = Date.now() - t0
    this.counters.commits++
    this.counters.commitItems += dirty.length
    this.counters.commitBlocks += blocks
    this.counters.commitMs += ms
    this.counters.lastCommitMs = ms
    this.committedSeq = lt.getTransSeq
    this.onCommit?.(lt.getTransSeq, ms, dirty.length, phases)
    this.cur = undefined
  }

  /** Serialize data-allocator changes (their btrees take one writer at a time). */
  private withData<T>(fn: (c: Open) => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      if (!this.cur) throw new FsError('EIO', 'no transaction is open')
      return fn(this.cur)
    }
    const p = this.dataLock.then(run, run)
    this.dataLock = p.catch(() => undefined)
    return p
  }

  /**
   * Allocate up to `max` contiguous data blocks.  ENOBUFS: this transaction's allocator is
   * empty; release the hold, commit (which refills it) and try again.
   */
  allocData(max: number): Promise<Extent> {
    return this.withData(async (c) => {
      if (!c.cached || c.cached.len === 0) {
        c.cached = await c.dataAvail.allocLargest(Math.max(max, DATA_PREALLOC))
        if (!c.cached) throw new FsError('ENOBUFS', 'the mount has no data blocks left in this transaction')
      }
      const take = Math.min(max, c.cached.len)
      const e = { start: c.cached.start, len: take }
      c.cached = { start: c.cached.start + take, len: c.cached.len - take }
      return e
    })
  }

  /** Free data blocks; reusable only after this transaction is durable. */
  freeData(start: number, len: number): Promise<void> {
    return this.withData((c) => c.dataFreed.free(start, len))
  }

  /**
   * Make sure `blocks` data blocks can be allocated in this transaction: ENOBUFS now, before
   * the caller changes anything, rather than halfway through its changes.
   */
  reserveData(blocks: number): void {
    if (blocks > this.dataAvailBlocks)
      throw new FsError(
        'ENOBUFS',
        `the mount has ${this.dataAvailBlocks} data blocks left in this transaction, ${blocks} needed`,
      )
  }

  /** Data blocks this mount could still allocate in this transaction. */
  get dataAvailBlocks(): number {
    return (this.cur?.dataAvail.totalLen ?? 0) + (this.cur?.cached?.len ?? 0)
  }

  /** Commit what is dirty and stop; later holds fail. */
  async close(): Promise<void> {
    await this.commit()
    this.closed = true
    // the commit re-armed it
    if (this.timer) clearTimeout(this.timer)
  }
}
