/*
 * Cluster locks: a LockServer and three LockClients joined by an in-process loopback whose
 * links deliver in order after random delays (seeded; the seed is printed).  A model checks,
 * on every delivered message and every admitted use:
 *  - no two mounts hold conflicting modes (by a compatibility table written out here, not the
 *    one under test), neither as granted modes nor as users;
 *  - no mount holds more than the server believes it holds;
 *  - an invalidation is answered only after a hook that lowered the lock to its target has
 *    completed, and the hook saw wrote=true iff a write use ended since the last hook;
 *  - write_seq only grows, per lock across mounts and across the server.
 * Storms of thousands of random lock/unlock operations (with duplicated messages, failing
 * hooks and idle releases) must all finish: no deadlock, no starvation.  Directed tests cover
 * downgrade, upgrade, write_seq, removal, recovery, roots refresh, idle release, ordering.
 * A broken compatibility rule injected into the server must be caught.
 *
 * Replay a failure with SCOUTFS_TEST_SEED=<seed>; SCOUTFS_LOCK_STORM_ITERS=<n> lengthens the
 * storms (default 400 per task); LOCK_TRACE=1 prints the last 600 messages and hooks at the
 * first violation.
 */
import assert from 'node:assert/strict'
import { FsError, isFsError } from '../../node-agent/src/util/errors.js'
import { KeyType, Zone, makeKey } from '../../node-agent/src/storage/format.js'
import { RENAME_LOCK_RANGE, lockRange } from '../../node-agent/src/protocol/lock-ranges.js'
import {
  LOCK_DEADLOCK_ERRNO,
  LockClient,
  type InvalidateInfo,
  type LockHandle,
} from '../../node-agent/src/lock/lock-client.js'
import {
  LockMode,
  LockOrderClass,
  invalidationDropsCache,
  lockId,
  lockModeName,
  lockModesCompatible,
  sortLockRequests,
  type LockClientMsg,
  type LockRequestMsg,
  type LockCompatFn,
  type LockRange,
  type LockServerMsg,
  type OrderedLockRequest,
} from '../../node-agent/src/protocol/lock-modes.js'
import { LockServer } from '../../node-agent/src/lock/lock-server.js'
import { Rng, envInt, testRng } from '../helpers/rng.js'

const { NULL, READ, WRITE, WRITE_ONLY } = LockMode
type Mode = LockMode

/* ---- the model's own rules (deliberately not imported) ------------------------------------ */

/** two different mounts may hold these modes at once */
function crossOk(a: Mode, b: Mode): boolean {
  return a === NULL || b === NULL || (a === b && (a === READ || a === WRITE_ONLY))
}
/** a mount holding `held` may use `need` */
function covers(held: Mode, need: Mode): boolean {
  return need === NULL || held === need || (held === WRITE && need === READ)
}

const immediate = (): Promise<void> => new Promise((r) => setImmediate(r))

/* ---- the loopback ----------------------------------------------------------------------- */

/** One direction of one connection: in order, each message after 0..maxHops event-loop turns. */
class Link<T> {
  private q: T[] = []
  private running = false
  cut = false
  constructor(
    private readonly rng: Rng,
    private readonly maxHops: number,
    private readonly deliver: (m: T) => void,
    private readonly onError: (e: unknown) => void,
  ) {}
  get busy(): boolean {
    return this.running || this.q.length > 0
  }
  push(m: T): void {
    if (this.cut) return
    this.q.push(m)
    if (!this.running) void this.pump()
  }
  private async pump(): Promise<void> {
    this.running = true
    while (this.q.length > 0 && !this.cut) {
      const hops = this.rng.int(this.maxHops + 1)
      for (let i = 0; i < hops; i++) await immediate()
      if (this.cut) break
      const m = this.q.shift()!
      try {
        this.deliver(m)
      } catch (e) {
        this.onError(e)
      }
    }
    this.running = false
  }
}

interface HarnessOpts {
  clients?: number
  maxHops?: number
  /** probability that a client message is sent twice */
  dupProb?: number
  /** probability that an invalidation hook fails once */
  hookFailProb?: number
  hookMaxHops?: number
  lockIdleCount?: number
  compatible?: LockCompatFn
  /** record violations instead of throwing them */
  collect?: boolean
  rootsVersion?: () => number
}

interface HookCall {
  rid: number
  id: string
  oldMode: Mode
  newMode: Mode
  info: InvalidateInfo
  done: number
}

const live: Harness[] = []

class Harness {
  clock = 0
  seq = 100
  server!: LockServer
  readonly clients: LockClient[] = []
  private up = new Map<number, Link<LockClientMsg>>()
  private down = new Map<number, Link<LockServerMsg>>()
  readonly violations: string[] = []
  readonly errors: unknown[] = []
  readonly hooks: HookCall[] = []
  readonly events: string[] = []
  /** rid:invId -> when the invalidation arrived and what it asked */
  private invArrived = new Map<string, { clock: number; target: Mode; before: Mode }>()
  /** rid:lock -> the last completed hook: when it started, to which mode */
  private lastHook = new Map<string, { start: number; done: number; mode: Mode }>()
  /** rid:lock -> when a use of each mode last ended */
  private lastEnd = new Map<string, number[]>()
  /** rid:lock -> a write use ended since the last hook */
  private wroteSince = new Map<string, boolean>()
  /** lock -> rid -> users per mode */
  private users = new Map<string, Map<number, number[]>>()
  private lastWriter = new Map<string, { rid: number; seq: number }>()
  private lastServerWriteSeq = 0
  /** rid:lock -> the invalidation the server waits for */
  private pendingInv = new Map<string, number>()
  /** every lock id ever used, with its start key */
  readonly starts = new Map<string, Buffer>()
  hookGate: ((rid: number, range: LockRange) => Promise<void>) | undefined
  refreshes: Array<{ rid: number; version: number }> = []

  constructor(
    readonly rng: Rng,
    readonly o: HarnessOpts = {},
  ) {
    live.push(this)
    this.server = this.newServer(false)
    const n = o.clients ?? 3
    for (let i = 0; i < n; i++) this.addClient(i + 1)
  }

  newServer(recovering: boolean): LockServer {
    this.pendingInv.clear()
    return new LockServer({
      send: (rid, msg) => this.serverSend(rid, msg),
      nextSeq: () => ++this.seq,
      rootsVersion: this.o.rootsVersion ?? (() => 1),
      recovering,
      compatible: this.o.compatible,
    })
  }

  private addClient(rid: number): void {
    const c = new LockClient({
      rid,
      send: (msg) => this.clientSend(rid, msg),
      onInvalidate: (range, oldMode, newMode, info) => this.hook(rid, range, oldMode, newMode, info),
      refreshRoots: async (version) => {
        this.refreshes.push({ rid, version })
        await immediate()
      },
      lockIdleCount: this.o.lockIdleCount ?? 10_000,
      hookRetryMs: 1,
    })
    this.clients.push(c)
    this.connect(c)
  }

  /** (Re)connect a client to the current server with fresh links. */
  connect(c: LockClient): void {
    const hops = this.o.maxHops ?? 3
    this.up.set(
      c.rid,
      new Link<LockClientMsg>(
        this.rng.fork(),
        hops,
        (m) => this.deliverUp(c.rid, m),
        (e) => this.errors.push(e),
      ),
    )
    this.down.set(
      c.rid,
      new Link<LockServerMsg>(
        this.rng.fork(),
        hops,
        (m) => this.deliverDown(c, m),
        (e) => this.errors.push(e),
      ),
    )
  }

  /** Lose the connection: whatever is in flight is dropped. */
  disconnect(rid: number): void {
    this.up.get(rid)!.cut = true
    this.down.get(rid)!.cut = true
  }

  client(rid: number): LockClient {
    return this.clients.find((c) => c.rid === rid)!
  }

  get busy(): boolean {
    for (const l of this.up.values()) if (l.busy && !l.cut) return true
    for (const l of this.down.values()) if (l.busy && !l.cut) return true
    return false
  }

  /** Wait until no message is in flight for a few turns in a row. */
  async settle(): Promise<void> {
    let quiet = 0
    for (let i = 0; i < 100_000 && quiet < 20; i++) {
      await immediate()
      quiet = this.busy ? 0 : quiet + 1
    }
    this.throwIfBad()
  }

  trace: string[] = []
  /** Record a violation; throw it too unless collecting (a hook records only: a throw would be retried). */
  violation(msg: string, throwIt = true): void {
    if (process.env.LOCK_TRACE && this.violations.length === 0) console.log(this.trace.slice(-600).join('\n'))
    this.violations.push(msg)
    if (throwIt && !this.o.collect) throw new Error(`model violation: ${msg}`)
  }

  throwIfBad(): void {
    if (this.errors.length) throw this.errors[0]
    if (this.violations.length && !this.o.collect) throw new Error(`model violation: ${this.violations[0]}`)
  }

  /* ---- message paths ------------------------------------------------------------------- */

  private serverSend(rid: number, msg: LockServerMsg): void {
    if (msg.kind === 'grant' && (msg.mode === WRITE || msg.mode === WRITE_ONLY)) {
      if (!(msg.writeSeq > this.lastServerWriteSeq))
        this.violation(`write grant seq ${msg.writeSeq} not above the previous ${this.lastServerWriteSeq}`)
      this.lastServerWriteSeq = Math.max(this.lastServerWriteSeq, msg.writeSeq)
    }
    if (msg.kind === 'invalidate') {
      const key = `${rid}:${lockId(msg.start)}`
      if (this.pendingInv.has(key))
        this.violation(`server sent a second invalidation to ${rid} before the first was answered`, false)
      this.pendingInv.set(key, msg.invId)
    }
    this.events.push(`server->${rid} ${msg.kind} ${lockModeName(msg.mode)}`)
    this.down.get(rid)?.push(msg)
  }

  private clientSend(rid: number, msg: LockClientMsg): void {
    const id = lockId(msg.start)
    this.starts.set(id, msg.start)
    if (msg.kind === 'request' && msg.mode === NULL) {
      // an idle release: the mount dropped the lock (hook) before telling the server
      const c = this.client(rid)
      if (c.heldMode(msg.start) !== NULL)
        this.violation(`rid ${rid} asks for NULL while holding ${lockModeName(c.heldMode(msg.start))}`)
      this.checkHookedDown(rid, id, NULL, 'released its lock')
    }
    if (msg.kind === 'invalidated') {
      this.events.push(`${rid} reply ${lockModeName(msg.mode)}`)
      const arr = this.invArrived.get(`${rid}:${msg.invId}`)
      if (arr) {
        this.invArrived.delete(`${rid}:${msg.invId}`)
        if (!covers(arr.target, msg.mode))
          this.violation(
            `rid ${rid} answered an invalidation to ${lockModeName(arr.target)} with ${lockModeName(msg.mode)}`,
          )
        if (!covers(arr.target, arr.before)) {
          this.checkHookedDown(
            rid,
            id,
            arr.target,
            `answered an invalidation ${lockModeName(arr.before)}->${lockModeName(arr.target)}`,
          )
        }
      }
    }
    if (process.env.LOCK_TRACE)
      this.trace.push(
        `${rid}->S ${msg.start[0]}/${msg.start.readUInt32BE(5)} ${JSON.stringify({ ...msg, start: undefined, end: undefined })}`,
      )
    const link = this.up.get(rid)
    link?.push(msg)
    if (this.o.dupProb && this.rng.bool(this.o.dupProb)) link?.push({ ...msg })
  }

  /**
   * Some hook must have taken the lock down to `target`, and no use `target` does not cover
   * may have been active since that hook started.
   */
  private checkHookedDown(rid: number, id: string, target: Mode, what: string): void {
    const h = this.lastHook.get(`${rid}:${id}`)
    const ends = this.lastEnd.get(`${rid}:${id}`) ?? [0, 0, 0, 0]
    const active = this.users.get(id)?.get(rid) ?? [0, 0, 0, 0]
    const late = ([READ, WRITE, WRITE_ONLY] as Mode[]).filter(
      (m) => !covers(target, m) && (active[m]! > 0 || (h && ends[m]! > h.start)),
    )
    if (!h || !covers(target, h.mode) || late.length > 0)
      this.violation(
        `rid ${rid} ${what} without a hook after its last use` +
          ` (last hook ${h ? `${h.start}..${h.done} to ${lockModeName(h.mode)}` : 'none'}, late uses ${late.map(lockModeName).join(',')})`,
      )
  }

  private deliverUp(rid: number, msg: LockClientMsg): void {
    if (msg.kind === 'invalidated' && this.pendingInv.get(`${rid}:${lockId(msg.start)}`) === msg.invId)
      this.pendingInv.delete(`${rid}:${lockId(msg.start)}`)
    if (process.env.LOCK_TRACE)
      this.trace.push(
        `S<-${rid} ${msg.start[0]}/${msg.start.readUInt32BE(5)} ${JSON.stringify({ ...msg, start: undefined, end: undefined })}`,
      )
    this.server.receive(rid, msg)
    this.check(lockId(msg.start))
  }

  private deliverDown(c: LockClient, msg: LockServerMsg): void {
    const id = lockId(msg.start)
    this.starts.set(id, msg.start)
    if (msg.kind === 'invalidate') {
      this.invArrived.set(`${c.rid}:${msg.invId}`, {
        clock: ++this.clock,
        target: msg.mode,
        before: c.heldMode(msg.start),
      })
    }
    if (process.env.LOCK_TRACE)
      this.trace.push(
        `${c.rid}<-S ${msg.start[0]}/${msg.start.readUInt32BE(5)} ${JSON.stringify({ ...msg, start: undefined, end: undefined })} (held ${c.heldMode(msg.start)})`,
      )
    c.receive(msg)
    this.check(id)
  }

  /** The model: mounts pairwise compatible, never above the server's view; the server's view pairwise compatible. */
  check(id: string): void {
    const start = this.starts.get(id)
    if (!start) return
    const cs = this.clients
    for (let i = 0; i < cs.length; i++) {
      const mi = cs[i]!.heldMode(start)
      const sv = this.server.grantedMode(start, cs[i]!.rid)
      if (!covers(sv, mi) && !this.server.isRecovering)
        this.violation(
          `rid ${cs[i]!.rid} holds ${lockModeName(mi)} of ${start[0]}/${start.readUInt32BE(5)} where the server believes ${lockModeName(sv)}`,
        )
      for (let j = i + 1; j < cs.length; j++) {
        const mj = cs[j]!.heldMode(start)
        if (!crossOk(mi, mj))
          this.violation(
            `rids ${cs[i]!.rid} and ${cs[j]!.rid} hold ${lockModeName(mi)} and ${lockModeName(mj)} at once`,
          )
        const si = this.server.grantedMode(start, cs[i]!.rid)
        const sj = this.server.grantedMode(start, cs[j]!.rid)
        if (!crossOk(si, sj))
          this.violation(`server granted ${lockModeName(si)} to ${cs[i]!.rid} and ${lockModeName(sj)} to ${cs[j]!.rid}`)
      }
    }
  }

  /* ---- the mount's side ---------------------------------------------------------------- */

  private async hook(rid: number, range: LockRange, oldMode: Mode, newMode: Mode, info: InvalidateInfo): Promise<void> {
    const id = lockId(range[0])
    const key = `${rid}:${id}`
    const wrote = this.wroteSince.get(key) ?? false
    if (info.wrote !== wrote)
      this.violation(
        `rid ${rid} hook ${lockModeName(oldMode)}->${lockModeName(newMode)} saw wrote=${info.wrote}, model says ${wrote}`,
        false,
      )
    if (covers(newMode, oldMode))
      this.violation(`hook called for a no-op ${lockModeName(oldMode)}->${lockModeName(newMode)}`, false)
    const active = this.users.get(id)?.get(rid) ?? [0, 0, 0, 0]
    for (const m of [READ, WRITE, WRITE_ONLY] as Mode[])
      if (active[m]! > 0 && !covers(newMode, m))
        this.violation(
          `rid ${rid} hook ${lockModeName(oldMode)}->${lockModeName(newMode)} runs while a ${lockModeName(m)} use is active`,
          false,
        )
    if (process.env.LOCK_TRACE)
      this.trace.push(
        `${rid} hookstart ${range[0][0]}/${range[0].readUInt32BE(5)} ${oldMode}->${newMode} ${JSON.stringify(info)}`,
      )
    const start = ++this.clock
    if (this.hookGate) await this.hookGate(rid, range)
    const hops = this.rng.int((this.o.hookMaxHops ?? 3) + 1)
    for (let i = 0; i < hops; i++) await immediate()
    if (this.o.hookFailProb && this.rng.bool(this.o.hookFailProb)) throw new FsError('EIO', 'injected commit failure')
    this.wroteSince.set(key, false)
    this.lastHook.set(key, { start, done: ++this.clock, mode: newMode })
    this.hooks.push({ rid, id, oldMode, newMode, info, done: this.clock })
    this.events.push(`${rid} hook ${lockModeName(oldMode)}->${lockModeName(newMode)}`)
    if (process.env.LOCK_TRACE)
      this.trace.push(
        `${rid} hook ${range[0][0]}/${range[0].readUInt32BE(5)} ${oldMode}->${newMode} ${JSON.stringify(info)}`,
      )
  }

  /** lock() plus the model's checks on the use it admits */
  async acquire(c: LockClient, range: LockRange, mode: Mode): Promise<LockHandle> {
    const h = await c.lock(range, mode)
    const id = lockId(range[0])
    this.starts.set(id, range[0])
    const held = c.heldMode(range[0])
    if (!covers(held, mode)) this.violation(`rid ${c.rid} admitted ${lockModeName(mode)} under ${lockModeName(held)}`)
    let per = this.users.get(id)
    if (!per) this.users.set(id, (per = new Map()))
    for (const [rid, counts] of per) {
      if (rid === c.rid) continue
      for (const m of [READ, WRITE, WRITE_ONLY] as Mode[])
        if (counts[m]! > 0 && !crossOk(m, mode))
          this.violation(`rid ${c.rid} uses ${lockModeName(mode)} while rid ${rid} uses ${lockModeName(m)}`)
    }
    let mine = per.get(c.rid)
    if (!mine) per.set(c.rid, (mine = [0, 0, 0, 0]))
    mine[mode]!++
    if (mode === WRITE) {
      if (!(h.writeSeq > 0)) this.violation(`WRITE use without a write_seq`)
      const last = this.lastWriter.get(id)
      if (last && (last.rid === c.rid ? h.writeSeq < last.seq : h.writeSeq <= last.seq))
        this.violation(`WRITE by ${c.rid} has write_seq ${h.writeSeq}, after ${last.rid}'s ${last.seq}`)
      this.lastWriter.set(id, { rid: c.rid, seq: h.writeSeq })
    } else if (mode === WRITE_ONLY && !(h.writeSeq > 0)) this.violation(`WRITE_ONLY use without a write_seq`)
    return h
  }

  release(c: LockClient, h: LockHandle, wrote = true): void {
    const id = lockId(h.range[0])
    this.users.get(id)!.get(c.rid)![h.mode]!--
    let ends = this.lastEnd.get(`${c.rid}:${id}`)
    if (!ends) this.lastEnd.set(`${c.rid}:${id}`, (ends = [0, 0, 0, 0]))
    ends[h.mode] = ++this.clock
    if ((h.mode === WRITE || h.mode === WRITE_ONLY) && wrote) this.wroteSince.set(`${c.rid}:${id}`, true)
    c.unlock(h, { wrote })
  }

  /**
   * The server dies and a new one takes over: everything in flight is lost, every client
   * reconnects and reports its locks, resends its requests, and after `hops` turns (during
   * which the clients go on) the new server finishes recovery.
   */
  async failover(hops: number): Promise<void> {
    for (const c of this.clients) this.disconnect(c.rid)
    this.server = this.newServer(true)
    for (const c of this.clients) {
      this.connect(c)
      const report = c.recoveryReport()
      if (process.env.LOCK_TRACE)
        this.trace.push(
          `FAILOVER ${c.rid} reports ${report.map((r) => `${r.start[0]}/${r.start.readUInt32BE(5)}:${r.mode}`).join(' ')}`,
        )
      this.server.recover(c.rid, report)
    }
    if (!(this.server.maxRecoveredWriteSeq < this.seq + 1)) this.violation('recovered write_seq above the core counter')
    for (let i = 0; i < hops; i++) await immediate()
    for (const c of this.clients) c.resendRequests()
    for (let i = 0; i < hops; i++) await immediate()
    if (process.env.LOCK_TRACE) this.trace.push(`FINISH RECOVERY`)
    this.server.finishRecovery()
    for (const id of this.starts.keys()) this.check(id)
  }

  /** A mount is gone (fenced): its uses end with it. */
  forgetClient(rid: number): void {
    for (const k of [...this.pendingInv.keys()]) if (k.startsWith(`${rid}:`)) this.pendingInv.delete(k)
    for (const per of this.users.values()) per.delete(rid)
    const i = this.clients.findIndex((c) => c.rid === rid)
    if (i >= 0) this.clients.splice(i, 1)
  }

  dump(): string {
    return [this.server.dump(), ...this.clients.map((c) => c.dump())].filter((s) => s).join('\n')
  }
}

/* ---- the lock set of the storms --------------------------------------------------------- */

interface StormLock extends OrderedLockRequest {
  name: string
}

function stormLocks(): StormLock[] {
  const inode = (ino: number): StormLock => ({
    name: `ino${ino}`,
    cls: LockOrderClass.INODE,
    ino,
    range: lockRange(makeKey(Zone.FS, ino, KeyType.INODE)),
    mode: READ,
  })
  return [
    { name: 'rename', cls: LockOrderClass.RENAME, range: RENAME_LOCK_RANGE, mode: WRITE },
    inode(5),
    inode(1500),
    inode(5000),
    inode(70_000),
    { name: 'orphan', cls: LockOrderClass.WRITE_ONLY, range: lockRange(makeKey(Zone.ORPHAN, 0)), mode: WRITE_ONLY },
    {
      name: 'meta_seq',
      cls: LockOrderClass.INDEX,
      range: lockRange(makeKey(Zone.INODE_INDEX, 0, KeyType.META_SEQ)),
      mode: READ,
    },
    { name: 'xattr_indx', cls: LockOrderClass.INDEX, range: lockRange(makeKey(Zone.XATTR_INDX, 0)), mode: READ },
  ]
}

interface StormResult {
  ops: number
  lockCalls: number
  maxWaitMs: number
  ms: number
}

/**
 * Every client runs `tasks` tasks; each takes 1..3 locks in the sorted order, holds them a
 * random while, and lets go.  Fails if no lock call completes for `stallMs`.
 */
async function storm(
  h: Harness,
  tasks: number,
  iterations: number,
  stallMs = 5000,
  chaos?: (done: () => boolean) => Promise<void>,
): Promise<StormResult> {
  const locks = stormLocks()
  const t0 = Date.now()
  let ops = 0
  let lockCalls = 0
  let maxWaitMs = 0
  let lastProgress = Date.now()
  let stop = false
  const runTask = async (c: LockClient, rng: Rng): Promise<void> => {
    for (let i = 0; i < iterations && !stop; i++) {
      const n = rng.range(1, 3)
      const picked = rng.shuffle([...locks]).slice(0, n)
      const reqs = picked.map((l) => ({ ...l, mode: [READ, WRITE, WRITE_ONLY][rng.weighted([5, 3, 2])] as Mode }))
      const held: LockHandle[] = []
      for (const r of sortLockRequests(reqs)) {
        const w0 = Date.now()
        held.push(await h.acquire(c, r.range, r.mode))
        lockCalls++
        maxWaitMs = Math.max(maxWaitMs, Date.now() - w0)
        lastProgress = Date.now()
      }
      if (rng.bool(0.05)) {
        // while "holding a transaction" a lock call must be refused, not wait
        await assert.rejects(c.lock(rng.pick(locks).range, WRITE, { holdsTrans: true }), (e) =>
          isFsError(e, LOCK_DEADLOCK_ERRNO),
        )
      }
      const hold = rng.int(4)
      for (let k = 0; k < hold; k++) await immediate()
      for (let k = held.length - 1; k >= 0; k--) h.release(c, held[k]!, rng.bool(0.8))
      ops++
      if (rng.bool(0.3)) await immediate()
    }
  }
  let finished = false
  const work = Promise.all(
    h.clients.flatMap((c) => Array.from({ length: tasks }, () => runTask(c, h.rng.fork()))),
  ).then(() => void (finished = true))
  const all = Promise.all([work, chaos?.(() => finished || stop)])
  let timer: NodeJS.Timeout | undefined
  const watchdog = new Promise<never>((_, reject) => {
    timer = setInterval(() => {
      if (h.errors.length) reject(h.errors[0])
      if (!h.o.collect && h.violations.length) reject(new Error(`model violation: ${h.violations[0]}`))
      if (Date.now() - lastProgress > stallMs)
        reject(new Error(`no lock granted for ${stallMs} ms: deadlock or starvation\n${h.dump()}`))
    }, 50)
  })
  try {
    await Promise.race([all, watchdog])
  } finally {
    stop = true
    clearInterval(timer)
  }
  await h.settle()
  return { ops, lockCalls, maxWaitMs, ms: Date.now() - t0 }
}

async function waitFor(h: Harness, cond: () => boolean, what: string, turns = 20_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return
    await immediate()
  }
  throw new Error(`timed out waiting for ${what}\n${h.dump()}`)
}

/** Whether a promise has settled (after a few turns). */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false
  void p.then(
    () => (done = true),
    () => (done = true),
  )
  for (let i = 0; i < 5; i++) await immediate()
  return done
}

const L1 = lockRange(makeKey(Zone.FS, 10, KeyType.INODE))
const L2 = lockRange(makeKey(Zone.FS, 2048, KeyType.INODE))
const L3 = lockRange(makeKey(Zone.FS, 4096, KeyType.INODE))

/* ---- tests -------------------------------------------------------------------------------- */

describe('cluster locks', function () {
  this.timeout(30_000)
  afterEach(function () {
    const bad = live.filter((h) => !h.o.collect && (h.violations.length > 0 || h.errors.length > 0))
    live.length = 0
    if (bad.length) throw new Error(`model violation: ${bad[0]!.violations[0] ?? String(bad[0]!.errors[0])}`)
  })

  describe('modes and ordering', function () {
    it('compatibility is exactly DESIGN §8', function () {
      const modes: Mode[] = [NULL, READ, WRITE, WRITE_ONLY]
      for (const g of modes)
        for (const r of modes) {
          assert.equal(
            lockModesCompatible(g, r, false),
            crossOk(g, r),
            `other mount ${lockModeName(g)} vs ${lockModeName(r)}`,
          )
          const same = crossOk(g, r) || (g === READ && r === WRITE)
          assert.equal(lockModesCompatible(g, r, true), same, `same mount ${lockModeName(g)} -> ${lockModeName(r)}`)
        }
      assert.equal(invalidationDropsCache(WRITE, READ), false)
      assert.equal(invalidationDropsCache(WRITE, NULL), true)
      assert.equal(invalidationDropsCache(WRITE_ONLY, NULL), true)
      assert.equal(invalidationDropsCache(READ, NULL), true)
    })

    it('sorts lock requests: rename, inodes by number, write-only, index by key', function () {
      const ino = (n: number, mode: Mode = WRITE): OrderedLockRequest & { tag: string } => ({
        tag: `ino${n}`,
        cls: LockOrderClass.INODE,
        ino: n,
        range: lockRange(makeKey(Zone.FS, n)),
        mode,
      })
      const idxMeta = {
        tag: 'meta',
        cls: LockOrderClass.INDEX,
        range: lockRange(makeKey(Zone.INODE_INDEX, 0)),
        mode: WRITE_ONLY,
      }
      const idxX = {
        tag: 'xattr',
        cls: LockOrderClass.INDEX,
        range: lockRange(makeKey(Zone.XATTR_INDX, 0)),
        mode: WRITE_ONLY,
      }
      const orphan = {
        tag: 'orphan',
        cls: LockOrderClass.WRITE_ONLY,
        range: lockRange(makeKey(Zone.ORPHAN, 0)),
        mode: WRITE_ONLY,
      }
      const rename = { tag: 'rename', cls: LockOrderClass.RENAME, range: RENAME_LOCK_RANGE, mode: WRITE }
      const out = sortLockRequests([idxX, ino(9000), orphan, ino(3), idxMeta, rename, ino(2000, READ)])
      assert.deepEqual(
        out.map((r) => r.tag),
        ['rename', 'ino3', 'ino2000', 'ino9000', 'orphan', 'meta', 'xattr'],
      )
      // two inodes of one group are one lock, in the stronger mode
      const merged = sortLockRequests([ino(7, READ), ino(8, WRITE), ino(2000, READ)])
      assert.equal(merged.length, 2)
      assert.equal(merged[0]!.mode, WRITE)
      assert.throws(
        () => sortLockRequests([ino(7, READ), ino(8, WRITE_ONLY)]),
        (e) => isFsError(e, 'EINVAL'),
      )
    })
  })

  describe('directed', function () {
    it('serves a held compatible lock locally; WRITE satisfies READ', async function () {
      const h = new Harness(testRng('locks local'))
      const a = h.client(1)
      const w = await h.acquire(a, L1, WRITE)
      const reqs = a.counters.requests
      const r1 = await h.acquire(a, L1, READ)
      const r2 = await h.acquire(a, L1, READ)
      assert.equal(a.counters.requests, reqs, 'no message for uses the grant covers')
      h.release(a, r1)
      h.release(a, r2)
      h.release(a, w)
      const wo = h.acquire(a, L1, WRITE_ONLY) // WRITE does not cover WRITE_ONLY: via NULL
      await wo
      assert.equal(a.counters.requests, reqs + 1)
      assert.ok(h.hooks.some((x) => x.rid === 1 && x.oldMode === WRITE && x.newMode === NULL && x.info.wrote))
      h.release(a, await wo)
      await h.settle()
      assert.throws(
        () => a.unlock(r1),
        (e) => isFsError(e, 'EINVAL'),
      )
    })

    it(`refuses to wait while the caller holds a transaction (${LOCK_DEADLOCK_ERRNO}, EDEADLK)`, async function () {
      const h = new Harness(testRng('locks edeadlk'))
      const a = h.client(1)
      await assert.rejects(a.lock(L1, READ, { holdsTrans: true }), (e: unknown) => {
        assert.ok(isFsError(e, LOCK_DEADLOCK_ERRNO))
        assert.match((e as Error).message, /EDEADLK/)
        return true
      })
      assert.equal(a.counters.requests, 0)
    })

    it('downgrades WRITE to READ when a reader asks, hook first (wrote=true), then the reply', async function () {
      const h = new Harness(testRng('locks downgrade'))
      const [a, b] = [h.client(1), h.client(2)]
      const w = await h.acquire(a, L1, WRITE)
      const rb = h.acquire(b, L1, READ)
      assert.equal(await settled(rb), false, 'the reader waits while the writer uses the lock')
      h.release(a, w)
      h.release(b, await rb)
      await h.settle()
      assert.equal(a.heldMode(L1[0]), READ)
      assert.equal(b.heldMode(L1[0]), READ)
      const hk = h.hooks.filter((x) => x.rid === 1)
      assert.equal(hk.length, 1)
      assert.equal(hk[0]!.oldMode, WRITE)
      assert.equal(hk[0]!.newMode, READ)
      assert.equal(hk[0]!.info.wrote, true)
      assert.equal(hk[0]!.info.release, false)
      const iHook = h.events.indexOf('1 hook WRITE->READ')
      const iReply = h.events.indexOf('1 reply READ')
      assert.ok(iHook >= 0 && iReply > iHook, `hook before reply: ${h.events.join(' | ')}`)
      // the writer still reads locally
      const reqs = a.counters.requests
      h.release(a, await h.acquire(a, L1, READ))
      assert.equal(a.counters.requests, reqs)
    })

    it('upgrades READ to WRITE without going through NULL, invalidating the other readers', async function () {
      const h = new Harness(testRng('locks upgrade'))
      const [a, b] = [h.client(1), h.client(2)]
      const ra = await h.acquire(a, L1, READ)
      h.release(b, await h.acquire(b, L1, READ))
      await h.settle()
      // a still uses READ while it asks for WRITE: the upgrade must not wait for a itself
      const wa = await h.acquire(a, L1, WRITE)
      assert.equal(a.heldMode(L1[0]), WRITE)
      assert.equal(b.heldMode(L1[0]), NULL)
      assert.equal(h.hooks.filter((x) => x.rid === 1).length, 0, 'the upgrading mount is not invalidated')
      const hb = h.hooks.filter((x) => x.rid === 2)
      assert.deepEqual(
        hb.map((x) => [x.oldMode, x.newMode, x.info.wrote]),
        [[READ, NULL, false]],
      )
      assert.ok(!h.events.some((e) => e === 'server->1 invalidate NULL'))
      h.release(a, ra)
      h.release(a, wa)
      await h.settle()
    })

    it('write_seq increases across WRITE grants', async function () {
      const h = new Harness(testRng('locks write_seq'))
      let last = 0
      for (let i = 0; i < 12; i++) {
        const c = h.clients[i % 3]!
        const mode = i % 4 === 3 ? WRITE_ONLY : WRITE
        const hd = await h.acquire(c, L1, mode)
        assert.ok(hd.writeSeq > last, `grant ${i}: ${hd.writeSeq} after ${last}`)
        last = hd.writeSeq
        h.release(c, hd)
        const rd = await h.acquire(h.clients[(i + 1) % 3]!, L1, READ)
        assert.equal(rd.writeSeq, 0)
        h.release(h.clients[(i + 1) % 3]!, rd)
      }
      await h.settle()
    })

    it('duplicate and late invalidation responses are harmless', async function () {
      const h = new Harness(testRng('locks dup responses'))
      const [a, b] = [h.client(1), h.client(2)]
      h.release(a, await h.acquire(a, L1, WRITE))
      await h.settle()
      const replies: LockClientMsg[] = []
      const origReceive = h.server.receive.bind(h.server)
      h.server.receive = (rid, msg) => {
        if (msg.kind === 'invalidated') replies.push(msg)
        origReceive(rid, msg)
      }
      h.release(b, await h.acquire(b, L1, READ))
      await h.settle()
      assert.equal(replies.length, 1)
      // a now holds READ; b READ.  Replay a's reply, then ask for WRITE from b: the old reply
      // must not count as the answer to the new invalidation
      const ignored = h.server.counters.ignoredResponses
      h.server.receive(1, replies[0]!)
      assert.equal(h.server.counters.ignoredResponses, ignored + 1)
      let gate!: () => void
      h.hookGate = (rid) => (rid === 1 ? new Promise<void>((r) => (gate = r)) : Promise.resolve())
      const wb = h.acquire(b, L1, WRITE)
      await waitFor(h, () => gate !== undefined, 'a hook')
      h.server.receive(1, { ...replies[0]!, mode: NULL }) // stale id, even with the right mode
      assert.equal(await settled(wb), false, 'a stale reply does not grant')
      assert.equal(h.server.grantedMode(L1[0], 1), READ)
      h.hookGate = undefined
      gate()
      h.release(b, await wb)
      await h.settle()
      assert.equal(a.heldMode(L1[0]), NULL)
    })

    it('sends an unanswered invalidation again when the client reconnects (one sent while away is lost)', function () {
      const sent: Array<[number, LockServerMsg]> = []
      let connected = new Set([1, 2])
      const ls = new LockServer({
        send: (rid, m) => {
          if (connected.has(rid)) sent.push([rid, m])
        },
        nextSeq: () => 7,
        rootsVersion: () => 1,
      })
      const req = (rid: number, mode: Mode, reqId: number): void =>
        ls.receive(rid, { kind: 'request', start: L1[0], end: L1[1], oldMode: NULL, mode, reqId })
      req(1, WRITE, 1)
      assert.deepEqual(
        sent.map(([r, m]) => [r, m.kind, m.mode]),
        [[1, 'grant', WRITE]],
      )
      connected = new Set([2]) // client 1's stream is down: the invalidation is lost
      req(2, WRITE, 1)
      assert.equal(sent.length, 1)
      assert.equal(ls.resendInvalidations(2), 0, 'nothing is owed by client 2')
      connected = new Set([1, 2])
      assert.equal(ls.resendInvalidations(1), 1)
      const inv = sent[1]!
      assert.equal(inv[0], 1)
      assert.ok(inv[1].kind === 'invalidate' && inv[1].mode === NULL && inv[1].oldMode === WRITE)
      ls.receive(1, { kind: 'invalidated', start: L1[0], end: L1[1], mode: NULL, invId: inv[1].invId })
      assert.deepEqual(
        sent.slice(2).map(([r, m]) => [r, m.kind, m.mode]),
        [[2, 'grant', WRITE]],
      )
      assert.equal(ls.resendInvalidations(1), 0, 'answered: nothing left to resend')
    })

    it('removing a client drops its locks and unblocks the waiters', async function () {
      const h = new Harness(testRng('locks removal'))
      const [a, b, c] = [h.client(1), h.client(2), h.client(3)]
      const stuck = await h.acquire(c, L1, WRITE) // c dies holding it
      const heldL2 = await h.acquire(a, L2, WRITE)
      const cWaitsL2 = c.lock(L2, READ) // c also has a request queued behind a
      const ra = h.acquire(a, L1, READ)
      const wb = h.acquire(b, L1, WRITE)
      for (let i = 0; i < 50; i++) await immediate()
      assert.equal(await settled(ra), false)
      assert.equal(await settled(wb), false)
      assert.equal(h.server.state(L1[0])!.invalidating.length, 1)
      h.disconnect(3)
      c.shutdown()
      await assert.rejects(cWaitsL2, (e) => isFsError(e, 'ENOTCONN'))
      h.forgetClient(3)
      h.server.removeClient(3)
      h.server.removeClient(3) // idempotent
      assert.equal(h.server.grantedMode(L1[0], 3), NULL)
      assert.ok(!h.server.state(L2[0])!.queue.some((q) => q.rid === 3))
      // a and b were queued in either order; each lets go as soon as it has the lock
      await Promise.all([ra.then((x) => h.release(a, x)), wb.then((x) => h.release(b, x))])
      h.release(a, heldL2)
      await h.settle()
      void stuck
    })

    it('recovery rebuilds the lock state on a new server and grants nothing until it finishes', async function () {
      const h = new Harness(testRng('locks recovery'))
      const [a, b, c] = [h.client(1), h.client(2), h.client(3)]
      const wa = await h.acquire(a, L1, WRITE) // a keeps using it across the failover
      h.release(b, await h.acquire(b, L2, READ))
      const rc = h.acquire(c, L1, READ) // waits on a
      await waitFor(h, () => h.server.state(L1[0])?.invalidating.length === 1, 'the invalidation of a')
      await h.settle()
      const oldSeq = wa.writeSeq

      // the server dies: everything in flight is lost
      for (const cl of h.clients) h.disconnect(cl.rid)
      h.seq = 1000 // the new server's core counter (it must exceed every recovered write_seq)
      h.server = h.newServer(true)
      for (const cl of h.clients) {
        h.connect(cl)
        h.server.recover(cl.rid, cl.recoveryReport())
      }
      assert.ok(h.server.maxRecoveredWriteSeq >= oldSeq)
      assert.ok(h.seq > h.server.maxRecoveredWriteSeq)
      assert.equal(h.server.grantedMode(L1[0], 1), WRITE)
      assert.equal(h.server.grantedMode(L2[0], 2), READ)
      for (const cl of h.clients) cl.resendRequests()
      const rb = h.acquire(b, L3, READ) // nobody holds L3, still nothing is granted yet
      await h.settle()
      assert.equal(await settled(rb), false, 'no grant during recovery')
      assert.equal(await settled(rc), false)
      assert.equal(h.server.state(L1[0])!.queue.length, 1, 'the resent request is queued')

      h.server.finishRecovery()
      h.release(b, await rb)
      await h.settle()
      // the recovered WRITE of a still blocks c until a lets go
      assert.equal(await settled(rc), false)
      h.release(a, wa)
      const hc = await rc
      assert.equal(c.heldMode(L1[0]), READ)
      h.release(c, hc)
      // write grants of the new server continue above the recovered seqs
      const w2 = await h.acquire(b, L1, WRITE)
      assert.ok(w2.writeSeq > oldSeq)
      h.release(b, w2)
      await h.settle()
    })

    it('a request for less than the mount holds never lowers the server view (failover mid-invalidation)', async function () {
      const h = new Harness(testRng('locks no lowering grant'))
      const [a, c] = [h.client(1), h.client(3)]
      const wa = await h.acquire(a, L1, WRITE)
      const wc = h.acquire(c, L1, WRITE) // the server invalidates a to NULL; a waits for wa
      await waitFor(h, () => h.server.state(L1[0])?.invalidating.length === 1, 'the invalidation of a')
      await h.settle()
      const ra = h.acquire(a, L1, READ) // held back by the queued invalidation: a asks for READ
      await h.settle()
      assert.equal(await settled(ra), false)
      // the new server learns WRITE from a's report, then a's resent READ request: granting
      // READ would let the server believe less than a holds while wa is still in use
      await h.failover(3)
      await h.settle()
      assert.equal(h.server.grantedMode(L1[0], 1), WRITE)
      assert.equal(await settled(wc), false, 'c still waits for a')
      h.release(a, wa)
      await Promise.all([ra.then((x) => h.release(a, x)), wc.then((x) => h.release(c, x))])
      await h.settle()
    })

    it('refreshes the roots view before a grant that makes a lock readable is used', async function () {
      let version = 5
      const h = new Harness(testRng('locks roots'), { rootsVersion: () => version })
      const a = h.client(1)
      h.release(a, await h.acquire(a, L1, READ))
      assert.deepEqual(h.refreshes, [{ rid: 1, version: 5 }])
      h.release(a, await h.acquire(a, L2, WRITE))
      assert.equal(h.refreshes.length, 1, 'same version: no refresh')
      version = 7
      h.release(a, await h.acquire(a, L3, WRITE_ONLY))
      assert.equal(h.refreshes.length, 1, 'WRITE_ONLY does not read')
      const hb = h.client(2)
      h.release(hb, await h.acquire(hb, L1, WRITE))
      assert.deepEqual(h.refreshes[1], { rid: 2, version: 7 })
      assert.equal(hb.knownRootsVersion, 7)
      await h.settle()
    })

    it('handles the queued invalidations of one lock in order, each as soon as its own users allow', async function () {
      // a client alone, fed by hand
      const sent: LockClientMsg[] = []
      const hooks: string[] = []
      const c = new LockClient({
        rid: 1,
        send: (m) => sent.push(m),
        onInvalidate: async (_r, o, n, info) => {
          await immediate()
          hooks.push(`${lockModeName(o)}->${lockModeName(n)}${info.wrote ? ' wrote' : ''}`)
        },
      })
      const replies = (): number[] => sent.flatMap((m) => (m.kind === 'invalidated' ? [m.invId] : []))
      const p = c.lock(L1, WRITE)
      const req = sent.find((m) => m.kind === 'request') as LockRequestMsg
      c.receive({
        kind: 'grant',
        start: L1[0],
        end: L1[1],
        mode: WRITE,
        writeSeq: 7,
        rootsVersion: 0,
        reqId: req.reqId,
      })
      const w = await p
      assert.equal(w.writeSeq, 7)
      const r = await c.lock(L1, READ)
      c.receive({ kind: 'invalidate', start: L1[0], end: L1[1], oldMode: WRITE, mode: READ, invId: 11 })
      c.receive({ kind: 'invalidate', start: L1[0], end: L1[1], oldMode: READ, mode: NULL, invId: 12 })
      const r2 = c.lock(L1, READ)
      assert.equal(await settled(r2), false, 'a queued invalidation to NULL holds new READ uses back')
      for (let i = 0; i < 20; i++) await immediate()
      assert.deepEqual([hooks, replies()], [[], []], 'nothing happens while the WRITE use is active')
      c.unlock(w)
      for (let i = 0; i < 20; i++) await immediate()
      assert.deepEqual(hooks, ['WRITE->READ wrote'])
      assert.deepEqual(replies(), [11], 'the first is answered while the READ use (which it allows) goes on')
      assert.equal(c.heldMode(L1[0]), READ)
      c.unlock(r)
      for (let i = 0; i < 20; i++) await immediate()
      assert.deepEqual(hooks, ['WRITE->READ wrote', 'READ->NULL'])
      assert.deepEqual(replies(), [11, 12])
      assert.equal(c.heldMode(L1[0]), NULL)
      // an invalidation of a lock it does not hold is answered at once
      c.receive({ kind: 'invalidate', start: L2[0], end: L2[1], oldMode: READ, mode: NULL, invId: 13 })
      assert.deepEqual(replies(), [11, 12, 13])
      c.shutdown()
      await assert.rejects(r2, (e) => isFsError(e, 'ENOTCONN'))
    })

    it('releases idle locks beyond lock_idle_count, hook first, then NULL', async function () {
      const h = new Harness(testRng('locks idle'), { lockIdleCount: 1 })
      const a = h.client(1)
      for (const r of [L1, L2, L3]) h.release(a, await h.acquire(a, r, WRITE))
      await h.settle()
      assert.equal(a.idleCount, 1)
      assert.equal(a.heldMode(L1[0]), NULL)
      assert.equal(a.heldMode(L2[0]), NULL)
      assert.equal(a.heldMode(L3[0]), WRITE)
      assert.equal(h.server.grantedMode(L1[0], 1), NULL)
      assert.equal(h.server.grantedMode(L2[0], 1), NULL)
      const rel = h.hooks.filter((x) => x.info.release)
      assert.equal(rel.length, 2)
      assert.ok(rel.every((x) => x.oldMode === WRITE && x.newMode === NULL && x.info.wrote))
      // a released lock comes back with a new request
      h.release(a, await h.acquire(a, L1, READ))
      await h.settle()
      assert.equal(a.heldMode(L3[0]), NULL)
    })
  })

  describe('storms', function () {
    const iterations = envInt('SCOUTFS_LOCK_STORM_ITERS', 400)

    it('exclusion, progress and invalidation order under a random request/unlock storm', async function () {
      const h = new Harness(testRng('locks storm'), { maxHops: 3, hookMaxHops: 3 })
      const r = await storm(h, 4, iterations)
      console.log(
        `      ${r.ops} operations, ${r.lockCalls} lock calls in ${r.ms} ms; longest wait ${r.maxWaitMs} ms; ` +
          `${h.server.counters.invalidations} invalidations, ${h.hooks.length} hooks`,
      )
      assert.ok(r.lockCalls >= 2000, `only ${r.lockCalls} lock calls`)
      assert.deepEqual(h.violations, [])
      assert.ok(h.server.counters.invalidations > 100)
      assert.ok(
        h.hooks.some((x) => x.oldMode === WRITE && x.newMode === READ),
        'some WRITE->READ downgrade',
      )
      assert.ok(h.hooks.some((x) => x.info.wrote) && h.hooks.some((x) => !x.info.wrote))
    })

    it('survives duplicated messages, failing hooks and idle releases', async function () {
      const h = new Harness(testRng('locks storm faults'), {
        maxHops: 4,
        dupProb: 0.1,
        hookFailProb: 0.05,
        lockIdleCount: 2,
      })
      const r = await storm(h, 3, iterations)
      const hk = h.clients.reduce((n, c) => n + c.counters.hookErrors, 0)
      const rel = h.clients.reduce((n, c) => n + c.counters.idleReleases, 0)
      console.log(
        `      ${r.ops} operations, ${r.lockCalls} lock calls in ${r.ms} ms; longest wait ${r.maxWaitMs} ms; ` +
          `${h.server.counters.duplicateRequests + h.server.counters.ignoredResponses} duplicates absorbed, ${hk} hook failures, ${rel} idle releases`,
      )
      assert.ok(r.lockCalls >= 1500, `only ${r.lockCalls} lock calls`)
      assert.deepEqual(h.violations, [])
      assert.ok(hk > 0 && rel > 0)
      assert.ok(h.server.counters.ignoredResponses > 0)
    })

    it('keeps exclusion and progress across server failovers (lock recovery under load)', async function () {
      const h = new Harness(testRng('locks storm failover'), { maxHops: 3, lockIdleCount: 3, dupProb: 0.05 })
      let failovers = 0
      const r = await storm(h, 3, Math.ceil(iterations / 2), 5000, async (done) => {
        while (!done()) {
          const wait = h.rng.range(100, 1500)
          for (let i = 0; i < wait && !done(); i++) await immediate()
          if (done()) break
          await h.failover(h.rng.range(0, 30))
          failovers++
        }
      })
      console.log(
        `      ${r.ops} operations, ${r.lockCalls} lock calls in ${r.ms} ms across ${failovers} failovers; longest wait ${r.maxWaitMs} ms; ` +
          `${h.clients.reduce((n, c) => n + c.counters.resends, 0)} requests resent`,
      )
      assert.ok(failovers >= 3, `only ${failovers} failovers`)
      assert.deepEqual(h.violations, [])
    })

    it('catches a broken compatibility rule (the model can fail)', async function () {
      // READ and WRITE of different mounts "compatible"
      const broken: LockCompatFn = (g, r, same) =>
        lockModesCompatible(g, r, same) || (g === READ && r === WRITE) || (g === WRITE && r === READ)
      const h = new Harness(testRng('locks broken compat'), { compatible: broken, collect: true })
      await storm(h, 3, 40, 2000).catch(() => undefined)
      assert.ok(h.violations.length > 0, 'the model must notice conflicting holders')
      console.log(`      caught: ${h.violations[0]}`)
    })
  })
})
