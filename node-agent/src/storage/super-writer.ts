/*
 * Transactions of the super block's owner: mkfs, offline tools and (later) the server.
 *
 * A SuperWriter opens the current super, and each transaction:
 *   begin   - loads the server's avail and freed lists, frees the blocks that held them, merges
 *             the freed list of the previous (durable) commit into meta_alloc, and refills the
 *             avail list from meta_alloc;
 *   ...     - callers modify trees (fs root, allocators) through the transaction;
 *   commit  - persists the lists, writes every dirty block, flushes the device, and only then
 *             writes and flushes the next super copy.
 * So a crash at any point leaves the previous super in force, referencing only blocks that no
 * later transaction has overwritten: blocks freed in a transaction become allocatable only in
 * the transaction after it is durable.
 */
import { ExtentAlloc, ListAllocator, readList } from './alloc.js'
import { BlockCache } from './block.js'
import { Btree, BtreeTxn } from './btree.js'
import type { BlockDevice } from './device.js'
import { FsError } from '../util/errors.js'
import { readSuper, writeSuper, type SuperBlock } from './super.js'

/** the server keeps at least this many blocks on its avail list between operations */
export const SERVER_AVAIL_LOW = 256
/** and refills it to this many (both less on a small device: serverAvailFill) */
export const SERVER_AVAIL_TARGET = 1024

/**
 * The server's avail list on this device: at most a sixteenth of it, so the server's list and
 * the mounts' lists (server.ts mountMetaFill) leave most blocks in meta_alloc on the smallest
 * device mkfs accepts.
 */
export function serverAvailFill(totalMetaBlocks: number): { target: number; low: number } {
  const target = Math.max(64, Math.min(SERVER_AVAIL_TARGET, Math.floor(totalMetaBlocks / 16)))
  return { target, low: Math.min(SERVER_AVAIL_LOW, Math.floor(target / 4)) }
}
/** blocks freed by the last commit go straight back onto the avail list up to this many */
export const SERVER_AVAIL_MAX = 4096
/** blocks mkfs hands the first transaction before meta_alloc exists */
export const SUPER_WRITER_BOOT_BLOCKS = 32

export interface CommitStats {
  blocks: number
  seq: number
}

interface TxnState {
  txn: BtreeTxn
  alloc: ListAllocator
  metaAlloc: ExtentAlloc
  dataAlloc: ExtentAlloc
  fs: Btree
  logs: Btree
  clients: Btree
  /** non-btree blocks (lists) this transaction writes */
  extra: Array<{ blkno: number; buf: Buffer }>
}

export class SuperWriter {
  private txnState: TxnState | undefined

  private constructor(
    readonly dev: BlockDevice,
    readonly cache: BlockCache,
    public sb: SuperBlock,
  ) {}

  static async open(dev: BlockDevice, cacheBlocks = 1024): Promise<SuperWriter> {
    const sb = await readSuper(dev)
    return new SuperWriter(dev, new BlockCache(dev, sb.fsid, cacheBlocks), sb)
  }

  /** For mkfs: a writer over a super that is not on disk yet. */
  static create(dev: BlockDevice, sb: SuperBlock, avail: number[]): SuperWriter {
    const w = new SuperWriter(dev, new BlockCache(dev, sb.fsid), sb)
    w.txnState = w.newState(new ListAllocator(avail, [], 'server meta'))
    return w
  }

  private newState(alloc: ListAllocator): TxnState {
    const txn = new BtreeTxn(this.cache, alloc)
    const sb = this.sb
    return {
      txn,
      alloc,
      metaAlloc: new ExtentAlloc(sb.metaAlloc, this.cache, txn, 'meta_alloc'),
      dataAlloc: new ExtentAlloc(sb.dataAlloc, this.cache, txn, 'data_alloc'),
      fs: new Btree(sb.fsRoot, this.cache, txn),
      logs: new Btree(sb.logsRoot, this.cache, txn),
      clients: new Btree(sb.mountedClients, this.cache, txn),
      extra: [],
    }
  }

  get inTxn(): boolean {
    return this.txnState !== undefined
  }

  private get t(): NonNullable<SuperWriter['txnState']> {
    if (!this.txnState) throw new FsError('EINVAL', 'no transaction is open')
    return this.txnState
  }

  get fs(): Btree {
    return this.t.fs
  }
  get metaAlloc(): ExtentAlloc {
    return this.t.metaAlloc
  }
  get dataAlloc(): ExtentAlloc {
    return this.t.dataAlloc
  }
  get logs(): Btree {
    return this.t.logs
  }
  get clients(): Btree {
    return this.t.clients
  }
  get txn(): BtreeTxn {
    return this.t.txn
  }
  /** a metadata block for something that is not a btree block (e.g. a list block) */
  allocBlock(): number {
    return this.t.alloc.alloc()
  }
  /** a committed block this transaction stops referencing */
  freeBlock(blkno: number): void {
    this.t.alloc.free(blkno)
  }
  /** a sealed non-btree block to write with this transaction */
  addBlock(blkno: number, buf: Buffer): void {
    this.t.extra.push({ blkno, buf })
  }
  get availBlocks(): number {
    return this.t.alloc.avail.length
  }

  async begin(): Promise<void> {
    if (this.txnState) throw new FsError('EINVAL', 'a transaction is already open')
    const avail = await readList(this.cache, this.sb.serverAvail)
    const freed = await readList(this.cache, this.sb.serverFreed)
    const alloc = new ListAllocator(avail.entries, [], 'server meta')
    this.txnState = this.newState(alloc)
    try {
      for (const r of [...avail.blocks, ...freed.blocks]) alloc.free(r.blkno)
      // the previous commit is durable: what it freed may be allocated again.  Straight onto
      // the avail list while it has room: returning them to meta_alloc would rewrite its
      // btrees in every transaction (and free their old blocks, to be returned next time)
      if (alloc.avail.length + freed.entries.length <= SERVER_AVAIL_MAX) alloc.avail.push(...freed.entries)
      else await this.freeToMetaAlloc(freed.entries)
      await this.reserve()
    } catch (e) {
      this.abort()
      throw e
    }
  }

  /** Return blocks to meta_alloc (they must be unreferenced by the durable super). */
  async freeToMetaAlloc(blknos: number[]): Promise<void> {
    const runs = blknos.slice().sort((a, b) => a - b)
    for (let i = 0; i < runs.length;) {
      let j = i + 1
      while (j < runs.length && runs[j] === runs[j - 1]! + 1) j++
      await this.metaAlloc.free(runs[i]!, j - i)
      i = j
    }
  }

  /**
   * Keep enough blocks on the avail list for the next operation (at least `min`, as far as
   * meta_alloc has them).  Call between operations (never inside one: it modifies meta_alloc).
   */
  async reserve(min = 0): Promise<void> {
    const t = this.t
    const fill = serverAvailFill(this.sb.totalMetaBlocks)
    const low = Math.max(fill.low, min)
    while (t.alloc.avail.length < low) {
      const e = await t.metaAlloc.allocLargest(Math.max(fill.target, low) - t.alloc.avail.length)
      if (!e) {
        if (t.alloc.avail.length < 16)
          throw new FsError(
            'ENOSPC',
            `the metadata device is full (${t.alloc.avail.length} blocks left on the server's list)`,
          )
        return
      }
      for (let b = e.start + e.len - 1; b >= e.start; b--) t.alloc.avail.push(b)
    }
  }

  /** Write everything and make it durable; afterwards no transaction is open. */
  async commit(): Promise<CommitStats> {
    const t = this.t
    const sb: SuperBlock = {
      ...this.sb,
      fsRoot: t.fs.root,
      logsRoot: t.logs.root,
      mountedClients: t.clients.root,
      metaAlloc: t.metaAlloc.root,
      dataAlloc: t.dataAlloc.root,
    }
    let blocks: number
    try {
      const lists = t.alloc.persist(sb.fsid)
      blocks = t.txn.dirtyBlocks + lists.blocks.length + t.extra.length
      await t.txn.write()
      await this.cache.writeBlocks([...lists.blocks, ...t.extra])
      await this.dev.flush()
      sb.serverAvail = lists.avail
      sb.serverFreed = lists.freed
      this.sb = this.keepSeq(await writeSuper(this.dev, sb))
    } catch (e) {
      // nothing the failed commit wrote is referenced by the super on disk: start over from it
      this.abort()
      this.sb = this.keepSeq(await readSuper(this.dev).catch(() => this.sb))
      throw e
    }
    t.alloc.committed()
    this.txnState = undefined
    return { blocks, seq: this.sb.writeSeq }
  }

  /** Drop the open transaction: the super on disk stays as it was. */
  abort(): void {
    this.txnState?.txn.discard()
    this.txnState = undefined
    this.cache.clear()
  }

  /**
   * `next` with the core counter as it is now: seqs are issued outside transactions too (lock
   * grants' write seqs, while a commit is writing), and the super this commit captured at its
   * start must not take the counter back below what was issued meanwhile.  Read and assigned
   * in one synchronous step.
   */
  private keepSeq(next: SuperBlock): SuperBlock {
    if (next.nextSeq < this.sb.nextSeq) next.nextSeq = this.sb.nextSeq
    return next
  }

  /** Issue the next seq of the core counter (committed with the next super write). */
  nextSeq(): number {
    return this.sb.nextSeq++
  }
}
