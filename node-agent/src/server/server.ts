/*
 * The server: the only writer of the super block.  It records each mount's committed log
 * tree, hands out transaction seqs, inode numbers and allocators, merges finalized log trees
 * into the fs root in the background, and reclaims mounts that are gone.
 *
 * Every request runs as one server transaction (SuperWriter begin .. commit), serialized, and
 * resolves only once that transaction is durable.  Requests are idempotent: a repeated
 * getLogTrees returns the transaction already open, a repeated commitLogTrees is a no-op, and
 * reclaiming a mount deletes its mounted-client record last.
 *
 * Allocator hand-out keeps the rule that nothing freed is reused before it is durable: a
 * mount's freed list and data_freed tree are drained into the server's allocators only when
 * the mount opens its next transaction, i.e. after the commit that freed them.
 *
 * Merging never lets an item go backwards (DESIGN §6): a merged deletion removes the fs-root
 * item only when no other log tree holds an older copy of the key; otherwise the fs root keeps
 * the deletion item (a tombstone) until the last older copy has been merged.  So each log tree
 * is merged on its own, whenever it is finalized, without waiting for the other mounts.
 *
 * The roots version readers compare is the super block's write seq: it only grows, across
 * server restarts too, so a lock grant naming a version is never mistaken for an older one.
 *
 * A farewell is answered once the mount may leave (farewell-gate.ts: quorum members do not
 * leave the remaining ones without a majority) and its record is reclaimed.
 */
import { ExtentAlloc, encodeList, readList } from '../storage/alloc.js'
import { Btree, ITEM_DELETION, type Item } from '../storage/btree.js'
import type { BlockDevice } from '../storage/device.js'
import { FsError } from '../util/errors.js'
import { FarewellGate } from './farewell-gate.js'
import {
  EMPTY_LIST,
  EMPTY_ROOT,
  FORMAT_VERSION,
  INODE_GROUP,
  LIST_BLOCK_CAPACITY,
  type ListHead,
} from '../storage/format.js'
import {
  LOG_TREES_FINALIZED,
  LOG_TREES_FIRST,
  LOG_TREES_LAST,
  decodeLogTrees,
  encodeLogTrees,
  logTreesKey,
  mountedClientKey,
  decodeMountIdentity,
  encodeMountIdentity,
  NO_IDENTITY,
  type MountIdentity,
  type GreetingReply,
  type LogTrees,
  type Roots,
  type ServerApi,
  type ServerStatfs,
} from '../protocol/server-api.js'
import { SuperWriter } from '../storage/super-writer.js'
import { ServerLease } from './server-lease.js'
import { randomInt } from 'node:crypto'

const EMPTY_VAL = Buffer.alloc(0)

/**
 * A mount's meta avail list is refilled below LOW up to TARGET blocks.  On a small metadata
 * device both shrink (mountMetaFill): at most an eighth of the device per mount, so a few
 * mounts never hold every free block in their lists while df shows the device nearly empty.
 */
export const MOUNT_META_LOW = 512
export const MOUNT_META_TARGET = 2048
/** the smallest fill target, however small the device (64 blocks: 4 MiB) */
export const MOUNT_META_MIN_TARGET = 64

/** the fill target and low-water mark of a mount's meta avail list on this device */
export function mountMetaFill(totalMetaBlocks: number): { target: number; low: number } {
  const target = Math.max(MOUNT_META_MIN_TARGET, Math.min(MOUNT_META_TARGET, Math.floor(totalMetaBlocks / 8)))
  return { target, low: Math.min(MOUNT_META_LOW, Math.floor(target / 2)) }
}
/** blocks a mount freed go back onto its own avail list up to this many */
export const MOUNT_META_MAX = 4096
/**
 * A mount's data avail is refilled below a quarter of its target, up to the target: an eighth
 * of the data device, from 8 MiB up to 4 GiB of 4 KiB blocks (the original's: 4 GiB, refilled
 * below 1 GiB).  A mount whose avail runs dry commits to get more, and a commit waits for the
 * data written since the last one to reach the device: a sequential writer pays that once per
 * 3 GiB on a large device (at 256 MiB, 1 GiB written took 3 such commits of 100-250 ms each).
 */
export const MOUNT_DATA_TARGET = 1048576 // 4 GiB
export const MOUNT_DATA_MIN_TARGET = 2048 // 8 MiB

/** the fill target and low-water mark of a mount's data avail on this device */
export function mountDataFill(totalDataBlocks: number): { target: number; low: number } {
  const target = Math.max(MOUNT_DATA_MIN_TARGET, Math.min(MOUNT_DATA_TARGET, Math.floor(totalDataBlocks / 8)))
  return { target, low: Math.floor(target / 4) }
}
/** a log tree this tall is finalized and merged into the fs root */
export const FINALIZE_HEIGHT = 2
/** items merged per server transaction */
export const MERGE_BATCH = 4000
/**
 * items a merge step applies at once (sorted puts into the fs root, sorted deletes from the
 * finalized tree), with a turn of the event loop between slices: a step's blocks are mostly
 * cached, so without turns its whole batch would run as one chain of promise reactions and the
 * serving agent's own mount would answer no FUSE request until the step ended.  A slice
 * dirties at most a few blocks per item; the server's avail list is refilled between slices.
 */
const MERGE_SLICE = 64
/** the avail list a merge slice starts with, at least (blocks; SuperWriter.reserve) */
const MERGE_SLICE_BLOCKS = 4 * MERGE_SLICE

/** Let the event loop run what is ready (I/O, FUSE requests, gRPC) before going on. */
const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r))

export interface ServerCounters {
  commits: number
  logCommits: number
  merges: number
  mergedItems: number
  /** time spent in merge steps */
  mergeMs: number
  reclaims: number
  /** deletions kept in the fs root because an older copy was still in another log tree */
  tombstones: number
}

export interface ServerOptions {
  /** log lines (structured logging is the caller's) */
  log?: (msg: string, fields?: Record<string, unknown>) => void
  /**
   * reclaim every mount recorded as mounted when the server starts (default true: a lone
   * server); a cluster server waits for them to reconnect and reclaims only the absent
   */
  reclaimAtStart?: boolean
  /**
   * take the single-server lease (server-lease.ts; default true): without a quorum nothing
   * else keeps a second server off the devices.  A quorum leader has fenced its predecessors
   * instead and passes false.
   */
  lease?: boolean
  /** how many quorum slots elect a leader (0 or none: no quorum; farewell-gate.ts) */
  quorumMajority?: number
}

export class Server implements ServerApi {
  readonly counters: ServerCounters = {
    commits: 0,
    logCommits: 0,
    merges: 0,
    mergedItems: 0,
    mergeMs: 0,
    reclaims: 0,
    tombstones: 0,
  }
  private chain: Promise<unknown> = Promise.resolve()
  private roots: Roots = { fsRoot: EMPTY_ROOT, logTrees: [], version: 0 }
  private merging = false
  private stopped = false
  private mergeDone: Promise<void> = Promise.resolve()

  private lease: ServerLease | undefined
  /**
   * Asks the other mounts for the open map (server-role.ts ClusterServer sets it); without
   * it this server serves a single mount and no other mount has anything open.
   */
  openMap: ((rid: number, group: number) => Promise<number[]>) | undefined
  /** mounts reclaimed since this server started: a greeting from one is refused */
  private readonly reclaimed = new Set<number>()

  /** when a mount that says farewell may leave */
  readonly farewells: FarewellGate

  private constructor(
    readonly w: SuperWriter,
    private readonly log: NonNullable<ServerOptions['log']>,
    quorumMajority: number,
  ) {
    this.farewells = new FarewellGate(quorumMajority, log)
  }

  /**
   * Start serving the filesystem on `meta`.  The core counter is moved above every seq the
   * log trees hold (a server that died may not have written its last increments).
   */
  static async start(meta: BlockDevice, opts: ServerOptions = {}): Promise<Server> {
    const w = await SuperWriter.open(meta)
    const s = new Server(w, opts.log ?? (() => undefined), opts.quorumMajority ?? 0)
    if (opts.lease ?? true) s.lease = await ServerLease.acquire(meta, w.sb.fsid, randomInt(1, 2 ** 47))
    await s.refreshRoots()
    let floor = 0
    for (const lt of s.roots.logTrees) floor = Math.max(floor, lt.maxItemSeq, lt.getTransSeq, lt.commitTransSeq)
    await s.seedSeq(floor + 1)
    if (opts.reclaimAtStart ?? true) {
      // a lone server that starts is the only one: every mount it finds recorded is gone
      for (const rid of await s.recordedMounts()) await s.reclaim(rid)
    }
    // recorded mounts count as mounted until they greet again or are reclaimed
    for (const rid of await s.recordedMounts()) s.farewells.mounted(rid)
    s.kickMerge()
    return s
  }

  /** What the mounted-client record of `rid` says about it (all unknown without a record). */
  async identityOf(rid: number): Promise<MountIdentity> {
    const v = await new Btree(this.w.sb.mountedClients, this.w.cache).lookup(mountedClientKey(rid))
    return v ? decodeMountIdentity(v.val) : { ...NO_IDENTITY }
  }

  /** The mounts the super block records as mounted (rids). */
  async recordedMounts(): Promise<number[]> {
    const rids: number[] = []
    for await (const it of new Btree(this.w.sb.mountedClients, this.w.cache).range(
      mountedClientKey(0),
      mountedClientKey(0x1fffffffffffff),
    ))
      rids.push(Number(it.key.readBigUInt64BE(1)))
    return rids
  }

  /** Make the core counter issue nothing below `min` from now on (durably). */
  async seedSeq(min: number): Promise<void> {
    if (this.w.sb.nextSeq >= min) return
    await this.txn(async (w) => {
      if (w.sb.nextSeq < min) w.sb.nextSeq = min
    })
  }

  /**
   * The next seq of the core counter for a lock grant's write_seq.  Not committed by itself
   * (the next server commit carries it); a new server starts above every write_seq its
   * clients report in lock recovery.
   */
  nextLockSeq(): number {
    return this.w.nextSeq()
  }

  /** the version of the committed roots (the super block's write seq) */
  get rootsVersion(): number {
    return this.roots.version
  }

  /** the committed log trees, as readers see them */
  get logTrees(): readonly LogTrees[] {
    return this.roots.logTrees
  }

  get fsid(): bigint {
    return this.w.sb.fsid
  }

  /** Stop background work; requests after this fail. */
  async stop(): Promise<void> {
    this.stopped = true
    this.farewells.close()
    await this.mergeDone
    await this.chain.catch(() => undefined)
    await this.lease?.release()
    this.lease = undefined
  }

  /** Run `fn` as one durable server transaction, serialized with every other. */
  private txn<T>(fn: (w: SuperWriter) => Promise<T>): Promise<T> {
    const run = async (): Promise<T> => {
      if (this.stopped) throw new FsError('ENXIO', 'the server has stopped')
      await this.w.begin()
      let r: T
      try {
        r = await fn(this.w)
        await this.w.reserve()
      } catch (e) {
        this.w.abort()
        throw e
      }
      await this.w.commit()
      this.counters.commits++
      await this.refreshRoots()
      return r
    }
    const p = this.chain.then(run, run)
    this.chain = p.catch(() => undefined)
    return p
  }

  private async refreshRoots(): Promise<void> {
    const logTrees: LogTrees[] = []
    for await (const it of new Btree(this.w.sb.logsRoot, this.w.cache).range(LOG_TREES_FIRST, LOG_TREES_LAST))
      logTrees.push(decodeLogTrees(it.val))
    this.roots = { fsRoot: this.w.sb.fsRoot, logTrees, version: this.w.sb.writeSeq }
  }

  private async allLogTrees(w: SuperWriter): Promise<LogTrees[]> {
    const out: LogTrees[] = []
    for await (const it of w.logs.range(LOG_TREES_FIRST, LOG_TREES_LAST)) out.push(decodeLogTrees(it.val))
    return out
  }

  private async currentLogTrees(w: SuperWriter, rid: number): Promise<LogTrees | undefined> {
    for await (const it of w.logs.range(logTreesKey(rid, 0), logTreesKey(rid, 0x1fffffffffffff), { reverse: true }))
      return decodeLogTrees(it.val)
    return undefined
  }

  private async putLogTrees(w: SuperWriter, lt: LogTrees): Promise<void> {
    await w.logs.put(logTreesKey(lt.rid, lt.nr), encodeLogTrees(lt), 0)
  }

  /** Free a list's blocks and return its entries to meta_alloc. */
  private async drainList(w: SuperWriter, head: ListHead): Promise<void> {
    if (!head.totalNr) return
    const l = await readList(w.cache, head)
    for (const r of l.blocks) w.freeBlock(r.blkno)
    await w.freeToMetaAlloc(l.entries)
  }

  /** Move every extent of a mount's data tree into data_alloc. */
  private async drainData(w: SuperWriter, root: LogTrees['dataFreed']): Promise<LogTrees['dataFreed']> {
    const a = new ExtentAlloc(root, w.cache, w.txn, 'mount data')
    await a.moveTo(w.dataAlloc, a.totalLen)
    return a.root
  }

  async greeting(
    rid: number,
    fsid: bigint,
    formatVersion: number,
    who?: MountIdentity,
    quorumSlot?: number,
  ): Promise<GreetingReply> {
    if (fsid !== this.w.sb.fsid)
      throw new FsError(
        'EINVAL',
        `mount of filesystem ${fsid.toString(16)} refused: this server serves ${this.w.sb.fsid.toString(16)}`,
      )
    if (formatVersion !== FORMAT_VERSION)
      throw new FsError(
        'EINVAL',
        `mount with format version ${formatVersion} refused: the server runs ${FORMAT_VERSION}`,
      )
    await this.txn(async (w) => {
      if (await w.clients.lookup(mountedClientKey(rid))) return
      // a rid that has log trees but no record was reclaimed: what it holds in memory (locks,
      // an open transaction, allocators) is no longer its own
      if (this.reclaimed.has(rid) || (await this.currentLogTrees(w, rid)))
        throw new FsError(
          'ESTALE',
          `mount ${rid.toString(16)} was reclaimed by the server (it said farewell or stopped answering); unmount it and mount again`,
        )
      await w.clients.put(mountedClientKey(rid), encodeMountIdentity(who ?? NO_IDENTITY), 0)
    })
    this.farewells.mounted(rid, quorumSlot)
    return { fsid: this.w.sb.fsid, formatVersion: FORMAT_VERSION }
  }

  async getLogTrees(rid: number): Promise<LogTrees> {
    return this.txn(async (w) => {
      let lt = await this.currentLogTrees(w, rid)
      if (lt && lt.getTransSeq > lt.commitTransSeq && !(lt.flags & LOG_TREES_FINALIZED)) return lt // a resend
      // a finalized tree belongs to the merge now: the mount continues in a new one
      if (lt && lt.flags & LOG_TREES_FINALIZED)
        lt = { ...lt, nr: lt.nr + 1, itemRoot: EMPTY_ROOT, maxItemSeq: 0, flags: 0 }
      lt ??= {
        rid,
        nr: 1,
        itemRoot: EMPTY_ROOT,
        metaAvail: EMPTY_LIST,
        metaFreed: EMPTY_LIST,
        dataAvail: { root: EMPTY_ROOT, totalLen: 0 },
        dataFreed: { root: EMPTY_ROOT, totalLen: 0 },
        getTransSeq: 0,
        commitTransSeq: 0,
        maxItemSeq: 0,
        flags: 0,
        inodesCreated: 0,
        inodesDeleted: 0,
      }
      // what the mount freed in its last (durable) commit may be reused now: metadata blocks
      // go back onto its own avail list while that has room (no meta_alloc rewrite)
      let reuse: number[] = []
      if (lt.metaFreed.totalNr) {
        const freed = await readList(w.cache, lt.metaFreed)
        for (const r of freed.blocks) w.freeBlock(r.blkno)
        if (lt.metaAvail.totalNr + freed.entries.length <= MOUNT_META_MAX) reuse = freed.entries
        else await w.freeToMetaAlloc(freed.entries)
      }
      lt.metaFreed = EMPTY_LIST
      lt.dataFreed = await this.drainData(w, lt.dataFreed)
      // a tree that grew past one leaf while its merge of an older one was pending
      lt = await this.finalizeIfFull(w, lt)

      const fill = mountMetaFill(w.sb.totalMetaBlocks)
      if (reuse.length || lt.metaAvail.totalNr < fill.low) {
        const l = await readList(w.cache, lt.metaAvail)
        for (const r of l.blocks) w.freeBlock(r.blkno)
        const entries = [...l.entries, ...reuse]
        if (entries.length < fill.low) {
          // refill from meta_alloc up to the target
          while (entries.length < fill.target) {
            const e = await w.metaAlloc.allocLargest(fill.target - entries.length)
            if (!e) break
            for (let b = e.start; b < e.start + e.len; b++) entries.push(b)
          }
        }
        const need = Math.ceil(entries.length / LIST_BLOCK_CAPACITY)
        const blknos = Array.from({ length: need }, () => w.allocBlock())
        const enc = encodeList(w.sb.fsid, entries, blknos)
        for (const b of enc.blocks) w.addBlock(b.blkno, b.buf)
        lt.metaAvail = enc.head
      }
      const dataFill = mountDataFill(w.sb.totalDataBlocks)
      if (lt.dataAvail.totalLen < dataFill.low) {
        const a = new ExtentAlloc(lt.dataAvail, w.cache, w.txn, 'mount data_avail')
        await w.dataAlloc.moveTo(a, dataFill.target - a.totalLen)
        lt.dataAvail = a.root
      }
      lt.getTransSeq = w.nextSeq()
      await this.putLogTrees(w, lt)
      return lt
    })
  }

  async commitLogTrees(lt: LogTrees): Promise<void> {
    await this.txn(async (w) => {
      const cur = await w.logs.lookup(logTreesKey(lt.rid, lt.nr))
      const c = cur && decodeLogTrees(cur.val)
      if (c && c.commitTransSeq >= lt.getTransSeq) return // a resend
      if (c && c.flags & LOG_TREES_FINALIZED)
        throw new FsError(
          'ESTALE',
          `commit of log tree ${lt.rid}.${lt.nr} seq ${lt.getTransSeq}: the mount was reclaimed; its open transaction is lost`,
        )
      if (!c || c.getTransSeq !== lt.getTransSeq)
        throw new FsError(
          'EINVAL',
          `commit of log tree ${lt.rid}.${lt.nr} seq ${lt.getTransSeq}: no such open transaction`,
        )
      w.sb.inodeCount = Math.max(0, w.sb.inodeCount + lt.inodesCreated - lt.inodesDeleted)
      // finalized now, not at the mount's next transaction: the merge starts at once (an idle
      // mount's last tree is merged too), and the mount continues in the next tree
      const committed = { ...lt, commitTransSeq: lt.getTransSeq, inodesCreated: 0, inodesDeleted: 0 }
      await this.putLogTrees(w, await this.finalizeIfFull(w, committed))
    })
    this.counters.logCommits++
    this.kickMerge()
  }

  /**
   * Finalize `lt`, the mount's current tree with no transaction open in it, once it has grown
   * to FINALIZE_HEIGHT: it is stored FINALIZED, without allocators, for the merge, and the
   * mount continues in tree nr+1, which takes the allocators (and the blocks its last commit
   * freed).  One finalized tree per mount waits for the merge at a time: until it is merged
   * the current tree keeps growing, so a mount never has more than two trees.  Returns the
   * mount's current tree: `lt`, or the next one (the caller stores it).
   */
  private async finalizeIfFull(w: SuperWriter, lt: LogTrees): Promise<LogTrees> {
    if (lt.itemRoot.height < FINALIZE_HEIGHT) return lt
    for await (const it of w.logs.range(logTreesKey(lt.rid, 0), logTreesKey(lt.rid, 0x1fffffffffffff)))
      if (decodeLogTrees(it.val).flags & LOG_TREES_FINALIZED) return lt
    await this.putLogTrees(w, {
      ...lt,
      metaAvail: EMPTY_LIST,
      metaFreed: EMPTY_LIST,
      dataAvail: { root: EMPTY_ROOT, totalLen: 0 },
      dataFreed: { root: EMPTY_ROOT, totalLen: 0 },
      flags: lt.flags | LOG_TREES_FINALIZED,
    })
    return { ...lt, nr: lt.nr + 1, itemRoot: EMPTY_ROOT, maxItemSeq: 0, flags: 0 }
  }

  /**
   * A range of unused inode numbers.  It starts on an inode-group boundary (INODE_GROUP), so
   * the inodes two mounts create never share a group lock.
   */
  async allocInodes(_rid: number, count: number): Promise<{ first: number; count: number }> {
    return this.txn(async (w) => {
      const first = Math.ceil(w.sb.nextIno / INODE_GROUP) * INODE_GROUP
      w.sb.nextIno = first + count
      return { first, count }
    })
  }

  async getRoots(): Promise<Roots> {
    return this.roots
  }

  async getLastSeq(): Promise<number> {
    let last = this.w.sb.nextSeq - 1
    for (const lt of this.roots.logTrees)
      if (lt.getTransSeq > lt.commitTransSeq && !(lt.flags & LOG_TREES_FINALIZED))
        last = Math.min(last, lt.getTransSeq - 1)
    return last
  }

  async statfs(): Promise<ServerStatfs> {
    const sb = this.w.sb
    let freeMeta = sb.metaAlloc.totalLen + sb.serverAvail.totalNr + sb.serverFreed.totalNr
    let freeData = sb.dataAlloc.totalLen
    for (const lt of this.roots.logTrees) {
      freeMeta += lt.metaAvail.totalNr + lt.metaFreed.totalNr
      freeData += lt.dataAvail.totalLen + lt.dataFreed.totalLen
    }
    return {
      fsid: sb.fsid,
      totalMetaBlocks: sb.totalMetaBlocks,
      freeMetaBlocks: freeMeta,
      totalDataBlocks: sb.totalDataBlocks,
      freeDataBlocks: freeData,
      inodeCount: sb.inodeCount,
      committedSeq: await this.getLastSeq(),
    }
  }

  listMounts(): Promise<number[]> {
    return this.recordedMounts()
  }

  async farewell(rid: number, quorumSlot?: number): Promise<void> {
    if (await this.farewells.leave(rid, quorumSlot)) await this.reclaim(rid)
  }

  async openInodes(rid: number, group: number): Promise<number[]> {
    return this.openMap ? this.openMap(rid, group) : []
  }

  /**
   * Forget a mount: finalize its open log tree (committed items survive; the merge picks
   * them up), return its allocators, and delete its mounted-client record last.
   */
  async reclaim(rid: number): Promise<void> {
    await this.txn(async (w) => {
      const lt = await this.currentLogTrees(w, rid)
      if (lt && !(lt.flags & LOG_TREES_FINALIZED)) {
        await this.drainList(w, lt.metaFreed)
        await this.drainList(w, lt.metaAvail)
        await this.drainData(w, lt.dataFreed)
        await this.drainData(w, lt.dataAvail)
        const done: LogTrees = {
          ...lt,
          metaAvail: EMPTY_LIST,
          metaFreed: EMPTY_LIST,
          dataAvail: { root: EMPTY_ROOT, totalLen: 0 },
          dataFreed: { root: EMPTY_ROOT, totalLen: 0 },
          getTransSeq: lt.commitTransSeq,
          flags: lt.flags | LOG_TREES_FINALIZED,
        }
        await this.putLogTrees(w, done)
      }
      await w.clients.delete(mountedClientKey(rid))
    })
    this.reclaimed.add(rid)
    this.farewells.gone(rid)
    this.counters.reclaims++
    this.log('reclaimed mount', { rid: rid.toString(16) })
    this.kickMerge()
  }

  /** Start merging finalized log trees in the background if it is not running. */
  private kickMerge(): void {
    if (this.merging || this.stopped) return
    if (!this.roots.logTrees.some((lt) => lt.flags & LOG_TREES_FINALIZED)) return
    this.merging = true
    this.mergeDone = (async () => {
      const start = performance.now()
      try {
        while (!this.stopped && (await this.mergeStep())) {
          // keep going while there is work
        }
      } catch (e) {
        this.log('log merge failed; will retry on the next commit', { err: (e as Error).message })
      } finally {
        this.merging = false
        this.counters.mergeMs += performance.now() - start
      }
    })()
  }

  /**
   * Merge up to MERGE_BATCH items of the oldest finalized log tree into the fs root.  Items
   * are applied newest-seq-wins, so re-merging after a crash is harmless.  Returns whether
   * there may be more to do.
   */
  private async mergeStep(): Promise<boolean> {
    return this.txn(async (w) => {
      const all = await this.allLogTrees(w)
      const target = all.find((lt) => lt.flags & LOG_TREES_FINALIZED)
      if (!target) return false
      // the finalized tree is rewritten as items are consumed, so each step starts over at
      // its first remaining item
      const src = new Btree(target.itemRoot, w.cache, w.txn)
      let n = 0
      const batch: Array<{ key: Buffer; seq: number; flags: number; val: Buffer }> = []
      for await (const it of src.range(Buffer.alloc(34, 0), Buffer.alloc(34, 0xff))) {
        batch.push(it)
        if (++n >= MERGE_BATCH) break
      }
      // every other log tree, finalized or not: where older copies of a key may still be
      const others = all
        .filter((lt) => lt !== target && lt.itemRoot.height > 0)
        .map((lt) => new Btree(lt.itemRoot, w.cache))
      const olderElsewhere = async (key: Buffer, seq: number): Promise<boolean> => {
        for (const t of others) {
          const o = await t.lookup(key)
          if (o && o.seq < seq) return true
        }
        return false
      }
      for (let at = 0; at < batch.length; at += MERGE_SLICE) {
        if (at > 0) await nextTurn()
        const slice = batch.slice(at, at + MERGE_SLICE)
        // what each item does to the fs root, decided first: puts and deletes, in key order
        const puts: Item[] = []
        const dels: Buffer[] = []
        for (const it of slice) {
          const cur = await w.fs.lookup(it.key)
          if (!cur || cur.seq <= it.seq) {
            if (it.flags & ITEM_DELETION) {
              if (await olderElsewhere(it.key, it.seq)) {
                puts.push({ key: Buffer.from(it.key), val: EMPTY_VAL, seq: it.seq, flags: ITEM_DELETION })
                this.counters.tombstones++
              } else if (cur) dels.push(it.key)
            } else {
              puts.push({ key: Buffer.from(it.key), val: Buffer.from(it.val), seq: it.seq, flags: 0 })
            }
          } else if (cur.flags & ITEM_DELETION && !(await olderElsewhere(it.key, cur.seq))) {
            // this was the last older copy a tombstone was kept for
            dels.push(it.key)
          }
        }
        await w.reserve(MERGE_SLICE_BLOCKS)
        await w.fs.putSorted(puts)
        await w.reserve(MERGE_SLICE_BLOCKS)
        for (const k of dels) await w.fs.delete(k)
        await w.reserve(MERGE_SLICE_BLOCKS)
        await src.deleteSorted(slice.map((it) => it.key))
      }
      await w.reserve()
      this.counters.mergedItems += batch.length
      if (src.root.height === 0) {
        await w.logs.delete(logTreesKey(target.rid, target.nr))
        this.counters.merges++
        return true
      }
      await this.putLogTrees(w, { ...target, itemRoot: src.root })
      return true
    })
  }

  /** Wait until no finalized log tree is left unmerged (for tests and clean shutdown). */
  async drainMerges(): Promise<void> {
    for (;;) {
      this.kickMerge()
      await this.mergeDone
      if (!this.roots.logTrees.some((lt) => lt.flags & LOG_TREES_FINALIZED) || this.stopped) return
    }
  }
}
