/*
 * Cluster benchmark: what several mounts of one scoutfs cluster buy and cost, in one run.
 *
 *   1. small-file creates (create + FILE_SIZE write + close, python writers straight into the
 *      mounts): the local disk (1 writer, and N writers in N directories), a fresh 1-agent
 *      cluster (1 writer), one client mount of a fresh N-agent cluster (1 writer), and the
 *      N mounts of that cluster in parallel (one writer per mount, each in its own directory);
 *      the figure is the N-mount aggregate over the 1-mount rate (target >= 1.5x);
 *   2. cross-mount visibility: one python process with two mounts of the cluster open creates
 *      a file / appends to a file on mount A and, as soon as the syscall returns, stats the
 *      file on mount B until B shows the change (target: median < 10 ms), next to a plain stat
 *      on B of an unchanged file and the same change seen on A itself;
 *   3. the machine (CPUs, load, CPU busy) and each agent's lock and commit counters
 *      (scraped from /metrics) per phase, to explain the figures.
 * See bench/README.md.
 *
 *   npm run bench:cluster                 (or: node dist/bench/cluster.js)
 *   SCOUTFS_BENCH_CLUSTER_FILES=500 SCOUTFS_BENCH_VIS_ROUNDS=50 node dist/bench/cluster.js
 *
 * Every timed I/O is done by a python child process, never by a process serving a mount.
 * Every agent is stopped (clients first, the server last) at the end, on failure and on
 * Ctrl-C; the exit status is non-zero when a measurement failed, not when a target is missed.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { killAllAgents, type AgentProcess } from '../node-agent/src/tools/launcher/agent-process.js'
import { Cluster, makeClusterDevices, numberedAgents } from '../node-agent/src/tools/launcher/cluster.js'
import type { Devices } from '../node-agent/src/tools/launcher/devices.js'
import { SCOUTFS_BIN } from '../node-agent/src/tools/launcher/scoutfs-cli.js'
import { agentStatus } from '../node-agent/src/tools/launcher/status.js'
import { mountsBelow } from '../node-agent/src/fuse/unmount.js'
import { parseOptions, type Options } from './cluster-options.js'
import {
  deltas,
  loadStr,
  machineCpu,
  readAgents,
  setClockTicks,
  type AgentDelta,
  type PhaseMachine,
} from './cluster-readings.js'
import {
  fmtInt,
  fmtMs,
  fmtRate,
  report,
  type CreateKey,
  type CreateResult,
  type Dist,
  type Env,
  type VisResult,
  type VisSide,
} from './cluster-report.js'
import { WORKER_PY } from './cluster-worker.js'

/** a benchmark cluster: launched agents on devices in their own temp directory */
type BenchCluster = Cluster<Devices>

const MOUNT_TIMEOUT_MS = 30_000
const STOP_TIMEOUT_MS = 60_000

/* ---- child processes ---------------------------------------------------------------------- */

interface WorkerRun {
  child: ChildProcess
  /** resolves with the worker's last JSON line; rejects on a failure */
  done: Promise<Record<string, unknown>>
  /** resolves when the worker has printed {"ready": true} n times (default 1) */
  ready(n?: number): Promise<void>
}

const children = new Set<ChildProcess>()
let aborting = false
/** SIGINT / SIGTERM: the run is being cut short by the user */
let interrupted = false
let workerPath = ''
let tempRoot: string | undefined

function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`)
}

function startWorker(o: Options, label: string, args: string[]): WorkerRun {
  if (aborting) throw new Error('benchmark is being stopped')
  const child = spawn('python3', [workerPath, ...args], { stdio: ['pipe', 'pipe', 'pipe'], cwd: tempRoot })
  children.add(child)
  let partial = ''
  let stderr = ''
  let last: Record<string, unknown> | undefined
  let error: string | undefined
  let progress: Record<string, unknown> | undefined
  let lastLog = performance.now()
  let readies = 0
  let failure: Error | undefined
  const waiters: Array<{ n: number; res: () => void; rej: (e: Error) => void }> = []
  const readyRes = (): void => {
    readies++
    for (const w of waiters.filter((x) => x.n <= readies)) {
      waiters.splice(waiters.indexOf(w), 1)
      w.res()
    }
  }
  const readyRej = (e: Error): void => {
    failure = e
    for (const w of waiters.splice(0)) w.rej(e)
  }
  const ready = (n = 1): Promise<void> =>
    n <= readies
      ? Promise.resolve()
      : failure
        ? Promise.reject(failure)
        : new Promise<void>((res, rej) => waiters.push({ n, res, rej }))
  child.stdout!.on('data', (c: Buffer) => {
    partial += c.toString()
    let i: number
    while ((i = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, i)
      partial = partial.slice(i + 1)
      let j: Record<string, unknown>
      try {
        j = JSON.parse(line) as Record<string, unknown>
      } catch {
        continue
      }
      if (j.ready) readyRes()
      else if (typeof j.error === 'string') error = j.error
      else if (j.progress !== undefined) {
        progress = j
        const now = performance.now()
        if (now - lastLog >= 15_000) {
          lastLog = now
          log(`  ${label}: ${fmtInt(Number(j.progress))} done in ${Number(j.secs).toFixed(0)} s`)
        }
      } else last = j
    }
  })
  child.stderr!.on('data', (c: Buffer) => {
    if (stderr.length < 1 << 20) stderr += c.toString()
  })
  child.stdin!.on('error', () => undefined)
  let timedOut = false
  const timer = setTimeout(() => {
    timedOut = true
    child.kill('SIGKILL')
  }, o.timeoutS * 1000)
  const done = new Promise<Record<string, unknown>>((resolve, reject) => {
    child.once('error', (e) => {
      clearTimeout(timer)
      children.delete(child)
      readyRej(e)
      reject(e)
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      children.delete(child)
      const why = timedOut
        ? `timed out after ${o.timeoutS} s` +
          (progress ? ` (${fmtInt(Number(progress.progress))} done in ${Number(progress.secs).toFixed(0)} s)` : '')
        : (error ??
          (code !== 0
            ? `exited with ${signal ?? code}: ${stderr.trim().split('\n').slice(-3).join(' | ')}`
            : !last
              ? 'printed no result'
              : undefined))
      if (why) {
        const e = new Error(`${label}: ${why}`)
        readyRej(e)
        reject(e)
      } else resolve(last!)
    })
  })
  return { child, done, ready }
}

function runCmd(cmd: string, args: string[], timeoutMs = 120_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    children.add(child)
    let out = ''
    child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
    child.stderr!.on('data', (c: Buffer) => (out += c.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('error', (e) => {
      clearTimeout(timer)
      children.delete(child)
      reject(e)
    })
    child.once('close', (code) => {
      clearTimeout(timer)
      children.delete(child)
      resolve({ code, out })
    })
  })
}

async function mustRun(cmd: string, args: string[]): Promise<void> {
  const r = await runCmd(cmd, args)
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.code}): ${r.out.trim()}`)
}

/** untimed: flush the page cache and every mount's open transaction */
async function quiesce(mnts: string[]): Promise<void> {
  await mustRun('sync', [])
  for (const m of mnts) await mustRun(process.execPath, [SCOUTFS_BIN, 'sync', m])
}

/** run `fn` as a phase: machine load and CPU busy, and each agent's counters, around it */
async function phase<T>(
  name: string,
  c: BenchCluster | undefined,
  roles: string[],
  fn: () => Promise<T>,
): Promise<{ r: T; machine: PhaseMachine; agents: AgentDelta[] }> {
  const loadBefore = loadStr()
  const a0 = await readAgents(c, roles)
  const m0 = machineCpu()
  const t0 = performance.now()
  log(`${name} (load ${loadBefore})...`)
  const r = await fn()
  const wallSecs = (performance.now() - t0) / 1000
  const m1 = machineCpu()
  const a1 = await readAgents(c, roles)
  const machine = {
    loadBefore,
    loadAfter: loadStr(),
    busy: m1.total > m0.total ? (m1.busy - m0.busy) / (m1.total - m0.total) : 0,
    wallSecs,
  }
  return { r, machine, agents: deltas(a0, a1) }
}

/* ---- clusters ----------------------------------------------------------------------------- */

const clusters = new Set<BenchCluster>()
const stopProblems: string[] = []

async function newCluster(o: Options, n: number): Promise<{ c: BenchCluster; roles: string[] }> {
  const dataBytes = Math.max(2 ** 30, Math.ceil(n * o.files * Math.max(4096, o.fileSize) * 2))
  const dev = await makeClusterDevices({ metaBytes: 2 ** 30, dataBytes, slots: Math.max(n, 1) })
  // mutual TLS between the agents unless SCOUTFS_BENCH_TLS=off (plaintext, -o insecure)
  const plain = process.env.SCOUTFS_BENCH_TLS === 'off'
  if (plain) dev.tlsOptions = undefined
  log(`starting a ${n}-agent cluster (server ${dev.serverAddr}, ${plain ? 'plaintext' : 'mutual TLS'}) in ${dev.dir}`)
  const options = [o.mountOptions, plain ? 'insecure' : undefined].filter(Boolean).join(',') || undefined
  const agents = numberedAgents(dev.dir, n, { logLevel: 'info', options, metricsAddr: '127.0.0.1:0' })
  const c: BenchCluster = new Cluster(dev, agents, MOUNT_TIMEOUT_MS)
  clusters.add(c)
  await c.startOrThrow()
  const roles: string[] = []
  for (const [i, a] of c.agents.entries()) {
    const s = await agentStatus(a.mnt).catch(() => undefined)
    roles.push(s?.server === undefined ? (i === 0 ? 'server' : 'client') : s.server ? 'server' : 'client')
  }
  const srv = await agentStatus(c.agents[0]!.mnt).catch(() => undefined)
  const seen = srv?.serverState?.mounts.length
  if (seen !== undefined && seen !== n) log(`warning: the server knows ${seen} mounts, not ${n}`)
  if (roles.filter((r) => r === 'server').length !== 1)
    log(`warning: the agents' /status says roles ${roles.join(',')} (one server expected)`)
  return { c, roles }
}

function saveLogs(c: BenchCluster, why: string): string[] {
  return c.agents.map((a, i) => {
    const p = join(tmpdir(), `scoutfs-bench-cluster-${process.pid}-${why}-m${i}.log`)
    writeFileSync(p, a.log())
    return p
  })
}

/** SIGTERM the clients, then the server; an agent that exits non-zero is a failed run */
async function stopCluster(c: BenchCluster): Promise<void> {
  clusters.delete(c)
  for (const { agent: a, result: r } of await c.stop(STOP_TIMEOUT_MS)) {
    if (!r.inTime) stopProblems.push(`stopping ${a.mnt}: it did not stop in ${STOP_TIMEOUT_MS / 1000} s (killed)`)
    else if (r.code !== 0) stopProblems.push(`agent ${a.mnt} exited with code ${r.code}; log tail: ${tail(a)}`)
  }
  if (!(await mountsBelow(c.dev.dir)).length) c.dev.remove()
}

const tail = (a: AgentProcess): string => a.log().trim().split('\n').slice(-3).join(' | ')

/* ---- cleanup ------------------------------------------------------------------------------ */

let cleaning: Promise<void> | undefined
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    aborting = true
    for (const c of children) c.kill('SIGKILL')
    for (const c of [...clusters]) {
      await c.kill()
      if (!(await mountsBelow(c.dev.dir)).length) c.dev.remove()
    }
    await killAllAgents()
    if (tempRoot) {
      if ((await mountsBelow(tempRoot)).length) log(`not removing ${tempRoot}: something is still mounted below it`)
      else rmSync(tempRoot, { recursive: true, force: true })
    }
  })()
  return cleaning
}

/* ---- small-file creates ------------------------------------------------------------------- */

interface CreateTarget {
  key: CreateKey
  label: string
  /** the writers' directories in run `rep` (one per writer, made by the writer) */
  dirs(rep: number): string[]
  cluster?: BenchCluster
  roles: string[]
  /** mounts to `scoutfs sync` before a run */
  syncMnts: string[]
}

/** `dirs.length` writers, started together, each creating o.files files in its own directory */
async function createRun(
  o: Options,
  t: CreateTarget,
  rep: number,
  label: string,
  dirs: string[],
): Promise<Omit<CreateResult, 'machine' | 'agents'>> {
  const res = { key: t.key, rep, label: t.label, writers: dirs.length, files: o.files * dirs.length }
  const ws = dirs.map((d, i) =>
    startWorker(o, `${label} writer ${i}`, ['create', d, String(o.files), String(o.fileSize)]),
  )
  try {
    await Promise.all(ws.map((w) => w.ready()))
    for (const w of ws) w.child.stdin!.end('go\n')
    const outs = await Promise.all(ws.map((w) => w.done))
    const t0 = Math.min(...outs.map((r) => Number(r.t0)))
    const t1 = Math.max(...outs.map((r) => Number(r.t1)))
    const secs = t1 - t0
    return {
      ...res,
      secs,
      rate: res.files / secs,
      perWriter: outs.map((r) => Number(r.ops) / (Number(r.t1) - Number(r.t0))),
      writerCpu: outs.reduce((s, r) => s + Number(r.cpu), 0),
    }
  } catch (e) {
    if (aborting) throw e
    for (const w of ws) w.child.kill('SIGKILL')
    await Promise.allSettled(ws.map((w) => w.done))
    return { ...res, error: (e as Error).message }
  }
}

async function createPhase(o: Options, t: CreateTarget, rep: number): Promise<CreateResult> {
  await quiesce(t.syncMnts)
  const label = o.repeat > 1 ? `${t.label} [run ${rep + 1}/${o.repeat}]` : t.label
  const p = await phase(label, t.cluster, t.roles, () => createRun(o, t, rep, label, t.dirs(rep)))
  const r: CreateResult = { ...p.r, machine: p.machine, agents: p.agents }
  if (r.error) {
    log(`  FAILED: ${r.error}`)
    if (t.cluster) r.error += ` (agent logs: ${saveLogs(t.cluster, `${t.key}-${rep + 1}`).join(', ')})`
  } else log(`  ${fmtRate(r.rate!)} files/s (${r.secs!.toFixed(2)} s)`)
  return r
}

/* ---- visibility --------------------------------------------------------------------------- */

function dist(xs: number[]): Dist | undefined {
  if (!xs.length) return undefined
  const s = [...xs].sort((a, b) => a - b)
  const q = (p: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!
  return { n: s.length, median: q(0.5), p90: q(0.9), p99: q(0.99), max: s[s.length - 1]! }
}

function visSide(j: unknown): VisSide {
  const v = j as { ms: Record<string, number[]>; call_ms: Record<string, number[]>; stats: number[]; unseen: number }
  const c = v.ms.create ?? []
  const a = v.ms.append ?? []
  return {
    create: dist(c),
    append: dist(a),
    all: dist([...c, ...a]),
    createCall: dist(v.call_ms.create ?? []),
    appendCall: dist(v.call_ms.append ?? []),
    firstStat: v.stats.filter((n) => n === 1).length,
    maxStats: Math.max(0, ...v.stats),
    unseen: v.unseen,
  }
}

async function visPhase(o: Options, c: BenchCluster, roles: string[]): Promise<VisResult> {
  const [ia, ib] = o.visPair
  const A = c.agents[ia]!
  const B = c.agents[ib]!
  const res: VisResult = { a: `m${ia} (${roles[ia]})`, b: `m${ib} (${roles[ib]})`, rounds: o.rounds }
  await quiesce(c.agents.map((a) => a.mnt))
  try {
    const f = startWorker(o, 'fsync', ['fsync', join(c.dev.dir, 'fsync-probe'), '50', String(o.fileSize)])
    f.child.stdin!.end()
    res.fsync = dist((await f.done).ms as number[])
  } catch (e) {
    if (aborting) throw e
    log(`  the fsync probe failed: ${(e as Error).message}`)
  }
  let p: { r: Record<string, unknown>; machine: PhaseMachine; agents: AgentDelta[] }
  try {
    p = await phase(`visibility ${res.a} -> ${res.b}, ${o.rounds} rounds`, c, roles, async () => {
      const w = startWorker(o, 'visibility', [
        'vis',
        join(A.mnt, 'vis'),
        join(B.mnt, 'vis'),
        String(o.rounds),
        String(o.fileSize),
        String(o.visTimeoutMs),
      ])
      try {
        await w.ready(1)
        const a0 = await readAgents(c, roles)
        w.child.stdin!.write('go\n')
        await w.ready(2)
        res.crossAgents = deltas(a0, await readAgents(c, roles))
        w.child.stdin!.end('go\n')
      } catch {
        w.child.kill('SIGKILL')
      }
      return w.done
    })
  } catch (e) {
    if (aborting) throw e
    res.error = `${(e as Error).message} (agent logs: ${saveLogs(c, 'vis').join(', ')})`
    log(`  FAILED: ${res.error}`)
    return res
  }
  res.machine = p.machine
  res.agents = p.agents
  res.cross = visSide(p.r.cross)
  res.same = visSide(p.r.same)
  res.plain = dist(p.r.plain_ms as number[])
  res.secs = Number(p.r.secs)
  res.cpu = Number(p.r.cpu)
  if (res.cross.unseen)
    res.error = `${res.cross.unseen} of ${o.rounds} changes on ${res.a} were not visible on ${res.b} within ${o.visTimeoutMs} ms`
  log(
    `  cross-mount median ${fmtMs(res.cross.all?.median)} ms, p99 ${fmtMs(res.cross.all?.p99)} ms; ` +
      `plain stat ${fmtMs(res.plain?.median)} ms`,
  )
  return res
}

/* ---- main --------------------------------------------------------------------------------- */

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2))
  if ((await runCmd('python3', ['-c', 'import sys; assert sys.version_info >= (3, 8)'])).code !== 0)
    throw new Error('python3 (>= 3.8) is needed for the I/O workers')
  const tck = await runCmd('getconf', ['CLK_TCK']).catch(() => undefined)
  if (tck && Number(tck.out) > 0) setClockTicks(Number(tck.out))
  // makeClusterDevices() puts the device files under os.tmpdir(), which follows TMPDIR
  process.env.TMPDIR = o.dir
  tempRoot = mkdtempSync(join(o.dir, 'scoutfs-cbench-'))
  workerPath = join(tempRoot, 'worker.py')
  writeFileSync(workerPath, WORKER_PY)
  const env: Env = {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? '?',
    kernel: release(),
    loadStart: loadStr(),
    date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
  }
  log(`temp dir ${tempRoot}; ${env.cpus} CPUs, load average ${env.loadStart}`)
  if (loadavg()[0]! > env.cpus * 0.5)
    log(`warning: the machine is busy (load ${loadavg()[0]!.toFixed(1)} on ${env.cpus} CPUs): figures will be noisy`)

  const creates: CreateResult[] = []
  let vis: VisResult | undefined
  const n = o.mounts
  let fatal: string | undefined
  try {
    const targets: CreateTarget[] = []
    if (o.phases.has('local')) {
      const root = join(tempRoot, 'local')
      mkdirSync(root)
      targets.push({
        key: 'local1',
        label: 'local disk, 1 writer',
        dirs: (r) => [join(root, `one-${r}`)],
        roles: [],
        syncMnts: [],
      })
      targets.push({
        key: 'localN',
        label: `local disk, ${n} writers, ${n} dirs`,
        dirs: (r) => Array.from({ length: n }, (_, i) => join(root, `par${i}-${r}`)),
        roles: [],
        syncMnts: [],
      })
    }
    // both clusters stay up for all the runs, so that the runs can be interleaved
    if (o.phases.has('single')) {
      const { c, roles } = await newCluster(o, 1)
      const m = c.agents[0]!.mnt
      targets.push({
        key: 'single',
        label: 'scoutfs, 1 mount (1-agent cluster)',
        dirs: (r) => [join(m, `one-${r}`)],
        cluster: c,
        roles,
        syncMnts: [m],
      })
    }
    let big: { c: BenchCluster; roles: string[] } | undefined
    if (o.phases.has('client') || o.phases.has('parallel') || o.phases.has('vis')) {
      big = await newCluster(o, n)
      const { c, roles } = big
      const mnts = c.agents.map((a) => a.mnt)
      const ci = Math.min(1, n - 1)
      if (o.phases.has('client'))
        targets.push({
          key: 'client',
          label: `scoutfs, 1 client mount (m${ci}) of the ${n}-agent cluster`,
          dirs: (r) => [join(mnts[ci]!, `client-one-${r}`)],
          cluster: c,
          roles,
          syncMnts: mnts,
        })
      if (o.phases.has('parallel'))
        targets.push({
          key: 'parallel',
          label: `scoutfs, ${n} mounts of the ${n}-agent cluster, 1 writer each`,
          dirs: (r) => mnts.map((m, i) => join(m, `par${i}-${r}`)),
          cluster: c,
          roles,
          syncMnts: mnts,
        })
    }
    // in each run the 1-mount and the N-mount targets go last, one right after the other
    const order: CreateKey[] = ['local1', 'localN', 'client', 'single', 'parallel']
    targets.sort((a, b) => order.indexOf(a.key) - order.indexOf(b.key))
    for (let rep = 0; rep < o.repeat; rep++) for (const t of targets) creates.push(await createPhase(o, t, rep))
    for (const t of targets.filter((x) => x.key === 'single')) await stopCluster(t.cluster!)
    if (big && o.phases.has('vis')) vis = await visPhase(o, big.c, big.roles)
    if (big) await stopCluster(big.c)
  } catch (e) {
    if (interrupted) throw e
    fatal = e instanceof Error ? e.message : String(e)
    log(`benchmark failed: ${fatal}`)
  } finally {
    await cleanup()
  }
  env.loadEnd = loadStr()
  console.log(report(o, env, creates, vis, fatal, stopProblems).join('\n'))
  if (o.json)
    console.log(JSON.stringify({ options: { ...o, phases: [...o.phases] }, env, creates, vis, stopProblems, fatal }))
  const failed =
    fatal !== undefined || creates.some((c) => c.error) || vis?.error !== undefined || stopProblems.length > 0
  return failed ? 1 : 0
}

process.on('SIGINT', () => {
  interrupted = true
  log('interrupted: stopping the agents and cleaning up')
  void cleanup().finally(() => process.exit(130))
})
process.on('SIGTERM', () => {
  interrupted = true
  void cleanup().finally(() => process.exit(143))
})

main().then(
  (code) => process.exit(code),
  async (e: unknown) => {
    if (!interrupted) console.error('benchmark failed:', e instanceof Error ? e.message : e)
    await cleanup()
    process.exit(interrupted ? 130 : 1)
  },
)
