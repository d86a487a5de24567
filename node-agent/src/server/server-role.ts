/*
 * The server role of an agent (DESIGN §3): the Server (the only writer of the super block:
 * log trees, allocators, inode numbers, merges), the LockServer, and the transport that
 * carries both to every mount of the cluster (ServerTransport: the gRPC NetServer by
 * default, an in-process one in the test harness).  The agent's own mount talks to it over
 * the same gRPC as every other mount, so there is one path for all of them.
 *
 * Start-up recovery (DESIGN §8): the mounts the super block records as mounted may still be
 * alive (the previous server stopped, or this agent restarted).  They get `recoveryMs` to
 * reconnect; until each has said hello on its Locks stream, reporting the locks it holds,
 * or the time is up, the lock server grants nothing.  The absent are then reclaimed and the
 * core counter is moved above every write seq that was reported.
 *
 * Liveness: a mount with no Locks stream that sent no request or heartbeat for
 * `mountTimeoutMs` is gone: its locks are dropped, so the other mounts go on, and it is
 * reclaimed (its committed log tree is merged; its uncommitted work is lost).  Fencing comes
 * with the quorum issue; until then a mount that was only cut off finds its next commit
 * refused (ESTALE) and must be remounted.
 *
 * The open map (protocol/open-map.ts, DESIGN §7): openInodes(rid, group) asks every other
 * mount that greeted this server, on its Locks stream, which inodes of the group it has open,
 * and answers the union once each has replied.  A mount without a lock stream is asked again
 * when its stream reopens (its hello); one that says farewell or is reclaimed while asked
 * counts as having nothing open.  Nothing is kept between questions; an ask that is not
 * answered within `openMapTimeoutMs` fails with ETIMEDOUT (the asker keeps the inode).
 */
import type { BlockDevice } from '../storage/device.js'
import { LockServer } from '../lock/lock-server.js'
import type { LockClientMsg, LockServerMsg, RecoveredLock } from '../protocol/lock-modes.js'
import type { GrpcListener } from '../net/listener.js'
import type { Security } from '../net/tls.js'
import { NetServer } from '../net/net-server.js'
import { openMapGroup, type OpenMapReplyMsg, type OpenMapRequestMsg } from '../protocol/open-map.js'
import { LOG_TREES_FINALIZED, type MountIdentity, type ServerApi } from '../protocol/server-api.js'
import { FsError } from '../util/errors.js'
import { Server } from './server.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

type Log = (msg: string, fields?: Record<string, unknown>) => void

/** A mount as the transport knows it (net-server.ts ClientInfo). */
export interface TransportClient {
  rid: number
  /** what it called itself */
  name: string
  /** Date.now() of its last request or heartbeat */
  lastHeartbeat: number
  /** whether its lock stream is open */
  lockStream: boolean
}

/** What the transport delivers to the role: every lock message, in order, and each hello. */
export interface ServerLockPort {
  receive(rid: number, msg: LockClientMsg): void
  /** a mount (re)opened its lock stream, holding `held` */
  hello(rid: number, held: RecoveredLock[]): void
  /** a mount's answer to an open-map request */
  openMapReply(rid: number, msg: OpenMapReplyMsg): void
}

/**
 * What ClusterServer needs from the transport that carries it to the mounts (net-server.ts
 * NetServer satisfies it): it serves the ServerApi, delivers lock messages to the port, and
 * emits 'farewell' (rid) when a mount leaves cleanly.
 */
export interface ServerTransport {
  /** the address mounts reach it at */
  readonly addr: string
  /** a lock message to mount `rid`; false if it has no lock stream open (the message is lost) */
  sendLock(rid: number, msg: LockServerMsg): boolean
  /** an open-map request to mount `rid`, on its lock stream; false if it has none open */
  sendOpenMap(rid: number, msg: OpenMapRequestMsg): boolean
  /** every mount that greeted and has not left */
  clients(): TransportClient[]
  /** the mounts not heard from for `timeoutMs` */
  staleClients(timeoutMs: number): TransportClient[]
  /** forget a reclaimed mount: its lock stream ends */
  forget(rid: number): void
  on(event: 'farewell', listener: (rid: number) => void): unknown
  /** stop serving; the ServerApi is the caller's to stop */
  close(): Promise<void>
}

/** Starts the transport serving `api` and feeding `port`. */
export type ServerTransportFactory = (api: ServerApi, port: ServerLockPort, log: Log) => Promise<ServerTransport>

/** NetServer on a listener shared with the quorum (a member's slot address). */
export function listenerTransport(listener: GrpcListener): ServerTransportFactory {
  return async (api, lockPort, log) => NetServer.attach(api, listener, { log, lockPort })
}

/** The default transport: NetServer (gRPC) listening on `addr`. */
export function grpcTransport(addr: string, security?: Security): ServerTransportFactory {
  return (api, lockPort, log) => NetServer.listen(api, addr, { log, lockPort, security })
}

export interface ClusterServerOptions {
  /** 'host:port' the default transport (gRPC) listens on (port 0: any free one) */
  addr?: string
  /** the default transport's TLS (default plaintext: tests) */
  security?: Security
  /** the transport to the mounts (default: grpcTransport(addr)) */
  transport?: ServerTransportFactory
  log: Log
  /** how long recorded mounts get to reconnect after a start (default 10 s; 0: reclaim at once) */
  recoveryMs?: number
  /** a mount silent this long, with its Locks stream gone, is reclaimed (default 10 s) */
  mountTimeoutMs?: number
  /** how long an open-map question waits for every mount's answer (default 10 s) */
  openMapTimeoutMs?: number
  /** take the single-server lease (Server.start; default true); a quorum leader passes false */
  lease?: boolean
  /** how many quorum slots elect a leader (Server.start; 0 or none: no quorum) */
  quorumMajority?: number
  /** recorded mounts already fenced (a quorum leader's predecessors): reclaimed at once */
  fenced?: readonly number[]
  /**
   * Fence a mount before it is reclaimed (DESIGN §11); resolves true once confirmed, false if
   * not (it is tried again later; nothing of the mount is reclaimed meanwhile).  Without it
   * (a lone server) a mount is reclaimed unfenced.
   */
  fence?: (rid: number, reason: MountFenceReason, who: MountIdentity) => Promise<boolean>
}

/** why the server fences a mount */
export type MountFenceReason = 'client_timeout' | 'recovery_timeout'

/** One open-map question in flight. */
interface OpenMapAsk {
  group: number
  /** the mounts that have not answered */
  waiting: Set<number>
  inos: Set<number>
  done: (e?: Error) => void
}

export interface ClusterServerStatus {
  /** mounts connected to this server (rids, hex) */
  mounts: string[]
  /** mounts the super block records */
  recorded: number
  logTrees: number
  finalized: number
  commits: number
  merges: number
  reclaims: number
  recovering: boolean
  /** quorum members whose farewell waits for the other members' (rids, hex; farewell-gate.ts) */
  farewellsHeld: string[]
}

export class ClusterServer {
  private readonly pending = new Set<number>()
  private recoveryTimer: NodeJS.Timeout | undefined
  private livenessTimer: NodeJS.Timeout | undefined
  private recovery: Promise<void> | undefined
  private net!: ServerTransport
  private stopped = false
  private readonly recoveredWaiters: Array<() => void> = []
  private readonly startedAt = Date.now()
  /** how long lock recovery took (ms), once it finished */
  recoveryMs: number | undefined
  private readonly asks = new Map<number, OpenMapAsk>()
  /** mounts being fenced now */
  private readonly fencing = new Set<number>()
  private nextAsk = 1

  private constructor(
    readonly server: Server,
    readonly locks: LockServer,
    private readonly o: ClusterServerOptions,
  ) {}

  static async start(meta: BlockDevice, o: ClusterServerOptions): Promise<ClusterServer> {
    const recoveryMs = o.recoveryMs ?? 10_000
    const server = await Server.start(meta, {
      log: o.log,
      reclaimAtStart: recoveryMs === 0,
      lease: o.lease,
      quorumMajority: o.quorumMajority,
    })
    try {
      for (const rid of o.fenced ?? []) {
        await server.reclaim(rid)
        o.log('reclaimed a fenced mount', { rid: rid.toString(16) })
      }
      const recorded = await server.recordedMounts()
      const transport = o.transport ?? (o.addr !== undefined ? grpcTransport(o.addr, o.security) : undefined)
      if (!transport) throw new FsError('EINVAL', 'the server role needs an address or a transport')
      // the lock server's messages go out once the transport is up (nothing is sent before)
      const out: { net?: ServerTransport } = {}
      const locks = new LockServer({
        send: (rid, m) => void out.net?.sendLock(rid, m),
        nextSeq: () => server.nextLockSeq(),
        rootsVersion: () => server.rootsVersion,
        recovering: recorded.length > 0,
        log: (m) => o.log(m),
      })
      const cs = new ClusterServer(server, locks, o)
      for (const rid of recorded) cs.pending.add(rid)
      const net = await transport(
        server,
        {
          receive: (rid, m) => locks.receive(rid, m),
          hello: (rid, held) => cs.hello(rid, held),
          openMapReply: (rid, m) => cs.openMapReply(rid, m),
        },
        o.log,
      )
      cs.net = out.net = net
      net.on('farewell', (rid: number) => {
        locks.removeClient(rid)
        cs.openMapGone(rid)
      })
      server.openMap = (rid, group) => cs.openInodes(rid, group)
      if (recorded.length > 0) {
        o.log('waiting for recorded mounts to reconnect', { mounts: recorded.length, ms: recoveryMs })
        cs.recoveryTimer = setTimeout(() => void cs.endRecovery(), recoveryMs)
      }
      const timeout = o.mountTimeoutMs ?? 10_000
      cs.livenessTimer = setInterval(() => void cs.checkLiveness(), Math.min(1000, timeout))
      cs.livenessTimer.unref()
      return cs
    } catch (e) {
      await server.stop()
      throw e
    }
  }

  /** mounts connected now */
  get clientCount(): number {
    return this.net.clients().length
  }

  /** the address mounts reach this server at */
  get addr(): string {
    return this.net.addr
  }

  /** Resolves once lock recovery (if any) has finished and the lock server grants. */
  recovered(): Promise<void> {
    if (!this.locks.isRecovering || this.stopped) return Promise.resolve()
    return new Promise((res) => this.recoveredWaiters.push(res))
  }

  private hello(rid: number, held: RecoveredLock[]): void {
    // what it was asked while it had no stream (or on the stream that broke) is asked again
    for (const [reqId, a] of this.asks)
      if (a.waiting.has(rid)) this.net.sendOpenMap(rid, { kind: 'openMapRequest', reqId, group: a.group })
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

  /**
   * The inodes of `group` the mounts other than `rid` have open (ServerApi.openInodes): asks
   * each on its lock stream and waits for every answer, a departure, or the timeout.
   */
  async openInodes(rid: number, group: number): Promise<number[]> {
    if (this.stopped) throw new FsError('ENXIO', 'the server has stopped')
    const others = this.net.clients().filter((c) => c.rid !== rid)
    if (others.length === 0) return []
    const reqId = this.nextAsk++
    const inos = new Set<number>()
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(
        () => a.done(new FsError('ETIMEDOUT', `no open-map answer from ${[...a.waiting].map((r) => r.toString(16))}`)),
        this.o.openMapTimeoutMs ?? 10_000,
      )
      const a: OpenMapAsk = {
        group,
        waiting: new Set(others.map((c) => c.rid)),
        inos,
        done: (e) => {
          clearTimeout(timer)
          this.asks.delete(reqId)
          if (e) rej(e)
          else res()
        },
      }
      this.asks.set(reqId, a)
      // a mount with no stream open now is asked when it says hello again
      for (const c of others) this.net.sendOpenMap(c.rid, { kind: 'openMapRequest', reqId, group })
    })
    return [...inos].sort((x, y) => x - y)
  }

  private openMapReply(rid: number, m: OpenMapReplyMsg): void {
    const a = this.asks.get(m.reqId)
    if (!a || !a.waiting.has(rid)) return // late, or a duplicate
    for (const ino of m.inos) if (openMapGroup(ino) === a.group) a.inos.add(ino)
    a.waiting.delete(rid)
    if (a.waiting.size === 0) a.done()
  }

  /** Mount `rid` left or was reclaimed: it has nothing open. */
  private openMapGone(rid: number): void {
    for (const a of [...this.asks.values()]) {
      if (!a.waiting.delete(rid)) continue
      if (a.waiting.size === 0) a.done()
    }
  }

  /** Fence mount `rid` if this server fences (true: confirmed, or nothing to do). */
  private async fenceMount(rid: number, reason: MountFenceReason): Promise<boolean> {
    if (!this.o.fence) return true
    const who = await this.server.identityOf(rid)
    try {
      return await this.o.fence(rid, reason, who)
    } catch (e) {
      this.o.log('fence failed', { rid: rid.toString(16), reason, err: (e as Error).message })
      return false
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
          // an absent mount may be cut off, not dead: nothing of it is given away unfenced
          while (!this.stopped && !(await this.fenceMount(rid, 'recovery_timeout'))) await sleep(1000)
          if (this.stopped) return
          this.locks.removeClient(rid)
          this.openMapGone(rid)
          await this.server.reclaim(rid)
          this.o.log('reclaimed a mount that did not reconnect', { rid: rid.toString(16) })
        }
        await this.server.seedSeq(this.locks.maxRecoveredWriteSeq + 1)
      } catch (e) {
        this.o.log('lock recovery could not reclaim every absent mount', { err: (e as Error).message })
      }
      this.locks.finishRecovery()
      this.recoveryMs = Date.now() - this.startedAt
      this.o.log('lock recovery finished', { reclaimed: gone.length, ms: this.recoveryMs })
      for (const w of this.recoveredWaiters.splice(0)) w()
    })()
    return this.recovery
  }

  /**
   * Reclaim every mount silent for the mount timeout with no lock stream open (run every
   * second; a caller that knows a mount is gone may run it at once).
   */
  async checkLiveness(): Promise<void> {
    if (this.stopped) return
    for (const c of this.net.staleClients(this.o.mountTimeoutMs ?? 10_000)) {
      if (c.lockStream || this.fencing.has(c.rid)) continue
      this.o.log('mount stopped answering; fencing and reclaiming it', {
        rid: c.rid.toString(16),
        name: c.name,
        silentMs: Date.now() - c.lastHeartbeat,
      })
      this.fencing.add(c.rid)
      const fenced = await this.fenceMount(c.rid, 'client_timeout').finally(() => this.fencing.delete(c.rid))
      // not confirmed: its locks stay where they are, and the next check tries again
      if (!fenced || this.stopped) continue
      this.net.forget(c.rid)
      this.locks.removeClient(c.rid)
      this.openMapGone(c.rid)
      await this.server
        .reclaim(c.rid)
        .catch((e: unknown) => this.o.log('reclaim failed', { rid: c.rid.toString(16), err: (e as Error).message }))
    }
  }

  async status(): Promise<ClusterServerStatus> {
    const lts = this.server.logTrees
    return {
      mounts: this.net.clients().map((c) => c.rid.toString(16)),
      recorded: (await this.server.recordedMounts()).length,
      logTrees: lts.length,
      finalized: lts.filter((lt) => lt.flags & LOG_TREES_FINALIZED).length,
      commits: this.server.counters.commits,
      merges: this.server.counters.merges,
      reclaims: this.server.counters.reclaims,
      recovering: this.locks.isRecovering,
      farewellsHeld: this.server.farewells.heldRids().map((r) => r.toString(16)),
    }
  }

  /** Stop serving: the network first, then merges in progress, then the super writer. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    if (this.recoveryTimer) clearTimeout(this.recoveryTimer)
    if (this.livenessTimer) clearInterval(this.livenessTimer)
    for (const w of this.recoveredWaiters.splice(0)) w()
    for (const a of [...this.asks.values()]) a.done(new FsError('ENXIO', 'the server has stopped'))
    await this.net.close()
    await this.server.drainMerges().catch(() => undefined)
    await this.server.stop()
  }
}
