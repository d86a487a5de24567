/*
 * The lock layer's metrics on a mount: its lock client's requests, grants, invalidations and
 * local hits, and the locks it holds by mode.  (The lock server's counters are the server
 * role's: metrics-server.ts.)
 */
import type { LockClient } from '../lock/lock-client.js'
import type { MetricSink } from './metrics.js'

export function registerLockClientMetrics(m: MetricSink, locks: LockClient): void {
  const l = locks.counters
  m.add([
    {
      name: 'scoutfs_lock_requests_total',
      help: 'Cluster lock requests this mount sent to the server',
      kind: 'counter',
      read: () => l.requests,
    },
    {
      name: 'scoutfs_lock_grants_total',
      help: 'Cluster lock grants this mount received',
      kind: 'counter',
      read: () => l.grants,
    },
    {
      name: 'scoutfs_lock_invalidations_total',
      help: 'Cluster lock invalidations this mount received',
      kind: 'counter',
      read: () => l.invalidations,
    },
    {
      name: 'scoutfs_lock_waits_total',
      help: 'Lock calls that had to wait (for a grant, or for a conflicting local use to end)',
      kind: 'counter',
      read: () => l.waits,
    },
    {
      name: 'scoutfs_lock_waiters',
      help: 'Lock calls waiting now',
      kind: 'gauge',
      read: () => locks.waiting,
    },
    {
      name: 'scoutfs_lock_oldest_wait_seconds',
      help: 'How long the lock call waiting longest has waited, 0 when none waits',
      kind: 'gauge',
      read: () => locks.oldestWaitSeconds,
    },
    {
      name: 'scoutfs_lock_local_hits_total',
      help: 'Lock uses served by a lock this mount already held',
      kind: 'counter',
      read: () => l.localHits,
    },
    {
      name: 'scoutfs_lock_idle_releases_total',
      help: 'Idle locks released by this mount (beyond lock_idle_count)',
      kind: 'counter',
      read: () => l.idleReleases,
    },
  ])
}

/** Registered after every other reading of the mount (the order of the exposition). */
export function registerLocksHeldMetric(m: MetricSink, locks: LockClient): void {
  m.addLabeled('scoutfs_locks_held', 'Cluster locks this mount holds, by mode', 'mode', () => {
    const h = locks.heldByMode()
    return { read: h.read, write: h.write, write_only: h.writeOnly }
  })
}
