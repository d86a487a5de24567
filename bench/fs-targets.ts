/*
 * Targets of the filesystem benchmark (bench/fs.ts): child processes with timeouts, the
 * fuse-native passthrough and scoutfs mounts, and the cleanup of every mount, process and
 * device at the end, on failure and on Ctrl-C.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { killAllAgents, launchAgent, type AgentProcess } from '../node-agent/src/tools/launcher/agent-process.js'
import { makeDevices, type Devices } from '../node-agent/src/tools/launcher/devices.js'
import { SCOUTFS_BIN } from '../node-agent/src/tools/launcher/scoutfs-cli.js'
import { forceUnmount, isMounted, mountsBelow } from '../node-agent/src/fuse/unmount.js'
import { type Options, type TargetKey } from './fs-options.js'

/* ---- child processes ---------------------------------------------------------------------- */

export interface RunResult {
  code: number | null
  signal: string | null
  stdout: string
  stderr: string
  ms: number
  timedOut: boolean
  /** JSON lines the child printed */
  lines: Array<Record<string, unknown>>
}

export const children = new Set<ChildProcess>()
let aborting = false

/** Whether cleanup() has begun (a failing child is then expected, not an error). */
export function isAborting(): boolean {
  return aborting
}

export function run(
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

export async function mustRun(cmd: string, args: string[], what: string, timeoutMs = 600_000): Promise<RunResult> {
  const r = await run(cmd, args, { timeoutMs })
  if (r.code !== 0)
    throw new Error(`${what} failed (code ${r.code}${r.signal ? ', ' + r.signal : ''}): ${r.stderr.trim()}`)
  return r
}

export const scoutfsCli = (...args: string[]): Promise<RunResult> =>
  mustRun(process.execPath, [SCOUTFS_BIN, ...args], `scoutfs ${args.join(' ')}`)

export function log(msg: string): void {
  process.stderr.write(`[${new Date().toISOString().slice(11, 19)}] ${msg}\n`)
}

/* ---- targets ------------------------------------------------------------------------------ */

export interface Target {
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

export const mountsToClean = new Set<string>()
export const passthroughs = new Set<ChildProcess>()

export async function startPassthrough(root: string, key: 'ptSame' | 'ptDefault'): Promise<Target> {
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

/**
 * A child process that allocates `mb` MiB and touches every page, then holds it until killed
 * (cleanup() kills it with the other children): the page cache is left what remains.
 */
export async function holdMemory(mb: number): Promise<void> {
  const src =
    'const k=[];for(let i=0;i<' +
    mb +
    ';i+=64)k.push(Buffer.alloc(Math.min(64,' +
    mb +
    '-i)*1048576,1));console.log("held");setInterval(()=>k.length,1e9)'
  const child = spawn(process.execPath, ['-e', src], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.add(child)
  let out = ''
  let err = ''
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()))
  child.stderr!.on('data', (c: Buffer) => (err += c.toString()))
  while (!out.includes('held')) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`the memory holder (${mb} MiB) exited: ${err.trim() || child.signalCode}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

export const agentsStarted = new Set<AgentProcess>()
/** device directories (under os.tmpdir()) of targets not torn down yet */
export const devices = new Set<Devices>()
export const AGENT_STOP_MS = 60_000

export async function startScoutfs(
  o: Options,
  metaBytes: number,
  dataBytes: number,
  key: 'scoutfs' | 'scoutfsFn' = 'scoutfs',
): Promise<{ t: Target; dev: Devices }> {
  // scoutfs: the low-level libfuse 3 frontend; scoutfs-fn: the fuse-native one
  const frontend = key === 'scoutfs' ? 'lowlevel' : 'fuse-native'
  const mountOptions = [o.mountOptions, `frontend=${frontend}`].filter(Boolean).join(',')
  const dev = await makeDevices({ prefix: 'scoutfs-bench-', metaBytes, dataBytes, quorumSlots: 1 })
  devices.add(dev)
  const mnt = join(dev.dir, 'mnt')
  const agent = await launchAgent(
    { meta: dev.meta, data: dev.data, mnt, logLevel: 'info', options: mountOptions },
    30_000,
  )
  agentsStarted.add(agent)
  mountsToClean.add(agent.mnt)
  return {
    dev,
    t: {
      key,
      mnt: agent.mnt,
      work: join(agent.mnt, 'bench'),
      options:
        (key === 'scoutfs'
          ? 'Fuse3Adapter.optionList(), attr/entry timeouts 60 s, page cache kept across opens'
          : 'FuseAdapter.optionList() (as pt-same, fsname/subtype scoutfs)') + `; scoutfs mount -o ${mountOptions}`,
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

/** Makes the benchmark's temp directory under `dir`; cleanup() removes it. */
export function makeTempRoot(dir: string): string {
  tempRoot = mkdtempSync(join(dir, 'scoutfs-bench-'))
  return tempRoot
}

export function cleanup(): Promise<void> {
  if (!cleaning) cleaning = doCleanup()
  return cleaning
}

export async function doCleanup(): Promise<void> {
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
