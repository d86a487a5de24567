/*
 * `npm run stress -- --minutes N [--seed S] [--mounts M] [--workers W] [--op-deadline SECONDS] [--weights kind=w,...] [--keep] [--strict]`: the seeded
 * multi-mount stress of test/stress/engine.ts run for as long as asked, with a progress line
 * every 10 s and the report at the end; exit 1 when it found anything wrong.  Known limits of
 * the fuse-native binding are counted and printed; --strict fails on EIO (and ESTALE) from the kernel when
 * a name changed type on another mount (docs/cluster.md).  Any agent error line fails.
 */
import { formatReport, parseWeights, runStress, type Kind } from '../test/stress/engine.js'
import { FsError } from '../node-agent/src/util/errors.js'
import { killAllAgentsSync } from '../node-agent/src/tools/launcher/agent-process.js'

function parse(argv: string[]): {
  minutes: number
  seed: number
  mounts: number
  workers: number
  opDeadline: number
  keep: boolean
  tolerateKernelEio: boolean
  weights: Partial<Record<Kind, number>> | undefined
} {
  const o = {
    minutes: 5,
    seed: Math.floor(Math.random() * 0x100000000),
    mounts: 3,
    workers: 2,
    opDeadline: 120,
    keep: false,
    tolerateKernelEio: true,
    weights: undefined as Partial<Record<Kind, number>> | undefined,
  }
  const num = (name: string, v: string | undefined, max: number): number => {
    const n = Number(v)
    if (v === undefined || !Number.isFinite(n) || n < 0 || n > max)
      throw new FsError('EINVAL', `${name} needs a number 0..${max}, not ${v}`)
    return n
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (a === '--minutes') o.minutes = num(a, argv[++i], 10_000)
    else if (a === '--seed') o.seed = Math.floor(num(a, argv[++i], 0xffffffff))
    else if (a === '--mounts') o.mounts = Math.max(1, Math.floor(num(a, argv[++i], 16)))
    else if (a === '--workers') o.workers = Math.max(1, Math.floor(num(a, argv[++i], 16)))
    else if (a === '--op-deadline') o.opDeadline = num(a, argv[++i], 3600)
    else if (a === '--weights') {
      const v = argv[++i]
      if (!v) throw new FsError('EINVAL', '--weights needs kind=weight,... (for example cycle=30,rename=0)')
      o.weights = parseWeights(v)
    } else if (a === '--keep') o.keep = true
    else if (a === '--strict') o.tolerateKernelEio = false
    else
      throw new FsError(
        'EINVAL',
        `unknown argument ${a}; usage: stress --minutes N [--seed S] [--mounts M] [--workers W] [--op-deadline SECONDS] [--weights kind=w,...] [--keep] [--strict]`,
      )
  }
  return o
}

async function main(): Promise<number> {
  // an operation hung on a FUSE mount holds one of libuv's threads for good: with only the
  // default 4, a few hangs would stall every other fs call of this process (nothing has used
  // the pool yet here, so this still takes effect)
  process.env.UV_THREADPOOL_SIZE ??= '32'
  const o = parse(process.argv.slice(2))
  // Ctrl-C or a kill: nothing this started may outlive it
  for (const sig of ['SIGINT', 'SIGTERM'] as const)
    process.on(sig, () => {
      console.error(`stress: ${sig}, killing the cluster`)
      killAllAgentsSync()
      process.exit(130)
    })
  console.log(
    `stress: ${o.minutes} min, ${o.mounts} mounts x ${o.workers} workers, seed ${o.seed} (replay: --seed ${o.seed})`,
  )
  const r = await runStress({
    seed: o.seed,
    durationMs: o.minutes * 60_000,
    mounts: o.mounts,
    workersPerMount: o.workers,
    progressMs: 10_000,
    opDeadlineMs: o.opDeadline * 1000,
    keep: o.keep,
    weights: o.weights,
    tolerateKernelEio: o.tolerateKernelEio,
    tolerateKernelEstale: o.tolerateKernelEio,
  })
  for (const l of formatReport(r)) console.log(l)
  console.log(r.failed ? `FAILED (seed ${o.seed})` : `passed (seed ${o.seed})`)
  return r.failed ? 1 : 0
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? e.message : String(e))
    process.exit(2)
  },
)
