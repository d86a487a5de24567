/*
 * Leader election on a coordination.k8s.io Lease (as client-go's leaderelection), so that of
 * several operator replicas exactly one acts.  The Lease names a holder and when it last renewed;
 * a replica takes the Lease only when it does not exist (create: 409 if another made it first)
 * or when the holder has not renewed for leaseDuration as measured on this replica's own clock
 * (it remembers when it last saw the record change, so clocks of different hosts never meet);
 * every write is a replace carrying the resourceVersion read, so of two replicas racing for an
 * expired Lease one gets 409.  The leader renews every retryPeriod; if it cannot renew within
 * renewDeadline it stops leading (onStopped), before another replica can take the Lease.
 */
import type { V1Lease } from '@kubernetes/client-node'
import type { Kube } from './kube.js'
import type { Log } from './log.js'

export interface LeaderElectionOptions {
  namespace: string
  name: string
  identity: string
  leaseDurationMs: number
  renewDeadlineMs: number
  retryPeriodMs: number
}

/** a MicroTime as the API server parses it (6 fractional digits), from a Date or a string read back */
function microTime(d: Date | string): string {
  return (typeof d === 'string' ? d : d.toISOString()).replace(/\.(\d{3})Z$/, '.$1000Z')
}

export class LeaderElector {
  private leading = false
  private stopped = false
  private timer: NodeJS.Timeout | undefined
  private observed: { key: string; at: number } | undefined
  private lastRenew = 0
  private stoppedLeading: (() => void) | undefined

  constructor(
    private readonly kube: Kube,
    private readonly o: LeaderElectionOptions,
    private readonly log: Log,
  ) {
    if (!(o.leaseDurationMs > o.renewDeadlineMs && o.renewDeadlineMs > o.retryPeriodMs))
      throw new RangeError('leader election: need leaseDuration > renewDeadline > retryPeriod')
  }

  get isLeader(): boolean {
    return this.leading
  }

  /** resolves once this replica leads; `onStopped` is called if it later stops leading */
  run(onStopped: () => void): Promise<void> {
    this.stoppedLeading = onStopped
    return new Promise((resolve) => {
      const tick = async (): Promise<void> => {
        if (this.stopped) return
        const ok = await this.tryAcquireOrRenew().catch((e: Error) => {
          this.log.warn({ err: e.message }, 'leader election: lease not written')
          return false
        })
        if (this.stopped) return
        const now = Date.now()
        if (ok) {
          this.lastRenew = now
          if (!this.leading) {
            this.leading = true
            this.log.info({ lease: `${this.o.namespace}/${this.o.name}`, identity: this.o.identity }, 'leading')
            resolve()
          }
        } else if (this.leading && now - this.lastRenew > this.o.renewDeadlineMs) {
          this.leading = false
          this.log.error({ lease: `${this.o.namespace}/${this.o.name}` }, 'leader election: lease lost; stopping')
          this.stoppedLeading?.()
          return
        }
        this.timer = setTimeout(() => void tick(), this.o.retryPeriodMs)
      }
      void tick()
    })
  }

  /** stop taking part; a leader releases the Lease so the next replica need not wait for it to expire */
  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    if (!this.leading) return
    this.leading = false
    const ref = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace: this.o.namespace, name: this.o.name }
    const l = await this.kube.read<V1Lease>(ref).catch(() => undefined)
    if (l?.spec?.holderIdentity !== this.o.identity) return
    await this.kube
      .replace<V1Lease>({
        ...l,
        spec: {
          holderIdentity: '',
          leaseDurationSeconds: 1,
          renewTime: microTime(new Date()) as unknown as Date,
          leaseTransitions: l.spec.leaseTransitions,
        },
      })
      .catch((e: Error) => this.log.warn({ err: e.message }, 'leader election: lease not released'))
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const now = new Date()
    const ref = { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', namespace: this.o.namespace, name: this.o.name }
    const durationS = Math.ceil(this.o.leaseDurationMs / 1000)
    const l = await this.kube.read<V1Lease>(ref)
    if (!l) {
      await this.kube.create<V1Lease>({
        apiVersion: ref.apiVersion,
        kind: ref.kind,
        metadata: { name: ref.name, namespace: ref.namespace },
        spec: {
          holderIdentity: this.o.identity,
          leaseDurationSeconds: durationS,
          acquireTime: microTime(now) as unknown as Date,
          renewTime: microTime(now) as unknown as Date,
          leaseTransitions: 0,
        },
      })
      return true
    }
    const spec = l.spec ?? {}
    const holder = spec.holderIdentity ?? ''
    const key = `${holder}|${String(spec.renewTime)}|${l.metadata?.resourceVersion}`
    if (this.observed?.key !== key) this.observed = { key, at: now.getTime() }
    const heldByOther = holder !== '' && holder !== this.o.identity
    const duration = (spec.leaseDurationSeconds ?? durationS) * 1000
    if (heldByOther && now.getTime() - this.observed.at < duration) return false
    const taking = holder !== this.o.identity
    await this.kube.replace<V1Lease>({
      ...l,
      spec: {
        ...spec,
        ...(spec.acquireTime ? { acquireTime: microTime(spec.acquireTime) as unknown as Date } : {}),
        holderIdentity: this.o.identity,
        leaseDurationSeconds: durationS,
        renewTime: microTime(now) as unknown as Date,
        ...(taking
          ? { acquireTime: microTime(now) as unknown as Date, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 }
          : {}),
      },
    })
    return true
  }
}
