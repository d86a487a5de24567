/*
 * The cluster lock server (DESIGN §8), transport-independent: it receives the clients'
 * messages through receive(rid, msg) and sends its own through the `send` callback it was
 * given.  In the elected server it is the LockPort of net-server.ts NetServer (the mounts'
 * Locks streams; server/server-role.ts wires them); the unit tests join it to LockClients by an
 * in-process loopback.
 *
 * Per lock (a key range, named by its start key):
 *  - granted: rid -> mode, for every client the server believes may hold more than NULL;
 *  - queue: FIFO of requests;
 *  - invalidating: rid -> the outstanding invalidation sent to that client.
 * Requests are granted in FIFO order, and only while no invalidation of the lock is
 * outstanding.  The head request that conflicts with some holders gets an invalidation sent to
 * each of them, and waits until all of them have answered.
 *
 * Invariants:
 *  - the server's view of a client is never below what the client really holds: the server
 *    raises its view before it sends a grant and never lowers it by a grant (a request for
 *    less than the client holds is granted what it holds); the client lowers its mode before
 *    it answers an invalidation or asks for NULL, and only those lower the server's view;
 *  - the granted modes of different clients are pairwise compatible, so the clients' real
 *    modes are too;
 *  - an invalidation response counts only if it names the outstanding invalidation (a unique
 *    id) and a mode at or below its target: duplicate, late and foreign responses are ignored;
 *  - while recovering, nothing is granted; recovered grants and resent requests wait for
 *    finishRecovery().
 */
import { FsError } from '../util/errors.js'
import {
  LockMode,
  checkLockRange,
  invalidationTarget,
  isLockMode,
  isWriteMode,
  lockId,
  lockModeName,
  lockModesCompatible,
  modeCovers,
  type LockClientMsg,
  type LockCompatFn,
  type LockInvalidatedMsg,
  type LockRequestMsg,
  type LockServerMsg,
  type RecoveredLock,
} from '../protocol/lock-modes.js'

export interface LockServerOptions {
  /** send one message to a client; fire and forget (a send error is ignored: that client is fenced) */
  send: (rid: number, msg: LockServerMsg) => void
  /** the next seq of the server's core counter (write_seq of WRITE and WRITE_ONLY grants) */
  nextSeq: () => number
  /** the current committed-roots version, carried by every grant */
  rootsVersion: () => number
  /** start in lock recovery: grant nothing until finishRecovery() */
  recovering?: boolean
  /** replace the compatibility rule (tests only: a broken rule must be caught) */
  compatible?: LockCompatFn
  log?: (msg: string) => void
}

export interface LockServerCounters {
  requests: number
  duplicateRequests: number
  grants: number
  immediateGrants: number
  nullGrants: number
  invalidations: number
  responses: number
  ignoredResponses: number
  sendErrors: number
  recoveredLocks: number
  recoveryConflicts: number
  removedClients: number
}

interface QueuedRequest {
  rid: number
  mode: LockMode
  reqId: number
}

interface Outstanding {
  invId: number
  mode: LockMode
}

interface ServerLock {
  id: string
  start: Buffer
  end: Buffer
  granted: Map<number, LockMode>
  queue: QueuedRequest[]
  invalidating: Map<number, Outstanding>
}

/** A snapshot of one lock's state (tests, debugging, the admin API). */
export interface ServerLockState {
  start: Buffer
  end: Buffer
  granted: Array<[rid: number, mode: LockMode]>
  queue: Array<{ rid: number; mode: LockMode }>
  invalidating: Array<[rid: number, mode: LockMode]>
}

export class LockServer {
  readonly counters: LockServerCounters = {
    requests: 0,
    duplicateRequests: 0,
    grants: 0,
    immediateGrants: 0,
    nullGrants: 0,
    invalidations: 0,
    responses: 0,
    ignoredResponses: 0,
    sendErrors: 0,
    recoveredLocks: 0,
    recoveryConflicts: 0,
    removedClients: 0,
  }
  /** the greatest write_seq clients reported in recovery: the core counter must start above it */
  maxRecoveredWriteSeq = 0

  private readonly locks = new Map<string, ServerLock>()
  private recovering: boolean
  private readonly compat: LockCompatFn
  /* invalidation ids start at a random point so that a response meant for an earlier server
     is not mistaken for one of ours */
  private nextInvId = 1 + Math.floor(Math.random() * 2 ** 40)

  constructor(private readonly opts: LockServerOptions) {
    this.recovering = opts.recovering ?? false
    this.compat = opts.compatible ?? lockModesCompatible
  }

  get isRecovering(): boolean {
    return this.recovering
  }

  get lockCount(): number {
    return this.locks.size
  }

  /** One message from client `rid`. */
  receive(rid: number, msg: LockClientMsg): void {
    if (msg.kind === 'request') this.request(rid, msg)
    else if (msg.kind === 'invalidated') this.invalidated(rid, msg)
    else throw new FsError('EINVAL', `unknown lock message ${(msg as { kind: string }).kind}`)
  }

  request(rid: number, msg: LockRequestMsg): void {
    if (!isLockMode(msg.mode)) throw new FsError('EINVAL', `lock request for bad mode ${String(msg.mode)}`)
    this.counters.requests++
    const lock = this.getLock(msg.start, msg.end)
    const queued = lock.queue.find((q) => q.rid === rid)
    if (queued) {
      // one outstanding request per client and lock: this is a resend (or the client moved on)
      this.counters.duplicateRequests++
      queued.mode = msg.mode
      queued.reqId = msg.reqId
      return
    }
    if (!this.recovering) {
      const held = lock.granted.get(rid) ?? LockMode.NULL
      if (msg.mode === LockMode.NULL) {
        // the client lowered itself before asking: nothing to wait for
        lock.granted.delete(rid)
        this.counters.nullGrants++
        this.sendGrant(lock, rid, LockMode.NULL, msg.reqId)
        this.drive(lock)
        return
      }
      if (held !== LockMode.NULL && modeCovers(held, msg.mode) && !lock.invalidating.has(rid)) {
        // it already holds enough (a resend whose grant was lost): answer at once with what it holds
        this.counters.immediateGrants++
        this.sendGrant(lock, rid, held, msg.reqId)
        return
      }
    }
    lock.queue.push({ rid, mode: msg.mode, reqId: msg.reqId })
    this.drive(lock)
  }

  invalidated(rid: number, msg: LockInvalidatedMsg): void {
    const lock = this.locks.get(lockId(msg.start))
    const out = lock?.invalidating.get(rid)
    if (!lock || !out || out.invId !== msg.invId || !isLockMode(msg.mode) || !modeCovers(out.mode, msg.mode)) {
      this.counters.ignoredResponses++
      return
    }
    this.counters.responses++
    lock.invalidating.delete(rid)
    const cur = lock.granted.get(rid)
    if (cur !== undefined) {
      if (msg.mode === LockMode.NULL) lock.granted.delete(rid)
      else lock.granted.set(rid, msg.mode)
    }
    this.drive(lock)
  }

  /**
   * A client is gone (farewell, or fenced and reclaimed): drop its grants, its queued requests
   * and the invalidations it owes, and serve whoever waited on it.  Idempotent.
   */
  removeClient(rid: number): void {
    this.counters.removedClients++
    for (const lock of [...this.locks.values()]) {
      const had = lock.granted.delete(rid)
      const inv = lock.invalidating.delete(rid)
      const before = lock.queue.length
      lock.queue = lock.queue.filter((q) => q.rid !== rid)
      if (had || inv || lock.queue.length !== before) this.drive(lock)
    }
  }

  /**
   * Lock recovery: seed the state of a new server with the locks client `rid` reports it holds
   * (it may report in several batches).  Only while recovering.
   */
  recover(rid: number, locks: readonly RecoveredLock[]): void {
    if (!this.recovering) throw new FsError('EINVAL', `lock recovery report from ${rid} after recovery finished`)
    for (const r of locks) {
      if (!isLockMode(r.mode)) throw new FsError('EINVAL', `recovered lock with bad mode ${String(r.mode)}`)
      const lock = this.getLock(r.start, r.end)
      if (r.writeSeq > this.maxRecoveredWriteSeq) this.maxRecoveredWriteSeq = r.writeSeq
      if (r.mode === LockMode.NULL) {
        lock.granted.delete(rid)
        this.forgetIfIdle(lock)
        continue
      }
      for (const [other, m] of lock.granted) {
        if (other !== rid && !this.compat(m, r.mode, false)) {
          this.counters.recoveryConflicts++
          this.log(`recovered ${lockModeName(r.mode)} of rid ${rid} conflicts with ${lockModeName(m)} of rid ${other}`)
        }
      }
      lock.granted.set(rid, r.mode)
      this.counters.recoveredLocks++
    }
  }

  /**
   * `rid` opened a new stream: send it again every invalidation it has not answered (one sent
   * while its old stream was broken was lost with it).  A duplicate is harmless: the client
   * answers it as a no-op, and the server ignores an answer it no longer waits for.
   */
  resendInvalidations(rid: number): number {
    let n = 0
    for (const lock of this.locks.values()) {
      const out = lock.invalidating.get(rid)
      if (!out) continue
      const oldMode = lock.granted.get(rid) ?? LockMode.NULL
      this.send(rid, {
        kind: 'invalidate',
        start: lock.start,
        end: lock.end,
        oldMode,
        mode: out.mode,
        invId: out.invId,
      })
      n++
    }
    return n
  }

  /** Every client has reported (or been removed): serve the queued requests. */
  finishRecovery(): void {
    if (!this.recovering) return
    this.recovering = false
    for (const lock of [...this.locks.values()]) this.drive(lock)
  }

  /** What the server believes `rid` holds on the lock starting at `start`. */
  grantedMode(start: Buffer, rid: number): LockMode {
    return this.locks.get(lockId(start))?.granted.get(rid) ?? LockMode.NULL
  }

  state(start: Buffer): ServerLockState | undefined {
    const l = this.locks.get(lockId(start))
    if (!l) return undefined
    return {
      start: l.start,
      end: l.end,
      granted: [...l.granted],
      queue: l.queue.map((q) => ({ rid: q.rid, mode: q.mode })),
      invalidating: [...l.invalidating].map(([rid, o]) => [rid, o.mode] as [number, LockMode]),
    }
  }

  states(): ServerLockState[] {
    return [...this.locks.values()].map((l) => this.state(l.start)!)
  }

  /** A readable dump of every lock with waiters or outstanding invalidations. */
  dump(): string {
    const lines: string[] = []
    for (const l of this.locks.values()) {
      if (l.queue.length === 0 && l.invalidating.size === 0) continue
      const g = [...l.granted].map(([r, m]) => `${r}:${lockModeName(m)}`).join(',')
      const q = l.queue.map((r) => `${r.rid}:${lockModeName(r.mode)}`).join(',')
      const i = [...l.invalidating].map(([r, o]) => `${r}->${lockModeName(o.mode)}`).join(',')
      lines.push(`lock ${l.start.toString('hex').slice(0, 20)}.. granted [${g}] queue [${q}] invalidating [${i}]`)
    }
    return lines.join('\n')
  }

  /* ---- internals ---------------------------------------------------------------------- */

  private getLock(start: Buffer, end: Buffer): ServerLock {
    const id = lockId(start)
    let lock = this.locks.get(id)
    if (lock) {
      if (!lock.end.equals(end))
        throw new FsError(
          'EINVAL',
          `lock ${start.toString('hex')} asked with end ${end.toString('hex')}, known as ${lock.end.toString('hex')}`,
        )
      return lock
    }
    checkLockRange(start, end)
    lock = {
      id,
      start: Buffer.from(start),
      end: Buffer.from(end),
      granted: new Map(),
      queue: [],
      invalidating: new Map(),
    }
    this.locks.set(id, lock)
    return lock
  }

  private forgetIfIdle(lock: ServerLock): void {
    if (
      lock.granted.size === 0 &&
      lock.queue.length === 0 &&
      lock.invalidating.size === 0 &&
      this.locks.get(lock.id) === lock
    )
      this.locks.delete(lock.id)
  }

  /** Grant from the head of the queue while nothing is being invalidated. */
  private drive(lock: ServerLock): void {
    while (!this.recovering && lock.invalidating.size === 0 && lock.queue.length > 0) {
      const req = lock.queue[0]!
      const conflicts: Array<[number, LockMode]> = []
      for (const [rid, m] of lock.granted) {
        if (rid === req.rid && modeCovers(m, req.mode)) continue // its own grant already covers it
        if (!this.compat(m, req.mode, rid === req.rid)) conflicts.push([rid, m])
      }
      if (conflicts.length === 0) {
        lock.queue.shift()
        // a compatible request replaces the same client's old grant — but a grant never lowers
        // it: a client asking for less than the server believes it holds (READ under WRITE,
        // typically while it still works off an invalidation) may still be using more, and
        // only the client's own NULL request or invalidation answer, sent after its hook, may
        // lower the server's view.  So it is granted what it holds.
        const own = lock.granted.get(req.rid)
        const mode = req.mode !== LockMode.NULL && own !== undefined && modeCovers(own, req.mode) ? own : req.mode
        if (mode === LockMode.NULL) lock.granted.delete(req.rid)
        else lock.granted.set(req.rid, mode)
        this.counters.grants++
        this.sendGrant(lock, req.rid, mode, req.reqId)
        continue
      }
      // record every invalidation before sending any: a transport that delivers synchronously
      // may bring an answer back (and re-enter drive) inside send()
      const msgs: Array<[number, LockServerMsg]> = []
      for (const [rid, m] of conflicts) {
        const mode = invalidationTarget(m, req.mode)
        const invId = this.nextInvId++
        lock.invalidating.set(rid, { invId, mode })
        this.counters.invalidations++
        msgs.push([rid, { kind: 'invalidate', start: lock.start, end: lock.end, oldMode: m, mode, invId }])
      }
      for (const [rid, msg] of msgs) this.send(rid, msg)
      return
    }
    this.forgetIfIdle(lock)
  }

  private sendGrant(lock: ServerLock, rid: number, mode: LockMode, reqId: number): void {
    const writeSeq = isWriteMode(mode) ? this.opts.nextSeq() : 0
    this.send(rid, {
      kind: 'grant',
      start: lock.start,
      end: lock.end,
      mode,
      writeSeq,
      rootsVersion: this.opts.rootsVersion(),
      reqId,
    })
  }

  private send(rid: number, msg: LockServerMsg): void {
    try {
      this.opts.send(rid, msg)
    } catch (e) {
      // the client is unreachable; it will be fenced and removed, which releases what it holds
      this.counters.sendErrors++
      this.log(`lock message to ${rid} failed: ${(e as Error).message}`)
    }
  }

  private log(m: string): void {
    this.opts.log?.(m)
  }
}
