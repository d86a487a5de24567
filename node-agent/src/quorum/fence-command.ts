/*
 * fence=command: run the administrator's `fence_command` the way the original's scoutfs-fenced
 * runs $SCOUTFS_FENCED_RUN (docs/fencing.md).  The command runs with `/bin/sh -c CMD`, in a
 * process group of its own, with the agent's environment plus the request:
 *
 *   SCOUTFS_FENCED_REQ_RID        the mount id, 16 hex digits
 *   SCOUTFS_FENCED_REQ_IP         its IP address as the server saw it ('' unknown)
 *   SCOUTFS_FENCED_REQ_HOST       the host name it recorded at mount ('' unknown)
 *   SCOUTFS_FENCED_REQ_PID        its agent's process id ('' unknown)
 *   SCOUTFS_FENCED_REQ_PID_START  that process's start time, /proc/<pid>/stat field 22 ('' unknown)
 *   SCOUTFS_FENCED_REQ_REASON     quorum_block_leader, client_timeout or recovery_timeout
 *   SCOUTFS_FENCED_REQ_SLOT       its quorum slot ('' if it is not a quorum member)
 *
 * Exit status 0 means fenced, and is the only thing that resolves fence().  A non-zero exit,
 * a death by signal, a failure to start, or a run longer than timeoutMs (its whole process
 * group is then killed with SIGKILL) is a failed attempt: it is logged with the last lines of
 * the command's stderr, and after retryDelayMs the command runs again, up to `retries` more
 * times.  Then fence() rejects: ETIMEDOUT if the last run hung, EIO otherwise, with the stderr
 * tail in the message.  An abort kills the running command's group and rejects ECANCELED.
 * The command's stdout is discarded: diagnostics belong on stderr.
 */
import { spawn } from 'node:child_process'
import { FsError } from '../util/errors.js'
import { type FenceLog, cancelled, checkTarget, delay, ridHex, tail, throwIfAborted } from './fence-common.js'
import type { FenceAgent, FenceTarget } from './fence.js'

/** stderr kept per run (its end) */
const STDERR_KEEP = 16384
/** lines of stderr in a log line or an error */
const STDERR_LINES = 10
/** how long stderr may stay open after the shell exited (a background child may hold it) */
const STDERR_GRACE_MS = 250

type RunResult =
  { outcome: 'fenced' } | { outcome: 'cancelled' } | { outcome: 'failed'; hung: boolean; how: string; stderr: string }

export interface CommandFenceOptions {
  command: string
  timeoutMs: number
  retries: number
  retryDelayMs: number
  log: FenceLog
}

/** the request's environment variables (without the parent's environment) */
export function fenceCommandEnv(t: FenceTarget): Record<string, string> {
  return {
    SCOUTFS_FENCED_REQ_RID: ridHex(t.rid),
    SCOUTFS_FENCED_REQ_IP: t.addr,
    SCOUTFS_FENCED_REQ_HOST: t.host,
    SCOUTFS_FENCED_REQ_PID: t.pid !== 0 ? String(t.pid) : '',
    SCOUTFS_FENCED_REQ_PID_START: t.pidStart !== 0 ? String(t.pidStart) : '',
    SCOUTFS_FENCED_REQ_REASON: t.reason,
    SCOUTFS_FENCED_REQ_SLOT: t.slot !== undefined ? String(t.slot) : '',
  }
}

export class CommandFence implements FenceAgent {
  readonly method = 'command'

  constructor(private readonly o: CommandFenceOptions) {}

  async fence(t: FenceTarget, signal?: AbortSignal): Promise<void> {
    checkTarget(t)
    const rid = ridHex(t.rid)
    const env = { ...process.env, ...fenceCommandEnv(t) }
    const attempts = this.o.retries + 1
    for (let attempt = 1; ; attempt++) {
      throwIfAborted(t, signal)
      const r = await this.run(env, signal)
      if (r.outcome === 'fenced') return
      if (r.outcome === 'cancelled') throw cancelled(t)
      const err = tail(r.stderr, STDERR_LINES)
      this.o.log('fence command failed', { rid, reason: t.reason, attempt, attempts, how: r.how, stderr: err })
      if (attempt >= attempts)
        throw new FsError(
          r.hung ? 'ETIMEDOUT' : 'EIO',
          `fence command for mount ${rid} (${t.reason}) failed ${attempt} time${attempt > 1 ? 's' : ''}, ` +
            `the last time: ${r.how}${err ? `; its stderr ends: ${err}` : '; no stderr'}`,
        )
      await delay(this.o.retryDelayMs, t, signal)
    }
  }

  /** one run of the command */
  private run(env: NodeJS.ProcessEnv, signal: AbortSignal | undefined): Promise<RunResult> {
    return new Promise((resolve) => {
      const child = spawn('/bin/sh', ['-c', this.o.command], {
        env,
        detached: true, // a process group of its own, killed whole on a hang
        stdio: ['ignore', 'ignore', 'pipe'],
      })
      let stderr = ''
      let hung = false
      let aborted = false
      let done = false
      child.stderr.setEncoding('utf8')
      child.stderr.on('data', (d: string) => {
        stderr = (stderr + d).slice(-STDERR_KEEP)
      })
      child.stderr.on('error', () => {})

      const killGroup = (): void => {
        if (child.pid === undefined) return
        try {
          process.kill(-child.pid, 'SIGKILL')
        } catch {
          // the group is gone already
        }
      }
      const timer = setTimeout(() => {
        hung = true
        killGroup()
      }, this.o.timeoutMs)
      const onAbort = (): void => {
        aborted = true
        killGroup()
      }
      signal?.addEventListener('abort', onAbort, { once: true })

      const finish = (r: RunResult): void => {
        if (done) return
        done = true
        clearTimeout(timer)
        signal?.removeEventListener('abort', onAbort)
        child.stderr.destroy()
        resolve(r)
      }
      const result = (code: number | null, sig: NodeJS.Signals | null): RunResult => {
        if (aborted) return { outcome: 'cancelled' }
        if (hung) return { outcome: 'failed', hung, how: `still running after ${this.o.timeoutMs} ms, killed`, stderr }
        if (code === 0) return { outcome: 'fenced' }
        return { outcome: 'failed', hung, how: sig ? `killed by ${sig}` : `exit code ${code}`, stderr }
      }

      child.on('error', (e) => {
        // failed to start (no exit follows), or a failed kill (ignored: the exit comes)
        if (child.pid === undefined)
          finish({ outcome: 'failed', hung: false, how: `could not run: ${e.message}`, stderr })
      })
      child.on('exit', (code, sig) => {
        clearTimeout(timer)
        // read what is left of stderr, unless a background child of the command keeps it open
        const grace = setTimeout(() => finish(result(code, sig)), STDERR_GRACE_MS)
        child.on('close', () => {
          clearTimeout(grace)
          finish(result(code, sig))
        })
      })
    })
  }
}
