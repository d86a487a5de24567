/*
 * Real agents for tests, on the launcher (node-agent/src/tools/launcher): file-backed devices
 * formatted with the real `scoutfs mkfs`, and `scoutfs mount --foreground` agents as child
 * processes serving real FUSE mounts.  The test process may use the mount with ordinary (even
 * synchronous) fs calls: it does not serve it.
 *
 * Every agent started here is remembered; stopAllAgents() (call it from an after hook)
 * SIGKILLs whatever is left, force-unmounts its mountpoint and removes the temp directories.
 */
import type { ChildProcess } from 'node:child_process'
import { rmSync } from 'node:fs'
import { join } from 'node:path'
import { withTestFrontend } from './frontend.js'
import { launchAgent, type AgentProcess } from '../../node-agent/src/tools/launcher/agent-process.js'
import { makeDevices as launchDevices } from '../../node-agent/src/tools/launcher/devices.js'
import { SCOUTFS_BIN } from '../../node-agent/src/tools/launcher/scoutfs-cli.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import { sh } from './fuse-harness.js'

export const BIN = SCOUTFS_BIN
/** Force a (dead) mount away: fusermount -uz, else umount -l. */
export { forceUnmount } from '../../node-agent/src/fuse/unmount.js'

const MOUNT_TIMEOUT_MS = 30_000
export const STOP_TIMEOUT_MS = 60_000

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
  const d = await launchDevices({ prefix, metaBytes, dataBytes, quorumSlots: 1 })
  dirs.add(d.dir)
  return {
    dir: d.dir,
    meta: d.meta,
    data: d.data,
    remove: () => {
      rmSync(d.dir, { recursive: true, force: true })
      dirs.delete(d.dir)
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

/** A test's Agent for a launched agent process (remembered until stopped). */
export function wrapAgent(p: AgentProcess): Agent {
  const agent: Agent = {
    mnt: p.mnt,
    proc: p.proc!,
    log: () => p.log(),
    metricsAddr: p.mounted?.metrics,
    exited: p.exited.then(() => p.exitCode ?? null),
    async stop() {
      const r = await p.stop(STOP_TIMEOUT_MS)
      agents.delete(agent)
      if (!r.inTime)
        throw new FsError(
          'ETIMEDOUT',
          `agent for ${p.mnt} did not stop in ${STOP_TIMEOUT_MS / 1000} s; log:\n${p.log()}`,
        )
      return r.code
    },
    async kill9() {
      await p.kill()
      agents.delete(agent)
    },
  }
  agents.add(agent)
  return agent
}

/** Start an agent mounting `dev` at `mnt` (created) and wait until it serves. */
export async function startAgent(
  dev: Devices,
  mnt = join(dev.dir, 'mnt'),
  opts: { options?: string; metricsAddr?: string; env?: NodeJS.ProcessEnv; netns?: string } = {},
): Promise<Agent> {
  const p = await launchAgent(
    {
      meta: dev.meta,
      data: dev.data,
      mnt,
      logLevel: 'info',
      // a cluster's agents speak mutual TLS with its certificates
      options: withTestFrontend(
        [opts.options, (dev as { tlsOptions?: string }).tlsOptions].filter(Boolean).join(',') || undefined,
      ),
      metricsAddr: opts.metricsAddr,
      env: opts.env,
      netns: opts.netns,
    },
    MOUNT_TIMEOUT_MS,
  )
  return wrapAgent(p)
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
