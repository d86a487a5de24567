/*
 * What the cluster benchmark (bench/cluster.ts) reads around each phase: the machine's CPU and
 * load, each agent's CPU time (/proc) and lock and commit counters (its /metrics), and the
 * per-phase differences of those counters.
 */
import { readFileSync } from 'node:fs'
import { loadavg } from 'node:os'
import type { AgentProcess } from '../node-agent/src/tools/launcher/agent-process.js'

let clkTck = 100

/** the kernel's clock ticks per second (getconf CLK_TCK), for procCpu */
export function setClockTicks(n: number): void {
  clkTck = n
}

/** CPU seconds (user + system) a process has used, from /proc/PID/stat */
export function procCpu(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    return (Number(f[11]) + Number(f[12])) / clkTck
  } catch {
    return undefined
  }
}

/** busy and total jiffies of the whole machine, from /proc/stat */
export function machineCpu(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
  const total = f.slice(0, 8).reduce((s, x) => s + x, 0)
  return { busy: total - f[3]! - f[4]!, total }
}

const METRICS = [
  'scoutfs_lock_requests_total',
  'scoutfs_lock_invalidations_total',
  'scoutfs_trans_commits_total',
  'scoutfs_trans_commit_seconds_total',
  'scoutfs_server_commits_total',
  'scoutfs_server_merges_total',
  'scoutfs_item_cache_items',
  'scoutfs_lock_wait_seconds_sum',
  'scoutfs_lock_wait_seconds_count',
] as const
type MetricName = (typeof METRICS)[number]
type MetricValues = Partial<Record<MetricName, number>>

/** the METRICS an agent exports (summed over label sets); missing ones are left out */
async function scrape(addr: string | undefined): Promise<MetricValues | undefined> {
  if (!addr) return undefined
  try {
    const res = await fetch(`http://${addr}/metrics`, { signal: AbortSignal.timeout(5000) })
    if (!res.ok) return undefined
    const v: MetricValues = {}
    for (const line of (await res.text()).split('\n')) {
      if (line.startsWith('#')) continue
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{[^}]*\})?\s+(\S+)/.exec(line)
      if (!m) continue
      const name = METRICS.find((n) => n === m[1])
      if (name) v[name] = (v[name] ?? 0) + Number(m[2])
    }
    return v
  } catch {
    return undefined
  }
}

export interface AgentReading {
  label: string
  role: string
  metrics?: MetricValues
  cpu?: number
}

export interface AgentDelta {
  label: string
  role: string
  /** undefined: not exported (or the scrape failed) */
  lockRequests?: number
  invalidations?: number
  commits?: number
  /** time this mount spent committing */
  commitSecs?: number
  /** super block commits and log-tree merges of the server role */
  serverCommits?: number
  merges?: number
  /** lock acquisitions by the filesystem (served locally or not), and the time they waited */
  lockAcquisitions?: number
  lockWaitMs?: number
  cpuSecs?: number
  /** items in the agent's item cache at the end (a gauge, not a delta) */
  cachedItems?: number
}

export interface PhaseMachine {
  loadBefore: string
  loadAfter: string
  /** fraction of all CPUs busy (everyone's work) over the phase */
  busy: number
  wallSecs: number
}

export async function readAgents(c: { agents: AgentProcess[] } | undefined, roles: string[]): Promise<AgentReading[]> {
  if (!c) return []
  return Promise.all(
    c.agents.map(async (a, i) => ({
      label: `m${i}`,
      role: roles[i] ?? '?',
      metrics: await scrape(a.mounted?.metrics),
      cpu: procCpu(a.pid),
    })),
  )
}

export function deltas(before: AgentReading[], after: AgentReading[]): AgentDelta[] {
  return after.map((a, i) => {
    const b = before[i]
    const d = (k: MetricName): number | undefined => {
      const x = a.metrics?.[k]
      const y = b?.metrics?.[k]
      return x === undefined || y === undefined ? undefined : x - y
    }
    const waitS = d('scoutfs_lock_wait_seconds_sum')
    const commits = d('scoutfs_trans_commits_total')
    const commitS = d('scoutfs_trans_commit_seconds_total')
    return {
      label: a.label,
      role: a.role,
      lockRequests: d('scoutfs_lock_requests_total'),
      invalidations: d('scoutfs_lock_invalidations_total'),
      commits,
      commitSecs: commitS,
      serverCommits: d('scoutfs_server_commits_total'),
      merges: d('scoutfs_server_merges_total'),
      cachedItems: a.metrics?.scoutfs_item_cache_items,
      lockAcquisitions: d('scoutfs_lock_wait_seconds_count'),
      lockWaitMs: waitS === undefined ? undefined : waitS * 1000,
      cpuSecs: a.cpu !== undefined && b?.cpu !== undefined ? a.cpu - b.cpu : undefined,
    }
  })
}

export const loadStr = (): string =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')
