/*
 * Kubernetes Events about a ScoutFilesystem or a FenceRequest (core/v1 Events, reported by
 * scoutfs-operator), so `kubectl describe` and `kubectl get events` show every transition.
 * An Event that cannot be written is logged and dropped: Events are a report, never a reason
 * to fail a reconcile.
 */
import type { KubernetesObject } from '@kubernetes/client-node'
import type { Kube } from './kube.js'
import type { Log } from './log.js'

export type EventType = 'Normal' | 'Warning'

export class EventRecorder {
  constructor(
    private readonly kube: Kube,
    private readonly log: Log,
    private readonly component = 'scoutfs-operator',
  ) {}

  async record(about: KubernetesObject, type: EventType, reason: string, message: string): Promise<void> {
    const m = about.metadata ?? {}
    const now = new Date().toISOString()
    try {
      await this.kube.create({
        apiVersion: 'v1',
        kind: 'Event',
        metadata: { generateName: `${m.name ?? 'scoutfs'}.`, namespace: m.namespace ?? 'default' },
        involvedObject: {
          apiVersion: about.apiVersion,
          kind: about.kind,
          name: m.name,
          namespace: m.namespace,
          uid: m.uid,
          resourceVersion: m.resourceVersion,
        },
        type,
        reason,
        message: message.slice(0, 1024),
        source: { component: this.component },
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
        reportingComponent: this.component,
      } as KubernetesObject)
    } catch (e) {
      this.log.warn({ err: (e as Error).message, reason }, 'event not recorded')
    }
  }
}
