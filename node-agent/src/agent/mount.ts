/*
 * One agent's mount of a filesystem, the agent's composition root: opens the devices, runs
 * the server role when this agent serves (server-role-host.ts: which agent serves, and the
 * role's start and stop), joins the server over the network (NetClient: the same path for
 * the server's own mount as for every other), takes cluster locks through its lock client,
 * assembles forest, item cache, transactions and the filesystem, serves it through a
 * frontend (FUSE by default), and serves metrics and the admin socket.  stop() undoes all of
 * it in reverse: unmount, commit, farewell, close, and last the server role.
 *
 * The parts keep their own policies: lock invalidation is fs/lock-invalidation.ts (it tells
 * the frontend once mounted, nothing before), each layer registers its metrics
 * (metrics-*.ts), the admin routes are admin-routes.ts over the typed admin-api.ts.
 */
import { randomInt } from 'node:crypto'
import { hostname } from 'node:os'
import { resolve } from 'node:path'
import type { Logger } from 'pino'
import { Forest } from '../client/forest.js'
import { ItemCache } from '../client/item-cache.js'
import { Trans } from '../client/trans.js'
import { Filesystem, type ClusterLocks as ClusterLocksApi } from '../fs/fs.js'
import { NO_KERNEL_CACHE, type Frontend, type FrontendFactory, type KernelCache } from '../fs/frontend.js'
import { lockInvalidationHook } from '../fs/lock-invalidation.js'
import { LockClient, type LockHandle } from '../lock/lock-client.js'
import { NetClient } from '../net/net-client.js'
import type { OrderedLockRequest } from '../protocol/lock-modes.js'
import type { ClusterServer } from '../server/server-role.js'
import { BlockCache } from '../storage/block.js'
import { btreeCountersOf } from '../storage/btree.js'
import { FileDevice, type BlockDevice } from '../storage/device.js'
import { FORMAT_VERSION } from '../storage/format.js'
import { readDataSuper, readSuper } from '../storage/super.js'
import { FsError } from '../util/errors.js'
import { AdminServer, adminSocketPath } from './admin.js'
import { adminHandlers } from './admin-api.js'
import { adminRoutes } from './admin-routes.js'
import { fuseNativeFrontend } from '../fuse/fuse-native-adapter.js'
import { AgentMetrics } from './metrics.js'
import { registerForestMetrics, registerItemCacheMetrics, registerTransMetrics } from './metrics-client.js'
import { registerFsMetrics } from './metrics-fs.js'
import { registerLockClientMetrics, registerLocksHeldMetric } from './metrics-lock.js'
import { registerBlockCacheMetrics, registerBtreeMetrics } from './metrics-storage.js'
import { ServerRoleHost, serverRole, type ServeSlot } from './server-role-host.js'

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
    readonly locks: LockClient,
    readonly rid: number,
    readonly cache: BlockCache,
    readonly items: ItemCache,
    readonly trans: Trans,
    readonly fs: Filesystem,
    readonly metrics: AgentMetrics,
  ) {}

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
      const sb = await readSuper(meta)
      const dsb = await readDataSuper(data)
      if (!dsb || dsb.fsid !== sb.fsid)
        throw new FsError(
          'EINVAL',
          `${o.dataPath} is not the data device of filesystem ${sb.fsid.toString(16)} on ${o.metaPath}` +
            (dsb ? ` (it belongs to ${dsb.fsid.toString(16)})` : ''),
        )
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
      await client.greeting(rid, sb.fsid, FORMAT_VERSION)
      const cache = new BlockCache(meta, sb.fsid, o.blockCacheBlocks ?? 1024)
      // a stale block is expected (a merge freed and reused it): the forest refreshes its
      // roots and reads again, and only a stale block from fresh roots is an error (EIO)
      cache.onBadBlock = (err, blkno) =>
        err.code === 'ESTALE'
          ? log.debug({ blkno, code: err.code }, err.message)
          : log.error({ blkno, code: err.code }, err.message)
      const forest = new Forest(cache, () => client.getRoots())
      const items = new ItemCache(forest, o.itemCacheItems ?? 500_000)
      const trans = new Trans(client, rid, cache, items, forest, meta, data, {
        commitIntervalMs: o.commitIntervalMs,
        log: (msg, f) => log.error(f ?? {}, msg),
      })
      // invalidations reach the kernel through the frontend once it is mounted (further down)
      let kernel: KernelCache = NO_KERNEL_CACHE
      const locks = new LockClient({
        rid,
        send: (msg) => lockSend(msg),
        onInvalidate: lockInvalidationHook(trans, items, () => kernel),
        refreshRoots: async (version) => forest.invalidateRoots(version),
        log: (msg) => log.warn({ role: 'locks' }, msg),
      })
      const lockSend = client.openLocks(locks)
      cleanup.unshift(async () => locks.shutdown())
      trans.onCommit = (seq, ms, n, phases) => log.debug({ seq, ms, items: n, phases }, 'commit')
      trans.start()
      const fs = new Filesystem(items, trans, client, data, rid, timedLocks(locks, metrics))
      const orphans = await fs.deleteOrphans(await client.listMounts())
      if (orphans) log.info({ orphans }, 'deleted orphaned inodes')

      const m = new Mount(o, meta, data, serverHost, client, locks, rid, cache, items, trans, fs, metrics)
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
      m.frontend = kernel = frontend
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
      try {
        await this.trans.close()
      } catch (e) {
        log.error({ err: String(e) }, 'final commit failed')
      }
      await this.client.farewell(this.rid).catch((e: unknown) => log.error({ err: String(e) }, 'farewell failed'))
      this.locks.shutdown()
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
