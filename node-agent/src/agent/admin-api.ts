/*
 * The agent's admin API, defined once for both ends: per route (keyed "METHOD /path", as on
 * the wire) the parameters (sent as the query string), how the agent validates them, the
 * reply type and how a caller validates a reply.  The agent serves it (admin-routes.ts via
 * adminHandlers); the CLI, tests and scripts call it with admin.ts adminCall, which returns a
 * reply only after checking it against its route's type.
 *
 * Invariants: every route has exactly one entry in AdminApi and ADMIN_API (the mapped type
 * enforces it); a validator checks every field of its type (`shape` demands a check per key);
 * bad parameters are EINVAL at the agent, a reply that fails its check is EIO at the caller.
 */
import { FsError } from '../util/errors.js'
import type { AdminHandler } from './admin.js'
import type { ClusterServerStatus } from '../server/server-role.js'

/* ---- types of the routes -------------------------------------------------------------- */

export type NoParams = Record<string, never>

export interface SyncReply {
  /** the transaction seq committed when the sync finished */
  seq: number
}

export type InodeIndex = 'meta_seq' | 'data_seq'

export interface WalkInodesParams {
  index: InodeIndex
  first: number
  firstIno: number
  last: number
  lastIno: number
  limit: number
}

export interface WalkInodesEntry {
  seq: number
  ino: number
}

export interface WalkInodesReply {
  entries: WalkInodesEntry[]
}

export interface StatParams {
  ino: number
}

/** An inode's scoutfs fields (the names `scoutfs stat` prints). */
export interface StatReply {
  meta_seq: number
  data_seq: number
  data_version: number
  online_blocks: number
  offline_blocks: number
  /** seconds.nanoseconds */
  crtime: string
  crtime_ms: number
}

export interface StatfsReply {
  /** hex, 16 digits */
  fsid: string
  /** hex, 16 digits */
  rid: string
  committed_seq: number
  total_meta_blocks: number
  free_meta_blocks: number
  total_data_blocks: number
  free_data_blocks: number
  /** this mount's quorum slot, -1 for a plain client */
  quorum_slot_nr: number
  quorum_term: number
  /** -1 while none is known */
  quorum_leader_slot: number
}

export interface LockStatus {
  held: number
  read: number
  write: number
  writeOnly: number
  requests: number
  grants: number
  invalidations: number
}

/** The server role's state, on the agent that runs it (as the role reports it). */
export type ServerState = ClusterServerStatus

export interface AgentStatus {
  /** hex */
  rid: string
  /** the open transaction's seq (0: none open) */
  seq: number
  committedSeq: number
  commits: number
  items: number
  dirtyItems: number
  /** where /metrics is served, if it is */
  metrics?: string
  /** this agent runs the server role */
  server: boolean
  /** the server address this agent's mount is connected to */
  serverAddr: string
  locks: LockStatus
  serverState?: ServerState
}

/** The quorum as this agent sees it (`scoutfs quorum`, statfs's quorum fields). */
export interface QuorumView {
  /** this agent's slot, -1 for a plain client */
  slot: number
  /** the highest term it knows */
  term: number
  /** the slot leading (-1: none known) */
  leaderSlot: number
  /** follower | candidate | leader, or client for a plain client */
  role: string
  /** the server role runs on this agent */
  serving: boolean
  /** 0 for a plain client */
  heartbeatTimeoutMs: number
  majority: number
  /** the configured slots (with an address) */
  slots: number[]
  /** a fence this agent waits for */
  fencing?: FenceView
  elections: number
  elected: number
  fenceRequests: number
  fencesConfirmed: number
  fenceErrors: number
  /** election to serving, the last time it led (ms) */
  lastStartMs?: number
}

export interface FenceView {
  rid: string
  reason: string
  attempts: number
  sinceMs: number
  error?: string
}

export interface HeartbeatTimeoutParams {
  ms: number
}

export interface UnmountReply {
  unmounting: true
}

/** One sample of one of the agent's metrics (`scoutfs counters`); labels without fsid and rid. */
export interface CounterSample {
  name: string
  /** counter, gauge or histogram (of the metric the sample belongs to) */
  type: string
  labels: Record<string, string>
  value: number
}

export interface CountersReply {
  fsid: string
  rid: string
  samples: CounterSample[]
}

/** A directory quota: the tree's root inode, its limits and usage (`scoutfs quota`). */
export interface QuotaInfo {
  root: number
  limit_bytes: number
  limit_inodes: number
  used_bytes: number
  used_inodes: number
}

/** The quota of the tree an inode is in; none outside every quota tree. */
export interface QuotaReply {
  quota?: QuotaInfo
}

export interface QuotaGetParams {
  ino: number
}

export interface QuotaSetParams {
  ino: number
  bytes: number
  inodes: number
}

/* archive routes (docs/archive.md) */

export interface ReleaseParams {
  ino: number
  version: number
  offset: number
  length: number
}

export interface StageParams extends ReleaseParams {
  /** absolute path of the archive file, read from its start (the agent reads it) */
  archive: string
}

export interface FiemapEntry {
  /** bytes */
  logical: number
  physical: number
  length: number
  offline: boolean
}

export interface DataWaitingParams {
  afterIno: number
  afterIblock: number
  limit: number
}

export interface DataWaitingEntry {
  ino: number
  iblock: number
  /** read, write, change_size */
  ops: string[]
}

export interface DataWaitErrParams {
  ino: number
  version: number
  offset: number
  count: number
  op: 'read' | 'write' | 'change_size'
  /** a negative errno */
  err: number
}

export interface SearchXattrsParams {
  name: string
  firstIno: number
  limit: number
}

export interface XattrTotalEntry {
  /** a.b.c */
  name: string
  /** decimal (a sum of u64s) */
  total: string
  count: number
}

export interface AdminApi {
  'POST /sync': { params: NoParams; reply: SyncReply }
  'GET /walk-inodes': { params: WalkInodesParams; reply: WalkInodesReply }
  'GET /stat': { params: StatParams; reply: StatReply }
  'GET /statfs': { params: NoParams; reply: StatfsReply }
  'GET /status': { params: NoParams; reply: AgentStatus }
  'POST /unmount': { params: NoParams; reply: UnmountReply }
  'GET /quorum': { params: NoParams; reply: QuorumView }
  'POST /quorum/heartbeat-timeout': { params: HeartbeatTimeoutParams; reply: QuorumView }
  'GET /counters': { params: NoParams; reply: CountersReply }
  'GET /quota': { params: QuotaGetParams; reply: QuotaReply }
  'POST /quota': { params: QuotaSetParams; reply: QuotaReply }
  'POST /release': { params: ReleaseParams; reply: { blocks: number } }
  'POST /stage': { params: StageParams; reply: { bytes: number } }
  'GET /fiemap': { params: StatParams; reply: { extents: FiemapEntry[] } }
  'GET /data-waiting': { params: DataWaitingParams; reply: { entries: DataWaitingEntry[] } }
  'POST /data-wait-err': { params: DataWaitErrParams; reply: { found: number } }
  'GET /search-xattrs': { params: SearchXattrsParams; reply: { inos: number[] } }
  'GET /xattr-totals': { params: NoParams; reply: { totals: XattrTotalEntry[] } }
  'GET /ino-path': { params: StatParams; reply: { paths: string[] } }
}

export type AdminRoute = keyof AdminApi
export type AdminParams<R extends AdminRoute> = AdminApi[R]['params']
export type AdminReply<R extends AdminRoute> = AdminApi[R]['reply']

/* ---- validators ----------------------------------------------------------------------- */

type Check = (v: unknown) => boolean

const isNum: Check = (v) => typeof v === 'number' && Number.isFinite(v)
const isStr: Check = (v) => typeof v === 'string'
const isBool: Check = (v) => typeof v === 'boolean'
const optional =
  (c: Check): Check =>
  (v) =>
    v === undefined || c(v)
const arrayOf =
  (c: Check): Check =>
  (v) =>
    Array.isArray(v) && v.every(c)

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** A guard for T from one check per key of T. */
function shape<T>(checks: { [K in keyof T]-?: Check }): (v: unknown) => v is T {
  const entries = Object.entries(checks) as Array<[string, Check]>
  return (v: unknown): v is T => isObject(v) && entries.every(([k, c]) => c(v[k]))
}

const isLockStatus = shape<LockStatus>({
  held: isNum,
  read: isNum,
  write: isNum,
  writeOnly: isNum,
  requests: isNum,
  grants: isNum,
  invalidations: isNum,
})

const isServerState = shape<ServerState>({
  mounts: arrayOf(isStr),
  recorded: isNum,
  logTrees: isNum,
  finalized: isNum,
  commits: isNum,
  merges: isNum,
  reclaims: isNum,
  recovering: isBool,
  farewellsHeld: arrayOf(isStr),
})

const isQuorumView = shape<QuorumView>({
  slot: isNum,
  term: isNum,
  leaderSlot: isNum,
  role: isStr,
  serving: isBool,
  heartbeatTimeoutMs: isNum,
  majority: isNum,
  slots: arrayOf(isNum),
  fencing: optional(
    shape<FenceView>({ rid: isStr, reason: isStr, attempts: isNum, sinceMs: isNum, error: optional(isStr) }),
  ),
  elections: isNum,
  elected: isNum,
  fenceRequests: isNum,
  fencesConfirmed: isNum,
  fenceErrors: isNum,
  lastStartMs: optional(isNum),
})

/** A whole number >= 0 from the query string (absent: 0), or EINVAL. */
function whole(q: URLSearchParams, k: string): number {
  const v = Number(q.get(k))
  if (!Number.isSafeInteger(v) || v < 0) throw new FsError('EINVAL', `bad ${k} '${q.get(k)}'`)
  return v
}

const noParams = (): NoParams => ({})

/** A non-empty string from the query string, or EINVAL. */
function text(q: URLSearchParams, k: string): string {
  const v = q.get(k)
  if (!v) throw new FsError('EINVAL', `missing ${k}`)
  return v
}

const releaseParams = (q: URLSearchParams): ReleaseParams => ({
  ino: whole(q, 'ino'),
  version: whole(q, 'version'),
  offset: whole(q, 'offset'),
  length: whole(q, 'length'),
})

/* ---- the routes ----------------------------------------------------------------------- */

interface RouteDef<P, R> {
  /** the agent's side: the route's parameters from the query string (EINVAL when bad) */
  parseParams(q: URLSearchParams): P
  /** the caller's side: whether a reply has the route's type */
  isReply(v: unknown): v is R
}

const isQuotaReply = shape<QuotaReply>({
  quota: optional(
    shape<QuotaInfo>({
      root: isNum,
      limit_bytes: isNum,
      limit_inodes: isNum,
      used_bytes: isNum,
      used_inodes: isNum,
    }),
  ),
})

export const ADMIN_API: { [R in AdminRoute]: RouteDef<AdminParams<R>, AdminReply<R>> } = {
  'POST /sync': { parseParams: noParams, isReply: shape<SyncReply>({ seq: isNum }) },
  'GET /walk-inodes': {
    parseParams: (q) => {
      const index = q.get('index')
      if (index !== 'meta_seq' && index !== 'data_seq') throw new FsError('EINVAL', `unknown index '${index}'`)
      return {
        index,
        first: whole(q, 'first'),
        firstIno: whole(q, 'firstIno'),
        last: whole(q, 'last'),
        lastIno: whole(q, 'lastIno'),
        limit: whole(q, 'limit'),
      }
    },
    isReply: shape<WalkInodesReply>({ entries: arrayOf(shape<WalkInodesEntry>({ seq: isNum, ino: isNum })) }),
  },
  'GET /stat': {
    parseParams: (q) => ({ ino: whole(q, 'ino') }),
    isReply: shape<StatReply>({
      meta_seq: isNum,
      data_seq: isNum,
      data_version: isNum,
      online_blocks: isNum,
      offline_blocks: isNum,
      crtime: isStr,
      crtime_ms: isNum,
    }),
  },
  'GET /statfs': {
    parseParams: noParams,
    isReply: shape<StatfsReply>({
      fsid: isStr,
      rid: isStr,
      committed_seq: isNum,
      total_meta_blocks: isNum,
      free_meta_blocks: isNum,
      total_data_blocks: isNum,
      free_data_blocks: isNum,
      quorum_slot_nr: isNum,
      quorum_term: isNum,
      quorum_leader_slot: isNum,
    }),
  },
  'GET /status': {
    parseParams: noParams,
    isReply: shape<AgentStatus>({
      rid: isStr,
      seq: isNum,
      committedSeq: isNum,
      commits: isNum,
      items: isNum,
      dirtyItems: isNum,
      metrics: optional(isStr),
      server: isBool,
      serverAddr: isStr,
      locks: isLockStatus,
      serverState: optional(isServerState),
    }),
  },
  'POST /unmount': { parseParams: noParams, isReply: shape<UnmountReply>({ unmounting: (v) => v === true }) },
  'GET /quorum': { parseParams: noParams, isReply: isQuorumView },
  'POST /quorum/heartbeat-timeout': {
    parseParams: (q) => ({ ms: whole(q, 'ms') }),
    isReply: isQuorumView,
  },
  'GET /counters': {
    parseParams: noParams,
    isReply: shape<CountersReply>({
      fsid: isStr,
      rid: isStr,
      samples: arrayOf(
        shape<CounterSample>({
          name: isStr,
          type: isStr,
          labels: (v) => isObject(v) && Object.values(v).every(isStr),
          value: (v) => typeof v === 'number',
        }),
      ),
    }),
  },
  'GET /quota': { parseParams: (q) => ({ ino: whole(q, 'ino') }), isReply: isQuotaReply },
  'POST /quota': {
    parseParams: (q) => ({ ino: whole(q, 'ino'), bytes: whole(q, 'bytes'), inodes: whole(q, 'inodes') }),
    isReply: isQuotaReply,
  },
  'POST /release': { parseParams: releaseParams, isReply: shape<{ blocks: number }>({ blocks: isNum }) },
  'POST /stage': {
    parseParams: (q) => {
      const archive = text(q, 'archive')
      if (!archive.startsWith('/')) throw new FsError('EINVAL', `archive path '${archive}' is not absolute`)
      return { ...releaseParams(q), archive }
    },
    isReply: shape<{ bytes: number }>({ bytes: isNum }),
  },
  'GET /fiemap': {
    parseParams: (q) => ({ ino: whole(q, 'ino') }),
    isReply: shape<{ extents: FiemapEntry[] }>({
      extents: arrayOf(shape<FiemapEntry>({ logical: isNum, physical: isNum, length: isNum, offline: isBool })),
    }),
  },
  'GET /data-waiting': {
    parseParams: (q) => ({
      afterIno: whole(q, 'afterIno'),
      afterIblock: whole(q, 'afterIblock'),
      limit: whole(q, 'limit'),
    }),
    isReply: shape<{ entries: DataWaitingEntry[] }>({
      entries: arrayOf(shape<DataWaitingEntry>({ ino: isNum, iblock: isNum, ops: arrayOf(isStr) })),
    }),
  },
  'POST /data-wait-err': {
    parseParams: (q) => {
      const op = q.get('op')
      if (op !== 'read' && op !== 'write' && op !== 'change_size')
        throw new FsError('EINVAL', `op is read, write or change_size, not '${op}'`)
      const err = Number(q.get('err'))
      if (!Number.isInteger(err) || err >= 0 || err < -4095)
        throw new FsError('EINVAL', `err must be a negative errno (-4095..-1), not '${q.get('err')}'`)
      return {
        ino: whole(q, 'ino'),
        version: whole(q, 'version'),
        offset: whole(q, 'offset'),
        count: whole(q, 'count'),
        op,
        err,
      }
    },
    isReply: shape<{ found: number }>({ found: isNum }),
  },
  'GET /search-xattrs': {
    parseParams: (q) => ({ name: text(q, 'name'), firstIno: whole(q, 'firstIno'), limit: whole(q, 'limit') }),
    isReply: shape<{ inos: number[] }>({ inos: arrayOf(isNum) }),
  },
  'GET /xattr-totals': {
    parseParams: noParams,
    isReply: shape<{ totals: XattrTotalEntry[] }>({
      totals: arrayOf(shape<XattrTotalEntry>({ name: isStr, total: isStr, count: isNum })),
    }),
  },
  'GET /ino-path': {
    parseParams: (q) => ({ ino: whole(q, 'ino') }),
    isReply: shape<{ paths: string[] }>({ paths: arrayOf(isStr) }),
  },
}

/** The parts of a route name: its HTTP method and path. */
export function routeTarget(route: AdminRoute): { method: 'GET' | 'POST'; path: string } {
  const [method, path] = route.split(' ') as ['GET' | 'POST', string]
  return { method, path }
}

/** The query string that carries `params` (parsed back by the route's parseParams). */
export function encodeParams(params: Readonly<Record<string, string | number>>): string {
  const q = new URLSearchParams(Object.entries(params).map(([k, v]): [string, string] => [k, String(v)]))
  const s = q.toString()
  return s ? `?${s}` : ''
}

/** What the agent implements: one function per route. */
export type AdminImpl = { [R in AdminRoute]: (p: AdminParams<R>) => Promise<AdminReply<R>> }

/** The agent's handlers for AdminServer.listen: parameters validated before `impl` runs. */
export function adminHandlers(impl: AdminImpl): Record<string, AdminHandler> {
  const out: Record<string, AdminHandler> = {}
  const bind = <R extends AdminRoute>(route: R): void => {
    const def = ADMIN_API[route] as RouteDef<AdminParams<R>, AdminReply<R>>
    const run = impl[route] as (p: AdminParams<R>) => Promise<AdminReply<R>>
    out[route] = (q) => run(def.parseParams(q))
  }
  for (const route of Object.keys(ADMIN_API) as AdminRoute[]) bind(route)
  return out
}
