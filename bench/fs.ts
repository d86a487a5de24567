/*
 * Filesystem benchmark: the same workloads on
 *   - a scoutfs mount (a real `scoutfs mount --foreground` agent on file-backed devices),
 *   - a fuse-native passthrough of a local directory (bench/passthrough.ts, its own process),
 *     mounted with scoutfs's own FUSE options ("pt-same": attr/entry/negative timeouts 0,
 *     direct_io, use_ino, big_writes...) and with fuse-native's defaults ("pt-default"),
 *   - the local disk directly (a temp directory),
 * and walk-inodes against `find -newer` on a scoutfs filesystem of 100,000 inodes.
 * See bench/README.md.
 *
 *   npm run bench:fs            (or: node dist/bench/fs.js)
 *   SCOUTFS_BENCH_FILES=2000 SCOUTFS_BENCH_SEQ_MB=128 SCOUTFS_BENCH_WALK_FILES=10000 node dist/bench/fs.js
 *
 * Every timed I/O is done by a child process (a python3 worker, `find`, the scoutfs CLI),
 * never by a process serving a FUSE mount.  Workloads run one at a time, each on every target
 * in turn (so a change of machine load over the run hits all targets alike), after an
 * untimed `sync` (and `scoutfs sync` on scoutfs) so one workload's write-back is not billed
 * to the next.  Every mount and process is cleaned up at the end, on failure and on Ctrl-C.
 *
 * Options are in bench/fs-options.ts, the python worker in bench/fs-worker.ts, targets and
 * cleanup in bench/fs-targets.ts, the workloads in bench/fs-workloads.ts; this file has the
 * report and main.
 */
import { existsSync, mkdirSync } from 'node:fs'
import { cpus, freemem, loadavg, release } from 'node:os'
import { join } from 'node:path'
import { SCOUTFS_BIN } from '../node-agent/src/tools/launcher/scoutfs-cli.js'
import { passthroughOptions } from './passthrough.js'
import { type Options, ALL_TARGETS, PEERS, type TargetKey, LABEL, parseOptions } from './fs-options.js'
import {
  run,
  log,
  type Target,
  startPassthrough,
  startScoutfs,
  makeTempRoot,
  cleanup,
  holdMemory,
} from './fs-targets.js'
import {
  type Cell,
  type WorkloadKey,
  WORKLOADS,
  results,
  writeWorker,
  MiB,
  runWorkloads,
  type WalkResult,
  runWalk,
  fmtInt,
  fmtRate,
  fmtRatio,
} from './fs-workloads.js'

/**
 * The scoutfs targets' data device: room for the workloads, and at least as large as a user's
 * (sparse: only what is written takes space), so the mount's data avail list gets its full
 * 4 GiB (an eighth of the device: mountDataFill in server.ts)
 */
function dataDeviceBytes(o: Options): number {
  const smallBytes = o.files * Math.max(4096, Math.ceil(o.fileSize / 4096) * 4096)
  return Math.max(32 * 2 ** 30, Math.ceil((o.seqMb * MiB + smallBytes) * 1.5) + 2 ** 30)
}

/* ---- report ------------------------------------------------------------------------------- */

/** the targets scoutfs is compared with, in the ratio columns */
const RATIO_OF = ['scoutfsFn', 'ptSame', 'ptDefault', 'local', 'gluster', 'moosefs'] as const

function table(head: string[], rows: string[][]): string {
  const w = head.map((h, c) => Math.max(h.length, ...rows.map((r) => (r[c] ?? '').length)))
  const line = (cells: string[]): string =>
    cells.map((s, c) => (c === 0 ? s.padEnd(w[c]!) : s.padStart(w[c]!))).join('  ')
  return [line(head), w.map((n) => '-'.repeat(n)).join('  '), ...rows.map(line)].join('\n')
}

function ratio(w: WorkloadKey, of: TargetKey): number | undefined {
  const s = results.get(w)?.get('scoutfs')?.rate
  const b = results.get(w)?.get(of)?.rate
  return s !== undefined && b !== undefined && b > 0 ? s / b : undefined
}

function report(o: Options, targets: Target[], walk: WalkResult | undefined, env: Record<string, unknown>): void {
  const keys = ALL_TARGETS.filter((k) => o.targets.has(k))
  const head = ['workload', 'unit', ...keys.map((k) => LABEL[k])]
  const hasS = o.targets.has('scoutfs')
  if (hasS) for (const k of RATIO_OF) if (o.targets.has(k)) head.push(`s/${LABEL[k]}`)
  const rows: string[][] = []
  for (const w of WORKLOADS) {
    const row = [w.label, w.unit]
    for (const k of keys) {
      const c = results.get(w.key)?.get(k)
      row.push(!c ? '-' : c.error ? 'FAILED' : fmtRate(c.rate!))
    }
    if (hasS) for (const k of RATIO_OF) if (o.targets.has(k)) row.push(fmtRatio(ratio(w.key, k)))
    rows.push(row)
  }
  const out: string[] = []
  out.push('')
  out.push(
    `scoutfs filesystem benchmark: ${fmtInt(o.files)} files of ${fmtInt(o.fileSize)} B, ` +
      `${fmtInt(o.seqMb)} MiB sequential (1 MiB I/Os), walk over ${fmtInt(o.walkFiles)} files, N = ${o.threads} writers`,
  )
  out.push(
    `(${env.cpus} CPUs, kernel ${env.kernel}, load average ${env.loadStart} at start, ${env.loadEnd} at end` +
      (env.held ? `; ${String(env.held)})` : ')'),
  )
  if (results.size > 0) {
    out.push('')
    out.push(table(head, rows))
    out.push('')
    out.push('s/X = scoutfs rate / X rate (higher is better for scoutfs; 1.00x = as fast as X)')
  }
  for (const t of targets) out.push(`  ${LABEL[t.key].padEnd(10)} -o ${t.options}`)
  const errs: string[] = []
  for (const w of WORKLOADS)
    for (const k of keys) {
      const c = results.get(w.key)?.get(k)
      if (c?.error) errs.push(`  ${w.label} on ${LABEL[k]}: ${c.error}`)
      else if (c?.note) errs.push(`  ${w.label} on ${LABEL[k]}: ${c.note}`)
    }
  if (errs.length) out.push('details and failures:', ...errs)

  if (walk) {
    out.push('')
    out.push(
      `walk-inodes vs find on scoutfs (${fmtInt(walk.files)} files in ${walk.dirs} directories, ${o.walkChanged} touched${o.mountOptions ? `, mount -o ${o.mountOptions}` : ''}):`,
    )
    if (walk.createSecs !== undefined)
      out.push(
        `  setup: created in ${walk.createSecs.toFixed(1)} s (${fmtRate(walk.files / walk.createSecs)} files/s, mknod, ` +
          `${o.walkWorkers} workers), scoutfs sync ${walk.syncSecs?.toFixed(1) ?? '-'} s, total ${walk.setupSecs?.toFixed(1) ?? '-'} s`,
      )
    if (walk.walkMs !== undefined)
      out.push(
        `  walk-inodes meta_seq ${walk.seq} -1: ${walk.walkCount} inodes in ${walk.walkMs.toFixed(0)} ms ` +
          `(then ${walk.walkWarmMs!.map((m) => m.toFixed(0)).join(', ')} ms; a bare CLI call, statfs, takes ${walk.cliBaselineMs!.toFixed(0)} ms) — ` +
          (walk.walkOk ? 'exactly the touched inodes' : 'NOT the touched inodes'),
      )
    if (walk.findMs !== undefined)
      out.push(
        `  find MNT -newer REF: ${walk.findCount} paths in ${(walk.findMs / 1000).toFixed(2)} s — ` +
          (walk.findOk ? 'exactly the touched files' : 'NOT the touched files'),
      )
    if (walk.findMs !== undefined && walk.walkMs !== undefined)
      out.push(
        `  walk-inodes is ${fmtRatio(walk.findMs / walk.walkMs)} faster than find (first walk, CLI start-up included)`,
      )
    if (walk.error) out.push(`  FAILED: ${walk.error}`)
  }

  if (hasS) {
    out.push('')
    out.push('targets (ratios are scoutfs / the other target, measured in this run):')
    const check = (what: string, r: number | undefined, min: number, fmt: (n: number) => string = fmtRatio): void => {
      const v = r === undefined ? 'NOT MEASURED' : r >= min ? 'met' : 'NOT met'
      out.push(`  ${what.padEnd(44)} >= ${fmt(min).padStart(7)} ${fmt(r ?? NaN).padStart(7)}  ${v}`)
    }
    if (o.files > 0) {
      check('create+write+close vs pt-same', ratio('create', 'ptSame'), 0.7)
      check('stat vs pt-same', ratio('stat', 'ptSame'), 0.7)
      for (const k of ['gluster', 'moosefs'] as const) {
        check(`create+write+close vs ${LABEL[k]}, 1 writer`, ratio('create', k), 1.5)
        if (o.threads > 1) check(`same vs ${LABEL[k]}, ${o.threads} writers`, ratio('createPar', k), 1.5)
      }
      check('warm stat, stats/s', results.get('statWarm')?.get('scoutfs')?.rate, 100_000, fmtRate)
    }
    if (o.seqMb > 0) {
      check('sequential write vs pt-same', ratio('seqwrite', 'ptSame'), 0.8)
      check('sequential read vs pt-same', ratio('seqread', 'ptSame'), 0.8)
    }
    if (walk)
      check(
        'walk-inodes speed-up over find',
        walk.findMs !== undefined && walk.walkMs !== undefined && walk.walkOk && walk.findOk
          ? walk.findMs / walk.walkMs
          : undefined,
        100,
      )
  }
  console.log(out.join('\n'))
  if (o.json) {
    const obj: Record<string, unknown> = { options: { ...o, targets: [...o.targets] }, env, walk }
    const r: Record<string, Record<string, Cell>> = {}
    for (const [w, m] of results) r[w] = Object.fromEntries(m)
    obj.results = r
    console.log(JSON.stringify(obj))
  }
}

/* ---- main --------------------------------------------------------------------------------- */

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2))
  if ((await run('python3', ['-c', 'import sys; assert sys.version_info >= (3, 9)'])).code !== 0)
    throw new Error('python3 (>= 3.9) is needed for the I/O workers')
  if (!existsSync(SCOUTFS_BIN)) throw new Error(`${SCOUTFS_BIN} is missing`)
  // makeDevices() puts the device files under os.tmpdir(), which follows TMPDIR
  process.env.TMPDIR = o.dir
  const tempRoot = makeTempRoot(o.dir)
  writeWorker(tempRoot)
  const env: Record<string, unknown> = {
    cpus: cpus().length,
    kernel: release(),
    loadStart: loadavg()
      .map((x) => x.toFixed(2))
      .join(' '),
    ptSameOptions: passthroughOptions('same').join(','),
  }
  log(`temp dir ${tempRoot}; load average ${env.loadStart}`)
  if (loadavg()[0]! > cpus().length * 0.5)
    log(
      `warning: the machine is busy (load ${loadavg()[0]!.toFixed(1)} on ${cpus().length} CPUs): figures will be noisy`,
    )

  const targets: Target[] = []
  const shown: Target[] = []
  let walk: WalkResult | undefined
  try {
    if (o.holdMb > 0) {
      log(`holding ${o.holdMb} MiB of memory in a child process...`)
      await holdMemory(o.holdMb)
      env.held = `${o.holdMb} MiB held by another process`
      log(`held; ${Math.round(freemem() / 2 ** 20)} MiB free`)
    }
    const mainRun = o.files > 0 || o.seqMb > 0
    if (mainRun && o.targets.has('local')) {
      const dir = join(tempRoot, 'local')
      mkdirSync(dir)
      targets.push({ key: 'local', mnt: dir, work: join(dir, 'bench'), options: '(no FUSE)', teardown: async () => {} })
    }
    if (mainRun && o.targets.has('ptDefault')) targets.push(await startPassthrough(tempRoot, 'ptDefault'))
    if (mainRun && o.targets.has('ptSame')) targets.push(await startPassthrough(tempRoot, 'ptSame'))
    if (mainRun && o.targets.has('scoutfs')) {
      const { t } = await startScoutfs(o, 4 * 2 ** 30, dataDeviceBytes(o))
      targets.push(t)
    }
    if (mainRun && o.targets.has('scoutfsFn')) {
      const { t } = await startScoutfs(o, 4 * 2 ** 30, dataDeviceBytes(o), 'scoutfsFn')
      targets.push(t)
    }
    for (const k of PEERS) {
      if (!mainRun || !o.targets.has(k)) continue
      const work = join(o.peerDirs[k], `scoutfs-bench-${process.pid}`)
      mkdirSync(work)
      targets.push({
        key: k,
        mnt: o.peerDirs[k],
        work,
        options: `(a peer, as mounted at ${o.peerDirs[k]})`,
        teardown: async () => {
          await run('rm', ['-rf', work])
        },
      })
    }
    if (mainRun) log(`targets: ${targets.map((t) => `${LABEL[t.key]} at ${t.mnt}`).join(', ')}`)
    shown.push(...targets)
    if (mainRun) await runWorkloads(o, targets)
    for (const t of targets.splice(0)) await t.teardown()
    if (!o.skipWalk) walk = await runWalk(o, tempRoot)
  } finally {
    for (const t of targets) await t.teardown().catch((e: unknown) => log(`teardown of ${LABEL[t.key]}: ${String(e)}`))
    await cleanup()
  }
  env.loadEnd = loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')
  report(o, shown, walk, env)
}

process.on('SIGINT', () => {
  log('interrupted: unmounting and cleaning up')
  void cleanup().finally(() => process.exit(130))
})
process.on('SIGTERM', () => {
  void cleanup().finally(() => process.exit(143))
})

main().catch(async (e: unknown) => {
  console.error('benchmark failed:', e instanceof Error ? e.message : e)
  await cleanup()
  process.exit(1)
})
