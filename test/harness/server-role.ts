/*
 * The in-process transport of the server role: what the harness gives the real ClusterServer
 * (server/server-role.ts) in place of the gRPC NetServer, over the mounts' links
 * (transport.ts MountLink).  It keeps NetServer's contracts:
 *
 *  - a mount is known from the moment its link is attached until its farewell or until the
 *    role forgets it; any request or lock message it makes is its heartbeat;
 *  - lock messages go to the role's lock port in order (hello first on every stream), and
 *    the role's go down the link, lost while the mount has no lock stream;
 *  - open-map requests go down the link like lock messages, their replies to the port;
 *  - a farewell is the 'farewell' event, after the Server's own farewell;
 *  - close() breaks every link (calls wait for the next server role).
 *
 * silence(rid) stands for the mount timeout elapsing at once: the harness calls it, then the
 * role's liveness check, when a mount's process dies.
 */
import { EventEmitter } from 'node:events'
import type { LockClientMsg, LockServerMsg, RecoveredLock } from '../../node-agent/src/protocol/lock-modes.js'
import type { OpenMapReplyMsg, OpenMapRequestMsg } from '../../node-agent/src/protocol/open-map.js'
import type { ServerApi } from '../../node-agent/src/protocol/server-api.js'
import type {
  ServerLockPort,
  ServerTransport,
  ServerTransportFactory,
  TransportClient,
} from '../../node-agent/src/server/server-role.js'
import type { MountLink, ServerEnd } from './transport.js'

export class InProcTransport extends EventEmitter implements ServerTransport, ServerEnd {
  readonly addr = 'inproc'
  /** the links of the mounts attached (by rid) */
  readonly links = new Map<number, MountLink>()
  /** last request or lock message of each mount (ms) */
  private readonly lastHeard = new Map<number, number>()
  private closed = false

  private constructor(
    readonly api: ServerApi,
    private readonly port: ServerLockPort,
  ) {
    super()
  }

  /** A factory for ClusterServer.start that hands the transport it makes to `made`. */
  static factory(made: (t: InProcTransport) => void): ServerTransportFactory {
    return async (api, port) => {
      const t = new InProcTransport(api, port)
      made(t)
      return t
    }
  }

  /** A mount's link reaches this server from now on. */
  attach(link: MountLink): void {
    if (this.closed) return
    this.links.set(link.rid, link)
    this.lastHeard.set(link.rid, Date.now())
    link.connect(this)
  }

  /** The mount's process is gone: to the liveness check it has been silent for ever. */
  silence(rid: number): void {
    if (this.links.has(rid)) this.lastHeard.set(rid, 0)
  }

  /* ---- ServerEnd: what the links deliver ---------------------------------------------------- */

  touch(rid: number): void {
    if (this.links.has(rid)) this.lastHeard.set(rid, Date.now())
  }

  receiveLock(rid: number, msg: LockClientMsg): void {
    if (!this.closed) this.port.receive(rid, msg)
  }

  openMapReply(rid: number, msg: OpenMapReplyMsg): void {
    if (!this.closed) this.port.openMapReply(rid, msg)
  }

  hello(rid: number, held: RecoveredLock[]): void {
    if (this.closed) return
    this.touch(rid)
    this.port.hello(rid, held)
  }

  farewell(rid: number): void {
    const had = this.links.delete(rid)
    this.lastHeard.delete(rid)
    if (had && !this.closed) this.emit('farewell', rid)
  }

  /* ---- ServerTransport: what the role asks ---------------------------------------------------- */

  sendLock(rid: number, msg: LockServerMsg): boolean {
    const link = this.links.get(rid)
    if (!link) return false
    const open = link.hasLockStream
    link.sendDown(msg) // without a stream the link drops it (and counts it)
    return open
  }

  sendOpenMap(rid: number, msg: OpenMapRequestMsg): boolean {
    return this.links.get(rid)?.sendOpenMap(msg) ?? false
  }

  clients(): TransportClient[] {
    return [...this.links.values()].map((l) => ({
      rid: l.rid,
      name: `mount ${l.rid.toString(16)}`,
      lastHeartbeat: this.lastHeard.get(l.rid) ?? 0,
      lockStream: l.hasLockStream,
    }))
  }

  staleClients(timeoutMs: number, now = Date.now()): TransportClient[] {
    return this.clients().filter((c) => now - c.lastHeartbeat > timeoutMs)
  }

  forget(rid: number): void {
    this.links.delete(rid)
    this.lastHeard.delete(rid)
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const l of this.links.values()) l.disconnect()
    this.links.clear()
  }
}
