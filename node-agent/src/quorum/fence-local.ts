/*
 * fence=local: every agent runs on this host (`npm start`, the tests), so fencing a mount is
 * killing its agent process.  The target recorded its host name, pid and the pid's start time
 * (/proc/<pid>/stat field 22) at mount; a pid alone is not an identity, since pids are reused.
 *
 * The target can no longer write, and fence() resolves, when one of these holds:
 *   - no process has its pid (kill(pid, 0) fails with ESRCH);
 *   - the process with its pid started at another time than the target recorded: the pid was
 *     reused, the target is gone;
 *   - the process is a zombie and so is every thread of it (/proc/<pid>/task/*): a zombie
 *     group leader whose other threads still run may still be finishing a write.
 * Otherwise it is sent SIGKILL and looked at every 20 ms until one of those holds, for up to
 * timeoutMs (ETIMEDOUT: a process stuck in the kernel).  A start time of 0 (not recorded)
 * matches any process: whatever has the pid is killed, since a fence must never be confirmed
 * on a guess.
 *
 * Refused: a target on another host (EHOSTUNREACH: use fence=command or kubernetes), a target
 * without a pid (EINVAL), a target that is this process or pid 1 (EINVAL: never signalled),
 * a process we may not signal (EPERM).  Between looking at the process and killing it the pid
 * could in theory be reused; Node has no pidfd to close that window.
 */
import { readFileSync, readdirSync } from 'node:fs'
import { hostname } from 'node:os'
import { FsError, fromNodeError } from '../util/errors.js'
import { type FenceLog, checkTarget, delay, ridHex, throwIfAborted } from './fence-common.js'
import type { FenceAgent, FenceTarget } from './fence.js'

const POLL_MS = 20

interface ProcStat {
  /** field 3: R, S, D, Z, X, ... */
  state: string
  /** field 22: clock ticks after boot */
  startTime: number
}

/** /proc/<pid>/stat (or /proc/<pid>/task/<tid>/stat), undefined if unreadable */
function readStat(path: string): ProcStat | undefined {
  let s: string
  try {
    s = readFileSync(path, 'utf8')
  } catch {
    return undefined
  }
  // field 2, the command name, is in parentheses and may hold spaces and parentheses itself
  const close = s.lastIndexOf(')')
  if (close < 0) return undefined
  const f = s.slice(close + 2).split(' ') // f[0] is field 3, field n is f[n - 3]
  const startTime = Number(f[19])
  if (!f[0] || !Number.isSafeInteger(startTime)) return undefined
  return { state: f[0], startTime }
}

/**
 * The start time of process `pid` (/proc/<pid>/stat field 22, clock ticks since boot), 0 if
 * it cannot be read.  An agent records its own at mount, for fence=local to tell its process
 * from a later one that reuses the pid.
 */
export function processStartTime(pid: number): number {
  if (!Number.isSafeInteger(pid) || pid <= 0) return 0
  return readStat(`/proc/${pid}/stat`)?.startTime ?? 0
}

/** whether every thread of `pid` is a zombie or dead (or the process went) */
function allThreadsDead(pid: number): boolean {
  let tids: string[]
  try {
    tids = readdirSync(`/proc/${pid}/task`)
  } catch {
    return true
  }
  return tids.every((tid) => {
    const st = readStat(`/proc/${pid}/task/${tid}/stat`)
    return !st || st.state === 'Z' || st.state === 'X'
  })
}

/** whether a process has `pid`: false on ESRCH, true if it exists (even if we may not signal it) */
function exists(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code
    if (code === 'ESRCH') return false
    if (code === 'EPERM') return true
    throw fromNodeError(e, `kill(${pid}, 0)`)
  }
}

/** Why `t` can no longer write, or undefined if its process may still run. */
function gone(t: FenceTarget): string | undefined {
  if (!exists(t.pid)) return `no process has pid ${t.pid}`
  const st = readStat(`/proc/${t.pid}/stat`)
  if (!st) return exists(t.pid) ? undefined : `no process has pid ${t.pid}`
  if (t.pidStart !== 0 && st.startTime !== t.pidStart)
    return `pid ${t.pid} is another process now (start time ${st.startTime}, the mount's was ${t.pidStart})`
  if ((st.state === 'Z' || st.state === 'X') && allThreadsDead(t.pid)) return `pid ${t.pid} is a zombie`
  return undefined
}

export class LocalFence implements FenceAgent {
  readonly method = 'local'

  constructor(private readonly o: { timeoutMs: number; log: FenceLog }) {}

  async fence(t: FenceTarget, signal?: AbortSignal): Promise<void> {
    checkTarget(t)
    throwIfAborted(t, signal)
    const rid = ridHex(t.rid)
    const here = hostname()
    if (t.host !== '' && t.host !== here)
      throw new FsError(
        'EHOSTUNREACH',
        `mount ${rid} runs on host '${t.host}', this is '${here}': fence=local can only kill processes of this host; use fence=command or fence=kubernetes`,
      )
    if (t.pid === 0)
      throw new FsError(
        'EINVAL',
        `mount ${rid} recorded no process id: it cannot be fenced locally; use fence=command or fence=kubernetes`,
      )

    const already = gone(t)
    if (already !== undefined) {
      this.o.log('fence: the mount is already gone', { rid, pid: t.pid, why: already })
      return
    }
    if (t.pid <= 1 || t.pid === process.pid)
      throw new FsError(
        'EINVAL',
        `mount ${rid} is pid ${t.pid}, ${t.pid === process.pid ? 'this agent' : 'init'}: refusing to kill it`,
      )
    if (t.pidStart === 0)
      this.o.log('fence: the mount recorded no start time; killing whatever process has its pid', { rid, pid: t.pid })

    try {
      process.kill(t.pid, 'SIGKILL')
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code
      if (code === 'ESRCH') return // it went by itself
      if (code === 'EPERM')
        throw new FsError('EPERM', `mount ${rid}: not allowed to kill pid ${t.pid} (another user's process?)`)
      throw fromNodeError(e, `mount ${rid}: kill(${t.pid}, SIGKILL)`)
    }
    this.o.log('fence: sent SIGKILL', { rid, pid: t.pid })

    const deadline = Date.now() + this.o.timeoutMs
    for (;;) {
      await delay(POLL_MS, t, signal)
      const why = gone(t)
      if (why !== undefined) return
      if (Date.now() >= deadline) {
        const st = readStat(`/proc/${t.pid}/stat`)
        throw new FsError(
          'ETIMEDOUT',
          `mount ${rid}: pid ${t.pid} still runs ${this.o.timeoutMs} ms after SIGKILL (state ${st?.state ?? '?'}; stuck in the kernel?)`,
        )
      }
    }
  }
}
