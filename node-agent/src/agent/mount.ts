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
import { DEFAULT_FRONTEND, FRONTENDS } from '../fuse/frontends.js'
import { AgentMetrics } from './metrics.js'
import { MountCore, readMountSupers } from './mount-core.js'
import { registerForestMetrics, registerItemCacheMetrics, registerTransMetrics } from './metrics-client.js'
import { registerFrontendMetrics, registerFsMetrics } from './metrics-fs.js'
import { registerQuorumMetrics, registerTlsMetrics } from './metrics-quorum.js'
import { registerLockClientMetrics, registerLocksHeldMetric } from './metrics-lock.js'
import { registerBlockCacheMetrics, registerBtreeMetrics, registerFreeSpaceMetrics } from './metrics-storage.js'
import { ServerRoleHost, serverRole, slotAddress, type ServeSlot } from './server-role-host.js'
import { GrpcListener } from '../net/listener.js'
import { checkTlsFiles, type Security, type TlsFiles } from '../net/tls.js'
import { ephemeralTls } from '../net/certs.js'
import { fenceAgent, processStartTime, type FenceOptions } from '../quorum/fence.js'
import type { QuorumView } from './admin-api.js'
import { highestTerm, leaderOf, readQuorumBlocks } from '../storage/quorum-block.js'
import { FsError } from '../util/errors.js'
import type { SuperBlock } from '../storage/super.js'
import {
  HEARTBEAT_TIMEOUT_DEFAULT_MS,
  QuorumMember,
  quorumSlots,
  quorumMajority,
  checkHeartbeatTimeout,
  leaderAddress,
} from '../quorum/quorum.js'

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
  /** how long the lowlevel frontend polls for the next request before sleeping (us; fuse/fuse3-adapter.ts) */
  fuseSpinUs?: number
  /** this agent is quorum member N: it takes part in electing the server on slot N's address */
  quorumSlotNr?: number
  /** a member's heartbeat timeout: silence that starts an election (ms, 2000-60000; default 10000) */
  quorumHeartbeatTimeoutMs?: number
  /** how a member fences the mounts it must (default: local) */
  fence?: FenceOptions
  /** mutual TLS files (net/tls.ts); required for a cluster unless `insecure` */
  tls?: TlsFiles
  /** plaintext between agents: only when asked for, with a warning at every start */
  insecure?: boolean
  /** connect to the server here instead of the leader the quorum blocks name */
  serverAddr?: string
  /** server role: how long recorded mounts get to reconnect after a start (ms) */
  recoveryMs?: number
  /** server role: a mount silent this long is reclaimed (ms) */
  mountTimeoutMs?: number
  /** how often this mount scans for orphans no mount has open (ms, ±20%; 0: only at mount) */
  orphanScanDelayMs?: number
  /** serves the filesystem to the kernel (default: fuse/frontends.ts DEFAULT_FRONTEND) */
  frontend?: FrontendFactory
}

/**
 * How this agent talks to the others: mutual TLS from the mount's files; plaintext only with
 * `insecure` (warned about at every start); a cluster mount without either is refused.  A
 * single-node filesystem's loopback server without files gets an ephemeral CA and certificate
 * of its own (nobody else may connect to it).
 */
async function agentSecurity(
  o: MountOptions,
  fsid: bigint,
  singleNode: boolean,
  log: Logger,
): Promise<{ sec: Security; cleanup?: () => void }> {
  if (o.insecure) {
    if (o.tls) throw new FsError('EINVAL', 'mount options insecure and tls_* contradict each other: give one')
    log.warn(
      { insecure: true },
      "PLAINTEXT between agents (-o insecure): anything that reaches the agents' ports can take locks and corrupt the filesystem; use certificates (scoutfs certs) outside a test bench",
    )
    return { sec: { insecure: true } }
  }
  if (o.tls) {
    const sec: Security = { files: o.tls, fsid }
    await checkTlsFiles(sec)
    return { sec }
  }
  if (singleNode) {
    const e = await ephemeralTls(fsid)
    return { sec: { files: e.files, fsid }, cleanup: e.remove }
  }
  throw new FsError(
    'EINVAL',
    'a cluster mount needs certificates: -o tls_ca=CA,tls_cert=CERT,tls_key=KEY (or tls_dir=DIR with ca.crt, tls.crt, tls.key); ' +
      "make them with 'scoutfs certs local' (docs/tls.md), or mount with -o insecure for plaintext on a trusted network",
  )
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
    tryLockAll: (reqs: readonly OrderedLockRequest[]): LockHandle[] | undefined => {
      const held = locks.tryLockAll(reqs)
      if (held) metrics.lockWait.observe(0)
      return held
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
  /** a member's slot listener (quorum and, while it leads, the server) */
  private listener: GrpcListener | undefined

  private constructor(
    readonly opts: MountOptions,
    readonly sb: SuperBlock,
    readonly meta: BlockDevice,
    readonly data: BlockDevice,
    private readonly serverHost: ServerRoleHost,
    /** this agent's quorum membership, if it is a member */
    readonly quorumMember: QuorumMember | undefined,
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
    // file data goes to a file-backed data device direct, behind: the mount's page cache has it
    const data = await FileDevice.open(o.dataPath, { streamLargeWrites: true }).catch(async (e) => {
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
      const security = await agentSecurity(o, sb.fsid, 'serve' in role, log)
      cleanup.unshift(async () => security.cleanup?.())
      const serverHost = new ServerRoleHost(meta, sb.quorumAddrs, {
        security: security.sec,
        log: (msg, f) => log.info({ ...f, role: 'server' }, msg),
        recoveryMs: o.recoveryMs,
        mountTimeoutMs: o.mountTimeoutMs,
      })
      cleanup.unshift(() => serverHost.stop())
      const heartbeatTimeoutMs = checkHeartbeatTimeout(o.quorumHeartbeatTimeoutMs ?? HEARTBEAT_TIMEOUT_DEFAULT_MS)
      let member: QuorumMember | undefined
      let listener: GrpcListener | undefined
      if ('member' in role) {
        const slot = role.member
        const fence = fenceAgent({
          ...(o.fence ?? { method: 'local' }),
          log: (msg, f) => log.warn({ ...f, role: 'fence' }, msg),
        })
        const l = (listener = await GrpcListener.listen(slotAddress(sb.quorumAddrs, slot), {
          security: security.sec,
          log: (msg, f) => log.warn({ ...f, role: 'tls' }, msg),
        }))
        cleanup.unshift(() => l.close())
        const quorumLog = (msg: string, f?: Record<string, unknown>): void => log.info({ ...f, role: 'quorum' }, msg)
        const m: QuorumMember = await QuorumMember.start({
          meta,
          fsid: sb.fsid,
          slot,
          slotAddrs: sb.quorumAddrs,
          rid,
          heartbeatTimeoutMs,
          fence,
          listener: l,
          security: security.sec,
          log: quorumLog,
          startServer: async (term, fenced) => {
            await serverHost.start(slot, {
              listener: l,
              fenced,
              fence: (target, reason, who) => m.fenceOnce({ rid: target, reason, ...who }),
            })
          },
          stopServer: () => serverHost.stop(),
        })
        member = m
        cleanup.unshift(() => m.stop())
      }
      const serverAddr: string | (() => Promise<string>) =
        'serve' in role
          ? await serverHost.start(role.serve)
          : 'connect' in role
            ? role.connect
            : () => leaderAddress(meta, sb.fsid, sb.quorumAddrs)

      const client = new NetClient(serverAddr, {
        log: (msg, f) => log.warn({ ...f, role: 'client' }, msg),
        clientName: `${hostname()}:${process.pid}:${mountpoint}`,
        pidStart: processStartTime(process.pid),
        quorumSlot: o.quorumSlotNr,
        security: security.sec,
        // a failover takes a heartbeat timeout and an election: resend for longer than that
        retryForMs: 2 * heartbeatTimeoutMs + 60_000,
        backoffMaxMs: 250,
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

      const m = new Mount(o, sb, meta, data, serverHost, member, client, core, metrics)
      m.listener = listener
      registerItemCacheMetrics(metrics, items)
      registerTransMetrics(metrics, trans)
      registerBlockCacheMetrics(metrics, cache)
      registerForestMetrics(metrics, forest)
      registerBtreeMetrics(metrics, () => [btreeCountersOf(cache), ...serverHost.btreeCounters()])
      registerLockClientMetrics(metrics, locks)
      registerFsMetrics(metrics, fs)
      registerFrontendMetrics(metrics, () => m.frontend?.stats())
      registerFreeSpaceMetrics(metrics, () => client.statfs())
      registerLocksHeldMetric(metrics, locks)
      serverHost.exportMetrics(metrics)
      if (member) registerQuorumMetrics(metrics, member)
      if (listener) registerTlsMetrics(metrics, listener)
      if (o.metricsAddr) m.metricsAddr = await metrics.listen(o.metricsAddr)

      const frontend = await (o.frontend ?? FRONTENDS[DEFAULT_FRONTEND])(metrics.instrument(fs), mountpoint, {
        debug: o.fuseDebug,
        spinUs: o.fuseSpinUs,
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
          quorumSlot: o.quorumSlotNr,
          serverAddr: client.addr,
        },
        'mounted',
      )
      return m
    } catch (e) {
      for (const c of cleanup) await c().catch(() => undefined)
      throw e
    }
  }

  /** The quorum as this agent sees it: its membership, or for a plain client the quorum blocks. */
  async quorumView(): Promise<QuorumView> {
    const q = this.quorumMember?.status()
    if (q)
      return {
        slot: q.slot,
        term: q.term,
        leaderSlot: q.leaderSlot,
        role: q.role,
        serving: q.serving,
        heartbeatTimeoutMs: q.heartbeatTimeoutMs,
        majority: q.majority,
        slots: q.slots,
        fencing: q.fencing && {
          rid: q.fencing.rid,
          reason: q.fencing.reason,
          attempts: q.fencing.attempts,
          sinceMs: Date.now() - q.fencing.since,
          error: q.fencing.error,
        },
        elections: q.counters.elections,
        elected: q.counters.elected,
        fenceRequests: q.counters.fenceRequests,
        fencesConfirmed: q.counters.fencesConfirmed,
        fenceErrors: q.counters.fenceErrors,
        lastStartMs: q.lastStartMs,
      }
    const slotAddrs = this.sb.quorumAddrs
    const { blocks } = await readQuorumBlocks(this.meta, this.sb.fsid, slotAddrs.length)
    const slots = quorumSlots(slotAddrs)
    return {
      slot: -1,
      term: highestTerm(blocks),
      leaderSlot: leaderOf(blocks)?.slot ?? (this.serverHost.current ? 0 : -1),
      role: 'client',
      serving: this.serverHost.current !== undefined,
      heartbeatTimeoutMs: 0,
      majority: quorumMajority(slotAddrs),
      slots,
      elections: 0,
      elected: 0,
      fenceRequests: 0,
      fencesConfirmed: 0,
      fenceErrors: 0,
    }
  }

  setHeartbeatTimeout(ms: number): void {
    if (!this.quorumMember)
      throw new FsError(
        'EINVAL',
        'this mount is not a quorum member (mounted without quorum_slot_nr): it has no heartbeat timeout',
      )
    this.quorumMember.setHeartbeatTimeout(ms)
  }

  /** Unmount, commit, say farewell and close everything; safe to call more than once. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      const log = this.opts.log
      // reads waiting for offline data would hold the FUSE mount busy: they fail (EIO)
      this.fs.dataWaiters.failAll('EIO', 'the filesystem is being unmounted')
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
      // the member stops the server role (STOP), ends (END) and resigns: the others elect now
      await this.quorumMember?.stop().catch((e: unknown) => log.error({ err: String(e) }, 'leaving the quorum failed'))
      await this.serverHost.stop()
      await this.listener?.close()
      await this.metrics.close()
      await this.data.close()
      await this.meta.close()
      log.info('unmounted')
    })()
    return this.stopping
  }
}
