/*
 * An in-process cluster for tests: several mounts (Filesystem over ItemCache, Trans, Forest
 * and a LockClient) and one server role (Server + LockServer, server-role.ts) in this
 * process, on in-memory devices formatted by tools/mkfs.ts, talking through the harness's
 * transport (transport.ts: copied, asynchronous, ordered, fenceable).  Each mount is composed
 * as agent/mount.ts (Mount.start) composes a real agent — greeting with a fresh rid, forest,
 * item cache, transactions, the lock client with the same invalidation hook (commit what was
 * written under the lock unless it is committed, then drop the item-cache range unless WRITE ->
 * READ), the filesystem, the orphan scan — minus FUSE, metrics and the admin socket.
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
import { BlockCache } from '../../node-agent/src/storage/block.js'
import { FORMAT_VERSION } from '../../node-agent/src/storage/format.js'
import { readDataSuper, readSuper } from '../../node-agent/src/storage/super.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import { Forest } from '../../node-agent/src/client/forest.js'
import { ItemCache } from '../../node-agent/src/client/item-cache.js'
import { Trans } from '../../node-agent/src/client/trans.js'
import { Filesystem } from '../../node-agent/src/fs/fs.js'
import type { FsApi } from '../../node-agent/src/fs/fs-api.js'
import { LockClient } from '../../node-agent/src/lock/lock-client.js'
import { invalidationDropsCache, isWriteMode } from '../../node-agent/src/protocol/lock-modes.js'
import { checkFilesystem, type CheckReport } from '../../node-agent/src/tools/check.js'
import { mkfs } from '../../node-agent/src/tools/mkfs.js'
import { MemDevice } from '../helpers/mem-device.js'
import { Rng } from '../helpers/rng.js'
import { InProcServerRole } from './server-role.js'
import { FencedDevice, MountLink } from './transport.js'

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

/** One in-process mount: the agent's parts, without FUSE. */
export class InProcMount {
  private stopping: Promise<void> | undefined

  constructor(
    readonly slot: number,
    readonly rid: number,
    readonly link: MountLink,
    readonly meta: FencedDevice,
    readonly data: FencedDevice,
    readonly cache: BlockCache,
    readonly forest: Forest,
    readonly items: ItemCache,
    readonly trans: Trans,
    readonly locks: LockClient,
    readonly filesystem: Filesystem,
  ) {}

  /** the filesystem by inode number, as the FUSE adapter sees it */
  get fs(): FsApi {
    return this.filesystem
  }

  get alive(): boolean {
    return this.link.isAlive && this.stopping === undefined
  }

  /** Clean unmount, as Mount.stop() without FUSE: commit, farewell, stop the lock client. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      await this.trans.close()
      await this.link.api.farewell(this.rid)
      this.locks.shutdown()
      this.link.cut()
      await this.data.close()
      await this.meta.close()
    })()
    return this.stopping
  }

  /** The process dies: nothing more reaches the devices or the server. */
  async kill(): Promise<void> {
    this.stopping ??= (async () => {
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
  private role: InProcServerRole | undefined
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

  private async startRole(recoveryMs: number): Promise<InProcServerRole> {
    return InProcServerRole.start(new FencedDevice(this.metaDev, 'server:meta'), {
      log: (msg, f) => this.log('server', msg, f),
      recoveryMs,
    })
  }

  /** The server role (its Server and LockServer), for tests that look inside. */
  get server(): InProcServerRole {
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
    const role = this.server
    const o = this.o
    const who = `mount${i}`
    const meta = new FencedDevice(this.metaDev, `${who}:meta`)
    const data = new FencedDevice(this.dataDev, `${who}:data`)
    const sb = await readSuper(meta)
    const dsb = await readDataSuper(data)
    if (!dsb || dsb.fsid !== sb.fsid) throw new FsError('EINVAL', 'the data device is not this filesystem')
    const rid = this.rng.range(1, 2 ** 47 - 1)
    const link = new MountLink(rid, {
      rng: this.rng.fork(),
      duplicateProb: o.duplicateRequests ?? 0,
      maxDelayTurns: o.maxDelayTurns ?? 2,
    })
    role.attach(link)
    const client = link.api
    await client.greeting(rid, sb.fsid, FORMAT_VERSION)
    const cache = new BlockCache(meta, sb.fsid, o.blockCacheBlocks ?? 1024)
    cache.onBadBlock = (err, blkno) => this.log(who, 'bad block error', { blkno, code: err.code })
    const forest = new Forest(cache, () => client.getRoots())
    const items = new ItemCache(forest, o.itemCacheItems ?? 500_000)
    const trans = new Trans(client, rid, cache, items, forest, meta, data, {
      commitIntervalMs: o.commitIntervalMs,
      log: (msg, f) => this.log(who, msg, f),
    })
    const locks = new LockClient({
      rid,
      send: (msg) => lockSend(msg),
      onInvalidate: async (range, oldMode, newMode, info) => {
        // mount.ts: what was written under the lock goes to the log tree first (unless it is
        // committed already); then the cached items go, unless WRITE -> READ.  There is no
        // kernel cache here to drop.
        if (isWriteMode(oldMode) && info.wrote && !(info.dirtyTransSeq && info.dirtyTransSeq <= trans.committedSeq))
          await trans.commit()
        if (invalidationDropsCache(oldMode, newMode)) items.invalidate(range[0], range[1])
      },
      refreshRoots: async (version) => forest.invalidateRoots(version),
      lockIdleCount: o.lockIdleCount,
      log: (msg) => this.log(who, msg),
    })
    const lockSend = link.openLocks(locks)
    trans.start()
    const fs = new Filesystem(items, trans, client, data, rid, locks)
    const orphans = await fs.deleteOrphans(await client.listMounts())
    if (orphans) this.log(who, 'deleted orphaned inodes', { orphans })
    const m = new InProcMount(i, rid, link, meta, data, cache, forest, items, trans, locks, fs)
    this.slots[i] = m
    return m
  }

  /**
   * Mount i's process dies without a farewell: its uncommitted work is lost, and the server
   * forgets it and reclaims it (what the liveness check does once the mount timeout is up).
   * `reclaim: false` leaves it recorded: the server then holds its locks until a restart's
   * recovery gives up on it.
   */
  async crash(i: number, opts: { reclaim?: boolean } = {}): Promise<void> {
    const m = this.slots[i]
    if (!m) throw new FsError('ENOENT', `no mount in slot ${i}`)
    await m.kill()
    if (opts.reclaim ?? true) await this.role?.reclaimGone(m.rid)
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
    this.role = undefined
    await old.stop()
    const role = await this.startRole(this.o.recoveryMs ?? 5000)
    this.role = role
    for (const m of this.slots) if (m?.alive) role.attach(m.link)
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
    this.role = undefined
    if (errs.length) throw errs[0]
  }

  /** The shared devices (the metadata and data a check or a new cluster would open). */
  devices(): { meta: MemDevice; data: MemDevice } {
    return { meta: this.metaDev, data: this.dataDev }
  }
}
