/*
 * The main job (`npm start`, via scripts/start.sh): a local 3-node scoutfs cluster on
 * file-backed devices under one run directory.  This program owns the cluster's lifecycle:
 * devices (created sparse, formatted with the server address in quorum slot 0 when they hold
 * no filesystem, checked), the three `scoutfs mount --foreground` agents as child processes
 * (agent0 with quorum_slot_nr=0 runs the server and starts first), the status table, and the
 * clean stop on Ctrl-C/SIGTERM (clients first, then the server; SIGKILL and a lazy unmount for
 * whatever does not stop in time).  Starting, stopping and unmounting the agents is the
 * launcher's (node-agent/src/tools/launcher/); what the table shows is local-cluster-status.ts's.
 *
 * Environment: SCOUTFS_RUN_DIR (default <repo>/run), SCOUTFS_META_SIZE (1G),
 * SCOUTFS_DATA_SIZE (4G), SCOUTFS_SERVER_PORT (7150, used when formatting),
 * SCOUTFS_METRICS_PORT (9560: agentN serves metrics on 127.0.0.1:9560+N).
 * Exit codes: 0 all agents ran and stopped cleanly, 1 something failed, 2 bad settings.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, promises as fsp, readFileSync, readdirSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { AgentProcess, StopResult, WaitResult } from '../node-agent/src/tools/launcher/agent-process.js'
import { Cluster } from '../node-agent/src/tools/launcher/cluster.js'
import { createSparse, mkfs } from '../node-agent/src/tools/launcher/devices.js'
import { addrFree } from '../node-agent/src/tools/launcher/ports.js'
import { cliBuilt, REPO_ROOT, runScoutfs, SCOUTFS_BIN } from '../node-agent/src/tools/launcher/scoutfs-cli.js'
import { forceUnmount, forceUnmountSync, mountedPaths } from '../node-agent/src/fuse/unmount.js'
import {
  Screen,
  fetchStatus,
  formatLogLine,
  renderTable,
  shortPath,
  type AgentView,
  type ClusterInfo,
} from './local-cluster-status.js'

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
    runDir: resolve(env.SCOUTFS_RUN_DIR || join(REPO_ROOT, 'run')),
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

const indent = (s: string): string =>
  s
    .trimEnd()
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n')

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

/** One agent of the main job: a launched agent process with its place in the table. */
class Agent {
  /** set before we signal it: its exit is then expected */
  stopRequested = false
  /** why it failed: exited without being asked to, or did not mount */
  failure: string | undefined
  view: AgentView

  constructor(
    readonly name: string,
    readonly role: 'server' | 'client',
    readonly p: AgentProcess,
  ) {
    this.view = {
      name,
      mountpoint: p.mnt,
      role,
      pid: undefined,
      state: 'starting',
      metricsAddr: this.metricsAddr,
      logTail: [],
    }
  }

  get mountpoint(): string {
    return this.p.mnt
  }

  get logFile(): string {
    return this.p.spec.logFile!
  }

  get metricsAddr(): string {
    return this.p.spec.metricsAddr!
  }

  get running(): boolean {
    return this.p.running
  }

  get started(): boolean {
    return this.p.proc !== undefined
  }

  tail(n = TAIL_LINES): string[] {
    return this.p.log().trimEnd().split('\n').filter(Boolean).slice(-n).map(formatLogLine)
  }

  /** What a stop (SIGTERM, bounded wait, SIGKILL, lazy unmount) came to, in words. */
  stopText(r: StopResult): { clean: boolean; text: string } {
    const mnt = this.mountpoint
    if (!r.wasRunning) return { clean: false, text: `was not running${r.unmounted ? '' : `; ${mnt} is still mounted`}` }
    if (!r.inTime)
      return {
        clean: false,
        text: `did not stop within ${STOP_TIMEOUT_MS / 1000} s: killed (SIGKILL)${r.unmounted ? ', mount removed' : `; ${mnt} is STILL MOUNTED`}`,
      }
    // SIGTERM before its handler is in place (still starting) ends it at once: nothing mounted
    const early = !this.p.mounted && r.signal === 'SIGTERM'
    const ok = (r.code === 0 || early) && !r.leftMounted
    return {
      clean: ok,
      text:
        (early ? 'was still starting; SIGTERM ended it' : `exited with ${this.p.exitText}`) +
        ` after ${(r.ms / 1000).toFixed(1)} s` +
        (r.leftMounted
          ? r.unmounted
            ? ' leaving its mount behind (removed with fusermount -uz)'
            : '; its mount is STILL MOUNTED'
          : ''),
    }
  }
}

class LocalCluster {
  private readonly screen = new Screen()
  private agents: Agent[] = []
  private cluster: Cluster | undefined
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
    // Each agent in its own process group: Ctrl-C in the terminal reaches only this program,
    // which then stops the agents in order.  Output that bypasses the logger joins its log.
    this.cluster = new Cluster(
      { meta, data },
      Array.from({ length: AGENTS }, (_, i) => ({
        mnt: join(s.runDir, `mnt${i}`),
        logFile: join(s.runDir, `agent${i}.log`),
        metricsAddr: `127.0.0.1:${s.metricsPort + i}`,
        detached: true,
      })),
      MOUNT_TIMEOUT_MS,
    )
    this.agents = this.cluster.agents.map((p, i) => new Agent(`agent${i}`, i === 0 ? 'server' : 'client', p))
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
    const up = this.agents.filter((a) => a.p.mounted && a.running)
    const down = this.agents.filter((a) => !(a.p.mounted && a.running))
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
    // Last resort (a crash of this program): the launcher kills whatever it started on exit.
  }

  /** SIGKILL every agent still running and lazily unmount every mountpoint (synchronous). */
  private killAll(): void {
    for (const a of this.agents) {
      a.stopRequested = true
      a.p.signal('SIGKILL')
    }
    for (const a of this.agents) if (a.started) forceUnmountSync(a.mountpoint)
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
    if (!cliBuilt()) throw new StartError(`the project is not built: run 'npm run build' in ${REPO_ROOT}`)
  }

  private refuseMounted(): void {
    const mounted = mountedPaths()
    const busy = this.agents.filter((a) => mounted.has(a.mountpoint))
    if (!busy.length) return
    const bin = shortPath(SCOUTFS_BIN)
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
    createSparse(path, size, true)
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
    let p = await runScoutfs(['print', meta, '-n', '0'])
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
      const m = await mkfs(
        { meta, data },
        {
          quorumSlots: QUORUM_SLOTS,
          members: Array.from({ length: QUORUM_SLOTS }, (_, i) => ({ host: '127.0.0.1', port: s.serverPort + i })),
        },
      )
      if (m.code !== 0)
        throw new StartError(`mkfs failed (exit ${m.code}):\n${indent(m.stderr + m.stdout)}${await removeCreated()}`)
      this.note(indent(m.stdout))
      p = await runScoutfs(['print', meta, '-n', '0'])
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
    const c = await runScoutfs(['check', '-q', meta, data])
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
    const p = a.p
    a.view.status = undefined
    if (a.stopRequested) {
      a.view.state = 'stopped'
      a.view.exit = p.exitText
      return
    }
    a.failure = `${p.mounted ? 'exited unexpectedly' : 'exited before mounting'} with ${p.exitText}`
    a.view.state = p.mounted ? 'exited' : 'failed'
    a.view.exit = p.exitText
    a.view.logTail = a.tail()
    const removed = p.mounted && mountedPaths().has(a.mountpoint) && forceUnmountSync(a.mountpoint)
    const lines = [
      `${a.name} (${a.role}, pid ${p.pid}, ${shortPath(a.mountpoint)}) ${p.mounted ? 'exited unexpectedly' : 'exited before mounting'} with ${p.exitText}; ` +
        `last lines of ${shortPath(a.logFile)}:`,
      ...a.view.logTail.map((l) => `  ${l}`),
    ]
    if (removed) lines.push(`  its dead mount ${shortPath(a.mountpoint)} was removed (fusermount -uz)`)
    if (a.role === 'server' && this.agents.some((b) => b.running) && p.mounted)
      lines.push('  the server agent is gone: the other agents keep running but cannot reach a server')
    else if (p.mounted) lines.push('  the other agents keep running')
    this.note(lines.join('\n'))
  }

  private agentOf(p: AgentProcess): Agent {
    return this.agents.find((a) => a.p === p)!
  }

  /** agent0 (the server) first, then the others in parallel; false when the server did not mount. */
  private async startAgents(): Promise<boolean> {
    const results = await this.cluster!.start({
      aborted: () => this.stopping,
      onSpawn: (p) => {
        const a = this.agentOf(p)
        a.view.pid = p.pid
        void p.exited.then(() => this.onExit(a))
        this.note(
          `${a.name} (${a.role}): mounting at ${shortPath(a.mountpoint)}, pid ${p.pid}, log ${shortPath(a.logFile)}`,
        )
      },
      onLine: (p, v) => {
        if (v.msg === 'waiting for recorded mounts to reconnect')
          this.note(
            `${this.agentOf(p).name}: the server waits up to ${typeof v.ms === 'number' ? v.ms / 1000 : '?'} s for the ` +
              `${typeof v.mounts === 'number' ? v.mounts : '?'} mount(s) recorded by the last run to reconnect ` +
              `(that run did not stop cleanly); they are gone, so it then reclaims them and goes on`,
          )
      },
      onResult: (p, r) => this.started(this.agentOf(p), r),
    })
    return results[0] === 'mounted' || results[0] === 'not started'
  }

  /** Report how an agent's start ended; one that did not mount in time is stopped. */
  private async started(a: Agent, r: WaitResult): Promise<void> {
    if (r === 'mounted') {
      const m = a.p.mounted!
      a.view.rid = m.rid
      const role = m.server === undefined ? '' : m.server ? ', runs the server' : `, client of ${m.serverAddr ?? '?'}`
      this.note(
        `${a.name} (${a.role}): mounted in ${(a.p.age / 1000).toFixed(1)} s, rid ${m.rid ?? '?'}${role}, metrics http://${m.metrics ?? a.metricsAddr}/metrics`,
      )
      if (m.server !== undefined && m.server !== (a.role === 'server'))
        this.note(`  warning: ${a.name} was started as the ${a.role} but reports server=${m.server}`)
      a.view.state = 'up'
      return
    }
    if (r === 'exited' || r === 'aborted') return // onExit reported it / we are stopping
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
    a.stopRequested = true
    a.view.state = 'stopping'
    await a.p.stop(STOP_TIMEOUT_MS)
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
          if (!a.p.mounted) return
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
    const started = this.agents.filter((a) => a.started)
    let clean = !started.some((a) => a.failure)
    await this.cluster?.stop(STOP_TIMEOUT_MS, {
      onGroup: (live) => {
        const group = live.map((p) => this.agentOf(p))
        for (const a of group) {
          a.stopRequested = true
          a.view.state = 'stopping'
        }
        this.note(`stopping ${group.map((a) => `${a.name} (${a.role}, pid ${a.p.pid})`).join(', ')}`)
      },
      onStopped: (results) => {
        for (const { agent, result } of results) {
          const a = this.agentOf(agent)
          const r = a.stopText(result)
          if (!r.clean) {
            clean = false
            a.view.logTail = a.tail()
            this.note([`  ${a.name}: ${r.text}; its log ends:`, ...a.view.logTail.map((l) => `    ${l}`)].join('\n'))
          } else this.note(`  ${a.name}: ${r.text}`)
        }
      },
    })
    const mounted = mountedPaths()
    const left = this.agents.filter((a) => mounted.has(a.mountpoint))
    for (const a of left) {
      clean = false
      this.note(
        `  ${a.mountpoint} was still mounted: ${(await forceUnmount(a.mountpoint)) ? 'removed (fusermount -uz)' : 'COULD NOT UNMOUNT it'}`,
      )
    }
    const alive = this.agents.filter((a) => a.running)
    for (const a of alive) {
      clean = false
      this.note(`  ${a.name} (pid ${a.p.pid}) is still running`)
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
    if (this.agents.some((a) => a.started)) await this.shutdown()
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
