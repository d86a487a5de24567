/*
 * The client side of one mount, composed once for the agent (mount.ts Mount.start, which adds
 * the network client, the frontend, metrics and the admin socket) and for the in-process test
 * harness (test/harness/cluster.ts, which adds its in-process link): greeting with the mount's
 * rid, block cache, forest, item cache, transactions, the lock client with the invalidation
 * hook (fs/lock-invalidation.ts), the filesystem, its answers to the server's open-map
 * requests (protocol/open-map.ts: the lock stream's endpoint carries them), and the orphan
 * scan: at open, then every `orphanScanDelayMs` (±20%) until close.
 *
 * Invariants: the lock stream is opened after the greeting (the server knows the rid first);
 * invalidations reach the kernel cache of whatever frontend is attached (`kernel`, none until
 * then); close() commits, says farewell and stops the lock client, in that order, and leaves
 * the devices and the transport to the caller.
 */
import { Forest } from '../client/forest.js'
import { ItemCache } from '../client/item-cache.js'
import { Trans } from '../client/trans.js'
import { Filesystem, type ClusterLocks } from '../fs/fs.js'
import { NO_KERNEL_CACHE, type KernelCache } from '../fs/frontend.js'
import { lockInvalidationHook } from '../fs/lock-invalidation.js'
import { LockClient } from '../lock/lock-client.js'
import type { LockClientMsg } from '../protocol/lock-modes.js'
import type { OpenMapSource } from '../protocol/open-map.js'
import type { ServerApi } from '../protocol/server-api.js'
import { BlockCache } from '../storage/block.js'
import type { BlockDevice } from '../storage/device.js'
import { FORMAT_VERSION } from '../storage/format.js'
import { readDataSuper, readSuper, type SuperBlock } from '../storage/super.js'
import { FsError } from '../util/errors.js'

export type MountLogLevel = 'debug' | 'info' | 'warn' | 'error'
export type MountLog = (level: MountLogLevel, msg: string, fields?: Record<string, unknown>) => void

export interface MountCoreOptions {
  /** the server as this mount reaches it (NetClient, or the harness's link) */
  api: ServerApi
  /** carry the lock client's messages (and open-map answers) from now on; returns its send function */
  openLocks: (endpoint: MountLockEndpoint) => (msg: LockClientMsg) => void
  meta: BlockDevice
  data: BlockDevice
  fsid: bigint
  /** this mount's id (never 0) */
  rid: number
  log: MountLog
  commitIntervalMs?: number
  itemCacheItems?: number
  blockCacheBlocks?: number
  /** idle cluster locks kept (the lock client's default when unset) */
  lockIdleCount?: number
  /** the cluster locks as the filesystem takes them (default: the lock client itself) */
  fsLocks?: (locks: LockClient) => ClusterLocks
  /** the period of the orphan scan (default 10 s, each wait ±20%; 0: only at open) */
  orphanScanDelayMs?: number
}

/** What the lock stream delivers to: the lock client, and the open map's answers. */
export interface MountLockEndpoint {
  receive: LockClient['receive']
  recoveryReport: LockClient['recoveryReport']
  resendRequests: LockClient['resendRequests']
  openMap: OpenMapSource
}

/**
 * The super blocks of a metadata and a data device that belong together; EINVAL if the data
 * device is not this filesystem's.
 */
export async function readMountSupers(meta: BlockDevice, data: BlockDevice): Promise<SuperBlock> {
  const sb = await readSuper(meta)
  const dsb = await readDataSuper(data)
  if (!dsb || dsb.fsid !== sb.fsid)
    throw new FsError(
      'EINVAL',
      `${data.path} is not the data device of filesystem ${sb.fsid.toString(16)} on ${meta.path}` +
        (dsb ? ` (it belongs to ${dsb.fsid.toString(16)})` : ''),
    )
  return sb
}

export class MountCore {
  /** the kernel's caches of the attached frontend (none until one is attached) */
  kernel: KernelCache = NO_KERNEL_CACHE
  private scanTimer: NodeJS.Timeout | undefined
  private scanning: Promise<void> | undefined
  private closing = false

  private constructor(
    readonly rid: number,
    readonly api: ServerApi,
    readonly cache: BlockCache,
    readonly forest: Forest,
    readonly items: ItemCache,
    readonly trans: Trans,
    readonly locks: LockClient,
    readonly fs: Filesystem,
    private readonly log: MountLog,
  ) {}

  /** Greet the server and assemble the mount; its orphan scan has run when this resolves. */
  static async open(o: MountCoreOptions): Promise<MountCore> {
    const { api, rid, log } = o
    await api.greeting(rid, o.fsid, FORMAT_VERSION)
    const cache = new BlockCache(o.meta, o.fsid, o.blockCacheBlocks ?? 1024)
    // a stale block is expected (a merge freed and reused it): the forest refreshes its
    // roots and reads again, and only a stale block from fresh roots is an error (EIO)
    cache.onBadBlock = (err, blkno) =>
      log(err.code === 'ESTALE' ? 'debug' : 'error', err.message, { blkno, code: err.code })
    const forest = new Forest(cache, () => api.getRoots())
    const items = new ItemCache(forest, o.itemCacheItems ?? 500_000)
    const trans = new Trans(api, rid, cache, items, forest, o.meta, o.data, {
      commitIntervalMs: o.commitIntervalMs,
      log: (msg, f) => log('error', msg, f),
    })
    // the core exists before any lock message can arrive (they come on later turns)
    const kernel = { of: (): KernelCache => NO_KERNEL_CACHE }
    const fsRef: { fs?: Filesystem } = {}
    const locks = new LockClient({
      rid,
      send: (msg) => lockSend(msg),
      onInvalidate: lockInvalidationHook(
        trans,
        items,
        () => kernel.of(),
        (first, last) => fsRef.fs?.dataWaiters.wakeRange(first, last),
      ),
      refreshRoots: async (version) => forest.invalidateRoots(version),
      lockIdleCount: o.lockIdleCount,
      log: (msg) => log('warn', msg, { role: 'locks' }),
    })
    const lockSend = o.openLocks({
      receive: (m) => locks.receive(m),
      recoveryReport: () => locks.recoveryReport(),
      resendRequests: () => locks.resendRequests(),
      // before the filesystem exists nothing is open
      openMap: { openInodes: (group) => fsRef.fs?.openInodes(group) ?? [] },
    })
    trans.onCommit = (seq, ms, n, phases) => log('debug', 'commit', { seq, ms, items: n, phases })
    trans.start()
    const fs = new Filesystem(items, trans, api, o.data, rid, o.fsLocks ? o.fsLocks(locks) : locks)
    fsRef.fs = fs
    const core = new MountCore(rid, api, cache, forest, items, trans, locks, fs, log)
    kernel.of = () => core.kernel
    try {
      const orphans = await fs.deleteOrphans()
      if (orphans) log('info', 'deleted orphaned inodes', { orphans })
    } catch (e) {
      locks.shutdown()
      throw e
    }
    core.scheduleOrphanScan(o.orphanScanDelayMs ?? 10_000)
    return core
  }

  /** The periodic orphan scan: frees the orphans of mounts that died with files open. */
  private scheduleOrphanScan(delayMs: number): void {
    if (delayMs <= 0 || this.closing) return
    this.scanTimer = setTimeout(
      () => {
        this.scanTimer = undefined
        this.scanning = this.fs
          .deleteOrphans()
          .then(
            (n) => n && this.log('info', 'deleted orphaned inodes', { orphans: n }),
            (e: unknown) => this.log('warn', 'orphan scan failed', { err: String(e) }),
          )
          .then(() => {
            this.scanning = undefined
            this.scheduleOrphanScan(delayMs)
          })
      },
      delayMs * (0.8 + 0.4 * Math.random()),
    )
    this.scanTimer.unref()
  }

  /**
   * Commit what is open, say farewell and stop the lock client.  Each step runs even if one
   * before it failed (each failure is logged); the first failure is thrown at the end.
   */
  /** No more orphan scans (close() does this; a harness's dead mount too). */
  stopOrphanScan(): void {
    this.closing = true
    if (this.scanTimer) clearTimeout(this.scanTimer)
    this.scanTimer = undefined
  }

  async close(): Promise<void> {
    this.stopOrphanScan()
    await this.scanning
    let failed: { e: unknown } | undefined
    try {
      await this.trans.close()
    } catch (e) {
      this.log('error', 'final commit failed', { err: String(e) })
      failed = { e }
    }
    try {
      await this.api.farewell(this.rid)
    } catch (e) {
      this.log('error', 'farewell failed', { err: String(e) })
      failed ??= { e }
    }
    this.locks.shutdown()
    if (failed) throw failed.e
  }
}
