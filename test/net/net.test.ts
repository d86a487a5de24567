/*
 * The agent <-> server protocol end to end: a real Server on a formatted file-backed metadata
 * device behind a NetServer in a child process (server-child.ts), NetClients in this process.
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import * as grpc from '@grpc/grpc-js'
import { FileDevice } from '../../node-agent/src/storage/device.js'
import { FsError, isFsError, type Errno } from '../../node-agent/src/util/errors.js'
import { DATA_BLOCK_SIZE, FORMAT_VERSION, META_BLOCK_SIZE } from '../../node-agent/src/storage/format.js'
import { mkfs } from '../../node-agent/src/tools/mkfs.js'
import { NetClient, type NetClientOptions } from '../../node-agent/src/net/net-client.js'
import type { LockServerMsg, RecoveredLock } from '../../node-agent/src/protocol/lock-modes.js'
import { method, statusOfErrno, type LockEndpoint } from '../../node-agent/src/net/net-proto.js'
import { LockMode } from '../../node-agent/src/protocol/lock-modes.js'
import { NetServer } from '../../node-agent/src/net/net-server.js'
import {
  LOG_TREES_FINALIZED,
  encodeLogTrees,
  type LogTrees,
  type ServerApi,
} from '../../node-agent/src/protocol/server-api.js'

const FSID = 0x5c0f5c0f12345678n
const OTHER_FSID = 0xdeadbeef00c0ffeen
const META_BYTES = 128 << 20
const DATA_BYTES = 64 << 20
const CHILD = join(__dirname, 'server-child.js')

interface Child {
  proc: ChildProcess
  addr: string
  port: number
  stderr: () => string
  cmd(cmd: string, extra?: Record<string, unknown>): Promise<Record<string, unknown>>
  kill(): Promise<void>
  stop(): Promise<number | null>
}

const children = new Set<Child>()

/** Start server-child.js on `metaPath`, listening on `addr`; resolves once it serves. */
async function startChild(metaPath: string, addr: string, args: string[] = []): Promise<Child> {
  const proc = spawn(process.execPath, [CHILD, metaPath, addr, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  let err = ''
  proc.stderr!.on('data', (c: Buffer) => (err += c.toString()))
  const exited = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)))
  const waiting = new Map<number, (v: Record<string, unknown>) => void>()
  let nextId = 1
  let ready: (v: Record<string, unknown>) => void = () => undefined
  const readyP = new Promise<Record<string, unknown>>((res) => (ready = res))
  createInterface({ input: proc.stdout! }).on('line', (line) => {
    const j = JSON.parse(line) as Record<string, unknown>
    if (j.ready) return ready(j)
    waiting.get(Number(j.id))?.(j)
    waiting.delete(Number(j.id))
  })
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([
    readyP,
    exited.then((code) => {
      throw new Error(`server child exited (${code}) before serving:\n${err}`)
    }),
    new Promise<never>(
      (_, rej) => (timer = setTimeout(() => rej(new Error(`server child did not serve in 30 s:\n${err}`)), 30_000)),
    ),
  ])
    .catch((e: unknown) => {
      proc.kill('SIGKILL')
      throw e
    })
    .finally(() => clearTimeout(timer))
  const child: Child = {
    proc,
    addr: String(r.addr),
    port: Number(r.port),
    stderr: () => err,
    cmd(cmd, extra = {}) {
      const id = nextId++
      return new Promise((res) => {
        waiting.set(id, res)
        proc.stdin!.write(JSON.stringify({ id, cmd, ...extra }) + '\n')
      })
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL')
      await exited
      children.delete(child)
    },
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      const code = await exited
      children.delete(child)
      return code
    },
  }
  children.add(child)
  return child
}

const clients = new Set<NetClient>()
function client(addr: string, opts: NetClientOptions = {}): NetClient {
  const c = new NetClient(addr, { heartbeatMs: 200, callTimeoutMs: 10_000, retryForMs: 30_000, ...opts })
  clients.add(c)
  return c
}

async function rejectsWith(p: Promise<unknown>, code: Errno, re?: RegExp): Promise<FsError> {
  try {
    await p
  } catch (e) {
    assert.ok(isFsError(e), `expected an FsError, got ${String(e)}`)
    assert.equal(e.code, code, e.message)
    if (re) assert.match(e.message, re)
    return e
  }
  assert.fail(`expected ${code}`)
}

/** Stands in for lock-client.ts LockClient: records what the server sends. */
class FakeLockClient implements LockEndpoint {
  got: LockServerMsg[] = []
  held: RecoveredLock[] = []
  resends = 0
  receive(msg: LockServerMsg): void {
    this.got.push(msg)
  }
  recoveryReport(): RecoveredLock[] {
    return this.held
  }
  resendRequests(): void {
    this.resends++
  }
  async until(pred: () => boolean, ms = 10_000): Promise<void> {
    const deadline = Date.now() + ms
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`condition not met in ${ms} ms; got ${this.got.length} messages`)
      await new Promise((r) => setTimeout(r, 10))
    }
  }
}

function ranges(rs: Array<{ first: number; count: number }>): void {
  const s = [...rs].sort((a, b) => a.first - b.first)
  for (let i = 1; i < s.length; i++)
    assert.ok(
      s[i - 1]!.first + s[i - 1]!.count <= s[i]!.first,
      `inode ranges overlap: ${JSON.stringify(s[i - 1])} and ${JSON.stringify(s[i])}`,
    )
}

describe('agent↔server protocol (gRPC)', function () {
  this.timeout(120_000)
  let dir: string
  let metaPath: string
  let srv: Child
  let rid = 100

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'scoutfs-net-'))
    metaPath = join(dir, 'meta.img')
    const dataPath = join(dir, 'data.img')
    writeFileSync(metaPath, '')
    writeFileSync(dataPath, '')
    truncateSync(metaPath, META_BYTES)
    truncateSync(dataPath, DATA_BYTES)
    const meta = await FileDevice.open(metaPath)
    const data = await FileDevice.open(dataPath)
    await mkfs(meta, data, { quorumSlots: 1, fsid: FSID })
    await meta.close()
    await data.close()
    srv = await startChild(metaPath, '127.0.0.1:0', ['--locks'])
  })

  after(async () => {
    for (const c of clients) c.close()
    clients.clear()
    for (const c of [...children]) await c.kill()
    if (dir) rmSync(dir, { recursive: true, force: true })
  })

  it('greets with the right fsid and refuses a wrong one with EINVAL naming both', async () => {
    const c = client(srv.addr)
    const r = await c.greeting(++rid, FSID, FORMAT_VERSION)
    assert.equal(r.fsid, FSID)
    assert.equal(r.formatVersion, FORMAT_VERSION)
    assert.ok(c.serverInstance > 0)

    const bad = client(srv.addr, { heartbeatMs: 0 })
    const e = await rejectsWith(bad.greeting(++rid, OTHER_FSID, FORMAT_VERSION), 'EINVAL')
    assert.match(e.message, new RegExp(OTHER_FSID.toString(16)))
    assert.match(e.message, new RegExp(FSID.toString(16)))
    await rejectsWith(bad.greeting(rid, FSID, FORMAT_VERSION + 7), 'EINVAL', /format version/)
    const known = (await srv.cmd('clients')).clients as Array<{ rid: number }>
    assert.ok(!known.some((k) => k.rid === rid), 'a refused mount is not tracked')
  })

  it('round-trips log trees; a commit sent twice is a no-op; roots reflect commits', async () => {
    const c = client(srv.addr)
    const me = ++rid
    await c.greeting(me, FSID, FORMAT_VERSION)
    const lt = await c.getLogTrees(me)
    assert.equal(lt.rid, me)
    assert.ok(lt.getTransSeq > 0 && lt.commitTransSeq < lt.getTransSeq)
    assert.ok(lt.metaAvail.totalNr > 0 && lt.dataAvail.totalLen > 0, 'allocators are refilled')
    // a resend of getLogTrees returns the open transaction
    assert.deepEqual(await c.getLogTrees(me), lt)

    const before = await c.getRoots()
    const committed: LogTrees = { ...lt, maxItemSeq: lt.getTransSeq }
    await c.commitLogTrees(committed)
    const after1 = await c.getRoots()
    assert.ok(after1.version > before.version, 'the roots version moved')
    const mine = after1.logTrees.find((t) => t.rid === me)!
    assert.ok(mine, 'the committed tree is in the roots')
    assert.equal(mine.commitTransSeq, lt.getTransSeq)
    assert.equal(mine.maxItemSeq, lt.getTransSeq)

    await c.commitLogTrees(committed) // the resend
    const after2 = await c.getRoots()
    assert.deepEqual(
      after2.logTrees.find((t) => t.rid === me),
      mine,
      'the second commit changed nothing',
    )
    const next = await c.getLogTrees(me)
    assert.ok(next.getTransSeq > lt.getTransSeq, 'the next transaction has a later seq')
    assert.ok((await c.getLastSeq()) < next.getTransSeq, 'the open transaction bounds the last seq')
  })

  it('allocates inode ranges that never overlap across two clients', async () => {
    const a = client(srv.addr)
    const b = client(srv.addr)
    const ra = ++rid
    const rb = ++rid
    await Promise.all([a.greeting(ra, FSID, FORMAT_VERSION), b.greeting(rb, FSID, FORMAT_VERSION)])
    const all = await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 ? a : b).allocInodes(i % 2 ? ra : rb, 1 + ((i * 37) % 100))),
    )
    all.forEach((r, i) => assert.equal(r.count, 1 + ((i * 37) % 100)))
    ranges(all)
    await rejectsWith(a.allocInodes(ra, 0), 'EINVAL')
  })

  it('reports statfs numbers of the device', async () => {
    const c = client(srv.addr, { heartbeatMs: 0 })
    const s = await c.statfs()
    assert.equal(s.fsid, FSID)
    assert.equal(s.totalMetaBlocks, META_BYTES / META_BLOCK_SIZE)
    assert.equal(s.totalDataBlocks, DATA_BYTES / DATA_BLOCK_SIZE)
    assert.ok(s.freeMetaBlocks > 0 && s.freeMetaBlocks < s.totalMetaBlocks, `free meta ${s.freeMetaBlocks}`)
    assert.ok(s.freeDataBlocks > 0 && s.freeDataBlocks <= s.totalDataBlocks, `free data ${s.freeDataBlocks}`)
    assert.ok(s.inodeCount >= 1, 'the root directory')
    assert.equal(s.committedSeq, await c.getLastSeq())
  })

  it('tracks mounts by heartbeat and forgets them at farewell', async () => {
    const c = client(srv.addr, { heartbeatMs: 100 })
    const me = ++rid
    await c.greeting(me, FSID, FORMAT_VERSION)
    const lt = await c.getLogTrees(me)
    await c.commitLogTrees(lt)
    await new Promise((r) => setTimeout(r, 400))
    assert.ok(c.counters.heartbeats >= 2, `${c.counters.heartbeats} heartbeats`)
    type CI = { rid: number; lastHeartbeat: number; name: string }
    const seen = ((await srv.cmd('clients')).clients as CI[]).find((k) => k.rid === me)
    assert.ok(seen, 'the mount is tracked')
    assert.ok(Date.now() - seen.lastHeartbeat < 1000, `last heartbeat ${Date.now() - seen.lastHeartbeat} ms ago`)
    assert.match(seen.name, new RegExp(`:${process.pid}$`))

    await c.farewell(me)
    const gone = ((await srv.cmd('clients')).clients as CI[]).find((k) => k.rid === me)
    assert.equal(gone, undefined, 'forgotten after farewell')
    const t = (await c.getRoots()).logTrees.find((x) => x.rid === me && x.nr === lt.nr)
    // reclaimed: finalized (or already merged away)
    assert.ok(!t || t.flags & LOG_TREES_FINALIZED, 'its log tree was finalized')
    await c.farewell(me) // idempotent
  })

  it('rebuilds the FsError of a bogus request', async () => {
    const c = client(srv.addr, { heartbeatMs: 0 })
    const lt = await c.getLogTrees(++rid) // opens a tree for a rid that never greeted: allowed, as in-process
    await rejectsWith(
      c.commitLogTrees({ ...lt, rid: 987654, getTransSeq: 12345 }),
      'EINVAL',
      /no such open transaction/,
    )
    await rejectsWith(
      c.commitLogTrees({ ...lt, getTransSeq: lt.getTransSeq + 1000 }),
      'EINVAL',
      /no such open transaction/,
    )

    // a message whose fields disagree with its item is refused before it reaches the server
    const raw = new grpc.Client(srv.addr, grpc.credentials.createInsecure())
    try {
      const m = method('CommitLogTrees')
      const err = await new Promise<grpc.ServiceError>((res, rej) =>
        raw.makeUnaryRequest(
          m.path,
          m.requestSerialize,
          m.responseDeserialize,
          {
            item: encodeLogTrees(lt),
            rid: lt.rid + 1,
            nr: lt.nr,
            getTransSeq: lt.getTransSeq,
            commitTransSeq: lt.commitTransSeq,
          },
          (e) => (e ? res(e) : rej(new Error('accepted'))),
        ),
      )
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT)
      assert.deepEqual(err.metadata.get('scoutfs-errno'), ['EINVAL'])
      assert.match(err.details, /item holds/)
      const short = await new Promise<grpc.ServiceError>((res, rej) =>
        raw.makeUnaryRequest(
          m.path,
          m.requestSerialize,
          m.responseDeserialize,
          { item: Buffer.alloc(10), rid: 0, nr: 0, getTransSeq: 0, commitTransSeq: 0 },
          (e) => (e ? res(e) : rej(new Error('accepted'))),
        ),
      )
      assert.equal(short.code, grpc.status.INVALID_ARGUMENT)
    } finally {
      raw.close()
    }
  })

  it('carries the Locks stream in order both ways', async () => {
    const a = client(srv.addr)
    const b = client(srv.addr)
    const ra = ++rid
    const rb = ++rid
    const ea = new FakeLockClient()
    const eb = new FakeLockClient()
    const sendA = a.openLocks(ea) // before the greeting: messages wait for the stream
    const sendB = b.openLocks(eb)
    const k = (i: number): Buffer => Buffer.from([0x0c, i >> 8, i & 0xff])
    for (let i = 1; i <= 5; i++)
      sendA({ kind: 'request', start: k(i), end: k(i), oldMode: LockMode.NULL, mode: LockMode.READ, reqId: i })
    await a.greeting(ra, FSID, FORMAT_VERSION)
    await b.greeting(rb, FSID, FORMAT_VERSION)
    for (let i = 6; i <= 300; i++)
      sendA({ kind: 'request', start: k(i), end: k(i), oldMode: LockMode.NULL, mode: LockMode.READ, reqId: i })
    await ea.until(() => ea.got.length >= 300)
    assert.deepEqual(
      ea.got.map((m) => (m.kind === 'grant' ? m.reqId : -1)),
      Array.from({ length: 300 }, (_, i) => i + 1),
      'grants arrive in request order',
    )
    const g = ea.got[41]!
    assert.ok(g.kind === 'grant' && g.writeSeq === 1042 && g.mode === LockMode.READ && g.start.equals(k(42)))

    // b takes WRITE: a is told to drop to NULL, answers; the server sees the answer after a's requests
    sendB({ kind: 'request', start: k(7), end: k(7), oldMode: LockMode.NULL, mode: LockMode.WRITE, reqId: 1 })
    await ea.until(() => ea.got.some((m) => m.kind === 'invalidate'))
    const inv = ea.got.find((m) => m.kind === 'invalidate')!
    assert.ok(
      inv.kind === 'invalidate' &&
        inv.start.equals(k(7)) &&
        inv.oldMode === LockMode.WRITE &&
        inv.mode === LockMode.NULL,
    )
    await eb.until(() => eb.got.length === 1)
    sendA({ kind: 'invalidated', start: inv.start, end: inv.end, mode: LockMode.NULL, invId: inv.invId })
    let log: Array<Record<string, unknown>> = []
    for (let i = 0; i < 50 && !log.some((l) => l.op === 'streamInvalidated' && l.rid === ra); i++) {
      await new Promise((r) => setTimeout(r, 20))
      log = (await srv.cmd('lockLog')).log as Array<Record<string, unknown>>
    }
    const mine = log.filter((l) => l.rid === ra)
    assert.deepEqual(mine[0], { op: 'hello', rid: ra, held: [] })
    assert.deepEqual(
      mine.filter((l) => l.op === 'streamRequest').map((l) => l.reqId),
      Array.from({ length: 300 }, (_, i) => i + 1),
      'requests arrive in order',
    )
    assert.deepEqual(mine.at(-1), {
      op: 'streamInvalidated',
      rid: ra,
      invId: inv.invId,
      mode: LockMode.NULL,
      start: k(7).toString('hex'),
    })
    type CI = { rid: number; lockStream: boolean }
    assert.ok(((await srv.cmd('clients')).clients as CI[]).find((c) => c.rid === ra)?.lockStream)
  })

  it('survives a server restart on the same port', async () => {
    const c = client(srv.addr, { heartbeatMs: 200, backoffMaxMs: 500 })
    const me = ++rid
    const locks = new FakeLockClient()
    locks.held = [
      { start: Buffer.from('0d01', 'hex'), end: Buffer.from('0d01', 'hex'), mode: LockMode.WRITE, writeSeq: 99 },
    ]
    c.openLocks(locks)
    await c.greeting(me, FSID, FORMAT_VERSION)
    const before = await c.statfs()
    const instance = c.serverInstance
    const port = srv.port

    await srv.kill() // SIGKILL: no clean stop, the lease must time out
    const t0 = Date.now()
    const late = c.allocInodes(me, 10) // in flight while the server is down
    await new Promise((r) => setTimeout(r, 300))
    srv = await startChild(metaPath, `127.0.0.1:${port}`, ['--locks'])
    const restartMs = Date.now() - t0

    const r = await late
    assert.equal(r.count, 10)
    const after = await c.statfs()
    assert.equal(after.fsid, before.fsid)
    assert.ok(c.counters.retries > 0, 'calls were resent')
    assert.notEqual(c.serverInstance, instance, 'the mount greeted the new server')
    type CI = { rid: number; lockStream: boolean }
    const seen = ((await srv.cmd('clients')).clients as CI[]).some((k) => k.rid === me)
    assert.ok(seen, 'the new server knows the mount')
    // its Locks stream comes back
    let back = false
    for (let i = 0; i < 200 && !back; i++) {
      back = !!((await srv.cmd('clients')).clients as CI[]).find((x) => x.rid === me)?.lockStream
      if (!back) await new Promise((r) => setTimeout(r, 50))
    }
    assert.ok(back, 'the Locks stream reopened on the new server')
    // the Locks stream came back with a hello carrying the recovery report, and requests were resent
    await locks.until(() => locks.resends > 0)
    let hello: Record<string, unknown> | undefined
    for (let i = 0; i < 100 && !hello; i++) {
      const log = (await srv.cmd('lockLog')).log as Array<Record<string, unknown>>
      hello = log.find((l) => l.op === 'hello' && l.rid === me)
      if (!hello) await new Promise((r) => setTimeout(r, 50))
    }
    assert.deepEqual(hello, { op: 'hello', rid: me, held: [{ start: '0d01', mode: LockMode.WRITE, writeSeq: 99 }] })
    console.log(`      (server restart took ${restartMs} ms; the call resolved ${Date.now() - t0} ms after the kill)`)
  })

  it('gives up with ENOTCONN when no server comes back, and closes cleanly', async () => {
    const c = client('127.0.0.1:1', { retryForMs: 600, backoffMaxMs: 100, heartbeatMs: 0 })
    const t0 = Date.now()
    await rejectsWith(c.statfs(), 'ENOTCONN', /no answer after \d+ attempts/)
    assert.ok(Date.now() - t0 < 5000)
    c.close()
    await rejectsWith(c.statfs(), 'ENOTCONN', /closed/)
  })
})

describe('NetServer error mapping and lock fallbacks (in-process)', function () {
  const errnos: Errno[] = [
    'EINVAL',
    'ENOENT',
    'EEXIST',
    'ENOSPC',
    'EBUSY',
    'ESTALE',
    'EIO',
    'EROFS',
    'ENOSYS',
    'ETIMEDOUT',
    'EUCLEAN',
  ]
  let net: NetServer
  let c: NetClient

  before(async () => {
    // a ServerApi whose allocInodes fails with errnos[count - 1]
    const api: ServerApi = {
      greeting: async (_rid, fsid, formatVersion) => ({ fsid, formatVersion }),
      getLogTrees: async () => {
        throw new TypeError('a bug')
      },
      commitLogTrees: async () => undefined,
      allocInodes: async (_rid, count) => {
        throw new FsError(errnos[count - 1]!, `failure number ${count}`)
      },
      getRoots: async () => ({ fsRoot: { ref: { blkno: 0, seq: 0 }, height: 0 }, logTrees: [], version: 1 }),
      getLastSeq: async () => 0,
      statfs: async () => {
        throw new FsError('ENXIO', 'the server has stopped')
      },
      listMounts: async () => [],
      farewell: async () => undefined,
      openInodes: async () => [],
    } as ServerApi
    net = await NetServer.listen(api, '127.0.0.1:0')
    c = new NetClient(net.addr, { heartbeatMs: 0, retryForMs: 500, backoffMaxMs: 100 })
  })

  after(async () => {
    c?.close()
    await net?.close()
  })

  it('rebuilds every errno the server throws, with its message', async () => {
    for (let i = 0; i < errnos.length; i++) {
      const e = await rejectsWith(c.allocInodes(1, i + 1), errnos[i]!)
      assert.equal(e.message, `${errnos[i]}: failure number ${i + 1}`)
    }
    assert.equal(statusOfErrno('EBUSY'), grpc.status.ABORTED)
    assert.equal(statusOfErrno('ESTALE'), grpc.status.FAILED_PRECONDITION)
  })

  it('refuses to listen on a port in use with EBUSY', async () => {
    await rejectsWith(
      NetServer.listen({ getRoots: async () => ({ version: 1 }) } as unknown as ServerApi, net.addr),
      'EBUSY',
      /EADDRINUSE/,
    )
  })

  it('turns a non-FsError into EIO and a stopping server into retries, then ENXIO', async () => {
    await rejectsWith(c.getLogTrees(1), 'EIO', /TypeError: a bug/)
    const before = c.counters.retries
    await rejectsWith(c.statfs(), 'ENXIO', /no answer after/)
    assert.ok(c.counters.retries > before, 'ENXIO (UNAVAILABLE) was resent')
  })

  it('refuses the Locks stream with ENOSYS without a lock server, and does not retry it', async () => {
    const logged: string[] = []
    const l = new NetClient(net.addr, { heartbeatMs: 0, log: (msg) => logged.push(msg) })
    try {
      l.openLocks(new FakeLockClient())
      await l.greeting(5, 1n, 1)
      await new Promise((r) => setTimeout(r, 300))
      assert.equal(l.counters.lockStreams, 1)
      assert.ok(
        logged.includes('the server runs no lock server'),
        `the Locks stream should end UNIMPLEMENTED (ENOSYS); logged: ${logged.join('; ')}`,
      )
    } finally {
      l.close()
    }
  })
})

describe('NetClient address resolver (in-process)', function () {
  /** a ServerApi that answers greetings and roots of version `version` */
  const stub = (version: number): ServerApi =>
    ({
      greeting: async (_rid: number, fsid: bigint, formatVersion: number) => ({ fsid, formatVersion }),
      getRoots: async () => ({ fsRoot: { ref: { blkno: 0, seq: 0 }, height: 0 }, logTrees: [], version }),
    }) as unknown as ServerApi

  it('asks the resolver again after a lost connection and follows the new address', async () => {
    const a = await NetServer.listen(stub(1), '127.0.0.1:0')
    const b = await NetServer.listen(stub(2), '127.0.0.1:0')
    let current = a.addr
    let asked = 0
    let failOnce = false
    const c = new NetClient(
      () => {
        asked++
        if (failOnce) {
          failOnce = false
          throw new Error('no leader yet')
        }
        return current
      },
      { heartbeatMs: 0, retryForMs: 10_000, backoffMaxMs: 100 },
    )
    try {
      await c.greeting(7, 1n, 1)
      assert.equal((await c.getRoots()).version, 1)
      assert.equal(c.addr, a.addr)
      const before = asked
      assert.equal((await c.getRoots()).version, 1)
      assert.equal(asked, before, 'a live connection is not resolved again')

      await a.close(0)
      current = b.addr
      failOnce = true // a resolver that fails counts as an unreachable server: resent
      assert.equal((await c.getRoots()).version, 2)
      assert.equal(c.addr, b.addr)
      assert.ok(asked >= before + 2, `resolved ${asked - before} more times`)
      assert.ok(c.counters.retries > 0)
    } finally {
      c.close()
      await a.close(0)
      await b.close(0)
    }
  })
})
