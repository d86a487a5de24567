/*
 * The reconciler of one ScoutFilesystem, run by the work queue with its namespace/name as key.
 * Order, each step only once the one before holds: the finalizer; the agents' ServiceAccount,
 * RoleBinding and node ConfigMap; the format (a Job, created only with spec.format.confirm; its
 * success is remembered in the Formatted condition, so the devices are never formatted twice);
 * then the node DaemonSet and the CSI objects; then the status, computed from what the nodes
 * publish (node-status.ts) and written with the resourceVersion it was computed from (a 409
 * sends the key back through the queue).  An Event is recorded for every condition that
 * changes.  On deletion the cluster-scoped children are deleted before the finalizer is
 * removed; the namespaced ones go with the owner references.
 */
import type { KubernetesObject, V1Job, V1Lease } from '@kubernetes/client-node'
import type { EventRecorder } from './events.js'
import type { Kube } from './kube.js'
import type { Log } from './log.js'
import { freshNodeStatus, type NodeStatus } from './node-status.js'
import {
  agentRoleBinding,
  agentServiceAccount,
  clusterChildren,
  configMap,
  formatJob,
  mkfsArgs,
  runningChildren,
} from './render.js'
import { computeStatus, transitions, type FormatState } from './status.js'
import {
  API_VERSION,
  FINALIZER,
  FS_KIND,
  FS_PLURAL,
  childNames,
  type ScoutFilesystem,
  type ScoutFilesystemStatus,
} from './types.js'

/** What the reconciler reads from the informers' caches. */
export interface FilesystemCaches {
  filesystem(namespace: string, name: string): ScoutFilesystem | undefined
  /** the node status Leases of a filesystem */
  nodeLeases(namespace: string, fsName: string): ReadonlyArray<KubernetesObject & { spec?: V1Lease['spec'] }>
  /** the nodes named by Fenced FenceRequests of a filesystem */
  fencedNodes(namespace: string, fsName: string): Set<string>
}

export type ReconcileOutcome = { result: 'done'; recheckMs?: number } | { result: 'retry' }

/** children applied this long ago are applied again even if unchanged (repairs manual edits and deletions) */
const REAPPLY_MS = 60_000

/** the annotation on the format Job: the mkfs arguments it runs */
const FORMAT_ARGS_ANNOTATION = 'scoutfs.io/mkfs-args'

export class FilesystemReconciler {
  constructor(
    private readonly kube: Kube,
    private readonly caches: FilesystemCaches,
    private readonly events: EventRecorder,
    private readonly log: Log,
    /** how often a filesystem is looked at again without a change (node Leases go stale) */
    private readonly resyncMs: number,
  ) {}

  /** per filesystem uid: what was last applied (canonical JSON) and when */
  private readonly applied = new Map<string, { what: string; at: number }>()

  /** server-side apply `objs`, unless exactly these were applied for this filesystem less than REAPPLY_MS ago */
  private async applyAll(fs: ScoutFilesystem, part: string, objs: KubernetesObject[]): Promise<void> {
    const key = `${fs.metadata.uid}/${part}`
    const what = canonical(objs)
    const last = this.applied.get(key)
    if (last && last.what === what && Date.now() - last.at < REAPPLY_MS) return
    for (const o of objs) await this.kube.apply(o)
    this.applied.set(key, { what, at: Date.now() })
  }

  async reconcile(namespace: string, name: string): Promise<ReconcileOutcome> {
    let fs = this.caches.filesystem(namespace, name)
    if (!fs) return { result: 'done' }
    if (fs.metadata.deletionTimestamp) {
      this.applied.delete(`${fs.metadata.uid}/base`)
      this.applied.delete(`${fs.metadata.uid}/running`)
      await this.finalize(fs)
      return { result: 'done' }
    }
    if (!(fs.metadata.finalizers ?? []).includes(FINALIZER)) {
      fs = await this.kube.mergePatch<ScoutFilesystem>(this.ref(fs), {
        metadata: {
          finalizers: [...(fs.metadata.finalizers ?? []), FINALIZER],
          resourceVersion: fs.metadata.resourceVersion,
        },
      })
    }
    await this.applyAll(fs, 'base', [agentServiceAccount(fs), agentRoleBinding(fs), configMap(fs)])

    const format = await this.format(fs)
    let childrenApplied = false
    if (format.state === 'formatted') {
      await this.applyAll(fs, 'running', runningChildren(fs))
      childrenApplied = true
    }

    const now = Date.now()
    const nodes = new Map<string, NodeStatus>()
    for (const l of this.caches.nodeLeases(namespace, name)) {
      const st = freshNodeStatus(l, now)
      if (st) nodes.set(st.node, st)
    }
    const status = computeStatus(fs, {
      format,
      childrenApplied,
      nodes,
      fencedNodes: this.caches.fencedNodes(namespace, name),
      deleting: false,
    })
    await this.writeStatus(fs, status)
    return { result: 'done', recheckMs: this.resyncMs }
  }

  /** the format's state; creates the Job when confirmed and not yet formatted */
  private async format(fs: ScoutFilesystem): Promise<FormatState> {
    const was = fs.status?.conditions?.find((c) => c.type === 'Formatted')
    if (was?.status === 'True') return { state: 'formatted' }
    if (!fs.spec.format.confirm) return { state: 'unconfirmed' }
    const n = childNames(fs)
    const ref = { apiVersion: 'batch/v1', kind: 'Job', namespace: fs.metadata.namespace, name: n.formatJob }
    const want = mkfsArgs(fs).join(' ')
    const job = await this.kube.read<V1Job>(ref)
    if (job && job.metadata?.annotations?.[FORMAT_ARGS_ANNOTATION] !== want) {
      // the spec changed the format (e.g. overwrite was added after a refusal): a new Job
      await this.kube.remove(ref, { propagationPolicy: 'Background' })
      return { state: 'running' }
    }
    if (!job) {
      const j = formatJob(fs)
      ;(j.metadata as { annotations?: Record<string, string> }).annotations = { [FORMAT_ARGS_ANNOTATION]: want }
      await this.kube.create(j)
      this.log.info(
        { filesystem: `${fs.metadata.namespace}/${fs.metadata.name}`, job: n.formatJob },
        'format job created',
      )
      return { state: 'running' }
    }
    if ((job.status?.succeeded ?? 0) > 0) return { state: 'formatted' }
    if ((job.status?.failed ?? 0) > 0)
      return {
        state: 'failed',
        message: `the format Job ${n.formatJob} failed (kubectl logs job/${n.formatJob} -n ${fs.metadata.namespace}); a device that already holds a scoutfs filesystem is formatted only with spec.format.overwrite: true`,
      }
    return { state: 'running' }
  }

  private ref(fs: ScoutFilesystem): { apiVersion: string; kind: string; namespace: string; name: string } {
    return { apiVersion: API_VERSION, kind: FS_KIND, namespace: fs.metadata.namespace, name: fs.metadata.name }
  }

  private async writeStatus(fs: ScoutFilesystem, status: ScoutFilesystemStatus): Promise<void> {
    if (sameStatus(fs.status, status)) return
    await this.kube.patchStatus(
      { ...this.ref(fs), plural: FS_PLURAL },
      fs.metadata.resourceVersion ?? '',
      status as Record<string, unknown>,
    )
    const events = transitions(fs.status?.conditions, status.conditions ?? []).map((t) => {
      const bad =
        (t.type === 'Degraded' && t.to.status === 'True') ||
        (t.type !== 'Degraded' && t.type !== 'Progressing' && t.to.status === 'False' && t.from !== undefined) ||
        t.to.reason === 'ConfirmationRequired' ||
        t.to.reason === 'FormatFailed'
      return this.events.record(
        fs,
        bad ? 'Warning' : 'Normal',
        t.to.reason,
        `${t.type} ${t.to.status}: ${t.to.message}`,
      )
    })
    await Promise.all(events)
  }

  private async finalize(fs: ScoutFilesystem): Promise<void> {
    const fin = fs.metadata.finalizers ?? []
    if (!fin.includes(FINALIZER)) return
    for (const c of clusterChildren(fs)) {
      // only what is ours: a StorageClass of the same name made by someone else stays
      const o = await this.kube.read({ apiVersion: c.apiVersion, kind: c.kind, name: c.name })
      if (
        o?.metadata?.labels?.['scoutfs.io/filesystem'] === fs.metadata.name &&
        o.metadata.labels['scoutfs.io/namespace'] === fs.metadata.namespace
      )
        await this.kube.remove({ apiVersion: c.apiVersion, kind: c.kind, name: c.name })
    }
    await this.kube.mergePatch(this.ref(fs), {
      metadata: { finalizers: fin.filter((f) => f !== FINALIZER), resourceVersion: fs.metadata.resourceVersion },
    })
    this.log.info({ filesystem: `${fs.metadata.namespace}/${fs.metadata.name}` }, 'finalized')
  }
}

/** JSON with the keys of every object sorted (the API server returns them sorted) */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`
  if (v !== null && typeof v === 'object')
    return `{${Object.keys(v)
      .sort()
      .filter((k) => (v as Record<string, unknown>)[k] !== undefined)
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`
  return JSON.stringify(v)
}

function sameStatus(a: ScoutFilesystemStatus | undefined, b: ScoutFilesystemStatus): boolean {
  return a !== undefined && canonical(a) === canonical(b)
}
