/*
 * The messages and RPCs of proto/scoutfs.proto as TypeScript sees them.  SCHEMA mirrors every
 * message field for field (camelCase name, number, proto type, repeated, oneof) and RPCS every
 * method of the service; the message types are derived from SCHEMA, so the code that builds or
 * reads a message is checked against the .proto by the compiler, and test/net/messages.test.ts
 * checks SCHEMA and RPCS against the .proto itself (protobufjs reflection): a change to one
 * without the other fails the build or that test.
 *
 * Why a mirror and not generated code: the messages are encoded and decoded by protobufjs
 * reflection (net-proto.ts) with toObject({ longs: String, enums: Number, defaults: true,
 * oneofs: true }), and the static code pbjs/pbts generate types a message as its class
 * (64-bit fields as Long, no `kind` for oneofs), not as the plain object these options give.
 *
 * Invariants the types keep:
 *  - a uint64 or fixed64 (U64) is sent as a number or a decimal string and arrives as a
 *    decimal string: readers go through net-proto.ts num()/big(), never use it directly;
 *  - scalars are always present on a decoded message (defaults: true); a oneof arrives as
 *    `kind` naming the member that is set plus that member, or with `kind` undefined when the
 *    peer set a member this side does not know (a newer peer).
 */
import type { LockMode } from '../protocol/lock-modes.js'

/** A uint64 or fixed64 field: a number (below 2^53) or a decimal string. */
export type U64 = number | string

type ScalarType = 'uint64' | 'fixed64' | 'uint32' | 'string' | 'bytes' | 'bool'
/** the enums of the .proto, by name */
type EnumType = 'LockMode'

interface FieldSpec {
  readonly id: number
  readonly type: ScalarType | EnumType | MessageRef
  readonly repeated?: true
  /** the oneof the field belongs to (every oneof of the .proto is named `kind`) */
  readonly oneof?: 'kind'
}
/** a message type of the .proto named by a field */
type MessageRef =
  | 'LockHello'
  | 'LockRequest'
  | 'InvalidateDoneRequest'
  | 'HeldLock'
  | 'LockGrant'
  | 'LockInvalidate'
  | 'OpenMapRequest'
  | 'OpenMapReply'

/** Every message of proto/scoutfs.proto (package scoutfs.v1), in the order the .proto has them. */
export const SCHEMA = {
  GreetingRequest: {
    rid: { id: 1, type: 'uint64' },
    fsid: { id: 2, type: 'fixed64' },
    formatVersion: { id: 3, type: 'uint32' },
    clientName: { id: 4, type: 'string' },
    pid: { id: 5, type: 'uint32' },
    pidStart: { id: 6, type: 'uint64' },
    host: { id: 7, type: 'string' },
    quorumMember: { id: 8, type: 'bool' },
    quorumSlot: { id: 9, type: 'uint32' },
  },
  GreetingReply: {
    fsid: { id: 1, type: 'fixed64' },
    formatVersion: { id: 2, type: 'uint32' },
    serverInstance: { id: 3, type: 'uint64' },
  },
  GetLogTreesRequest: { rid: { id: 1, type: 'uint64' } },
  LogTrees: {
    item: { id: 1, type: 'bytes' },
    rid: { id: 2, type: 'uint64' },
    nr: { id: 3, type: 'uint64' },
    getTransSeq: { id: 4, type: 'uint64' },
    commitTransSeq: { id: 5, type: 'uint64' },
  },
  CommitLogTreesReply: {},
  AllocInodesRequest: { rid: { id: 1, type: 'uint64' }, count: { id: 2, type: 'uint64' } },
  AllocInodesReply: { first: { id: 1, type: 'uint64' }, count: { id: 2, type: 'uint64' } },
  GetRootsRequest: { rid: { id: 1, type: 'uint64' } },
  Roots: {
    fsRoot: { id: 1, type: 'bytes' },
    logTrees: { id: 2, type: 'bytes', repeated: true },
    version: { id: 3, type: 'uint64' },
  },
  GetLastSeqRequest: { rid: { id: 1, type: 'uint64' } },
  GetLastSeqReply: { seq: { id: 1, type: 'uint64' } },
  ListMountsRequest: { rid: { id: 1, type: 'uint64' } },
  ListMountsReply: { rids: { id: 1, type: 'uint64', repeated: true } },
  StatfsRequest: { rid: { id: 1, type: 'uint64' } },
  StatfsReply: {
    fsid: { id: 1, type: 'fixed64' },
    totalMetaBlocks: { id: 2, type: 'uint64' },
    freeMetaBlocks: { id: 3, type: 'uint64' },
    totalDataBlocks: { id: 4, type: 'uint64' },
    freeDataBlocks: { id: 5, type: 'uint64' },
    inodeCount: { id: 6, type: 'uint64' },
    committedSeq: { id: 7, type: 'uint64' },
  },
  FarewellRequest: {
    rid: { id: 1, type: 'uint64' },
    quorumMember: { id: 2, type: 'bool' },
    quorumSlot: { id: 3, type: 'uint32' },
  },
  FarewellReply: {},
  HeartbeatRequest: { rid: { id: 1, type: 'uint64' } },
  HeartbeatReply: {
    known: { id: 1, type: 'bool' },
    serverInstance: { id: 2, type: 'uint64' },
  },
  LockInvalidate: {
    keyStart: { id: 1, type: 'bytes' },
    keyEnd: { id: 2, type: 'bytes' },
    mode: { id: 3, type: 'LockMode' },
    id: { id: 5, type: 'uint64' },
    oldMode: { id: 6, type: 'LockMode' },
  },
  LockRequest: {
    keyStart: { id: 2, type: 'bytes' },
    keyEnd: { id: 3, type: 'bytes' },
    oldMode: { id: 4, type: 'LockMode' },
    newMode: { id: 5, type: 'LockMode' },
    id: { id: 6, type: 'uint64' },
  },
  LockGrant: {
    mode: { id: 1, type: 'LockMode' },
    writeSeq: { id: 2, type: 'uint64' },
    rootsVersion: { id: 3, type: 'uint64' },
    keyStart: { id: 4, type: 'bytes' },
    keyEnd: { id: 5, type: 'bytes' },
    id: { id: 6, type: 'uint64' },
  },
  InvalidateDoneRequest: {
    keyStart: { id: 2, type: 'bytes' },
    newMode: { id: 3, type: 'LockMode' },
    id: { id: 4, type: 'uint64' },
    keyEnd: { id: 5, type: 'bytes' },
  },
  HeldLock: {
    keyStart: { id: 1, type: 'bytes' },
    keyEnd: { id: 2, type: 'bytes' },
    mode: { id: 3, type: 'LockMode' },
    writeSeq: { id: 4, type: 'uint64' },
  },
  LockHello: {
    rid: { id: 1, type: 'uint64' },
    held: { id: 2, type: 'HeldLock', repeated: true },
  },
  LockClientMessage: {
    hello: { id: 1, type: 'LockHello', oneof: 'kind' },
    request: { id: 2, type: 'LockRequest', oneof: 'kind' },
    invalidated: { id: 3, type: 'InvalidateDoneRequest', oneof: 'kind' },
    openMapReply: { id: 4, type: 'OpenMapReply', oneof: 'kind' },
  },
  LockServerMessage: {
    grant: { id: 1, type: 'LockGrant', oneof: 'kind' },
    invalidate: { id: 2, type: 'LockInvalidate', oneof: 'kind' },
    openMapRequest: { id: 3, type: 'OpenMapRequest', oneof: 'kind' },
  },
  OpenInodesRequest: { rid: { id: 1, type: 'uint64' }, group: { id: 2, type: 'uint64' } },
  OpenInodesReply: { inos: { id: 1, type: 'uint64', repeated: true } },
  OpenMapRequest: { id: { id: 1, type: 'uint64' }, group: { id: 2, type: 'uint64' } },
  OpenMapReply: { id: { id: 1, type: 'uint64' }, inos: { id: 2, type: 'uint64', repeated: true } },
  QuorumMessage: {
    fsid: { id: 1, type: 'fixed64' },
    term: { id: 2, type: 'uint64' },
    fromSlot: { id: 3, type: 'uint32' },
    type: { id: 4, type: 'uint32' },
    granted: { id: 5, type: 'bool' },
  },
} as const satisfies Record<string, Record<string, FieldSpec>>

type Schema = typeof SCHEMA
export type MessageName = keyof Schema

/* How a SCHEMA entry becomes a type: each field's proto type maps to its JS value (ScalarTs, or
 * the message it names), repeated fields to arrays; the fields of the oneof `kind` become a
 * union of { kind: name, name: value }, plus { kind?: undefined } for a member unknown here. */
interface ScalarTs {
  uint64: U64
  fixed64: U64
  uint32: number
  string: string
  bytes: Uint8Array
  bool: boolean
  /** enum LockMode: LOCK_NULL = 0 ... as lock-modes.ts LockMode numbers them */
  LockMode: LockMode
}
type One<F> = F extends { readonly type: infer T }
  ? T extends keyof ScalarTs
    ? ScalarTs[T]
    : T extends MessageName
      ? Message<T>
      : never
  : never
type Value<F> = F extends { readonly repeated: true } ? One<F>[] : One<F>
type OneofKeys<S> = { [K in keyof S]: S[K] extends { readonly oneof: 'kind' } ? K : never }[keyof S]
type Fields<S> = { [K in Exclude<keyof S, OneofKeys<S>>]: Value<S[K]> }
type Oneof<S> = [OneofKeys<S>] extends [never]
  ? unknown
  : { [K in OneofKeys<S>]: { kind: K } & { [P in K]: Value<S[K]> } }[OneofKeys<S>] | { kind?: undefined }

/** A message as protobufjs encodes it from, and decodes it to, a plain object. */
export type Message<N extends MessageName> = Fields<Schema[N]> & Oneof<Schema[N]>

export type GreetingRequest = Message<'GreetingRequest'>
export type GreetingReply = Message<'GreetingReply'>
export type LogTreesMsg = Message<'LogTrees'>
export type RootsMsg = Message<'Roots'>
export type StatfsReply = Message<'StatfsReply'>
export type LockClientMessage = Message<'LockClientMessage'>
export type LockServerMessage = Message<'LockServerMessage'>
export type QuorumMessage = Message<'QuorumMessage'>

interface RpcSpec {
  readonly request: MessageName
  readonly response: MessageName
  readonly requestStream?: true
  readonly responseStream?: true
}

/** Every method of service scoutfs.v1.ScoutfsServer, in the order the .proto has them. */
export const RPCS = {
  Greeting: { request: 'GreetingRequest', response: 'GreetingReply' },
  GetLogTrees: { request: 'GetLogTreesRequest', response: 'LogTrees' },
  CommitLogTrees: { request: 'LogTrees', response: 'CommitLogTreesReply' },
  AllocInodes: { request: 'AllocInodesRequest', response: 'AllocInodesReply' },
  GetRoots: { request: 'GetRootsRequest', response: 'Roots' },
  GetLastSeq: { request: 'GetLastSeqRequest', response: 'GetLastSeqReply' },
  Statfs: { request: 'StatfsRequest', response: 'StatfsReply' },
  ListMounts: { request: 'ListMountsRequest', response: 'ListMountsReply' },
  Farewell: { request: 'FarewellRequest', response: 'FarewellReply' },
  Heartbeat: { request: 'HeartbeatRequest', response: 'HeartbeatReply' },
  Locks: { request: 'LockClientMessage', response: 'LockServerMessage', requestStream: true, responseStream: true },
  OpenInodes: { request: 'OpenInodesRequest', response: 'OpenInodesReply' },
  Quorum: { request: 'QuorumMessage', response: 'QuorumMessage' },
} as const satisfies Record<string, RpcSpec>

type Rpcs = typeof RPCS
export type RpcName = keyof Rpcs
/** the unary RPCs (every RPC but the Locks stream) */
export type UnaryRpc = { [K in RpcName]: Rpcs[K] extends { readonly requestStream: true } ? never : K }[RpcName]
export type Request<K extends RpcName> = Message<Rpcs[K]['request']>
export type Response<K extends RpcName> = Message<Rpcs[K]['response']>
