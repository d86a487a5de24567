/*
 * Fencing (DESIGN §11, docs/fencing.md): before a new quorum leader reclaims a mount, or
 * writes anything at all, every mount that may still write to the shared devices (a previous
 * leader that did not stop cleanly, a mount that stopped answering or did not reconnect after
 * a failover) is fenced: made unable to write.  This file owns the interface the server role
 * calls and the factory that picks one of three methods from the mount options:
 *
 *   local       every agent on this host (`npm start`, tests): kill the target's process
 *               (fence-local.ts)
 *   command     run `fence_command` like the original's scoutfs-fenced (fence-command.ts)
 *   kubernetes  post a FenceRequest custom object and wait for the operator to complete it
 *               (fence-kubernetes.ts)
 *
 * The one invariant every agent keeps: fence() resolves only once the target is confirmed
 * unable to write.  Every other outcome (refusal, failure, timeout, cancellation) is a
 * rejection with an FsError saying why the fence is NOT confirmed, and the caller must not
 * proceed on it.  Bad option combinations are refused here, at mount time (EINVAL), not at
 * the first fence.
 */
import type { KubeConfig } from '@kubernetes/client-node'
import { FsError } from '../util/errors.js'
import { CommandFence } from './fence-command.js'
import { type FenceLog, describeTarget, ridHex } from './fence-common.js'
import { KubernetesFence } from './fence-kubernetes.js'
import { LocalFence } from './fence-local.js'

export { processStartTime } from './fence-local.js'

export type FenceReason = 'quorum_block_leader' | 'client_timeout' | 'recovery_timeout'
export { FENCE_REASONS } from './fence-common.js'

/** The mount to fence, as it recorded itself at mount and as the server saw it. */
export interface FenceTarget {
  /** the mount id (printed as 16 hex digits in logs and the command's environment) */
  rid: number
  reason: FenceReason
  /** os.hostname() the target recorded at mount ('' unknown) */
  host: string
  /** its agent process id (0 unknown) */
  pid: number
  /** its /proc/<pid>/stat starttime (field 22, clock ticks since boot) at mount, 0 unknown */
  pidStart: number
  /** its IP address as seen by the server ('' unknown) */
  addr: string
  /** its quorum slot, if it is a quorum member */
  slot?: number
}

export type FenceMethod = 'local' | 'command' | 'kubernetes'
export const FENCE_METHODS: readonly FenceMethod[] = ['local', 'command', 'kubernetes']

export interface FenceAgent {
  readonly method: FenceMethod
  /**
   * Resolves once `t` can no longer write to the devices; rejects with an FsError saying why
   * it is NOT confirmed.  Never resolves without confirmation.  Honours `signal` (abort →
   * reject ECANCELED).
   */
  fence(t: FenceTarget, signal?: AbortSignal): Promise<void>
}

/** The kubernetes method: where the FenceRequest objects go and how long to wait for them. */
export interface KubeFenceOptions {
  /** namespace of the FenceRequest objects (the filesystem's namespace) */
  namespace: string
  /** the filesystem's name: part of each request's name, label and spec */
  filesystem: string
  /** a loaded KubeConfig, or the path of a kubeconfig file; default KubeConfig.loadFromDefault() */
  kubeConfig?: KubeConfig | string
  /** how often the request's status is read (default 1000 ms) */
  pollMs?: number
  /** give up (ETIMEDOUT) after this long without an answer; 0 (default) waits forever */
  timeoutMs?: number
  /** the Kubernetes node the target runs on, for the request's spec.nodeName; default t.host */
  nodeName?: (t: FenceTarget) => string | Promise<string>
}

export interface FenceOptions {
  method: FenceMethod
  /** fence=command: the command, run with /bin/sh -c */
  command?: string
  /**
   * local: how long a killed process may take to go (default 5000 ms); command: how long one
   * run may take (default 30000 ms); kubernetes: how long to wait for the operator (default 0,
   * forever; kubernetes.timeoutMs takes precedence)
   */
  timeoutMs?: number
  /** command: failed runs retried this many more times (default 2) */
  retries?: number
  /** command: wait between runs (default 1000 ms) */
  retryDelayMs?: number
  /** fence=kubernetes: required */
  kubernetes?: KubeFenceOptions
  log?: FenceLog
}

function checkCount(name: string, v: number | undefined, min: number): void {
  if (v === undefined) return
  if (!Number.isSafeInteger(v) || v < min)
    throw new FsError('EINVAL', `${name} must be an integer of at least ${min}, not ${String(v)}`)
}

/**
 * The fence agent of `o.method`.  Throws EINVAL for an unknown method, a missing or misplaced
 * option (fence_command without fence=command, fence=command without a command, ...) or a
 * number out of range.
 */
export function fenceAgent(o: FenceOptions): FenceAgent {
  const method = o.method as string
  if (!(FENCE_METHODS as readonly string[]).includes(method))
    throw new FsError('EINVAL', `unknown fence method '${method}': use fence=local, fence=command or fence=kubernetes`)
  if (o.command !== undefined && method !== 'command')
    throw new FsError('EINVAL', `fence_command is only used with fence=command (fence=${method})`)
  if (method === 'command' && (o.command === undefined || o.command.trim() === ''))
    throw new FsError('EINVAL', 'fence=command needs the command to run: fence_command=CMD')
  if (method !== 'command' && (o.retries !== undefined || o.retryDelayMs !== undefined))
    throw new FsError('EINVAL', `fence_retries is only used with fence=command (fence=${method})`)
  if (o.kubernetes !== undefined && method !== 'kubernetes')
    throw new FsError('EINVAL', `kubernetes fence options are only used with fence=kubernetes (fence=${method})`)
  checkCount('fence_timeout_ms', o.timeoutMs, method === 'kubernetes' ? 0 : 1)
  checkCount('fence_retries', o.retries, 0)
  checkCount('fence retry delay (ms)', o.retryDelayMs, 0)
  const log: FenceLog = o.log ?? (() => {})

  let agent: FenceAgent
  switch (o.method) {
    case 'local':
      agent = new LocalFence({ timeoutMs: o.timeoutMs ?? 5000, log })
      break
    case 'command':
      agent = new CommandFence({
        command: o.command as string,
        timeoutMs: o.timeoutMs ?? 30000,
        retries: o.retries ?? 2,
        retryDelayMs: o.retryDelayMs ?? 1000,
        log,
      })
      break
    case 'kubernetes': {
      const k = o.kubernetes
      if (!k) throw new FsError('EINVAL', 'fence=kubernetes needs the namespace and the filesystem name')
      if (typeof k.namespace !== 'string' || k.namespace === '')
        throw new FsError('EINVAL', 'fence=kubernetes needs the namespace of its FenceRequest objects')
      if (typeof k.filesystem !== 'string' || k.filesystem === '')
        throw new FsError('EINVAL', 'fence=kubernetes needs the filesystem name')
      checkCount('kubernetes fence timeoutMs', k.timeoutMs, 0)
      checkCount('kubernetes fence pollMs', k.pollMs, 1)
      agent = new KubernetesFence({
        namespace: k.namespace,
        filesystem: k.filesystem,
        kubeConfig: k.kubeConfig,
        pollMs: k.pollMs ?? 1000,
        timeoutMs: k.timeoutMs ?? o.timeoutMs ?? 0,
        nodeName: k.nodeName,
        log,
      })
      break
    }
  }
  return logged(agent, log)
}

/** `a`, logging each fence it is asked for and its outcome (with the time it took). */
function logged(a: FenceAgent, log: FenceLog): FenceAgent {
  return {
    method: a.method,
    async fence(t: FenceTarget, signal?: AbortSignal): Promise<void> {
      const started = Date.now()
      log('fencing mount', { method: a.method, ...describeTarget(t) })
      try {
        await a.fence(t, signal)
      } catch (e) {
        const err = e instanceof FsError ? e : new FsError('EIO', `fencing mount ${ridHex(t.rid)}: ${String(e)}`)
        log('fence NOT confirmed', {
          method: a.method,
          rid: ridHex(t.rid),
          reason: t.reason,
          ms: Date.now() - started,
          err: err.message,
        })
        throw err
      }
      log('fenced mount', { method: a.method, rid: ridHex(t.rid), reason: t.reason, ms: Date.now() - started })
    },
  }
}
