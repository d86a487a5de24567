/*
 * The agent <-> server protocol (proto/scoutfs.proto) as both ends of the network see it:
 * the service definition built at runtime from the .proto with protobufjs (no generated code,
 * no proto-loader), conversions between the wire messages and the ServerApi types, the
 * mapping of FsErrors to gRPC statuses and back, the events the server pushes, and the
 * messages of the Locks stream with the interfaces a lock server and a lock client implement
 * to plug into NetServer and NetClient.
 *
 * Errors.  A failing RPC carries the errno name in the trailing metadata key `scoutfs-errno`
 * and the FsError's message (without its "EINVAL: " prefix) as the status details; the client
 * rebuilds `new FsError(errno, details)`, the same error the server threw.  The status code
 * is chosen from the errno for gRPC-level tools and for the retry rule:
 *
 *   EINVAL                     INVALID_ARGUMENT
 *   ENOENT, ENODATA            NOT_FOUND
 *   EEXIST                     ALREADY_EXISTS
 *   ENOSPC, ENOBUFS, E2BIG     RESOURCE_EXHAUSTED
 *   ESTALE, EROFS, ENOTCONN    FAILED_PRECONDITION  (the caller must refresh or re-greet)
 *   EBUSY                      ABORTED              (contention: not retried by the transport;
 *                                                    the caller decides whether to wait)
 *   EPERM, EACCES              PERMISSION_DENIED
 *   ERANGE, EOVERFLOW, EFBIG   OUT_OF_RANGE
 *   ENOSYS, EOPNOTSUPP         UNIMPLEMENTED
 *   ETIMEDOUT                  DEADLINE_EXCEEDED
 *   ENXIO                      UNAVAILABLE          (the server is stopping: try again, a new
 *                                                    server will answer)
 *   anything else, and errors  INTERNAL             (errno kept; non-FsErrors become EIO)
 *   that are not FsErrors
 *
 * UNAVAILABLE is the one status the client resends on (every request is idempotent), so only
 * transport failures and a stopping server use it: EBUSY deliberately does not.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protobuf from 'protobufjs'
import { FsError, type Errno } from '../util/errors.js'
import { ROOT_SIZE, readRoot, writeRoot } from '../storage/format.js'
import type { LockClientMsg, LockServerMsg, RecoveredLock } from '../protocol/lock-modes.js'
import {
  LOG_TREES_SIZE,
  decodeLogTrees,
  encodeLogTrees,
  type LogTrees,
  type Roots,
  type ServerStatfs,
} from '../protocol/server-api.js'

export const PROTO_PACKAGE = 'scoutfs.v1'
export const SERVICE_NAME = `${PROTO_PACKAGE}.ScoutfsServer`
/** trailing metadata key carrying the errno name of a failure */
export const ERRNO_KEY = 'scoutfs-errno'

/** A decoded message: protobufjs's plain object (camelCase fields, 64-bit values as strings). */
export type Wire = Record<string, unknown>

/* ---- loading the .proto ------------------------------------------------------------------- */

/** proto/ sits at the repository root: four levels above dist/node-agent/src/net, three above node-agent/src/net. */
export function protoPath(): string {
  const candidates = [
    process.env.SCOUTFS_PROTO_DIR && join(process.env.SCOUTFS_PROTO_DIR, 'scoutfs.proto'),
    join(__dirname, '..', '..', '..', '..', 'proto', 'scoutfs.proto'),
    join(__dirname, '..', '..', '..', 'proto', 'scoutfs.proto'),
  ].filter((p): p is string => !!p)
  const found = candidates.find((p) => existsSync(p))
  if (!found) throw new FsError('ENOENT', `scoutfs.proto not found; looked at ${candidates.join(', ')}`)
  return found
}

const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: Number, defaults: true, oneofs: true }

interface Loaded {
  root: protobuf.Root
  service: protobuf.Service
  definition: grpc.ServiceDefinition
}
let loaded: Loaded | undefined

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

function serializer(t: protobuf.Type): (v: Wire) => Buffer {
  return (v) => asBuffer(t.encode(t.fromObject(v)).finish())
}

function deserializer(t: protobuf.Type): (b: Buffer) => Wire {
  return (b) => t.toObject(t.decode(b), TO_OBJECT)
}

/** The protocol, loaded once per process. */
export function proto(): Loaded {
  if (loaded) return loaded
  const root = protobuf.loadSync(protoPath())
  root.resolveAll()
  const service = root.lookupService(SERVICE_NAME)
  const definition: Record<string, grpc.MethodDefinition<Wire, Wire>> = {}
  for (const m of service.methodsArray) {
    m.resolve()
    const req = m.resolvedRequestType!
    const res = m.resolvedResponseType!
    definition[m.name] = {
      path: `/${SERVICE_NAME}/${m.name}`,
      requestStream: !!m.requestStream,
      responseStream: !!m.responseStream,
      requestSerialize: serializer(req),
      requestDeserialize: deserializer(req),
      responseSerialize: serializer(res),
      responseDeserialize: deserializer(res),
      originalName: m.name[0]!.toLowerCase() + m.name.slice(1),
    }
  }
  loaded = { root, service, definition }
  return loaded
}

/** The method definition of one RPC ('Greeting', 'Events', ...). */
export function method(name: string): grpc.MethodDefinition<Wire, Wire> {
  const m = proto().definition[name]
  if (!m) throw new FsError('EINVAL', `${SERVICE_NAME} has no method ${name}`)
  return m as grpc.MethodDefinition<Wire, Wire>
}

/* ---- field helpers ------------------------------------------------------------------------ */

/** A uint64 field as a number; refuses values past 2^53 rather than rounding them. */
export function num(v: unknown, what = 'field'): number {
  if (v === undefined || v === null || v === '') return 0
  const n = typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : Number(String(v))
  if (!Number.isSafeInteger(n) || n < 0) throw new FsError('EINVAL', `${what} ${String(v)} is not a u64 below 2^53`)
  return n
}

/** A fixed64 field as a bigint. */
export function big(v: unknown): bigint {
  if (v === undefined || v === null || v === '') return 0n
  return BigInt(typeof v === 'bigint' ? v : String(v))
}

export function buf(v: unknown): Buffer {
  if (v === undefined || v === null) return Buffer.alloc(0)
  if (v instanceof Uint8Array) return asBuffer(v)
  throw new FsError('EINVAL', `expected bytes, got ${typeof v}`)
}

/* ---- ServerApi types <-> wire ------------------------------------------------------------- */

export function logTreesToWire(lt: LogTrees): Wire {
  return {
    item: encodeLogTrees(lt),
    rid: lt.rid,
    nr: lt.nr,
    getTransSeq: lt.getTransSeq,
    commitTransSeq: lt.commitTransSeq,
  }
}

/** The item is authoritative; the repeated fields must agree with it. */
export function logTreesFromWire(w: Wire): LogTrees {
  const item = buf(w.item)
  if (item.length !== LOG_TREES_SIZE)
    throw new FsError('EINVAL', `log trees of ${item.length} bytes: a log_trees item is ${LOG_TREES_SIZE} bytes`)
  const lt = decodeLogTrees(item)
  const rid = num(w.rid, 'rid')
  const nr = num(w.nr, 'nr')
  const get = num(w.getTransSeq, 'get_trans_seq')
  const commit = num(w.commitTransSeq, 'commit_trans_seq')
  if (lt.rid !== rid || lt.nr !== nr || lt.getTransSeq !== get || lt.commitTransSeq !== commit)
    throw new FsError(
      'EINVAL',
      `log trees message says ${rid}.${nr} seq ${get}/${commit} but its item holds ` +
        `${lt.rid}.${lt.nr} seq ${lt.getTransSeq}/${lt.commitTransSeq}`,
    )
  return lt
}

export function rootsToWire(r: Roots): Wire {
  const fsRoot = Buffer.alloc(ROOT_SIZE)
  writeRoot(fsRoot, 0, r.fsRoot)
  return { fsRoot, logTrees: r.logTrees.map(encodeLogTrees), version: r.version }
}

export function rootsFromWire(w: Wire): Roots {
  const fsRoot = buf(w.fsRoot)
  if (fsRoot.length !== ROOT_SIZE)
    throw new FsError('EINVAL', `fs root of ${fsRoot.length} bytes: a root is ${ROOT_SIZE}`)
  const lts = Array.isArray(w.logTrees) ? w.logTrees : []
  return {
    fsRoot: readRoot(fsRoot, 0),
    logTrees: lts.map((b) => {
      const item = buf(b)
      if (item.length !== LOG_TREES_SIZE)
        throw new FsError('EINVAL', `log trees of ${item.length} bytes: a log_trees item is ${LOG_TREES_SIZE} bytes`)
      return decodeLogTrees(item)
    }),
    version: num(w.version, 'version'),
  }
}

export function statfsToWire(s: ServerStatfs): Wire {
  return {
    fsid: s.fsid.toString(),
    totalMetaBlocks: s.totalMetaBlocks,
    freeMetaBlocks: s.freeMetaBlocks,
    totalDataBlocks: s.totalDataBlocks,
    freeDataBlocks: s.freeDataBlocks,
    inodeCount: s.inodeCount,
    committedSeq: s.committedSeq,
  }
}

export function statfsFromWire(w: Wire): ServerStatfs {
  return {
    fsid: big(w.fsid),
    totalMetaBlocks: num(w.totalMetaBlocks),
    freeMetaBlocks: num(w.freeMetaBlocks),
    totalDataBlocks: num(w.totalDataBlocks),
    freeDataBlocks: num(w.freeDataBlocks),
    inodeCount: num(w.inodeCount),
    committedSeq: num(w.committedSeq),
  }
}

/* ---- locks and events --------------------------------------------------------------------- */

/** Lock modes as the wire numbers them (enum LockMode). */
export const LockMode = { NULL: 0, READ: 1, WRITE: 2, WRITE_ONLY: 3 } as const
export type LockMode = (typeof LockMode)[keyof typeof LockMode]

function lockMode(v: unknown): LockMode {
  const n = Number(v ?? 0)
  if (n !== 0 && n !== 1 && n !== 2 && n !== 3) throw new FsError('EINVAL', `lock mode ${String(v)} is unknown`)
  return n
}

/** What the server pushes to one mount over its Events stream (lock messages go over Locks). */
export type NetEvent = { type: 'syncLogTrees'; seq: number } | { type: 'rootsChanged'; version: number }

export function eventToWire(ev: NetEvent): Wire {
  switch (ev.type) {
    case 'syncLogTrees':
      return { syncLogTrees: { seq: ev.seq } }
    case 'rootsChanged':
      return { rootsChanged: { version: ev.version } }
  }
}

/** undefined for an event kind this side does not know (a newer server): ignore it. */
export function eventFromWire(w: Wire): NetEvent | undefined {
  const part = (k: string): Wire => (w[k] ?? {}) as Wire
  switch (w.kind) {
    case 'syncLogTrees':
      return { type: 'syncLogTrees', seq: num(part('syncLogTrees').seq) }
    case 'rootsChanged':
      return { type: 'rootsChanged', version: num(part('rootsChanged').version) }
    default:
      return undefined
  }
}

/* ---- the Locks stream --------------------------------------------------------------------- */

/*
 * The Locks stream carries the messages of lock-modes.ts unchanged, so LockServer and
 * LockClient plug in as they are:
 *
 *   let net: NetServer | undefined
 *   const ls = new LockServer({ send: (rid, m) => void net?.sendLock(rid, m), nextSeq, rootsVersion, recovering })
 *   net = await NetServer.listen(server, addr, {
 *     lockPort: { receive: (rid, m) => ls.receive(rid, m), hello: (rid, held) => ls.isRecovering && ls.recover(rid, held) },
 *   })
 *
 *   let send: (m: LockClientMsg) => void = () => undefined
 *   const lc = new LockClient({ rid, send: (m) => send(m), onInvalidate, refreshRoots })
 *   send = netClient.openLocks(lc)
 */

/** A client's lock message, or the hello that opens a Locks stream. */
export type LockClientWireMsg = LockClientMsg | { kind: 'hello'; rid: number; held: RecoveredLock[] }

export function lockClientMsgToWire(m: LockClientWireMsg): Wire {
  switch (m.kind) {
    case 'hello':
      return {
        hello: {
          rid: m.rid,
          held: m.held.map((h) => ({ keyStart: h.start, keyEnd: h.end, mode: h.mode, writeSeq: h.writeSeq })),
        },
      }
    case 'request':
      return { request: { keyStart: m.start, keyEnd: m.end, oldMode: m.oldMode, newMode: m.mode, id: m.reqId } }
    case 'invalidated':
      return { invalidated: { keyStart: m.start, keyEnd: m.end, newMode: m.mode, id: m.invId } }
  }
}

export function lockClientMsgFromWire(w: Wire): LockClientWireMsg {
  const p = (w[String(w.kind)] ?? {}) as Wire
  switch (w.kind) {
    case 'hello':
      return {
        kind: 'hello',
        rid: num(p.rid, 'rid'),
        held: (Array.isArray(p.held) ? (p.held as Wire[]) : []).map((h) => ({
          start: buf(h.keyStart),
          end: buf(h.keyEnd),
          mode: lockMode(h.mode),
          writeSeq: num(h.writeSeq, 'write_seq'),
        })),
      }
    case 'request':
      return {
        kind: 'request',
        start: buf(p.keyStart),
        end: buf(p.keyEnd),
        oldMode: lockMode(p.oldMode),
        mode: lockMode(p.newMode),
        reqId: num(p.id, 'id'),
      }
    case 'invalidated':
      return {
        kind: 'invalidated',
        start: buf(p.keyStart),
        end: buf(p.keyEnd),
        mode: lockMode(p.newMode),
        invId: num(p.id, 'id'),
      }
    default:
      throw new FsError('EINVAL', `unknown lock message ${String(w.kind)}`)
  }
}

export function lockServerMsgToWire(m: LockServerMsg): Wire {
  switch (m.kind) {
    case 'grant':
      return {
        grant: {
          keyStart: m.start,
          keyEnd: m.end,
          mode: m.mode,
          writeSeq: m.writeSeq,
          rootsVersion: m.rootsVersion,
          id: m.reqId,
        },
      }
    case 'invalidate':
      return { invalidate: { keyStart: m.start, keyEnd: m.end, oldMode: m.oldMode, mode: m.mode, id: m.invId } }
  }
}

/** undefined for a message kind this side does not know (a newer server): ignore it. */
export function lockServerMsgFromWire(w: Wire): LockServerMsg | undefined {
  const p = (w[String(w.kind)] ?? {}) as Wire
  switch (w.kind) {
    case 'grant':
      return {
        kind: 'grant',
        start: buf(p.keyStart),
        end: buf(p.keyEnd),
        mode: lockMode(p.mode),
        writeSeq: num(p.writeSeq),
        rootsVersion: num(p.rootsVersion),
        reqId: num(p.id),
      }
    case 'invalidate':
      return {
        kind: 'invalidate',
        start: buf(p.keyStart),
        end: buf(p.keyEnd),
        oldMode: lockMode(p.oldMode),
        mode: lockMode(p.mode),
        invId: num(p.id),
      }
    default:
      return undefined
  }
}

/**
 * The message-based lock server (lock-server.ts LockServer) as NetServer sees it: every
 * message of a mount's Locks stream, in order.  Its replies go out through
 * NetServer.sendLock(rid, msg).
 */
export interface LockPort {
  receive(rid: number, msg: LockClientMsg): void
  /** a mount (re)opened its Locks stream, holding `held` (lock recovery, when recovering) */
  hello?(rid: number, held: RecoveredLock[]): void
}

/** The message-based lock client (lock-client.ts LockClient) as NetClient sees it. */
export interface LockEndpoint {
  receive(msg: LockServerMsg): void
  recoveryReport(): RecoveredLock[]
  resendRequests(): void
}

/* ---- errors ------------------------------------------------------------------------------- */

const S = grpc.status

export function statusOfErrno(code: Errno): grpc.status {
  switch (code) {
    case 'EINVAL':
      return S.INVALID_ARGUMENT
    case 'ENOENT':
    case 'ENODATA':
      return S.NOT_FOUND
    case 'EEXIST':
      return S.ALREADY_EXISTS
    case 'ENOSPC':
    case 'ENOBUFS':
    case 'E2BIG':
      return S.RESOURCE_EXHAUSTED
    case 'ESTALE':
    case 'EROFS':
    case 'ENOTCONN':
      return S.FAILED_PRECONDITION
    case 'EBUSY':
      return S.ABORTED
    case 'EPERM':
    case 'EACCES':
      return S.PERMISSION_DENIED
    case 'ERANGE':
    case 'EOVERFLOW':
    case 'EFBIG':
      return S.OUT_OF_RANGE
    case 'ENOSYS':
    case 'EOPNOTSUPP':
      return S.UNIMPLEMENTED
    case 'ETIMEDOUT':
      return S.DEADLINE_EXCEEDED
    case 'ENXIO':
      return S.UNAVAILABLE
    default:
      return S.INTERNAL
  }
}

/** The errno a status means when the server sent no errno (transport failures, old peers). */
export function errnoOfStatus(code: grpc.status): Errno {
  switch (code) {
    case S.INVALID_ARGUMENT:
      return 'EINVAL'
    case S.NOT_FOUND:
      return 'ENOENT'
    case S.ALREADY_EXISTS:
      return 'EEXIST'
    case S.RESOURCE_EXHAUSTED:
      return 'ENOSPC'
    case S.FAILED_PRECONDITION:
      return 'ESTALE'
    case S.ABORTED:
      return 'EBUSY'
    case S.PERMISSION_DENIED:
    case S.UNAUTHENTICATED:
      return 'EACCES'
    case S.OUT_OF_RANGE:
      return 'ERANGE'
    case S.UNIMPLEMENTED:
      return 'ENOSYS'
    case S.DEADLINE_EXCEEDED:
      return 'ETIMEDOUT'
    case S.UNAVAILABLE:
    case S.CANCELLED:
      return 'ENOTCONN'
    default:
      return 'EIO'
  }
}

/** The message of an FsError without the "CODE: " prefix its constructor adds. */
function bareMessage(e: FsError): string {
  const p = `${e.code}: `
  return e.message.startsWith(p) ? e.message.slice(p.length) : e.message
}

/** A thrown error as the status object a handler answers with. */
export function toStatus(e: unknown): Partial<grpc.StatusObject> {
  const fe =
    e instanceof FsError
      ? e
      : new FsError('EIO', `server error: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`)
  const metadata = new grpc.Metadata()
  metadata.set(ERRNO_KEY, fe.code)
  return { code: statusOfErrno(fe.code), details: bareMessage(fe), metadata }
}

/** The errno the server put in a failed call's metadata, if any. */
export function errnoOf(err: grpc.ServiceError): Errno | undefined {
  const v = err.metadata?.get(ERRNO_KEY)?.[0]
  return typeof v === 'string' && /^E[A-Z0-9]+$/.test(v) ? (v as Errno) : undefined
}

export function isServiceError(e: unknown): e is grpc.ServiceError {
  return e instanceof Error && typeof (e as grpc.ServiceError).code === 'number' && 'details' in e
}

/** A failed call as the FsError it stands for. */
export function fromServiceError(err: unknown, what: string): FsError {
  if (err instanceof FsError) return err
  if (!isServiceError(err)) return new FsError('EIO', `${what}: ${err instanceof Error ? err.message : String(err)}`)
  const errno = errnoOf(err)
  if (errno) return new FsError(errno, err.details)
  return new FsError(errnoOfStatus(err.code), `${what}: ${S[err.code] ?? err.code}: ${err.details}`)
}
