/*
 * What the local cluster (scripts/local-cluster.ts) shows: an agent's admin-socket GET /status
 * read defensively (fields an agent build does not report yet stay undefined and show as '-'),
 * the status table with its server line, agent log lines made readable, and the terminal
 * screen that redraws the table in place on a TTY while notes scroll above it.
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
    recovering?: boolean
  }
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
      recovering: bool(ss, 'recovering'),
    }
  return s
}

/**
 * GET /status from the agent serving `mountpoint`, giving up after `timeoutMs` (a hung agent
 * must not stall the table; admin.ts adminCall has no timeout).
 */
export function fetchStatus(mountpoint: string, timeoutMs: number): Promise<AgentStatus> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: adminSocketPath(mountpoint), method: 'GET', path: '/status' }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let v: unknown
        try {
          v = JSON.parse(text)
        } catch {
          return reject(new Error(`bad /status reply (HTTP ${res.statusCode})`))
        }
        if (res.statusCode !== 200) {
          const msg = isObj(v) ? (str(v, 'message') ?? str(v, 'code')) : undefined
          return reject(new Error(`/status failed (HTTP ${res.statusCode}${msg ? `: ${msg}` : ''})`))
        }
        resolve(parseStatus(v))
      })
    })
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`no /status reply within ${timeoutMs} ms`)))
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

/** One agent as the table shows it. */
export interface AgentView {
  name: string
  mountpoint: string
  /** the role it was started for: agent 0 (quorum_slot_nr=0) runs the server */
  role: 'server' | 'client'
  pid: number | undefined
  /** up: answered /status; down: running but not answering; the others say why it is not running */
  state: 'starting' | 'up' | 'down' | 'stopping' | 'stopped' | 'exited' | 'failed'
  /** exit code or signal, for stopped/exited/failed */
  exit?: string
  /** why it is down (the /status error) */
  error?: string
  status?: AgentStatus
  /** rid from its "mounted" log line, when /status has not answered */
  rid?: string
  metricsAddr: string
  /** last lines of its log, shown under the table when it is not up */
  logTail: string[]
}

export interface ClusterInfo {
  runDir: string
  fsid: string
  serverAddr: string
}

const dash = (n: number | undefined): string => (n === undefined ? '-' : String(n))

/** Shorter path for the table: relative to the working directory when inside it. */
export function shortPath(p: string): string {
  const r = relative(process.cwd(), p)
  return r && !r.startsWith('..') ? r : p
}

function stateText(a: AgentView): string {
  if (a.state === 'stopped' || a.state === 'exited' || a.state === 'failed')
    return a.exit ? `${a.state} (${a.exit})` : a.state
  return a.state
}

/** The status table: header, one row per agent, the server line, log tails of agents not up. */
export function renderTable(info: ClusterInfo, agents: AgentView[], now: Date): string[] {
  const head = [
    'AGENT',
    'MOUNTPOINT',
    'RID',
    'ROLE',
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
    const role = s?.server === undefined ? a.role : s.server ? 'server' : 'client'
    return [
      a.name,
      shortPath(a.mountpoint),
      s?.rid ?? a.rid ?? '-',
      role,
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
  const out = [
    `scoutfs local cluster  ${now.toTimeString().slice(0, 8)}  fsid ${info.fsid}  server ${info.serverAddr}  ` +
      `${up}/${agents.length} agents up  run dir ${shortPath(info.runDir)}`,
    fmt(head),
    ...rows.map(fmt),
    ...serverLines(agents),
  ]
  for (const a of agents) {
    if (a.state === 'up' || a.state === 'stopped') continue
    out.push(`${a.name}: ${stateText(a)}${a.error ? ` (${a.error})` : ''}; its log ends:`)
    out.push(...(a.logTail.length ? a.logTail.slice(-3) : ['(empty)']).map((l) => `  ${l}`))
  }
  return out
}

function serverLines(agents: AgentView[]): string[] {
  const claim = agents.filter((a) => a.status?.server === true)
  const out: string[] = []
  if (claim.length > 1)
    out.push(
      `warning: ${claim.map((a) => a.name).join(', ')} all report running the server (this agent build does not run a shared server yet)`,
    )
  const srv = agents.find((a) => a.status?.serverState) ?? agents.find((a) => a.role === 'server')
  const ss = srv?.status?.serverState
  if (!srv || !ss) {
    const why = !srv ? 'no server agent' : srv.state !== 'up' ? `${srv.name}: ${stateText(srv)}` : 'not reported'
    out.push(`server: no server state (${why})`)
    return out
  }
  const byRid = new Map<string, string>()
  for (const a of agents) {
    const rid = a.status?.rid ?? a.rid
    if (rid) byRid.set(rid.replace(/^0+/, ''), a.name)
  }
  const mounts = ss.mounts?.map((r) => byRid.get(r.replace(/^0+/, '')) ?? `rid ${r}`)
  out.push(
    `server (${srv.name}): mounts ${mounts ? `${mounts.length}${mounts.length ? ` (${mounts.join(' ')})` : ''}` : '-'}` +
      `  log trees ${dash(ss.logTrees)}  finalized ${dash(ss.finalized)}  merges ${dash(ss.merges)}` +
      `  commits ${dash(ss.commits)}  recovering ${ss.recovering === undefined ? '-' : ss.recovering ? 'YES' : 'no'}`,
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
