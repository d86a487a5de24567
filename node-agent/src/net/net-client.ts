/*
 * NetClient: a mount's side of the agent <-> server protocol (proto/scoutfs.proto).  It is a
 * ServerApi, so a mount uses it exactly as it uses the in-process Server.
 *
 * - The server's address comes from a resolver, asked on the first connect and again after
 *   every lost connection (a call resent for want of a server, a broken Locks stream, a
 *   failed heartbeat), so it can follow whichever agent leads; a fixed address is the
 *   resolver that always answers it.  A resolver that fails counts as an unreachable server.
 *   A new address gets a new channel; the old one is closed (its calls are resent).
 * - Every attempt of a call has a deadline (callTimeoutMs).  A call that fails for want of a
 *   server (UNAVAILABLE: refused, reset, dropped, or a server that is stopping; a deadline
 *   passed; a stream cut) is sent again after a jittered exponential backoff, for up to
 *   retryForMs in all.  That is safe because every request is idempotent: the server
 *   deduplicates by (rid, transaction seq).  Any other failure is the FsError the server
 *   threw, rebuilt from the errno in the status metadata (net-proto.ts).
 * - After a lost connection the client greets again before its next request (the server may
 *   be a new one), and the heartbeat asks the server whether it still knows this mount; a new
 *   server instance shows in serverInstance.  The mount's locks recover through the Locks
 *   stream's hello (below); its transaction through the server's deduplication.
 * - Heartbeats go out every heartbeatMs once greeted.
 * - Locks: openLocks(lockClient) carries a LockClient's messages over the Locks stream, in
 *   order both ways.  Each (re)opened stream starts with a hello carrying the client's
 *   recoveryReport(); after a reopen the client's outstanding requests are resent
 *   (resendRequests()).  Messages sent while no stream is open wait for the next one.
 */
import { hostname } from 'node:os'
import { channelCredentials, type Security } from './tls.js'
import * as grpc from '@grpc/grpc-js'
import { FsError } from '../util/errors.js'
import {
  type LockEndpoint,
  type LockServerWireMsg,
  big,
  errnoOf,
  errnoOfStatus,
  fromServiceError,
  isServiceError,
  lockClientMsgToWire,
  lockServerMsgFromWire,
  logTreesFromWire,
  logTreesToWire,
  method,
  num,
  rootsFromWire,
  statfsFromWire,
} from './net-proto.js'
import type { LockClientMsg } from '../protocol/lock-modes.js'
import type {
  GreetingReply as GreetingReplyMsg,
  GreetingRequest,
  LockClientMessage,
  LockServerMessage,
  Request,
  Response,
  UnaryRpc,
} from './messages.js'
import type { GreetingReply, LogTrees, Roots, ServerApi, ServerStatfs } from '../protocol/server-api.js'

/** Where the server is now ('host:port'); asked on each (re)connect. */
export type AddressResolver = () => string | Promise<string>

/** how grpc-js words a failed verification of the server's certificate */
const TLS_FAILURE = /certificate|CERT_|self[- ]signed|unable to verify|names filesystem/i

export interface NetClientOptions {
  /** deadline of one attempt of a call (ms); default 30 s */
  callTimeoutMs?: number
  /** how long to keep resending a call while the server is unreachable (ms); default 60 s */
  retryForMs?: number
  /** resend backoff: first delay and cap (ms); defaults 50 and 2000 */
  backoffInitialMs?: number
  backoffMaxMs?: number
  /** heartbeat period once greeted (ms); 0 disables; default 1000 */
  heartbeatMs?: number
  /** how the mount names itself in its greeting; default host:pid */
  clientName?: string
  /** this process's start time (clock ticks since boot), for fencing: see MountIdentity */
  pidStart?: number
  /** the quorum slot this mount's agent is a member of, said in its greeting and farewell */
  quorumSlot?: number
  /** mutual TLS (net/tls.ts) or explicit plaintext (default: plaintext, for tests) */
  security?: Security
  /** keepalive pings (ms) and how long to wait for their ack; defaults 10 s and 5 s */
  keepaliveMs?: number
  keepaliveTimeoutMs?: number
  log?: (msg: string, fields?: Record<string, unknown>) => void
  grpcOptions?: grpc.ChannelOptions
}

export interface NetClientCounters {
  calls: number
  retries: number
  greetings: number
  heartbeats: number
  heartbeatFailures: number
  lockStreams: number
  lockMessagesIn: number
  lockMessagesOut: number
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export class NetClient implements ServerApi {
  readonly counters: NetClientCounters = {
    calls: 0,
    retries: 0,
    greetings: 0,
    heartbeats: 0,
    heartbeatFailures: 0,
    lockStreams: 0,
    lockMessagesIn: 0,
    lockMessagesOut: 0,
  }
  /** the mount id it greeted with (0 before its greeting) */
  rid = 0
  /** the instance of the server that answered its last greeting */
  serverInstance = 0
  /** Date.now() of the last heartbeat the server answered */
  lastHeartbeatAck = 0
  /** Date.now() when a call, a heartbeat or the Locks stream last found the connection lost */
  private lastLost = 0

  private readonly resolve: AddressResolver
  /** the channel to the last resolved address; stale: resolve again before the next use */
  private channel: { addr: string; client: grpc.Client } | undefined
  private stale = true
  private resolving: Promise<grpc.Client> | undefined
  private readonly channelOptions: grpc.ChannelOptions
  private readonly o: Required<Omit<NetClientOptions, 'log' | 'grpcOptions' | 'security' | 'quorumSlot'>>
  /** the quorum slot this mount is a member of (NetClientOptions.quorumSlot) */
  private readonly quorumSlot: number | undefined
  private readonly creds: grpc.ChannelCredentials
  private readonly log: NonNullable<NetClientOptions['log']>
  private greeted: { fsid: bigint; formatVersion: number } | undefined
  private needGreet = false
  private regreeting: Promise<void> | undefined
  private hbTimer: NodeJS.Timeout | undefined
  private hbInFlight = false
  private readonly inflight = new Set<grpc.ClientUnaryCall>()
  private lockEndpoint: LockEndpoint | undefined
  private locksCall: grpc.ClientDuplexStream<LockClientMessage, LockServerMessage> | undefined
  private locksOpening = false
  private locksTimer: NodeJS.Timeout | undefined
  private locksDelay: number
  private locksOpened = 0
  private readonly lockBacklog: LockClientMsg[] = []
  private closed = false
  /** a refused greeting was logged */
  private refusedLogged = false

  /** `server`: the server's fixed 'host:port', or a resolver asked on each (re)connect */
  constructor(server: string | AddressResolver, opts: NetClientOptions = {}) {
    this.resolve = typeof server === 'string' ? () => server : server
    this.o = {
      callTimeoutMs: opts.callTimeoutMs ?? 30_000,
      retryForMs: opts.retryForMs ?? 60_000,
      backoffInitialMs: opts.backoffInitialMs ?? 50,
      backoffMaxMs: opts.backoffMaxMs ?? 2000,
      heartbeatMs: opts.heartbeatMs ?? 1000,
      clientName: opts.clientName ?? `${hostname()}:${process.pid}`,
      pidStart: opts.pidStart ?? 0,
      keepaliveMs: opts.keepaliveMs ?? 10_000,
      keepaliveTimeoutMs: opts.keepaliveTimeoutMs ?? 5_000,
    }
    this.quorumSlot = opts.quorumSlot
    this.log = opts.log ?? (() => undefined)
    this.locksDelay = this.o.backoffInitialMs
    const sec = channelCredentials(opts.security ?? { insecure: true })
    this.creds = sec.creds
    this.channelOptions = {
      ...sec.options,
      'grpc.keepalive_time_ms': this.o.keepaliveMs,
      'grpc.keepalive_timeout_ms': this.o.keepaliveTimeoutMs,
      'grpc.keepalive_permit_without_calls': 1,
      // reconnect quickly to a restarted server: grpc's default backoff grows to 120 s
      'grpc.initial_reconnect_backoff_ms': Math.min(100, this.o.backoffMaxMs),
      'grpc.max_reconnect_backoff_ms': this.o.backoffMaxMs,
      // resends are ours (they re-greet first); grpc's own retries would not
      'grpc.enable_retries': 0,
      'grpc.max_receive_message_length': 64 << 20,
      'grpc.max_send_message_length': 64 << 20,
      ...opts.grpcOptions,
    }
  }

  /** the address of the server it talks to (the last one resolved) */
  get addr(): string {
    return this.channel?.addr ?? '(not resolved yet)'
  }

  /* ---- the channel ------------------------------------------------------------------------ */

  /** The connection was lost: greet again, and ask the resolver again, before the next use. */
  private lost(): void {
    this.lastLost = Date.now()
    this.needGreet = true
    this.stale = true
  }

  /** The channel to the server, resolving its address first if the last connection was lost. */
  private connection(): Promise<grpc.Client> {
    if (this.channel && !this.stale) return Promise.resolve(this.channel.client)
    this.resolving ??= (async () => {
      let addr: string
      try {
        addr = await this.resolve()
      } catch (e) {
        const msg = `no server address: ${e instanceof Error ? e.message : String(e)}`
        // an unreachable server by another name: the caller resends
        throw Object.assign(new Error(msg), {
          code: grpc.status.UNAVAILABLE,
          details: msg,
          metadata: new grpc.Metadata(),
        })
      }
      if (this.closed) throw new FsError('ENOTCONN', `the connection to server ${addr} is closed`)
      let ch = this.channel
      if (!ch || ch.addr !== addr) {
        const old = ch
        if (old) this.log('server address changed', { previous: old.addr, addr })
        ch = { addr, client: new grpc.Client(addr, this.creds, this.channelOptions) }
        this.channel = ch
        old?.client.close()
      }
      this.stale = false
      return ch.client
    })().finally(() => (this.resolving = undefined))
    return this.resolving
  }

  /** Wait until the channel is connected (or fail with ETIMEDOUT). */
  async waitForReady(timeoutMs = this.o.callTimeoutMs): Promise<void> {
    const client = await this.connection()
    return new Promise((res, rej) =>
      client.waitForReady(Date.now() + timeoutMs, (err) =>
        err
          ? rej(new FsError('ETIMEDOUT', `server ${this.addr} not reachable in ${timeoutMs} ms: ${err.message}`))
          : res(),
      ),
    )
  }

  /* ---- calls ------------------------------------------------------------------------------ */

  private async attempt<K extends UnaryRpc>(name: K, req: Request<K>, timeoutMs: number): Promise<Response<K>> {
    const m = method(name)
    const client = await this.connection()
    return new Promise((res, rej) => {
      const deadline = Number.isFinite(timeoutMs) ? Date.now() + timeoutMs : Infinity
      const call = client.makeUnaryRequest(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        req,
        new grpc.Metadata(),
        { deadline },
        (err, v) => {
          this.inflight.delete(call)
          if (err) rej(err)
          else if (v) res(v)
          else rej(new FsError('EIO', `${name}: the server sent no reply`))
        },
      )
      this.inflight.add(call)
    })
  }

  /** Whether a failure means "no server answered": resending is then safe and useful. */
  private retryable(e: unknown): boolean {
    if (this.closed || !isServiceError(e)) return false
    // a server whose certificate this mount does not trust stays untrusted: do not resend
    if (e.code === grpc.status.UNAVAILABLE && TLS_FAILURE.test(e.details)) return false
    if (e.code === grpc.status.UNAVAILABLE) return true // includes a stopping server (ENXIO)
    if (errnoOf(e)) return false // the server answered
    // a quorum member that does not (or no longer) serve: the server is elsewhere
    if (e.code === grpc.status.UNIMPLEMENTED) return true
    if (e.code === grpc.status.DEADLINE_EXCEEDED || e.code === grpc.status.CANCELLED) return true
    return e.code === grpc.status.INTERNAL && /RST_STREAM|dropped|ECONNRESET|EPIPE/i.test(e.details)
  }

  private async call<K extends UnaryRpc>(
    name: K,
    req: Request<K>,
    opts: { greetFirst?: boolean; timeoutMs?: number } = {},
  ): Promise<Response<K>> {
    this.counters.calls++
    const t0 = Date.now()
    let delay = this.o.backoffInitialMs
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new FsError('ENOTCONN', `${name}: the connection to server ${this.addr} is closed`)
      try {
        if (opts.greetFirst !== false && this.needGreet && this.greeted) await this.regreet()
        return await this.attempt(name, req, opts.timeoutMs ?? this.o.callTimeoutMs)
      } catch (e) {
        if (!this.retryable(e)) {
          if (this.closed) throw new FsError('ENOTCONN', `${name}: the connection to server ${this.addr} is closed`)
          throw fromServiceError(e, `${name} to server ${this.addr}`)
        }
        const se = e as grpc.ServiceError
        const spent = Date.now() - t0
        if (spent + delay > this.o.retryForMs)
          throw new FsError(
            errnoOf(se) ?? errnoOfStatus(se.code),
            `${name} to server ${this.addr}: no answer after ${attempt} attempts in ${(spent / 1000).toFixed(1)} s: ${se.details}`,
          )
        // the connection dropped or never came: whoever answers next may be a new server
        this.lost()
        this.counters.retries++
        if (attempt === 1 || attempt % 10 === 0)
          this.log('server call failed; resending', {
            rpc: name,
            attempt,
            status: grpc.status[se.code],
            details: se.details,
          })
        await sleep(delay * (0.5 + Math.random() / 2))
        delay = Math.min(delay * 2, this.o.backoffMaxMs)
      }
    }
  }

  private greetingRequest(): GreetingRequest {
    return {
      rid: this.rid,
      fsid: (this.greeted?.fsid ?? 0n).toString(),
      formatVersion: this.greeted?.formatVersion ?? 0,
      clientName: this.o.clientName,
      pid: process.pid,
      pidStart: this.o.pidStart,
      host: hostname(),
      ...this.quorumFields(),
    }
  }

  private quorumFields(slot = this.quorumSlot): { quorumMember: boolean; quorumSlot: number } {
    return { quorumMember: slot !== undefined, quorumSlot: slot ?? 0 }
  }

  private greetedBy(w: GreetingReplyMsg): void {
    this.counters.greetings++
    const prev = this.serverInstance
    this.serverInstance = num(w.serverInstance)
    this.needGreet = false
    // (re)open the Locks stream if it is not open (a new server may serve what the old did not)
    this.startLocks()
    if (prev && prev !== this.serverInstance)
      this.log('greeted a new server', { previous: prev, instance: this.serverInstance })
  }

  /** Greet again (one attempt; the caller's loop resends).  Concurrent callers share it. */
  private regreet(): Promise<void> {
    this.regreeting ??= this.attempt('Greeting', this.greetingRequest(), this.o.callTimeoutMs)
      .then((w) => this.greetedBy(w))
      .catch((e: unknown) => {
        // refused, not unreachable: say so once (every operation of this mount will fail)
        if (isServiceError(e) && errnoOf(e) && !this.refusedLogged) {
          this.refusedLogged = true
          this.log('the server refused this mount', { errno: errnoOf(e), details: e.details })
        }
        throw e
      })
      .finally(() => (this.regreeting = undefined))
    return this.regreeting
  }

  /* ---- ServerApi -------------------------------------------------------------------------- */

  async greeting(rid: number, fsid: bigint, formatVersion: number): Promise<GreetingReply> {
    if (this.greeted && rid !== this.rid) this.stopSession()
    this.rid = rid
    const w = await this.call(
      'Greeting',
      { ...this.greetingRequest(), rid, fsid: fsid.toString(), formatVersion },
      { greetFirst: false },
    )
    this.greeted = { fsid, formatVersion }
    this.greetedBy(w)
    this.startHeartbeat()
    return { fsid: big(w.fsid), formatVersion: w.formatVersion }
  }

  async getLogTrees(rid: number): Promise<LogTrees> {
    return logTreesFromWire(await this.call('GetLogTrees', { rid }))
  }

  async commitLogTrees(lt: LogTrees): Promise<void> {
    await this.call('CommitLogTrees', logTreesToWire(lt))
  }

  async allocInodes(rid: number, count: number): Promise<{ first: number; count: number }> {
    const w = await this.call('AllocInodes', { rid, count })
    return { first: num(w.first), count: num(w.count) }
  }

  async getRoots(): Promise<Roots> {
    return rootsFromWire(await this.call('GetRoots', { rid: this.rid }))
  }

  async getLastSeq(): Promise<number> {
    return num((await this.call('GetLastSeq', { rid: this.rid })).seq)
  }

  async statfs(): Promise<ServerStatfs> {
    return statfsFromWire(await this.call('Statfs', { rid: this.rid }))
  }

  async listMounts(): Promise<number[]> {
    const w = await this.call('ListMounts', { rid: this.rid })
    return w.rids.map((r) => num(r, 'rid'))
  }

  async openInodes(rid: number, group: number): Promise<number[]> {
    const w = await this.call('OpenInodes', { rid, group })
    return w.inos.map((i) => num(i, 'ino'))
  }

  async farewell(rid: number, quorumSlot?: number): Promise<void> {
    // no re-greeting first: a mount the server already forgot has nothing left to say.  A
    // quorum member's answer may wait for the other members' farewells (farewell-gate.ts).
    const slot = quorumSlot ?? this.quorumSlot
    const waiting =
      slot === undefined
        ? undefined
        : setTimeout(
            () =>
              this.log(
                'farewell waits: the server lets a quorum member go once the members left keep a majority, or once the last of them all leave',
                {
                  quorumSlot: slot,
                },
              ),
            2000,
          )
    try {
      await this.call('Farewell', { rid, ...this.quorumFields(slot) }, { greetFirst: false })
    } finally {
      clearTimeout(waiting)
    }
    if (rid === this.rid) this.stopSession()
  }

  /* ---- the Locks stream ------------------------------------------------------------------- */

  /**
   * Carry `endpoint`'s lock messages (lock-client.ts LockClient) from now on; returns the
   * function it sends with.  The stream opens once the client has greeted.
   */
  openLocks(endpoint: LockEndpoint): (msg: LockClientMsg) => void {
    if (this.lockEndpoint && this.lockEndpoint !== endpoint)
      throw new FsError('EBUSY', 'a lock client is already attached')
    this.lockEndpoint = endpoint
    this.startLocks()
    return (msg) => this.sendLock(msg)
  }

  private sendLock(msg: LockClientMsg): void {
    if (this.closed) return
    const c = this.locksCall
    if (c && !c.writableEnded) {
      this.counters.lockMessagesOut++
      c.write(lockClientMsgToWire(msg))
    } else this.lockBacklog.push(msg)
  }

  private startLocks(): void {
    if (!this.lockEndpoint || this.locksCall || this.locksOpening || this.locksTimer || this.closed || !this.greeted)
      return
    // the usual case, a live channel, opens at once: nothing can slip in before the hello
    if (this.channel && !this.stale) return this.openLocksOn(this.channel.client)
    this.locksOpening = true
    this.connection().then(
      (client) => {
        this.locksOpening = false
        this.openLocksOn(client)
      },
      (e: unknown) => {
        this.locksOpening = false
        this.locksBroken(undefined, e)
      },
    )
  }

  private openLocksOn(client: grpc.Client): void {
    if (!this.lockEndpoint || this.locksCall || this.locksTimer || this.closed || !this.greeted) return
    const ep = this.lockEndpoint
    const m = method('Locks')
    const call = client.makeBidiStreamRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      new grpc.Metadata(),
      {},
    )
    this.locksCall = call
    this.counters.lockStreams++
    const reopen = this.locksOpened++ > 0
    call.write(lockClientMsgToWire({ kind: 'hello', rid: this.rid, held: ep.recoveryReport() }))
    for (const msg of this.lockBacklog.splice(0)) {
      this.counters.lockMessagesOut++
      call.write(lockClientMsgToWire(msg))
    }
    if (reopen) ep.resendRequests()
    call.on('data', (w: LockServerMessage) => {
      this.locksDelay = this.o.backoffInitialMs
      let msg: LockServerWireMsg | undefined
      try {
        msg = lockServerMsgFromWire(w)
      } catch (e) {
        this.log('bad lock message from the server', { err: (e as Error).message })
      }
      if (!msg) return
      this.counters.lockMessagesIn++
      if (msg.kind === 'openMapRequest') {
        // answered at once from the open counts, on the stream it came by
        const inos = ep.openMap?.openInodes(msg.group) ?? []
        if (!call.writableEnded) call.write(lockClientMsgToWire({ kind: 'openMapReply', reqId: msg.reqId, inos }))
        return
      }
      ep.receive(msg)
    })
    call.on('error', (e) => this.locksBroken(call, e))
    call.on('end', () => this.locksBroken(call))
  }

  /** The Locks stream `call` ended (or could not open: `call` undefined): reopen it later. */
  private locksBroken(
    call: grpc.ClientDuplexStream<LockClientMessage, LockServerMessage> | undefined,
    e?: unknown,
  ): void {
    if (this.locksCall !== call) return
    this.locksCall = undefined
    if (this.closed || !this.greeted) return
    if (e === undefined || this.retryable(e)) this.lost()
    else if (isServiceError(e) && e.code === grpc.status.UNIMPLEMENTED) {
      // no lock server there: do not hammer it; the next greeting tries again
      this.log('the server runs no lock server', {})
      return
    }
    if (this.locksDelay === this.o.backoffInitialMs)
      this.log('locks stream broke; reopening', { err: e && fromServiceError(e, 'Locks').message })
    this.locksTimer = setTimeout(
      () => {
        this.locksTimer = undefined
        this.startLocks()
      },
      this.locksDelay * (0.5 + Math.random() / 2),
    )
    this.locksTimer.unref()
    this.locksDelay = Math.min(this.locksDelay * 2, this.o.backoffMaxMs)
  }

  /* ---- heartbeats ------------------------------------------------------------------------- */

  private startHeartbeat(): void {
    if (this.hbTimer || !this.o.heartbeatMs || this.closed) return
    this.hbTimer = setInterval(() => void this.heartbeat(), this.o.heartbeatMs)
    this.hbTimer.unref()
  }

  /** One heartbeat (the timer sends them; exposed for tests and for a prompt check). */
  async heartbeat(): Promise<boolean> {
    if (this.hbInFlight || this.closed || !this.greeted) return false
    this.hbInFlight = true
    try {
      const w = await this.attempt('Heartbeat', { rid: this.rid }, Math.max(2 * this.o.heartbeatMs, 2000))
      this.counters.heartbeats++
      this.lastHeartbeatAck = Date.now()
      if (!w.known || num(w.serverInstance) !== this.serverInstance) {
        // a restarted or new server, or one that reclaimed us: introduce ourselves again
        this.needGreet = true
        await this.regreet().catch((e: unknown) =>
          this.log('greeting after a heartbeat failed', { err: fromServiceError(e, 'Greeting').message }),
        )
      }
      return true
    } catch (e) {
      this.counters.heartbeatFailures++
      if (this.retryable(e)) this.lost()
      return false
    } finally {
      this.hbInFlight = false
    }
  }

  /* ---- shutdown --------------------------------------------------------------------------- */

  private stopSession(): void {
    this.greeted = undefined
    this.needGreet = false
    if (this.hbTimer) clearInterval(this.hbTimer)
    this.hbTimer = undefined
    if (this.locksTimer) clearTimeout(this.locksTimer)
    this.locksTimer = undefined
    const l = this.locksCall
    this.locksCall = undefined
    l?.cancel()
  }

  /**
   * Whether the server answers: a heartbeat was answered lately (within three periods) and
   * since the connection was last found lost.  False when heartbeats are off.
   */
  get serverAnswering(): boolean {
    const ack = this.lastHeartbeatAck
    return this.o.heartbeatMs > 0 && ack > this.lastLost && Date.now() - ack <= 3 * this.o.heartbeatMs
  }

  /**
   * From now on a call waits at most `ms` for a server (it never waits longer than it did):
   * for a stopping mount, whose last commit and farewell must not keep it alive for the minute
   * a running mount waits for a server to come back.
   */
  limitRetries(ms: number): void {
    this.o.retryForMs = Math.min(this.o.retryForMs, ms)
  }

  /** Stop heartbeats and the Locks stream, fail calls in flight (ENOTCONN), close the channel. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.stopSession()
    for (const c of this.inflight) c.cancel()
    this.inflight.clear()
    this.channel?.client.close()
  }
}
