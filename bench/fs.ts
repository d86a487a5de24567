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
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, release, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { killAllAgents, launchAgent, type AgentProcess } from '../node-agent/src/tools/launcher/agent-process.js'
import { makeDevices, type Devices } from '../node-agent/src/tools/launcher/devices.js'
import { SCOUTFS_BIN } from '../node-agent/src/tools/launcher/scoutfs-cli.js'
import { forceUnmount, isMounted, mountsBelow } from '../node-agent/src/fuse/unmount.js'
import { passthroughOptions } from './passthrough.js'

/* ---- options ------------------------------------------------------------------------------ */

interface Options {
  files: number
  fileSize: number
  seqMb: number
  walkFiles: number
  walkChanged: number
  walkWorkers: number
  readdirRepeat: number
  timeoutS: number
  dir: string
  json: boolean
  targets: Set<TargetKey>
  skipWalk: boolean
  mountOptions?: string
}

function envInt(name: string, def: number, min: number, max: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return def
  const v = Number(raw.replace(/_/g, ''))
  if (!Number.isInteger(v) || v < min || v > max) {
    console.error(`${name} must be an integer from ${min} to ${max}, not ${raw}`)
    process.exit(2)
  }
  return v
}

const ALL_TARGETS = ['local', 'ptDefault', 'ptSame', 'scoutfs'] as const
type TargetKey = (typeof ALL_TARGETS)[number]
const LABEL: Record<TargetKey, string> = {
  local: 'local',
  ptDefault: 'pt-default',
  ptSame: 'pt-same',
  scoutfs: 'scoutfs',
}

function parseOptions(argv: string[]): Options {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(`usage: node dist/bench/fs.js [--json]
  env: SCOUTFS_BENCH_FILES (20000)        small files: create+4 KiB write+close, stat, readdir (0: skip)
       SCOUTFS_BENCH_FILE_SIZE (4096)     bytes written per small file
       SCOUTFS_BENCH_SEQ_MB (1024)        sequential write/read file size, in MiB (1 MiB I/Os; 0: skip)
       SCOUTFS_BENCH_WALK_FILES (100000)  files in the walk-inodes filesystem (0: skip the walk)
       SCOUTFS_BENCH_WALK_CHANGED (100)   files touched before walk-inodes / find -newer
       SCOUTFS_BENCH_WALK_WORKERS (4)     parallel processes creating the walk files
       SCOUTFS_BENCH_READDIR_REPEAT (3)   listings of the big directory per target
       SCOUTFS_BENCH_TIMEOUT_S (1800)     per workload and target; a slower run is cut off
       SCOUTFS_BENCH_TARGETS (all)        comma list of local,pt-default,pt-same,scoutfs
       SCOUTFS_BENCH_MOUNT_OPTIONS        scoutfs mount -o options (e.g. item_cache_items=1000000)
       SCOUTFS_BENCH_DIR (os tmpdir)      where temp dirs and devices go
       SCOUTFS_BENCH_JSON=1               also print the results as one JSON line`)
    process.exit(0)
  }
  const targets = new Set<TargetKey>()
  const rawTargets = process.env.SCOUTFS_BENCH_TARGETS
  if (rawTargets) {
    for (const t of rawTargets.split(',').filter(Boolean)) {
      const k = ALL_TARGETS.find((x) => LABEL[x] === t || x === t)
      if (!k) {
        console.error(`SCOUTFS_BENCH_TARGETS: unknown target '${t}' (local, pt-default, pt-same, scoutfs)`)
        process.exit(2)
      }
      targets.add(k)
    }
  } else for (const k of ALL_TARGETS) targets.add(k)
  const walkFiles = envInt('SCOUTFS_BENCH_WALK_FILES', 100_000, 0, 10_000_000)
  return {
    files: envInt('SCOUTFS_BENCH_FILES', 20_000, 0, 10_000_000),
    fileSize: envInt('SCOUTFS_BENCH_FILE_SIZE', 4096, 0, 1 << 30),
    seqMb: envInt('SCOUTFS_BENCH_SEQ_MB', 1024, 0, 1 << 20),
    walkFiles,
    walkChanged: Math.min(walkFiles, envInt('SCOUTFS_BENCH_WALK_CHANGED', 100, 1, 1_000_000)),
    walkWorkers: envInt('SCOUTFS_BENCH_WALK_WORKERS', 4, 1, 64),
    readdirRepeat: envInt('SCOUTFS_BENCH_READDIR_REPEAT', 3, 1, 1000),
    timeoutS: envInt('SCOUTFS_BENCH_TIMEOUT_S', 1800, 1, 86400 * 7),
    dir: process.env.SCOUTFS_BENCH_DIR || tmpdir(),
    json: argv.includes('--json') || process.env.SCOUTFS_BENCH_JSON === '1',
    targets,
    skipWalk: walkFiles === 0 || !targets.has('scoutfs'),
    mountOptions: process.env.SCOUTFS_BENCH_MOUNT_OPTIONS || undefined,
  }
}

/* ---- the python worker that does the timed I/O -------------------------------------------- */

const WORKER_PY = String.raw`
import os, sys, json, time, struct, random
MiB = 1 << 20
def out(**k):
    sys.stdout.write(json.dumps(k) + '\n'); sys.stdout.flush()
class Progress:
    def __init__(self):
        self.t0 = time.perf_counter(); self.last = self.t0
    def tick(self, done):
        now = time.perf_counter()
        if now - self.last >= 2:
            self.last = now; out(progress=done, secs=now - self.t0)
def pattern():
    return random.Random(0x5c0f75).randbytes(MiB)
def fail(op, path, e, done, retry=None):
    # an I/O error: say which op on which path, what exists right after, and whether a retry works
    after = {}
    for name, p in (('path', path), ('parent', os.path.dirname(path))):
        try:
            os.stat(p); after[name] = 'exists'
        except OSError as e2:
            after[name] = e2.strerror
    if retry:
        try:
            retry(); after['retry'] = 'ok'
        except OSError as e3:
            after['retry'] = e3.strerror
    out(error='%s %s: %s after %d done; then %s' % (op, path, e.strerror, done, json.dumps(after)), done=done, after=after)
    sys.exit(1)
cmd, a = sys.argv[1], sys.argv[2:]
if cmd == 'create':
    d, n, size = a[0], int(a[1]), int(a[2])
    data = b'\xa5' * size
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    p = Progress(); t0 = time.perf_counter()
    for i in range(n):
        path = '%s/f%07d' % (d, i)
        try:
            fd = os.open(path, flags, 0o644)
            try:
                if size and os.write(fd, data) != size: raise SystemExit('short write')
            finally:
                os.close(fd)
        except OSError as e:
            fail('create', path, e, i)
        if i & 63 == 0: p.tick(i)
    out(ops=n, secs=time.perf_counter() - t0)
elif cmd == 'stat':
    d, n, size = a[0], int(a[1]), int(a[2])
    bad = 0; p = Progress(); t0 = time.perf_counter()
    for i in range(n):
        path = '%s/f%07d' % (d, i)
        try:
            if os.stat(path).st_size != size: bad += 1
        except OSError as e:
            fail('stat', path, e, i)
        if i & 63 == 0: p.tick(i)
    out(ops=n, secs=time.perf_counter() - t0, bad=bad)
elif cmd == 'readdir':
    d, n, rep = a[0], int(a[1]), int(a[2])
    t0 = time.perf_counter(); got = []
    for _ in range(rep):
        got.append(len(os.listdir(d)))
    secs = time.perf_counter() - t0
    out(ops=sum(got), secs=secs, entries=got, bad=sum(1 for g in got if g != n))
elif cmd == 'seqwrite':
    path, mb = a[0], int(a[1])
    buf = bytearray(pattern())
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    p = Progress(); t0 = time.perf_counter()
    for i in range(mb):
        struct.pack_into('<Q', buf, 0, i)
        mv = memoryview(buf); done = 0
        while done < MiB:
            done += os.write(fd, mv[done:])
        p.tick(i)
    t1 = time.perf_counter(); os.fsync(fd); t2 = time.perf_counter(); os.close(fd); t3 = time.perf_counter()
    out(bytes=mb * MiB, write_secs=(t1 - t0) + (t3 - t2), fsync_secs=t2 - t1)
elif cmd == 'seqread':
    path, mb = a[0], int(a[1])
    pat = pattern(); head, tail = pat[8:4096], pat[-4096:]
    buf = bytearray(MiB); mv = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    total = 0; bad = 0; i = 0; p = Progress(); t0 = time.perf_counter()
    while True:
        got = 0
        while got < MiB:
            n = os.readv(fd, [mv[got:]])
            if n == 0: break
            got += n
        if got == 0: break
        total += got
        if got != MiB or struct.unpack_from('<Q', buf, 0)[0] != i or buf[8:4096] != head or buf[-4096:] != tail: bad += 1
        i += 1
        p.tick(i)
    secs = time.perf_counter() - t0
    os.close(fd)
    out(bytes=total, secs=secs, bad=bad + (0 if total == mb * MiB else 1))
elif cmd == 'mknod':
    # walk setup: directories [d0, d1) of up to per files each, the files numbered globally < total
    base, d0, d1, per, total = a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4])
    n = 0; p = Progress(); t0 = time.perf_counter()
    for d in range(d0, d1):
        dp = '%s/d%05d' % (base, d)
        try:
            os.mkdir(dp)
        except OSError as e:
            fail('mkdir', dp, e, n)
        for j in range(per):
            if d * per + j >= total: break
            path = '%s/f%05d' % (dp, j)
            try:
                os.mknod(path, 0o644 | 0o100000)
            except OSError as e:
                fail('mknod', path, e, n, lambda: os.mknod(path, 0o644 | 0o100000))
            n += 1
            if n & 63 == 0: p.tick(n)
    out(ops=n, secs=time.perf_counter() - t0)
elif cmd == 'touch':
    base, per, total, count = a[0], int(a[1]), int(a[2]), int(a[3])
    paths = []; inos = []
    for k in range(count):
        g = k * total // count
        path = '%s/d%05d/f%05d' % (base, g // per, g % per)
        os.utime(path)
        paths.append(path); inos.append(os.stat(path).st_ino)
    out(paths=paths, inos=inos)
else:
    raise SystemExit('unknown worker command ' + cmd)
`

/* ---- child processes ---------------------------------------------------------------------- */

interface RunResult {
  code: number | null
  signal: string | null
  stdout: string
  stderr: string
  ms: number
  timedOut: boolean
  /** JSON lines the child printed */
  lines: Array<Record<string, unknown>>
}

const children = new Set<ChildProcess>()
let aborting = false

function run(
  cmd: string,
  args: string[],
  o: { timeoutMs?: number; onLine?: (l: Record<string, unknown>) => void; cwd?: string } = {},
): Promise<RunResult> {
  if (aborting) return Promise.reject(new Error('benchmark is being stopped'))
  return new Promise((resolve, reject) => {
    const t0 = performance.now()
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], cwd: o.cwd })
    children.add(child)
    let stdout = ''
    let stderr = ''
    let partial = ''
    const lines: Array<Record<string, unknown>> = []
    let timedOut = false
    const timer = o.timeoutMs
      ? setTimeout(() => {
          timedOut = true
          child.kill('SIGKILL')
        }, o.timeoutMs)
      : undefined
    child.stdout!.on('data', (c: Buffer) => {
      const s = c.toString()
      if (stdout.length < 64 << 20) stdout += s
      partial += s
      let i: number
      while ((i = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, i)
        partial = partial.slice(i + 1)
        if (!line.startsWith('{')) continue
        try {
          const j = JSON.parse(line) as Record<string, unknown>
          lines.push(j)
          o.onLine?.(j)
        } catch {
          /* not a JSON line */
        }
      }
    })
    child.stderr!.on('data', (c: Buffer) => {
      if (stderr.length < 1 << 20) stderr += c.toString()
    })
    child.once('error', (e) => {
      if (timer) clearTimeout(timer)
      children.delete(child)
      reject(e)
    })
    child.once('close', (code, signal) => {
      if (timer) clearTimeout(timer)
      children.delete(child)
      resolve({ code, signal, stdout, stderr, ms: performance.now() - t0, timedOut, lines })
    })
  })
}

async function mustRun(cmd: string, args: string[], what: string, timeoutMs = 600_000): Promise<RunResult> {
  const r = await run(cmd, args, { timeoutMs })
  if (r.code !== 0)
    throw new Error(`${what} failed (code ${r.code}${r.signal ? ', ' + r.signal : ''}): ${r.stderr.trim()}`)
  return r
}

const scoutfsCli = (...args: string[]): Promise<RunResult> =>
  mustRun(process.execPath, [SCOUTFS_BIN, ...args], `scoutfs ${args.join(' ')}`)

function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`)
}

/* ---- targets ------------------------------------------------------------------------------ */

interface Target {
  key: TargetKey
  /** where the workloads run */
  work: string
  /** the mountpoint (the local dir for "local") */
  mnt: string
  /** FUSE -o options, for the report */
  options: string
  teardown(): Promise<void>
  /** scoutfs: keep the agent's log in a file outside the temp dir; returns its path */
  saveLog?(why: string): string
}

const mountsToClean = new Set<string>()
const passthroughs = new Set<ChildProcess>()

async function startPassthrough(root: string, key: 'ptSame' | 'ptDefault'): Promise<Target> {
  const mode = key === 'ptSame' ? 'same' : 'default'
  const backing = join(root, `${key}-backing`)
  const mnt = join(root, `${key}-mnt`)
  mkdirSync(backing, { recursive: true })
  mkdirSync(mnt, { recursive: true })
  mountsToClean.add(mnt)
  const child = spawn(
    process.execPath,
    [join(__dirname, 'passthrough.js'), '--backing', backing, '--mnt', mnt, '--options', mode],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  passthroughs.add(child)
  let out = ''
  let err = ''
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr!.on('data', (c: Buffer) => {
    if (err.length < 1 << 20) err += c.toString()
  })
  const exited = new Promise<void>((r) => child.once('exit', () => r()))
  const deadline = Date.now() + 30_000
  while (!/"mounted"/.test(out)) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`passthrough (${mode}) exited: ${err}`)
    if (Date.now() > deadline) throw new Error(`passthrough (${mode}) did not mount in 30 s: ${err}`)
    await new Promise((r) => setTimeout(r, 50))
  }
  const options = (JSON.parse(out.split('\n')[0]!) as { options: string }).options
  return {
    key,
    mnt,
    work: join(mnt, 'bench'),
    options: options || '(none: fuse-native defaults)',
    async teardown() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM')
      const ok = await Promise.race([
        exited.then(() => true),
        new Promise<boolean>((r) => setTimeout(() => r(false), 15_000)),
      ])
      if (!ok) {
        child.kill('SIGKILL')
        await exited
      }
      passthroughs.delete(child)
      if (await isMounted(mnt)) await forceUnmount(mnt)
      mountsToClean.delete(mnt)
    },
  }
}

const agentsStarted = new Set<AgentProcess>()
/** device directories (under os.tmpdir()) of targets not torn down yet */
const devices = new Set<Devices>()
const AGENT_STOP_MS = 60_000

async function startScoutfs(o: Options, metaBytes: number, dataBytes: number): Promise<{ t: Target; dev: Devices }> {
  const dev = await makeDevices({ prefix: 'scoutfs-bench-', metaBytes, dataBytes, quorumSlots: 1 })
  devices.add(dev)
  const mnt = join(dev.dir, 'mnt')
  const agent = await launchAgent(
    { meta: dev.meta, data: dev.data, mnt, logLevel: 'info', options: o.mountOptions },
    30_000,
  )
  agentsStarted.add(agent)
  mountsToClean.add(agent.mnt)
  return {
    dev,
    t: {
      key: 'scoutfs',
      mnt: agent.mnt,
      work: join(agent.mnt, 'bench'),
      options:
        'FuseAdapter.optionList() (as pt-same, fsname/subtype scoutfs)' +
        (o.mountOptions ? `; scoutfs mount -o ${o.mountOptions}` : ''),
      saveLog(why: string): string {
        const path = join(o.dir, `scoutfs-bench-agent-${process.pid}-${why}.log`)
        writeFileSync(path, agent.log())
        return path
      },
      async teardown() {
        agentsStarted.delete(agent)
        try {
          const r = await agent.stop(AGENT_STOP_MS)
          if (!r.inTime)
            throw new Error(`agent for ${agent.mnt} did not stop in ${AGENT_STOP_MS / 1000} s; log:\n${agent.log()}`)
          if (r.code !== 0) log(`scoutfs agent exited with code ${r.code}`)
        } finally {
          mountsToClean.delete(agent.mnt)
          devices.delete(dev)
          dev.remove()
        }
      },
    },
  }
}

/* ---- cleanup ------------------------------------------------------------------------------ */

let cleaning: Promise<void> | undefined
let tempRoot: string | undefined

function cleanup(): Promise<void> {
  if (!cleaning) cleaning = doCleanup()
  return cleaning
}

async function doCleanup(): Promise<void> {
  aborting = true
  for (const c of children) c.kill('SIGKILL')
  for (const c of passthroughs) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM')
  const deadline = Date.now() + 10_000
  while ([...passthroughs].some((c) => c.exitCode === null && c.signalCode === null) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 100))
  for (const c of passthroughs) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  for (const a of agentsStarted) await a.kill().catch(() => undefined)
  await killAllAgents()
  for (const m of mountsToClean) if (await isMounted(m)) await forceUnmount(m)
  for (const d of devices) if (!(await mountsBelow(d.dir)).length) d.remove()
  if (tempRoot) {
    const still = await mountsBelow(tempRoot)
    if (still.length) log(`not removing ${tempRoot}: still mounted: ${still.join(', ')}`)
    else {
      log(`removing ${tempRoot}`)
      rmSync(tempRoot, { recursive: true, force: true })
    }
  }
}

/* ---- measurement -------------------------------------------------------------------------- */

interface Cell {
  /** ops/s or MB/s */
  rate?: number
  secs?: number
  error?: string
  note?: string
}

type WorkloadKey = 'create' | 'stat' | 'readdir' | 'seqwrite' | 'seqwriteFsync' | 'seqread'
const WORKLOADS: Array<{ key: WorkloadKey; label: string; unit: string }> = [
  { key: 'create', label: 'create+write+close', unit: 'files/s' },
  { key: 'stat', label: 'stat', unit: 'stats/s' },
  { key: 'readdir', label: 'readdir', unit: 'entries/s' },
  { key: 'seqwrite', label: 'seq write', unit: 'MB/s' },
  { key: 'seqwriteFsync', label: 'seq write+fsync', unit: 'MB/s' },
  { key: 'seqread', label: 'seq read (cold)', unit: 'MB/s' },
]

const results = new Map<WorkloadKey, Map<TargetKey, Cell>>()
const setCell = (w: WorkloadKey, t: TargetKey, c: Cell): void => {
  if (!results.has(w)) results.set(w, new Map())
  results.get(w)!.set(t, c)
}

let workerPath = ''
const MB = 1e6
const MiB = 1 << 20

/** run one worker command, with progress every 15 s; returns its final JSON line */
async function worker(o: Options, label: string, args: string[]): Promise<Record<string, unknown>> {
  let last = performance.now()
  let lastProgress: Record<string, unknown> | undefined
  const r = await run('python3', [workerPath, ...args], {
    timeoutMs: o.timeoutS * 1000,
    cwd: tempRoot,
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

/** untimed: flush the page cache's dirty data and scoutfs's open transaction */
async function quiesce(t: Target): Promise<void> {
  await mustRun('sync', [], 'sync')
  if (t.key === 'scoutfs') await scoutfsCli('sync', t.mnt)
}

let dropCachesOk: boolean | undefined
async function dropCaches(): Promise<boolean> {
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

async function measure(w: WorkloadKey, t: Target, fn: () => Promise<Cell>): Promise<Cell> {
  log(`${WORKLOADS.find((x) => x.key === w)!.label} on ${LABEL[t.key]}...`)
  let c: Cell
  try {
    c = await fn()
  } catch (e) {
    if (aborting) throw e
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

async function runWorkloads(o: Options, targets: Target[]): Promise<void> {
  const small = (t: Target): string => join(t.work, 'small')
  const big = (t: Target): string => join(t.work, 'seq.dat')
  for (const t of targets) {
    const r = await run('mkdir', ['-p', small(t)])
    if (r.code !== 0) throw new Error(`mkdir on ${LABEL[t.key]} failed: ${r.stderr}`)
  }
  if (o.files > 0) await runSmallFiles(o, targets, small)
  if (o.seqMb > 0) await runSequential(o, targets, big)
}

async function runSmallFiles(o: Options, targets: Target[], small: (t: Target) => string): Promise<void> {
  const failed = new Set<TargetKey>()

  for (const t of targets) {
    await quiesce(t)
    const c = await measure('create', t, async () => {
      const r = await worker(o, `${LABEL[t.key]} create`, ['create', small(t), String(o.files), String(o.fileSize)])
      return { rate: Number(r.ops) / Number(r.secs), secs: Number(r.secs) }
    })
    if (c.error) failed.add(t.key)
  }
  for (const t of targets) {
    await quiesce(t)
    if (failed.has(t.key)) {
      setCell('stat', t.key, { error: 'create failed' })
      setCell('readdir', t.key, { error: 'create failed' })
      continue
    }
    await measure('stat', t, async () => {
      const r = await worker(o, `${LABEL[t.key]} stat`, ['stat', small(t), String(o.files), String(o.fileSize)])
      if (Number(r.bad)) throw new Error(`${r.bad} files had the wrong size`)
      return { rate: Number(r.ops) / Number(r.secs), secs: Number(r.secs) }
    })
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

async function runSequential(o: Options, targets: Target[], big: (t: Target) => string): Promise<void> {
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
    if (t.key === 'scoutfs') await scoutfsCli('sync', t.mnt)
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

interface WalkResult {
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

async function runWalk(o: Options, root: string): Promise<WalkResult> {
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
    if (aborting) throw e
    res.error = `${(e as Error).message} (agent log: ${t.saveLog!('walk')})`
    log(`walk FAILED: ${res.error}`)
  } finally {
    await t.teardown()
  }
  return res
}

/* ---- report ------------------------------------------------------------------------------- */

const fmtInt = (n: number): string => Math.round(n).toLocaleString('en-US')
function fmtRate(n: number): string {
  if (!Number.isFinite(n)) return '-'
  if (n >= 100) return fmtInt(n)
  return n.toPrecision(3)
}
function fmtRatio(r: number | undefined): string {
  if (r === undefined || !Number.isFinite(r)) return '-'
  return r >= 10 ? `${r.toFixed(0)}x` : `${r.toFixed(2)}x`
}

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
  if (hasS) for (const k of ['ptSame', 'ptDefault', 'local'] as const) if (o.targets.has(k)) head.push(`s/${LABEL[k]}`)
  const rows: string[][] = []
  for (const w of WORKLOADS) {
    const row = [w.label, w.unit]
    for (const k of keys) {
      const c = results.get(w.key)?.get(k)
      row.push(!c ? '-' : c.error ? 'FAILED' : fmtRate(c.rate!))
    }
    if (hasS)
      for (const k of ['ptSame', 'ptDefault', 'local'] as const)
        if (o.targets.has(k)) row.push(fmtRatio(ratio(w.key, k)))
    rows.push(row)
  }
  const out: string[] = []
  out.push('')
  out.push(
    `scoutfs filesystem benchmark: ${fmtInt(o.files)} files of ${fmtInt(o.fileSize)} B, ` +
      `${fmtInt(o.seqMb)} MiB sequential (1 MiB I/Os), walk over ${fmtInt(o.walkFiles)} files`,
  )
  out.push(`(${env.cpus} CPUs, kernel ${env.kernel}, load average ${env.loadStart} at start, ${env.loadEnd} at end)`)
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
    out.push('targets (scoutfs against the passthrough with the same options):')
    const check = (what: string, r: number | undefined, min: number): void => {
      const v = r === undefined ? 'NOT MEASURED' : r >= min ? 'met' : 'NOT met'
      out.push(`  ${what.padEnd(36)} >= ${String(min).padEnd(4)} ${fmtRatio(r).padStart(7)}  ${v}`)
    }
    if (o.files > 0) {
      check('small files (create+write+close)', ratio('create', 'ptSame'), 0.7)
      check('stat', ratio('stat', 'ptSame'), 0.7)
    }
    if (o.seqMb > 0) {
      check('sequential write', ratio('seqwrite', 'ptSame'), 0.5)
      check('sequential read', ratio('seqread', 'ptSame'), 0.5)
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
  tempRoot = mkdtempSync(join(o.dir, 'scoutfs-bench-'))
  workerPath = join(tempRoot, 'worker.py')
  writeFileSync(workerPath, WORKER_PY)
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
    const mainRun = o.files > 0 || o.seqMb > 0
    if (mainRun && o.targets.has('local')) {
      const dir = join(tempRoot, 'local')
      mkdirSync(dir)
      targets.push({ key: 'local', mnt: dir, work: join(dir, 'bench'), options: '(no FUSE)', teardown: async () => {} })
    }
    if (mainRun && o.targets.has('ptDefault')) targets.push(await startPassthrough(tempRoot, 'ptDefault'))
    if (mainRun && o.targets.has('ptSame')) targets.push(await startPassthrough(tempRoot, 'ptSame'))
    if (mainRun && o.targets.has('scoutfs')) {
      const smallBytes = o.files * Math.max(4096, Math.ceil(o.fileSize / 4096) * 4096)
      const data = Math.ceil((o.seqMb * MiB + smallBytes) * 1.5) + 2 ** 30
      const { t } = await startScoutfs(o, 4 * 2 ** 30, data)
      targets.push(t)
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
