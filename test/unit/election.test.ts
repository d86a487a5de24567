/*
 * The quorum election (node-agent/src/quorum/election.ts) as a model in one process: N
 * Elections wired through an in-memory ElectionPeers whose links can be cut both ways or one
 * way (a message over a cut link is lost: the send resolves undefined after LOST_MS; a reply
 * over a cut link is lost the same way), with a persist() that records (term, votedFor) per
 * member and can be made slow.  Short timings (heartbeat 20 ms, election 40 ms + rand(100),
 * heartbeat timeout 300 ms) keep every test to a few seconds.
 *
 * Checked throughout every test: never two 'elected' events with one term (n >= 3), never two
 * leaders of one term at once.
 *
 * Randomized tests print their seed; SCOUTFS_TEST_SEED=<seed> replays the scenario (which links
 * are cut, when, message delays) though not the exact interleaving (the timers are real and
 * the election draws its own random delays).  SCOUTFS_ELECTION_ROUNDS=<n> sets the failovers of
 * the safety test (default 8).
 */
import assert from 'node:assert/strict'
import { Election, QuorumMsgType, type ElectionPeers, type QuorumMsg } from '../../node-agent/src/quorum/election.js'
import { Rng, envInt, testRng } from '../helpers/rng.js'

const HB = 20
const EL = 40
const HBT = 300
/** how long a message over a cut link takes to come back undefined */
const LOST_MS = 15
/** the longest an election round can wait before retrying (electionMs + rand(100)) */
const ROUND = EL + 100

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

interface TraceEntry {
  seq: number
  at: number
  kind: 'send' | 'reply' | 'persist-start' | 'persist-done'
  slot: number
  to?: number
  m?: QuorumMsg
  reply?: QuorumMsg
  term?: number
  votedFor?: number
}

interface ClusterOptions {
  /** configured slots 0..n-1 */
  n: number
  heartbeatTimeoutMs?: number
  /** for message delays (0..maxDelayMs ms each way); default a fixed seed */
  rng?: Rng
  maxDelayMs?: number
  /** how long each persist takes (ms; default 0) */
  persistMs?: (slot: number) => number
  canStand?: (slot: number) => boolean
}

const clusters: Cluster[] = []

/** N Elections over an in-memory network with a link matrix. */
class Cluster {
  readonly slots: number[]
  readonly e: Array<Election | undefined> = []
  /** link[a][b]: a's messages reach b */
  private readonly link: boolean[][]
  private readonly stopped = new Set<number>()
  private closed = false
  private seq = 0
  private readonly rng: Rng
  readonly trace: TraceEntry[] = []
  readonly elected: Array<{ slot: number; term: number; at: number }> = []
  readonly demoted: Array<{ slot: number; term: number; reason: string; at: number }> = []
  /** every persist() that completed, by slot: [term, votedFor] */
  readonly persisted = new Map<number, Array<[number, number]>>()
  readonly violations: string[] = []
  private readonly sampler: NodeJS.Timeout

  constructor(readonly o: ClusterOptions) {
    this.slots = Array.from({ length: o.n }, (_, i) => i)
    this.link = this.slots.map(() => this.slots.map(() => true))
    this.rng = o.rng ? o.rng.fork() : new Rng(1)
    clusters.push(this)
    // two leaders of one term at one moment is a violation however briefly it lasts
    this.sampler = setInterval(() => this.checkLeaders(), 2)
  }

  private note(e: Omit<TraceEntry, 'seq' | 'at'>): void {
    this.trace.push({ seq: this.seq++, at: Date.now(), ...e })
  }

  private checkLeaders(): void {
    if (this.o.n <= 2) return
    const byTerm = new Map<number, number>()
    for (const s of this.slots) {
      const x = this.e[s]
      if (!x || x.role !== 'leader' || this.stopped.has(s)) continue
      const other = byTerm.get(x.term)
      if (other !== undefined) this.violations.push(`slots ${other} and ${s} both lead term ${x.term}`)
      byTerm.set(x.term, s)
    }
  }

  peers(from: number): ElectionPeers {
    return { send: (to, m) => this.send(from, to, m) }
  }

  private delay(): Promise<void> {
    const max = this.o.maxDelayMs ?? 2
    return max > 0 ? sleep(this.rng.int(max + 1)) : Promise.resolve()
  }

  private async send(from: number, to: number, m: QuorumMsg): Promise<QuorumMsg | undefined> {
    this.note({ kind: 'send', slot: from, to, m: { ...m } })
    await this.delay()
    const target = this.e[to]
    if (this.closed || !target || this.stopped.has(to) || !this.link[from]![to]) {
      await sleep(LOST_MS)
      return undefined
    }
    const r = await target.receive(m)
    this.note({ kind: 'reply', slot: to, to: from, m: { ...m }, reply: { ...r } })
    await this.delay()
    if (this.closed || !this.link[to]![from]) {
      await sleep(LOST_MS)
      return undefined
    }
    return r
  }

  /** Create (not start) the Election of `slot`. */
  create(slot: number, heartbeatTimeoutMs = this.o.heartbeatTimeoutMs ?? HBT): Election {
    const e = new Election({
      slot,
      slots: this.slots,
      heartbeatTimeoutMs,
      heartbeatMs: HB,
      electionMs: EL,
      peers: this.peers(slot),
      persist: async (term, votedFor) => {
        this.note({ kind: 'persist-start', slot, term, votedFor })
        const ms = this.o.persistMs?.(slot) ?? 0
        if (ms > 0) await sleep(ms)
        let l = this.persisted.get(slot)
        if (!l) this.persisted.set(slot, (l = []))
        l.push([term, votedFor])
        this.note({ kind: 'persist-done', slot, term, votedFor })
      },
      canStand: this.o.canStand ? () => this.o.canStand!(slot) : undefined,
    })
    e.on('elected', (term: number) => {
      if (this.o.n >= 3)
        for (const x of this.elected)
          if (x.term === term) this.violations.push(`slots ${x.slot} and ${slot} were both elected in term ${term}`)
      this.elected.push({ slot, term, at: Date.now() })
    })
    e.on('demoted', (term: number, reason: string) => this.demoted.push({ slot, term, reason, at: Date.now() }))
    this.e[slot] = e
    return e
  }

  /** Start every slot (or `which`) from term 0 with no leader seen. */
  start(which: readonly number[] = this.slots, heartbeatTimeoutMs?: number, leaderSeen = false): this {
    for (const s of which) this.create(s, heartbeatTimeoutMs).start(0, -1, leaderSeen)
    return this
  }

  get(slot: number): Election {
    const e = this.e[slot]
    assert.ok(e, `slot ${slot} runs no election`)
    return e
  }

  /** Stop a member and take it off the network (as QuorumMember.stop unserves it). */
  async stop(slot: number): Promise<void> {
    await this.get(slot).stop()
    this.stopped.add(slot)
  }

  /** Cut the links between a and b: both ways, or only a's messages to b. */
  cut(a: number, b: number, oneWay = false): void {
    this.link[a]![b] = false
    if (!oneWay) this.link[b]![a] = false
  }

  /** Cut `slot` off from every other slot: 'both' ways, its 'outbound' messages, or its 'inbound'. */
  isolate(slot: number, how: 'both' | 'outbound' | 'inbound' = 'both'): void {
    for (const s of this.slots) {
      if (s === slot) continue
      if (how !== 'inbound') this.link[slot]![s] = false
      if (how !== 'outbound') this.link[s]![slot] = false
    }
  }

  heal(): void {
    for (const row of this.link) row.fill(true)
  }

  running(): number[] {
    return this.slots.filter((s) => this.e[s] && !this.stopped.has(s))
  }

  leaders(): number[] {
    return this.running().filter((s) => this.e[s]!.role === 'leader')
  }

  /** the one leader that every running member follows in its term, or undefined */
  stableLeader(): number | undefined {
    const ls = this.leaders()
    if (ls.length !== 1) return undefined
    const l = ls[0]!
    const t = this.e[l]!.term
    for (const s of this.running())
      if (s !== l && (this.e[s]!.leaderSlot !== l || this.e[s]!.term !== t || this.e[s]!.role !== 'follower'))
        return undefined
    return l
  }

  dump(): string {
    return this.slots
      .map((s) => {
        const x = this.e[s]
        if (!x) return `  slot ${s}: -`
        return `  slot ${s}: ${x.role} term ${x.term} votedFor ${x.votedFor} leader ${x.leaderSlot}${this.stopped.has(s) ? ' (stopped)' : ''}`
      })
      .join('\n')
  }

  /** Wait for `cond`; fail after `ms` with `what` and the members' state.  Returns the ms waited. */
  async waitFor(cond: () => boolean, ms: number, what: string): Promise<number> {
    const t0 = Date.now()
    while (!cond()) {
      if (Date.now() - t0 > ms) assert.fail(`${what}: not within ${ms} ms\n${this.dump()}`)
      await sleep(3)
    }
    return Date.now() - t0
  }

  async waitStable(ms = 3000): Promise<number> {
    let l: number | undefined
    await this.waitFor(() => (l = this.stableLeader()) !== undefined, ms, 'one leader that every member follows')
    return l!
  }

  /** Nothing happens for `ms`: no one is elected (returns the members' terms meanwhile). */
  async quiet(ms: number, what: string): Promise<void> {
    const n = this.elected.length
    const t0 = Date.now()
    while (Date.now() - t0 < ms) {
      assert.equal(this.leaders().length, 0, `${what}: a leader appeared\n${this.dump()}`)
      await sleep(5)
    }
    assert.equal(this.elected.length, n, `${what}: someone was elected\n${this.dump()}`)
  }

  assertSafe(): void {
    assert.deepEqual(this.violations, [], `safety violated\n${this.dump()}`)
    const terms = this.elected.map((x) => x.term)
    if (this.o.n >= 3) assert.equal(new Set(terms).size, terms.length, `a term elected twice: ${terms.join(',')}`)
  }

  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.sampler)
    await Promise.all(this.slots.map((s) => this.e[s]?.stop()))
  }
}

/** Persists that wait for the test to release them. */
class PersistGate {
  readonly calls: Array<{ term: number; votedFor: number; done: boolean; release: () => void }> = []
  auto = false

  persist = (term: number, votedFor: number): Promise<void> =>
    new Promise<void>((res) => {
      const c = {
        term,
        votedFor,
        done: false,
        release: () => {
          c.done = true
          res()
        },
      }
      this.calls.push(c)
      if (this.auto) c.release()
    })

  releaseAll(): void {
    this.auto = true
    for (const c of this.calls) if (!c.done) c.release()
  }

  async next(i: number): Promise<{ term: number; votedFor: number; release: () => void }> {
    for (let k = 0; k < 500 && this.calls.length <= i; k++) await sleep(2)
    assert.ok(this.calls[i], `persist #${i} was not called`)
    return this.calls[i]
  }
}

const req = (type: number, term: number, from: number): QuorumMsg => ({ type, term, from, granted: false })

describe('quorum election: model', function () {
  this.timeout(60_000)
  const solos: Election[] = []

  afterEach(async () => {
    await Promise.all(clusters.splice(0).map((c) => c.close()))
    await Promise.all(solos.splice(0).map((e) => e.stop()))
  })

  it('3 members elect exactly one leader; the followers learn its slot; term >= 1', async () => {
    const c = new Cluster({ n: 3 }).start()
    const ms = await c.waitFor(() => c.stableLeader() !== undefined, 2000, 'a leader every member follows')
    const l = c.stableLeader()!
    assert.ok(c.get(l).term >= 1)
    // and it lasts: no other election, no demotion, over a few heartbeat timeouts
    const term = c.get(l).term
    const n = c.elected.length
    await sleep(3 * HBT)
    assert.equal(c.stableLeader(), l, c.dump())
    assert.equal(c.get(l).term, term)
    assert.equal(c.elected.length, n)
    assert.deepEqual(
      c.demoted.filter((d) => d.slot === l),
      [],
    )
    assert.ok(c.get(l).counters.heartbeatsSent > 0)
    for (const s of c.slots) if (s !== l) assert.ok(c.get(s).counters.heartbeatsReceived > 0)
    c.assertSafe()
    console.log(`      slot ${l} leads term ${term} after ${ms} ms`)
  })

  it('safety over random failovers: one leader per term; a cut-off leader steps down and the rest elect; healing leaves one leader', async () => {
    const rng = testRng('election failovers')
    const rounds = envInt('SCOUTFS_ELECTION_ROUNDS', 8)
    const c = new Cluster({ n: 3, rng, maxDelayMs: 3, persistMs: () => (rng.bool(0.3) ? 1 + rng.int(5) : 0) }).start()
    let l = await c.waitStable()
    const stepDowns: string[] = []
    const elections: string[] = []
    for (let round = 0; round < rounds; round++) {
      const how = rng.pick(['both', 'outbound', 'inbound', 'follower'] as const)
      const ctx = `round ${round} (seed ${rng.seed}): ${how === 'follower' ? 'a follower' : `leader ${l} cut ${how}`}`
      const old = c.get(l)
      const oldTerm = old.term
      const demotions = c.demoted.length
      if (how === 'follower') {
        // a follower cut off (both ways) changes nothing: PreVote keeps its term down
        const f = rng.pick(c.slots.filter((s) => s !== l))
        const fTerm = c.get(f).term
        c.isolate(f)
        await sleep(HBT + rng.int(3 * HBT))
        assert.equal(old.role, 'leader', `${ctx}: the leader lost its place\n${c.dump()}`)
        assert.equal(old.term, oldTerm, ctx)
        assert.equal(c.get(f).term, fTerm, `${ctx}: the cut-off follower raised its term`)
        c.heal()
        await sleep(2 * HB)
        assert.equal(await c.waitStable(), l, ctx)
        assert.equal(old.term, oldTerm, ctx)
        assert.equal(c.demoted.length, demotions, `${ctx}: someone was demoted`)
        c.assertSafe()
        continue
      }
      const t0 = Date.now()
      c.isolate(l, how)
      // the cut-off leader steps down by itself (or, cut outbound only, on the others' higher term)
      await c.waitFor(() => old.role !== 'leader', HBT + 250, `${ctx}: the cut-off leader steps down`)
      stepDowns.push(`${how} ${Date.now() - t0}`)
      assert.ok(
        c.demoted.some((d) => d.slot === l && d.term >= oldTerm),
        `${ctx}: no 'demoted' from the old leader`,
      )
      // the other two elect a new leader: within a heartbeat timeout and a few election rounds
      // of the cut (cut inbound, the followers still hear the leader until it steps down)
      const others = c.slots.filter((s) => s !== l)
      const limit = (how === 'inbound' ? 2 : 1) * HBT + 8 * ROUND
      await c.waitFor(() => others.some((s) => c.get(s).role === 'leader'), limit, `${ctx}: the others elect`)
      elections.push(`${how} ${Date.now() - t0}`)
      const nl = others.find((s) => c.get(s).role === 'leader')!
      const newTerm = c.get(nl).term
      assert.ok(newTerm > oldTerm, `${ctx}: new term ${newTerm} not above ${oldTerm}`)
      await sleep(rng.int(2 * HBT))
      c.heal()
      // exactly one leader remains, the new one, and the old one follows it
      assert.equal(await c.waitStable(), nl, `${ctx}: after healing`)
      assert.equal(c.get(nl).term, newTerm, `${ctx}: the new leader was deposed on healing`)
      assert.equal(old.leaderSlot, nl)
      c.assertSafe()
      l = nl
    }
    c.assertSafe()
    console.log(
      `      ${rounds} rounds, ${c.elected.length} elections (terms ${c.elected.map((x) => x.term).join(',')}); ` +
        `step-down ${stepDowns.join(', ')} ms; new leader ${elections.join(', ')} ms after the cut`,
    )
  })

  it('a minority never elects: three members all cut off from each other, or one of three alone', async () => {
    const c = new Cluster({ n: 3 })
    for (const a of c.slots) for (const b of c.slots) if (a !== b) c.cut(a, b)
    c.start()
    await c.quiet(5 * HBT, 'all cut off')
    // PreVote: nobody even raised its term
    for (const s of c.slots) assert.equal(c.get(s).term, 0, c.dump())
    assert.ok(c.get(0).counters.elections === 0)

    const alone = new Cluster({ n: 3 }).start([1])
    await alone.quiet(5 * HBT, 'one of three alone')
    assert.equal(alone.get(1).term, 0)
    assert.equal(alone.get(1).majority, 2)
  })

  it('a leader cut off from both others steps down and nobody replaces it', async () => {
    const c = new Cluster({ n: 3 }).start()
    const l = await c.waitStable()
    for (const a of c.slots) for (const b of c.slots) if (a !== b) c.cut(a, b)
    await c.waitFor(() => c.get(l).role !== 'leader', HBT + 250, 'the leader steps down')
    await c.quiet(4 * HBT, 'everyone cut off')
    c.heal()
    await c.waitStable(HBT * 3 + 8 * ROUND)
    c.assertSafe()
  })

  for (const how of ['both', 'inbound'] as const) {
    it(`PreVote: a follower cut off (${how === 'both' ? 'both ways' : 'hearing nothing, still sending'}) and healed does not depose a healthy leader`, async () => {
      const c = new Cluster({ n: 3 }).start()
      const l = await c.waitStable()
      const f = c.slots.find((s) => s !== l)!
      const term = c.get(l).term
      const demotions = c.demoted.length
      c.isolate(f, how)
      await sleep(4 * HBT)
      // it stood (its PreVotes failed) without raising its term
      assert.equal(c.get(f).term, term, c.dump())
      assert.equal(c.get(f).role, 'follower')
      assert.equal(c.get(l).role, 'leader')
      c.heal()
      await sleep(3 * HBT)
      assert.equal(c.stableLeader(), l, c.dump())
      assert.equal(c.get(l).term, term, 'the leader term changed on healing')
      assert.equal(c.demoted.length, demotions, "a 'demoted' on healing")
      assert.equal(c.get(f).leaderSlot, l)
      c.assertSafe()
    })
  }

  it('a vote is persisted before the reply that grants it; one vote per term (across a restart too)', async () => {
    const gate = new PersistGate()
    const e = new Election({
      slot: 0,
      slots: [0, 1, 2],
      heartbeatTimeoutMs: HBT,
      peers: { send: () => Promise.resolve(undefined) },
      persist: gate.persist,
    })
    let replied = false
    const p = e.receive(req(QuorumMsgType.REQUEST_VOTE, 5, 1)).then((r) => {
      replied = true
      return r
    })
    const adopt = await gate.next(0)
    assert.deepEqual([adopt.term, adopt.votedFor], [5, -1], 'the new term is persisted with no vote')
    adopt.release()
    const vote = await gate.next(1)
    assert.deepEqual([vote.term, vote.votedFor], [5, 1], 'the vote is persisted')
    await sleep(30)
    assert.equal(replied, false, 'the vote was granted before it was persisted')
    vote.release()
    const r = await p
    assert.deepEqual([r.granted, r.term, r.from], [true, 5, 0])
    assert.equal(e.votedFor, 1)
    gate.releaseAll()

    // one vote per term: another candidate of term 5 is refused; the same one again is not
    assert.equal((await e.receive(req(QuorumMsgType.REQUEST_VOTE, 5, 2))).granted, false)
    assert.equal((await e.receive(req(QuorumMsgType.REQUEST_VOTE, 5, 1))).granted, true)
    // a stale term is refused, a newer one granted
    assert.equal((await e.receive(req(QuorumMsgType.REQUEST_VOTE, 4, 2))).granted, false)
    assert.equal((await e.receive(req(QuorumMsgType.REQUEST_VOTE, 6, 2))).granted, true)
    assert.deepEqual(
      gate.calls.map((c) => [c.term, c.votedFor]),
      [
        [5, -1],
        [5, 1],
        [5, 1],
        [6, -1],
        [6, 2],
      ],
    )

    // two candidates of one term at once, with slow persists: exactly one gets the vote
    const slow = new PersistGate()
    const e2 = new Election({
      slot: 0,
      slots: [0, 1, 2],
      heartbeatTimeoutMs: HBT,
      peers: { send: () => Promise.resolve(undefined) },
      persist: (t, v) => slow.persist(t, v).then(() => sleep(5)),
    })
    slow.auto = true
    const both = await Promise.all([
      e2.receive(req(QuorumMsgType.REQUEST_VOTE, 7, 1)),
      e2.receive(req(QuorumMsgType.REQUEST_VOTE, 7, 2)),
    ])
    assert.equal(both.filter((x) => x.granted).length, 1, JSON.stringify(both))
    const winner = both[0]!.granted ? 1 : 2
    assert.equal(e2.votedFor, winner)

    // a member restarted from its persisted term and vote does not vote again in that term
    const e3 = new Election({
      slot: 0,
      slots: [0, 1, 2],
      heartbeatTimeoutMs: HBT,
      peers: { send: () => Promise.resolve(undefined) },
      persist: () => Promise.resolve(),
      canStand: () => false,
    })
    solos.push(e3)
    e3.start(7, winner, false)
    assert.equal((await e3.receive(req(QuorumMsgType.REQUEST_VOTE, 7, 3 - winner))).granted, false)
    assert.equal((await e3.receive(req(QuorumMsgType.REQUEST_VOTE, 7, winner))).granted, true)

    // a PreVote changes nothing and persists nothing
    const before = gate.calls.length
    const pv = await e.receive(req(QuorumMsgType.PRE_VOTE, 20, 1))
    assert.equal(pv.granted, true)
    assert.equal(e.term, 6)
    assert.equal(gate.calls.length, before)
  })

  it('across elections with slow persists, every granted vote and every candidacy was persisted before it was sent', async () => {
    const rng = testRng('election persist order')
    const c = new Cluster({ n: 3, rng, maxDelayMs: 3, persistMs: () => 3 + rng.int(12) }).start()
    let l = await c.waitStable()
    for (let i = 0; i < 3; i++) {
      c.isolate(l)
      await c.waitFor(() => c.slots.some((s) => s !== l && c.get(s).role === 'leader'), 2 * HBT + 8 * ROUND, 'failover')
      c.heal()
      l = await c.waitStable()
    }
    c.assertSafe()
    const done = (slot: number, term: number, votedFor: number, before: number): boolean =>
      c.trace.some(
        (x) =>
          x.kind === 'persist-done' && x.slot === slot && x.term === term && x.votedFor === votedFor && x.seq < before,
      )
    let grants = 0
    let candidacies = 0
    const votes = new Map<string, Set<number>>()
    for (const x of c.trace) {
      if (x.kind === 'reply' && x.m!.type === QuorumMsgType.REQUEST_VOTE && x.reply!.granted) {
        grants++
        assert.ok(
          done(x.slot, x.m!.term, x.m!.from, x.seq),
          `slot ${x.slot} granted slot ${x.m!.from} its vote in term ${x.m!.term} before persisting it`,
        )
        const k = `${x.slot}/${x.m!.term}`
        if (!votes.has(k)) votes.set(k, new Set())
        votes.get(k)!.add(x.m!.from)
      }
      if (x.kind === 'send' && x.m!.type === QuorumMsgType.REQUEST_VOTE) {
        candidacies++
        assert.ok(
          done(x.slot, x.m!.term, x.slot, x.seq),
          `slot ${x.slot} asked for votes in term ${x.m!.term} before persisting its own`,
        )
      }
    }
    for (const [k, v] of votes) assert.equal(v.size, 1, `member/term ${k} granted votes to ${[...v].join(',')}`)
    // the persisted votes too: one candidate per member and term
    for (const [slot, l2] of c.persisted) {
      const per = new Map<number, Set<number>>()
      for (const [t, v] of l2) if (v >= 0) (per.get(t) ?? per.set(t, new Set()).get(t)!).add(v)
      for (const [t, v] of per)
        assert.equal(v.size, 1, `slot ${slot} persisted votes for ${[...v].join(',')} in term ${t}`)
    }
    assert.ok(
      grants >= 4 && candidacies >= 8,
      `only ${grants} grants and ${candidacies} vote requests: the check saw little`,
    )
  })

  it('RESIGNATION: leader.stop() makes another member lead well before the heartbeat timeout', async () => {
    const hbt = 5000
    const c = new Cluster({ n: 3, heartbeatTimeoutMs: hbt }).start()
    const l = await c.waitStable()
    const t0 = Date.now()
    await c.stop(l)
    assert.equal(c.get(l).role, 'follower')
    const ms = await c.waitFor(() => c.stableLeader() !== undefined, 1000, 'a new leader after the resignation')
    assert.notEqual(c.stableLeader(), l)
    assert.ok(
      c.running().every((s) => c.get(s).counters.resignationsReceived === 1),
      'every member got the resignation',
    )
    c.assertSafe()
    console.log(
      `      new leader ${Date.now() - t0} ms after stop() (${ms} ms after it returned), heartbeat timeout ${hbt} ms`,
    )
  })

  it('n = 1: the one member elects itself at once and stays leader', async () => {
    const c = new Cluster({ n: 1 }).start()
    assert.equal(c.get(0).majority, 1)
    await c.waitFor(() => c.get(0).role === 'leader', 2 * ROUND + 100, 'elects itself')
    await sleep(2 * HBT)
    assert.equal(c.get(0).role, 'leader')
    assert.equal(c.elected.length, 1)
    assert.equal(c.demoted.length, 0)
  })

  it("n = 2: the majority is 1 (the original's rule): each member cut off elects itself; healed, one leader remains", async () => {
    const c = new Cluster({ n: 2 })
    c.cut(0, 1)
    c.start()
    assert.equal(c.get(0).majority, 1)
    assert.equal(c.get(1).majority, 1)
    await c.waitFor(() => c.get(0).role === 'leader' && c.get(1).role === 'leader', 2000, 'both elect themselves')
    // each keeps leading alone: check-quorum counts itself, a majority of 1
    await sleep(2 * HBT)
    assert.deepEqual(c.leaders(), [0, 1])
    c.heal()
    const l = await c.waitStable()
    await sleep(HBT)
    assert.equal(c.stableLeader(), l, c.dump())
    // and two connected members elect one
    const d = new Cluster({ n: 2 }).start()
    await d.waitStable()
  })

  it('canStand() false keeps a member from standing', async () => {
    const allowed = [false, false, false]
    const c = new Cluster({ n: 3, canStand: (s) => allowed[s]! }).start()
    await c.quiet(3 * HBT, 'nobody may stand')
    for (const s of c.slots) assert.equal(c.get(s).counters.elections, 0)
    allowed[2] = true
    assert.equal(await c.waitStable(), 2)
    // cut off, it steps down, and nobody else may stand to replace it
    c.isolate(2)
    await c.waitFor(() => c.get(2).role !== 'leader', HBT + 250, 'the leader steps down')
    allowed[2] = false
    await c.quiet(3 * HBT, 'the others may not stand')
    assert.equal(c.get(0).counters.elections + c.get(1).counters.elections, 0)
  })

  it('a shorter heartbeat timeout set at run time takes effect: members that waited for a leader named in the blocks', async () => {
    // started as if the quorum blocks named a live leader: each waits a heartbeat timeout (60 s)
    const c = new Cluster({ n: 3 }).start(undefined, 60_000, true)
    await c.quiet(500, 'waiting for the leader the blocks name')
    for (const s of c.slots) c.get(s).heartbeatTimeoutMs = HBT
    await c.waitFor(() => c.stableLeader() !== undefined, HBT + 8 * ROUND, 'elect under the shorter timeout')
    c.assertSafe()
  })

  it('a shorter heartbeat timeout set at run time takes effect: a leader cut off', async () => {
    const c = new Cluster({ n: 3 }).start(undefined, 60_000)
    const l = await c.waitStable()
    c.isolate(l)
    await sleep(3 * HBT)
    assert.equal(c.get(l).role, 'leader', 'stepped down under a 60 s timeout')
    assert.ok(c.slots.every((s) => s === l || c.get(s).role !== 'leader'))
    for (const s of c.slots) c.get(s).heartbeatTimeoutMs = HBT
    await c.waitFor(() => c.get(l).role !== 'leader', 250, 'the cut-off leader steps down under the shorter timeout')
    await c.waitFor(
      () => c.slots.some((s) => s !== l && c.get(s).role === 'leader'),
      HBT + 8 * ROUND,
      'the others elect under the shorter timeout',
    )
    c.assertSafe()
  })

  it('a longer heartbeat timeout set at run time takes effect', async () => {
    const c = new Cluster({ n: 3 }).start()
    const l = await c.waitStable()
    for (const s of c.slots) c.get(s).heartbeatTimeoutMs = 2000
    c.isolate(l)
    await sleep(4 * HBT)
    assert.equal(c.get(l).role, 'leader', 'stepped down under the old timeout')
    assert.ok(
      c.slots.every((s) => s === l || c.get(s).role !== 'leader'),
      'elected under the old timeout',
    )
    await c.waitFor(() => c.get(l).role !== 'leader', 2000, 'the cut-off leader steps down')
    await c.waitFor(() => c.slots.some((s) => s !== l && c.get(s).role === 'leader'), 2000, 'the others elect')
    c.assertSafe()
  })

  it('stop() while standing: the member is not elected after it stopped', async () => {
    const held: Array<() => void> = []
    const peers: ElectionPeers = {
      send: async (slot, m) => {
        if (m.type === QuorumMsgType.REQUEST_VOTE) await new Promise<void>((r) => held.push(r))
        // the voters are at the term before the one asked for
        return {
          term: m.type === QuorumMsgType.PRE_VOTE ? m.term - 1 : m.term,
          from: slot,
          type: m.type,
          granted: true,
        }
      },
    }
    const e = new Election({
      slot: 0,
      slots: [0, 1, 2],
      heartbeatTimeoutMs: HBT,
      heartbeatMs: HB,
      electionMs: EL,
      peers,
      persist: () => Promise.resolve(),
    })
    solos.push(e)
    const elected: number[] = []
    e.on('elected', (t: number) => elected.push(t))
    e.start(0, -1, false)
    for (let i = 0; i < 200 && held.length < 2; i++) await sleep(5)
    assert.equal(held.length, 2, 'it never asked for votes')
    assert.equal(e.role, 'candidate')
    await e.stop()
    for (const r of held) r()
    await sleep(30)
    assert.deepEqual(elected, [], 'elected after stop()')
    assert.equal(e.role, 'follower')
  })
})
