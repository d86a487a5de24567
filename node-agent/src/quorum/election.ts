/*
 * Leader election among the quorum slots (DESIGN §11, reference §8): raft's election without
 * its log.  Transport-free: messages go out through ElectionPeers and come in through
 * receive(); the term and vote are persisted (the slot's quorum block) before they count.
 *
 * - Terms only grow.  A member votes once per term (votedFor is persisted with the term, so a
 *   restart cannot vote twice).  A higher term seen anywhere demotes a leader.
 * - The leader heartbeats every heartbeatMs (100).  A follower that hears no heartbeat for
 *   heartbeatTimeoutMs (default 10 s, 2-60 s) stands; RESIGNATION from the leader makes it
 *   stand at once.  Candidates retry after electionMs + rand(100) ms (250 ms).
 * - PreVote: a member first asks whether it could win (PRE_VOTE for term+1, granted only by
 *   members that have not heard a leader within their timeout) and raises its term only
 *   then, so a member cut off and coming back does not depose a healthy leader.
 * - Majority: n/2+1 of the n configured slots for n >= 3, 1 for n <= 2 (the original's rule:
 *   two members can both elect and then fence each other).  A minority never elects.
 * - A leader that has not heard from a majority (itself included) for heartbeatTimeoutMs
 *   steps down on its own: a partitioned leader stops serving before it is fenced.
 * - Two leaders of one term (only possible with n <= 2) resolve by the lower slot.
 * - A member stands only when canStand() allows it (its own server role has stopped).
 *
 * Events: 'elected' (term) when this member becomes leader, 'demoted' (term, reason) when it
 * stops being leader, 'leader' (slot, term) when it learns of another leader.
 */
import { EventEmitter } from 'node:events'
import { randomInt } from 'node:crypto'

export const QuorumMsgType = { PRE_VOTE: 0, REQUEST_VOTE: 1, HEARTBEAT: 2, RESIGNATION: 3 } as const
export type QuorumMsgTypeValue = (typeof QuorumMsgType)[keyof typeof QuorumMsgType]

export interface QuorumMsg {
  term: number
  from: number
  type: number
  granted: boolean
}

export interface ElectionPeers {
  /** Send to `slot`; resolves with its reply, or undefined when it did not answer in time. */
  send(slot: number, m: QuorumMsg): Promise<QuorumMsg | undefined>
}

/** The votes that elect among `n` slots: n/2+1, or 1 for n <= 2 (the original's rule). */
export function majorityOf(n: number): number {
  return n <= 2 ? 1 : Math.floor(n / 2) + 1
}

export type ElectionRole = 'follower' | 'candidate' | 'leader'

export interface ElectionOptions {
  slot: number
  /** every configured slot (with an address), this one included */
  slots: readonly number[]
  heartbeatTimeoutMs: number
  heartbeatMs?: number
  electionMs?: number
  peers: ElectionPeers
  /** persist the term and vote (they count only once this resolves) */
  persist(term: number, votedFor: number): Promise<void>
  /** whether this member may stand now (default: always) */
  canStand?: () => boolean
  log?: (msg: string, fields?: Record<string, unknown>) => void
}

export interface ElectionCounters {
  elections: number
  elected: number
  demoted: number
  votesGranted: number
  heartbeatsSent: number
  heartbeatsReceived: number
  resignationsReceived: number
}

export class Election extends EventEmitter {
  term = 0
  votedFor = -1
  role: ElectionRole = 'follower'
  /** the slot known to lead (-1: none) */
  leaderSlot = -1
  private hbTimeoutMs: number
  readonly counters: ElectionCounters = {
    elections: 0,
    elected: 0,
    demoted: 0,
    votesGranted: 0,
    heartbeatsSent: 0,
    heartbeatsReceived: 0,
    resignationsReceived: 0,
  }
  /** when a leader was last heard (the leader: when it was elected) */
  private lastHeard = 0
  /** when this member may stand next */
  private standAt = 0
  private standing = false
  /** stop() was called: a stand still under way must not make this member leader */
  private stopped = false
  private lastSent = 0
  private electedAt = 0
  private readonly lastAck = new Map<number, number>()
  private timer: NodeJS.Timeout | undefined
  private persisting: Promise<void> = Promise.resolve()
  private readonly log: NonNullable<ElectionOptions['log']>

  constructor(private readonly o: ElectionOptions) {
    super()
    this.hbTimeoutMs = o.heartbeatTimeoutMs
    this.log = o.log ?? (() => undefined)
  }

  get heartbeatTimeoutMs(): number {
    return this.hbTimeoutMs
  }

  /**
   * Change the heartbeat timeout at run time.  A wait already begun under a longer timeout
   * (standAt, set from the timeout at start, on a vote or a demotion) ends within the new one.
   */
  set heartbeatTimeoutMs(ms: number) {
    this.hbTimeoutMs = ms
    this.standAt = Math.min(this.standAt, Date.now() + ms)
  }

  private get heartbeatMs(): number {
    return this.o.heartbeatMs ?? 100
  }

  private electionDelay(): number {
    return (this.o.electionMs ?? 250) + randomInt(0, 100)
  }

  get majority(): number {
    return majorityOf(this.o.slots.length)
  }

  private get others(): number[] {
    return this.o.slots.filter((s) => s !== this.o.slot)
  }

  /**
   * Start from the persisted `term` and vote.  `leaderSeen`: the quorum blocks name a leader
   * that may be alive, so wait a heartbeat timeout for it before standing.
   */
  start(term: number, votedFor: number, leaderSeen: boolean): void {
    this.term = term
    this.votedFor = votedFor
    const now = Date.now()
    this.stopped = false
    this.lastHeard = leaderSeen ? now : 0
    this.standAt = leaderSeen ? now + this.heartbeatTimeoutMs : now + this.electionDelay()
    this.timer = setInterval(() => this.tick(), Math.min(50, this.heartbeatMs))
    this.timer.unref()
  }

  /** Stop taking part; a leader tells the others first so they elect at once. */
  async stop(): Promise<void> {
    this.stopped = true
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    if (this.role === 'leader') await this.resign('stopping')
  }

  /** Give up leadership (the server could not start, or the member stops). */
  async resign(reason: string): Promise<void> {
    if (this.role !== 'leader') return
    this.demote(reason)
    const m: QuorumMsg = { term: this.term, from: this.o.slot, type: QuorumMsgType.RESIGNATION, granted: false }
    await Promise.all(this.others.map((s) => this.o.peers.send(s, m)))
  }

  private demote(reason: string): void {
    if (this.role !== 'leader') {
      this.role = 'follower'
      return
    }
    this.role = 'follower'
    this.leaderSlot = -1
    this.counters.demoted++
    // let the others stand first: this member just failed or was outvoted
    this.standAt = Date.now() + this.heartbeatTimeoutMs
    this.log('quorum leadership lost', { term: this.term, reason })
    this.emit('demoted', this.term, reason)
  }

  private persist(): Promise<void> {
    const term = this.term
    const votedFor = this.votedFor
    this.persisting = this.persisting.then(() => this.o.persist(term, votedFor))
    return this.persisting
  }

  /** Adopt a higher term seen in a message: no vote in it yet; a leader steps down. */
  private async adopt(term: number, why: string): Promise<void> {
    if (term <= this.term) return
    if (this.role === 'leader') this.demote(`${why} carries term ${term}, above ours`)
    this.role = 'follower'
    this.term = term
    this.votedFor = -1
    await this.persist()
  }

  private leaderAlive(now: number): boolean {
    if (this.role === 'leader') return true
    return this.leaderSlot >= 0 && now - this.lastHeard < this.heartbeatTimeoutMs
  }

  /* ---- the timer ------------------------------------------------------------------------- */

  private tick(): void {
    const now = Date.now()
    if (this.role === 'leader') {
      if (now - this.lastSent >= this.heartbeatMs) this.heartbeat(now)
      // a leader cut off from the majority steps down by itself
      if (now - this.electedAt > this.heartbeatTimeoutMs) {
        let heard = 1
        for (const s of this.others) if (now - (this.lastAck.get(s) ?? 0) < this.heartbeatTimeoutMs) heard++
        if (heard < this.majority)
          this.demote(`heard from ${heard} of ${this.o.slots.length} slots, fewer than a majority`)
      }
      return
    }
    if (this.standing || now < this.standAt) return
    if (this.leaderSlot >= 0 && now - this.lastHeard < this.heartbeatTimeoutMs) return
    if (this.o.canStand && !this.o.canStand()) return
    void this.stand()
  }

  private heartbeat(now: number): void {
    this.lastSent = now
    const m: QuorumMsg = { term: this.term, from: this.o.slot, type: QuorumMsgType.HEARTBEAT, granted: false }
    for (const s of this.others) {
      this.counters.heartbeatsSent++
      void this.o.peers.send(s, m).then(async (r) => {
        if (!r) return
        if (r.term > this.term) await this.adopt(r.term, `slot ${s}'s heartbeat reply`)
        else this.lastAck.set(s, Date.now())
      })
    }
  }

  /* ---- standing -------------------------------------------------------------------------- */

  private async ask(type: QuorumMsgTypeValue, term: number): Promise<number> {
    const m: QuorumMsg = { term, from: this.o.slot, type, granted: false }
    const replies = await Promise.all(this.others.map((s) => this.o.peers.send(s, m)))
    let granted = 1
    for (const r of replies) {
      if (!r) continue
      if (r.term > this.term && r.term >= term) await this.adopt(r.term, 'a vote reply')
      if (r.granted) granted++
    }
    return granted
  }

  private async stand(): Promise<void> {
    this.standing = true
    try {
      const pre = await this.ask(QuorumMsgType.PRE_VOTE, this.term + 1)
      if (this.stopped || pre < this.majority || this.role === 'leader' || this.leaderAlive(Date.now())) return
      this.term++
      this.votedFor = this.o.slot
      this.role = 'candidate'
      this.counters.elections++
      await this.persist()
      const term = this.term
      this.log('standing for election', { term })
      const votes = await this.ask(QuorumMsgType.REQUEST_VOTE, term)
      if (this.role !== 'candidate' || this.term !== term) return
      if (this.stopped || votes < this.majority) {
        this.role = 'follower'
        return
      }
      this.role = 'leader'
      this.leaderSlot = this.o.slot
      this.electedAt = this.lastHeard = Date.now()
      this.lastAck.clear()
      this.counters.elected++
      this.log('elected quorum leader', { term, votes, slots: this.o.slots.length })
      this.heartbeat(Date.now())
      this.emit('elected', term)
    } finally {
      this.standing = false
      if (this.role !== 'leader') this.standAt = Date.now() + this.electionDelay()
    }
  }

  /* ---- receiving ------------------------------------------------------------------------- */

  /** Answer a message from another member. */
  async receive(m: QuorumMsg): Promise<QuorumMsg> {
    const now = Date.now()
    const reply = (granted: boolean): QuorumMsg => ({ term: this.term, from: this.o.slot, type: m.type, granted })
    if (m.from === this.o.slot || !this.o.slots.includes(m.from)) return reply(false)
    switch (m.type) {
      case QuorumMsgType.PRE_VOTE:
        return reply(m.term > this.term && !this.leaderAlive(now))
      case QuorumMsgType.REQUEST_VOTE: {
        await this.adopt(m.term, `slot ${m.from}'s vote request`)
        const grant = m.term === this.term && this.role !== 'leader' && (this.votedFor < 0 || this.votedFor === m.from)
        if (grant) {
          this.votedFor = m.from
          await this.persist()
          this.counters.votesGranted++
          this.lastHeard = Date.now()
          this.standAt = Date.now() + this.heartbeatTimeoutMs
        }
        return reply(grant)
      }
      case QuorumMsgType.HEARTBEAT: {
        if (m.term < this.term) return reply(false)
        await this.adopt(m.term, `slot ${m.from}'s heartbeat`)
        if (this.role === 'leader') {
          // two leaders of one term (n <= 2): the lower slot keeps it
          if (m.from > this.o.slot) return reply(false)
          this.demote(`slot ${m.from} leads term ${m.term} too`)
        }
        this.role = 'follower'
        this.counters.heartbeatsReceived++
        this.lastHeard = Date.now()
        if (this.leaderSlot !== m.from) {
          this.leaderSlot = m.from
          this.log('following quorum leader', { slot: m.from, term: m.term })
          this.emit('leader', m.from, m.term)
        }
        return reply(true)
      }
      case QuorumMsgType.RESIGNATION:
        this.counters.resignationsReceived++
        if (m.from === this.leaderSlot && m.term >= this.term) {
          this.leaderSlot = -1
          this.lastHeard = 0
          this.standAt = Date.now() + randomInt(0, 100)
        }
        return reply(true)
      default:
        return reply(false)
    }
  }
}
