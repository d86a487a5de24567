/*
 * The operator process: leader election first (only the leader watches and writes), then four
 * informers (ScoutFilesystems, the agents' node status Leases, FenceRequests, format Jobs; all
 * namespaces) feeding two work queues (filesystems, fence requests) whose workers run the
 * reconcilers and count every run in OperatorMetrics.  A node Lease, a format Job or a
 * FenceRequest that changes enqueues its filesystem too, so status follows at once.  An informer whose watch fails is restarted after
 * a pause.  stop() ends the queues, the informers and the leadership (releasing the Lease).
 */
import {
  BatchV1Api,
  CoordinationV1Api,
  CustomObjectsApi,
  KubeConfig,
  makeInformer,
  type Informer,
  type KubernetesListObject,
  type KubernetesObject,
  type ObjectCache,
  type V1Job,
  type V1Lease,
} from '@kubernetes/client-node'
import { EventRecorder } from './events.js'
import { FenceReconciler, type FenceRequest } from './fence-reconciler.js'
import { FilesystemReconciler, type ReconcileOutcome } from './filesystem-reconciler.js'
import { ApiKube, KubeError, type Kube } from './kube.js'
import { LeaderElector } from './leader-election.js'
import type { Log } from './log.js'
import type { OperatorMetrics, ReconcileResult } from './metrics.js'
import { FENCE_PLURAL, FS_PLURAL, GROUP, LABEL_FS, VERSION, type ScoutFilesystem } from './types.js'
import { WorkQueue } from './work-queue.js'

export interface OperatorOptions {
  kubeConfig: KubeConfig
  /** the API calls of the reconcilers (default: ApiKube on kubeConfig) */
  kube?: Kube
  /** where the leader Lease lives */
  namespace: string
  identity: string
  leaderElect: boolean
  leaseName: string
  leaseDurationMs: number
  renewDeadlineMs: number
  retryPeriodMs: number
  workers: number
  resyncMs: number
  backoffBaseMs: number
  backoffMaxMs: number
  metrics: OperatorMetrics
  log: Log
  /** called if leadership is lost (the process should exit: another replica now acts) */
  onLostLeadership: () => void
}

type Cached<T extends KubernetesObject> = Informer<T> & ObjectCache<T>

const INFORMER_RESTART_MS = 2000

export class Operator {
  readonly kube: Kube
  private elector: LeaderElector | undefined
  private informers: Array<Cached<KubernetesObject>> = []
  private readonly fsQueue: WorkQueue
  private readonly fenceQueue: WorkQueue
  private stopped = false

  constructor(private readonly o: OperatorOptions) {
    this.kube = o.kube ?? new ApiKube(o.kubeConfig)
    const q = (controller: string): WorkQueue =>
      new WorkQueue({
        baseMs: o.backoffBaseMs,
        maxMs: o.backoffMaxMs,
        workers: o.workers,
        onDepth: (d) => o.metrics.queueDepth.set({ controller }, d),
      })
    this.fsQueue = q('filesystem')
    this.fenceQueue = q('fencerequest')
  }

  /** resolves once this replica leads and its informers have listed everything */
  async start(): Promise<void> {
    const { o } = this
    if (o.leaderElect) {
      this.elector = new LeaderElector(
        this.kube,
        {
          namespace: o.namespace,
          name: o.leaseName,
          identity: o.identity,
          leaseDurationMs: o.leaseDurationMs,
          renewDeadlineMs: o.renewDeadlineMs,
          retryPeriodMs: o.retryPeriodMs,
        },
        o.log,
      )
      o.log.info({ lease: `${o.namespace}/${o.leaseName}`, identity: o.identity }, 'waiting to lead')
      await this.elector.run(() => {
        o.metrics.leader.set(0)
        void this.stop().finally(() => o.onLostLeadership())
      })
      if (this.stopped) return
    }
    o.metrics.leader.set(1)

    const kc = o.kubeConfig
    const custom = kc.makeApiClient(CustomObjectsApi)
    const coord = kc.makeApiClient(CoordinationV1Api)
    const listCustom =
      <T extends KubernetesObject>(plural: string) =>
      async (): Promise<KubernetesListObject<T>> =>
        (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })) as KubernetesListObject<T>
    const fsInf = makeInformer<ScoutFilesystem>(kc, `/apis/${GROUP}/${VERSION}/${FS_PLURAL}`, listCustom(FS_PLURAL))
    const leaseInf = makeInformer<V1Lease>(
      kc,
      '/apis/coordination.k8s.io/v1/leases',
      () => coord.listLeaseForAllNamespaces({ labelSelector: LABEL_FS }),
      LABEL_FS,
    )
    const fenceInf = makeInformer<FenceRequest>(
      kc,
      `/apis/${GROUP}/${VERSION}/${FENCE_PLURAL}`,
      listCustom(FENCE_PLURAL),
    )
    // the format Jobs: a Job that finishes moves its filesystem on at once
    const batch = kc.makeApiClient(BatchV1Api)
    const jobSelector = `${LABEL_FS},app.kubernetes.io/component=format`
    const jobInf = makeInformer<V1Job>(
      kc,
      '/apis/batch/v1/jobs',
      () => batch.listJobForAllNamespaces({ labelSelector: jobSelector }),
      jobSelector,
    )

    const fsKey = (o: KubernetesObject): string => `${o.metadata?.namespace}/${o.metadata?.name}`
    for (const verb of ['add', 'update', 'delete'] as const) {
      fsInf.on(verb, (f) => this.fsQueue.add(fsKey(f)))
      const byLabel = (o: KubernetesObject): void => {
        const fs = o.metadata?.labels?.[LABEL_FS]
        if (fs) this.fsQueue.add(`${o.metadata?.namespace}/${fs}`)
      }
      leaseInf.on(verb, byLabel)
      jobInf.on(verb, byLabel)
      fenceInf.on(verb, (r) => {
        this.fenceQueue.add(fsKey(r))
        if (r.spec?.filesystem) this.fsQueue.add(`${r.metadata?.namespace}/${r.spec.filesystem}`)
      })
    }

    const events = new EventRecorder(this.kube, o.log)
    const fsRec = new FilesystemReconciler(
      this.kube,
      {
        filesystem: (ns, name) => fsInf.get(name, ns),
        nodeLeases: (ns, fs) => leaseInf.list(ns).filter((l) => l.metadata?.labels?.[LABEL_FS] === fs),
        fencedNodes: (ns, fs) =>
          new Set(
            fenceInf
              .list(ns)
              .filter((r) => r.spec?.filesystem === fs && r.status?.phase === 'Fenced')
              .map((r) => r.spec.nodeName || r.spec.host),
          ),
      },
      events,
      o.log,
      o.resyncMs,
    )
    const fenceRec = new FenceReconciler(
      this.kube,
      { fenceRequest: (ns, name) => fenceInf.get(name, ns), filesystem: (ns, name) => fsInf.get(name, ns) },
      events,
      o.metrics,
      o.log,
    )

    this.informers = [fsInf, leaseInf, fenceInf, jobInf] as Array<Cached<KubernetesObject>>
    for (const inf of this.informers)
      inf.on('error', (e: unknown) => {
        if (this.stopped) return
        o.log.warn({ err: e instanceof Error ? e.message : String(e) }, 'informer: watch failed; restarting')
        setTimeout(() => {
          if (!this.stopped) inf.start().catch(() => undefined)
        }, INFORMER_RESTART_MS).unref()
      })
    await Promise.all(this.informers.map((i) => this.startInformer(i)))
    if (this.stopped) return
    this.fsQueue.start(this.worker('filesystem', this.fsQueue, (ns, n) => fsRec.reconcile(ns, n)))
    this.fenceQueue.start(this.worker('fencerequest', this.fenceQueue, (ns, n) => fenceRec.reconcile(ns, n)))
    o.log.info({}, 'operator started')
  }

  /** start `inf`, trying again while the API server refuses (starting up, 429, 5xx) */
  private async startInformer(inf: Cached<KubernetesObject>): Promise<void> {
    for (;;) {
      try {
        await inf.start()
        return
      } catch (e) {
        if (this.stopped) return
        this.o.log.warn({ err: (e as Error).message.slice(0, 300) }, 'informer: list failed; trying again')
        await new Promise((r) => setTimeout(r, INFORMER_RESTART_MS))
      }
    }
  }

  private worker(
    controller: string,
    queue: WorkQueue,
    reconcile: (namespace: string, name: string) => Promise<ReconcileOutcome>,
  ): (key: string) => Promise<'done' | 'retry'> {
    const { metrics, log } = this.o
    return async (key) => {
      const [ns, name] = key.split('/')
      const end = metrics.duration.startTimer({ controller })
      let result: ReconcileResult
      try {
        const r = await reconcile(ns, name)
        end()
        if (r.result === 'retry') {
          metrics.reconciles.inc({ controller, result: 'requeue' })
          return 'retry'
        }
        result = 'success'
        if (r.recheckMs !== undefined) queue.addAfter(key, r.recheckMs)
        metrics.reconciles.inc({ controller, result })
        return 'done'
      } catch (e) {
        end()
        const code = e instanceof KubeError ? e.code : 0
        result = e instanceof KubeError && e.conflict ? 'conflict' : 'error'
        metrics.reconciles.inc({ controller, result })
        metrics.errors.inc({ controller, code: String(code) })
        const msg = (e as Error).message
        if (result === 'conflict')
          log.info({ controller, key, err: msg }, 'conflict; reconciling again from the newer object')
        else log.warn({ controller, key, err: msg }, 'reconcile failed; retrying with backoff')
        return 'retry'
      }
    }
  }

  async stop(): Promise<void> {
    if (this.stopped) return
    this.stopped = true
    this.fsQueue.stop()
    this.fenceQueue.stop()
    await Promise.all(this.informers.map((i) => i.stop().catch(() => undefined)))
    await this.elector?.stop()
    this.o.metrics.leader.set(0)
  }
}
