/*
 * fence=kubernetes: the operator is the fence agent (DESIGN §11).  The server posts a
 * FenceRequest (scoutfs.io/v1alpha1, namespaced; CRD in
 * charts/scoutfs/crds/scoutfs.io_fencerequests.yaml) describing the mount, and waits for the
 * operator to act on it (stop the pod, cordon the node, a fence hook) and set its status:
 *
 *   status.phase Fenced  → fence() resolves
 *   status.phase Failed  → fence() rejects EIO with status.message
 *   anything else        → keep waiting (read every pollMs), up to timeoutMs (0: forever;
 *                          ETIMEDOUT), or until the caller aborts (ECANCELED)
 *
 * The request's name is a function of the filesystem, the rid and the reason
 * (fenceRequestName), so asking again, by this server after an error or by the next one after
 * a failover, finds the same object: a create that meets 409 AlreadyExists reuses it, with its
 * status (a rid is never mounted again, so an old Fenced answer for it still holds; a Failed
 * one holds until someone deletes the object).  A request deleted while it is waited on is
 * posted again.  Errors of the API server that may pass (network, 5xx, 429) are logged and
 * retried at pollMs; errors that will not (403: RBAC, 404 on create: the CRD is not installed,
 * 422: invalid) reject EIO at once.
 *
 * @kubernetes/client-node is loaded at the first fence, so agents that never fence this way
 * do not pay for loading it.
 */
import { createHash } from 'node:crypto'
import { hostname } from 'node:os'
import type {
  ConfigurationOptions,
  CustomObjectsApi,
  KubeConfig,
  ObservableMiddleware,
  RequestContext,
  ResponseContext,
} from '@kubernetes/client-node'
import { FsError } from '../util/errors.js'
import { type FenceLog, cancelled, checkTarget, delay, ridHex, throwIfAborted } from './fence-common.js'
import type { FenceAgent, FenceReason, FenceTarget } from './fence.js'

export const FENCE_GROUP = 'scoutfs.io'
export const FENCE_VERSION = 'v1alpha1'
export const FENCE_KIND = 'FenceRequest'
export const FENCE_PLURAL = 'fencerequests'

/** longest a FenceRequest's name may be (a DNS-1123 label, so it also fits a label value) */
const NAME_MAX = 63
/** longest one API call may take */
const REQUEST_TIMEOUT_MS = 30000

/**
 * What the server asks for (the FenceRequest's spec): the target as FenceTarget has it (rid as
 * 16 hex digits), the filesystem, the node, and who asked when.
 */
export type FenceRequestSpec = Omit<FenceTarget, 'rid'> & {
  /** the filesystem's name */
  filesystem: string
  /** the mount to fence: its rid, 16 hex digits */
  rid: string
  /** the Kubernetes node it runs on, as far as the server knows ('' unknown) */
  nodeName: string
  /** when the request was made, RFC 3339 */
  requestedAt: string
  /** the host name of the agent that asked */
  requestedBy: string
}

export type FenceRequestPhase = 'Pending' | 'Fencing' | 'Fenced' | 'Failed'

/** What the operator answers (the FenceRequest's status). */
export interface FenceRequestStatus {
  phase?: FenceRequestPhase
  message?: string
  /** what it did ("deleted pod x", "cordoned node y", ...) */
  action?: string
  fencedAt?: string
}

export interface KubernetesFenceOptions {
  namespace: string
  filesystem: string
  kubeConfig?: KubeConfig | string
  pollMs: number
  timeoutMs: number
  nodeName?: (t: FenceTarget) => string | Promise<string>
  log: FenceLog
}

/** `s` as a DNS-1123 label: lower case, [a-z0-9-], no '-' at either end ('' if nothing is left) */
function dnsLabel(s: string): string {
  return s
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, '-')
    .replace(/-+/g, '-')
    .replace(/^-+|-+$/g, '')
}

/** `s` as a label value: [A-Za-z0-9._-], alphanumeric at both ends, at most 63 characters */
function labelValue(s: string): string {
  return s
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .slice(0, 63)
    .replace(/^[^A-Za-z0-9]+|[^A-Za-z0-9]+$/g, '')
}

/**
 * The FenceRequest name of fencing `rid` of `filesystem` for `reason`: `<fs>-<rid hex>-<reason>`,
 * a DNS-1123 label of at most 63 characters.  A filesystem name that is not a DNS label, or
 * too long, is cut and suffixed with a hash of it, so different names never share requests.
 */
export function fenceRequestName(filesystem: string, rid: number, reason: FenceReason): string {
  const suffix = `-${ridHex(rid)}-${reason.replace(/_/g, '-')}`
  const room = NAME_MAX - suffix.length
  let fs = dnsLabel(filesystem)
  if (fs !== filesystem || fs.length > room) {
    const hash = createHash('sha256').update(filesystem).digest('hex').slice(0, 8)
    fs = `${(fs || 'scoutfs').slice(0, room - hash.length - 1).replace(/-+$/, '')}-${hash}`
  }
  return fs + suffix
}

/** The FenceRequest object the server posts to have `t` fenced. */
export function fenceRequestObject(
  namespace: string,
  filesystem: string,
  t: FenceTarget,
  nodeName: string,
  now: Date = new Date(),
): { apiVersion: string; kind: string; metadata: Record<string, unknown>; spec: FenceRequestSpec } {
  const spec: FenceRequestSpec = {
    filesystem,
    rid: ridHex(t.rid),
    reason: t.reason,
    host: t.host,
    pid: t.pid,
    pidStart: t.pidStart,
    addr: t.addr,
    ...(t.slot !== undefined ? { slot: t.slot } : {}),
    nodeName,
    requestedAt: now.toISOString(),
    requestedBy: hostname(),
  }
  return {
    apiVersion: `${FENCE_GROUP}/${FENCE_VERSION}`,
    kind: FENCE_KIND,
    metadata: {
      name: fenceRequestName(filesystem, t.rid, t.reason),
      namespace,
      labels: {
        'app.kubernetes.io/part-of': 'scoutfs',
        'scoutfs.io/filesystem': labelValue(filesystem),
        'scoutfs.io/rid': ridHex(t.rid),
        'scoutfs.io/reason': t.reason,
      },
    },
    spec,
  }
}

/** the HTTP status of an error of the client (an ApiException), undefined for other errors */
function httpCode(e: unknown): number | undefined {
  const c = (e as { code?: unknown } | undefined)?.code
  return typeof c === 'number' && e !== null && typeof e === 'object' && 'body' in e ? c : undefined
}

/** what an error of the client says: the API server's Status message if there is one */
function apiMessage(e: unknown): string {
  const code = httpCode(e)
  if (code === undefined) return e instanceof Error ? e.message : String(e)
  const body = (e as { body?: unknown }).body
  let msg = ''
  if (typeof body === 'string') {
    try {
      const s = JSON.parse(body) as { message?: unknown }
      msg = typeof s.message === 'string' ? s.message : body
    } catch {
      msg = body
    }
  }
  return `HTTP ${code}${msg ? `: ${msg.slice(0, 500)}` : ''}`
}

function statusOf(obj: unknown): FenceRequestStatus {
  const st = (obj as { status?: unknown } | undefined)?.status
  if (st === null || typeof st !== 'object') return {}
  const s = st as Record<string, unknown>
  return {
    phase: typeof s.phase === 'string' ? (s.phase as FenceRequestPhase) : undefined,
    message: typeof s.message === 'string' ? s.message : undefined,
    action: typeof s.action === 'string' ? s.action : undefined,
  }
}

type K8s = typeof import('@kubernetes/client-node')
let k8sModule: Promise<K8s> | undefined

export class KubernetesFence implements FenceAgent {
  readonly method = 'kubernetes'
  private client: Promise<{ k: K8s; api: CustomObjectsApi }> | undefined

  constructor(private readonly o: KubernetesFenceOptions) {}

  /** the API client, made at the first fence */
  private api(): Promise<{ k: K8s; api: CustomObjectsApi }> {
    this.client ??= (async () => {
      const k = await (k8sModule ??= import('@kubernetes/client-node'))
      let kc: KubeConfig
      try {
        if (typeof this.o.kubeConfig === 'object') kc = this.o.kubeConfig
        else {
          kc = new k.KubeConfig()
          if (typeof this.o.kubeConfig === 'string') kc.loadFromFile(this.o.kubeConfig)
          else kc.loadFromDefault()
        }
        return { k, api: kc.makeApiClient(k.CustomObjectsApi) }
      } catch (e) {
        throw new FsError('EINVAL', `fence=kubernetes: no usable kubeconfig: ${(e as Error).message}`)
      }
    })()
    this.client.catch(() => (this.client = undefined))
    return this.client
  }

  /** per-call options: abort the HTTP request with `signal`, or after REQUEST_TIMEOUT_MS */
  private callOptions(k: K8s, signal: AbortSignal | undefined, deadline: number): ConfigurationOptions {
    const ms = Math.max(1, Math.min(REQUEST_TIMEOUT_MS, deadline - Date.now()))
    const s = signal ? AbortSignal.any([signal, AbortSignal.timeout(ms)]) : AbortSignal.timeout(ms)
    const mw: ObservableMiddleware = {
      pre: (ctx: RequestContext) => {
        ctx.setSignal(s)
        return new k.Observable(Promise.resolve(ctx))
      },
      post: (ctx: ResponseContext) => new k.Observable(Promise.resolve(ctx)),
    }
    return { middleware: [mw], middlewareMergeStrategy: 'append' }
  }

  async fence(t: FenceTarget, signal?: AbortSignal): Promise<void> {
    checkTarget(t)
    throwIfAborted(t, signal)
    const { k, api } = await this.api()
    throwIfAborted(t, signal)
    const rid = ridHex(t.rid)
    const { namespace, filesystem } = this.o
    const nodeName = this.o.nodeName ? await this.o.nodeName(t) : t.host
    const name = fenceRequestName(filesystem, t.rid, t.reason)
    const where = `FenceRequest ${namespace}/${name}`
    const ref = { group: FENCE_GROUP, version: FENCE_VERSION, namespace, plural: FENCE_PLURAL }
    const deadline = this.o.timeoutMs > 0 ? Date.now() + this.o.timeoutMs : Infinity
    let posted = false
    let lastTrouble = ''
    let lastPhase: string | undefined

    for (;;) {
      throwIfAborted(t, signal)
      let step: 'create' | 'get' = 'create'
      try {
        if (!posted) {
          const body = fenceRequestObject(namespace, filesystem, t, nodeName)
          try {
            await api.createNamespacedCustomObject({ ...ref, body }, this.callOptions(k, signal, deadline))
            this.o.log('fence: posted', { rid, reason: t.reason, request: where })
          } catch (e) {
            if (httpCode(e) !== 409) throw e
            this.o.log('fence: reusing the existing request', { rid, reason: t.reason, request: where })
          }
          posted = true
        }
        step = 'get'
        const obj: unknown = await api.getNamespacedCustomObject(
          { ...ref, name },
          this.callOptions(k, signal, deadline),
        )
        lastTrouble = ''
        const st = statusOf(obj)
        if (st.phase !== lastPhase) {
          lastPhase = st.phase
          if (st.phase)
            this.o.log('fence: request phase', { rid, request: where, phase: st.phase, message: st.message })
        }
        if (st.phase === 'Fenced') return
        if (st.phase === 'Failed')
          throw new FsError(
            'EIO',
            `the operator could not fence mount ${rid} (${where}): ${st.message || 'no message'}; delete the FenceRequest to have it asked again`,
          )
      } catch (e) {
        if (e instanceof FsError) throw e
        if (signal?.aborted) throw cancelled(t)
        const code = httpCode(e)
        if (step === 'get' && code === 404) {
          posted = false
          this.o.log('fence: the request was deleted; posting it again', { rid, request: where })
        } else {
          const transient = code === undefined || code >= 500 || code === 408 || code === 429
          if (!transient)
            throw new FsError(
              'EIO',
              `fencing mount ${rid}: ${step} ${where}: ${apiMessage(e)}` +
                (step === 'create' && code === 404 ? ' (is the FenceRequest CRD installed?)' : ''),
            )
          const trouble = `${step}: ${apiMessage(e)}`
          if (trouble !== lastTrouble)
            this.o.log('fence: API server trouble; retrying', { rid, request: where, err: trouble })
          lastTrouble = trouble
        }
      }
      const left = deadline - Date.now()
      if (left <= 0)
        throw new FsError(
          'ETIMEDOUT',
          `mount ${rid}: no answer to ${where} within ${this.o.timeoutMs} ms (is the scoutfs operator running?)${lastTrouble ? `; last error: ${lastTrouble}` : ''}`,
        )
      await delay(Math.min(this.o.pollMs, left), t, signal)
    }
  }
}
