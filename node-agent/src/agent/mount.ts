/*
 * One agent's mount of a filesystem, the agent's composition root: opens the devices, runs
 * the server role when this agent serves (server-role-host.ts: which agent serves, and the
 * role's start and stop), joins the server over the network (NetClient: the same path for
 * the server's own mount as for every other), composes the client side over it (mount-core.ts
 * MountCore: forest, item cache, transactions, lock client, filesystem), serves it through a
 * frontend (FUSE by default), and serves metrics and the admin socket.  stop() undoes all of
 * it in reverse: unmount, commit, farewell, close, and last the server role.
 *
 * The parts keep their own policies: lock invalidation is fs/lock-invalidation.ts (it tells
 * the frontend once attached to the core, nothing before), each layer registers its metrics
 * (metrics-*.ts), the admin routes are admin-routes.ts over the typed admin-api.ts.
 */
import { randomInt } from 'node:crypto'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import type { Logger } from 'pino'
import type { ItemCache } from '../client/item-cache.js'
import type { Trans } from '../client/trans.js'
import type { Filesystem, ClusterLocks as ClusterLocksApi } from '../fs/fs.js'
import type { Frontend, FrontendFactory } from '../fs/frontend.js'
import type { LockClient, LockHandle } from '../lock/lock-client.js'
import { NetClient } from '../net/net-client.js'
import type { OrderedLockRequest } from '../protocol/lock-modes.js'
import type { ClusterServer } from '../server/server-role.js'
import { btreeCountersOf } from '../storage/btree.js'
import { FileDevice, type BlockDevice } from '../storage/device.js'
import { AdminServer, adminSocketPath } from './admin.js'
import { adminHandlers } from './admin-api.js'
import { adminRoutes } from './admin-routes.js'
import { fuseNativeFrontend } from '../fuse/fuse-native-adapter.js'
import { AgentMetrics } from './metrics.js'
import { MountCore, readMountSupers } from './mount-core.js'
import { registerForestMetrics, registerItemCacheMetrics, registerTransMetrics } from './metrics-client.js'
import { registerFsMetrics } from './metrics-fs.js'
import { registerLockClientMetrics, registerLocksHeldMetric } from './metrics-lock.js'
import { registerBlockCacheMetrics, registerBtreeMetrics } from './metrics-storage.js'
import { ServerRoleHost, serverRole, type ServeSlot } from './server-role-host.js'

/** how long a stopping mount whose server does not answer waits for one (ms) */
const STOP_SERVER_WAIT_MS = 3000

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
  /** how often this mount scans for orphans no mount has open (ms, ±20%; 0: only at mount) */
  orphanScanDelayMs?: number
  /** serves the filesystem to the kernel (default: fuse-native) */
  frontend?: FrontendFactory
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
  private frontend: Frontend | undefined
  private admin: AdminServer | undefined

  private constructor(
    readonly opts: MountOptions,
    readonly meta: BlockDevice,
    readonly data: BlockDevice,
    private readonly serverHost: ServerRoleHost,
    readonly client: NetClient,
    readonly core: MountCore,
    readonly metrics: AgentMetrics,
  ) {}

  get rid(): number {
    return this.core.rid
  }
  get locks(): LockClient {
    return this.core.locks
  }
  get items(): ItemCache {
    return this.core.items
  }
  get trans(): Trans {
    return this.core.trans
  }
  get fs(): Filesystem {
    return this.core.fs
  }

  /** the server role, while this agent runs it */
  get clusterServer(): ClusterServer | undefined {
    return this.serverHost.current
  }

  /**
   * Run the server role on `slot`'s address ('local': a single-node loopback server);
   * resolves to the address mounts on this host reach it at.  EBUSY if it runs already.
   */
  startServerRole(slot: ServeSlot): Promise<string> {
    return this.serverHost.start(slot)
  }

  /** Stop the server role, if this agent runs it. */
  stopServerRole(): Promise<void> {
    return this.serverHost.stop()
  }

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
      const sb = await readMountSupers(meta, data)
      const fsid = sb.fsid.toString(16).padStart(16, '0')
      const rid = randomInt(1, 2 ** 47)
      const metrics = new AgentMetrics({ fsid, rid: rid.toString(16) })
      cleanup.unshift(() => metrics.close())

      const role = serverRole(sb.quorumAddrs, o)
      const serverHost = new ServerRoleHost(meta, sb.quorumAddrs, {
        log: (msg, f) => log.info({ ...f, role: 'server' }, msg),
        recoveryMs: o.recoveryMs,
        mountTimeoutMs: o.mountTimeoutMs,
      })
      cleanup.unshift(() => serverHost.stop())
      const serverAddr = 'serve' in role ? await serverHost.start(role.serve) : role.connect

      const client = new NetClient(serverAddr, {
        log: (msg, f) => log.warn({ ...f, role: 'client' }, msg),
        clientName: `${hostname()}:${process.pid}:${mountpoint}`,
      })
      cleanup.unshift(async () => client.close())
      const core = await MountCore.open({
        api: client,
        openLocks: (locks) => client.openLocks(locks),
        meta,
        data,
        fsid: sb.fsid,
        rid,
        log: (level, msg, f) => log[level](f ?? {}, msg),
        commitIntervalMs: o.commitIntervalMs,
        itemCacheItems: o.itemCacheItems,
        blockCacheBlocks: o.blockCacheBlocks,
        orphanScanDelayMs: o.orphanScanDelayMs,
        fsLocks: (locks) => timedLocks(locks, metrics),
      })
      cleanup.unshift(async () => core.locks.shutdown())
      const { cache, forest, items, trans, locks, fs } = core

      const m = new Mount(o, meta, data, serverHost, client, core, metrics)
      registerItemCacheMetrics(metrics, items)
      registerTransMetrics(metrics, trans)
      registerBlockCacheMetrics(metrics, cache)
      registerForestMetrics(metrics, forest)
      registerBtreeMetrics(metrics, () => [btreeCountersOf(cache), ...serverHost.btreeCounters()])
      registerLockClientMetrics(metrics, locks)
      registerFsMetrics(metrics, fs)
      registerLocksHeldMetric(metrics, locks)
      serverHost.exportMetrics(metrics)
      if (o.metricsAddr) m.metricsAddr = await metrics.listen(o.metricsAddr)

      const frontend = await (o.frontend ?? fuseNativeFrontend)(metrics.instrument(fs), mountpoint, {
        debug: o.fuseDebug,
        fsname: `scoutfs:${fsid}`,
        log: { error: (msg, err) => log.error({ err: String(err) }, msg), warn: (msg) => log.warn(msg) },
      })
      m.frontend = core.kernel = frontend
      cleanup.unshift(() => frontend.unmount())
      m.admin = await AdminServer.listen(adminSocketPath(mountpoint), adminHandlers(adminRoutes(m)))
      log.info(
        {
          fsid: sb.fsid.toString(16),
          rid: rid.toString(16),
          metrics: m.metricsAddr,
          admin: m.admin.path,
          server: serverHost.current !== undefined,
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

  /** Unmount, commit, say farewell and close everything; safe to call more than once. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const log = this.opts.log
      try {
        await this.frontend?.unmount()
      } catch (e) {
        log.error({ err: String(e) }, 'unmount failed')
      }
      await this.admin?.close().catch(() => undefined)
      // with no server answering, the last commit and farewell wait a few seconds for one, not
      // the minute a running mount waits: a stop ends (what was not committed is lost, as in
      // a crash; fsynced data is committed already)
      if (!this.client.serverAnswering) {
        log.warn({ waitMs: STOP_SERVER_WAIT_MS }, 'stopping without a server: the last commit may be lost')
        this.client.limitRetries(STOP_SERVER_WAIT_MS)
      }
      // commit, farewell, stop the lock client; each failure is logged by the core
      await this.core.close().catch(() => undefined)
      this.client.close()
      await this.serverHost.stop()
      await this.metrics.close()
      await this.data.close()
      await this.meta.close()
      log.info('unmounted')
    })()
    return this.stopping
  }
}
