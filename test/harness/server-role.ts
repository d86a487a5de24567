/*
 * The server role of the in-process cluster: the Server and the LockServer composed as
 * server/server-role.ts (ClusterServer) composes them, with the harness's links
 * (transport.ts MountLink) in place of the NetServer.
 *
 *  - Start-up recovery: the mounts the super block records get until every one has said hello
 *    on its lock stream (or recoveryMs is up) before the lock server grants anything; the
 *    absent are then reclaimed and the core counter is moved above every reported write seq.
 *  - A hello outside recovery is a reconnect: unanswered invalidations are sent again.
 *  - A farewell drops the mount's locks (NetServer's 'farewell' event).
 *  - reclaimGone(rid) is what the liveness check does to a mount that stopped answering:
 *    forget its link, drop its locks, reclaim it.  The harness calls it when it crashes a
 *    mount (the liveness timeout, elapsed at once).
 */
import type { BlockDevice } from '../../node-agent/src/storage/device.js'
import { LockServer } from '../../node-agent/src/lock/lock-server.js'
import type { LockClientMsg, RecoveredLock } from '../../node-agent/src/protocol/lock-modes.js'
import { Server } from '../../node-agent/src/server/server.js'
import type { MountLink, ServerEnd } from './transport.js'

export interface InProcServerRoleOptions {
  log: (msg: string, fields?: Record<string, unknown>) => void
  /** how long recorded mounts get to say hello after a start (0: reclaim them at once) */
  recoveryMs: number
}

export class InProcServerRole implements ServerEnd {
  private readonly pending = new Set<number>()
  private recoveryTimer: NodeJS.Timeout | undefined
  private recovery: Promise<void> | undefined
  private stopped = false
  /** the links of the mounts that greeted (by rid) */
  readonly links = new Map<number, MountLink>()
  /** last request or lock message of each mount (ms) */
  readonly lastHeard = new Map<number, number>()

  private constructor(
    readonly server: Server,
    readonly locks: LockServer,
    private readonly o: InProcServerRoleOptions,
  ) {}

  get api(): Server {
    return this.server
  }

  static async start(meta: BlockDevice, o: InProcServerRoleOptions): Promise<InProcServerRole> {
    const server = await Server.start(meta, { log: o.log, reclaimAtStart: o.recoveryMs === 0 })
    try {
      const recorded = await server.recordedMounts()
      let role: InProcServerRole | undefined
      const locks = new LockServer({
        send: (rid, m) => role?.links.get(rid)?.sendDown(m),
        nextSeq: () => server.nextLockSeq(),
        rootsVersion: () => server.rootsVersion,
        recovering: recorded.length > 0,
        log: (m) => o.log(m),
      })
      role = new InProcServerRole(server, locks, o)
      for (const rid of recorded) role.pending.add(rid)
      if (recorded.length > 0) {
        o.log('waiting for recorded mounts to reconnect', { mounts: recorded.length, ms: o.recoveryMs })
        const r = role
        r.recoveryTimer = setTimeout(() => void r.endRecovery(), o.recoveryMs)
      }
      return role
    } catch (e) {
      await server.stop()
      throw e
    }
  }

  /** A mount's link reaches this server from now on. */
  attach(link: MountLink): void {
    this.links.set(link.rid, link)
    link.connect(this)
  }

  touch(rid: number): void {
    this.lastHeard.set(rid, Date.now())
  }

  receiveLock(rid: number, msg: LockClientMsg): void {
    if (this.stopped) return
    this.locks.receive(rid, msg)
  }

  hello(rid: number, held: RecoveredLock[]): void {
    if (this.stopped) return
    if (!this.locks.isRecovering) {
      // a reconnect to this same server: what it was sent while away was lost
      const n = this.locks.resendInvalidations(rid)
      if (n) this.o.log('resent invalidations after a reconnect', { rid: rid.toString(16), invalidations: n })
      return
    }
    if (!this.pending.has(rid)) return
    this.locks.recover(rid, held)
    this.pending.delete(rid)
    this.o.log('mount recovered', { rid: rid.toString(16), locks: held.length })
    if (this.pending.size === 0) void this.endRecovery()
  }

  farewell(rid: number): void {
    this.links.delete(rid)
    this.locks.removeClient(rid)
  }

  /** Wait until lock recovery (if any) has finished. */
  recovered(): Promise<void> {
    return this.locks.isRecovering ? this.endRecoveryWhenDone() : Promise.resolve()
  }

  private async endRecoveryWhenDone(): Promise<void> {
    while (this.locks.isRecovering && !this.stopped) {
      if (this.recovery) return this.recovery
      await new Promise((r) => setTimeout(r, 5))
    }
  }

  /** Reclaim the mounts that did not come back and start granting. */
  private endRecovery(): Promise<void> {
    this.recovery ??= (async () => {
      if (this.recoveryTimer) clearTimeout(this.recoveryTimer)
      const gone = [...this.pending]
      this.pending.clear()
      try {
        for (const rid of gone) {
          this.locks.removeClient(rid)
          await this.server.reclaim(rid)
          this.o.log('reclaimed a mount that did not reconnect', { rid: rid.toString(16) })
        }
        await this.server.seedSeq(this.locks.maxRecoveredWriteSeq + 1)
      } catch (e) {
        this.o.log('lock recovery could not reclaim every absent mount', { err: (e as Error).message })
      }
      this.locks.finishRecovery()
      this.o.log('lock recovery finished', { reclaimed: gone.length })
    })()
    return this.recovery
  }

  /** What the liveness check does to a mount gone silent: forget it, drop its locks, reclaim it. */
  async reclaimGone(rid: number): Promise<void> {
    this.links.delete(rid)
    this.pending.delete(rid)
    this.locks.removeClient(rid)
    await this.server.reclaim(rid)
    if (this.locks.isRecovering && this.pending.size === 0) await this.endRecovery()
  }

  /** Stop serving: the links first, then merges in progress, then the super writer. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.recoveryTimer) clearTimeout(this.recoveryTimer)
    for (const l of this.links.values()) l.disconnect()
    this.links.clear()
    await this.server.drainMerges().catch(() => undefined)
    await this.server.stop()
  }
}
