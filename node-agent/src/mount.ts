/*
 * One agent's mount of a filesystem: opens the devices, joins the server (in-process here;
 * the cluster puts it on the network behind the same ServerApi), assembles forest, item
 * cache, transactions and the filesystem, mounts it through FUSE, and serves metrics and the
 * admin socket.  stop() undoes all of it in reverse: unmount, commit, farewell, close.
 */
import { randomInt } from 'node:crypto'
import type { Logger } from 'pino'
import { AdminServer, adminSocketPath } from './admin.js'
import { BlockCache } from './block.js'
import { btreeCounters } from './btree.js'
import { FileDevice, type BlockDevice } from './device.js'
import { FsError } from './errors.js'
import { FORMAT_VERSION } from './format.js'
import { Forest, forestCounters } from './forest.js'
import { Filesystem } from './fs.js'
import { FuseAdapter } from './fuse.js'
import { ItemCache } from './item-cache.js'
import { AgentMetrics } from './metrics.js'
import { Server } from './server.js'
import { readDataSuper, readSuper } from './super.js'
import { Trans } from './trans.js'
import { tsToMs } from './fs-items.js'
import { resolve } from 'node:path'

export interface MountOptions {
  metaPath: string
  dataPath: string
  mountpoint: string
  log: Logger
  commitIntervalMs?: number
  itemCacheItems?: number
  blockCacheBlocks?: number
  metricsAddr?: string
  fuseDebug?: boolean
}

export class Mount {
  private stopping: Promise<void> | undefined
  metricsAddr: string | undefined
  /** called when an unmount requested over the admin socket has finished */
  onStopped: (() => void) | undefined

  private constructor(
    readonly opts: MountOptions,
    readonly meta: BlockDevice,
    readonly data: BlockDevice,
    readonly server: Server,
    readonly rid: number,
    readonly cache: BlockCache,
    readonly items: ItemCache,
    readonly trans: Trans,
    readonly fs: Filesystem,
    readonly metrics: AgentMetrics,
    private fuse: FuseAdapter | undefined,
    private admin: AdminServer | undefined,
  ) {}

  static async start(o: MountOptions): Promise<Mount> {
    const log = o.log
    const mountpoint = resolve(o.mountpoint)
    const meta = await FileDevice.open(o.metaPath)
    const data = await FileDevice.open(o.dataPath).catch(async (e) => {
      await meta.close()
      throw e
    })
    const cleanup: Array<() => Promise<unknown>> = [() => data.close(), () => meta.close()]
    try {
      const sb = await readSuper(meta)
      const dsb = await readDataSuper(data)
      if (!dsb || dsb.fsid !== sb.fsid)
        throw new FsError(
          'EINVAL',
          `${o.dataPath} is not the data device of filesystem ${sb.fsid.toString(16)} on ${o.metaPath}` +
            (dsb ? ` (it belongs to ${dsb.fsid.toString(16)})` : ''),
        )
      const server = await Server.start(meta, { log: (msg, f) => log.info({ ...f, role: 'server' }, msg) })
      cleanup.unshift(() => server.stop())
      const rid = randomInt(1, 2 ** 47)
      await server.greeting(rid, sb.fsid, FORMAT_VERSION)
      const cache = new BlockCache(meta, sb.fsid, o.blockCacheBlocks ?? 1024)
      cache.onBadBlock = (err, blkno) => log.error({ blkno, code: err.code }, err.message)
      const forest = new Forest(cache, () => server.getRoots())
      const items = new ItemCache(forest, o.itemCacheItems ?? 500_000)
      const trans = new Trans(server, rid, cache, items, forest, meta, data, {
        commitIntervalMs: o.commitIntervalMs,
        log: (msg, f) => log.error(f ?? {}, msg),
      })
      trans.onCommit = (seq, ms, n) => log.debug({ seq, ms, items: n }, 'commit')
      await trans.start()
      const fs = new Filesystem(items, trans, server, data, rid)
      const orphans = await fs.deleteOrphans()
      if (orphans) log.info({ orphans }, 'deleted orphaned inodes')

      const metrics = new AgentMetrics({ fsid: sb.fsid.toString(16).padStart(16, '0'), rid: rid.toString(16) })
      const m = new Mount(o, meta, data, server, rid, cache, items, trans, fs, metrics, undefined, undefined)
      m.addReadings()
      if (o.metricsAddr) m.metricsAddr = await metrics.listen(o.metricsAddr)
      cleanup.unshift(() => metrics.close())

      m.fuse = await FuseAdapter.mount(metrics.instrument(fs), mountpoint, {
        debug: o.fuseDebug,
        fsname: `scoutfs:${sb.fsid.toString(16).padStart(16, '0')}`,
        log: { error: (msg, err) => log.error({ err: String(err) }, msg), warn: (msg) => log.warn(msg) },
      })
      cleanup.unshift(() => m.fuse!.unmount())
      m.admin = await AdminServer.listen(adminSocketPath(mountpoint), m.adminRoutes())
      log.info(
        { fsid: sb.fsid.toString(16), rid: rid.toString(16), metrics: m.metricsAddr, admin: m.admin.path },
        'mounted',
      )
      return m
    } catch (e) {
      for (const c of cleanup) await c().catch(() => undefined)
      throw e
    }
  }

  private addReadings(): void {
    const c = this.items.counters
    const t = this.trans.counters
    const b = this.cache.counters
    const s = this.server.counters
    const f = this.fs.counters
    this.metrics.add([
      {
        name: 'scoutfs_item_cache_hits_total',
        help: 'Item cache lookups answered from the cache',
        kind: 'counter',
        read: () => c.hits,
      },
      {
        name: 'scoutfs_item_cache_misses_total',
        help: 'Item cache lookups that read the forest',
        kind: 'counter',
        read: () => c.misses,
      },
      {
        name: 'scoutfs_item_cache_read_retries_total',
        help: 'Forest reads retried because a commit raced them',
        kind: 'counter',
        read: () => c.readRetries,
      },
      {
        name: 'scoutfs_item_cache_shrinks_total',
        help: 'Times the item cache shrank',
        kind: 'counter',
        read: () => c.shrinks,
      },
      {
        name: 'scoutfs_item_cache_shrunk_items_total',
        help: 'Clean items dropped by shrinking',
        kind: 'counter',
        read: () => c.shrunkItems,
      },
      { name: 'scoutfs_item_cache_items', help: 'Items in the item cache', kind: 'gauge', read: () => this.items.size },
      {
        name: 'scoutfs_item_cache_pages',
        help: 'Covered key ranges (pages) in the item cache',
        kind: 'gauge',
        read: () => this.items.intervals,
      },
      {
        name: 'scoutfs_item_cache_dirty_items',
        help: 'Dirty items in the open transaction',
        kind: 'gauge',
        read: () => this.items.dirtyItems,
      },
      {
        name: 'scoutfs_item_cache_dirty_bytes',
        help: 'Bytes of dirty items in the open transaction',
        kind: 'gauge',
        read: () => this.items.dirtyBytes,
      },
      {
        name: 'scoutfs_trans_commits_total',
        help: 'Transactions committed by this mount',
        kind: 'counter',
        read: () => t.commits,
      },
      {
        name: 'scoutfs_trans_commit_items_total',
        help: 'Items written by commits',
        kind: 'counter',
        read: () => t.commitItems,
      },
      {
        name: 'scoutfs_trans_commit_bytes_total',
        help: 'Metadata bytes written by commits',
        kind: 'counter',
        read: () => t.commitBlocks * 65536,
      },
      {
        name: 'scoutfs_trans_commit_seconds_total',
        help: 'Time spent committing',
        kind: 'counter',
        read: () => t.commitMs / 1000,
      },
      {
        name: 'scoutfs_trans_last_commit_seconds',
        help: 'Duration of the last commit',
        kind: 'gauge',
        read: () => t.lastCommitMs / 1000,
      },
      { name: 'scoutfs_trans_seq', help: 'Seq of the open transaction', kind: 'gauge', read: () => this.trans.seq },
      {
        name: 'scoutfs_block_cache_hits_total',
        help: 'Metadata block cache hits',
        kind: 'counter',
        read: () => b.cacheHits,
      },
      {
        name: 'scoutfs_block_cache_misses_total',
        help: 'Metadata block cache misses',
        kind: 'counter',
        read: () => b.cacheMisses,
      },
      {
        name: 'scoutfs_block_reads_total',
        help: 'Metadata blocks read from the device',
        kind: 'counter',
        read: () => b.reads,
      },
      {
        name: 'scoutfs_block_writes_total',
        help: 'Metadata blocks written to the device',
        kind: 'counter',
        read: () => b.writes,
      },
      {
        name: 'scoutfs_block_stale_reads_total',
        help: 'Metadata blocks read stale (seq or blkno mismatch)',
        kind: 'counter',
        read: () => b.staleReads,
      },
      {
        name: 'scoutfs_block_corrupt_reads_total',
        help: 'Metadata blocks that failed checksum, magic or fsid checks',
        kind: 'counter',
        read: () => b.corruptReads,
      },
      {
        name: 'scoutfs_forest_reads_total',
        help: 'Forest reads (item cache misses)',
        kind: 'counter',
        read: () => forestCounters.reads,
      },
      {
        name: 'scoutfs_forest_stale_retries_total',
        help: 'Forest reads retried after refreshing roots',
        kind: 'counter',
        read: () => forestCounters.staleRetries,
      },
      {
        name: 'scoutfs_btree_splits_total',
        help: 'Btree block splits',
        kind: 'counter',
        read: () => btreeCounters.splits,
      },
      {
        name: 'scoutfs_btree_joins_total',
        help: 'Btree block joins',
        kind: 'counter',
        read: () => btreeCounters.joins,
      },
      {
        name: 'scoutfs_server_commits_total',
        help: 'Server (super block) commits',
        kind: 'counter',
        read: () => s.commits,
      },
      {
        name: 'scoutfs_server_log_commits_total',
        help: 'Log trees committed to the server',
        kind: 'counter',
        read: () => s.logCommits,
      },
      {
        name: 'scoutfs_server_merges_total',
        help: 'Log trees merged into the fs root',
        kind: 'counter',
        read: () => s.merges,
      },
      {
        name: 'scoutfs_server_merged_items_total',
        help: 'Items merged into the fs root',
        kind: 'counter',
        read: () => s.mergedItems,
      },
      {
        name: 'scoutfs_inodes_created_total',
        help: 'Inodes created by this mount',
        kind: 'counter',
        read: () => f.inodesCreated,
      },
      {
        name: 'scoutfs_inodes_deleted_total',
        help: 'Inodes deleted by this mount',
        kind: 'counter',
        read: () => f.inodesDeleted,
      },
      {
        name: 'scoutfs_data_written_bytes_total',
        help: 'File data bytes written',
        kind: 'counter',
        read: () => f.dataBytesWritten,
      },
      {
        name: 'scoutfs_data_read_bytes_total',
        help: 'File data bytes read',
        kind: 'counter',
        read: () => f.dataBytesRead,
      },
    ])
  }

  private adminRoutes(): Record<string, (q: URLSearchParams, body: unknown) => Promise<unknown>> {
    const num = (q: URLSearchParams, k: string): number => {
      const v = Number(q.get(k))
      if (!Number.isSafeInteger(v) || v < 0) throw new FsError('EINVAL', `bad ${k} '${q.get(k)}'`)
      return v
    }
    return {
      'POST /sync': async () => {
        await this.fs.sync()
        return { seq: this.trans.seq }
      },
      'GET /walk-inodes': async (q) => {
        const index = q.get('index')
        if (index !== 'meta_seq' && index !== 'data_seq') throw new FsError('EINVAL', `unknown index '${index}'`)
        await this.fs.sync()
        const entries = await this.fs.walkInodes(
          index,
          { seq: num(q, 'first'), ino: num(q, 'firstIno') },
          { seq: num(q, 'last'), ino: num(q, 'lastIno') },
          num(q, 'limit'),
        )
        return { entries }
      },
      'GET /stat': async (q) => {
        const i = await this.fs.inode(num(q, 'ino'))
        return {
          meta_seq: i.metaSeq,
          data_seq: i.dataSeq,
          data_version: i.dataVersion,
          online_blocks: i.onlineBlocks,
          offline_blocks: i.offlineBlocks,
          crtime: `${i.crtime.sec}.${String(i.crtime.nsec).padStart(9, '0')}`,
          crtime_ms: tsToMs(i.crtime),
        }
      },
      'GET /statfs': async () => {
        const s = await this.server.statfs()
        return {
          fsid: s.fsid.toString(16).padStart(16, '0'),
          rid: this.rid.toString(16).padStart(16, '0'),
          committed_seq: s.committedSeq,
          total_meta_blocks: s.totalMetaBlocks,
          free_meta_blocks: s.freeMetaBlocks,
          total_data_blocks: s.totalDataBlocks,
          free_data_blocks: s.freeDataBlocks,
        }
      },
      'GET /status': async () => ({
        rid: this.rid.toString(16),
        seq: this.trans.seq,
        commits: this.trans.counters.commits,
        items: this.items.size,
        dirtyItems: this.items.dirtyItems,
        metrics: this.metricsAddr,
        server: true,
      }),
      'POST /unmount': async () => {
        setImmediate(() => void this.stop().then(() => this.onStopped?.()))
        return { unmounting: true }
      },
    }
  }

  /** Unmount, commit, say farewell and close everything; safe to call more than once. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const log = this.opts.log
      try {
        await this.fuse?.unmount()
      } catch (e) {
        log.error({ err: String(e) }, 'unmount failed')
      }
      await this.admin?.close().catch(() => undefined)
      await this.trans.close()
      await this.server.farewell(this.rid)
      await this.server.drainMerges()
      await this.server.stop()
      await this.metrics.close()
      await this.data.close()
      await this.meta.close()
      log.info('unmounted')
    })()
    return this.stopping
  }
}
