/*
 * NetServer: the server's side of the agent <-> server protocol (proto/scoutfs.proto).  It
 * serves a ServerApi (the in-process Server) to the mounts of the cluster over gRPC, pushes
 * events to them over their Events streams, and keeps track of who is connected.
 *
 * - Every unary RPC is the ServerApi method of the same name; a thrown FsError travels back
 *   as a status plus the errno in metadata (net-proto.ts), so the client rethrows it as is.
 * - Clients are tracked by rid from their greeting: last heartbeat (or any request), peer,
 *   open event streams.  Nothing is reclaimed here: the server decides what a missed
 *   heartbeat means (staleClients() lists them).
 * - The roots version is watched (after each commit, and every rootsPollMs) and every mount
 *   with an open Events stream is told RootsChanged when it moves.
 * - Locks: the Locks stream of each mount is delivered, message by message and in order, to
 *   the plugged-in LockPort (options.lockPort: lock-server.ts LockServer), whose replies go out
 *   through sendLock(rid, msg).  Without a LockPort the Locks stream is refused with
 *   UNIMPLEMENTED (ENOSYS).
 *
 * Insecure credentials for now: the listener is meant for a cluster-private network.
 */
import { EventEmitter } from 'node:events'
import { randomInt } from 'node:crypto'
import * as grpc from '@grpc/grpc-js'
import { FsError } from '../util/errors.js'
import {
  type LockPort,
  type NetEvent,
  type Wire,
  big,
  eventToWire,
  logTreesFromWire,
  logTreesToWire,
  num,
  proto,
  rootsToWire,
  statfsToWire,
  toStatus,
  lockClientMsgFromWire,
  lockServerMsgToWire,
} from './net-proto.js'
import type { LockServerMsg } from '../protocol/lock-modes.js'
import type { ServerApi } from '../protocol/server-api.js'

export interface NetServerOptions {
  /** the message-based lock server, fed by the Locks streams */
  lockPort?: LockPort
  log?: (msg: string, fields?: Record<string, unknown>) => void
  /** how often the roots version is checked for RootsChanged events; 0: only after commits */
  rootsPollMs?: number
  /** server keepalive pings (ms) and how long to wait for their ack */
  keepaliveMs?: number
  keepaliveTimeoutMs?: number
  /** extra grpc-js server options */
  grpcOptions?: grpc.ServerOptions
}

export interface ClientInfo {
  rid: number
  /** the peer address of its last request */
  peer: string
  /** what it called itself in its greeting */
  name: string
  greetedAt: number
  /** Date.now() of its last heartbeat or other request */
  lastHeartbeat: number
  /** Events streams it has open */
  eventStreams: number
  /** whether its Locks stream is open */
  lockStream: boolean
}

type EventsCall = grpc.ServerWritableStream<Wire, Wire>
type LocksCall = grpc.ServerDuplexStream<Wire, Wire>

interface ClientState {
  info: Omit<ClientInfo, 'eventStreams' | 'lockStream'>
}

function fail(call: EventsCall | LocksCall, e: unknown): void {
  call.emit('error', Object.assign(new Error(e instanceof Error ? e.message : String(e)), toStatus(e)))
}

export class NetServer extends EventEmitter {
  /** random per NetServer: clients notice a restart or failover by its change */
  readonly instance = randomInt(1, 2 ** 47)
  private readonly known = new Map<number, ClientState>()
  private readonly streams = new Map<number, Set<EventsCall>>()
  private readonly lockStreams = new Map<number, LocksCall>()
  private rootsVersion = -1
  private rootsTimer: NodeJS.Timeout | undefined
  private closed = false
  private readonly log: NonNullable<NetServerOptions['log']>

  private constructor(
    private readonly api: ServerApi,
    private readonly grpcServer: grpc.Server,
    readonly host: string,
    private boundPort: number,
    private readonly opts: NetServerOptions,
  ) {
    super()
    this.log = opts.log ?? (() => undefined)
  }

  /** the port it listens on (the bound one when 0 was asked for) */
  get port(): number {
    return this.boundPort
  }

  /** 'host:port' it listens on (the bound port when 0 was asked for). */
  get addr(): string {
    return `${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`
  }

  /** Serve `api` on `addr` ('host:port'; port 0 picks a free one). */
  static async listen(api: ServerApi, addr: string, opts: NetServerOptions = {}): Promise<NetServer> {
    const m = /^(.*):(\d+)$/.exec(addr)
    if (!m) throw new FsError('EINVAL', `listen address ${addr} is not host:port`)
    const host = m[1]!.replace(/^\[(.*)\]$/, '$1')
    const keepalive = opts.keepaliveMs ?? 10_000
    const g = new grpc.Server({
      'grpc.keepalive_time_ms': keepalive,
      'grpc.keepalive_timeout_ms': opts.keepaliveTimeoutMs ?? 5_000,
      // a roots reply carries one log tree per mount: allow large clusters
      'grpc.max_receive_message_length': 64 << 20,
      'grpc.max_send_message_length': 64 << 20,
      ...opts.grpcOptions,
    })
    // the service is in place before the port opens: no client can see UNIMPLEMENTED
    const s = new NetServer(api, g, host, 0, opts)
    g.addService(proto().definition, s.handlers())
    try {
      await s.checkRoots()
      s.boundPort = await new Promise<number>((res, rej) =>
        g.bindAsync(addr, grpc.ServerCredentials.createInsecure(), (err, p) =>
          err ? rej(new FsError('EBUSY', `cannot listen on ${addr}: ${err.message}`)) : res(p),
        ),
      )
    } catch (e) {
      g.forceShutdown()
      throw e
    }
    const poll = opts.rootsPollMs ?? 1000
    if (poll > 0) {
      s.rootsTimer = setInterval(() => void s.checkRoots().catch(() => undefined), poll)
      s.rootsTimer.unref()
    }
    s.log('listening', {
      addr: s.addr,
      instance: s.instance,
      lockPort: !!opts.lockPort,
    })
    return s
  }

  /* ---- clients ---------------------------------------------------------------------------- */

  /** Every mount that greeted this server and has not said farewell. */
  clients(): ClientInfo[] {
    return [...this.known.keys()].map((rid) => this.client(rid)!)
  }

  client(rid: number): ClientInfo | undefined {
    const c = this.known.get(rid)
    return c && { ...c.info, eventStreams: this.streams.get(rid)?.size ?? 0, lockStream: this.lockStreams.has(rid) }
  }

  /** Mounts not heard from for `timeoutMs`. */
  staleClients(timeoutMs: number, now = Date.now()): ClientInfo[] {
    return this.clients().filter((c) => now - c.lastHeartbeat > timeoutMs)
  }

  /** Forget a mount (after the server reclaimed it): its streams end. */
  forget(rid: number): void {
    this.known.delete(rid)
    for (const s of this.streams.get(rid) ?? []) s.end()
    this.lockStreams.get(rid)?.end()
  }

  private touch(rid: number, call: { getPeer(): string }): boolean {
    const c = this.known.get(rid)
    if (!c) return false
    c.info.lastHeartbeat = Date.now()
    c.info.peer = call.getPeer()
    return true
  }

  /* ---- events ----------------------------------------------------------------------------- */

  /** Push an event to one mount; false if it has no Events stream open. */
  send(rid: number, ev: NetEvent): boolean {
    const set = this.streams.get(rid)
    if (!set || set.size === 0) return false
    const w = eventToWire(ev)
    let n = 0
    for (const s of set)
      if (!s.cancelled && !s.writableEnded) {
        s.write(w)
        n++
      }
    return n > 0
  }

  /** Push an event to every mount with a stream open; returns how many got it. */
  broadcast(ev: NetEvent): number {
    let n = 0
    for (const rid of this.streams.keys()) if (this.send(rid, ev)) n++
    return n
  }

  /** Tell everyone if the roots moved since last looked. */
  private async checkRoots(): Promise<number> {
    const v = (await this.api.getRoots()).version
    if (v !== this.rootsVersion) {
      this.rootsVersion = v
      this.broadcast({ type: 'rootsChanged', version: v })
    }
    return v
  }

  private openEvents(call: EventsCall): void {
    let rid: number
    try {
      rid = num(call.request.rid, 'rid')
    } catch (e) {
      fail(call, e)
      return
    }
    let set = this.streams.get(rid)
    if (!set) this.streams.set(rid, (set = new Set()))
    set.add(call)
    this.touch(rid, call)
    let gone = false
    const drop = (): void => {
      if (gone) return
      gone = true
      set.delete(call)
      if (set.size === 0) this.streams.delete(rid)
      this.log('events stream closed', { rid })
    }
    call.on('cancelled', drop)
    call.on('close', drop)
    call.on('finish', drop)
    call.on('error', drop)
    call.write(eventToWire({ type: 'rootsChanged', version: this.rootsVersion }))
    this.log('events stream opened', { rid, peer: call.getPeer() })
  }

  /* ---- the Locks streams ------------------------------------------------------------------ */

  /** Send a lock message to a mount's Locks stream; false if it has none open (lost). */
  sendLock(rid: number, msg: LockServerMsg): boolean {
    const s = this.lockStreams.get(rid)
    if (!s || s.cancelled || s.writableEnded) return false
    s.write(lockServerMsgToWire(msg))
    return true
  }

  private openLocks(call: LocksCall): void {
    const port = this.opts.lockPort
    if (!port) return fail(call, new FsError('ENOSYS', 'this server runs no lock server'))
    let rid = 0
    let broken = false
    const drop = (): void => {
      if (rid && this.lockStreams.get(rid) === call) {
        this.lockStreams.delete(rid)
        this.log('locks stream closed', { rid })
      }
    }
    call.on('data', (w: Wire) => {
      if (broken) return
      try {
        const m = lockClientMsgFromWire(w)
        if (m.kind === 'hello') {
          if (rid) throw new FsError('EINVAL', `a second lock hello on the stream of ${rid}`)
          if (!m.rid) throw new FsError('EINVAL', 'lock hello from rid 0')
          rid = m.rid
          const old = this.lockStreams.get(rid)
          this.lockStreams.set(rid, call)
          old?.end() // a newer stream of the same mount replaces it
          this.touch(rid, call)
          this.log('locks stream opened', { rid, held: m.held.length })
          port.hello?.(rid, m.held)
          return
        }
        if (!rid) throw new FsError('EINVAL', 'a lock message before the hello')
        this.touch(rid, call)
        port.receive(rid, m)
      } catch (e) {
        broken = true
        this.log('locks stream refused', { rid, err: String(e) })
        drop()
        fail(call, e)
      }
    })
    call.on('end', () => {
      drop()
      if (!call.writableEnded) call.end()
    })
    call.on('cancelled', drop)
    call.on('close', drop)
    call.on('error', drop)
  }

  /* ---- the RPCs --------------------------------------------------------------------------- */

  private unary(
    name: string,
    fn: (req: Wire, call: grpc.ServerUnaryCall<Wire, Wire>) => Promise<Wire>,
  ): grpc.handleUnaryCall<Wire, Wire> {
    return (call, callback) => {
      fn(call.request, call).then(
        (reply) => callback(null, reply),
        (e: unknown) => {
          const st = toStatus(e)
          if (st.code === grpc.status.INTERNAL) this.log('request failed', { rpc: name, err: String(e) })
          callback(st)
        },
      )
    }
  }

  private handlers(): grpc.UntypedServiceImplementation {
    const api = this.api
    return {
      Greeting: this.unary('Greeting', async (r, call) => {
        const rid = num(r.rid, 'rid')
        if (rid === 0) throw new FsError('EINVAL', 'greeting from rid 0: a mount id is never 0')
        const reply = await api.greeting(rid, big(r.fsid), Number(r.formatVersion ?? 0))
        const now = Date.now()
        const name = String(r.clientName ?? '')
        const had = this.known.get(rid)
        this.known.set(rid, {
          info: { rid, peer: call.getPeer(), name, greetedAt: had?.info.greetedAt ?? now, lastHeartbeat: now },
        })
        if (!had) {
          this.log('mount greeted', { rid, name, peer: call.getPeer() })
          this.emit('client', this.client(rid))
        }
        return { fsid: reply.fsid.toString(), formatVersion: reply.formatVersion, serverInstance: this.instance }
      }),
      GetLogTrees: this.unary('GetLogTrees', async (r, call) => {
        const rid = num(r.rid, 'rid')
        this.touch(rid, call)
        return logTreesToWire(await api.getLogTrees(rid))
      }),
      CommitLogTrees: this.unary('CommitLogTrees', async (r, call) => {
        const lt = logTreesFromWire(r)
        this.touch(lt.rid, call)
        await api.commitLogTrees(lt)
        await this.checkRoots()
        return {}
      }),
      AllocInodes: this.unary('AllocInodes', async (r, call) => {
        const rid = num(r.rid, 'rid')
        const count = num(r.count, 'count')
        if (count < 1) throw new FsError('EINVAL', `allocation of ${count} inodes`)
        this.touch(rid, call)
        const a = await api.allocInodes(rid, count)
        return { first: a.first, count: a.count }
      }),
      GetRoots: this.unary('GetRoots', async (r, call) => {
        this.touch(num(r.rid, 'rid'), call)
        return rootsToWire(await api.getRoots())
      }),
      GetLastSeq: this.unary('GetLastSeq', async (r, call) => {
        this.touch(num(r.rid, 'rid'), call)
        return { seq: await api.getLastSeq() }
      }),
      Statfs: this.unary('Statfs', async (r, call) => {
        this.touch(num(r.rid, 'rid'), call)
        return statfsToWire(await api.statfs())
      }),
      ListMounts: this.unary('ListMounts', async (r, call) => {
        this.touch(num(r.rid, 'rid'), call)
        return { rids: await api.listMounts() }
      }),
      Farewell: this.unary('Farewell', async (r) => {
        const rid = num(r.rid, 'rid')
        await api.farewell(rid)
        const had = this.known.has(rid)
        this.forget(rid)
        if (had) {
          this.log('mount said farewell', { rid })
          this.emit('farewell', rid)
        }
        await this.checkRoots()
        return {}
      }),
      Heartbeat: this.unary('Heartbeat', async (r, call) => {
        const known = this.touch(num(r.rid, 'rid'), call)
        return { known, serverInstance: this.instance, rootsVersion: await this.checkRoots() }
      }),
      Events: (call: EventsCall) => this.openEvents(call),
      Locks: (call: LocksCall) => this.openLocks(call),
    }
  }

  /* ---- shutdown --------------------------------------------------------------------------- */

  /**
   * Stop serving: end every Events stream, let calls in flight finish for up to `graceMs`,
   * then cut what is left.  The ServerApi is the caller's to stop.
   */
  async close(graceMs = 2000): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.rootsTimer) clearInterval(this.rootsTimer)
    for (const set of this.streams.values()) for (const s of set) s.end()
    this.streams.clear()
    for (const s of this.lockStreams.values()) s.end()
    this.lockStreams.clear()
    await new Promise<void>((res) => {
      const t = setTimeout(() => {
        this.grpcServer.forceShutdown()
        res()
      }, graceMs)
      this.grpcServer.tryShutdown(() => {
        clearTimeout(t)
        res()
      })
    })
    this.log('stopped listening', { addr: this.addr })
  }
}
