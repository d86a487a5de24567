/*
 * Real agents for tests: file-backed devices formatted with the real `scoutfs mkfs`, and
 * `scoutfs mount --foreground` agents as child processes serving real FUSE mounts.  The test
 * process may use the mount with ordinary (even synchronous) fs calls: it does not serve it.
 *
 * Every agent started here is remembered; stopAllAgents() (call it from an after hook)
 * SIGKILLs whatever is left, force-unmounts its mountpoint and removes the temp directory.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, truncateSync, writeFileSync, promises as fsp } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sh } from './fuse-harness.js'

export const BIN = join(__dirname, '..', '..', '..', 'bin', 'scoutfs')

export interface Devices {
  dir: string
  meta: string
  data: string
  remove(): void
}

const dirs = new Set<string>()

/** Have stopAllAgents() remove `dir` too (devices made elsewhere, e.g. cluster.ts). */
export function registerDir(dir: string): void {
  dirs.add(dir)
}

/** Fresh file-backed devices, formatted. */
export async function makeDevices(metaBytes = 512 << 20, dataBytes = 1 << 30, prefix = 'scoutfs-t-'): Promise<Devices> {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  dirs.add(dir)
  const meta = join(dir, 'meta.img')
  const data = join(dir, 'data.img')
  writeFileSync(meta, '')
  writeFileSync(data, '')
  truncateSync(meta, metaBytes)
  truncateSync(data, dataBytes)
  const r = await sh(BIN, ['mkfs', '-Q', '1', meta, data])
  if (r.code !== 0) throw new Error(`mkfs failed: ${r.stderr}`)
  return {
    dir,
    meta,
    data,
    remove: () => {
      rmSync(dir, { recursive: true, force: true })
      dirs.delete(dir)
    },
  }
}

export interface Agent {
  mnt: string
  proc: ChildProcess
  log: () => string
  metricsAddr?: string
  /** SIGTERM and wait for a clean exit; returns the exit code */
  stop(): Promise<number | null>
  /** SIGKILL, then force the dead mount away */
  kill9(): Promise<void>
  exited: Promise<number | null>
}

const agents = new Set<Agent>()

async function mounted(mnt: string): Promise<boolean> {
  const t = await fsp.readFile('/proc/mounts', 'utf8')
  return t.split('\n').some((l) => l.split(' ')[1] === mnt)
}

export async function forceUnmount(mnt: string): Promise<void> {
  if (!(await mounted(mnt))) return
  if ((await sh('fusermount', ['-uz', mnt])).code === 0) return
  await sh('umount', ['-l', mnt])
}

/** Start an agent mounting `dev` at `mnt` (created) and wait until it serves. */
export async function startAgent(
  dev: Devices,
  mnt = join(dev.dir, 'mnt'),
  opts: { options?: string; metricsAddr?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<Agent> {
  await fsp.mkdir(mnt, { recursive: true })
  const args = ['mount', '--metadev', dev.meta, dev.data, mnt, '--foreground', '--log-level', 'info']
  if (opts.options) args.push('-o', opts.options)
  if (opts.metricsAddr) args.push('--metrics-addr', opts.metricsAddr)
  const proc = spawn(process.execPath, [BIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...opts.env },
  })
  let log = ''
  proc.stdout!.on('data', (c: Buffer) => (log += c.toString()))
  proc.stderr!.on('data', (c: Buffer) => (log += c.toString()))
  const exited = new Promise<number | null>((res) => proc.once('exit', (code) => res(code)))
  const agent: Agent = {
    mnt,
    proc,
    log: () => log,
    exited,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGTERM')
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 60_000))])
      agents.delete(agent)
      if (code === 'timeout') {
        proc.kill('SIGKILL')
        await forceUnmount(mnt)
        throw new Error(`agent for ${mnt} did not stop in 60 s; log:\n${log}`)
      }
      await forceUnmount(mnt)
      return code
    },
    async kill9() {
      proc.kill('SIGKILL')
      await exited
      agents.delete(agent)
      await forceUnmount(mnt)
    },
  }
  agents.add(agent)
  const deadline = Date.now() + 30_000
  for (;;) {
    const m = /"metrics":"([^"]+)"/.exec(log)
    if (/"msg":"mounted"/.test(log)) {
      agent.metricsAddr = m?.[1]
      return agent
    }
    if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`agent exited before mounting:\n${log}`)
    if (Date.now() > deadline) {
      await agent.kill9()
      throw new Error(`agent did not mount within 30 s:\n${log}`)
    }
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Kill every agent still running, force their mounts away, remove their devices. */
export async function stopAllAgents(): Promise<void> {
  for (const a of [...agents]) await a.kill9().catch(() => undefined)
  for (const d of [...dirs]) {
    rmSync(d, { recursive: true, force: true })
    dirs.delete(d)
  }
}

/** Run the scoutfs CLI. */
export function scoutfs(...args: string[]): ReturnType<typeof sh> {
  return sh(process.execPath, [BIN, ...args], { timeoutMs: 120_000 })
}
