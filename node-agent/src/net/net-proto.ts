/*
 * The agent <-> server protocol (proto/scoutfs.proto) as both ends of the network see it:
 * the service definition built at runtime from the .proto with protobufjs reflection (typed
 * by messages.ts, which mirrors the .proto), conversions between the wire messages and the
 * ServerApi and lock-modes.ts types, the mapping of FsErrors to gRPC statuses and back, and
 * the interfaces a lock server and a lock client implement to plug into NetServer and
 * NetClient.
 *
 * Conversions check what the types cannot: a 64-bit counter past 2^53, a lock mode the enum
 * does not have, an item or root of the wrong size, a log trees message whose fields disagree
 * with its item: each is refused with EINVAL.
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
import { FsError, bareMessage, type Errno } from '../util/errors.js'
import { ROOT_SIZE, readRoot, writeRoot } from '../storage/format.js'
import {
  isLockMode,
  type LockClientMsg,
  type LockMode,
  type LockServerMsg,
  type RecoveredLock,
} from '../protocol/lock-modes.js'
import type { OpenMapReplyMsg, OpenMapRequestMsg, OpenMapSource } from '../protocol/open-map.js'
import {
  LOG_TREES_SIZE,
  decodeLogTrees,
  encodeLogTrees,
  type LogTrees,
  type Roots,
  type ServerStatfs,
} from '../protocol/server-api.js'
import {
  RPCS,
  type LockClientMessage,
  type LockServerMessage,
  type LogTreesMsg,
  type Message,
  type MessageName,
  type Request,
  type Response,
  type RootsMsg,
  type RpcName,
  type StatfsReply,
  type U64,
} from './messages.js'

export const PROTO_PACKAGE = 'scoutfs.v1'
export const SERVICE_NAME = `${PROTO_PACKAGE}.ScoutfsServer`
/** trailing metadata key carrying the errno name of a failure */
export const ERRNO_KEY = 'scoutfs-errno'

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

/** How every message is decoded: the plain objects messages.ts types. */
export const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: Number, defaults: true, oneofs: true }

/** One RPC as grpc-js calls and serves it, typed by its messages. */
export type MethodDef<K extends RpcName> = grpc.MethodDefinition<Request<K>, Response<K>>
/** The service as grpc-js serves it: every RPC of messages.ts RPCS. */
export type Definition = { [K in RpcName]: MethodDef<K> }

let loaded: Definition | undefined

function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength)
}

function messageType(root: protobuf.Root, name: MessageName): protobuf.Type {
  return root.lookupType(`${PROTO_PACKAGE}.${name}`)
}

function serializer<N extends MessageName>(t: protobuf.Type): (v: Message<N>) => Buffer {
  return (v) => asBuffer(t.encode(t.fromObject(v)).finish())
}

function deserializer<N extends MessageName>(t: protobuf.Type): (b: Buffer) => Message<N> {
  // the one place a message meets its type: test/net/messages.test.ts keeps the two in step
  return (b) => t.toObject(t.decode(b), TO_OBJECT) as Message<N>
}

function methodDef<K extends RpcName>(root: protobuf.Root, service: protobuf.Service, name: K): MethodDef<K> {
  const m = service.methods[name]
  if (!m) throw new FsError('EINVAL', `${SERVICE_NAME} in ${protoPath()} has no method ${name}`)
  const spec = RPCS[name]
  const req = messageType(root, spec.request)
  const res = messageType(root, spec.response)
  return {
    path: `/${SERVICE_NAME}/${name}`,
    requestStream: !!m.requestStream,
    responseStream: !!m.responseStream,
    requestSerialize: serializer<RpcRequestName<K>>(req),
    requestDeserialize: deserializer<RpcRequestName<K>>(req),
    responseSerialize: serializer<RpcResponseName<K>>(res),
    responseDeserialize: deserializer<RpcResponseName<K>>(res),
    originalName: name[0]!.toLowerCase() + name.slice(1),
  }
}
type RpcRequestName<K extends RpcName> = (typeof RPCS)[K]['request']
type RpcResponseName<K extends RpcName> = (typeof RPCS)[K]['response']

/** The service, loaded from the .proto once per process. */
export function serviceDefinition(): Definition {
  if (loaded) return loaded
  const root = protobuf.loadSync(protoPath())
  root.resolveAll()
  const service = root.lookupService(SERVICE_NAME)
  const def = <K extends RpcName>(name: K): MethodDef<K> => methodDef(root, service, name)
  loaded = {
    Greeting: def('Greeting'),
    GetLogTrees: def('GetLogTrees'),
    CommitLogTrees: def('CommitLogTrees'),
    AllocInodes: def('AllocInodes'),
    GetRoots: def('GetRoots'),
    GetLastSeq: def('GetLastSeq'),
    Statfs: def('Statfs'),
    ListMounts: def('ListMounts'),
    Farewell: def('Farewell'),
    Heartbeat: def('Heartbeat'),
    Locks: def('Locks'),
    OpenInodes: def('OpenInodes'),
    Quorum: def('Quorum'),
  }
  return loaded
}

/** The method definition of one RPC ('Greeting', 'Locks', ...). */
export function method<K extends RpcName>(name: K): MethodDef<K> {
  return serviceDefinition()[name]
}

/* ---- field helpers ------------------------------------------------------------------------ */

/** A uint64 field as a number; refuses values past 2^53 rather than rounding them. */
export function num(v: U64, what = 'field'): number {
  const n = typeof v === 'number' ? v : Number(v)
  if (!Number.isSafeInteger(n) || n < 0) throw new FsError('EINVAL', `${what} ${String(v)} is not a u64 below 2^53`)
  return n
}

/** A fixed64 field as a bigint. */
export function big(v: U64): bigint {
  return BigInt(v)
}

export function buf(v: Uint8Array): Buffer {
  return asBuffer(v)
}

function lockMode(v: number): LockMode {
  if (!isLockMode(v)) throw new FsError('EINVAL', `lock mode ${String(v)} is unknown`)
  return v
}

/* ---- ServerApi types <-> wire ------------------------------------------------------------- */

export function logTreesToWire(lt: LogTrees): LogTreesMsg {
  return {
    item: encodeLogTrees(lt),
    rid: lt.rid,
    nr: lt.nr,
    getTransSeq: lt.getTransSeq,
    commitTransSeq: lt.commitTransSeq,
  }
}

/** The item is authoritative; the repeated fields must agree with it. */
export function logTreesFromWire(w: LogTreesMsg): LogTrees {
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

export function rootsToWire(r: Roots): RootsMsg {
  const fsRoot = Buffer.alloc(ROOT_SIZE)
  writeRoot(fsRoot, 0, r.fsRoot)
  return { fsRoot, logTrees: r.logTrees.map(encodeLogTrees), version: r.version }
}

export function rootsFromWire(w: RootsMsg): Roots {
  const fsRoot = buf(w.fsRoot)
  if (fsRoot.length !== ROOT_SIZE)
    throw new FsError('EINVAL', `fs root of ${fsRoot.length} bytes: a root is ${ROOT_SIZE}`)
  return {
    fsRoot: readRoot(fsRoot, 0),
    logTrees: w.logTrees.map((b) => {
      const item = buf(b)
      if (item.length !== LOG_TREES_SIZE)
        throw new FsError('EINVAL', `log trees of ${item.length} bytes: a log_trees item is ${LOG_TREES_SIZE} bytes`)
      return decodeLogTrees(item)
    }),
    version: num(w.version, 'version'),
  }
}

export function statfsToWire(s: ServerStatfs): StatfsReply {
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

export function statfsFromWire(w: StatfsReply): ServerStatfs {
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

/* ---- the Locks stream --------------------------------------------------------------------- */

/*
 * The Locks stream carries the messages of lock-modes.ts unchanged, so LockServer and
 * LockClient plug in as they are (server/server-role.ts and agent/mount.ts do this):
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

/** A client's lock message, an open-map reply, or the hello that opens a Locks stream. */
export type LockClientWireMsg = LockClientMsg | OpenMapReplyMsg | { kind: 'hello'; rid: number; held: RecoveredLock[] }
/** A server's lock message or open-map request. */
export type LockServerWireMsg = LockServerMsg | OpenMapRequestMsg

export function lockClientMsgToWire(m: LockClientWireMsg): LockClientMessage {
  switch (m.kind) {
    case 'hello':
      return {
        kind: 'hello',
        hello: {
          rid: m.rid,
          held: m.held.map((h) => ({ keyStart: h.start, keyEnd: h.end, mode: h.mode, writeSeq: h.writeSeq })),
        },
      }
    case 'request':
      return {
        kind: 'request',
        request: { keyStart: m.start, keyEnd: m.end, oldMode: m.oldMode, newMode: m.mode, id: m.reqId },
      }
    case 'invalidated':
      return {
        kind: 'invalidated',
        invalidated: { keyStart: m.start, keyEnd: m.end, newMode: m.mode, id: m.invId },
      }
    case 'openMapReply':
      return { kind: 'openMapReply', openMapReply: { id: m.reqId, inos: m.inos } }
  }
}

export function lockClientMsgFromWire(w: LockClientMessage): LockClientWireMsg {
  switch (w.kind) {
    case 'hello':
      return {
        kind: 'hello',
        rid: num(w.hello.rid, 'rid'),
        held: w.hello.held.map((h) => ({
          start: buf(h.keyStart),
          end: buf(h.keyEnd),
          mode: lockMode(h.mode),
          writeSeq: num(h.writeSeq, 'write_seq'),
        })),
      }
    case 'request': {
      const p = w.request
      return {
        kind: 'request',
        start: buf(p.keyStart),
        end: buf(p.keyEnd),
        oldMode: lockMode(p.oldMode),
        mode: lockMode(p.newMode),
        reqId: num(p.id, 'id'),
      }
    }
    case 'invalidated': {
      const p = w.invalidated
      return {
        kind: 'invalidated',
        start: buf(p.keyStart),
        end: buf(p.keyEnd),
        mode: lockMode(p.newMode),
        invId: num(p.id, 'id'),
      }
    }
    case 'openMapReply': {
      const p = w.openMapReply
      return { kind: 'openMapReply', reqId: num(p.id, 'id'), inos: p.inos.map((i) => num(i, 'ino')) }
    }
    default:
      throw new FsError('EINVAL', 'unknown lock message')
  }
}

export function lockServerMsgToWire(m: LockServerWireMsg): LockServerMessage {
  switch (m.kind) {
    case 'grant':
      return {
        kind: 'grant',
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
      return {
        kind: 'invalidate',
        invalidate: { keyStart: m.start, keyEnd: m.end, oldMode: m.oldMode, mode: m.mode, id: m.invId },
      }
    case 'openMapRequest':
      return { kind: 'openMapRequest', openMapRequest: { id: m.reqId, group: m.group } }
  }
}

/** undefined for a message kind this side does not know (a newer server): ignore it. */
export function lockServerMsgFromWire(w: LockServerMessage): LockServerWireMsg | undefined {
  switch (w.kind) {
    case 'grant': {
      const p = w.grant
      return {
        kind: 'grant',
        start: buf(p.keyStart),
        end: buf(p.keyEnd),
        mode: lockMode(p.mode),
        writeSeq: num(p.writeSeq),
        rootsVersion: num(p.rootsVersion),
        reqId: num(p.id),
      }
    }
    case 'invalidate': {
      const p = w.invalidate
      return {
        kind: 'invalidate',
        start: buf(p.keyStart),
        end: buf(p.keyEnd),
        oldMode: lockMode(p.oldMode),
        mode: lockMode(p.mode),
        invId: num(p.id),
      }
    }
    case 'openMapRequest':
      return { kind: 'openMapRequest', reqId: num(w.openMapRequest.id), group: num(w.openMapRequest.group) }
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
  /** a mount's answer to an open-map request (NetServer.sendOpenMap) */
  openMapReply?(rid: number, msg: OpenMapReplyMsg): void
}

/** The message-based lock client (lock-client.ts LockClient) as NetClient sees it. */
export interface LockEndpoint {
  receive(msg: LockServerMsg): void
  recoveryReport(): RecoveredLock[]
  resendRequests(): void
  /** answers the server's open-map requests (none: the mount has nothing open) */
  openMap?: OpenMapSource
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
