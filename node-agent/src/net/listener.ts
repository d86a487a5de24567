/*
 * GrpcListener: one gRPC server bound to one address, shared by the services that answer
 * there.  A quorum member's slot address is its listener for the life of its mount: the
 * quorum election (quorum/quorum-net.ts) answers on it always, and the server's RPCs
 * (net-server.ts NetServer.attach) only while this member is the elected leader.  A mount
 * that calls a member which does not serve gets UNIMPLEMENTED and looks for the leader again.
 *
 * Services can be added and removed while it listens (grpc-js allows both after bind); a
 * removed service's calls in flight finish on the handlers they started with.
 */
import * as grpc from '@grpc/grpc-js'
import type { Server as NetServerSocket } from 'node:net'
import { FsError } from '../util/errors.js'
import {
  checkCall,
  newTlsCounters,
  serverCredentials,
  vetConnections,
  type PeerCall,
  type Security,
  type TlsCounters,
} from './tls.js'

export interface ListenerOptions {
  /** mutual TLS (default) or plaintext when explicitly insecure (net/tls.ts) */
  security?: Security
  log?: (msg: string, fields?: Record<string, unknown>) => void
  /** server keepalive pings (ms) and how long to wait for their ack */
  keepaliveMs?: number
  keepaliveTimeoutMs?: number
  /** extra grpc-js server options */
  grpcOptions?: grpc.ServerOptions
}

export class GrpcListener {
  private closed = false
  /** TLS connections accepted and refused (by reason) */
  readonly tls: TlsCounters = newTlsCounters()

  private constructor(
    readonly server: grpc.Server,
    readonly host: string,
    readonly port: number,
    private readonly security: Security,
  ) {}

  /** EACCES unless the call's peer is a vetted agent of this filesystem (no-op when insecure). */
  checkCall(call: PeerCall): void {
    if (!this.security.insecure) checkCall(call, this.security.fsid)
  }

  /** 'host:port' it listens on (the bound port when 0 was asked for). */
  get addr(): string {
    return `${this.host.includes(':') ? `[${this.host}]` : this.host}:${this.port}`
  }

  /**
   * Listen on `addr` ('host:port'; port 0 picks a free one) with the services of `initial`
   * in place before the port opens.  EBUSY when the address cannot be bound.
   */
  static async listen(
    addr: string,
    opts: ListenerOptions = {},
    initial: Array<[grpc.ServiceDefinition, grpc.UntypedServiceImplementation]> = [],
  ): Promise<GrpcListener> {
    const m = /^(.*):(\d+)$/.exec(addr)
    if (!m) throw new FsError('EINVAL', `listen address ${addr} is not host:port`)
    const host = m[1]!.replace(/^\[(.*)\]$/, '$1')
    const security: Security = opts.security ?? { insecure: true }
    const g = new grpc.Server({
      'grpc.keepalive_time_ms': opts.keepaliveMs ?? 10_000,
      'grpc.keepalive_timeout_ms': opts.keepaliveTimeoutMs ?? 5_000,
      // a roots reply carries one log tree per mount: allow large clusters
      'grpc.max_receive_message_length': 64 << 20,
      'grpc.max_send_message_length': 64 << 20,
      ...opts.grpcOptions,
    })
    for (const [def, impl] of initial) g.addService(def, impl)
    try {
      const port = await new Promise<number>((res, rej) =>
        g.bindAsync(addr, serverCredentials(security), (err, p) =>
          err ? rej(new FsError('EBUSY', `cannot listen on ${addr}: ${err.message}`)) : res(p),
        ),
      )
      const l = new GrpcListener(g, host, port, security)
      if (!security.insecure) {
        // grpc-js keeps its http2 servers private; vetting needs their TLS connections
        const servers = (g as unknown as { http2Servers?: Map<NetServerSocket, unknown> }).http2Servers
        if (!servers) throw new FsError('EIO', 'grpc-js changed: cannot reach its TLS servers to vet peers')
        vetConnections(servers.keys(), security.fsid, l.tls, opts.log ?? (() => undefined))
      }
      return l
    } catch (e) {
      g.forceShutdown()
      throw e
    }
  }

  add(def: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation): void {
    if (this.closed) throw new FsError('ENXIO', `the listener on ${this.addr} is closed`)
    this.server.addService(def, impl)
  }

  remove(def: grpc.ServiceDefinition): void {
    if (!this.closed) this.server.removeService(def)
  }

  /** Stop listening: calls in flight get up to `graceMs`, then what is left is cut. */
  async close(graceMs = 2000): Promise<void> {
    if (this.closed) return
    this.closed = true
    await new Promise<void>((res) => {
      const t = setTimeout(() => {
        this.server.forceShutdown()
        res()
      }, graceMs)
      this.server.tryShutdown(() => {
        clearTimeout(t)
        res()
      })
    })
  }
}
