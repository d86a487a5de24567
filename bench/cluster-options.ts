/*
 * The cluster benchmark's options (bench/cluster.ts): flags and SCOUTFS_BENCH_* variables,
 * checked, with the usage text.
 */
import { tmpdir } from 'node:os'

export const ALL_PHASES = ['local', 'single', 'client', 'parallel', 'vis'] as const
export type Phase = (typeof ALL_PHASES)[number]

export interface Options {
  /** files per writer */
  files: number
  /** runs of every create target, interleaved */
  repeat: number
  fileSize: number
  /** agents in the cluster (= parallel writers) */
  mounts: number
  /** visibility rounds (half creates, half appends) */
  rounds: number
  /** a round whose change B has not shown after this long fails the run */
  visTimeoutMs: number
  /** visibility: A and B, indexes into the cluster's agents */
  visPair: [number, number]
  timeoutS: number
  phases: Set<Phase>
  mountOptions?: string
  dir: string
  json: boolean
}

const USAGE = `usage: node dist/bench/cluster.js [--files N] [--repeat R] [--rounds K] [--mounts M] [--phases LIST] [--json]
  env (a flag wins over its variable):
    SCOUTFS_BENCH_CLUSTER_FILES (3000)   --files    files per writer (create + write + close)
    SCOUTFS_BENCH_FILE_SIZE (4096)                  bytes written per file
    SCOUTFS_BENCH_CLUSTER_REPEAT (3)     --repeat   runs of every create target, interleaved (the ratio: median of the runs')
    SCOUTFS_BENCH_CLUSTER_MOUNTS (3)     --mounts   agents in the cluster = parallel writers
    SCOUTFS_BENCH_VIS_ROUNDS (200)       --rounds   visibility rounds (alternately create, append)
    SCOUTFS_BENCH_VIS_MOUNTS (1,2)                  visibility mounts A,B (agent indexes; 0 is the server)
    SCOUTFS_BENCH_VIS_TIMEOUT_MS (5000)             a change B has not shown by then fails the run
    SCOUTFS_BENCH_PHASES (all)           --phases   comma list of ${ALL_PHASES.join(',')}
    SCOUTFS_BENCH_TIMEOUT_S (600)                   limit per writer process
    SCOUTFS_BENCH_MOUNT_OPTIONS                     extra scoutfs mount -o options for every agent
    SCOUTFS_BENCH_DIR (os tmpdir)                   where the temp dir and the device files go
    SCOUTFS_BENCH_JSON=1                 --json     also print every figure as one JSON line`

function usageError(msg: string): never {
  console.error(`${msg}\n${USAGE}`)
  process.exit(2)
}

function parseIntValue(name: string, raw: string, min: number, max: number): number {
  const v = Number(raw.replace(/_/g, ''))
  if (!Number.isInteger(v) || v < min || v > max)
    usageError(`${name} must be an integer from ${min} to ${max}, not ${raw}`)
  return v
}

export function parseOptions(argv: string[]): Options {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE)
    process.exit(0)
  }
  const flags = new Map<string, string>()
  let json = process.env.SCOUTFS_BENCH_JSON === '1'
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === '--json') {
      json = true
      continue
    }
    const m = /^--(files|repeat|rounds|mounts|phases)(?:=(.*))?$/.exec(a)
    if (!m) usageError(`unknown argument '${a}'`)
    const v = m[2] ?? argv[++i]
    if (v === undefined) usageError(`--${m[1]} needs a value`)
    flags.set(m[1]!, v)
  }
  const num = (flag: string | undefined, env: string, def: number, min: number, max: number): number => {
    const f = flag ? flags.get(flag) : undefined
    if (f !== undefined) return parseIntValue(`--${flag}`, f, min, max)
    const raw = process.env[env]
    return raw === undefined || raw === '' ? def : parseIntValue(env, raw, min, max)
  }
  const mounts = num('mounts', 'SCOUTFS_BENCH_CLUSTER_MOUNTS', 3, 2, 16)
  const phases = new Set<Phase>()
  const rawPhases = flags.get('phases') ?? process.env.SCOUTFS_BENCH_PHASES
  if (rawPhases) {
    for (const p of rawPhases.split(',').filter(Boolean)) {
      const k = ALL_PHASES.find((x) => x === p)
      if (!k) usageError(`unknown phase '${p}' (${ALL_PHASES.join(', ')})`)
      phases.add(k)
    }
  } else for (const p of ALL_PHASES) phases.add(p)
  let visPair: [number, number] = mounts >= 3 ? [1, 2] : [0, 1]
  const rawPair = process.env.SCOUTFS_BENCH_VIS_MOUNTS
  if (rawPair) {
    const m = /^(\d+),(\d+)$/.exec(rawPair)
    if (!m || Number(m[1]) >= mounts || Number(m[2]) >= mounts || m[1] === m[2])
      usageError(`SCOUTFS_BENCH_VIS_MOUNTS must be two different agent indexes below ${mounts}, like 1,2`)
    visPair = [Number(m[1]), Number(m[2])]
  }
  return {
    files: num('files', 'SCOUTFS_BENCH_CLUSTER_FILES', 3000, 1, 1_000_000),
    repeat: num('repeat', 'SCOUTFS_BENCH_CLUSTER_REPEAT', 3, 1, 100),
    fileSize: num(undefined, 'SCOUTFS_BENCH_FILE_SIZE', 4096, 0, 1 << 24),
    mounts,
    rounds: num('rounds', 'SCOUTFS_BENCH_VIS_ROUNDS', 200, 2, 100_000),
    visTimeoutMs: num(undefined, 'SCOUTFS_BENCH_VIS_TIMEOUT_MS', 5000, 10, 600_000),
    visPair,
    timeoutS: num(undefined, 'SCOUTFS_BENCH_TIMEOUT_S', 600, 1, 86400),
    phases,
    mountOptions: process.env.SCOUTFS_BENCH_MOUNT_OPTIONS || undefined,
    dir: process.env.SCOUTFS_BENCH_DIR || tmpdir(),
    json,
  }
}
