/*
 * One agent's mount of a filesystem: opens the devices, runs the server role when this agent
 * is the server (cluster-server.ts), joins the server over the network (NetClient: the same
 * path for the server's own mount as for every other), takes cluster locks through its lock
 * client, assembles forest, item cache, transactions and the filesystem, mounts it through
 * FUSE, and serves metrics and the admin socket.  stop() undoes all of it in reverse:
 * unmount, commit, farewell, close, and last the server role.
 *
 * Which agent serves, until quorum elections exist: the agent mounted with
 * `quorum_slot_nr=N` serves on slot N's address; every other agent connects to
 * `server_addr`, or else to the lowest slot that has an address.  A filesystem formatted
 * without slot addresses is a single-node one: the agent serves itself on a loopback port.
 *
 * Lock invalidation (the lock client's hook, DESIGN §8): commit what was written under the
 * lock and is not committed yet, then (unless WRITE -> READ) drop the lock range from the
 * item cache and, for inode groups, the FUSE adapter's paths through those inodes.  A grant that carries newer roots makes the
 * forest ask the server for them before the next read.
 */
import { randomInt } from 'node:crypto'
import { hostname } from 'node:os'
import type { Logger } from 'pino'
import { AdminServer, adminSocketPath } from './admin.js'
import { BlockCache } from '../storage/block.js'
import { btreeCounters } from '../storage/btree.js'
import { FileDevice, type BlockDevice } from '../storage/device.js'
import { FsError } from '../util/errors.js'
import { FORMAT_VERSION } from '../storage/format.js'
import { Forest, forestCounters } from '../client/forest.js'
import { Filesystem, type ClusterLocks as ClusterLocksApi } from '../fs/fs.js'
import { FuseAdapter } from '../fuse/fuse-native-adapter.js'
import { ItemCache } from '../client/item-cache.js'
import { AgentMetrics } from './metrics.js'
import { ClusterServer } from '../server/server-role.js'
import { LockClient, type LockHandle } from '../lock/lock-client.js'
import { invalidationDropsCache, isWriteMode, type OrderedLockRequest } from '../protocol/lock-modes.js'
import { NetClient } from '../net/net-client.js'
import { readDataSuper, readSuper } from '../storage/super.js'
import { Trans } from '../client/trans.js'
import { tsToMs } from '../fs/fs-items.js'
import { lockRangeInodes } from '../protocol/lock-ranges.js'
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
  /** this agent is quorum member N: it runs the server on slot N's address */
  quorumSlotNr?: number
  /** connect to the server here instead of the lowest slot with an address */
  serverAddr?: string
  /** server role: how long recorded mounts get to reconnect after a start (ms) */
  recoveryMs?: number
  /** server role: a mount silent this long is reclaimed (ms) */
  mountTimeoutMs?: number
}

/**
 * Where this agent serves and where it connects (see the top of this file).  `local`: a
 * single-node filesystem, served on a loopback port nobody else knows.
 */
export function serverRole(
  slotAddrs: readonly string[],
  o: Pick<MountOptions, 'quorumSlotNr' | 'serverAddr'>,
): { serve?: string; connect?: string; local: boolean } {
  if (o.quorumSlotNr !== undefined) {
    const n = o.quorumSlotNr
    if (n >= slotAddrs.length)
      throw new FsError(
        'EINVAL',
        `quorum slot ${n} does not exist: the filesystem has ${slotAddrs.length} slot(s) (0..${slotAddrs.length - 1})`,
      )
    if (!slotAddrs[n])
      throw new FsError(
        'EINVAL',
        `quorum slot ${n} has no address: format with mkfs -Q ${n},ADDR,PORT to give the server one`,
      )
    return { serve: slotAddrs[n], local: false }
  }
  if (o.serverAddr) return { connect: o.serverAddr, local: false }
  const first = slotAddrs.find((a) => a)
  if (first) return { connect: first, local: false }
  return { serve: '127.0.0.1:0', local: true }
}

/** The lock client as the filesystem uses it, with every acquisition timed for the metrics. */
function timedLocks(locks: LockClient, metrics: AgentMetrics): ClusterLocksApi {
  return {
    lockAll: async (reqs: readonly OrderedLockRequest[]): Promise<LockHandle[]> => {
      const end = metrics.lockWait.startTimer()
      try {
        return await locks.lockAll(reqs)
      } finally {
        end()
      }
    },
    unlockAll: (h, opts) => locks.unlockAll(h, opts),
  }
}

export class Mount {
  private stopping: Promise<void> | undefined
  metricsAddr: string | undefined
  /** called when an unmount requested over the admin socket has finished */
  onStopped: (() => void) | undefined
  private fuse: FuseAdapter | undefined
  private admin: AdminServer | undefined

  private constructor(
    readonly opts: MountOptions,
    readonly meta: BlockDevice,
    readonly data: BlockDevice,
    /** the server role, when this agent runs it */
    readonly clusterServer: ClusterServer | undefined,
    readonly client: NetClient,
    readonly locks: LockClient,
    readonly rid: number,
    readonly cache: BlockCache,
    readonly items: ItemCache,
    readonly trans: Trans,
    readonly fs: Filesystem,
    readonly metrics: AgentMetrics,
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
      const role = serverRole(sb.quorumAddrs, o)
      let cs: ClusterServer | undefined
      let serverAddr = role.connect
      if (role.serve !== undefined) {
        cs = await ClusterServer.start(meta, {
          addr: role.serve,
          log: (msg, f) => log.info({ ...f, role: 'server' }, msg),
          recoveryMs: role.local ? 0 : o.recoveryMs,
          mountTimeoutMs: o.mountTimeoutMs,
        })
        const srv = cs
        cleanup.unshift(() => srv.stop())
        serverAddr = cs.addr.replace(/^(0\.0\.0\.0|\[::\]):/, '127.0.0.1:')
      }
      const client = new NetClient(serverAddr!, {
        log: (msg, f) => log.warn({ ...f, role: 'client' }, msg),
        clientName: `${hostname()}:${process.pid}:${mountpoint}`,
      })
      cleanup.unshift(async () => client.close())
      const rid = randomInt(1, 2 ** 47)
      await client.greeting(rid, sb.fsid, FORMAT_VERSION)
      const cache = new BlockCache(meta, sb.fsid, o.blockCacheBlocks ?? 1024)
      cache.onBadBlock = (err, blkno) => log.error({ blkno, code: err.code }, err.message)
      const forest = new Forest(cache, () => client.getRoots())
      const items = new ItemCache(forest, o.itemCacheItems ?? 500_000)
      const trans = new Trans(client, rid, cache, items, forest, meta, data, {
        commitIntervalMs: o.commitIntervalMs,
        log: (msg, f) => log.error(f ?? {}, msg),
      })
      // the hook below reaches the FUSE adapter through the mount made further down
      let mounted: Mount | undefined
      const locks = new LockClient({
        rid,
        send: (msg) => lockSend(msg),
        onInvalidate: async (range, oldMode, newMode, info) => {
          // what was written under the lock goes to the log tree first: the next holder
          // reads it from there (nothing to do when those writes are committed already)
          if (isWriteMode(oldMode) && info.wrote && !(info.dirtyTransSeq && info.dirtyTransSeq <= trans.committedSeq))
            await trans.commit()
          if (invalidationDropsCache(oldMode, newMode)) {
            items.invalidate(range[0], range[1])
            const inos = lockRangeInodes(range)
            if (inos) mounted?.fuse?.invalidateInodes(...inos)
          }
        },
        refreshRoots: async (version) => forest.invalidateRoots(version),
        log: (msg) => log.warn({ role: 'locks' }, msg),
      })
      const lockSend = client.openLocks(locks)
      cleanup.unshift(async () => locks.shutdown())
      trans.onCommit = (seq, ms, n, phases) => log.debug({ seq, ms, items: n, phases }, 'commit')
      trans.start()
      const metrics = new AgentMetrics({ fsid: sb.fsid.toString(16).padStart(16, '0'), rid: rid.toString(16) })
      const fs = new Filesystem(items, trans, client, data, rid, timedLocks(locks, metrics))
      const orphans = await fs.deleteOrphans(await client.listMounts())
      if (orphans) log.info({ orphans }, 'deleted orphaned inodes')

      const m = new Mount(o, meta, data, cs, client, locks, rid, cache, items, trans, fs, metrics)
      mounted = m
      m.addReadings()
      m.addLabeledReadings()
      if (cs) m.addServerReadings(cs)
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
        {
          fsid: sb.fsid.toString(16),
          rid: rid.toString(16),
          metrics: m.metricsAddr,
          admin: m.admin.path,
          server: cs !== undefined,
          serverAddr,
        },
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
    const l = this.locks.counters
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
      {
        name: 'scoutfs_trans_seq',
        help: 'Seq of the open transaction (0: none open)',
        kind: 'gauge',
        read: () => this.trans.openSeq,
      },
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
        name: 'scoutfs_lock_requests_total',
        help: 'Cluster lock requests this mount sent to the server',
        kind: 'counter',
        read: () => l.requests,
      },
      {
        name: 'scoutfs_lock_grants_total',
        help: 'Cluster lock grants this mount received',
        kind: 'counter',
        read: () => l.grants,
      },
      {
        name: 'scoutfs_lock_invalidations_total',
        help: 'Cluster lock invalidations this mount received',
        kind: 'counter',
        read: () => l.invalidations,
      },
      {
        name: 'scoutfs_lock_local_hits_total',
        help: 'Lock uses served by a lock this mount already held',
        kind: 'counter',
        read: () => l.localHits,
      },
      {
        name: 'scoutfs_lock_idle_releases_total',
        help: 'Idle locks released by this mount (beyond lock_idle_count)',
        kind: 'counter',
        read: () => l.idleReleases,
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

  /** The server role's readings: only the agent that runs it exports them. */
  private addServerReadings(cs: ClusterServer): void {
    const s = cs.server.counters
    this.metrics.add([
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
        name: 'scoutfs_server_merge_tombstones_total',
        help: 'Merged deletions kept in the fs root while an older copy was in another log tree',
        kind: 'counter',
        read: () => s.tombstones,
      },
      {
        name: 'scoutfs_server_reclaims_total',
        help: 'Mounts the server reclaimed (farewell, or gone)',
        kind: 'counter',
        read: () => s.reclaims,
      },
      {
        name: 'scoutfs_server_clients',
        help: 'Mounts connected to this server (0 on agents that do not serve)',
        kind: 'gauge',
        read: () => cs.clientCount,
      },
      {
        name: 'scoutfs_server_log_trees',
        help: 'Log trees the committed roots hold (open and finalized)',
        kind: 'gauge',
        read: () => cs.server.logTrees.length,
      },
      {
        name: 'scoutfs_lock_server_grants_total',
        help: 'Grants the lock server sent (0 on agents that do not serve)',
        kind: 'counter',
        read: () => cs.locks.counters.grants,
      },
      {
        name: 'scoutfs_lock_server_invalidations_total',
        help: 'Invalidations the lock server sent (0 on agents that do not serve)',
        kind: 'counter',
        read: () => cs.locks.counters.invalidations,
      },
    ])
  }

  private addLabeledReadings(): void {
    this.metrics.addLabeled('scoutfs_locks_held', 'Cluster locks this mount holds, by mode', 'mode', () => {
      const h = this.locks.heldByMode()
      return { read: h.read, write: h.write, write_only: h.writeOnly }
    })
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
        return { seq: this.trans.committedSeq }
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
        const s = await this.client.statfs()
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
      'GET /status': async () => {
        const h = this.locks.heldByMode()
        const c = this.locks.counters
        return {
          rid: this.rid.toString(16),
          seq: this.trans.openSeq,
          committedSeq: this.trans.committedSeq,
          commits: this.trans.counters.commits,
          items: this.items.size,
          dirtyItems: this.items.dirtyItems,
          metrics: this.metricsAddr,
          server: this.clusterServer !== undefined,
          serverAddr: this.client.addr,
          locks: {
            held: h.read + h.write + h.writeOnly,
            read: h.read,
            write: h.write,
            writeOnly: h.writeOnly,
            requests: c.requests,
            grants: c.grants,
            invalidations: c.invalidations,
          },
          serverState: await this.clusterServer?.status(),
        }
      },
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
      try {
        await this.trans.close()
      } catch (e) {
        log.error({ err: String(e) }, 'final commit failed')
      }
      await this.client.farewell(this.rid).catch((e: unknown) => log.error({ err: String(e) }, 'farewell failed'))
      this.locks.shutdown()
      this.client.close()
      await this.clusterServer?.stop()
      await this.metrics.close()
      await this.data.close()
      await this.meta.close()
      log.info('unmounted')
    })()
    return this.stopping
  }
}
