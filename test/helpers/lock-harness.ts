/*
 * The in-process harness of the cluster-lock tests (test/unit/lock-client, lock-server and
 * lock-cluster-model.test.ts): a LockServer
 * and LockClients joined by a loopback whose links deliver in order after random delays
 * (seeded), and the model that checks, on every delivered message and every admitted use:
 *  - no two mounts hold conflicting modes (by a compatibility table written out here, not the
 *    one under test), neither as granted modes nor as users;
 *  - no mount holds more than the server believes it holds;
 *  - an invalidation is answered only after a hook that lowered the lock to its target has
 *    completed, and the hook saw wrote=true iff a write use ended since the last hook;
 *  - write_seq only grows, per lock across mounts and across the server.
 * checkModelAfterEach() fails a test that left a violation behind.  LOCK_TRACE=1 prints the
 * last 600 messages and hooks at the first violation.
 */
import { FsError } from '../../node-agent/src/util/errors.js'
import { KeyType, Zone, makeKey } from '../../node-agent/src/storage/format.js'
import { lockRange } from '../../node-agent/src/protocol/lock-ranges.js'
import { LockClient, type InvalidateInfo, type LockHandle } from '../../node-agent/src/lock/lock-client.js'
import {
  LockMode,
  lockId,
  lockModeName,
  type LockClientMsg,
  type LockCompatFn,
  type LockRange,
  type LockServerMsg,
} from '../../node-agent/src/protocol/lock-modes.js'
import { LockServer } from '../../node-agent/src/lock/lock-server.js'
import { Rng } from './rng.js'

export const { NULL, READ, WRITE, WRITE_ONLY } = LockMode
export type Mode = LockMode

/* ---- the model's own rules (deliberately not imported) ------------------------------------ */

/** two different mounts may hold these modes at once */
export function crossOk(a: Mode, b: Mode): boolean {
  return a === NULL || b === NULL || (a === b && (a === READ || a === WRITE_ONLY))
}
/** a mount holding `held` may use `need` */
export function covers(held: Mode, need: Mode): boolean {
  return need === NULL || held === need || (held === WRITE && need === READ)
}

export const immediate = (): Promise<void> => new Promise((r) => setImmediate(r))

/* ---- the loopback ----------------------------------------------------------------------- */

/** One direction of one connection: in order, each message after 0..maxHops event-loop turns. */
export class Link<T> {
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

export interface HarnessOpts {
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

export interface HookCall {
  rid: number
  id: string
  oldMode: Mode
  newMode: Mode
  info: InvalidateInfo
  done: number
}

export const live: Harness[] = []

export class Harness {
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

export async function waitFor(h: Harness, cond: () => boolean, what: string, turns = 20_000): Promise<void> {
  for (let i = 0; i < turns; i++) {
    if (cond()) return
    await immediate()
  }
  throw new Error(`timed out waiting for ${what}\n${h.dump()}`)
}

/** Whether a promise has settled (after a few turns). */
export async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false
  void p.then(
    () => (done = true),
    () => (done = true),
  )
  for (let i = 0; i < 5; i++) await immediate()
  return done
}

export const L1 = lockRange(makeKey(Zone.FS, 10, KeyType.INODE))
export const L2 = lockRange(makeKey(Zone.FS, 2048, KeyType.INODE))
export const L3 = lockRange(makeKey(Zone.FS, 4096, KeyType.INODE))

/** Registers an afterEach that fails the test when a harness it made saw a model violation. */
export function checkModelAfterEach(): void {
  afterEach(function () {
    const bad = live.filter((h) => !h.o.collect && (h.violations.length > 0 || h.errors.length > 0))
    live.length = 0
    if (bad.length) throw new Error(`model violation: ${bad[0]!.violations[0] ?? String(bad[0]!.errors[0])}`)
  })
}
