/*
 * The main job (`npm start`, via scripts/start.sh): a local 3-node scoutfs cluster on
 * file-backed devices under one run directory.  This program owns the cluster's lifecycle:
 * devices (created sparse, formatted with addresses for quorum slots 0-2 when they hold no
 * filesystem, checked), the three `scoutfs mount --foreground` agents as child processes
 * (agentN is quorum member N: the three start together and elect the leader that runs the
 * server), the status table (leader and term, each agent's quorum role), what happens when an
 * agent dies (its dead mount is removed; the others keep running and elect a new leader if it
 * led), and the clean stop on Ctrl-C/SIGTERM (the members that do not serve first, then the
 * leader; SIGKILL and a lazy unmount for whatever does not stop in time).  Starting, stopping
 * and unmounting the agents is the launcher's (node-agent/src/tools/launcher/); what the table
 * shows is local-cluster-status.ts's.
 *
 * Environment: SCOUTFS_RUN_DIR (default <repo>/run), SCOUTFS_META_SIZE (1G),
 * SCOUTFS_DATA_SIZE (4G), SCOUTFS_SERVER_PORT (7150: quorum slot N at 127.0.0.1:7150+N, used
 * when formatting), SCOUTFS_METRICS_PORT (9560: agentN serves metrics on 127.0.0.1:9560+N).
 * Exit codes: 0 all agents ran and stopped cleanly, 1 something failed, 2 bad settings.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, promises as fsp, readFileSync, readdirSync, statSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { AgentProcess, StopResult, WaitResult } from '../node-agent/src/tools/launcher/agent-process.js'
import { localCerts } from '../node-agent/src/net/certs.js'
import { Cluster, joinOptions } from '../node-agent/src/tools/launcher/cluster.js'
import { createSparse, mkfs } from '../node-agent/src/tools/launcher/devices.js'
import { addrFree } from '../node-agent/src/tools/launcher/ports.js'
import { cliBuilt, REPO_ROOT, runScoutfs, SCOUTFS_BIN } from '../node-agent/src/tools/launcher/scoutfs-cli.js'
import { forceUnmount, forceUnmountSync, mountedPaths } from '../node-agent/src/fuse/unmount.js'
import {
  Screen,
  fetchQuorum,
  fetchStatus,
  formatLogLine,
  quorumSummary,
  renderTable,
  shortPath,
  type AgentView,
  type ClusterInfo,
  type QuorumSummary,
} from './local-cluster-status.js'

/** every agent is a quorum member: agentN mounts with quorum_slot_nr=N */
const AGENTS = 3
const QUORUM_SLOTS = AGENTS
/** a majority of the slots elects (and is needed to keep a leader) */
const MAJORITY = Math.floor(QUORUM_SLOTS / 2) + 1
/** silence from the leader after which the members elect another (the shortest allowed) */
const HEARTBEAT_TIMEOUT_MS = 2_000
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
    serverPort: port('SCOUTFS_SERVER_PORT', 7150, QUORUM_SLOTS - 1),
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
    /** its quorum slot (quorum_slot_nr) */
    readonly slot: number,
    readonly p: AgentProcess,
  ) {
    this.view = {
      name,
      mountpoint: p.mnt,
      slot,
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
  /** leader and term as the last table showed them */
  private quorum: QuorumSummary | undefined
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
    // Every agent is a quorum member (the launcher adds quorum_slot_nr=i to agent i's options).
    this.cluster = new Cluster(
      { meta, data },
      Array.from({ length: AGENTS }, (_, i) => ({
        mnt: join(s.runDir, `mnt${i}`),
        logFile: join(s.runDir, `agent${i}.log`),
        metricsAddr: `127.0.0.1:${s.metricsPort + i}`,
        options: `quorum_heartbeat_timeout_ms=${HEARTBEAT_TIMEOUT_MS}`,
        detached: true,
      })),
      MOUNT_TIMEOUT_MS,
      AGENTS,
    )
    this.agents = this.cluster.agents.map((p, i) => new Agent(`agent${i}`, i, p))
    await this.refuseMounted()
    this.note(
      `scoutfs local cluster: ${AGENTS} agents, all quorum members (heartbeat timeout ${HEARTBEAT_TIMEOUT_MS / 1000} s), ` +
        `on devices in ${s.runDir}`,
    )
    for (const w of s.warnings) this.note(`  warning: ${w}`)
    await this.metricsPortsFree()
    const created = [
      this.device(meta, s.metaSize, 'SCOUTFS_META_SIZE'),
      this.device(data, s.dataSize, 'SCOUTFS_DATA_SIZE'),
    ].filter((p): p is string => p !== undefined)
    const fs = await this.formatted(meta, data, created)
    this.info = { runDir: s.runDir, fsid: fs.fsid, slotAddrs: fs.slotAddrs }
    await this.check(meta, data)
    // mutual TLS between the agents: a CA and a certificate per agent, made or kept at every start
    const tlsDir = join(s.runDir, 'tls')
    const certs = await localCerts({
      dir: tlsDir,
      fsid: BigInt(`0x${fs.fsid}`),
      agents: this.agents.map((a) => a.name),
    })
    this.cluster.agents.forEach((p, i) => {
      const a = certs.agents[i]!
      p.spec.options = joinOptions(p.spec.options, `tls_ca=${certs.ca.cert},tls_cert=${a.cert},tls_key=${a.key}`)
    })
    const made = [certs.ca, ...certs.agents].filter((x) => x.action !== 'reused').length
    this.note(
      `  mutual TLS between agents: CA and ${certs.agents.length} agent certificates in ${shortPath(tlsDir)}` +
        (made ? ` (${made} made or replaced)` : ' (kept)'),
    )
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
    else {
      const leader = await this.cluster.leader()
      const l = leader && this.agentOf(leader)
      this.note(
        `cluster is up: ${AGENTS} agents mounted${l ? `, ${l.name} (slot ${l.slot}, pid ${l.p.pid}) leads and serves` : ''}; ` +
          `${every}. Try: echo hi > ${shortPath(this.agents[0]!.mountpoint)}/f ` +
          `&& cat ${shortPath(this.agents[1]!.mountpoint)}/f` +
          (l ? `; kill -9 ${l.p.pid} to watch another member take over` : '') +
          `. Ctrl-C stops the cluster.`,
      )
    }
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

  private async refuseMounted(): Promise<void> {
    const mounted = mountedPaths()
    const busy = this.agents.filter((a) => mounted.has(a.mountpoint))
    if (!busy.length) return
    // the one that serves (if any answers that it does) is unmounted last
    const serving = await Promise.all(
      busy.map((a) =>
        fetchQuorum(a.mountpoint, STATUS_TIMEOUT_MS).then(
          (q) => q.serving === true,
          () => false,
        ),
      ),
    )
    const bin = shortPath(SCOUTFS_BIN)
    const lines = busy.map((a) => {
      const ag = agentOf(a.mountpoint)
      if (!ag)
        return `  ${a.mountpoint}: no agent runs it (left behind); remove it with: fusermount -uz ${a.mountpoint}`
      const by = ag.parent.includes('local-cluster') ? `, started by the local cluster pid ${ag.ppid}` : ''
      return `  ${a.mountpoint}: served by agent pid ${ag.pid}${by}`
    })
    const owner = busy.map((a) => agentOf(a.mountpoint)).find((ag) => ag?.parent.includes('local-cluster'))
    const order = [...busy.filter((_, i) => !serving[i]), ...busy.filter((_, i) => serving[i])]
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

  /**
   * fsid and quorum slot addresses of the filesystem on the devices, formatting them (slot N at
   * 127.0.0.1:SCOUTFS_SERVER_PORT+N) when they hold none.  Every member's slot must have an
   * address, and every one of those addresses must be free.
   */
  private async formatted(
    meta: string,
    data: string,
    created: string[],
  ): Promise<{ fsid: string; slotAddrs: string[] }> {
    const s = this.s
    let p = await runScoutfs(['print', meta, '-n', '0'])
    if (p.code !== 0) {
      const why = p.stderr.trim().replace(/^scoutfs: /, '') || `print exit ${p.code}`
      this.note(created.includes(meta) ? '  formatting the new devices' : `  ${shortPath(meta)}: ${why}; formatting`)
      const removeCreated = async (): Promise<string> => {
        for (const f of created) await fsp.rm(f, { force: true })
        return created.length ? `\n(removed ${created.map(shortPath).join(' and ')}, which this run had created)` : ''
      }
      const members = Array.from({ length: QUORUM_SLOTS }, (_, i) => ({ host: '127.0.0.1', port: s.serverPort + i }))
      const busy: string[] = []
      for (const [i, m] of members.entries())
        if (!(await addrFree(`${m.host}:${m.port}`))) busy.push(`${m.host}:${m.port} (slot ${i})`)
      if (busy.length)
        throw new StartError(
          `${busy.join(', ')} ${busy.length > 1 ? 'are' : 'is'} in use: the quorum slot addresses to format with are ` +
            `127.0.0.1:${s.serverPort}..${s.serverPort + QUORUM_SLOTS - 1}; set SCOUTFS_SERVER_PORT${await removeCreated()}`,
        )
      const m = await mkfs({ meta, data }, { quorumSlots: QUORUM_SLOTS, members })
      if (m.code !== 0)
        throw new StartError(`mkfs failed (exit ${m.code}):\n${indent(m.stderr + m.stdout)}${await removeCreated()}`)
      this.note(indent(m.stdout))
      p = await runScoutfs(['print', meta, '-n', '0'])
      if (p.code !== 0) throw new StartError(`print after mkfs failed:\n${indent(p.stderr)}`)
    }
    const fsid = /^\s*fsid\s+([0-9a-f]+)/m.exec(p.stdout)?.[1] ?? '?'
    const slotAddrs: string[] = []
    for (const [, nr, addr] of p.stdout.matchAll(/^\s*slot (\d+)\s+(\S.*?)\s*$/gm))
      if (!addr!.startsWith('(')) slotAddrs[Number(nr)] = addr!
    const missing = Array.from({ length: QUORUM_SLOTS }, (_, i) => i).filter((i) => !slotAddrs[i])
    if (missing.length)
      throw new StartError(
        `the filesystem on ${meta} (fsid ${fsid}) has no address in quorum slot${missing.length > 1 ? 's' : ''} ` +
          `${missing.join(', ')}, so its ${AGENTS} agents cannot all be quorum members (it was probably made by ` +
          `an earlier main job, which gave only slot 0 an address, or by the single-node one).\n` +
          `To start over (this DESTROYS its contents): rm ${meta} ${data}\n` +
          `or keep it and use another run directory: SCOUTFS_RUN_DIR=/some/dir npm start`,
      )
    const members = slotAddrs.slice(0, QUORUM_SLOTS)
    if (s.serverPortSet && !members[0]!.endsWith(`:${s.serverPort}`))
      this.note(
        `  note: SCOUTFS_SERVER_PORT=${s.serverPort} applies only when formatting; this filesystem's quorum slots are at ` +
          members.join(', '),
      )
    this.note(`  filesystem ${fsid}, quorum slots ${members.map((a, i) => `${i} at ${a}`).join(', ')}`)
    const busy: string[] = []
    for (const [i, addr] of members.entries()) if (!(await addrFree(addr))) busy.push(`${addr} (slot ${i})`)
    if (busy.length)
      throw new StartError(
        `${busy.join(', ')}: quorum slot address${busy.length > 1 ? 'es' : ''} (fixed at mkfs) in use: another ` +
          `cluster on ${busy.length > 1 ? 'them' : 'it'}, or another program? (stop it, or reformat: rm ${meta} ${data})`,
      )
    return { fsid, slotAddrs }
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
    // whether it led, as the last poll saw it (its own reply, or the others')
    const led = a.view.quorum?.role === 'leader' || this.quorum?.leaderSlot === a.slot
    a.view.status = undefined
    a.view.quorum = undefined
    a.view.quorumError = undefined
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
      `${new Date().toTimeString().slice(0, 8)} ${a.name} (slot ${a.slot}${led ? ', the leader' : ''}, pid ${p.pid}, ` +
        `${shortPath(a.mountpoint)}) ${p.mounted ? 'exited unexpectedly' : 'exited before mounting'} with ${p.exitText}; ` +
        `last lines of ${shortPath(a.logFile)}:`,
      ...a.view.logTail.map((l) => `  ${l}`),
    ]
    if (removed) lines.push(`  its dead mount ${shortPath(a.mountpoint)} was removed (fusermount -uz)`)
    const live = this.agents.filter((b) => b.running)
    if (p.mounted && live.length) {
      if (live.length < MAJORITY)
        lines.push(
          `  the other agents keep running, but with ${live.length} of ${QUORUM_SLOTS} members left there is no ` +
            `majority (${MAJORITY}): no leader can be elected, and their operations wait for a server`,
        )
      else if (led)
        lines.push(
          `  the other agents keep running: the members elect a new leader once they have missed its heartbeats ` +
            `for ${HEARTBEAT_TIMEOUT_MS / 1000} s; operations wait until it serves (the table shows it)`,
        )
      else lines.push('  the other agents keep running')
    }
    this.note(lines.join('\n'))
  }

  private agentOf(p: AgentProcess): Agent {
    return this.agents.find((a) => a.p === p)!
  }

  /** The members together (they elect the leader while they mount); false when none mounted. */
  private async startAgents(): Promise<boolean> {
    const results = await this.cluster!.start({
      aborted: () => this.stopping,
      onSpawn: (p) => {
        const a = this.agentOf(p)
        a.view.pid = p.pid
        void p.exited.then(() => this.onExit(a))
        this.note(
          `${a.name} (slot ${a.slot}): mounting at ${shortPath(a.mountpoint)}, pid ${p.pid}, log ${shortPath(a.logFile)}`,
        )
      },
      onLine: (p, v) => {
        if (v.msg === 'waiting for recorded mounts to reconnect')
          this.note(
            `${this.agentOf(p).name}: elected; the server waits up to ${typeof v.ms === 'number' ? v.ms / 1000 : '?'} s for the ` +
              `${typeof v.mounts === 'number' ? v.mounts : '?'} mount(s) recorded by the last run to reconnect ` +
              `(that run did not stop cleanly); they are gone, so it then reclaims them and goes on`,
          )
      },
      onResult: (p, r) => this.started(this.agentOf(p), r),
    })
    return results.some((r) => r === 'mounted') || results.every((r) => r === 'not started')
  }

  /** Report how an agent's start ended; one that did not mount in time is stopped. */
  private async started(a: Agent, r: WaitResult): Promise<void> {
    if (r === 'mounted') {
      const m = a.p.mounted!
      a.view.rid = m.rid
      const role =
        m.server === undefined ? '' : m.server ? ', elected: runs the server' : `, server at ${m.serverAddr ?? '?'}`
      this.note(
        `${a.name} (slot ${a.slot}): mounted in ${(a.p.age / 1000).toFixed(1)} s, rid ${m.rid ?? '?'}${role}, metrics http://${m.metrics ?? a.metricsAddr}/metrics`,
      )
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
        `${a.name} (slot ${a.slot}) did not mount within ${MOUNT_TIMEOUT_MS / 1000} s; stopping it. Last lines of ${shortPath(a.logFile)}:`,
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
          const why = (e: unknown): string => (e instanceof Error ? e.message : String(e))
          const [st, q] = await Promise.allSettled([
            fetchStatus(a.mountpoint, STATUS_TIMEOUT_MS),
            fetchQuorum(a.mountpoint, STATUS_TIMEOUT_MS),
          ])
          if (!a.running) return // exited meanwhile: onExit has set its state
          v.quorum = q.status === 'fulfilled' ? q.value : undefined
          v.quorumError = q.status === 'rejected' ? why(q.reason) : undefined
          if (st.status === 'fulfilled') {
            v.status = st.value
            v.state = 'up'
            v.error = undefined
          } else {
            v.status = undefined
            v.state = 'down'
            v.error = why(st.reason)
            v.logTail = a.tail(3)
          }
        }),
      )
      const info = this.info
      const at = new Date() // the numbers are as of this poll; states follow exits at once
      this.leaderChange(quorumSummary(this.agents.map((a) => a.view)), at)
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

  /** A note when the leader or the term changed since the last poll (a failover, an election). */
  private leaderChange(q: QuorumSummary | undefined, at: Date): void {
    const was = this.quorum
    if (q) this.quorum = q
    if (!q || !was || (q.term === was.term && q.leaderSlot === was.leaderSlot)) return
    const name = (x: QuorumSummary): string =>
      x.leaderSlot < 0 ? 'no leader' : `slot ${x.leaderSlot}${x.leader ? ` (${x.leader.name})` : ''}`
    const serving = q.leader?.quorum?.serving ? ', serving' : q.leaderSlot >= 0 ? ', not serving yet' : ''
    this.note(
      `${at.toTimeString().slice(0, 8)} quorum: term ${q.term}, leader ${name(q)}${serving} (was term ${was.term}, ${name(was)})`,
    )
  }

  /** The members that do not serve first, then the leader; every mount gone afterwards.  The exit code. */
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
        const what = (a: Agent): string =>
          `${a.name} (slot ${a.slot}${a.view.quorum?.serving ? ', the leader' : ''}, pid ${a.p.pid})`
        this.note(`stopping ${group.map(what).join(', ')}`)
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
