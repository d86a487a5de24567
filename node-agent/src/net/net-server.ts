/*
 * NetServer: the server's side of the agent <-> server protocol (proto/scoutfs.proto).  It
 * serves a ServerApi (the in-process Server) to the mounts of the cluster over gRPC, carries
 * their Locks streams, and keeps track of who is connected.
 *
 * - Every unary RPC is the ServerApi method of the same name; a thrown FsError travels back
 *   as a status plus the errno in metadata (net-proto.ts), so the client rethrows it as is.
 * - Clients are tracked by rid from their greeting: last heartbeat (or any request), peer,
 *   whether its Locks stream is open.  Nothing is reclaimed here: the server decides what a
 *   missed heartbeat means (staleClients() lists them).  'farewell' (rid) is emitted when a
 *   mount leaves cleanly.
 * - Locks: the Locks stream of each mount is delivered, message by message and in order, to
 *   the plugged-in LockPort (options.lockPort: lock-server.ts LockServer), whose replies go out
 *   through sendLock(rid, msg).  Without a LockPort the Locks stream is refused with
 *   UNIMPLEMENTED (ENOSYS).  The open map (protocol/open-map.ts) rides the same streams:
 *   sendOpenMap(rid, msg) asks a mount, its reply goes to LockPort.openMapReply.
 *
 * Insecure credentials for now: the listener is meant for a cluster-private network.
 */
import { EventEmitter } from 'node:events'
import { randomInt } from 'node:crypto'
import * as grpc from '@grpc/grpc-js'
import { FsError } from '../util/errors.js'
import { GrpcListener } from './listener.js'
import type { Security } from './tls.js'
import {
  type LockPort,
  big,
  logTreesFromWire,
  logTreesToWire,
  num,
  serviceDefinition,
  rootsToWire,
  statfsToWire,
  toStatus,
  lockClientMsgFromWire,
  lockServerMsgToWire,
} from './net-proto.js'
import type { LockServerMsg } from '../protocol/lock-modes.js'
import type { OpenMapRequestMsg } from '../protocol/open-map.js'
import type { ServerApi } from '../protocol/server-api.js'
import type { LockClientMessage, LockServerMessage, Request, Response, UnaryRpc } from './messages.js'

export interface NetServerOptions {
  /** the message-based lock server, fed by the Locks streams */
  lockPort?: LockPort
  log?: (msg: string, fields?: Record<string, unknown>) => void
  /** server keepalive pings (ms) and how long to wait for their ack */
  keepaliveMs?: number
  keepaliveTimeoutMs?: number
  /** extra grpc-js server options */
  grpcOptions?: grpc.ServerOptions
  /** mutual TLS or explicit plaintext, for a listener of its own (default plaintext: tests) */
  security?: Security
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
  /** whether its Locks stream is open */
  lockStream: boolean
}

type LocksCall = grpc.ServerDuplexStream<LockClientMessage, LockServerMessage>

/** What NetServer serves: one handler per RPC of messages.ts RPCS. */
type Handlers = { [K in ServerRpc]: grpc.handleUnaryCall<Request<K>, Response<K>> } & {
  Locks: grpc.handleBidiStreamingCall<LockClientMessage, LockServerMessage>
}

interface ClientState {
  info: Omit<ClientInfo, 'lockStream'>
}

/** the unary RPCs of the server (Quorum belongs to the quorum members: quorum/quorum-net.ts) */
type ServerRpc = Exclude<UnaryRpc, 'Quorum'>

/** The service's methods the server answers: all but Quorum. */
function serverServiceDefinition(): grpc.ServiceDefinition {
  const { Quorum: _quorum, ...rest } = serviceDefinition()
  return rest as grpc.ServiceDefinition
}

/** The IP address of a grpc peer string ('ipv4:1.2.3.4:5', '[::1]:5', '1.2.3.4:5'). */
function peerHost(peer: string): string {
  const p = peer.replace(/^ipv[46]:/, '')
  const m = /^\[(.*)\]:\d+$/.exec(p) ?? /^(.*):\d+$/.exec(p)
  return m ? m[1]! : p
}

function fail(call: LocksCall, e: unknown): void {
  call.emit('error', Object.assign(new Error(e instanceof Error ? e.message : String(e)), toStatus(e)))
}

export class NetServer extends EventEmitter {
  /** random per NetServer: clients notice a restart or failover by its change */
  readonly instance = randomInt(1, 2 ** 47)
  private readonly known = new Map<number, ClientState>()
  private readonly lockStreams = new Map<number, LocksCall>()
  private closed = false
  private readonly log: NonNullable<NetServerOptions['log']>

  private constructor(
    private readonly api: ServerApi,
    private readonly listener: GrpcListener,
    /** whether close() closes the listener too (listen) or only leaves it (attach) */
    private readonly ownsListener: boolean,
    private readonly opts: NetServerOptions,
  ) {
    super()
    this.log = opts.log ?? (() => undefined)
  }

  readonly definition = serverServiceDefinition()

  get host(): string {
    return this.listener.host
  }

  /** the port it listens on (the bound one when 0 was asked for) */
  get port(): number {
    return this.listener.port
  }

  /** 'host:port' it listens on (the bound port when 0 was asked for). */
  get addr(): string {
    return this.listener.addr
  }

  /** Serve `api` on a listener of its own on `addr` ('host:port'; port 0 picks a free one). */
  static async listen(api: ServerApi, addr: string, opts: NetServerOptions = {}): Promise<NetServer> {
    const listener = await GrpcListener.listen(addr, {
      keepaliveMs: opts.keepaliveMs,
      keepaliveTimeoutMs: opts.keepaliveTimeoutMs,
      grpcOptions: opts.grpcOptions,
      security: opts.security,
      log: opts.log,
    })
    return NetServer.serve(api, listener, true, opts)
  }

  /**
   * Serve `api` on a listener shared with other services (a quorum member's): close() takes
   * the server's RPCs off it and leaves it listening.
   */
  static attach(api: ServerApi, listener: GrpcListener, opts: NetServerOptions = {}): NetServer {
    return NetServer.serve(api, listener, false, opts)
  }

  private static serve(api: ServerApi, listener: GrpcListener, owns: boolean, opts: NetServerOptions): NetServer {
    const s = new NetServer(api, listener, owns, opts)
    listener.add(s.definition, s.handlers())
    s.log('listening', { addr: s.addr, instance: s.instance, lockPort: !!opts.lockPort })
    return s
  }

  /* ---- clients ---------------------------------------------------------------------------- */

  /** Every mount that greeted this server and has not said farewell. */
  clients(): ClientInfo[] {
    return [...this.known.keys()].map((rid) => this.client(rid)!)
  }

  client(rid: number): ClientInfo | undefined {
    const c = this.known.get(rid)
    return c && { ...c.info, lockStream: this.lockStreams.has(rid) }
  }

  /** Mounts not heard from for `timeoutMs`. */
  staleClients(timeoutMs: number, now = Date.now()): ClientInfo[] {
    return this.clients().filter((c) => now - c.lastHeartbeat > timeoutMs)
  }

  /** Forget a mount (after the server reclaimed it): its Locks stream ends. */
  forget(rid: number): void {
    this.known.delete(rid)
    this.lockStreams.get(rid)?.end()
  }

  private touch(rid: number, call: { getPeer(): string }): boolean {
    const c = this.known.get(rid)
    if (!c) return false
    c.info.lastHeartbeat = Date.now()
    c.info.peer = call.getPeer()
    return true
  }

  /* ---- the Locks streams ------------------------------------------------------------------ */

  /** Send a lock message to a mount's Locks stream; false if it has none open (lost). */
  sendLock(rid: number, msg: LockServerMsg): boolean {
    const s = this.lockStreams.get(rid)
    if (!s || s.cancelled || s.writableEnded) return false
    s.write(lockServerMsgToWire(msg))
    return true
  }

  /** Send an open-map request to a mount's Locks stream; false if it has none open (lost). */
  sendOpenMap(rid: number, msg: OpenMapRequestMsg): boolean {
    const s = this.lockStreams.get(rid)
    if (!s || s.cancelled || s.writableEnded) return false
    s.write(lockServerMsgToWire(msg))
    return true
  }

  private openLocks(call: LocksCall): void {
    try {
      this.listener.checkCall(call)
    } catch (e) {
      return fail(call, e)
    }
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
    call.on('data', (w: LockClientMessage) => {
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
        if (m.kind === 'openMapReply') port.openMapReply?.(rid, m)
        else port.receive(rid, m)
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

  private unary<K extends ServerRpc>(
    name: K,
    fn: (req: Request<K>, call: grpc.ServerUnaryCall<Request<K>, Response<K>>) => Promise<Response<K>>,
  ): grpc.handleUnaryCall<Request<K>, Response<K>> {
    return (call, callback) => {
      try {
        this.listener.checkCall(call)
      } catch (e) {
        callback(toStatus(e))
        return
      }
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

  private handlers(): Handlers {
    const api = this.api
    return {
      Greeting: this.unary('Greeting', async (r, call) => {
        const rid = num(r.rid, 'rid')
        if (rid === 0) throw new FsError('EINVAL', 'greeting from rid 0: a mount id is never 0')
        const reply = await api.greeting(
          rid,
          big(r.fsid),
          r.formatVersion,
          {
            pid: r.pid,
            pidStart: num(r.pidStart, 'pidStart'),
            host: r.host,
            addr: peerHost(call.getPeer()),
          },
          r.quorumMember ? r.quorumSlot : undefined,
        )
        const now = Date.now()
        const name = r.clientName
        const had = this.known.get(rid)
        this.known.set(rid, {
          info: { rid, peer: call.getPeer(), name, greetedAt: had?.info.greetedAt ?? now, lastHeartbeat: now },
        })
        if (!had) this.log('mount greeted', { rid, name, peer: call.getPeer() })
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
        await api.farewell(rid, r.quorumMember ? r.quorumSlot : undefined)
        const had = this.known.has(rid)
        this.forget(rid)
        if (had) {
          this.log('mount said farewell', { rid })
          this.emit('farewell', rid)
        }
        return {}
      }),
      Heartbeat: this.unary('Heartbeat', async (r, call) => {
        const known = this.touch(num(r.rid, 'rid'), call)
        return { known, serverInstance: this.instance }
      }),
      Locks: (call: LocksCall) => this.openLocks(call),
      OpenInodes: this.unary('OpenInodes', async (r, call) => {
        const rid = num(r.rid, 'rid')
        this.touch(rid, call)
        return { inos: await api.openInodes(rid, num(r.group, 'group')) }
      }),
    }
  }

  /* ---- shutdown --------------------------------------------------------------------------- */

  /**
   * Stop serving: end every Locks stream, let calls in flight finish for up to `graceMs`,
   * then cut what is left.  The ServerApi is the caller's to stop.
   */
  async close(graceMs = 2000): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const s of this.lockStreams.values()) s.end()
    this.lockStreams.clear()
    if (this.ownsListener) await this.listener.close(graceMs)
    else this.listener.remove(this.definition)
    this.log('stopped listening', { addr: this.addr })
  }
}
