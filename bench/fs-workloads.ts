/*
 * Workloads of the filesystem benchmark (bench/fs.ts): the measurement of one workload on
 * one target, small files (create, stat, readdir), sequential write/read, and walk-inodes
 * against `find -newer`; the results report() prints, and its number formats.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { type Options, type TargetKey, LABEL } from './fs-options.js'
import { WORKER_PY } from './fs-worker.js'
import { machineCpu } from './cluster-readings.js'
import { isAborting, run, mustRun, scoutfsCli, log, type Target, startScoutfs } from './fs-targets.js'

/* ---- measurement -------------------------------------------------------------------------- */

export const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US')
export function fmtRate(n: number): string {
  if (!Number.isFinite(n)) return '-'
  if (n >= 100) return fmtInt(n)
  return n.toPrecision(3)
}
export function fmtRatio(r: number | undefined): string {
  if (r === undefined || !Number.isFinite(r)) return '-'
  return r >= 10 ? `${r.toFixed(0)}x` : `${r.toFixed(2)}x`
}

export interface Cell {
  /** ops/s or MB/s */
  rate?: number
  secs?: number
  error?: string
  note?: string
}

export type WorkloadKey =
  'create' | 'createPar' | 'stat' | 'statWarm' | 'readdir' | 'seqwrite' | 'seqwriteFsync' | 'seqread'
export const WORKLOADS: Array<{ key: WorkloadKey; label: string; unit: string }> = [
  { key: 'create', label: 'create+write+close', unit: 'files/s' },
  { key: 'createPar', label: 'same, N writers', unit: 'files/s' },
  { key: 'stat', label: 'stat', unit: 'stats/s' },
  { key: 'statWarm', label: 'stat again (warm)', unit: 'stats/s' },
  { key: 'readdir', label: 'readdir', unit: 'entries/s' },
  { key: 'seqwrite', label: 'seq write', unit: 'MB/s' },
  { key: 'seqwriteFsync', label: 'seq write+fsync', unit: 'MB/s' },
  { key: 'seqread', label: 'seq read (cold)', unit: 'MB/s' },
]

export const results = new Map<WorkloadKey, Map<TargetKey, Cell>>()
export const setCell = (w: WorkloadKey, t: TargetKey, c: Cell): void => {
  if (!results.has(w)) results.set(w, new Map())
  results.get(w)!.set(t, c)
}

let workerPath = ''
let workerDir = ''

/** Writes the python I/O worker into `dir`; worker() runs it. */
export function writeWorker(dir: string): void {
  workerDir = dir
  workerPath = join(dir, 'worker.py')
  writeFileSync(workerPath, WORKER_PY)
}
export const MB = 1e6
export const MiB = 1 << 20

/** run one worker command, with progress every 15 s; returns its final JSON line */
export async function worker(o: Options, label: string, args: string[]): Promise<Record<string, unknown>> {
  let last = performance.now()
  let lastProgress: Record<string, unknown> | undefined
  const r = await run('python3', [workerPath, ...args], {
    timeoutMs: o.timeoutS * 1000,
    cwd: workerDir,
    onLine: (l) => {
      if (l.progress === undefined) return
      lastProgress = l
      const now = performance.now()
      if (now - last >= 15_000) {
        last = now
        const done = Number(l.progress)
        log(`  ${label}: ${fmtInt(done)} done in ${Number(l.secs).toFixed(0)} s (${fmtRate(done / Number(l.secs))}/s)`)
      }
    },
  })
  if (r.timedOut) {
    const p = lastProgress
    const partial = p
      ? `; ${fmtInt(Number(p.progress))} done in ${Number(p.secs).toFixed(0)} s = ${fmtRate(Number(p.progress) / Number(p.secs))}/s`
      : ''
    throw new Error(`timed out after ${o.timeoutS} s${partial}`)
  }
  if (r.code !== 0) {
    const said = r.lines.find((l) => typeof l.error === 'string')
    if (said) throw new Error(String(said.error))
    throw new Error(`worker ${args[0]} failed (code ${r.code}): ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`)
  }
  const fin = r.lines.filter((l) => l.progress === undefined).pop()
  if (!fin) throw new Error(`worker ${args[0]} printed no result`)
  return fin
}

/**
 * the machine counts as quiet below this share of its CPU time busy, and of every disk's
 * time busy, over QUIET_WINDOW_MS
 */
const QUIET_BUSY = 0.25
const QUIET_WINDOW_MS = 250
/** a phase starts anyway after this long, with a warning */
const QUIET_MAX_MS = 20_000

/** ms each disk (not loop, ram or zram devices) has spent doing I/O, from /proc/diskstats */
function diskBusyMs(): Map<string, number> {
  const out = new Map<string, number>()
  try {
    for (const line of readFileSync('/proc/diskstats', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/)
      if (f.length < 13 || /^(loop|ram|zram)/.test(f[2]!)) continue
      out.set(f[2]!, Number(f[12]))
    }
  } catch {
    // no diskstats: only the CPUs count
  }
  return out
}

/**
 * untimed: flush the page cache's dirty data and scoutfs's open transaction, then wait until
 * the machine is quiet (its CPUs and its disks): what one target leaves running after a phase
 * (a peer's servers writing back, healing or replicating; scoutfs's log merges) would
 * otherwise be charged to whichever target is measured next
 */
export async function quiesce(t: Target): Promise<void> {
  await mustRun('sync', [], 'sync')
  if (t.key === 'scoutfs' || t.key === 'scoutfsFn') await scoutfsCli('sync', t.mnt)
  const t0 = performance.now()
  let cpu = 1
  let disk = 1
  while (performance.now() - t0 < QUIET_MAX_MS) {
    const a = machineCpu()
    const da = diskBusyMs()
    const w0 = performance.now()
    await new Promise((r) => setTimeout(r, QUIET_WINDOW_MS))
    const b = machineCpu()
    const db = diskBusyMs()
    const ms = performance.now() - w0
    cpu = b.total > a.total ? (b.busy - a.busy) / (b.total - a.total) : 0
    disk = 0
    for (const [name, v] of db) disk = Math.max(disk, (v - (da.get(name) ?? v)) / ms)
    if (cpu < QUIET_BUSY && disk < QUIET_BUSY) break
  }
  const waited = performance.now() - t0
  if (cpu >= QUIET_BUSY || disk >= QUIET_BUSY)
    log(
      `  the machine is still busy after ${QUIET_MAX_MS / 1000} s (CPUs ${Math.round(cpu * 100)} %, ` +
        `disk ${Math.round(disk * 100)} %): figures will be noisy`,
    )
  else if (waited > 1000) log(`  waited ${(waited / 1000).toFixed(1)} s for the machine to be quiet`)
}

let dropCachesOk: boolean | undefined
export async function dropCaches(): Promise<boolean> {
  await mustRun('sync', [], 'sync')
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3')
    dropCachesOk = dropCachesOk ?? true
    return true
  } catch (e) {
    if (dropCachesOk === undefined) log(`cannot drop the page cache (${(e as Error).message}): reads may be warm`)
    dropCachesOk = false
    return false
  }
}

export async function measure(w: WorkloadKey, t: Target, fn: () => Promise<Cell>): Promise<Cell> {
  log(`${WORKLOADS.find((x) => x.key === w)!.label} on ${LABEL[t.key]}...`)
  let c: Cell
  try {
    c = await fn()
  } catch (e) {
    if (isAborting()) throw e
    c = { error: (e as Error).message }
    if (t.saveLog) c.error += ` (agent log: ${t.saveLog(w)})`
  }
  setCell(w, t.key, c)
  if (c.error) log(`  FAILED: ${c.error}`)
  else
    log(
      `  ${fmtRate(c.rate!)} ${WORKLOADS.find((x) => x.key === w)!.unit} (${c.secs!.toFixed(2)} s)${c.note ? ' ' + c.note : ''}`,
    )
  return c
}

export async function runWorkloads(o: Options, targets: Target[]): Promise<void> {
  const small = (t: Target): string => join(t.work, 'small')
  const big = (t: Target): string => join(t.work, 'seq.dat')
  for (const t of targets) {
    const r = await run('mkdir', ['-p', small(t)])
    if (r.code !== 0) throw new Error(`mkdir on ${LABEL[t.key]} failed: ${r.stderr}`)
  }
  if (o.files > 0) await runSmallFiles(o, targets, small)
  if (o.seqMb > 0) await runSequential(o, targets, big)
}

export async function runSmallFiles(o: Options, targets: Target[], small: (t: Target) => string): Promise<void> {
  const failed = new Set<TargetKey>()

  for (const t of targets) {
    await quiesce(t)
    const c = await measure('create', t, async () => {
      const r = await worker(o, `${LABEL[t.key]} create`, ['create', small(t), String(o.files), String(o.fileSize)])
      return { rate: Number(r.ops) / Number(r.secs), secs: Number(r.secs) }
    })
    if (c.error) failed.add(t.key)
  }
  // N writers at once, each in a directory of its own (files/N files each), started together:
  // the rate is all their files over the slowest writer's time
  if (o.threads > 1)
    for (const t of targets) {
      await quiesce(t)
      const per = Math.max(1, Math.floor(o.files / o.threads))
      const dirs = Array.from({ length: o.threads }, (_, i) => join(t.work, `par${i}`))
      await measure('createPar', t, async () => {
        const r = await run('mkdir', ['-p', ...dirs])
        if (r.code !== 0) throw new Error(`mkdir: ${r.stderr}`)
        const rs = await Promise.all(
          dirs.map((d, i) => worker(o, `${LABEL[t.key]} create w${i}`, ['create', d, String(per), String(o.fileSize)])),
        )
        const secs = Math.max(...rs.map((x) => Number(x.secs)))
        return { rate: (per * o.threads) / secs, secs, note: `(${o.threads} writers x ${fmtInt(per)} files)` }
      })
    }
  for (const t of targets) {
    await quiesce(t)
    if (failed.has(t.key)) {
      for (const w of ['stat', 'statWarm', 'readdir'] as const) setCell(w, t.key, { error: 'create failed' })
      continue
    }
    const stat = async (): Promise<Cell> => {
      const r = await worker(o, `${LABEL[t.key]} stat`, ['stat', small(t), String(o.files), String(o.fileSize)])
      if (Number(r.bad)) throw new Error(`${r.bad} files had the wrong size`)
      return { rate: Number(r.ops) / Number(r.secs), secs: Number(r.secs) }
    }
    // the first pass after the creates; the second at once, from whatever the first cached
    await measure('stat', t, stat)
    await measure('statWarm', t, stat)
  }
  for (const t of targets) {
    if (failed.has(t.key)) continue
    await quiesce(t)
    await measure('readdir', t, async () => {
      const r = await worker(o, `${LABEL[t.key]} readdir`, [
        'readdir',
        small(t),
        String(o.files),
        String(o.readdirRepeat),
      ])
      if (Number(r.bad)) throw new Error(`listing returned ${JSON.stringify(r.entries)} entries, expected ${o.files}`)
      const per = (Number(r.secs) / o.readdirRepeat) * 1000
      return { rate: Number(r.ops) / Number(r.secs), secs: Number(r.secs), note: `(${per.toFixed(1)} ms per listing)` }
    })
  }
}

export async function runSequential(o: Options, targets: Target[], big: (t: Target) => string): Promise<void> {
  const wrote = new Set<TargetKey>()
  for (const t of targets) {
    await quiesce(t)
    let fsyncCell: Cell | undefined
    const c = await measure('seqwrite', t, async () => {
      const r = await worker(o, `${LABEL[t.key]} seq write`, ['seqwrite', big(t), String(o.seqMb)])
      const bytes = Number(r.bytes)
      const ws = Number(r.write_secs)
      const fs = Number(r.fsync_secs)
      fsyncCell = { rate: bytes / MB / (ws + fs), secs: ws + fs, note: `(fsync ${fs.toFixed(2)} s)` }
      return { rate: bytes / MB / ws, secs: ws }
    })
    setCell('seqwriteFsync', t.key, fsyncCell ?? { error: c.error ?? 'no result' })
    if (!c.error) wrote.add(t.key)
  }
  for (const t of targets) {
    if (!wrote.has(t.key)) {
      setCell('seqread', t.key, { error: 'seq write failed' })
      continue
    }
    if (t.key === 'scoutfs' || t.key === 'scoutfsFn') await scoutfsCli('sync', t.mnt)
    const cold = await dropCaches()
    await measure('seqread', t, async () => {
      const r = await worker(o, `${LABEL[t.key]} seq read`, ['seqread', big(t), String(o.seqMb)])
      if (Number(r.bad)) throw new Error(`${r.bad} MiB blocks read back wrong (read ${r.bytes} bytes)`)
      return {
        rate: Number(r.bytes) / MB / Number(r.secs),
        secs: Number(r.secs),
        note: cold ? '' : '(page cache NOT dropped)',
      }
    })
  }
}

/* ---- walk-inodes vs find ------------------------------------------------------------------ */

export interface WalkResult {
  files: number
  dirs: number
  setupSecs?: number
  createSecs?: number
  syncSecs?: number
  seq?: number
  walkMs?: number
  walkWarmMs?: number[]
  cliBaselineMs?: number
  findMs?: number
  walkCount?: number
  findCount?: number
  walkOk?: boolean
  findOk?: boolean
  error?: string
}

export async function runWalk(o: Options, root: string): Promise<WalkResult> {
  const per = 1000
  const dirs = Math.ceil(o.walkFiles / per)
  const res: WalkResult = { files: o.walkFiles, dirs }
  // metadata: generous and sparse; data: nothing but the root's few blocks
  const { t } = await startScoutfs(o, 4 * 2 ** 30, 2 ** 30)
  try {
    const base = join(t.mnt, 'walk')
    await mustRun('mkdir', [base], 'mkdir walk')
    log(`walk setup: ${fmtInt(o.walkFiles)} files in ${dirs} directories, ${o.walkWorkers} workers (mknod)...`)
    const t0 = performance.now()
    const nw = Math.min(o.walkWorkers, dirs)
    const jobs: Array<Promise<Record<string, unknown>>> = []
    for (let k = 0; k < nw; k++) {
      const d0 = Math.floor((k * dirs) / nw)
      const d1 = Math.floor(((k + 1) * dirs) / nw)
      jobs.push(
        worker(o, `walk setup worker ${k}`, ['mknod', base, String(d0), String(d1), String(per), String(o.walkFiles)]),
      )
    }
    const done = await Promise.allSettled(jobs)
    const bad = done.find((d) => d.status === 'rejected')
    if (bad) throw (bad as PromiseRejectedResult).reason
    const made = done.reduce((s, d) => s + Number((d as PromiseFulfilledResult<Record<string, unknown>>).value.ops), 0)
    if (made !== o.walkFiles) throw new Error(`walk setup made ${made} files, expected ${o.walkFiles}`)
    res.createSecs = (performance.now() - t0) / 1000
    log(
      `  created in ${res.createSecs.toFixed(1)} s (${fmtRate(o.walkFiles / res.createSecs)} files/s); scoutfs sync...`,
    )
    const t1 = performance.now()
    await scoutfsCli('sync', t.mnt)
    res.syncSecs = (performance.now() - t1) / 1000
    res.setupSecs = (performance.now() - t0) / 1000
    const committed = Number((await scoutfsCli('statfs', '-s', 'committed_seq', t.mnt)).stdout.trim())
    if (!Number.isSafeInteger(committed)) throw new Error('statfs -s committed_seq printed no number')
    // everything up to committed_seq is in committed transactions; changes from now on get a later seq
    res.seq = committed + 1
    await new Promise((r) => setTimeout(r, 1100))
    const ref = join(root, 'walk-ref')
    writeFileSync(ref, '')
    await new Promise((r) => setTimeout(r, 1100))
    const touched = await worker(o, 'touch', ['touch', base, String(per), String(o.walkFiles), String(o.walkChanged)])
    const paths = new Set(touched.paths as string[])
    const inos = new Set((touched.inos as number[]).map(String))
    log(`walk: touched ${paths.size} files; timing walk-inodes meta_seq ${res.seq} -1 vs find -newer...`)

    const base0 = await scoutfsCli('statfs', '-s', 'committed_seq', t.mnt)
    res.cliBaselineMs = base0.ms
    const walkOnce = async (): Promise<{ ms: number; got: string[] }> => {
      const r = await scoutfsCli('walk-inodes', 'meta_seq', String(res.seq), '-1', t.mnt)
      const got = r.stdout
        .split('\n')
        .filter((l) => /^\d/.test(l))
        .map((l) => l.trim().split(/\s+/)[3]!)
      return { ms: r.ms, got }
    }
    const w1 = await walkOnce()
    res.walkMs = w1.ms
    res.walkCount = w1.got.length
    res.walkOk = w1.got.length === inos.size && w1.got.every((i) => inos.has(i))
    res.walkWarmMs = []
    for (let i = 0; i < 3; i++) {
      const w = await walkOnce()
      res.walkWarmMs.push(w.ms)
      if (w.got.length !== w1.got.length) res.walkOk = false
    }
    log(`  walk-inodes: ${res.walkCount} inodes in ${res.walkMs.toFixed(0)} ms; find...`)
    const f = await run('find', [t.mnt, '-newer', ref], { timeoutMs: o.timeoutS * 1000 })
    if (f.timedOut) throw new Error(`find timed out after ${o.timeoutS} s`)
    if (f.code !== 0) throw new Error(`find failed: ${f.stderr}`)
    res.findMs = f.ms
    const found = f.stdout.split('\n').filter(Boolean)
    res.findCount = found.length
    res.findOk = found.length === paths.size && found.every((p) => paths.has(p))
    log(`  find: ${res.findCount} paths in ${(res.findMs / 1000).toFixed(2)} s`)
  } catch (e) {
    if (isAborting()) throw e
    res.error = `${(e as Error).message} (agent log: ${t.saveLog!('walk')})`
    log(`walk FAILED: ${res.error}`)
  } finally {
    await t.teardown()
  }
  return res
}
