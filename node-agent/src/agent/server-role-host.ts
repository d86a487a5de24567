/*
 * Which agent serves, and running the server role inside an agent.
 *
 * The choice (serverRole): an agent mounted with `quorum_slot_nr=N` is a quorum member, and
 * the election (quorum/quorum.ts) starts the role on it when it leads; every other agent
 * follows the leader the quorum blocks name (or a fixed `server_addr`).  A filesystem
 * formatted without slot addresses is a single-node one: the agent serves itself on a
 * loopback port nobody else knows (slot 'local'), guarded by the server lease.
 *
 * ServerRoleHost starts and stops the role (server/server-role.ts ClusterServer) at run time:
 * at most one runs at a time; the agent's metrics export the role's readings from its first
 * start on (0 while none runs), and its btree counters count in the agent's.
 */
import type { BtreeCounters } from '../storage/btree.js'
import { btreeCountersOf } from '../storage/btree.js'
import type { BlockDevice } from '../storage/device.js'
import { FsError } from '../util/errors.js'
import type { GrpcListener } from '../net/listener.js'
import type { Security } from '../net/tls.js'
import { quorumMajority } from '../quorum/quorum.js'
import { ClusterServer, listenerTransport, type ClusterServerOptions } from '../server/server-role.js'
import type { MetricSink } from './metrics.js'
import { registerServerRoleMetrics } from './metrics-server.js'

/** A quorum slot, or 'local': the loopback server of a single-node filesystem. */
export type ServeSlot = number | 'local'

/** The address the server of `slot` listens on; EINVAL for a slot without one. */
export function slotAddress(slotAddrs: readonly string[], slot: ServeSlot): string {
  if (slot === 'local') return '127.0.0.1:0'
  if (slot >= slotAddrs.length)
    throw new FsError(
      'EINVAL',
      `quorum slot ${slot} does not exist: the filesystem has ${slotAddrs.length} slot(s) (0..${slotAddrs.length - 1})`,
    )
  const addr = slotAddrs[slot]
  if (!addr)
    throw new FsError(
      'EINVAL',
      `quorum slot ${slot} has no address: format with mkfs -Q ${slot},ADDR,PORT to give the server one`,
    )
  return addr
}

/**
 * What this agent does about the server: `member` (a quorum member: the election decides
 * whether it serves), `follow` (a plain client of a quorum: the quorum blocks name the
 * server), `connect` (a fixed server address, server_addr=), or `serve` ('local': a
 * single-node filesystem formatted without slot addresses).
 */
export type RoleChoice = { member: number } | { follow: true } | { connect: string } | { serve: 'local' }

export function serverRole(
  slotAddrs: readonly string[],
  o: { quorumSlotNr?: number; serverAddr?: string },
): RoleChoice {
  if (o.quorumSlotNr !== undefined) {
    slotAddress(slotAddrs, o.quorumSlotNr) // a slot without an address is a usage error
    return { member: o.quorumSlotNr }
  }
  if (o.serverAddr) return { connect: o.serverAddr }
  if (slotAddrs.some((a) => a)) return { follow: true }
  return { serve: 'local' }
}

/** How a role is started besides its slot: a quorum leader's. */
export interface StartRoleOptions {
  /** serve on this listener (the member's slot address) instead of one of its own */
  listener?: GrpcListener
  /** mounts fenced already: reclaimed at once */
  fenced?: readonly number[]
  /** fence mounts before reclaiming them */
  fence?: ClusterServerOptions['fence']
}

export interface ServerRoleHostOptions {
  log: (msg: string, fields?: Record<string, unknown>) => void
  /** how long recorded mounts get to reconnect after a start (ms; a local server: 0) */
  recoveryMs?: number
  /** a mount silent this long is reclaimed (ms) */
  mountTimeoutMs?: number
  /** TLS of a listener of its own (the single-node loopback server) */
  security?: Security
}

export class ServerRoleHost {
  private role: ClusterServer | undefined
  private metrics: MetricSink | undefined
  private metricsRegistered = false
  /** btree counters of every role this host ran (their sum is the agent's) */
  private readonly btrees: BtreeCounters[] = []

  constructor(
    private readonly meta: BlockDevice,
    private readonly slotAddrs: readonly string[],
    private readonly o: ServerRoleHostOptions,
  ) {}

  /** the role running now */
  get current(): ClusterServer | undefined {
    return this.role
  }

  /**
   * Start serving on `slot`'s address; resolves to the address this agent's own mount
   * connects to.  EBUSY when a role runs already.
   */
  async start(slot: ServeSlot, so: StartRoleOptions = {}): Promise<string> {
    if (this.role) throw new FsError('EBUSY', `the server role runs already (on ${this.role.addr})`)
    const cs = await ClusterServer.start(this.meta, {
      addr: slotAddress(this.slotAddrs, slot),
      transport: so.listener && listenerTransport(so.listener),
      security: this.o.security,
      lease: !so.listener,
      fenced: so.fenced,
      fence: so.fence,
      log: this.o.log,
      recoveryMs: slot === 'local' ? 0 : this.o.recoveryMs,
      quorumMajority: quorumMajority(this.slotAddrs),
      mountTimeoutMs: this.o.mountTimeoutMs,
    })
    this.role = cs
    this.btrees.push(btreeCountersOf(cs.server.w.cache))
    this.registerMetrics()
    return cs.addr.replace(/^(0\.0\.0\.0|\[::\]):/, '127.0.0.1:')
  }

  /** Stop the role running now, if any. */
  async stop(): Promise<void> {
    const cs = this.role
    this.role = undefined
    await cs?.stop()
  }

  /** Export the role's readings on `m` once a role has started (now, if one has). */
  exportMetrics(m: MetricSink): void {
    this.metrics = m
    this.registerMetrics()
  }

  /** the btree counters of the roles this host ran */
  btreeCounters(): readonly BtreeCounters[] {
    return this.btrees
  }

  private registerMetrics(): void {
    if (!this.metrics || this.metricsRegistered || this.btrees.length === 0) return
    this.metricsRegistered = true
    registerServerRoleMetrics(this.metrics, () => this.role)
  }
}
