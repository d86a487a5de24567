/*
 * The in-process transport of the test harness (test/harness/cluster.ts): what stands between
 * one mount and the server role when both run in this process, keeping the contracts the gRPC
 * transport keeps (net/net-client.ts, net/net-server.ts):
 *
 *  - MountLink.api is the mount's ServerApi.  Every call is delivered on a later turn of the
 *    event loop (never re-entering the caller synchronously), its arguments and its result
 *    are copied through the wire codecs (a mount can never share, or mutate, the server's
 *    objects and buffers), and with `duplicateProb` a request is delivered twice (the reply
 *    of the first "lost"), which every request must survive (protocol/server-api.ts).  While
 *    the server role is down, calls wait for the next one, as NetClient's retries do.
 *  - Lock messages go both ways through ordered queues, drained on later turns (the contract
 *    in protocol/lock-modes.ts: ordered per direction, async, copied).  Each (re)opened lock
 *    stream starts with a hello carrying the client's recoveryReport(); after a reopen the
 *    client's outstanding requests are resent; messages sent while no stream is open wait.
 *    Open-map requests (protocol/open-map.ts) ride the same queues: the link answers one
 *    from the endpoint's openMap at delivery and sends the reply up the stream it came by.
 *  - cut() is a dead process: calls in flight and later fail with ENOTCONN, queued and later
 *    messages are dropped, and the mount's device handles are fenced (FencedDevice).
 */
import { FsError } from '../../node-agent/src/util/errors.js'
import type { BlockDevice } from '../../node-agent/src/storage/device.js'
import { ROOT_SIZE, readRoot, writeRoot } from '../../node-agent/src/storage/format.js'
import type { LockClientMsg, LockServerMsg, RecoveredLock } from '../../node-agent/src/protocol/lock-modes.js'
import {
  decodeLogTrees,
  encodeLogTrees,
  type GreetingReply,
  type LogTrees,
  type Roots,
  type ServerApi,
  type ServerStatfs,
} from '../../node-agent/src/protocol/server-api.js'
import type { OpenMapReplyMsg, OpenMapRequestMsg, OpenMapSource } from '../../node-agent/src/protocol/open-map.js'
import type { Rng } from '../helpers/rng.js'

/* ---- copies (what crossing a wire does to a value) ---------------------------------------- */

export function copyLogTrees(lt: LogTrees): LogTrees {
  return decodeLogTrees(encodeLogTrees(lt))
}

export function copyRoots(r: Roots): Roots {
  const b = Buffer.alloc(ROOT_SIZE)
  writeRoot(b, 0, r.fsRoot)
  return { fsRoot: readRoot(b, 0), logTrees: r.logTrees.map(copyLogTrees), version: r.version }
}

export function copyLockClientMsg(m: LockClientMsg): LockClientMsg {
  return { ...m, start: Buffer.from(m.start), end: Buffer.from(m.end) }
}

export function copyLockServerMsg(m: LockServerMsg): LockServerMsg {
  return { ...m, start: Buffer.from(m.start), end: Buffer.from(m.end) }
}

export function copyRecovered(held: readonly RecoveredLock[]): RecoveredLock[] {
  return held.map((r) => ({ ...r, start: Buffer.from(r.start), end: Buffer.from(r.end) }))
}

/** One turn of the event loop (after pending I/O callbacks, like a network round trip). */
export const turn = (): Promise<void> => new Promise((res) => setImmediate(res))

/* ---- devices ------------------------------------------------------------------------------ */

/**
 * One process's handle on a shared device: every operation fails with EIO once fenced (the
 * process is dead: nothing it had in flight may land after that), and close() closes only
 * the handle, never the shared device.
 */
export class FencedDevice implements BlockDevice {
  private fenced = false
  private closed = false

  constructor(
    private readonly inner: BlockDevice,
    readonly path: string,
  ) {}

  get size(): number {
    return this.inner.size
  }
  get direct(): boolean {
    return this.inner.direct
  }

  fence(): void {
    this.fenced = true
  }

  private live(op: string): void {
    if (this.fenced) throw new FsError('EIO', `${this.path}: ${op} by a process that is gone`)
    if (this.closed) throw new FsError('EIO', `${this.path}: ${op} after close`)
  }

  async read(off: number, len: number): Promise<Buffer> {
    this.live('read')
    return this.inner.read(off, len)
  }
  async readInto(off: number, buf: Buffer): Promise<void> {
    this.live('read')
    await this.inner.readInto(off, buf)
  }
  async write(off: number, buf: Buffer): Promise<void> {
    this.live('write')
    // a copy: the caller may reuse its buffer once the write resolved, never before
    await this.inner.write(off, Buffer.from(buf))
  }
  async flush(): Promise<void> {
    this.live('flush')
    await this.inner.flush()
  }
  async close(): Promise<void> {
    this.closed = true
  }
}

/* ---- the server role as a link sees it ----------------------------------------------------- */

/** What the server end offers the links (server-role.ts InProcTransport). */
export interface ServerEnd {
  readonly api: ServerApi
  /** a lock message from mount `rid` */
  receiveLock(rid: number, msg: LockClientMsg): void
  /** mount `rid` (re)opened its lock stream holding `held` */
  hello(rid: number, held: RecoveredLock[]): void
  /** mount `rid` said farewell (after the server's farewell()): the role drops its locks */
  farewell(rid: number): void
  /** mount `rid` made a request (its liveness) */
  touch(rid: number): void
  /** mount `rid` answered an open-map request */
  openMapReply(rid: number, msg: OpenMapReplyMsg): void
}

/** The lock client as the link sees it (net-proto.ts LockEndpoint). */
export interface LockEndpoint {
  receive(msg: LockServerMsg): void
  recoveryReport(): RecoveredLock[]
  resendRequests(): void
  /** answers open-map requests (none: nothing is open) */
  openMap?: OpenMapSource
}

type Up = { kind: 'hello'; held: RecoveredLock[] } | LockClientMsg | OpenMapReplyMsg
type Down = LockServerMsg | OpenMapRequestMsg

export interface LinkOptions {
  /** randomizes delivery delays and duplicate requests (reproducible by the cluster's seed) */
  rng: Rng
  /** probability that a request is delivered twice, the first reply lost */
  duplicateProb?: number
  /** delivery of each lock message waits 0..maxDelayTurns extra turns (order is kept) */
  maxDelayTurns?: number
}

/** An ordered, asynchronous, one-way queue: items are handed to `deliver` one at a time, in order. */
class Pipe<T> {
  private readonly q: T[] = []
  private pumping = false
  private dead = false

  constructor(
    private readonly deliver: (m: T) => void,
    private readonly delayTurns: () => number,
  ) {}

  push(m: T): void {
    if (this.dead) return
    this.q.push(m)
    if (!this.pumping) void this.pump()
  }

  private async pump(): Promise<void> {
    this.pumping = true
    try {
      while (this.q.length > 0 && !this.dead) {
        for (let n = 1 + this.delayTurns(); n > 0; n--) await turn()
        if (this.dead) break
        const m = this.q.shift()!
        this.deliver(m)
      }
    } finally {
      this.pumping = false
    }
  }

  /** the connection is gone: what is queued is lost, later pushes too */
  kill(): void {
    this.dead = true
    this.q.length = 0
  }

  get length(): number {
    return this.q.length
  }
}

/**
 * One mount's connection to the server role: its ServerApi and its lock stream.  The server
 * end may change (a restarted server role: connect() again); cut() is the mount's death.
 */
export class MountLink {
  readonly api: ServerApi
  private server: ServerEnd | undefined
  private serverUp: Promise<void>
  private serverUpResolve: (() => void) | undefined
  private alive = true
  private endpoint: LockEndpoint | undefined
  private up: Pipe<Up> | undefined
  private down: Pipe<Down> | undefined
  /** lock messages sent while no stream is open */
  private backlog: LockClientMsg[] = []
  private streamsOpened = 0
  private greeted = false
  private readonly inflight = new Set<(e: Error) => void>()
  readonly counters = { calls: 0, duplicates: 0, lockUp: 0, lockDown: 0, dropped: 0 }

  constructor(
    readonly rid: number,
    private readonly o: LinkOptions,
  ) {
    this.serverUp = new Promise((res) => (this.serverUpResolve = res))
    this.api = this.makeApi()
  }

  get isAlive(): boolean {
    return this.alive
  }

  /** whether a lock stream to the server is open (the mount is alive and greeted it) */
  get hasLockStream(): boolean {
    return this.alive && this.up !== undefined
  }

  /* ---- the server's side ---------------------------------------------------------------- */

  /** Attach to a (new) server role; an open lock stream is reopened to it. */
  connect(server: ServerEnd): void {
    if (!this.alive) return
    this.server = server
    this.serverUpResolve?.()
    this.serverUpResolve = undefined
    if (this.endpoint && this.greeted) this.openStream()
  }

  /** The server role went away: calls wait for the next one, the lock stream breaks. */
  disconnect(): void {
    this.server = undefined
    this.serverUp = new Promise((res) => (this.serverUpResolve = res))
    this.up?.kill()
    this.down?.kill()
    this.up = this.down = undefined
  }

  /** A lock message from the server to this mount. */
  sendDown(msg: LockServerMsg): void {
    if (!this.alive || !this.down) {
      this.counters.dropped++
      return
    }
    this.down.push(copyLockServerMsg(msg))
  }

  /** An open-map request from the server to this mount (lost without a stream, like a lock message). */
  sendOpenMap(msg: OpenMapRequestMsg): boolean {
    if (!this.alive || !this.down) return false
    this.down.push({ ...msg })
    return true
  }

  /* ---- the mount's side ----------------------------------------------------------------- */

  /** Carry `ep`'s lock messages from now on (net-client.ts openLocks); returns its send function. */
  openLocks(ep: LockEndpoint): (msg: LockClientMsg) => void {
    if (this.endpoint) throw new FsError('EBUSY', 'a lock client is already attached')
    this.endpoint = ep
    if (this.greeted && this.server) this.openStream()
    return (msg) => this.sendUp(msg)
  }

  private sendUp(msg: LockClientMsg): void {
    if (!this.alive) return
    const c = copyLockClientMsg(msg)
    if (this.up) {
      this.counters.lockUp++
      this.up.push(c)
    } else this.backlog.push(c)
  }

  private openStream(): void {
    const ep = this.endpoint!
    const server = this.server!
    this.up?.kill()
    this.down?.kill()
    const delay = (): number => (this.o.maxDelayTurns ? this.o.rng.int(this.o.maxDelayTurns + 1) : 0)
    this.up = new Pipe<Up>((m) => {
      if (m.kind === 'hello') server.hello(this.rid, m.held)
      else if (m.kind === 'openMapReply') {
        server.touch(this.rid)
        server.openMapReply(this.rid, m)
      } else {
        server.touch(this.rid)
        server.receiveLock(this.rid, m)
      }
    }, delay)
    const up = this.up
    this.down = new Pipe<Down>((m) => {
      this.counters.lockDown++
      if (m.kind === 'openMapRequest') {
        const inos = ep.openMap?.openInodes(m.group) ?? []
        up.push({ kind: 'openMapReply', reqId: m.reqId, inos: [...inos] })
      } else ep.receive(m)
    }, delay)
    const reopen = this.streamsOpened++ > 0
    this.up.push({ kind: 'hello', held: copyRecovered(ep.recoveryReport()) })
    for (const m of this.backlog.splice(0)) this.up.push(m)
    if (reopen) ep.resendRequests()
  }

  /** The mount's process is gone: nothing more goes either way. */
  cut(): void {
    if (!this.alive) return
    this.alive = false
    this.up?.kill()
    this.down?.kill()
    this.backlog = []
    const err = new FsError('ENOTCONN', `mount ${this.rid.toString(16)} is gone`)
    for (const f of this.inflight) f(err)
    this.inflight.clear()
  }

  /** Deliver one request to the server (twice, sometimes), on later turns, copying both ways. */
  private async call<T>(name: string, fn: (s: ServerEnd) => Promise<T>, copy: (r: T) => T): Promise<T> {
    if (!this.alive) throw new FsError('ENOTCONN', `mount ${this.rid.toString(16)} is gone (${name})`)
    this.counters.calls++
    let fail!: (e: Error) => void
    const dead = new Promise<never>((_, rej) => (fail = rej))
    dead.catch(() => undefined)
    this.inflight.add(fail)
    try {
      const attempt = async (): Promise<T> => {
        for (;;) {
          await Promise.race([this.serverUp, dead])
          await turn()
          const s = this.server
          if (!s) continue
          s.touch(this.rid)
          try {
            const r = await fn(s)
            await turn()
            return copy(r)
          } catch (e) {
            // a server that is stopping refuses with ENXIO: NetClient resends to the next one
            if (s !== this.server && e instanceof FsError && e.code === 'ENXIO') continue
            throw e
          }
        }
      }
      const run = async (): Promise<T> => {
        if (this.o.duplicateProb && this.o.rng.bool(this.o.duplicateProb)) {
          this.counters.duplicates++
          await attempt().catch(() => undefined) // its reply is lost; the resend's counts
        }
        return attempt()
      }
      return await Promise.race([run(), dead])
    } finally {
      this.inflight.delete(fail)
    }
  }

  private makeApi(): ServerApi {
    const same = <T>(r: T): T => r
    return {
      greeting: async (rid, fsid, formatVersion): Promise<GreetingReply> => {
        const r = await this.call(
          'greeting',
          (s) => s.api.greeting(rid, fsid, formatVersion),
          (g) => ({ ...g }),
        )
        if (rid === this.rid && !this.greeted) {
          this.greeted = true
          if (this.endpoint && this.server) this.openStream()
        }
        return r
      },
      getLogTrees: (rid) => this.call('getLogTrees', (s) => s.api.getLogTrees(rid), copyLogTrees),
      commitLogTrees: (lt) => {
        const sent = copyLogTrees(lt)
        return this.call('commitLogTrees', (s) => s.api.commitLogTrees(copyLogTrees(sent)), same)
      },
      allocInodes: (rid, count) =>
        this.call(
          'allocInodes',
          (s) => s.api.allocInodes(rid, count),
          (r) => ({ ...r }),
        ),
      getRoots: () => this.call('getRoots', (s) => s.api.getRoots(), copyRoots),
      getLastSeq: () => this.call('getLastSeq', (s) => s.api.getLastSeq(), same),
      statfs: () =>
        this.call(
          'statfs',
          (s) => s.api.statfs(),
          (r: ServerStatfs) => ({ ...r }),
        ),
      listMounts: () =>
        this.call(
          'listMounts',
          (s) => s.api.listMounts(),
          (r) => [...r],
        ),
      openInodes: (rid, group) =>
        this.call(
          'openInodes',
          (s) => s.api.openInodes(rid, group),
          (r) => [...r],
        ),
      farewell: async (rid) => {
        await this.call(
          'farewell',
          async (s) => {
            await s.api.farewell(rid)
            s.farewell(rid)
          },
          same,
        )
      },
    }
  }
}
