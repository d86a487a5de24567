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
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { BIN, forceUnmount, stopAllAgents, type Agent } from '../test/helpers/agent.js'
import { agentStatus, makeClusterDevices, startCluster, type Cluster } from '../test/helpers/cluster.js'

/* ---- options ------------------------------------------------------------------------------ */

const ALL_PHASES = ['local', 'single', 'client', 'parallel', 'vis'] as const
type Phase = (typeof ALL_PHASES)[number]

interface Options {
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

function parseOptions(argv: string[]): Options {
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

/* ---- the python worker that does the timed I/O -------------------------------------------- */

const WORKER_PY = String.raw`
import os, sys, json, time
def out(**k):
    sys.stdout.write(json.dumps(k) + '\n'); sys.stdout.flush()
def cpu():
    t = os.times(); return t.user + t.system
def die(msg):
    out(error=msg); sys.exit(1)
cmd, a = sys.argv[1], sys.argv[2:]
if cmd == 'create':
    # mkdir DIR (untimed), say ready, wait for "go" on stdin, then create N files of SIZE bytes
    d, n, size = a[0], int(a[1]), int(a[2])
    try:
        os.mkdir(d)
    except OSError as e:
        die('mkdir %s: %s' % (d, e.strerror))
    data = b'\x5c' * size
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    out(ready=True)
    if sys.stdin.readline().strip() != 'go': die('no go')
    c0 = cpu(); t0 = time.monotonic(); last = t0
    for i in range(n):
        path = '%s/f%07d' % (d, i)
        try:
            fd = os.open(path, flags, 0o644)
            try:
                if size and os.write(fd, data) != size: die('short write to %s' % path)
            finally:
                os.close(fd)
        except OSError as e:
            die('create %s: %s after %d files' % (path, e.strerror, i))
        if i & 63 == 0:
            now = time.monotonic()
            if now - last >= 2:
                last = now; out(progress=i, secs=now - t0)
    t1 = time.monotonic()
    # time.monotonic() is CLOCK_MONOTONIC: comparable between the parallel writers
    out(ops=n, t0=t0, t1=t1, cpu=cpu() - c0)
elif cmd == 'vis':
    # A and B: the same new directory seen through two mounts
    a_dir, b_dir, k, size, timeout = a[0], a[1], int(a[2]), int(a[3]), float(a[4]) / 1000
    pc = time.perf_counter
    def poll(path, want_size, t0):
        # stat path until it exists (want_size None) or has want_size bytes; (secs from t0, stats)
        n = 0
        while True:
            try:
                st = os.stat(path); n += 1
                if want_size is None or st.st_size == want_size: return pc() - t0, n
            except FileNotFoundError:
                n += 1
            if pc() - t0 > timeout: return None, n
    def settle(path, want_size=None):
        s, _ = poll(path, want_size, pc())
        if s is None: die('%s did not show up within the timeout (setup)' % path)
    def rounds(a_dir, b_dir, tag):
        # k rounds, alternately: create a file on A; append SIZE bytes to a file open on A
        data = b'v' * max(size, 1)
        fd = os.open('%s/%s-append' % (a_dir, tag), os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o644)
        settle('%s/%s-append' % (b_dir, tag), 0)
        res = {'create': [], 'append': []}; calls = {'create': [], 'append': []}; stats = []; unseen = 0
        length = 0
        for i in range(k):
            if i % 2 == 0:
                kind = 'create'; name = '%s-c%06d' % (tag, i)
                tc = pc()
                f = os.open('%s/%s' % (a_dir, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                t0 = pc()
                s, n = poll('%s/%s' % (b_dir, name), None, t0)
                os.close(f)
            else:
                kind = 'append'
                tc = pc()
                if os.write(fd, data) != len(data): die('short append')
                t0 = pc()
                length += len(data)
                s, n = poll('%s/%s-append' % (b_dir, tag), length, t0)
            calls[kind].append((t0 - tc) * 1000); stats.append(n)
            if s is None: unseen += 1
            else: res[kind].append(s * 1000)
        os.close(fd)
        return dict(ms=res, call_ms=calls, stats=stats, unseen=unseen)
    os.mkdir(a_dir)
    settle(b_dir)
    still_a, still_b = a_dir + '/unchanged', b_dir + '/unchanged'
    with open(still_a, 'wb') as f: f.write(b'u' * 100)
    settle(still_b, 100)
    c0 = cpu(); w0 = pc()
    # marks around the cross-mount rounds, so that their lock traffic can be read apart
    out(ready=True)
    if sys.stdin.readline().strip() != 'go': die('no go')
    cross = rounds(a_dir, b_dir, 'x')
    out(ready=True)
    if sys.stdin.readline().strip() != 'go': die('no go')
    same = rounds(a_dir, a_dir, 's')
    # the no-invalidation baseline: a plain stat on B of a file nobody changes
    for _ in range(3): os.stat(still_b)
    plain = []
    for _ in range(k):
        t0 = pc(); os.stat(still_b); plain.append((pc() - t0) * 1000)
    out(cross=cross, same=same, plain_ms=plain, secs=pc() - w0, cpu=cpu() - c0)
elif cmd == 'fsync':
    # the floor of a commit: one FILE_SIZE write + fsync of a file on the local disk, k times
    path, k, size = a[0], int(a[1]), int(a[2])
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644); data = b'f' * max(size, 1); ms = []
    for i in range(k):
        t0 = time.perf_counter(); os.pwrite(fd, data, i * len(data)); os.fsync(fd); ms.append((time.perf_counter() - t0) * 1000)
    os.close(fd); os.unlink(path)
    out(ms=ms)
else:
    die('unknown worker command ' + cmd)
`

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
  for (const m of mnts) await mustRun(process.execPath, [BIN, 'sync', m])
}

/* ---- machine and agent readings ----------------------------------------------------------- */

let clkTck = 100

/** CPU seconds (user + system) a process has used, from /proc/PID/stat */
function procCpu(pid: number | undefined): number | undefined {
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
function machineCpu(): { busy: number; total: number } {
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

interface AgentReading {
  label: string
  role: string
  metrics?: MetricValues
  cpu?: number
}

interface AgentDelta {
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

interface PhaseMachine {
  loadBefore: string
  loadAfter: string
  /** fraction of all CPUs busy (everyone's work) over the phase */
  busy: number
  wallSecs: number
}

async function readAgents(c: Cluster | undefined, roles: string[]): Promise<AgentReading[]> {
  if (!c) return []
  return Promise.all(
    c.agents.map(async (a, i) => ({
      label: `m${i}`,
      role: roles[i] ?? '?',
      metrics: await scrape(a.metricsAddr),
      cpu: procCpu(a.proc.pid),
    })),
  )
}

function deltas(before: AgentReading[], after: AgentReading[]): AgentDelta[] {
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

const loadStr = (): string =>
  loadavg()
    .map((x) => x.toFixed(2))
    .join(' ')

/** run `fn` as a phase: machine load and CPU busy, and each agent's counters, around it */
async function phase<T>(
  name: string,
  c: Cluster | undefined,
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

const clusters = new Set<Cluster>()
const stopProblems: string[] = []

async function newCluster(o: Options, n: number): Promise<{ c: Cluster; roles: string[] }> {
  const dataBytes = Math.max(2 ** 30, Math.ceil(n * o.files * Math.max(4096, o.fileSize) * 2))
  const dev = await makeClusterDevices({ metaBytes: 2 ** 30, dataBytes, slots: Math.max(n, 1) })
  log(`starting a ${n}-agent cluster (server ${dev.serverAddr}) in ${dev.dir}`)
  const c = await startCluster(n, { dev, options: o.mountOptions, metrics: true })
  clusters.add(c)
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

function saveLogs(c: Cluster, why: string): string[] {
  return c.agents.map((a, i) => {
    const p = join(tmpdir(), `scoutfs-bench-cluster-${process.pid}-${why}-m${i}.log`)
    writeFileSync(p, a.log())
    return p
  })
}

/** SIGTERM the clients, then the server; an agent that exits non-zero is a failed run */
async function stopCluster(c: Cluster): Promise<void> {
  clusters.delete(c)
  const order = [...c.agents.slice(1), c.agents[0]!]
  for (const a of order) {
    try {
      const code = await a.stop()
      if (code !== 0) stopProblems.push(`agent ${a.mnt} exited with code ${code}; log tail: ${tail(a)}`)
    } catch (e) {
      stopProblems.push(`stopping ${a.mnt}: ${(e as Error).message.split('\n')[0]}`)
    }
  }
  if (!isMountedBelow(c.dev.dir)) rmSync(c.dev.dir, { recursive: true, force: true })
}

const tail = (a: Agent): string => a.log().trim().split('\n').slice(-3).join(' | ')

function isMountedBelow(dir: string): boolean {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .some((l) => (l.split(' ')[1] ?? '').startsWith(dir + '/'))
}

/* ---- cleanup ------------------------------------------------------------------------------ */

let cleaning: Promise<void> | undefined
function cleanup(): Promise<void> {
  cleaning ??= (async () => {
    aborting = true
    for (const c of children) c.kill('SIGKILL')
    for (const c of [...clusters]) for (const a of c.agents) await a.kill9().catch(() => undefined)
    await stopAllAgents().catch(() => undefined)
    for (const c of clusters) for (const a of c.agents) await forceUnmount(a.mnt).catch(() => undefined)
    if (tempRoot) {
      if (isMountedBelow(tempRoot)) log(`not removing ${tempRoot}: something is still mounted below it`)
      else rmSync(tempRoot, { recursive: true, force: true })
    }
  })()
  return cleaning
}

/* ---- small-file creates ------------------------------------------------------------------- */

type CreateKey = 'local1' | 'localN' | 'single' | 'client' | 'parallel'

interface CreateTarget {
  key: CreateKey
  label: string
  /** the writers' directories in run `rep` (one per writer, made by the writer) */
  dirs(rep: number): string[]
  cluster?: Cluster
  roles: string[]
  /** mounts to `scoutfs sync` before a run */
  syncMnts: string[]
}

interface CreateResult {
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

interface Dist {
  n: number
  median: number
  p90: number
  p99: number
  max: number
}

function dist(xs: number[]): Dist | undefined {
  if (!xs.length) return undefined
  const s = [...xs].sort((a, b) => a - b)
  const q = (p: number): number => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))]!
  return { n: s.length, median: q(0.5), p90: q(0.9), p99: q(0.99), max: s[s.length - 1]! }
}

interface VisSide {
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

interface VisResult {
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

async function visPhase(o: Options, c: Cluster, roles: string[]): Promise<VisResult> {
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

/* ---- report ------------------------------------------------------------------------------- */

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US')
function fmtRate(n: number | undefined): string {
  if (n === undefined || !Number.isFinite(n)) return '-'
  return n >= 100 ? fmtInt(n) : n.toPrecision(3)
}
function fmtRatio(r: number | undefined): string {
  if (r === undefined || !Number.isFinite(r)) return '-'
  return r >= 10 ? `${r.toFixed(0)}x` : `${r.toFixed(2)}x`
}
function fmtMs(x: number | undefined): string {
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

interface Env {
  cpus: number
  cpuModel: string
  kernel: string
  loadStart: string
  loadEnd?: string
  date: string
}

function report(
  o: Options,
  env: Env,
  creates: CreateResult[],
  vis: VisResult | undefined,
  fatal: string | undefined,
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

/* ---- main --------------------------------------------------------------------------------- */

async function main(): Promise<number> {
  const o = parseOptions(process.argv.slice(2))
  if ((await runCmd('python3', ['-c', 'import sys; assert sys.version_info >= (3, 8)'])).code !== 0)
    throw new Error('python3 (>= 3.8) is needed for the I/O workers')
  const tck = await runCmd('getconf', ['CLK_TCK']).catch(() => undefined)
  if (tck && Number(tck.out) > 0) clkTck = Number(tck.out)
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
    let big: { c: Cluster; roles: string[] } | undefined
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
  console.log(report(o, env, creates, vis, fatal).join('\n'))
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
