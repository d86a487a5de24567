/*
 * A quorum member (DESIGN §11): the agent mounted with `quorum_slot_nr=N`.  It owns slot N's
 * quorum block, takes part in the election on slot N's listener, and when elected runs the
 * server role in this order:
 *
 *   1. ELECT is written: mounts resolving the leader (leaderAddress) now come here;
 *   2. every suspect predecessor (storage/quorum-block.ts suspectLeaders: elected, never
 *      stopped cleanly) is fenced by the fence agent.  An unconfirmed fence is retried and
 *      shown in status(); the server never starts on one;
 *   3. the server role starts (startServer), told which mounts were fenced so it reclaims
 *      them at once instead of waiting for them to reconnect;
 *   4. FENCE is written: everything elected before this term is fenced or stopped.
 *
 * Losing leadership (a higher term, or no majority heard) stops the server role and writes
 * STOP; the member stands again only once the role has stopped.  Joining: a previous holder
 * of this slot that is still alive on this host makes the mount fail (EBUSY: two agents on
 * one slot); one that led and is gone, or lives elsewhere, is fenced before BEGIN overwrites
 * its identity.  A clean unmount stops the server, writes STOP and END, and resigns so the
 * others elect at once.
 */
import { hostname } from 'node:os'
import type { BlockDevice } from '../storage/device.js'
import {
  electedNotStopped,
  highestTerm,
  leaderOf,
  newQuorumBlock,
  readQuorumBlocks,
  suspectLeaders,
  writeQuorumBlock,
  type QuorumBlock,
  type QuorumEventName,
} from '../storage/quorum-block.js'
import type { GrpcListener } from '../net/listener.js'
import type { Security } from '../net/tls.js'
import { FsError } from '../util/errors.js'
import { Election, majorityOf, type ElectionCounters, type ElectionRole } from './election.js'
import type { FenceAgent, FenceReason, FenceTarget } from './fence.js'
import { processStartTime } from './fence.js'
import { QuorumPeers, serveQuorum } from './quorum-net.js'

type Log = (msg: string, fields?: Record<string, unknown>) => void

/** accepted quorum_heartbeat_timeout_ms (the original's range) */
export const HEARTBEAT_TIMEOUT_MIN_MS = 2000
export const HEARTBEAT_TIMEOUT_MAX_MS = 60000
export const HEARTBEAT_TIMEOUT_DEFAULT_MS = 10000

export function checkHeartbeatTimeout(ms: number): number {
  if (!Number.isInteger(ms) || ms < HEARTBEAT_TIMEOUT_MIN_MS || ms > HEARTBEAT_TIMEOUT_MAX_MS)
    throw new FsError(
      'EINVAL',
      `quorum_heartbeat_timeout_ms must be a whole number of milliseconds from ${HEARTBEAT_TIMEOUT_MIN_MS} to ${HEARTBEAT_TIMEOUT_MAX_MS}, not ${ms}`,
    )
  return ms
}

/** The slots a filesystem was formatted with that have an address: the quorum. */
export function quorumSlots(slotAddrs: readonly string[]): number[] {
  return slotAddrs.flatMap((a, i) => (a ? [i] : []))
}

/** How many of those slots elect a leader; 0 for a filesystem with no quorum. */
export function quorumMajority(slotAddrs: readonly string[]): number {
  const n = quorumSlots(slotAddrs).length
  return n ? majorityOf(n) : 0
}

/**
 * Where the server is: the address of the slot the quorum blocks name as leader.  ENOTCONN
 * while none is elected (a mount's NetClient retries).
 */
export async function leaderAddress(meta: BlockDevice, fsid: bigint, slotAddrs: readonly string[]): Promise<string> {
  const { blocks } = await readQuorumBlocks(meta, fsid, slotAddrs.length)
  const l = leaderOf(blocks)
  const addr = l && slotAddrs[l.slot]
  if (!l || !addr)
    throw new FsError('ENOTCONN', 'no quorum leader is elected yet: waiting for a majority of the quorum slots')
  return addr
}

export interface FenceState {
  slot?: number
  rid: string
  reason: FenceReason
  since: number
  attempts: number
  /** the last failure, while not confirmed */
  error?: string
}

export interface QuorumStatus {
  slot: number
  term: number
  role: ElectionRole
  leaderSlot: number
  /** the server role runs here (elected, predecessors fenced, started) */
  serving: boolean
  heartbeatTimeoutMs: number
  majority: number
  slots: number[]
  /** a fence waited for before the server may start */
  fencing?: FenceState
  counters: ElectionCounters & { fenceRequests: number; fencesConfirmed: number; fenceErrors: number }
  /** how long the last election-to-serving took (ms) */
  lastStartMs?: number
}

export interface QuorumMemberOptions {
  meta: BlockDevice
  fsid: bigint
  slot: number
  slotAddrs: readonly string[]
  /** this agent's mount */
  rid: number
  heartbeatTimeoutMs: number
  fence: FenceAgent
  /** slot `slot`'s listener, bound by the agent */
  listener: GrpcListener
  /** how it reaches the other members (the listener's own TLS is the listener's) */
  security?: Security
  log: Log
  /** run the server role; the rids of fenced mounts are reclaimed at once */
  startServer(term: number, fencedRids: number[]): Promise<void>
  stopServer(): Promise<void>
  /** election timing (tests) */
  heartbeatMs?: number
  electionMs?: number
}

export class QuorumMember {
  private readonly election: Election
  private readonly peers: QuorumPeers
  private unserve: (() => void) | undefined
  private block: QuorumBlock
  /** transitions (elected / demoted) run one at a time, in order */
  private chain: Promise<void> = Promise.resolve()
  private busy = 0
  private serving = false
  private stopped = false
  private fencing: FenceState | undefined
  private lastStartMs: number | undefined
  private readonly fenceCounters = { fenceRequests: 0, fencesConfirmed: 0, fenceErrors: 0 }
  private readonly abort = new AbortController()
  /** mounts fenced while joining (this slot's previous holder), for the first server's recovery */
  private fencedAtJoin: number[] = []

  private constructor(private readonly o: QuorumMemberOptions) {
    this.block = newQuorumBlock(o.slot, processStartTime(process.pid))
    this.peers = new QuorumPeers(o.fsid, o.slotAddrs, {
      log: o.log,
      timeoutMs: Math.min(500, o.heartbeatMs ?? 500),
      security: o.security,
    })
    this.election = new Election({
      slot: o.slot,
      slots: quorumSlots(o.slotAddrs),
      heartbeatTimeoutMs: checkHeartbeatTimeout(o.heartbeatTimeoutMs),
      heartbeatMs: o.heartbeatMs,
      electionMs: o.electionMs,
      peers: this.peers,
      persist: (term, votedFor) => this.record('term', term, { votedFor }),
      canStand: () => this.busy === 0 && !this.serving && !this.stopped,
      log: o.log,
    })
    this.election.on('elected', (term: number) => this.transition(() => this.lead(term)))
    this.election.on('demoted', (term: number, reason: string) => this.transition(() => this.follow(term, reason)))
  }

  /** Join the quorum on `o.slot` (see the top of this file for what joining checks). */
  static async start(o: QuorumMemberOptions): Promise<QuorumMember> {
    if (!o.slotAddrs[o.slot])
      throw new FsError('EINVAL', `quorum slot ${o.slot} has no address: format with mkfs -Q ${o.slot},ADDR,PORT`)
    const m = new QuorumMember(o)
    const { blocks } = await readQuorumBlocks(o.meta, o.fsid, o.slotAddrs.length)
    const prev = blocks[o.slot]
    if (prev) await m.takeOverSlot(prev)
    const term = highestTerm(blocks)
    m.block.events.term = { rid: o.rid, term: Math.max(term, prev?.events.term.term ?? 0), ts: Date.now() }
    m.block.votedFor = prev && prev.events.term.term >= term ? prev.votedFor : -1
    if (prev) {
      // keep the slot's history: a successor must still see an unstopped leadership
      for (const e of ['elect', 'fence', 'stop'] as QuorumEventName[]) m.block.events[e] = prev.events[e]
      m.block.writes = prev.writes
    }
    await m.record('begin', term)
    m.unserve = serveQuorum(o.listener, o.fsid, (msg) => m.election.receive(msg))
    const leader = leaderOf(blocks)
    m.election.start(m.block.events.term.term, m.block.votedFor, !!leader && leader.slot !== o.slot)
    o.log('joined the quorum', {
      slot: o.slot,
      term: m.block.events.term.term,
      slots: quorumSlots(o.slotAddrs).length,
      majority: m.election.majority,
      heartbeatTimeoutMs: o.heartbeatTimeoutMs,
      leader: leader?.slot,
    })
    return m
  }

  /** The slot's previous holder: refuse a live duplicate, fence a leader that never stopped. */
  private async takeOverSlot(prev: QuorumBlock): Promise<void> {
    const ended = prev.events.end.rid === prev.events.begin.rid && prev.events.end.ts >= prev.events.begin.ts
    if (ended || prev.events.begin.rid === 0) return
    if (prev.host === hostname() && prev.pid !== process.pid && prev.pid > 0) {
      const start = processStartTime(prev.pid)
      if (start !== 0 && start === prev.pidStart)
        throw new FsError(
          'EBUSY',
          `quorum slot ${prev.slot} is held by the agent pid ${prev.pid} on this host: each slot has one member; unmount that one or mount with another quorum_slot_nr`,
        )
    }
    if (!electedNotStopped(prev)) return
    if (!(await this.fenceUntilConfirmed(this.targetOf(prev, 'quorum_block_leader'), () => !this.stopped))) return
    this.block.events.stop = { rid: prev.events.elect.rid, term: prev.events.elect.term, ts: Date.now() }
    // its mount is gone too: the first server this member runs reclaims it without waiting
    this.fencedAtJoin.push(prev.events.elect.rid)
  }

  /** Write an event into this slot's block (and the vote with a term). */
  private async record(e: QuorumEventName, term: number, extra: { votedFor?: number } = {}): Promise<void> {
    this.block.events[e] = { rid: this.o.rid, term, ts: Date.now() }
    if (extra.votedFor !== undefined) this.block.votedFor = extra.votedFor
    await writeQuorumBlock(this.o.meta, this.o.fsid, this.block)
  }

  private transition(fn: () => Promise<void>): void {
    this.busy++
    this.chain = this.chain
      .then(fn)
      .catch((e: unknown) => this.o.log('quorum transition failed', { err: (e as Error).message }))
      .finally(() => this.busy--)
  }

  private targetOf(q: QuorumBlock, reason: FenceReason): FenceTarget {
    return {
      rid: q.events.elect.rid || q.events.begin.rid,
      reason,
      host: q.host,
      pid: q.pid,
      pidStart: q.pidStart,
      addr: '',
      slot: q.slot,
    }
  }

  /** Start fencing `t`: counted, logged, and shown in status() until it ends. */
  private beginFence(t: FenceTarget): FenceState {
    const st: FenceState = { slot: t.slot, rid: t.rid.toString(16), reason: t.reason, since: Date.now(), attempts: 0 }
    this.fenceCounters.fenceRequests++
    this.o.log('fencing', {
      rid: st.rid,
      slot: t.slot,
      reason: t.reason,
      pid: t.pid,
      host: t.host,
      addr: t.addr,
      method: this.o.fence.method,
    })
    this.fencing = st
    return st
  }

  /** One attempt of the fence agent at `t`: counted and logged; true once confirmed. */
  private async fenceAttempt(t: FenceTarget, st: FenceState, meanwhile: string): Promise<boolean> {
    st.attempts++
    try {
      await this.o.fence.fence(t, this.abort.signal)
      this.fenceCounters.fencesConfirmed++
      this.o.log('fence confirmed', { rid: st.rid, slot: t.slot, ms: Date.now() - st.since })
      return true
    } catch (e) {
      this.fenceCounters.fenceErrors++
      st.error = (e as Error).message
      this.o.log(`fence NOT confirmed: ${meanwhile}`, {
        rid: st.rid,
        slot: t.slot,
        reason: t.reason,
        attempt: st.attempts,
        err: st.error,
      })
      return false
    }
  }

  /** Fence `t`, retrying every second while `go()` holds; false if given up. */
  async fenceUntilConfirmed(t: FenceTarget, go: () => boolean): Promise<boolean> {
    const st = this.beginFence(t)
    try {
      while (go()) {
        if (await this.fenceAttempt(t, st, 'the server waits and will not start until it is')) return true
        if (this.abort.signal.aborted) return false
        await new Promise((r) => setTimeout(r, 1000))
      }
      return false
    } finally {
      this.fencing = undefined
    }
  }

  /**
   * One fence attempt for the server role (a mount it must reclaim): true once confirmed.  A
   * failed one stays in status() (the server asks again on its next check).
   */
  async fenceOnce(t: FenceTarget): Promise<boolean> {
    const st = this.beginFence(t)
    const ok = await this.fenceAttempt(t, st, 'the mount keeps its locks and is not reclaimed until it is')
    if (ok) this.fencing = undefined
    return ok
  }

  private async lead(term: number): Promise<void> {
    const t0 = Date.now()
    const still = (): boolean => !this.stopped && this.election.role === 'leader' && this.election.term === term
    if (!still()) return
    await this.record('elect', term)
    const { blocks } = await readQuorumBlocks(this.o.meta, this.o.fsid, this.o.slotAddrs.length)
    const fenced: number[] = this.fencedAtJoin.splice(0)
    for (const q of suspectLeaders(blocks, { slot: this.o.slot, rid: this.o.rid, term })) {
      if (!(await this.fenceUntilConfirmed(this.targetOf(q, 'quorum_block_leader'), still))) return
      fenced.push(q.events.elect.rid)
    }
    if (!still()) return
    try {
      await this.o.startServer(term, fenced)
    } catch (e) {
      this.o.log('the server role did not start; resigning', { term, err: (e as Error).message })
      await this.record('stop', term)
      await this.election.resign('the server role did not start')
      return
    }
    this.serving = true
    await this.record('fence', term)
    this.lastStartMs = Date.now() - t0
    this.o.log('serving as quorum leader', { term, fenced: fenced.map((r) => r.toString(16)), ms: this.lastStartMs })
  }

  private async follow(term: number, reason: string): Promise<void> {
    if (this.serving) await this.o.stopServer()
    this.serving = false
    // the elect of this term ended: mounts look elsewhere
    if (this.block.events.elect.term > this.block.events.stop.term)
      await this.record('stop', this.block.events.elect.term)
    this.o.log('stopped serving', { term, reason })
  }

  get heartbeatTimeoutMs(): number {
    return this.election.heartbeatTimeoutMs
  }

  /** Change the heartbeat timeout at run time (admin socket); EINVAL outside 2-60 s. */
  setHeartbeatTimeout(ms: number): void {
    this.election.heartbeatTimeoutMs = checkHeartbeatTimeout(ms)
    this.o.log('quorum heartbeat timeout changed', { ms })
  }

  status(): QuorumStatus {
    const e = this.election
    return {
      slot: this.o.slot,
      term: e.term,
      role: e.role,
      leaderSlot: e.leaderSlot,
      serving: this.serving,
      heartbeatTimeoutMs: e.heartbeatTimeoutMs,
      majority: e.majority,
      slots: quorumSlots(this.o.slotAddrs),
      fencing: this.fencing && { ...this.fencing },
      counters: { ...e.counters, ...this.fenceCounters },
      lastStartMs: this.lastStartMs,
    }
  }

  /** Leave the quorum cleanly: stop serving (STOP), END, resign so the others elect at once. */
  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.abort.abort()
    const wasLeader = this.election.role === 'leader'
    await this.chain
    if (this.serving) await this.o.stopServer()
    this.serving = false
    if (this.block.events.elect.term > this.block.events.stop.term)
      await this.record('stop', this.block.events.elect.term)
    await this.record('end', this.election.term)
    await this.election.stop()
    if (wasLeader) this.o.log('resigned quorum leadership', { term: this.election.term })
    this.unserve?.()
    this.peers.close()
  }
}
