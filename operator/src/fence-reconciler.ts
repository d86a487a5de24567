/*
 * Completes FenceRequests (docs/fencing.md, "fence=kubernetes"): a scoutfs server posted one
 * and waits; this sets status.phase Fenced only once the target mount can no longer write, or
 * Failed with the reason.  Methods (the filesystem's spec.fencing.method):
 *
 *   deletePod   the filesystem's agent pods on the request's node (spec.nodeName, else
 *               spec.host) that exist when the request is first handled are recorded on the
 *               request (annotation scoutfs.io/fence-targets: name/uid,...) and deleted with a
 *               grace period of 1 s: the kubelet kills the containers and only then removes the
 *               pod, so "the pod is gone" is the kubelet's confirmation.  Fenced once no
 *               recorded pod exists with its recorded uid (a pod the DaemonSet creates
 *               afterwards is a new mount, never a target).  A node that is down never confirms:
 *               the request stays Fencing until the node is shut down and tainted
 *               node.kubernetes.io/out-of-service (the pod GC then removes its pods).
 *   cordonNode  the same, after marking the node unschedulable.
 *   hook        runs spec.fencing.hook.command in the operator with the request in
 *               SCOUTFS_FENCED_REQ_* (as fence=command); exit 0 within its timeout is Fenced,
 *               anything else Failed with the end of its stderr.
 *
 * A request already Fenced or Failed is left alone.  Every status write carries the
 * resourceVersion it was computed from.
 */
import { spawn } from 'node:child_process'
import type { KubernetesObject, V1Pod } from '@kubernetes/client-node'
import type { EventRecorder } from './events.js'
import type { Kube } from './kube.js'
import type { Log } from './log.js'
import type { OperatorMetrics } from './metrics.js'
import type { ReconcileOutcome } from './filesystem-reconciler.js'
import { API_VERSION, FENCE_PLURAL, LABEL_FS, type ScoutFilesystem } from './types.js'

export interface FenceRequest extends KubernetesObject {
  metadata: NonNullable<KubernetesObject['metadata']> & { name: string; namespace: string }
  spec: {
    filesystem: string
    rid: string
    reason: string
    host: string
    pid: number
    pidStart: number
    addr: string
    slot?: number
    nodeName: string
    requestedAt: string
    requestedBy?: string
  }
  status?: { phase?: string; message?: string; action?: string; fencedAt?: string }
}

export interface FenceCaches {
  fenceRequest(namespace: string, name: string): FenceRequest | undefined
  filesystem(namespace: string, name: string): ScoutFilesystem | undefined
}

const TARGETS_ANNOTATION = 'scoutfs.io/fence-targets'
/** how often a request whose pods are terminating is looked at again */
const POLL_MS = 1000

export class FenceReconciler {
  constructor(
    private readonly kube: Kube,
    private readonly caches: FenceCaches,
    private readonly events: EventRecorder,
    private readonly metrics: OperatorMetrics,
    private readonly log: Log,
  ) {}

  async reconcile(namespace: string, name: string): Promise<ReconcileOutcome> {
    const fr = this.caches.fenceRequest(namespace, name)
    const phase = fr?.status?.phase
    if (!fr || phase === 'Fenced' || phase === 'Failed') return { result: 'done' }
    const fs = this.caches.filesystem(namespace, fr.spec.filesystem)
    if (!fs)
      return this.finish(
        fr,
        'Failed',
        `no ScoutFilesystem ${fr.spec.filesystem} in namespace ${namespace}: nothing knows how to fence it`,
        '',
        'none',
      )
    const method = fs.spec.fencing.method
    if (method === 'hook') return this.runHook(fr, fs)

    const node = fr.spec.nodeName || fr.spec.host
    if (!node)
      return this.finish(
        fr,
        'Failed',
        'the request names neither a node nor a host: cannot tell which pod to stop',
        '',
        method,
      )

    let targets = parseTargets(fr.metadata.annotations?.[TARGETS_ANNOTATION])
    if (targets === undefined) {
      const pods = await this.kube.list<V1Pod>('v1', 'Pod', namespace, {
        label: `${LABEL_FS}=${fs.metadata.name},app.kubernetes.io/component=node`,
        field: `spec.nodeName=${node}`,
      })
      targets = pods.map((p) => ({ name: p.metadata?.name ?? '', uid: p.metadata?.uid ?? '' }))
      if (method === 'cordonNode')
        await this.kube.mergePatch({ apiVersion: 'v1', kind: 'Node', name: node }, { spec: { unschedulable: true } })
      // record the targets first: after a restart the same pods are waited for, never their successors
      await this.kube.mergePatch(
        { apiVersion: API_VERSION, kind: 'FenceRequest', namespace, name },
        {
          metadata: {
            resourceVersion: fr.metadata.resourceVersion,
            annotations: { [TARGETS_ANNOTATION]: targets.map((t) => `${t.name}/${t.uid}`).join(',') },
          },
        },
      )
      this.log.info(
        { request: `${namespace}/${name}`, node, pods: targets.map((t) => t.name) },
        'fence: targets recorded',
      )
      return { result: 'done', recheckMs: 0 }
    }
    const cordoned = method === 'cordonNode' ? `cordoned node ${node}; ` : ''
    const left: string[] = []
    for (const t of targets) {
      const p = await this.kube.read<V1Pod>({ apiVersion: 'v1', kind: 'Pod', namespace, name: t.name })
      if (!p || p.metadata?.uid !== t.uid) continue
      left.push(t.name)
      if (!p.metadata?.deletionTimestamp) {
        await this.kube.remove({ apiVersion: 'v1', kind: 'Pod', namespace, name: t.name }, { gracePeriodSeconds: 1 })
        await this.events.record(
          fr,
          'Normal',
          'DeletingPod',
          `deleting pod ${t.name} on node ${node} to fence mount ${fr.spec.rid}`,
        )
      }
    }
    if (left.length) {
      if (phase !== 'Fencing')
        await this.setStatus(fr, {
          phase: 'Fencing',
          message: `${cordoned}waiting for pod(s) ${left.join(', ')} on node ${node} to be gone (their kubelet confirms); if the node is down, shut it down and taint it node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`,
        })
      return { result: 'done', recheckMs: POLL_MS }
    }
    const action = targets.length
      ? `${cordoned}deleted pod(s) ${targets.map((t) => t.name).join(', ')} on node ${node}`
      : `${cordoned}no agent pod of ${fs.metadata.name} ran on node ${node}`
    return this.finish(fr, 'Fenced', action, action, method)
  }

  private async runHook(fr: FenceRequest, fs: ScoutFilesystem): Promise<ReconcileOutcome> {
    const hook = fs.spec.fencing.hook
    if (!hook) return this.finish(fr, 'Failed', 'fencing.method hook without fencing.hook', '', 'hook')
    if (fr.status?.phase !== 'Fencing')
      await this.setStatus(fr, { phase: 'Fencing', message: `running ${hook.command[0]}` })
    const s = fr.spec
    const env = {
      ...process.env,
      SCOUTFS_FENCED_REQ_RID: s.rid,
      SCOUTFS_FENCED_REQ_IP: s.addr,
      SCOUTFS_FENCED_REQ_HOST: s.host,
      SCOUTFS_FENCED_REQ_PID: s.pid ? String(s.pid) : '',
      SCOUTFS_FENCED_REQ_PID_START: s.pidStart ? String(s.pidStart) : '',
      SCOUTFS_FENCED_REQ_REASON: s.reason,
      SCOUTFS_FENCED_REQ_SLOT: s.slot === undefined ? '' : String(s.slot),
      SCOUTFS_FENCED_REQ_NODE: s.nodeName,
      SCOUTFS_FENCED_REQ_NAMESPACE: fr.metadata.namespace,
      SCOUTFS_FENCED_REQ_FILESYSTEM: s.filesystem,
    }
    const r = await run(hook.command, env, hook.timeoutSeconds * 1000)
    if (r.ok)
      return this.finish(fr, 'Fenced', `fence hook ${hook.command[0]} exited 0`, `ran ${hook.command[0]}`, 'hook')
    return this.finish(
      fr,
      'Failed',
      `fence hook ${hook.command[0]} ${r.why}${r.stderr ? `: ${r.stderr}` : ''}`,
      '',
      'hook',
    )
  }

  private async finish(
    fr: FenceRequest,
    phase: 'Fenced' | 'Failed',
    message: string,
    action: string,
    method: string,
  ): Promise<ReconcileOutcome> {
    await this.setStatus(fr, {
      phase,
      message,
      ...(action ? { action } : {}),
      ...(phase === 'Fenced' ? { fencedAt: new Date().toISOString() } : {}),
    })
    this.metrics.fences.inc({ method, result: phase === 'Fenced' ? 'fenced' : 'failed' })
    this.log.info(
      { request: `${fr.metadata.namespace}/${fr.metadata.name}`, rid: fr.spec.rid, phase, message },
      'fence: done',
    )
    await this.events.record(fr, phase === 'Fenced' ? 'Normal' : 'Warning', phase, message)
    return { result: 'done' }
  }

  private setStatus(fr: FenceRequest, status: Record<string, unknown>): Promise<void> {
    return this.kube.patchStatus(
      {
        apiVersion: API_VERSION,
        kind: 'FenceRequest',
        plural: FENCE_PLURAL,
        namespace: fr.metadata.namespace,
        name: fr.metadata.name,
      },
      fr.metadata.resourceVersion ?? '',
      status,
    )
  }
}

function parseTargets(v: string | undefined): Array<{ name: string; uid: string }> | undefined {
  if (v === undefined) return undefined
  return v
    .split(',')
    .filter(Boolean)
    .map((s) => {
      const [name, uid] = s.split('/')
      return { name, uid: uid ?? '' }
    })
}

/** run `argv` with `env` for at most `ms`: ok on exit 0, else why and the last 500 characters of stderr */
function run(
  argv: string[],
  env: NodeJS.ProcessEnv,
  ms: number,
): Promise<{ ok: boolean; why: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(argv[0], argv.slice(1), { env, stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    p.stderr.on('data', (c: Buffer) => (err = (err + c.toString('utf8')).slice(-500)))
    const timer = setTimeout(() => p.kill('SIGKILL'), ms)
    let timedOut = false
    timer.unref()
    p.on('error', (e) => {
      clearTimeout(timer)
      resolve({ ok: false, why: `could not start: ${e.message}`, stderr: '' })
    })
    p.on('close', (code, signal) => {
      clearTimeout(timer)
      timedOut = signal === 'SIGKILL'
      resolve({
        ok: code === 0,
        why: timedOut ? `did not finish in ${ms} ms` : signal ? `died of ${signal}` : `exited ${code}`,
        stderr: err.trim(),
      })
    })
  })
}
