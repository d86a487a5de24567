/*
 * One launched agent: `scoutfs mount --foreground` as a child process of this Node, its log
 * (collected in memory, or appended to a log file together with anything that bypasses the
 * logger), the wait for its "mounted" log line, and its stop: SIGTERM and a bounded wait, then
 * SIGKILL, and a lazy unmount of whatever mount it leaves behind.
 *
 * Every agent started here is remembered until it exits: killAllAgents() (or, when this
 * process exits anyway, an 'exit' handler) SIGKILLs whatever is left and forces its mount away.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { closeSync, existsSync, openSync, readSync, statSync, promises as fsp } from 'node:fs'
import { FsError } from '../../util/errors.js'
import { SCOUTFS_BIN } from './scoutfs-cli.js'
import { forceUnmount, forceUnmountSync, isMounted } from '../../fuse/unmount.js'

export interface AgentSpec {
  meta: string
  data: string
  /** the mountpoint (created when missing) */
  mnt: string
  /** -o mount options */
  options?: string
  /** --metrics-addr HOST:PORT (port 0: any) */
  metricsAddr?: string
  /** --log-level */
  logLevel?: string
  /** --log-file: the log goes there (stdout and stderr too); in memory when not given */
  logFile?: string
  /** its own process group: a terminal's Ctrl-C then reaches only the launcher */
  detached?: boolean
  /**
   * run it in this network namespace (`ip netns` name; by nsenter, which execs the agent, so
   * its pid is the agent's): its addresses and reachability are the namespace's, its FUSE mount
   * and admin socket this host's
   */
  netns?: string
  env?: NodeJS.ProcessEnv
}

/** What the agent's "mounted" log line says. */
export interface MountedInfo {
  rid?: string
  metrics?: string
  server?: boolean
  serverAddr?: string
}

export type WaitResult = 'mounted' | 'exited' | 'timeout' | 'aborted'

export interface StopResult {
  /** it was running when asked to stop */
  wasRunning: boolean
  /** it exited within the time given after SIGTERM (else it was SIGKILLed) */
  inTime: boolean
  code: number | null
  signal: NodeJS.Signals | null
  ms: number
  /** its mount was still there after it exited */
  leftMounted: boolean
  /** nothing is mounted at its mountpoint any more */
  unmounted: boolean
}

const live = new Set<AgentProcess>()
let exitHandler = false

/** A JSON object log line, or undefined. */
function jsonLine(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined
  try {
    const v: unknown = JSON.parse(line)
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

export class AgentProcess {
  proc: ChildProcess | undefined
  /** undefined while it runs (or before it started) */
  exitCode: number | null | undefined
  exitSignal: NodeJS.Signals | null | undefined
  /** resolves when it has exited (at once when it never started) */
  exited: Promise<void> = Promise.resolve()
  /** set once its "mounted" line was seen */
  mounted: MountedInfo | undefined
  private memLog = ''
  private logStart = 0
  private startedAt = 0

  constructor(readonly spec: AgentSpec) {}

  get mnt(): string {
    return this.spec.mnt
  }

  get pid(): number | undefined {
    return this.proc?.pid
  }

  get running(): boolean {
    return this.proc !== undefined && this.exitCode === undefined
  }

  /** "code N" or "signal SIG" */
  get exitText(): string {
    return this.exitSignal ? `signal ${this.exitSignal}` : `code ${this.exitCode}`
  }

  /** ms since it was started */
  get age(): number {
    return Date.now() - this.startedAt
  }

  /** Spawn it (after creating its mountpoint); `waitMounted` then tells whether it serves. */
  async start(): Promise<void> {
    if (this.proc) throw new FsError('EINVAL', `the agent for ${this.mnt} was already started`)
    const s = this.spec
    await fsp.mkdir(s.mnt, { recursive: true })
    const args = ['mount', '--metadev', s.meta, s.data, s.mnt, '--foreground']
    if (s.logLevel) args.push('--log-level', s.logLevel)
    if (s.logFile) args.push('--log-file', s.logFile)
    if (s.metricsAddr) args.push('--metrics-addr', s.metricsAddr)
    if (s.options) args.push('-o', s.options)
    const env = s.env ? { ...process.env, ...s.env } : process.env
    const [cmd, cmdArgs] = s.netns
      ? ['nsenter', [`--net=/run/netns/${s.netns}`, process.execPath, SCOUTFS_BIN, ...args]]
      : [process.execPath, [SCOUTFS_BIN, ...args]]
    if (s.logFile) {
      this.logStart = existsSync(s.logFile) ? statSync(s.logFile).size : 0
      const fd = openSync(s.logFile, 'a')
      try {
        this.proc = spawn(cmd, cmdArgs, {
          stdio: ['ignore', fd, fd],
          detached: s.detached,
          env,
        })
      } finally {
        closeSync(fd)
      }
    } else {
      this.proc = spawn(cmd, cmdArgs, {
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: s.detached,
        env,
      })
      this.proc.stdout!.on('data', (c: Buffer) => (this.memLog += c.toString()))
      this.proc.stderr!.on('data', (c: Buffer) => (this.memLog += c.toString()))
    }
    this.startedAt = Date.now()
    const proc = this.proc
    live.add(this)
    installExitHandler()
    this.exited = new Promise((res) => {
      const done = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (this.exitCode !== undefined) return
        this.exitCode = code
        this.exitSignal = signal
        live.delete(this)
        res()
      }
      proc.once('exit', done)
      proc.once('error', () => done(null, null)) // could not be spawned at all
    })
  }

  /** This run's log: its part of the log file, or what it printed. */
  log(): string {
    const file = this.spec.logFile
    if (!file) return this.memLog
    let fd: number
    try {
      fd = openSync(file, 'r')
    } catch {
      return ''
    }
    try {
      const size = statSync(file).size
      const buf = Buffer.alloc(Math.max(0, size - this.logStart))
      readSync(fd, buf, 0, buf.length, this.logStart)
      return buf.toString('utf8')
    } finally {
      closeSync(fd)
    }
  }

  /**
   * Wait for its "mounted" log line: 'exited' when it died first, 'aborted' when `aborted()`
   * says so, 'timeout' after `timeoutMs` from its start.  `onLine` sees every other JSON log
   * line on the way (to explain a slow start).
   */
  async waitMounted(o: {
    timeoutMs: number
    aborted?: () => boolean
    onLine?: (v: Record<string, unknown>) => void
    pollMs?: number
  }): Promise<WaitResult> {
    const deadline = this.startedAt + o.timeoutMs
    let scanned = 0
    for (;;) {
      const text = this.log()
      const end = text.lastIndexOf('\n') + 1
      const lines = text.slice(scanned, end).split('\n')
      scanned = Math.max(scanned, end)
      for (const line of lines) {
        const v = jsonLine(line)
        if (!v) continue
        if (v.msg !== 'mounted') {
          o.onLine?.(v)
          continue
        }
        this.mounted = {
          rid: typeof v.rid === 'string' ? v.rid : undefined,
          metrics: typeof v.metrics === 'string' ? v.metrics : undefined,
          server: typeof v.server === 'boolean' ? v.server : undefined,
          serverAddr: typeof v.serverAddr === 'string' ? v.serverAddr : undefined,
        }
        return 'mounted'
      }
      if (!this.running) return 'exited'
      if (o.aborted?.()) return 'aborted'
      if (Date.now() > deadline) return 'timeout'
      await new Promise((r) => setTimeout(r, o.pollMs ?? 50))
    }
  }

  /** Send `sig` to it when it runs. */
  signal(sig: NodeJS.Signals): void {
    if (!this.running || this.proc?.pid === undefined) return
    try {
      process.kill(this.proc.pid, sig)
    } catch {
      // already gone
    }
  }

  /** SIGTERM and wait up to `timeoutMs`; then SIGKILL.  Its mount is forced away in any case. */
  async stop(timeoutMs: number): Promise<StopResult> {
    const t0 = Date.now()
    if (!this.running) {
      const unmounted = await forceUnmount(this.mnt)
      return { wasRunning: false, inTime: true, code: null, signal: null, ms: 0, leftMounted: !unmounted, unmounted }
    }
    this.signal('SIGTERM')
    let timer: NodeJS.Timeout | undefined
    const inTime = await Promise.race([
      this.exited.then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs))),
    ])
    clearTimeout(timer)
    if (!inTime) {
      this.signal('SIGKILL')
      await this.exited
    }
    const ms = Date.now() - t0
    const leftMounted = await isMounted(this.mnt)
    const unmounted = !leftMounted || (await forceUnmount(this.mnt))
    return {
      wasRunning: true,
      inTime,
      code: this.exitCode ?? null,
      signal: this.exitSignal ?? null,
      ms,
      leftMounted,
      unmounted,
    }
  }

  /** SIGKILL, wait for the exit, force the dead mount away. */
  async kill(): Promise<void> {
    this.signal('SIGKILL')
    await this.exited
    await forceUnmount(this.mnt)
  }

  /** SIGKILL and force the mount away without waiting (for 'exit' handlers). */
  killSync(): void {
    this.signal('SIGKILL')
    if (this.proc) forceUnmountSync(this.mnt)
  }
}

/** Start an agent and wait until it serves; on any failure it is killed and its mount removed. */
export async function launchAgent(spec: AgentSpec, timeoutMs: number): Promise<AgentProcess> {
  const a = new AgentProcess(spec)
  await a.start()
  const r = await a.waitMounted({ timeoutMs })
  if (r === 'mounted') return a
  await a.kill()
  throw new FsError(
    r === 'timeout' ? 'ETIMEDOUT' : 'EIO',
    `agent for ${spec.mnt} ${r === 'timeout' ? `did not mount within ${timeoutMs / 1000} s` : `exited before mounting (${a.exitText})`}:\n${a.log()}`,
  )
}

/** Every agent started here that is still running. */
export function liveAgents(): AgentProcess[] {
  return [...live]
}

/** SIGKILL every agent still running and force its mount away. */
export async function killAllAgents(): Promise<void> {
  await Promise.all([...live].map((a) => a.kill().catch(() => undefined)))
}

/** killAllAgents, synchronously (signals sent, mounts forced away; exits not awaited). */
export function killAllAgentsSync(): void {
  for (const a of [...live]) a.killSync()
}

/** Nothing started here may outlive this process, even when it ends on an error. */
function installExitHandler(): void {
  if (exitHandler) return
  exitHandler = true
  process.on('exit', killAllAgentsSync)
}
