/*
 * What mutual TLS between agents costs (issue 17), in one run: bench/cluster.ts's creates on
 * 3 mounts (3 writers, 3 directories) and cross-mount visibility, on a cluster speaking mutual
 * TLS and on one speaking plaintext (-o insecure), alternated ROUNDS times (TLS, plain, TLS,
 * plain, ...) so load drifts hit both alike.  Prints each run, the medians and the ratios
 * TLS / plaintext.
 *
 *   npm run bench:tls                      (or: node dist/bench/tls.js)
 *   SCOUTFS_BENCH_TLS_ROUNDS=3 SCOUTFS_BENCH_CLUSTER_FILES=1000 SCOUTFS_BENCH_VIS_ROUNDS=100
 *
 * Each run is a child `node dist/bench/cluster.js --phases ... --json` (which stops its agents
 * itself, also on failure); the exit status is non-zero when a run failed.
 */
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

const ROUNDS = Number(process.env.SCOUTFS_BENCH_TLS_ROUNDS ?? 3)
const FILES = process.env.SCOUTFS_BENCH_CLUSTER_FILES ?? '1000'
const VIS = process.env.SCOUTFS_BENCH_VIS_ROUNDS ?? '100'

interface Run {
  parallel: number
  single: number
  visMedian: number
  visP99: number
}

function run(tls: boolean): Run {
  const r = spawnSync(
    process.execPath,
    [join(__dirname, 'cluster.js'), '--files', FILES, '--rounds', VIS, '--repeat', '1', '--json'],
    { env: { ...process.env, SCOUTFS_BENCH_TLS: tls ? 'on' : 'off' }, encoding: 'utf8', maxBuffer: 64 << 20 },
  )
  const last = r.stdout.trim().split('\n').pop() ?? ''
  if (r.status !== 0 || !last.startsWith('{'))
    throw new Error(`bench/cluster.js failed (${r.status}):\n${r.stderr.slice(-3000)}`)
  const d = JSON.parse(last) as {
    creates: Array<{ key: string; rate: number }>
    vis: { cross: { all: { median: number; p99: number } } }
  }
  const rate = (k: string): number => d.creates.find((c) => c.key === k)?.rate ?? NaN
  return {
    parallel: rate('parallel'),
    single: rate('single'),
    visMedian: d.vis.cross.all.median,
    visP99: d.vis.cross.all.p99,
  }
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

function main(): number {
  console.log(
    `mutual TLS vs plaintext between agents: ${ROUNDS} rounds, ${FILES} files per writer, ${VIS} visibility rounds`,
  )
  const runs: Record<'tls' | 'plain', Run[]> = { tls: [], plain: [] }
  for (let i = 1; i <= ROUNDS; i++)
    for (const mode of ['tls', 'plain'] as const) {
      const r = run(mode === 'tls')
      runs[mode].push(r)
      console.log(
        `  round ${i} ${mode.padEnd(5)}: 3 mounts ${r.parallel.toFixed(0)} creates/s, 1 mount ${r.single.toFixed(0)}/s, ` +
          `visibility median ${r.visMedian.toFixed(2)} ms (p99 ${r.visP99.toFixed(1)})`,
      )
    }
  const m = (mode: 'tls' | 'plain', k: keyof Run): number => median(runs[mode].map((r) => r[k]))
  console.log('')
  console.log('                               mutual TLS   plaintext   TLS / plaintext')
  const row = (what: string, k: keyof Run, unit: string): void =>
    console.log(
      `${what.padEnd(30)} ${m('tls', k).toFixed(1).padStart(10)} ${m('plain', k).toFixed(1).padStart(11)}   ${(m('tls', k) / m('plain', k)).toFixed(2)}x  ${unit}`,
    )
  row('creates, 3 mounts', 'parallel', 'files/s (higher is better)')
  row('creates, 1 mount', 'single', 'files/s')
  row('visibility median', 'visMedian', 'ms (lower is better)')
  row('visibility p99', 'visP99', 'ms')
  return 0
}

try {
  process.exitCode = main()
} catch (e) {
  console.error(e)
  process.exitCode = 1
}
