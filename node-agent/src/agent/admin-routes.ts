/*
 * What the agent answers on its admin socket: one function per route of admin-api.ts (whose
 * types it must return; parameters arrive validated).  Reads a mount's parts, changes nothing
 * but what sync and unmount are for.
 */
import type { ItemCache } from '../client/item-cache.js'
import type { Trans } from '../client/trans.js'
import type { Filesystem } from '../fs/fs.js'
import { tsToMs, type QuotaRecord } from '../fs/fs-items.js'
import type { LockClient } from '../lock/lock-client.js'
import type { NetClient } from '../net/net-client.js'
import type { ClusterServer } from '../server/server-role.js'
import type { KernelCache } from '../fs/frontend.js'
import type { AdminImpl, CounterSample, QuorumView, QuotaReply } from './admin-api.js'
import { archiveRoutes, type ArchiveFs } from './admin-archive-routes.js'

function quotaReply(q: QuotaRecord | undefined): QuotaReply {
  if (!q) return {}
  const { root, limitBytes, limitInodes, usedBytes, usedInodes } = q
  return {
    quota: {
      root,
      limit_bytes: limitBytes,
      limit_inodes: limitInodes,
      used_bytes: usedBytes,
      used_inodes: usedInodes,
    },
  }
}

/** The parts of a mount the routes read (the Mount itself). */
export interface AdminTarget {
  readonly fs: Pick<Filesystem, 'sync' | 'walkInodes' | 'inode' | 'getQuota' | 'setQuota'> & ArchiveFs
  readonly trans: Pick<Trans, 'committedSeq' | 'openSeq' | 'counters'>
  readonly items: Pick<ItemCache, 'size' | 'dirtyItems'>
  readonly locks: Pick<LockClient, 'heldByMode' | 'counters'>
  readonly client: Pick<NetClient, 'statfs' | 'addr'>
  readonly rid: number
  /** the kernel's caches of this mount (changes made through the admin socket drop them) */
  readonly core: { readonly kernel: Pick<KernelCache, 'invalidateInodes'> }
  readonly metricsAddr: string | undefined
  /** the agent's metrics, every sample (`scoutfs counters`) */
  readonly metrics: { samples(): Promise<{ fsid: string; rid: string; samples: CounterSample[] }> }
  readonly clusterServer: ClusterServer | undefined
  /** the quorum as this agent sees it */
  quorumView(): Promise<QuorumView>
  /** change a member's heartbeat timeout (EINVAL outside 2-60 s, or on a plain client) */
  setHeartbeatTimeout(ms: number): void
  /** unmount and stop the agent (after the reply has gone) */
  stop(): Promise<void>
  onStopped: (() => void) | undefined
}

export function adminRoutes(a: AdminTarget): AdminImpl {
  return {
    'POST /sync': async () => {
      await a.fs.sync()
      return { seq: a.trans.committedSeq }
    },
    'GET /walk-inodes': async (p) => {
      await a.fs.sync()
      const entries = await a.fs.walkInodes(
        p.index,
        { seq: p.first, ino: p.firstIno },
        { seq: p.last, ino: p.lastIno },
        p.limit,
      )
      return { entries }
    },
    'GET /stat': async (p) => {
      const i = await a.fs.inode(p.ino)
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
      const [s, q] = await Promise.all([a.client.statfs(), a.quorumView()])
      return {
        fsid: s.fsid.toString(16).padStart(16, '0'),
        rid: a.rid.toString(16).padStart(16, '0'),
        committed_seq: s.committedSeq,
        total_meta_blocks: s.totalMetaBlocks,
        free_meta_blocks: s.freeMetaBlocks,
        total_data_blocks: s.totalDataBlocks,
        free_data_blocks: s.freeDataBlocks,
        quorum_slot_nr: q.slot,
        quorum_term: q.term,
        quorum_leader_slot: q.leaderSlot,
      }
    },
    'GET /status': async () => {
      const h = a.locks.heldByMode()
      const c = a.locks.counters
      return {
        rid: a.rid.toString(16),
        seq: a.trans.openSeq,
        committedSeq: a.trans.committedSeq,
        commits: a.trans.counters.commits,
        items: a.items.size,
        dirtyItems: a.items.dirtyItems,
        metrics: a.metricsAddr,
        server: a.clusterServer !== undefined,
        serverAddr: a.client.addr,
        locks: {
          held: h.read + h.write + h.writeOnly,
          read: h.read,
          write: h.write,
          writeOnly: h.writeOnly,
          requests: c.requests,
          grants: c.grants,
          invalidations: c.invalidations,
        },
        serverState: await a.clusterServer?.status(),
      }
    },
    'GET /quorum': () => a.quorumView(),
    'POST /quorum/heartbeat-timeout': async (p) => {
      a.setHeartbeatTimeout(p.ms)
      return a.quorumView()
    },
    'GET /counters': () => a.metrics.samples(),
    'POST /unmount': async () => {
      setImmediate(() => void a.stop().then(() => a.onStopped?.()))
      return { unmounting: true }
    },
    'GET /quota': async (p) => quotaReply(await a.fs.getQuota(p.ino)),
    'POST /quota': async (p) => quotaReply(await a.fs.setQuota(p.ino, { bytes: p.bytes, inodes: p.inodes })),
    ...archiveRoutes(a.fs, (ino) => a.core.kernel.invalidateInodes(ino, ino)),
  }
}
