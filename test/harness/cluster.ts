/*
 * An in-process cluster for tests: several mounts and one server role in this process, on
 * in-memory devices formatted by tools/mkfs.ts, talking through the harness's transport
 * (transport.ts: copied, asynchronous, ordered, fenceable).  Both sides are the real code:
 * each mount is agent/mount-core.ts MountCore (what Mount.start composes, minus the network
 * client, FUSE, metrics and the admin socket), the server role is server/server-role.ts
 * ClusterServer over the in-process transport (server-role.ts InProcTransport) in place of
 * the gRPC NetServer.
 *
 *   const c = await InProcCluster.start({ mounts: 3, seed })
 *   await c.mount(0).fs.mkdir(ROOT_INO, 'd', 0o755, ROOT)   // the FsApi, by inode number
 *   await c.sync(0)                 // commit mount 0's open transaction
 *   await c.crash(1)                // mount 1 dies: no farewell, uncommitted work lost,
 *                                   // the server reclaims it as its liveness check would
 *   await c.remount(1)              // a new mount (new rid) in slot 1
 *   await c.restartServer()         // the server role stops and starts; mounts recover locks
 *   const report = await c.check()  // tools/check.ts over the devices (merges drained first)
 *   await c.stop()                  // every mount commits and says farewell, then the server stops
 *   await InProcCluster.start({ devices: c.devices() })   // the same filesystem again
 */
import { MountCore, readMountSupers } from '../../node-agent/src/agent/mount-core.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import type { Trans } from '../../node-agent/src/client/trans.js'
import type { FsApi } from '../../node-agent/src/fs/fs-api.js'
import type { LockClient } from '../../node-agent/src/lock/lock-client.js'
import { ClusterServer } from '../../node-agent/src/server/server-role.js'
import { checkFilesystem, type CheckReport } from '../../node-agent/src/tools/check.js'
import { mkfs } from '../../node-agent/src/tools/mkfs.js'
import { MemDevice } from '../helpers/mem-device.js'
import { Rng } from '../helpers/rng.js'
import { InProcTransport } from './server-role.js'
import { FencedDevice, MountLink } from './transport.js'

/** the liveness check never reclaims on its own: crash() tells it when a mount is gone */
const MOUNT_TIMEOUT_MS = 24 * 3600_000

export interface InProcClusterOptions {
  /** mounts started (default 1) */
  mounts?: number
  /** seeds rids, the fsid, delivery delays and duplicated requests (default 1) */
  seed?: number
  /** sparse in-memory device sizes (defaults 1 GiB metadata, 2 GiB data) */
  metaBytes?: number
  dataBytes?: number
  /** each mount's commit timer (default 10 s, as the agent) */
  commitIntervalMs?: number
  itemCacheItems?: number
  blockCacheBlocks?: number
  /** idle cluster locks a mount keeps (the lock client's default when unset) */
  lockIdleCount?: number
  /** each mount's periodic orphan scan (default 0: only at mount; tests call fs.deleteOrphans) */
  orphanScanDelayMs?: number
  /** probability that any request of a mount is delivered twice (its first reply lost); default 0 */
  duplicateRequests?: number
  /** lock messages wait 0..N extra event-loop turns each (default 2; order is always kept) */
  maxDelayTurns?: number
  /** how long a restarted server waits for the mounts to say hello (default 5 s) */
  recoveryMs?: number
  /** start on these devices (a stopped cluster's) instead of formatting new ones */
  devices?: { meta: MemDevice; data: MemDevice }
  /** log lines of the server and the mounts (default: only errors, to the console) */
  log?: (who: string, msg: string, fields?: Record<string, unknown>) => void
}

/** One in-process mount: the agent's parts (`core`: caches, forest, trans, locks, fs), without FUSE. */
export class InProcMount {
  private stopping: Promise<void> | undefined

  constructor(
    readonly slot: number,
    readonly link: MountLink,
    readonly meta: FencedDevice,
    readonly data: FencedDevice,
    readonly core: MountCore,
  ) {}

  get rid(): number {
    return this.core.rid
  }
  get trans(): Trans {
    return this.core.trans
  }
  get locks(): LockClient {
    return this.core.locks
  }

  /** the filesystem by inode number, as the FUSE adapter sees it */
  get fs(): FsApi {
    return this.core.fs
  }

  get alive(): boolean {
    return this.link.isAlive && this.stopping === undefined
  }

  /** Clean unmount, as Mount.stop() without FUSE: commit, farewell, stop the lock client. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      try {
        await this.core.close()
      } finally {
        this.link.cut()
        await this.data.close()
        await this.meta.close()
      }
    })()
    return this.stopping
  }

  /** The process dies: nothing more reaches the devices or the server. */
  async kill(): Promise<void> {
    this.stopping ??= (async () => {
      this.core.stopOrphanScan()
      this.link.cut()
      this.meta.fence()
      this.data.fence()
      this.locks.shutdown()
      // stops the commit timer; the commit it tries fails on the fenced devices
      await this.trans.close().catch(() => undefined)
    })()
    return this.stopping
  }
}

export class InProcCluster {
  private readonly slots: Array<InProcMount | undefined> = []
  private role: ClusterServer | undefined
  private transport: InProcTransport | undefined
  private readonly rng: Rng
  private stopped = false

  private constructor(
    readonly metaDev: MemDevice,
    readonly dataDev: MemDevice,
    private readonly o: InProcClusterOptions,
  ) {
    this.rng = new Rng(o.seed ?? 1)
  }

  static async start(o: InProcClusterOptions = {}): Promise<InProcCluster> {
    const rng = new Rng((o.seed ?? 1) ^ 0x5eed)
    let meta: MemDevice
    let data: MemDevice
    if (o.devices) {
      meta = o.devices.meta
      data = o.devices.data
    } else {
      meta = new MemDevice(o.metaBytes ?? 1 << 30, 'mem-meta')
      data = new MemDevice(o.dataBytes ?? 2 * 1024 ** 3, 'mem-data')
      await mkfs(meta, data, { quorumSlots: 1, fsid: rng.u64() | 1n })
    }
    const c = new InProcCluster(meta, data, o)
    c.role = await c.startRole(0)
    for (let i = 0; i < (o.mounts ?? 1); i++) await c.remount(i)
    return c
  }

  private log(who: string, msg: string, fields?: Record<string, unknown>): void {
    if (this.o.log) return this.o.log(who, msg, fields)
    if (/fail|error|could not/i.test(msg)) console.log(`      [${who}] ${msg} ${fields ? JSON.stringify(fields) : ''}`)
  }

  /** The real server role over the in-process transport; live mounts attach to it. */
  private async startRole(recoveryMs: number): Promise<ClusterServer> {
    const role = await ClusterServer.start(new FencedDevice(this.metaDev, 'server:meta'), {
      transport: InProcTransport.factory((t) => (this.transport = t)),
      log: (msg, f) => this.log('server', msg, f),
      recoveryMs,
      mountTimeoutMs: MOUNT_TIMEOUT_MS,
    })
    for (const m of this.slots) if (m?.alive) this.transport!.attach(m.link)
    return role
  }

  /** The server role (its Server and LockServer), for tests that look inside. */
  get server(): ClusterServer {
    if (!this.role) throw new FsError('ENOTCONN', 'the server role is not running')
    return this.role
  }

  /** The live mount in slot i. */
  mount(i: number): InProcMount {
    const m = this.slots[i]
    if (!m || !m.alive) throw new FsError('ENOTCONN', `no live mount in slot ${i}`)
    return m
  }

  /** how many slots there are (live or not) */
  get size(): number {
    return this.slots.length
  }

  /** Commit mount i's open transaction (scoutfs sync). */
  sync(i: number): Promise<void> {
    return this.mount(i).fs.sync()
  }

  /**
   * Mount the filesystem in slot i (which must be empty or dead), composed as Mount.start
   * composes an agent.
   */
  async remount(i: number): Promise<InProcMount> {
    if (this.slots[i]?.alive) throw new FsError('EBUSY', `slot ${i} has a live mount`)
    if (!this.transport) throw new FsError('ENOTCONN', 'the server role is not running')
    const o = this.o
    const who = `mount${i}`
    const meta = new FencedDevice(this.metaDev, `${who}:meta`)
    const data = new FencedDevice(this.dataDev, `${who}:data`)
    const sb = await readMountSupers(meta, data)
    const rid = this.rng.range(1, 2 ** 47 - 1)
    const link = new MountLink(rid, {
      rng: this.rng.fork(),
      duplicateProb: o.duplicateRequests ?? 0,
      maxDelayTurns: o.maxDelayTurns ?? 2,
    })
    this.transport!.attach(link)
    const core = await MountCore.open({
      api: link.api,
      openLocks: (locks) => link.openLocks(locks),
      meta,
      data,
      fsid: sb.fsid,
      rid,
      // debug lines (a stale block read again, each commit) only to a log the test asked for
      log: (level, msg, f) => (level !== 'debug' || o.log ? this.log(who, msg, f) : undefined),
      commitIntervalMs: o.commitIntervalMs,
      itemCacheItems: o.itemCacheItems,
      blockCacheBlocks: o.blockCacheBlocks,
      lockIdleCount: o.lockIdleCount,
      orphanScanDelayMs: o.orphanScanDelayMs ?? 0,
    })
    const m = new InProcMount(i, link, meta, data, core)
    this.slots[i] = m
    return m
  }

  /**
   * Mount i's process dies without a farewell: its uncommitted work is lost, and the server
   * forgets it and reclaims it (the role's own liveness check, run at once as if the mount
   * timeout were up).
   * `reclaim: false` leaves it recorded: the server then holds its locks until a restart's
   * recovery gives up on it.
   */
  async crash(i: number, opts: { reclaim?: boolean } = {}): Promise<void> {
    const m = this.slots[i]
    if (!m) throw new FsError('ENOENT', `no mount in slot ${i}`)
    await m.kill()
    if (!(opts.reclaim ?? true) || !this.role) return
    this.transport?.silence(m.rid)
    await this.role.checkLiveness()
  }

  /** Clean unmount of mount i (commit, farewell). */
  async unmount(i: number): Promise<void> {
    await this.mount(i).stop()
  }

  /**
   * Stop the server role cleanly and start another on the same devices: every live mount
   * reconnects, reports the locks it holds, and resends its outstanding requests (lock
   * recovery); mounts that do not say hello within recoveryMs are reclaimed.
   */
  async restartServer(): Promise<void> {
    const old = this.server
    this.role = this.transport = undefined
    await old.stop()
    const role = await this.startRole(this.o.recoveryMs ?? 5000)
    this.role = role
    await role.recovered()
  }

  /** Wait until the server has merged every finalized log tree. */
  async drainMerges(): Promise<void> {
    await this.server.server.drainMerges()
  }

  /**
   * tools/check.ts over the devices as they are now (after the merges in progress).  What the
   * mounts did not commit is not there; what they committed is, consistently.
   */
  async check(): Promise<CheckReport> {
    if (this.role) await this.drainMerges()
    return checkFilesystem(this.metaDev, this.dataDev)
  }

  /** Every live mount unmounts cleanly, then the server role stops.  Safe to call twice. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    const errs: unknown[] = []
    for (const m of this.slots) if (m?.alive) await m.stop().catch((e: unknown) => errs.push(e))
    for (const m of this.slots) if (m && m.link.isAlive) await m.kill()
    await this.role?.stop()
    this.role = this.transport = undefined
    if (errs.length) throw errs[0]
  }

  /** The shared devices (the metadata and data a check or a new cluster would open). */
  devices(): { meta: MemDevice; data: MemDevice } {
    return { meta: this.metaDev, data: this.dataDev }
  }
}
