/*
 * The cluster benchmark's results (bench/cluster.ts) and their report: the create and
 * visibility results, and the tables, ratios and machine lines printed at the end.
 */
import type { Options } from './cluster-options.js'
import type { AgentDelta, PhaseMachine } from './cluster-readings.js'

export type CreateKey = 'local1' | 'localN' | 'single' | 'client' | 'parallel'

export interface CreateResult {
  key: CreateKey
  /** which run (0-based) */
  rep: number
  label: string
  writers: number
  files: number
  /** wall time from the first writer's start to the last one's end */
  secs?: number
  /** files/s over secs, all writers together */
  rate?: number
  perWriter?: number[]
  /** CPU seconds of the writers, and of the agents (when on scoutfs) */
  writerCpu?: number
  error?: string
  machine?: PhaseMachine
  agents?: AgentDelta[]
}

export interface Dist {
  n: number
  median: number
  p90: number
  p99: number
  max: number
}

export interface VisSide {
  create?: Dist
  append?: Dist
  all?: Dist
  createCall?: Dist
  appendCall?: Dist
  /** rounds whose first stat already showed the change */
  firstStat: number
  maxStats: number
  unseen: number
}

export interface VisResult {
  a: string
  b: string
  rounds: number
  cross?: VisSide
  same?: VisSide
  plain?: Dist
  /** 4 KiB write + fsync of a file on the local disk that holds the device files */
  fsync?: Dist
  secs?: number
  /** CPU seconds of the python process */
  cpu?: number
  error?: string
  machine?: PhaseMachine
  /** agent counters over the whole phase, and over the cross-mount rounds alone */
  agents?: AgentDelta[]
  crossAgents?: AgentDelta[]
}

export const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US')
export function fmtRate(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-'
  return n >= 100 ? fmtInt(n) : n.toPrecision(3)
}
function fmtRatio(r: number | undefined): string {
  if (r === undefined || !Number.isFinite(r)) return '-'
  return r >= 10 ? `${r.toFixed(0)}x` : `${r.toFixed(2)}x`
}
export function fmtMs(x: number | undefined): string {
  if (x === undefined) return '-'
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)
}
const opt = (x: number | undefined, f: (n: number) => string = fmtInt): string => (x === undefined ? '-' : f(x))

function table(head: string[], rows: string[][]): string[] {
  const w = head.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)))
  const line = (cells: string[]): string =>
    cells
      .map((s, c) => (c === 0 ? s.padEnd(w[c]!) : s.padStart(w[c]!)))
      .join('  ')
      .trimEnd()
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)]
}

/** this benchmark's share of the machine's CPU over a phase, and everyone else's (fractions) */
function cpuShares(m: PhaseMachine, ncpu: number, oursSecs: number): { ours: number; rest: number } {
  const ours = oursSecs / (m.wallSecs * ncpu)
  return { ours, rest: Math.max(0, m.busy - ours) }
}

/** the machine over a phase; `oursSecs`: CPU seconds of this phase's agents and python workers */
function machineLine(m: PhaseMachine | undefined, ncpu: number, oursSecs?: number): string {
  if (!m) return ''
  const sh = oursSecs === undefined ? undefined : cpuShares(m, ncpu, oursSecs)
  const ours = sh ? ` (agents + workers ${(sh.ours * 100).toFixed(0)}%, the rest ${(sh.rest * 100).toFixed(0)}%)` : ''
  return `load ${m.loadBefore} -> ${m.loadAfter}, machine CPU ${(m.busy * 100).toFixed(0)}% busy of ${ncpu} CPUs${ours} over ${m.wallSecs.toFixed(1)} s`
}

/** CPU seconds of a run's writers and agents */
function runCpu(c: CreateResult): number | undefined {
  const a = c.agents?.length ? sumOf(c.agents, 'cpuSecs') : 0
  return a === undefined || c.writerCpu === undefined ? undefined : a + c.writerCpu
}

function median(xs: number[]): number | undefined {
  if (!xs.length) return undefined
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m] : (s[m - 1]! + s[m]!) / 2
}

/** every agent's counters summed over several runs (the same agents in the same order) */
function sumDeltas(runs: AgentDelta[][]): AgentDelta[] {
  const keys = ['lockRequests', 'invalidations', 'commits', 'commitSecs', 'serverCommits', 'merges'] as const
  const more = ['lockAcquisitions', 'lockWaitMs', 'cpuSecs'] as const
  return (runs[0] ?? []).map((first, i) => {
    const d: AgentDelta = { label: first.label, role: first.role }
    for (const k of [...keys, ...more]) {
      let sum: number | undefined = 0
      for (const r of runs) {
        const v = r[i]?.[k]
        sum = v === undefined || sum === undefined ? undefined : sum + v
      }
      d[k] = sum
    }
    d.cachedItems = runs[runs.length - 1]?.[i]?.cachedItems
    return d
  })
}

function agentTable(ds: AgentDelta[] | undefined, indent = '    '): string[] {
  if (!ds?.length) return []
  const rows = ds.map((d) => [
    `${d.label} (${d.role})`,
    opt(d.lockAcquisitions),
    opt(d.lockWaitMs, fmtMs),
    opt(d.lockRequests),
    opt(d.invalidations),
    opt(d.commits),
    opt(d.commitSecs !== undefined && d.commits ? (d.commitSecs * 1000) / d.commits : undefined, fmtMs),
    opt(d.serverCommits),
    opt(d.merges),
    opt(d.cpuSecs, (x) => x.toFixed(1)),
    opt(d.cachedItems),
  ])
  const head = [
    'agent',
    'lock uses',
    'lock wait ms',
    'lock requests',
    'invalidations',
    'commits',
    'ms/commit',
    'server commits',
    'merges',
    'CPU s',
    'cached items',
  ]
  return table(head, rows).map((l) => indent + l)
}

export interface Env {
  cpus: number
  cpuModel: string
  kernel: string
  loadStart: string
  loadEnd?: string
  date: string
}

export function report(
  o: Options,
  env: Env,
  creates: CreateResult[],
  vis: VisResult | undefined,
  fatal: string | undefined,
  stopProblems: string[],
): string[] {
  const out: string[] = []
  const missing = new Set<string>()
  const noteMissing = (ds: AgentDelta[] | undefined): void => {
    for (const d of ds ?? []) {
      if (d.lockRequests === undefined) missing.add('scoutfs_lock_requests_total')
      if (d.invalidations === undefined) missing.add('scoutfs_lock_invalidations_total')
      if (d.commits === undefined) missing.add('scoutfs_trans_commits_total')
      if (d.lockWaitMs === undefined) missing.add('scoutfs_lock_wait_seconds')
    }
  }
  out.push('')
  out.push(
    `scoutfs cluster benchmark, ${env.date}: ${o.mounts}-agent cluster, ${fmtInt(o.files)} files of ` +
      `${fmtInt(o.fileSize)} B per writer, ${o.rounds} visibility rounds`,
  )
  out.push(
    `(${env.cpus} CPUs (${env.cpuModel}), kernel ${env.kernel}, load average ${env.loadStart} at start, ${env.loadEnd} at end)`,
  )

  if (creates.length) {
    out.push('')
    out.push(
      `small-file creates: open(O_CREAT|O_EXCL) + one ${fmtInt(o.fileSize)} B write + close per file, python writers; ` +
        (o.repeat > 1 ? `${o.repeat} interleaved runs of every target, the median run shown` : 'one run'),
    )
    const keys = (['local1', 'localN', 'single', 'client', 'parallel'] as const).filter((k) =>
      creates.some((c) => c.key === k),
    )
    const runsOf = (k: CreateKey): CreateResult[] => creates.filter((c) => c.key === k)
    const okRuns = (k: CreateKey): CreateResult[] => runsOf(k).filter((c) => !c.error)
    /** the run with the median rate (the lower middle one) */
    const medianRun = (k: CreateKey): CreateResult | undefined => {
      const ok = okRuns(k).sort((a, b) => a.rate! - b.rate!)
      return ok[(ok.length - 1) >> 1]
    }
    const rate = (k: CreateKey): number | undefined => median(okRuns(k).map((c) => c.rate!))
    const rows = keys.map((k) => {
      const runs = runsOf(k)
      const ok = okRuns(k)
      const mr = medianRun(k)
      const secs = ok.reduce((x, c) => x + c.secs!, 0)
      const files = ok.reduce((x, c) => x + c.files, 0)
      const wcpu = ok.reduce((x, c) => x + c.writerCpu!, 0)
      const agents = ok.every((c) => c.agents?.length) ? sumDeltas(ok.map((c) => c.agents!)) : undefined
      const acpu = agents ? sumOf(agents, 'cpuSecs') : undefined
      return [
        runs[0]!.label,
        String(runs[0]!.writers),
        ok.length < runs.length ? `FAILED ${runs.length - ok.length}/${runs.length}` : fmtRate(rate(k)),
        o.repeat > 1 ? ok.map((c) => fmtRate(c.rate)).join(' / ') : '',
        mr && mr.writers > 1 ? mr.perWriter!.map(fmtRate).join(' / ') : '',
        mr ? mr.secs!.toFixed(2) : '',
        ok.length ? `${((wcpu / secs) * 100).toFixed(0)}%` : '',
        acpu !== undefined && ok.length ? `${((acpu / secs) * 100).toFixed(0)}%` : '',
        acpu !== undefined && files ? ((acpu * 1000) / files).toFixed(2) : '',
      ]
    })
    const head = ['target', 'writers', 'files/s (all)']
    if (o.repeat > 1) head.push('every run')
    head.push('per writer', 'secs', 'writer CPU', 'agent CPU', 'agent CPU ms/file')
    out.push(...table(head, o.repeat > 1 ? rows : rows.map((r) => r.filter((_, i) => i !== 3))))
    out.push(
      '(per writer and secs: of the median run; CPU: seconds used over the timed wall time of all runs, 100% = one ' +
        'CPU busy all along; the agents are read over the whole phase, writer start-up included)',
    )
    out.push('')
    out.push('ratios:')
    const ratioLine = (what: string, r: number | undefined, extra = ''): void => {
      out.push(`  ${what.padEnd(58)} ${fmtRatio(r).padStart(7)}${extra}`)
    }
    const of = (a: CreateKey, b: CreateKey): number | undefined => {
      const x = rate(a)
      const y = rate(b)
      return x !== undefined && y ? x / y : undefined
    }
    // the target figure: each run's N-mount rate over the 1-mount rate of the same run (measured
    // seconds apart, so a change of the machine's load hits both alike), the median of those
    const pairs: Array<{ rep: number; r: number; rest1?: number; restN?: number }> = []
    for (let rep = 0; rep < o.repeat; rep++) {
      const a = creates.find((c) => c.key === 'parallel' && c.rep === rep && !c.error)
      const b = creates.find((c) => c.key === 'single' && c.rep === rep && !c.error)
      if (!a || !b) continue
      const rest = (c: CreateResult): number | undefined => {
        const cpu = runCpu(c)
        return c.machine && cpu !== undefined ? cpuShares(c.machine, env.cpus, cpu).rest : undefined
      }
      pairs.push({ rep, r: a.rate! / b.rate!, rest1: rest(b), restN: rest(a) })
    }
    const scale = median(pairs.map((p) => p.r))
    ratioLine(
      `${o.mounts}-mount aggregate / 1 mount (1-agent cluster)`,
      scale,
      pairs.length > 1 ? `  (median of the runs: ${pairs.map((p) => fmtRatio(p.r)).join(', ')})` : '',
    )
    ratioLine(`${o.mounts}-mount aggregate / 1 client mount of the ${o.mounts}-agent cluster`, of('parallel', 'client'))
    ratioLine('1 client mount / 1 mount (1-agent cluster)', of('client', 'single'))
    ratioLine(`local disk: ${o.mounts} writers / 1 writer (what ${env.cpus} CPUs allow)`, of('localN', 'local1'))
    ratioLine('scoutfs 1 mount / local disk 1 writer', of('single', 'local1'))
    const pct = (x: number | undefined): string => (x === undefined ? '-' : `${(x * 100).toFixed(0)}%`)
    if (pairs.length) {
      out.push(`  other work on the machine (CPU share not ours) during each run of 1 mount / ${o.mounts} mounts:`)
      out.push(
        '    ' +
          pairs.map((p) => `run ${p.rep + 1}: ${fmtRatio(p.r)} with ${pct(p.rest1)} / ${pct(p.restN)}`).join('; '),
      )
      if (pairs.some((p) => p.rest1 !== undefined && p.restN !== undefined && Math.abs(p.rest1 - p.restN) > 0.2))
        out.push('    WARNING: other work changed a lot between the two phases of a run: that ratio is skewed')
    }
    out.push('')
    out.push('the machine and the agents during each target (agent counters: deltas summed over its runs):')
    for (const k of keys) {
      const ok = okRuns(k)
      out.push(`  ${runsOf(k)[0]!.label}:`)
      for (const c of runsOf(k))
        out.push(`    ${o.repeat > 1 ? `run ${c.rep + 1}: ` : ''}${machineLine(c.machine, env.cpus, runCpu(c))}`)
      if (ok.length && ok.every((c) => c.agents?.length)) {
        const d = sumDeltas(ok.map((c) => c.agents!))
        out.push(...agentTable(d, '      '))
        noteMissing(d)
      }
    }
    out.push('')
    out.push('target:')
    const met = scale === undefined ? 'NOT MEASURED' : scale >= 1.5 ? 'met' : 'NOT met'
    out.push(`  ${o.mounts}-mount aggregate creates >= 1.5x 1 mount: ${fmtRatio(scale)}  ${met}`)
  }

  if (vis) {
    out.push('')
    out.push(
      `cross-mount visibility: A = ${vis.a}, B = ${vis.b}; ${vis.rounds} rounds, alternately a create on A ` +
        `(open O_CREAT) and a ${fmtInt(o.fileSize)} B append (write on an O_APPEND fd); ` +
        'latency = from the syscall on A returning to the first stat on B that shows the change',
    )
    if (vis.cross) {
      const row = (label: string, d: Dist | undefined): string[] => [
        label,
        opt(d?.n),
        fmtMs(d?.median),
        fmtMs(d?.p90),
        fmtMs(d?.p99),
        fmtMs(d?.max),
      ]
      out.push(
        ...table(
          ['ms', 'n', 'median', 'p90', 'p99', 'max'],
          [
            row('create on A -> B stat sees it', vis.cross.create),
            row('append on A -> B stat sees the size', vis.cross.append),
            row('all rounds (A -> B)', vis.cross.all),
            row('  the create on A itself', vis.cross.createCall),
            row('  the append on A itself', vis.cross.appendCall),
            row('same mount: create on A -> A sees it', vis.same?.create),
            row('same mount: append on A -> A sees it', vis.same?.append),
            row('plain stat on B, unchanged file', vis.plain),
            row('local disk: 4 KiB write + fsync', vis.fsync),
          ],
        ).map((l) => '  ' + l),
      )
      out.push(
        `  B's first stat showed the change in ${vis.cross.firstStat} of ${vis.rounds} rounds ` +
          `(at most ${vis.cross.maxStats} stats in a round; the consistency contract says the first one always does)` +
          (vis.cross.unseen ? `; ${vis.cross.unseen} changes never seen` : ''),
      )
      if (vis.cross.firstStat < vis.rounds)
        out.push(`  WARNING: ${vis.rounds - vis.cross.firstStat} rounds needed more than one stat on B`)
      const agentCpu = vis.agents ? sumOf(vis.agents, 'cpuSecs') : undefined
      out.push(
        `  ${machineLine(vis.machine, env.cpus, agentCpu === undefined || vis.cpu === undefined ? undefined : agentCpu + vis.cpu)}`,
      )
      const ca = vis.crossAgents
      if (ca) {
        out.push(`  the agents over the ${vis.rounds} cross-mount rounds alone (counter deltas):`)
        out.push(...agentTable(ca))
        noteMissing(ca)
        const per = (k: 'invalidations' | 'commits' | 'serverCommits' | 'lockWaitMs'): string => {
          const v = sumOf(ca, k)
          return v === undefined ? '-' : (v / vis.rounds).toFixed(2)
        }
        out.push(
          `  per round (all agents): ${per('invalidations')} lock invalidations, ${per('commits')} mount commits, ` +
            `${per('serverCommits')} server commits, ${per('lockWaitMs')} ms waited for locks`,
        )
      }
    }
    if (vis.error) out.push(`  FAILED: ${vis.error}`)
    out.push('')
    out.push('target:')
    const med = vis.cross?.all?.median
    const met = med === undefined || vis.error ? 'NOT MEASURED' : med < 10 ? 'met' : 'NOT met'
    out.push(`  cross-mount visibility median < 10 ms: ${fmtMs(med)} ms  ${met}`)
  }
  if (missing.size) out.push('', `not exported by these agents ('-' above): ${[...missing].join(', ')}`)
  const errs = [...creates.filter((c) => c.error).map((c) => `${c.label}: ${c.error}`), ...stopProblems]
  if (fatal) errs.push(`the run stopped early: ${fatal}`)
  if (vis?.error) errs.push(`visibility: ${vis.error}`)
  if (errs.length) out.push('', 'failures:', ...errs.map((e) => '  ' + e))
  return out
}

/**
 * A counter summed over agents; undefined when an agent does not export it — except the
 * server's own counters, which only the server agent exports.
 */
function sumOf(
  ds: AgentDelta[],
  k: 'cpuSecs' | 'invalidations' | 'commits' | 'serverCommits' | 'lockWaitMs',
): number | undefined {
  const vs = ds.map((d) => d[k])
  if (k === 'serverCommits')
    return vs.some((v) => v !== undefined) ? vs.reduce<number>((s, v) => s + (v ?? 0), 0) : undefined
  if (vs.some((v) => v === undefined)) return undefined
  return vs.reduce<number>((s, v) => s + v!, 0)
}
