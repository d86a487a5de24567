/*
 * NetClient: a mount's side of the agent <-> server protocol (proto/scoutfs.proto).  It is a
 * ServerApi, so a mount uses it exactly as it uses the in-process Server.
 *
 * - Every attempt of a call has a deadline (callTimeoutMs).  A call that fails for want of a
 *   server (UNAVAILABLE: refused, reset, dropped, or a server that is stopping; a deadline
 *   passed; a stream cut) is sent again after a jittered exponential backoff, for up to
 *   retryForMs in all.  That is safe because every request is idempotent: the server
 *   deduplicates by (rid, transaction seq).  Any other failure is the FsError the server
 *   threw, rebuilt from the errno in the status metadata (net-proto.ts).
 * - After a lost connection the client greets again before its next request (the server may
 *   be a new one), and the heartbeat asks the server whether it still knows this mount.  A
 *   change of server instance is emitted as 'serverChanged' so the mount can recover its
 *   locks and reopen its transaction.
 * - Heartbeats go out every heartbeatMs once greeted.
 * - Server-pushed events arrive over the Events stream, reopened whenever it breaks; they are
 *   emitted as 'event' and offered as an async iterator by events().
 * - Locks: openLocks(lockClient) carries a LockClient's messages over the Locks stream, in
 *   order both ways.  Each (re)opened stream starts with a hello carrying the client's
 *   recoveryReport(); after a reopen the client's outstanding requests are resent
 *   (resendRequests()).  Messages sent while no stream is open wait for the next one.
 */
import { EventEmitter } from 'node:events'
import { hostname } from 'node:os'
import * as grpc from '@grpc/grpc-js'
import { FsError } from '../util/errors.js'
import {
  type LockEndpoint,
  type NetEvent,
  type Wire,
  big,
  errnoOf,
  errnoOfStatus,
  eventFromWire,
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
import type { LockClientMsg, LockServerMsg } from '../protocol/lock-modes.js'
import type { GreetingReply, LogTrees, Roots, ServerApi, ServerStatfs } from '../protocol/server-api.js'

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
  /** open the Events stream once greeted; default true */
  events?: boolean
  /** how the mount names itself in its greeting; default host:pid */
  clientName?: string
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
  eventStreams: number
  events: number
  lockStreams: number
  lockMessagesIn: number
  lockMessagesOut: number
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

export class NetClient extends EventEmitter implements ServerApi {
  readonly counters: NetClientCounters = {
    calls: 0,
    retries: 0,
    greetings: 0,
    heartbeats: 0,
    heartbeatFailures: 0,
    eventStreams: 0,
    events: 0,
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

  private readonly client: grpc.Client
  private readonly o: Required<Omit<NetClientOptions, 'log' | 'grpcOptions'>>
  private readonly log: NonNullable<NetClientOptions['log']>
  private greeted: { fsid: bigint; formatVersion: number } | undefined
  private needGreet = false
  private regreeting: Promise<void> | undefined
  private hbTimer: NodeJS.Timeout | undefined
  private hbInFlight = false
  private eventsCall: grpc.ClientReadableStream<Wire> | undefined
  private eventsTimer: NodeJS.Timeout | undefined
  private eventsDelay: number
  private readonly inflight = new Set<grpc.ClientUnaryCall>()
  private lockEndpoint: LockEndpoint | undefined
  private locksCall: grpc.ClientDuplexStream<Wire, Wire> | undefined
  private locksTimer: NodeJS.Timeout | undefined
  private locksDelay: number
  private locksOpened = 0
  private readonly lockBacklog: LockClientMsg[] = []
  private closed = false

  constructor(
    readonly addr: string,
    opts: NetClientOptions = {},
  ) {
    super()
    this.o = {
      callTimeoutMs: opts.callTimeoutMs ?? 30_000,
      retryForMs: opts.retryForMs ?? 60_000,
      backoffInitialMs: opts.backoffInitialMs ?? 50,
      backoffMaxMs: opts.backoffMaxMs ?? 2000,
      heartbeatMs: opts.heartbeatMs ?? 1000,
      events: opts.events ?? true,
      clientName: opts.clientName ?? `${hostname()}:${process.pid}`,
      keepaliveMs: opts.keepaliveMs ?? 10_000,
      keepaliveTimeoutMs: opts.keepaliveTimeoutMs ?? 5_000,
    }
    this.log = opts.log ?? (() => undefined)
    this.eventsDelay = this.o.backoffInitialMs
    this.locksDelay = this.o.backoffInitialMs
    this.client = new grpc.Client(addr, grpc.credentials.createInsecure(), {
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
    })
  }

  /** Wait until the channel is connected (or fail with ETIMEDOUT). */
  waitForReady(timeoutMs = this.o.callTimeoutMs): Promise<void> {
    return new Promise((res, rej) =>
      this.client.waitForReady(Date.now() + timeoutMs, (err) =>
        err
          ? rej(new FsError('ETIMEDOUT', `server ${this.addr} not reachable in ${timeoutMs} ms: ${err.message}`))
          : res(),
      ),
    )
  }

  /* ---- calls ------------------------------------------------------------------------------ */

  private attempt(name: string, req: Wire, timeoutMs: number): Promise<Wire> {
    const m = method(name)
    return new Promise((res, rej) => {
      const deadline = Number.isFinite(timeoutMs) ? Date.now() + timeoutMs : Infinity
      const call = this.client.makeUnaryRequest(
        m.path,
        m.requestSerialize,
        m.responseDeserialize,
        req,
        new grpc.Metadata(),
        { deadline },
        (err, v) => {
          this.inflight.delete(call)
          if (err) rej(err)
          else res(v ?? {})
        },
      )
      this.inflight.add(call)
    })
  }

  /** Whether a failure means "no server answered": resending is then safe and useful. */
  private retryable(e: unknown): boolean {
    if (this.closed || !isServiceError(e)) return false
    if (e.code === grpc.status.UNAVAILABLE) return true // includes a stopping server (ENXIO)
    if (errnoOf(e)) return false // the server answered
    if (e.code === grpc.status.DEADLINE_EXCEEDED || e.code === grpc.status.CANCELLED) return true
    return e.code === grpc.status.INTERNAL && /RST_STREAM|dropped|ECONNRESET|EPIPE/i.test(e.details)
  }

  private async call(name: string, req: Wire, opts: { greetFirst?: boolean; timeoutMs?: number } = {}): Promise<Wire> {
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
        this.needGreet = true
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

  private greetingRequest(): Wire {
    return {
      rid: this.rid,
      fsid: (this.greeted?.fsid ?? 0n).toString(),
      formatVersion: this.greeted?.formatVersion ?? 0,
      clientName: this.o.clientName,
    }
  }

  private greetedBy(w: Wire): void {
    this.counters.greetings++
    const prev = this.serverInstance
    this.serverInstance = num(w.serverInstance)
    this.needGreet = false
    // (re)open the streams that are not open (a new server may serve what the old did not)
    this.startEvents()
    this.startLocks()
    if (prev && prev !== this.serverInstance) {
      this.log('greeted a new server', { previous: prev, instance: this.serverInstance })
      this.emit('serverChanged', { previous: prev, current: this.serverInstance })
    }
  }

  /** Greet again (one attempt; the caller's loop resends).  Concurrent callers share it. */
  private regreet(): Promise<void> {
    this.regreeting ??= this.attempt('Greeting', this.greetingRequest(), this.o.callTimeoutMs)
      .then((w) => this.greetedBy(w))
      .finally(() => (this.regreeting = undefined))
    return this.regreeting
  }

  /* ---- ServerApi -------------------------------------------------------------------------- */

  async greeting(rid: number, fsid: bigint, formatVersion: number): Promise<GreetingReply> {
    if (this.greeted && rid !== this.rid) this.stopSession()
    this.rid = rid
    const w = await this.call(
      'Greeting',
      { rid, fsid: fsid.toString(), formatVersion, clientName: this.o.clientName },
      { greetFirst: false },
    )
    this.greeted = { fsid, formatVersion }
    this.greetedBy(w)
    this.startHeartbeat()
    return { fsid: big(w.fsid), formatVersion: Number(w.formatVersion ?? 0) }
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
    return (Array.isArray(w.rids) ? (w.rids as unknown[]) : []).map((r) => num(r, 'rid'))
  }

  async farewell(rid: number): Promise<void> {
    // no re-greeting first: a mount the server already forgot has nothing left to say
    await this.call('Farewell', { rid }, { greetFirst: false })
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
    if (!this.lockEndpoint || this.locksCall || this.locksTimer || this.closed || !this.greeted) return
    const ep = this.lockEndpoint
    const m = method('Locks')
    const call = this.client.makeBidiStreamRequest(
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
    call.on('data', (w: Wire) => {
      this.locksDelay = this.o.backoffInitialMs
      let msg: LockServerMsg | undefined
      try {
        msg = lockServerMsgFromWire(w)
      } catch (e) {
        this.log('bad lock message from the server', { err: (e as Error).message })
      }
      if (!msg) return
      this.counters.lockMessagesIn++
      ep.receive(msg)
    })
    const broken = (e?: unknown): void => {
      if (this.locksCall !== call) return
      this.locksCall = undefined
      if (this.closed || !this.greeted) return
      if (e === undefined || this.retryable(e)) this.needGreet = true
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
    call.on('error', (e) => broken(e))
    call.on('end', () => broken())
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
      if (this.retryable(e)) this.needGreet = true
      this.emit('heartbeatFailed', fromServiceError(e, `Heartbeat to server ${this.addr}`))
      return false
    } finally {
      this.hbInFlight = false
    }
  }

  /* ---- events ----------------------------------------------------------------------------- */

  private startEvents(): void {
    if (!this.o.events || this.eventsCall || this.eventsTimer || this.closed || !this.greeted) return
    const m = method('Events')
    const call = this.client.makeServerStreamRequest(
      m.path,
      m.requestSerialize,
      m.responseDeserialize,
      { rid: this.rid },
      new grpc.Metadata(),
      {},
    )
    this.eventsCall = call
    this.counters.eventStreams++
    call.on('data', (w: Wire) => {
      this.eventsDelay = this.o.backoffInitialMs
      this.locksDelay = this.o.backoffInitialMs
      let ev: NetEvent | undefined
      try {
        ev = eventFromWire(w)
      } catch (e) {
        this.log('bad event from the server', { err: (e as Error).message })
      }
      if (!ev) return
      this.counters.events++
      this.emit('event', ev)
    })
    const broken = (e?: unknown): void => {
      if (this.eventsCall !== call) return
      this.eventsCall = undefined
      if (this.closed || !this.greeted) return
      if (e === undefined || this.retryable(e)) this.needGreet = true
      // log the first break, not every failed reopen while the server is away
      if (this.eventsDelay === this.o.backoffInitialMs)
        this.log('events stream broke; reopening', { err: e && fromServiceError(e, 'Events').message })
      this.eventsTimer = setTimeout(
        () => {
          this.eventsTimer = undefined
          this.startEvents()
        },
        this.eventsDelay * (0.5 + Math.random() / 2),
      )
      this.eventsTimer.unref()
      this.eventsDelay = Math.min(this.eventsDelay * 2, this.o.backoffMaxMs)
    }
    call.on('error', (e) => broken(e))
    call.on('end', () => broken())
  }

  /**
   * The server's events as an async iterator, from now on until the client closes or the
   * loop breaks.  (Or listen to 'event' directly.)
   */
  events(): AsyncIterableIterator<NetEvent> {
    const queue: NetEvent[] = []
    let wake: (() => void) | undefined
    let done = this.closed
    const onEvent = (ev: NetEvent): void => {
      queue.push(ev)
      wake?.()
    }
    const onClose = (): void => {
      done = true
      wake?.()
    }
    this.on('event', onEvent)
    this.on('close', onClose)
    const finish = (): IteratorResult<NetEvent> => {
      done = true
      this.off('event', onEvent)
      this.off('close', onClose)
      wake?.()
      return { value: undefined, done: true }
    }
    return {
      [Symbol.asyncIterator]() {
        return this
      },
      async next(): Promise<IteratorResult<NetEvent>> {
        for (;;) {
          if (queue.length) return { value: queue.shift()!, done: false }
          if (done) return finish()
          await new Promise<void>((r) => (wake = r))
          wake = undefined
        }
      },
      async return(): Promise<IteratorResult<NetEvent>> {
        return finish()
      },
    }
  }

  /* ---- shutdown --------------------------------------------------------------------------- */

  private stopSession(): void {
    this.greeted = undefined
    this.needGreet = false
    if (this.hbTimer) clearInterval(this.hbTimer)
    this.hbTimer = undefined
    if (this.eventsTimer) clearTimeout(this.eventsTimer)
    this.eventsTimer = undefined
    const c = this.eventsCall
    this.eventsCall = undefined
    c?.cancel()
    if (this.locksTimer) clearTimeout(this.locksTimer)
    this.locksTimer = undefined
    const l = this.locksCall
    this.locksCall = undefined
    l?.cancel()
  }

  /** Stop heartbeats and events, fail calls in flight (ENOTCONN), close the channel. */
  close(): void {
    if (this.closed) return
    this.closed = true
    this.stopSession()
    for (const c of this.inflight) c.cancel()
    this.inflight.clear()
    this.client.close()
    this.emit('close')
  }
}
