/*
 * What the fence agents share: the target's checks and printing (a rid is always 16 hex
 * digits), and cancellation: an aborted signal becomes ECANCELED, and every wait an agent
 * does is cut short by it.
 */
import { FsError } from '../util/errors.js'
import type { FenceReason, FenceTarget } from './fence.js'

export type FenceLog = (msg: string, fields?: Record<string, unknown>) => void

export const FENCE_REASONS: readonly FenceReason[] = ['quorum_block_leader', 'client_timeout', 'recovery_timeout']

/** a rid as the logs, the command's environment and the FenceRequest show it: 16 hex digits */
export function ridHex(rid: number): string {
  return rid.toString(16).padStart(16, '0')
}

/** the target's fields for a log line */
export function describeTarget(t: FenceTarget): Record<string, unknown> {
  return {
    rid: ridHex(t.rid),
    reason: t.reason,
    host: t.host,
    pid: t.pid,
    addr: t.addr,
    ...(t.slot !== undefined ? { slot: t.slot } : {}),
  }
}

/** EINVAL unless `t` is a well-formed target (checked before anything is done to it) */
export function checkTarget(t: FenceTarget): void {
  if (!Number.isSafeInteger(t.rid) || t.rid < 0) throw new FsError('EINVAL', `fence target rid ${String(t.rid)}`)
  const rid = ridHex(t.rid)
  if (!FENCE_REASONS.includes(t.reason))
    throw new FsError('EINVAL', `fence target ${rid}: unknown reason '${String(t.reason)}'`)
  if (typeof t.host !== 'string' || typeof t.addr !== 'string')
    throw new FsError('EINVAL', `fence target ${rid}: host and addr must be strings`)
  if (!Number.isSafeInteger(t.pid) || t.pid < 0)
    throw new FsError('EINVAL', `fence target ${rid}: pid ${String(t.pid)}`)
  if (!Number.isSafeInteger(t.pidStart) || t.pidStart < 0)
    throw new FsError('EINVAL', `fence target ${rid}: pidStart ${String(t.pidStart)}`)
  if (t.slot !== undefined && (!Number.isSafeInteger(t.slot) || t.slot < 0))
    throw new FsError('EINVAL', `fence target ${rid}: slot ${String(t.slot)}`)
}

export function cancelled(t: FenceTarget): FsError {
  return new FsError('ECANCELED', `fencing mount ${ridHex(t.rid)} (${t.reason}) was cancelled: it is NOT fenced`)
}

export function throwIfAborted(t: FenceTarget, signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw cancelled(t)
}

/** resolves after `ms`; rejects ECANCELED as soon as `signal` aborts */
export function delay(ms: number, t: FenceTarget, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(cancelled(t))
      return
    }
    const onAbort = (): void => {
      clearTimeout(timer)
      reject(cancelled(t))
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort)
      resolve()
    }, ms)
    signal?.addEventListener('abort', onAbort, { once: true })
  })
}

/** the last `lines` lines of `text`, without trailing blank lines */
export function tail(text: string, lines: number): string {
  return text.trimEnd().split('\n').slice(-lines).join('\n')
}
