/*
 * The main job (`npm start`, via scripts/start.sh): a local 3-node scoutfs cluster on
 * file-backed devices under one run directory.  This program owns the cluster's lifecycle:
 * devices (created sparse, formatted with the server address in quorum slot 0 when they hold
 * no filesystem, checked), the three `scoutfs mount --foreground` agents as child processes
 * (agent0 with quorum_slot_nr=0 runs the server and starts first), the status table, and the
 * clean stop on Ctrl-C/SIGTERM (clients first, then the server; SIGKILL and a lazy unmount for
 * whatever does not stop in time).  What the table shows lives in local-cluster-status.ts.
 *
 * Environment: SCOUTFS_RUN_DIR (default <repo>/run), SCOUTFS_META_SIZE (1G),
 * SCOUTFS_DATA_SIZE (4G), SCOUTFS_SERVER_PORT (7150, used when formatting),
 * SCOUTFS_METRICS_PORT (9560: agentN serves metrics on 127.0.0.1:9560+N).
 * Exit codes: 0 all agents ran and stopped cleanly, 1 something failed, 2 bad settings.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import {
  closeSync,
  existsSync,
  openSync,
  promises as fsp,
  readFileSync,
  readdirSync,
  readSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs'
import { createServer } from 'node:net'
import { join, resolve } from 'node:path'
import {
  Screen,
  fetchStatus,
  formatLogLine,
  renderTable,
  shortPath,
  type AgentView,
  type ClusterInfo,
} from './local-cluster-status.js'

const REPO = resolve(__dirname, '..', '..')
const BIN = join(REPO, 'bin', 'scoutfs')
const AGENTS = 3
const QUORUM_SLOTS = 3
const MOUNT_TIMEOUT_MS = 60_000
const STOP_TIMEOUT_MS = 60_000
const STATUS_TIMEOUT_MS = 1_500
const TTY_INTERVAL_MS = 2_000
const PLAIN_INTERVAL_MS = 10_000
const TAIL_LINES = 6
const SIGNAL_REPEAT_MS = 1_000

class SettingsError extends Error {}
class StartError extends Error {}

interface Settings {
  runDir: string
  metaSize: number
  dataSize: number
  serverPort: number
  serverPortSet: boolean
  metricsPort: number
  /** settings that are set but do not apply */
  warnings: string[]
}

/** A size like truncate(1) takes: 1G, 512M, 4GiB, 1073741824 (K/M/G/T are powers of 1024). */
export function parseSize(s: string): number | undefined {
  const m = /^(\d+)\s*([KMGTP]?)(i?B)?$/i.exec(s.trim())
  if (!m) return undefined
  const pow = ' KMGTP'.indexOf((m[2] || ' ').toUpperCase())
  const n = Number(m[1]) * 1024 ** pow
  return Number.isSafeInteger(n) && n > 0 ? n : undefined
}

function readSettings(env: NodeJS.ProcessEnv): Settings {
  const size = (k: string, dflt: string): number => {
    const v = env[k] || dflt
    const n = parseSize(v)
    if (n === undefined) throw new SettingsError(`${k}='${v}' is not a size (examples: 1G, 512M, 4GiB, 1073741824)`)
    return n
  }
  const port = (k: string, dflt: number, span: number): number => {
    const v = env[k]
    if (!v) return dflt
    const n = Number(v)
    if (!Number.isInteger(n) || n < 1 || n + span > 65535)
      throw new SettingsError(`${k}='${v}' is not a usable port (1..${65535 - span})`)
    return n
  }
  const warnings: string[] = []
  if (env.SCOUTFS_METRICS_ADDR)
    warnings.push(
      `SCOUTFS_METRICS_ADDR is ignored: the main job runs ${AGENTS} agents; set SCOUTFS_METRICS_PORT=N instead ` +
        `(agentK serves http://127.0.0.1:(N+K)/metrics; default N=9560)`,
    )
  return {
    warnings,
    runDir: resolve(env.SCOUTFS_RUN_DIR || join(REPO, 'run')),
    metaSize: size('SCOUTFS_META_SIZE', '1G'),
    dataSize: size('SCOUTFS_DATA_SIZE', '4G'),
    serverPort: port('SCOUTFS_SERVER_PORT', 7150, 0),
    serverPortSet: !!env.SCOUTFS_SERVER_PORT,
    metricsPort: port('SCOUTFS_METRICS_PORT', 9560, AGENTS - 1),
  }
}

const human = (n: number): string => {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let i = 0
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024
    i++
  }
  return `${Number.isInteger(n) ? n : n.toFixed(1)} ${u[i]}`
}

interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Run the scoutfs CLI and collect its output. */
function scoutfs(args: string[]): Promise<CliResult> {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    p.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    p.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    p.once('error', rej)
    p.once('close', (code) => res({ code, stdout, stderr }))
  })
}

const indent = (s: string): string =>
  s
    .trimEnd()
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n')

/** Mountpoints in /proc/mounts (octal escapes decoded). */
function mountedPaths(): Set<string> {
  let text = ''
  try {
    text = readFileSync('/proc/mounts', 'utf8')
  } catch {
    return new Set()
  }
  return new Set(
    text
      .split('\n')
      .map((l) => l.split(' ')[1])
      .filter((p): p is string => !!p)
      .map((p) => p.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))),
  )
}

/** fusermount -uz (falling back to umount -l); true when `mnt` is no longer mounted. */
function forceUnmount(mnt: string): boolean {
  if (!mountedPaths().has(mnt)) return true
  for (const [cmd, args] of [
    ['fusermount3', ['-uz', mnt]],
    ['fusermount', ['-uz', mnt]],
    ['umount', ['-l', mnt]],
  ] as const) {
    spawnSync(cmd, [...args], { stdio: 'ignore' })
    if (!mountedPaths().has(mnt)) return true
  }
  return false
}

/** Whether HOST:PORT can be listened on right now. */
function addrFree(addr: string): Promise<boolean> {
  const i = addr.lastIndexOf(':')
  const host = addr.slice(0, i).replace(/^\[(.*)\]$/, '$1')
  const port = Number(addr.slice(i + 1))
  if (!Number.isInteger(port)) return Promise.resolve(true) // not ours to judge; the agent will say
  return new Promise((res) => {
    const s = createServer()
    s.once('error', () => res(false))
    s.listen(port, host, () => s.close(() => res(true)))
  })
}

/** pid of the process running `scoutfs mount ... MOUNTPOINT`, and of its parent. */
function agentOf(mnt: string): { pid: number; ppid: number; parent: string } | undefined {
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue
    try {
      const argv = readFileSync(`/proc/${d}/cmdline`, 'utf8').split('\0')
      if (!argv.includes('mount') || !argv.includes(mnt) || !argv.some((x) => x.endsWith('scoutfs'))) continue
      const ppid = Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${d}/status`, 'utf8'))?.[1] ?? 0)
      const parent = ppid > 1 ? readFileSync(`/proc/${ppid}/cmdline`, 'utf8').split('\0').join(' ').trim() : ''
      return { pid: Number(d), ppid, parent }
    } catch {
      continue // gone meanwhile, or not ours to read
    }
  }
  return undefined
}

function hasCommand(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0
}

interface MountedLine {
  rid?: string
  metrics?: string
  server?: boolean
  serverAddr?: string
}

/** One `scoutfs mount --foreground` child process. */
class Agent {
  proc: ChildProcess | undefined
  exitCode: number | null | undefined
  exitSignal: NodeJS.Signals | null | undefined
  exited: Promise<void> = Promise.resolve()
  mounted: MountedLine | undefined
  /** set before we signal it: its exit is then expected */
  stopRequested = false
  /** why it failed: exited without being asked to, or did not mount */
  failure: string | undefined
  view: AgentView
  private logStart = 0
  private startedAt = 0

  constructor(
    readonly name: string,
    readonly role: 'server' | 'client',
    readonly meta: string,
    readonly data: string,
    readonly mountpoint: string,
    readonly logFile: string,
    readonly metricsAddr: string,
  ) {
    this.view = {
      name,
      mountpoint,
      role,
      pid: undefined,
      state: 'starting',
      metricsAddr,
      logTail: [],
    }
  }

  get running(): boolean {
    return this.proc !== undefined && this.exitCode === undefined
  }

  get exitText(): string {
    return this.exitSignal ? `signal ${this.exitSignal}` : `code ${this.exitCode}`
  }

  start(onExit: (a: Agent) => void): void {
    this.logStart = existsSync(this.logFile) ? statSync(this.logFile).size : 0
    const args = ['mount', '--metadev', this.meta, this.data, this.mountpoint, '--foreground']
    args.push('--log-file', this.logFile, '--metrics-addr', this.metricsAddr)
    if (this.role === 'server') args.push('-o', 'quorum_slot_nr=0')
    // Its own process group: Ctrl-C in the terminal reaches only this program, which then
    // stops the agents in order.  Output that bypasses the logger (a crash) joins its log.
    const fd = openSync(this.logFile, 'a')
    try {
      this.proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', fd, fd], detached: true })
    } finally {
      closeSync(fd)
    }
    this.startedAt = Date.now()
    this.view.pid = this.proc.pid
    this.exited = new Promise((res) => {
      this.proc!.once('exit', (code, signal) => {
        this.exitCode = code
        this.exitSignal = signal
        res()
        onExit(this)
      })
    })
  }

  /** This run's part of the log file. */
  log(): string {
    let fd: number
    try {
      fd = openSync(this.logFile, 'r')
    } catch {
      return ''
    }
    try {
      const size = statSync(this.logFile).size
      const buf = Buffer.alloc(Math.max(0, size - this.logStart))
      readSync(fd, buf, 0, buf.length, this.logStart)
      return buf.toString('utf8')
    } finally {
      closeSync(fd)
    }
  }

  tail(n = TAIL_LINES): string[] {
    return this.log().trimEnd().split('\n').filter(Boolean).slice(-n).map(formatLogLine)
  }

  /**
   * Wait for its "mounted" log line; 'exited' when it died first, 'aborted' when asked to stop.
   * `onLine` sees every other JSON log line on the way (to explain a slow start).
   */
  async waitMounted(
    aborted: () => boolean,
    onLine: (v: Record<string, unknown>) => void,
  ): Promise<'mounted' | 'exited' | 'timeout' | 'aborted'> {
    const deadline = this.startedAt + MOUNT_TIMEOUT_MS
    let scanned = 0
    for (;;) {
      const text = this.log()
      const end = text.lastIndexOf('\n') + 1
      const lines = text.slice(scanned, end).split('\n')
      scanned = Math.max(scanned, end)
      for (const line of lines) {
        let v: unknown
        try {
          v = JSON.parse(line)
        } catch {
          continue
        }
        if (typeof v !== 'object' || v === null || Array.isArray(v)) continue
        const o = v as Record<string, unknown>
        if (o.msg !== 'mounted') {
          onLine(o)
          continue
        }
        this.mounted = {
          rid: typeof o.rid === 'string' ? o.rid : undefined,
          metrics: typeof o.metrics === 'string' ? o.metrics : undefined,
          server: typeof o.server === 'boolean' ? o.server : undefined,
          serverAddr: typeof o.serverAddr === 'string' ? o.serverAddr : undefined,
        }
        this.view.rid = this.mounted.rid
        return 'mounted'
      }
      if (!this.running) return 'exited'
      if (aborted()) return 'aborted'
      if (Date.now() > deadline) return 'timeout'
      await new Promise((r) => setTimeout(r, 100))
    }
  }

  get mountMs(): number {
    return Date.now() - this.startedAt
  }

  signal(sig: NodeJS.Signals): void {
    if (!this.running || this.proc?.pid === undefined) return
    try {
      process.kill(this.proc.pid, sig)
    } catch {
      // already gone
    }
  }

  /** SIGTERM and wait (bounded); SIGKILL and a lazy unmount when it does not stop in time. */
  async stop(): Promise<{ clean: boolean; text: string }> {
    const t0 = Date.now()
    this.stopRequested = true
    if (!this.running) {
      const gone = forceUnmount(this.mountpoint)
      return { clean: false, text: `was not running${gone ? '' : `; ${this.mountpoint} is still mounted`}` }
    }
    this.view.state = 'stopping'
    this.signal('SIGTERM')
    const inTime = await Promise.race([
      this.exited.then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), STOP_TIMEOUT_MS).unref()),
    ])
    if (!inTime) {
      this.signal('SIGKILL')
      await this.exited
      const gone = forceUnmount(this.mountpoint)
      return {
        clean: false,
        text: `did not stop within ${STOP_TIMEOUT_MS / 1000} s: killed (SIGKILL)${gone ? ', mount removed' : `; ${this.mountpoint} is STILL MOUNTED`}`,
      }
    }
    const secs = ((Date.now() - t0) / 1000).toFixed(1)
    const left = mountedPaths().has(this.mountpoint)
    const gone = !left || forceUnmount(this.mountpoint)
    // SIGTERM before its handler is in place (still starting) ends it at once: nothing mounted
    const early = !this.mounted && this.exitSignal === 'SIGTERM'
    const ok = (this.exitCode === 0 || early) && !left
    return {
      clean: ok,
      text:
        (early ? 'was still starting; SIGTERM ended it' : `exited with ${this.exitText}`) +
        ` after ${secs} s` +
        (left
          ? gone
            ? ' leaving its mount behind (removed with fusermount -uz)'
            : '; its mount is STILL MOUNTED'
          : ''),
    }
  }
}

class LocalCluster {
  private readonly screen = new Screen()
  private agents: Agent[] = []
  private info: ClusterInfo | undefined
  private stopping = false
  private forced = false
  private ticker: NodeJS.Timeout | undefined
  private polling = false
  private stopped: (() => void) | undefined

  constructor(private readonly s: Settings) {}

  private note(text: string): void {
    this.screen.note(text)
  }

  async run(): Promise<number> {
    const s = this.s
    this.installSignals()
    this.preflight()
    await fsp.mkdir(s.runDir, { recursive: true })
    const meta = join(s.runDir, 'meta.img')
    const data = join(s.runDir, 'data.img')
    this.agents = Array.from(
      { length: AGENTS },
      (_, i) =>
        new Agent(
          `agent${i}`,
          i === 0 ? 'server' : 'client',
          meta,
          data,
          join(s.runDir, `mnt${i}`),
          join(s.runDir, `agent${i}.log`),
          `127.0.0.1:${s.metricsPort + i}`,
        ),
    )
    this.refuseMounted()
    this.note(`scoutfs local cluster: ${AGENTS} agents on devices in ${s.runDir}`)
    for (const w of s.warnings) this.note(`  warning: ${w}`)
    await this.metricsPortsFree()
    const created = [
      this.device(meta, s.metaSize, 'SCOUTFS_META_SIZE'),
      this.device(data, s.dataSize, 'SCOUTFS_DATA_SIZE'),
    ].filter((p): p is string => p !== undefined)
    const fs = await this.formatted(meta, data, created)
    this.info = { runDir: s.runDir, fsid: fs.fsid, serverAddr: fs.serverAddr }
    await this.check(meta, data)
    for (const a of this.agents) await fsp.mkdir(a.mountpoint, { recursive: true })

    const ok = await this.startAgents()
    if (!ok || this.stopping) return this.shutdown()
    const up = this.agents.filter((a) => a.mounted && a.running)
    const down = this.agents.filter((a) => !(a.mounted && a.running))
    const every = `the table refreshes every ${(this.screen.tty ? TTY_INTERVAL_MS : PLAIN_INTERVAL_MS) / 1000} s`
    if (down.length)
      this.note(
        `cluster is up with ${up.length} of ${AGENTS} agents (${down.map((a) => a.name).join(', ')} did not mount); ` +
          `${every}; Ctrl-C stops it.`,
      )
    else
      this.note(
        `cluster is up: ${AGENTS} agents mounted; ${every}. Try: echo hi > ${shortPath(this.agents[0]!.mountpoint)}/f ` +
          `&& cat ${shortPath(this.agents[1]!.mountpoint)}/f. Ctrl-C stops the cluster.`,
      )
    await this.tick()
    this.ticker = setInterval(() => void this.tick(), this.screen.tty ? TTY_INTERVAL_MS : PLAIN_INTERVAL_MS)
    await new Promise<void>((r) => {
      this.stopped = r
      if (this.stopping) r()
    })
    return this.shutdown()
  }

  private installSignals(): void {
    let firstAt: number | undefined
    const onSignal = (sig: NodeJS.Signals): void => {
      // `npm start` forwards the terminal's SIGINT that this process gets too: a repeat within
      // a moment is the same Ctrl-C, not a second one.
      if (firstAt !== undefined && Date.now() - firstAt < SIGNAL_REPEAT_MS) return
      if (this.stopping) {
        if (this.forced) return
        this.forced = true
        this.note(
          `${sig} while stopping: killing every agent now (SIGKILL) and removing the mounts ` +
            `(the next start waits for the server's recovery of these mounts)`,
        )
        this.killAll()
        process.exit(1)
      }
      firstAt = Date.now()
      this.stopping = true
      this.note(`${sig}: stopping the cluster cleanly (${sig === 'SIGINT' ? 'Ctrl-C' : sig} again to kill it)`)
      this.stopped?.()
    }
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, onSignal)
    // Last resort (a crash of this program): nothing it started may outlive it.
    process.on('exit', () => this.killAll())
  }

  /** SIGKILL every agent still running and lazily unmount every mountpoint (synchronous). */
  private killAll(): void {
    for (const a of this.agents) {
      a.stopRequested = true
      a.signal('SIGKILL')
    }
    for (const a of this.agents) if (a.proc) forceUnmount(a.mountpoint)
  }

  private preflight(): void {
    if (!existsSync('/dev/fuse'))
      throw new StartError(
        'FUSE is not available: /dev/fuse is missing. Load the kernel module (modprobe fuse), or run the ' +
          'container with --device /dev/fuse --cap-add SYS_ADMIN.',
      )
    if (!hasCommand('fusermount3') && !hasCommand('fusermount'))
      throw new StartError(
        "fusermount is missing (Debian package fuse3): run 'bash scripts/ensure-deps.sh' as root, or 'apt-get install -y fuse3'.",
      )
    if (!existsSync(BIN) || !existsSync(join(REPO, 'dist', 'node-agent', 'src', 'cli', 'main.js')))
      throw new StartError(`the project is not built: run 'npm run build' in ${REPO}`)
  }

  private refuseMounted(): void {
    const mounted = mountedPaths()
    const busy = this.agents.filter((a) => mounted.has(a.mountpoint))
    if (!busy.length) return
    const bin = shortPath(BIN)
    const lines = busy.map((a) => {
      const ag = agentOf(a.mountpoint)
      if (!ag)
        return `  ${a.mountpoint}: no agent runs it (left behind); remove it with: fusermount -uz ${a.mountpoint}`
      const by = ag.parent.includes('local-cluster') ? `, started by the local cluster pid ${ag.ppid}` : ''
      return `  ${a.mountpoint}: served by agent pid ${ag.pid}${by}`
    })
    const owner = busy.map((a) => agentOf(a.mountpoint)).find((ag) => ag?.parent.includes('local-cluster'))
    // clients first, the server (agent0) last
    const order = [...busy.filter((a) => a.role !== 'server'), ...busy.filter((a) => a.role === 'server')]
    throw new StartError(
      `already mounted:\n${lines.join('\n')}\n` +
        (owner
          ? `another local cluster runs on ${shortPath(this.s.runDir)}: stop it with Ctrl-C in its terminal or kill -TERM ${owner.ppid}`
          : `unmount with:  ${order.map((a) => `${bin} umount ${a.mountpoint}`).join(' && ')}`),
    )
  }

  /** Create the device file when it is missing; its path when this run created it. */
  private device(path: string, size: number, setting: string): string | undefined {
    const name = shortPath(path)
    if (existsSync(path)) {
      const have = statSync(path).size
      const differs = have !== size && process.env[setting] ? ` (${setting} applies only to new devices)` : ''
      this.note(`  ${name}: existing, ${human(have)}${differs}`)
      return undefined
    }
    writeFileSync(path, '', { flag: 'wx' })
    truncateSync(path, size)
    this.note(`  ${name}: created, ${human(size)} (sparse)`)
    return path
  }

  /** fsid and server address of the filesystem on the devices, formatting them when they hold none. */
  private async formatted(
    meta: string,
    data: string,
    created: string[],
  ): Promise<{ fsid: string; serverAddr: string }> {
    const s = this.s
    let p = await scoutfs(['print', meta, '-n', '0'])
    if (p.code !== 0) {
      const why = p.stderr.trim().replace(/^scoutfs: /, '') || `print exit ${p.code}`
      this.note(created.includes(meta) ? '  formatting the new devices' : `  ${shortPath(meta)}: ${why}; formatting`)
      const removeCreated = async (): Promise<string> => {
        for (const f of created) await fsp.rm(f, { force: true })
        return created.length ? `\n(removed ${created.map(shortPath).join(' and ')}, which this run had created)` : ''
      }
      const addr = `127.0.0.1:${s.serverPort}`
      if (!(await addrFree(addr)))
        throw new StartError(
          `${addr} (the server address to format with) is in use; set SCOUTFS_SERVER_PORT${await removeCreated()}`,
        )
      const m = await scoutfs(['mkfs', '-Q', String(QUORUM_SLOTS), '-Q', `0,127.0.0.1,${s.serverPort}`, meta, data])
      if (m.code !== 0)
        throw new StartError(`mkfs failed (exit ${m.code}):\n${indent(m.stderr + m.stdout)}${await removeCreated()}`)
      this.note(indent(m.stdout))
      p = await scoutfs(['print', meta, '-n', '0'])
      if (p.code !== 0) throw new StartError(`print after mkfs failed:\n${indent(p.stderr)}`)
    }
    const fsid = /^\s*fsid\s+([0-9a-f]+)/m.exec(p.stdout)?.[1] ?? '?'
    const slot0 = /^\s*slot 0\s+(\S.*?)\s*$/m.exec(p.stdout)?.[1]
    if (!slot0 || slot0.startsWith('('))
      throw new StartError(
        `the filesystem on ${meta} (fsid ${fsid}) has no server address in quorum slot 0, so its agents ` +
          `cannot form a cluster (it was probably made by the single-node main job).\n` +
          `To start over (this DESTROYS its contents): rm ${meta} ${data}\n` +
          `or keep it and use another run directory: SCOUTFS_RUN_DIR=/some/dir npm start`,
      )
    if (s.serverPortSet && !slot0.endsWith(`:${s.serverPort}`))
      this.note(
        `  note: SCOUTFS_SERVER_PORT=${s.serverPort} applies only when formatting; this filesystem's server is at ${slot0}`,
      )
    this.note(`  filesystem ${fsid}, server (quorum slot 0) at ${slot0}`)
    if (!(await addrFree(slot0)))
      throw new StartError(
        `${slot0}, the server's address (quorum slot 0, fixed at mkfs), is in use: another cluster on ` +
          `it, or another program? (stop it, or reformat: rm ${meta} ${data})`,
      )
    return { fsid, serverAddr: slot0 }
  }

  private async check(meta: string, data: string): Promise<void> {
    const t0 = Date.now()
    const c = await scoutfs(['check', '-q', meta, data])
    if (c.code !== 0)
      throw new StartError(
        `check found problems (exit ${c.code}); not mounting:\n${indent(c.stdout + c.stderr)}\n` +
          `To start over (this DESTROYS its contents): rm ${meta} ${data}`,
      )
    this.note(`  check: clean (${((Date.now() - t0) / 1000).toFixed(1)} s)`)
  }

  private async metricsPortsFree(): Promise<void> {
    const busy: string[] = []
    for (const a of this.agents)
      if (!(await addrFree(a.metricsAddr))) busy.push(`  ${a.metricsAddr} (${a.name}'s metrics)`)
    if (busy.length)
      throw new StartError(
        `metrics addresses already in use (another local cluster?); set SCOUTFS_METRICS_PORT:\n${busy.join('\n')}`,
      )
  }

  private onExit = (a: Agent): void => {
    a.view.status = undefined
    if (a.stopRequested) {
      a.view.state = 'stopped'
      a.view.exit = a.exitText
      return
    }
    a.failure = `${a.mounted ? 'exited unexpectedly' : 'exited before mounting'} with ${a.exitText}`
    a.view.state = a.mounted ? 'exited' : 'failed'
    a.view.exit = a.exitText
    a.view.logTail = a.tail()
    const removed = a.mounted && mountedPaths().has(a.mountpoint) && forceUnmount(a.mountpoint)
    const lines = [
      `${a.name} (${a.role}, pid ${a.proc?.pid}, ${shortPath(a.mountpoint)}) ${a.mounted ? 'exited unexpectedly' : 'exited before mounting'} with ${a.exitText}; ` +
        `last lines of ${shortPath(a.logFile)}:`,
      ...a.view.logTail.map((l) => `  ${l}`),
    ]
    if (removed) lines.push(`  its dead mount ${shortPath(a.mountpoint)} was removed (fusermount -uz)`)
    if (a.role === 'server' && this.agents.some((b) => b.running) && a.mounted)
      lines.push('  the server agent is gone: the other agents keep running but cannot reach a server')
    else if (a.mounted) lines.push('  the other agents keep running')
    this.note(lines.join('\n'))
  }

  /** agent0 (the server) first, then the others in parallel; false when the server did not mount. */
  private async startAgents(): Promise<boolean> {
    const [server, ...clients] = this.agents as [Agent, ...Agent[]]
    if (this.stopping) return true
    if (!(await this.startOne(server))) return false
    if (this.stopping) return true
    await Promise.all(clients.map((a) => this.startOne(a)))
    return true
  }

  private async startOne(a: Agent): Promise<boolean> {
    a.start(this.onExit)
    this.note(
      `${a.name} (${a.role}): mounting at ${shortPath(a.mountpoint)}, pid ${a.proc?.pid}, log ${shortPath(a.logFile)}`,
    )
    const r = await a.waitMounted(
      () => this.stopping,
      (v) => {
        if (v.msg === 'waiting for recorded mounts to reconnect')
          this.note(
            `${a.name}: the server waits up to ${typeof v.ms === 'number' ? v.ms / 1000 : '?'} s for the ` +
              `${typeof v.mounts === 'number' ? v.mounts : '?'} mount(s) recorded by the last run to reconnect ` +
              `(that run did not stop cleanly); they are gone, so it then reclaims them and goes on`,
          )
      },
    )
    if (r === 'mounted') {
      const m = a.mounted!
      const role = m.server === undefined ? '' : m.server ? ', runs the server' : `, client of ${m.serverAddr ?? '?'}`
      this.note(
        `${a.name} (${a.role}): mounted in ${(a.mountMs / 1000).toFixed(1)} s, rid ${m.rid ?? '?'}${role}, metrics http://${m.metrics ?? a.metricsAddr}/metrics`,
      )
      if (m.server !== undefined && m.server !== (a.role === 'server'))
        this.note(`  warning: ${a.name} was started as the ${a.role} but reports server=${m.server}`)
      a.view.state = 'up'
      return true
    }
    if (r === 'exited' || r === 'aborted') return false // onExit reported it / we are stopping
    a.failure = `did not mount within ${MOUNT_TIMEOUT_MS / 1000} s`
    a.view.state = 'failed'
    a.view.exit = `no "mounted" within ${MOUNT_TIMEOUT_MS / 1000} s`
    a.view.logTail = a.tail()
    this.note(
      [
        `${a.name} (${a.role}) did not mount within ${MOUNT_TIMEOUT_MS / 1000} s; stopping it. Last lines of ${shortPath(a.logFile)}:`,
        ...a.view.logTail.map((l) => `  ${l}`),
      ].join('\n'),
    )
    await a.stop()
    return false
  }

  private async tick(): Promise<void> {
    if (this.polling || this.stopping || !this.info) return
    this.polling = true
    try {
      await Promise.all(
        this.agents.map(async (a) => {
          const v = a.view
          if (!a.running) {
            v.status = undefined
            return
          }
          if (!a.mounted) return
          try {
            v.status = await fetchStatus(a.mountpoint, STATUS_TIMEOUT_MS)
            v.state = 'up'
            v.error = undefined
          } catch (e) {
            v.status = undefined
            v.state = 'down'
            v.error = e instanceof Error ? e.message : String(e)
            v.logTail = a.tail(3)
          }
        }),
      )
      const info = this.info
      const at = new Date() // the numbers are as of this poll; states follow exits at once
      if (!this.stopping)
        this.screen.table(() =>
          renderTable(
            info,
            this.agents.map((a) => a.view),
            at,
          ),
        )
    } finally {
      this.polling = false
    }
  }

  /** Clients first, then the server; every mount gone afterwards.  The exit code. */
  private async shutdown(): Promise<number> {
    this.stopping = true
    if (this.ticker) clearInterval(this.ticker)
    this.screen.done()
    const started = this.agents.filter((a) => a.proc)
    let clean = !started.some((a) => a.failure)
    const groups = [started.filter((a) => a.role !== 'server'), started.filter((a) => a.role === 'server')]
    for (const group of groups) {
      const live = group.filter((a) => a.running)
      if (!live.length) continue
      this.note(`stopping ${live.map((a) => `${a.name} (${a.role}, pid ${a.proc?.pid})`).join(', ')}`)
      const results = await Promise.all(live.map(async (a) => ({ a, r: await a.stop() })))
      for (const { a, r } of results) {
        if (!r.clean) {
          clean = false
          a.view.logTail = a.tail()
          this.note([`  ${a.name}: ${r.text}; its log ends:`, ...a.view.logTail.map((l) => `    ${l}`)].join('\n'))
        } else this.note(`  ${a.name}: ${r.text}`)
      }
    }
    const mounted = mountedPaths()
    const left = this.agents.filter((a) => mounted.has(a.mountpoint))
    for (const a of left) {
      clean = false
      this.note(
        `  ${a.mountpoint} was still mounted: ${forceUnmount(a.mountpoint) ? 'removed (fusermount -uz)' : 'COULD NOT UNMOUNT it'}`,
      )
    }
    const alive = this.agents.filter((a) => a.running)
    for (const a of alive) {
      clean = false
      this.note(`  ${a.name} (pid ${a.proc?.pid}) is still running`)
    }
    const failed = this.agents.filter((a) => a.failure)
    if (clean) this.note(`all ${started.length} agents stopped cleanly; nothing is mounted`)
    else
      this.note(
        `stopped with problems` +
          (failed.length ? ` (${failed.map((a) => `${a.name} ${a.failure}`).join('; ')})` : '') +
          `; agent logs are in ${shortPath(this.s.runDir)}`,
      )
    return clean ? 0 : 1
  }

  /** After a start error: stop whatever was started. */
  async abort(): Promise<void> {
    if (this.agents.some((a) => a.proc)) await this.shutdown()
  }
}

async function main(): Promise<number> {
  let settings: Settings
  try {
    settings = readSettings(process.env)
  } catch (e) {
    if (e instanceof SettingsError) {
      process.stderr.write(`local-cluster: ${e.message}\n`)
      return 2
    }
    throw e
  }
  const cluster = new LocalCluster(settings)
  try {
    return await cluster.run()
  } catch (e) {
    process.stderr.write(
      `local-cluster: ${e instanceof StartError ? e.message : e instanceof Error ? e.stack : String(e)}\n`,
    )
    await cluster.abort()
    return 1
  }
}

if (require.main === module)
  main().then(
    (code) => process.exit(code),
    (e: unknown) => {
      process.stderr.write(`local-cluster: ${e instanceof Error ? e.stack : String(e)}\n`)
      process.exit(1)
    },
  )
