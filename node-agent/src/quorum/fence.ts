// TEMPORARY stub until the fence branch merges
import { readFileSync } from 'node:fs'
import { FsError } from '../util/errors.js'
export type FenceReason = 'quorum_block_leader' | 'client_timeout' | 'recovery_timeout'
export interface FenceTarget {
  rid: number
  reason: FenceReason
  host: string
  pid: number
  pidStart: number
  addr: string
  slot?: number
}
export type FenceMethod = 'local' | 'command' | 'kubernetes'
export interface FenceAgent {
  readonly method: FenceMethod
  fence(t: FenceTarget, signal?: AbortSignal): Promise<void>
}
export interface KubeFenceOptions {
  namespace: string
  filesystem: string
}
export interface FenceOptions {
  method: FenceMethod
  command?: string
  timeoutMs?: number
  retries?: number
  retryDelayMs?: number
  kubernetes?: KubeFenceOptions
  log?: (msg: string, fields?: Record<string, unknown>) => void
}
export function processStartTime(pid: number): number {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[19])
  } catch {
    return 0
  }
}
function alive(pid: number, start: number): boolean {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
    return f[0] !== 'Z' && Number(f[19]) === start
  } catch {
    return false
  }
}
export function fenceAgent(_o: FenceOptions): FenceAgent {
  return {
    method: 'local',
    fence: async (t) => {
      if (!t.pid) throw new FsError('EINVAL', 'no pid')
      if (!alive(t.pid, t.pidStart)) return
      process.kill(t.pid, 'SIGKILL')
      for (let i = 0; i < 250 && alive(t.pid, t.pidStart); i++) await new Promise((r) => setTimeout(r, 20))
      if (alive(t.pid, t.pidStart)) throw new FsError('ETIMEDOUT', 'still alive')
    },
  }
}
