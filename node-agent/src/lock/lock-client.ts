/*
 * The cluster lock client of one mount (DESIGN §8), transport-independent: it sends through
 * the `send` callback it was given and receives the server's messages through receive(msg).
 * In a mount it is the LockEndpoint of net-client.ts NetClient.openLocks (the Locks stream),
 * which also asks it for recoveryReport() and resendRequests() after a reconnect.
 *
 * Per lock (a key range, named by its start key) it keeps the mode granted to this mount, the
 * users of each mode, the waiters, at most one outstanding request, and a FIFO of
 * invalidations.  A use is served locally whenever the granted mode covers it (the same mode,
 * or WRITE for READ) and no queued invalidation would have to wait for it; otherwise the
 * waiter asks the server once and waits.
 *
 * An invalidation waits until no user holds a mode the target does not cover, then calls the
 * mount's onInvalidate hook (commit what was written under the lock, drop cached items and
 * kernel/path caches unless the change is WRITE -> READ), then sets the new mode and only
 * then replies.  Invalidations of one lock are handled one at a time, in arrival order.
 *
 * Idle locks (no users, nothing pending) sit on an LRU; beyond lock_idle_count the oldest is
 * released: the same hook runs (old -> NULL), the mode drops to NULL, and only then is the NULL
 * request sent.  So the mount never holds more than the server believes it holds.
 *
 * Invariants:
 *  - the mode only rises on a grant that answers the outstanding request (same reqId) and
 *    only falls after the hook has run;
 *  - a lock with a queued invalidation or release admits only uses its target covers, so
 *    local users cannot starve an invalidation;
 *  - lock() refuses to wait while the caller holds a transaction (the invalidation it could
 *    wait on may need that transaction to commit).
 */
import { FsError, type Errno } from '../util/errors.js'
import {
  LockMode,
  checkLockRange,
  isReadableMode,
  isWriteMode,
  lockId,
  lockModeName,
  lockRangeString,
  modeCovers,
  sortLockRequests,
  type LockClientMsg,
  type LockGrantMsg,
  type LockInvalidateMsg,
  type LockRange,
  type LockServerMsg,
  type OrderedLockRequest,
  type RecoveredLock,
} from '../protocol/lock-modes.js'

/**
 * The errno lock() fails with when the caller holds a transaction.  The original returns
 * EDEADLK; errors.ts has no EDEADLK yet, so this is EBUSY until it does (the message says
 * EDEADLK).
 */
export const LOCK_DEADLOCK_ERRNO: Errno = 'EBUSY'

export interface InvalidateInfo {
  /** a WRITE or WRITE_ONLY use of this lock ended since the lock was last invalidated or released */
  wrote: boolean
  /** the greatest transaction seq a write use passed to unlock() since then (0: none given) */
  dirtyTransSeq: number
  /** true when the client drops an idle lock by itself (LRU), false for a server invalidation */
  release: boolean
}

/**
 * The mount's part of an invalidation, called after every user the new mode does not cover
 * has unlocked and before the reply: if `info.wrote`, commit the transaction (and wait for
 * it); then, unless oldMode is WRITE and newMode is READ (lock-modes invalidationDropsCache),
 * drop the item-cache range and the kernel/path caches of the inodes it covers.  A rejection
 * is retried (the server keeps waiting) until it succeeds.
 */
export type InvalidateHook = (
  range: LockRange,
  oldMode: LockMode,
  newMode: LockMode,
  info: InvalidateInfo,
) => Promise<void>

/** Bring the mount's view of the committed roots up to `rootsVersion` (at least). */
export type RefreshRootsHook = (rootsVersion: number) => Promise<void>

export interface LockClientOptions {
  rid: number
  send: (msg: LockClientMsg) => void
  onInvalidate: InvalidateHook
  refreshRoots?: RefreshRootsHook
  /** idle locks kept above NULL before the oldest is released (the original's default: 10000) */
  lockIdleCount?: number
  /** first retry delay of a failed hook, doubling up to 2 s */
  hookRetryMs?: number
  log?: (msg: string) => void
}

export interface LockOpts {
  /** the caller holds a transaction: refuse rather than wait */
  holdsTrans?: boolean
}

export interface UnlockOpts {
  /** for WRITE/WRITE_ONLY uses: whether anything was written (default true) */
  wrote?: boolean
  /** the transaction the write went into */
  transSeq?: number
}

/** One use of a lock.  Give it back to unlock() exactly once. */
export interface LockHandle {
  readonly range: LockRange
  readonly mode: LockMode
  /** the write_seq of the grant this use is under (0 for READ): item seq = max(trans seq, this) */
  readonly writeSeq: number
}

export interface LockClientCounters {
  locks: number
  localHits: number
  waits: number
  requests: number
  resends: number
  grants: number
  staleGrants: number
  invalidations: number
  noopInvalidations: number
  hookCalls: number
  hookErrors: number
  idleReleases: number
  rootsRefreshes: number
}

interface Waiter {
  mode: LockMode
  resolve: (h: LockHandle) => void
  reject: (e: Error) => void
  /** performance.now() when the call began to wait */
  since: number
}

/** a queued invalidation from the server, or the client's own release of an idle lock */
type Work = { kind: 'invalidate'; msg: LockInvalidateMsg } | { kind: 'release' }

interface ClientLock {
  id: string
  range: LockRange
  mode: LockMode
  /** users per mode, indexed by LockMode */
  users: [number, number, number, number]
  waiters: Waiter[]
  request: { mode: LockMode; reqId: number; oldMode: LockMode } | undefined
  work: Work[]
  working: boolean
  refreshing: boolean
  writeSeq: number
  wrote: boolean
  dirtyTransSeq: number
}

class Handle implements LockHandle {
  released = false
  constructor(
    readonly lock: ClientLock,
    readonly mode: LockMode,
    readonly writeSeq: number,
  ) {}
  get range(): LockRange {
    return this.lock.range
  }
}

const USE_MODES = [LockMode.READ, LockMode.WRITE, LockMode.WRITE_ONLY] as const

/** The greatest mode both `a` and `b` cover. */
function lowerMode(a: LockMode, b: LockMode): LockMode {
  if (modeCovers(a, b)) return b
  if (modeCovers(b, a)) return a
  return LockMode.NULL
}

function workTarget(w: Work): LockMode {
  return w.kind === 'release' ? LockMode.NULL : w.msg.mode
}

export class LockClient {
  readonly rid: number
  readonly counters: LockClientCounters = {
    locks: 0,
    localHits: 0,
    waits: 0,
    requests: 0,
    resends: 0,
    grants: 0,
    staleGrants: 0,
    invalidations: 0,
    noopInvalidations: 0,
    hookCalls: 0,
    hookErrors: 0,
    idleReleases: 0,
    rootsRefreshes: 0,
  }
  lockIdleCount: number

  private readonly locks = new Map<string, ClientLock>()
  /** idle locks above NULL, least recently used first */
  private readonly idle = new Map<string, ClientLock>()
  private nextReqId = 1
  private closed = false
  private rootsVersion = 0
  private rootsRefresh: { version: number; done: Promise<void> } | undefined

  constructor(private readonly opts: LockClientOptions) {
    this.rid = opts.rid
    this.lockIdleCount = opts.lockIdleCount ?? 10_000
  }

  /* ---- the mount's side ----------------------------------------------------------------- */

  /**
   * Take `range` in `mode` (READ, WRITE or WRITE_ONLY).  Served locally when the granted mode
   * covers it; otherwise asks the server and waits.  Refuses while the caller holds a
   * transaction.  Several locks: take them in sortLockRequests() order (lockAll does).
   */
  lock(range: LockRange, mode: LockMode, opts: LockOpts = {}): Promise<LockHandle> {
    try {
      return this.lockOrWait(range, mode, opts)
    } catch (e) {
      return Promise.reject(e as Error)
    }
  }

  private lockOrWait(range: LockRange, mode: LockMode, opts: LockOpts): Promise<LockHandle> {
    if (opts.holdsTrans)
      return Promise.reject(
        new FsError(
          LOCK_DEADLOCK_ERRNO,
          `EDEADLK: cluster lock ${lockRangeString(range)} asked while holding a transaction`,
        ),
      )
    if (mode !== LockMode.READ && mode !== LockMode.WRITE && mode !== LockMode.WRITE_ONLY)
      return Promise.reject(new FsError('EINVAL', `cannot lock in mode ${String(mode)}`))
    if (this.closed) return Promise.reject(new FsError('ENOTCONN', 'lock client is shut down'))
    checkLockRange(range[0], range[1])
    this.counters.locks++
    const lock = this.getLock(range)
    this.idle.delete(lock.id)
    if (this.canAdmit(lock, mode)) {
      this.counters.localHits++
      const h = this.admit(lock, mode)
      this.shrinkIdle()
      return Promise.resolve(h)
    }
    this.counters.waits++
    const since = performance.now()
    const p = new Promise<LockHandle>((resolve, reject) => lock.waiters.push({ mode, resolve, reject, since }))
    this.kick(lock)
    this.shrinkIdle()
    return p
  }

  unlock(handle: LockHandle, opts: UnlockOpts = {}): void {
    if (!(handle instanceof Handle)) throw new FsError('EINVAL', 'not a lock handle')
    if (handle.released) throw new FsError('EINVAL', `lock ${lockRangeString(handle.range)} unlocked twice`)
    handle.released = true
    const lock = handle.lock
    lock.users[handle.mode]--
    if (isWriteMode(handle.mode)) {
      if (opts.wrote ?? true) lock.wrote = true
      if (opts.transSeq !== undefined && opts.transSeq > lock.dirtyTransSeq) lock.dirtyTransSeq = opts.transSeq
    }
    if (this.closed) return
    this.kick(lock)
    this.shrinkIdle()
  }

  /**
   * Take several locks in the deadlock-free order (lock-modes sortLockRequests: rename,
   * inodes by number, write-only, index by key).  On failure nothing stays held.  Returns the
   * handles in the order taken; release them with unlockAll.
   */
  async lockAll<T extends OrderedLockRequest>(reqs: readonly T[], opts: LockOpts = {}): Promise<LockHandle[]> {
    const held: LockHandle[] = []
    try {
      for (const r of sortLockRequests(reqs)) held.push(await this.lock(r.range, r.mode, opts))
    } catch (e) {
      this.unlockAll(held)
      throw e
    }
    return held
  }

  /**
   * lockAll() when every lock can be used at once, without waiting (this mount holds each in
   * a mode covering the one asked, and nothing is changing it: the usual case): the handles,
   * taken now, with no promise in between.  undefined when any would wait; nothing is taken
   * then (call lockAll).
   */
  tryLockAll<T extends OrderedLockRequest>(reqs: readonly T[], opts: LockOpts = {}): LockHandle[] | undefined {
    if (opts.holdsTrans || this.closed) return undefined
    const sorted = sortLockRequests(reqs)
    const locks: ClientLock[] = []
    for (const r of sorted) {
      if (r.mode !== LockMode.READ && r.mode !== LockMode.WRITE && r.mode !== LockMode.WRITE_ONLY) return undefined
      const lock = this.locks.get(lockId(r.range[0]))
      if (!lock || !lock.range[1].equals(r.range[1]) || !this.canAdmit(lock, r.mode)) return undefined
      locks.push(lock)
    }
    const held: LockHandle[] = []
    for (let i = 0; i < locks.length; i++) {
      const lock = locks[i]!
      this.counters.locks++
      this.counters.localHits++
      this.idle.delete(lock.id)
      held.push(this.admit(lock, sorted[i]!.mode))
    }
    this.shrinkIdle()
    return held
  }

  unlockAll(handles: readonly LockHandle[], opts: UnlockOpts = {}): void {
    for (let i = handles.length - 1; i >= 0; i--) this.unlock(handles[i]!, opts)
  }

  /** The mode this mount holds on the lock starting at `start` (NULL if none). */
  heldMode(start: Buffer): LockMode {
    return this.locks.get(lockId(start))?.mode ?? LockMode.NULL
  }

  /** How many locks this mount holds in each mode. */
  heldByMode(): { read: number; write: number; writeOnly: number } {
    const n = { read: 0, write: 0, writeOnly: 0 }
    for (const l of this.locks.values()) {
      if (l.mode === LockMode.READ) n.read++
      else if (l.mode === LockMode.WRITE) n.write++
      else if (l.mode === LockMode.WRITE_ONLY) n.writeOnly++
    }
    return n
  }

  /** Lock calls of this mount waiting for a grant (or for a conflicting local use to end). */
  get waiting(): number {
    let n = 0
    for (const l of this.locks.values()) n += l.waiters.length
    return n
  }

  /**
   * Seconds the lock call waiting longest has waited, 0 when none waits.  A healthy cluster's
   * waits are a grant's round trip or a holder's commit; minutes mean a stuck lock.
   */
  get oldestWaitSeconds(): number {
    let since = Infinity
    for (const l of this.locks.values()) for (const w of l.waiters) since = Math.min(since, w.since)
    return since === Infinity ? 0 : (performance.now() - since) / 1000
  }

  get lockCount(): number {
    return this.locks.size
  }
  get idleCount(): number {
    return this.idle.size
  }
  get knownRootsVersion(): number {
    return this.rootsVersion
  }

  /* ---- the transport's side ------------------------------------------------------------- */

  /** One message from the server, in the order the server sent them. */
  receive(msg: LockServerMsg): void {
    if (this.closed) return
    if (msg.kind === 'grant') this.grant(msg)
    else if (msg.kind === 'invalidate') this.invalidate(msg)
    else throw new FsError('EINVAL', `unknown lock message ${(msg as { kind: string }).kind}`)
  }

  /**
   * What this mount holds, for a new server's lock recovery (LockServer.recover).  A lock that
   * is being invalidated reports its mode before the invalidation: the mode only drops once
   * the hook is done.
   */
  recoveryReport(): RecoveredLock[] {
    const out: RecoveredLock[] = []
    for (const l of this.locks.values()) {
      if (l.mode === LockMode.NULL) continue
      out.push({ start: l.range[0], end: l.range[1], mode: l.mode, writeSeq: l.writeSeq })
    }
    return out
  }

  /** After a reconnect (same or new server): send every outstanding request again. */
  resendRequests(): void {
    for (const l of this.locks.values()) {
      if (!l.request) continue
      this.counters.resends++
      this.sendMsg({
        kind: 'request',
        start: l.range[0],
        end: l.range[1],
        oldMode: l.request.oldMode,
        mode: l.request.mode,
        reqId: l.request.reqId,
      })
    }
  }

  /** Stop: fail every waiter with ENOTCONN and ignore further messages (unmount, fenced). */
  shutdown(): void {
    if (this.closed) return
    this.closed = true
    for (const l of this.locks.values()) {
      const ws = l.waiters
      l.waiters = []
      for (const w of ws) w.reject(new FsError('ENOTCONN', 'lock client is shut down'))
    }
  }

  /** A readable dump of every lock with users, waiters or pending work. */
  dump(): string {
    const lines: string[] = []
    for (const l of this.locks.values()) {
      const u = USE_MODES.filter((m) => l.users[m] > 0).map((m) => `${lockModeName(m)}x${l.users[m]}`)
      if (u.length === 0 && l.waiters.length === 0 && !l.request && l.work.length === 0) continue
      lines.push(
        `rid ${this.rid} lock ${l.range[0].toString('hex').slice(0, 20)}.. mode ${lockModeName(l.mode)} users [${u.join(',')}]` +
          ` waiters [${l.waiters.map((w) => lockModeName(w.mode)).join(',')}]` +
          ` request ${l.request ? lockModeName(l.request.mode) : '-'} work [${l.work.map((w) => (w.kind === 'release' ? 'release' : `inv->${lockModeName(w.msg.mode)}`)).join(',')}]` +
          `${l.working ? ' working' : ''}${l.refreshing ? ' refreshing' : ''}`,
      )
    }
    return lines.join('\n')
  }

  /* ---- internals ------------------------------------------------------------------------ */

  private getLock(range: LockRange): ClientLock {
    const id = lockId(range[0])
    let lock = this.locks.get(id)
    if (lock) {
      if (!lock.range[1].equals(range[1]))
        throw new FsError('EINVAL', `lock ${lockRangeString(range)} known with another end`)
      return lock
    }
    lock = {
      id,
      range: [Buffer.from(range[0]), Buffer.from(range[1])],
      mode: LockMode.NULL,
      users: [0, 0, 0, 0],
      waiters: [],
      request: undefined,
      work: [],
      working: false,
      refreshing: false,
      writeSeq: 0,
      wrote: false,
      dirtyTransSeq: 0,
    }
    this.locks.set(id, lock)
    return lock
  }

  private canAdmit(lock: ClientLock, mode: LockMode): boolean {
    if (!modeCovers(lock.mode, mode) || lock.refreshing) return false
    if (lock.request?.mode === LockMode.NULL) return false
    for (const w of lock.work) if (!modeCovers(workTarget(w), mode)) return false
    return true
  }

  private admit(lock: ClientLock, mode: LockMode): LockHandle {
    lock.users[mode]++
    return new Handle(lock, mode, isWriteMode(mode) ? lock.writeSeq : 0)
  }

  /** Move a lock's state along: start invalidations, admit waiters, send a request, park or forget. */
  private kick(lock: ClientLock): void {
    if (this.closed) return
    if (!lock.working && lock.work.length > 0) {
      const target = workTarget(lock.work[0]!)
      if (USE_MODES.every((m) => lock.users[m] === 0 || modeCovers(target, m))) {
        lock.working = true
        void this.doWork(lock, lock.work[0]!)
      }
    }
    if (lock.waiters.length > 0) {
      const still: Waiter[] = []
      for (const w of lock.waiters) {
        if (this.canAdmit(lock, w.mode)) w.resolve(this.admit(lock, w.mode))
        else still.push(w)
      }
      lock.waiters = still
    }
    if (!lock.request && !lock.refreshing && lock.waiters.length > 0) {
      const mode = lock.waiters[0]!.mode
      this.sendRequest(lock, mode)
    }
    const unused =
      USE_MODES.every((m) => lock.users[m] === 0) &&
      lock.waiters.length === 0 &&
      !lock.request &&
      lock.work.length === 0 &&
      !lock.working &&
      !lock.refreshing
    if (this.locks.get(lock.id) !== lock) return // forgotten by a nested call
    if (unused && lock.mode === LockMode.NULL) {
      this.locks.delete(lock.id)
      this.idle.delete(lock.id)
    } else if (unused) {
      if (!this.idle.has(lock.id)) this.idle.set(lock.id, lock)
    } else {
      this.idle.delete(lock.id)
    }
  }

  private sendRequest(lock: ClientLock, mode: LockMode): void {
    const reqId = this.nextReqId++
    lock.request = { mode, reqId, oldMode: lock.mode }
    this.counters.requests++
    this.sendMsg({ kind: 'request', start: lock.range[0], end: lock.range[1], oldMode: lock.mode, mode, reqId })
  }

  /** Release the least recently used idle locks beyond lock_idle_count. */
  private shrinkIdle(): void {
    while (this.idle.size > this.lockIdleCount) {
      const [id, lock] = this.idle.entries().next().value as [string, ClientLock]
      this.idle.delete(id)
      this.counters.idleReleases++
      lock.work.push({ kind: 'release' })
      this.kick(lock)
    }
  }

  private grant(msg: LockGrantMsg): void {
    const lock = this.locks.get(lockId(msg.start))
    if (!lock || !lock.request || lock.request.reqId !== msg.reqId) {
      // a grant answering a resend we no longer wait for: the server's view stays above ours
      this.counters.staleGrants++
      return
    }
    this.counters.grants++
    const old = lock.mode
    lock.request = undefined
    lock.mode = msg.mode
    lock.writeSeq = isWriteMode(msg.mode) ? msg.writeSeq : 0
    if (isReadableMode(msg.mode) && !isReadableMode(old) && msg.rootsVersion > this.rootsVersion) {
      lock.refreshing = true
      void this.ensureRoots(msg.rootsVersion).then(() => {
        lock.refreshing = false
        this.kick(lock)
      })
    }
    this.kick(lock)
  }

  private invalidate(msg: LockInvalidateMsg): void {
    this.counters.invalidations++
    const lock = this.locks.get(lockId(msg.start))
    if (!lock) {
      // nothing held here: answer at once
      this.counters.noopInvalidations++
      this.sendMsg({ kind: 'invalidated', start: msg.start, end: msg.end, mode: LockMode.NULL, invId: msg.invId })
      return
    }
    lock.work.push({ kind: 'invalidate', msg })
    this.kick(lock)
  }

  /** Run one invalidation or release: the hook, then the new mode, then the message. */
  private async doWork(lock: ClientLock, w: Work): Promise<void> {
    const target = workTarget(w)
    const old = lock.mode
    let final = old
    if (!modeCovers(target, old)) {
      const info: InvalidateInfo = {
        wrote: lock.wrote,
        dirtyTransSeq: lock.dirtyTransSeq,
        release: w.kind === 'release',
      }
      let delay = this.opts.hookRetryMs ?? 100
      for (;;) {
        this.counters.hookCalls++
        try {
          await this.opts.onInvalidate(lock.range, old, target, info)
          break
        } catch (e) {
          this.counters.hookErrors++
          this.log(
            `invalidation of ${lockRangeString(lock.range)} ${lockModeName(old)}->${lockModeName(target)} failed, retrying: ${(e as Error).message}`,
          )
          if (this.closed) return
          await new Promise((r) => setTimeout(r, delay))
          delay = Math.min(delay * 2, 2000)
          if (this.closed) return
        }
      }
      if (this.closed) return
      // the server grants nothing on this lock while it waits for our answer, so the mode is
      // still `old` — unless a grant of a new server crossed an invalidation left from the old
      // one: never end above either
      final = lowerMode(lock.mode, target)
      lock.mode = final
      lock.wrote = false
      lock.dirtyTransSeq = 0
      if (!isWriteMode(final)) lock.writeSeq = 0
    } else if (w.kind === 'invalidate') {
      this.counters.noopInvalidations++
    }
    lock.work.shift()
    lock.working = false
    if (w.kind === 'invalidate') {
      this.sendMsg({ kind: 'invalidated', start: lock.range[0], end: lock.range[1], mode: final, invId: w.msg.invId })
    } else if (!lock.request) {
      // tell the server only now, when nothing here uses or caches the lock any more
      this.sendRequest(lock, LockMode.NULL)
    }
    this.kick(lock)
  }

  private ensureRoots(version: number): Promise<void> {
    if (version <= this.rootsVersion) return Promise.resolve()
    const cur = this.rootsRefresh
    if (cur && cur.version >= version) return cur.done
    const prev = cur?.done ?? Promise.resolve()
    const done = (async () => {
      await prev
      if (version <= this.rootsVersion) return
      let delay = this.opts.hookRetryMs ?? 100
      for (;;) {
        try {
          this.counters.rootsRefreshes++
          await this.opts.refreshRoots?.(version)
          break
        } catch (e) {
          this.log(`roots refresh to ${version} failed, retrying: ${(e as Error).message}`)
          if (this.closed) return
          await new Promise((r) => setTimeout(r, delay))
          delay = Math.min(delay * 2, 2000)
        }
      }
      if (version > this.rootsVersion) this.rootsVersion = version
    })()
    const entry = { version, done }
    this.rootsRefresh = entry
    void done.then(() => {
      if (this.rootsRefresh === entry) this.rootsRefresh = undefined
    })
    return done
  }

  private sendMsg(msg: LockClientMsg): void {
    try {
      this.opts.send(msg)
    } catch (e) {
      // lost with the connection: resendRequests() after the reconnect sends it again
      this.log(`lock message failed: ${(e as Error).message}`)
    }
  }

  private log(m: string): void {
    this.opts.log?.(m)
  }
}
