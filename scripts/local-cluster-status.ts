/*
 * What the local cluster (scripts/local-cluster.ts) shows: an agent's admin-socket GET /status
 * and GET /quorum read defensively (fields an agent build does not report yet stay undefined
 * and show as '-'), the status table with its quorum header and server line, agent log lines
 * made readable, and the terminal screen that redraws the table in place on a TTY while notes
 * scroll above it.
 */
import { request } from 'node:http'
import { relative } from 'node:path'
import { adminSocketPath } from '../node-agent/src/agent/admin.js'

/** GET /status of one agent, as far as it reports it (see notes/cluster-contract.md). */
export interface AgentStatus {
  rid?: string
  seq?: number
  commits?: number
  items?: number
  dirtyItems?: number
  metrics?: string
  server?: boolean
  serverAddr?: string
  locks?: {
    held?: number
    read?: number
    write?: number
    writeOnly?: number
    requests?: number
    grants?: number
    invalidations?: number
  }
  serverState?: {
    mounts?: string[]
    logTrees?: number
    finalized?: number
    commits?: number
    merges?: number
    reclaims?: number
    recovering?: boolean
  }
}

/** GET /quorum of one agent (admin-api.ts QuorumView), as far as it reports it. */
export interface QuorumState {
  /** its quorum slot; -1 for a plain client */
  slot?: number
  /** the highest term it knows */
  term?: number
  /** the slot it knows to lead; -1: none */
  leaderSlot?: number
  /** leader | follower | candidate (client for a plain client) */
  role?: string
  /** the server role runs on it */
  serving?: boolean
  heartbeatTimeoutMs?: number
  majority?: number
  /** a fence it waits for before its server may start */
  fencing?: { rid?: string; reason?: string; attempts?: number; sinceMs?: number; error?: string }
  elections?: number
  elected?: number
}

type Obj = Record<string, unknown>
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v)
const num = (o: Obj, k: string): number | undefined => (typeof o[k] === 'number' ? o[k] : undefined)
const str = (o: Obj, k: string): string | undefined => (typeof o[k] === 'string' ? o[k] : undefined)
const bool = (o: Obj, k: string): boolean | undefined => (typeof o[k] === 'boolean' ? o[k] : undefined)

/** Keep the fields of a /status reply that have the expected types; drop everything else. */
export function parseStatus(v: unknown): AgentStatus {
  if (!isObj(v)) return {}
  const s: AgentStatus = {
    rid: str(v, 'rid'),
    seq: num(v, 'seq'),
    commits: num(v, 'commits'),
    items: num(v, 'items'),
    dirtyItems: num(v, 'dirtyItems'),
    metrics: str(v, 'metrics'),
    server: bool(v, 'server'),
    serverAddr: str(v, 'serverAddr'),
  }
  const l = v.locks
  if (isObj(l))
    s.locks = {
      held: num(l, 'held'),
      read: num(l, 'read'),
      write: num(l, 'write'),
      writeOnly: num(l, 'writeOnly'),
      requests: num(l, 'requests'),
      grants: num(l, 'grants'),
      invalidations: num(l, 'invalidations'),
    }
  const ss = v.serverState
  if (isObj(ss))
    s.serverState = {
      mounts: Array.isArray(ss.mounts) ? ss.mounts.filter((m): m is string => typeof m === 'string') : undefined,
      logTrees: num(ss, 'logTrees'),
      finalized: num(ss, 'finalized'),
      commits: num(ss, 'commits'),
      merges: num(ss, 'merges'),
      reclaims: num(ss, 'reclaims'),
      recovering: bool(ss, 'recovering'),
    }
  return s
}

/** Keep the fields of a /quorum reply that have the expected types; drop everything else. */
export function parseQuorum(v: unknown): QuorumState {
  if (!isObj(v)) return {}
  const q: QuorumState = {
    slot: num(v, 'slot'),
    term: num(v, 'term'),
    leaderSlot: num(v, 'leaderSlot'),
    role: str(v, 'role'),
    serving: bool(v, 'serving'),
    heartbeatTimeoutMs: num(v, 'heartbeatTimeoutMs'),
    majority: num(v, 'majority'),
    elections: num(v, 'elections'),
    elected: num(v, 'elected'),
  }
  const f = v.fencing
  if (isObj(f))
    q.fencing = {
      rid: str(f, 'rid'),
      reason: str(f, 'reason'),
      attempts: num(f, 'attempts'),
      sinceMs: num(f, 'sinceMs'),
      error: str(f, 'error'),
    }
  return q
}

/**
 * GET `path` (/status, /quorum) from the agent serving `mountpoint`, as parsed JSON, giving
 * up after `timeoutMs` (a hung agent must not stall the table; admin.ts adminCall has no
 * timeout).
 */
function adminGet(mountpoint: string, path: string, timeoutMs: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: adminSocketPath(mountpoint), method: 'GET', path }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let v: unknown
        try {
          v = JSON.parse(text)
        } catch {
          return reject(new Error(`bad ${path} reply (HTTP ${res.statusCode})`))
        }
        if (res.statusCode !== 200) {
          const msg = isObj(v) ? (str(v, 'message') ?? str(v, 'code')) : undefined
          return reject(new Error(`${path} failed (HTTP ${res.statusCode}${msg ? `: ${msg}` : ''})`))
        }
        resolve(v)
      })
    })
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no ${path} reply within ${timeoutMs} ms`)))
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new Error(
          e.code === 'ENOENT' ? 'no admin socket' : e.code === 'ECONNREFUSED' ? 'admin socket refuses' : e.message,
        ),
      ),
    )
    req.end()
  })
}

/** GET /status from the agent serving `mountpoint`, giving up after `timeoutMs`. */
export async function fetchStatus(mountpoint: string, timeoutMs: number): Promise<AgentStatus> {
  return parseStatus(await adminGet(mountpoint, '/status', timeoutMs))
}

/** GET /quorum from the agent serving `mountpoint`, giving up after `timeoutMs`. */
export async function fetchQuorum(mountpoint: string, timeoutMs: number): Promise<QuorumState> {
  return parseQuorum(await adminGet(mountpoint, '/quorum', timeoutMs))
}

/** One agent as the table shows it. */
export interface AgentView {
  name: string
  mountpoint: string
  /** its quorum slot: every agent of the local cluster is a quorum member (agentN has slot N) */
  slot: number
  pid: number | undefined
  /** up: answered /status; down: running but not answering; the others say why it is not running */
  state: 'starting' | 'up' | 'down' | 'stopping' | 'stopped' | 'exited' | 'failed'
  /** exit code or signal, for stopped/exited/failed */
  exit?: string
  /** why it is down (the /status error) */
  error?: string
  status?: AgentStatus
  /** its GET /quorum reply, while it answers */
  quorum?: QuorumState
  /** why GET /quorum failed when /status answered */
  quorumError?: string
  /** rid from its "mounted" log line, when /status has not answered */
  rid?: string
  metricsAddr: string
  /** last lines of its log, shown under the table when it is not up */
  logTail: string[]
}

export interface ClusterInfo {
  runDir: string
  fsid: string
  /** the quorum slots' addresses (slot i at index i), fixed at mkfs */
  slotAddrs: string[]
}

/** The leader and term as the agents that are up see them. */
export interface QuorumSummary {
  term: number
  /** -1: none known */
  leaderSlot: number
  /** the agent of the leader's slot, when it is one of these */
  leader: AgentView | undefined
}

const dash = (n: number | undefined): string => (n === undefined ? '-' : String(n))

/** Shorter path for the table: relative to the working directory when inside it. */
export function shortPath(p: string): string {
  const r = relative(process.cwd(), p)
  return r && !r.startsWith('..') ? r : p
}

export function stateText(a: AgentView): string {
  if (a.state === 'stopped' || a.state === 'exited' || a.state === 'failed')
    return a.exit ? `${a.state} (${a.exit})` : a.state
  return a.state
}

/**
 * Leader and term from the GET /quorum replies of the agents that are up: the reply with the
 * highest term (members that have not heard of the latest election yet lag behind), one that
 * knows a leader before one that does not, the serving one first.  Undefined when none replied.
 */
export function quorumSummary(agents: AgentView[]): QuorumSummary | undefined {
  let best: QuorumState | undefined
  const rank = (q: QuorumState): number[] => [q.term!, q.leaderSlot! >= 0 ? 1 : 0, q.serving ? 1 : 0]
  const better = (a: number[], b: number[]): boolean => {
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i]! > b[i]!
    return false
  }
  for (const a of agents) {
    const q = a.quorum
    if (a.state !== 'up' || q?.term === undefined || q.leaderSlot === undefined) continue
    if (!best || better(rank(q), rank(best))) best = q
  }
  if (!best) return undefined
  const leaderSlot = best.leaderSlot!
  return {
    term: best.term!,
    leaderSlot,
    leader: leaderSlot < 0 ? undefined : agents.find((a) => a.slot === leaderSlot),
  }
}

function quorumText(q: QuorumSummary | undefined): string {
  if (!q) return 'quorum: no agent answers GET /quorum'
  if (q.leaderSlot < 0) return `leader: none elected  term ${q.term}`
  const l = q.leader
  const who = l ? ` (${l.name}${l.state === 'up' ? '' : `, ${stateText(l)}`})` : ''
  return `leader: slot ${q.leaderSlot}${who}  term ${q.term}`
}

/** What the SERVES column says: whether the server role runs on it (fencing: elected, fencing first). */
function servesText(a: AgentView): string {
  const q = a.quorum
  if (q?.serving !== undefined) return q.serving ? 'yes' : q.fencing ? 'fencing' : 'no'
  if (a.status?.server !== undefined) return a.status.server ? 'yes' : 'no'
  return '-'
}

/**
 * The status table: header (leader slot and term), one row per agent (its slot, quorum role,
 * whether it serves), the server line, fences under way, log tails of agents not up.
 */
export function renderTable(info: ClusterInfo, agents: AgentView[], now: Date): string[] {
  const head = [
    'AGENT',
    'MOUNTPOINT',
    'RID',
    'SLOT',
    'QUORUM',
    'SERVES',
    'PID',
    'STATE',
    'TRANS SEQ',
    'COMMITS',
    'LOCKS r/w/wo',
    'REQ/INV',
    'ITEMS',
    'METRICS',
  ]
  const rows = agents.map((a) => {
    const s = a.status
    const l = s?.locks
    return [
      a.name,
      shortPath(a.mountpoint),
      s?.rid ?? a.rid ?? '-',
      String(a.slot),
      a.quorum?.role ?? '-',
      servesText(a),
      a.pid === undefined ? '-' : String(a.pid),
      stateText(a),
      dash(s?.seq),
      dash(s?.commits),
      l ? `${dash(l.read)}/${dash(l.write)}/${dash(l.writeOnly)}` : '-',
      l ? `${dash(l.requests)}/${dash(l.invalidations)}` : '-',
      dash(s?.items),
      `http://${s?.metrics ?? a.metricsAddr}/metrics`,
    ]
  })
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const fmt = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd()
  const up = agents.filter((a) => a.state === 'up').length
  const q = quorumSummary(agents)
  const out = [
    `scoutfs local cluster  ${now.toTimeString().slice(0, 8)}  fsid ${info.fsid}  ${quorumText(q)}  ` +
      `${up}/${agents.length} agents up  run dir ${shortPath(info.runDir)}`,
    fmt(head),
    ...rows.map(fmt),
    ...serverLines(info, agents, q),
  ]
  for (const a of agents) {
    const f = a.quorum?.fencing
    if (f)
      out.push(
        `${a.name}: fencing rid ${f.rid ?? '?'} (${f.reason ?? '?'}) before it serves: attempt ${dash(f.attempts)}, ` +
          `${f.sinceMs === undefined ? '?' : (f.sinceMs / 1000).toFixed(1)} s${f.error ? `, last error: ${f.error}` : ''}`,
      )
    if (a.state === 'up' && a.quorumError) out.push(`${a.name}: GET /quorum failed (${a.quorumError})`)
  }
  for (const a of agents) {
    if (a.state === 'up' || a.state === 'stopped') continue
    out.push(`${a.name}: ${stateText(a)}${a.error ? ` (${a.error})` : ''}; its log ends:`)
    out.push(...(a.logTail.length ? a.logTail.slice(-3) : ['(empty)']).map((l) => `  ${l}`))
  }
  return out
}

/** What comes after a leader that is gone: an election, unless too few members are left. */
function afterLeader(agents: AgentView[]): string {
  const majority = agents.find((a) => a.quorum?.majority !== undefined)?.quorum?.majority
  const running = agents.filter((a) => a.state === 'up' || a.state === 'down').length
  return majority !== undefined && running < majority
    ? `${running} of ${agents.length} members left, no majority (${majority}): no leader can be elected`
    : 'the other members elect a new one once they miss its heartbeats'
}

function serverLines(info: ClusterInfo, agents: AgentView[], q: QuorumSummary | undefined): string[] {
  const claim = agents.filter((a) => a.quorum?.serving === true || a.status?.server === true)
  const out: string[] = []
  if (claim.length > 1)
    out.push(`warning: ${claim.map((a) => a.name).join(', ')} all report running the server (one leader serves)`)
  const srv = claim.find((a) => a.status?.serverState) ?? claim[0]
  if (!srv) {
    const l = q?.leader
    const why = !q
      ? 'no agent answers GET /quorum'
      : q.leaderSlot < 0
        ? 'no leader is elected yet'
        : !l
          ? `the leader, slot ${q.leaderSlot}, is none of these agents`
          : l.state !== 'up'
            ? `the leader ${l.name} is ${stateText(l)}; ${afterLeader(agents)}`
            : l.quorum?.fencing
              ? `the leader ${l.name} fences before it serves`
              : `the leader ${l.name} is starting the server`
    out.push(`server: none serving (${why})`)
    return out
  }
  const where = `${srv.name}, slot ${srv.slot}${info.slotAddrs[srv.slot] ? ` at ${info.slotAddrs[srv.slot]}` : ''}`
  const ss = srv.status?.serverState
  if (!ss) {
    out.push(`server (${where}): no server state (${srv.state !== 'up' ? stateText(srv) : 'not reported'})`)
    return out
  }
  const byRid = new Map<string, string>()
  for (const a of agents) {
    const rid = a.status?.rid ?? a.rid
    if (rid) byRid.set(rid.replace(/^0+/, ''), a.name)
  }
  const mounts = ss.mounts?.map((r) => byRid.get(r.replace(/^0+/, '')) ?? `rid ${r}`)
  out.push(
    `server (${where}): mounts ${mounts ? `${mounts.length}${mounts.length ? ` (${mounts.join(' ')})` : ''}` : '-'}` +
      `  log trees ${dash(ss.logTrees)}  finalized ${dash(ss.finalized)}  merges ${dash(ss.merges)}` +
      `  commits ${dash(ss.commits)}  reclaims ${dash(ss.reclaims)}` +
      `  recovering ${ss.recovering === undefined ? '-' : ss.recovering ? 'YES' : 'no'}`,
  )
  return out
}

const LEVELS: Record<number, string> = { 10: 'TRACE', 20: 'DEBUG', 30: 'INFO', 40: 'WARN', 50: 'ERROR', 60: 'FATAL' }
const LOG_SKIP = new Set(['level', 'time', 'pid', 'hostname', 'mountpoint', 'msg'])

/** A pino JSON log line as `HH:MM:SS LEVEL msg k=v ...`; other lines unchanged. */
export function formatLogLine(line: string): string {
  let v: unknown
  try {
    v = JSON.parse(line)
  } catch {
    return line
  }
  if (!isObj(v) || typeof v.msg !== 'string') return line
  const t = typeof v.time === 'number' ? new Date(v.time).toTimeString().slice(0, 8) : ''
  const lvl = typeof v.level === 'number' ? (LEVELS[v.level] ?? String(v.level)) : ''
  const rest = Object.entries(v)
    .filter(([k]) => !LOG_SKIP.has(k))
    .map(([k, x]) => `${k}=${typeof x === 'string' ? x : JSON.stringify(x)}`)
  return [t, lvl, v.msg, ...rest].filter(Boolean).join(' ')
}

/**
 * The terminal: on a TTY the table is redrawn in place (notes are written above it, then the
 * table again); otherwise notes and tables are plain lines.
 */
export class Screen {
  private drawn = 0
  private render: (() => string[]) | undefined

  constructor(
    private readonly out: NodeJS.WriteStream = process.stdout,
    readonly tty: boolean = process.stdout.isTTY === true,
  ) {}

  /** A message for the user (kept in the scrollback above the table, which is drawn afresh). */
  note(text: string): void {
    this.erase()
    this.out.write(text.endsWith('\n') ? text : text + '\n')
    if (this.tty && this.render) this.draw(this.render())
  }

  /** Show the table `render` makes: in place on a TTY (and again after each note), appended otherwise. */
  table(render: () => string[]): void {
    if (!this.tty) {
      this.out.write(render().join('\n') + '\n\n')
      return
    }
    this.render = render
    this.erase()
    this.draw(render())
  }

  /** Remove the table from a TTY (before the final messages). */
  done(): void {
    this.erase()
    this.render = undefined
  }

  private draw(lines: string[]): void {
    const cols = Math.max(20, (this.out.columns ?? 200) - 1)
    const cut = lines.map((l) => (l.length > cols ? l.slice(0, cols - 1) + '…' : l))
    this.out.write(cut.join('\n') + '\n')
    this.drawn = cut.length
  }

  private erase(): void {
    if (this.tty && this.drawn) this.out.write(`\x1b[${this.drawn}A\x1b[J`)
    this.drawn = 0
  }
}
