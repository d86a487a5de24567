/*
 * The server role's metrics: only an agent that has served exports them (registered when its
 * server role first starts).  They read the role running now, and 0 while none runs.
 */
import type { ClusterServer } from '../server/server-role.js'
import type { MetricSink } from './metrics.js'

export function registerServerRoleMetrics(m: MetricSink, role: () => ClusterServer | undefined): void {
  const s = (): ClusterServer['server']['counters'] | undefined => role()?.server.counters
  m.add([
    {
      name: 'scoutfs_server_commits_total',
      help: 'Server (super block) commits',
      kind: 'counter',
      read: () => s()?.commits ?? 0,
    },
    {
      name: 'scoutfs_server_log_commits_total',
      help: 'Log trees committed to the server',
      kind: 'counter',
      read: () => s()?.logCommits ?? 0,
    },
    {
      name: 'scoutfs_server_merges_total',
      help: 'Log trees merged into the fs root',
      kind: 'counter',
      read: () => s()?.merges ?? 0,
    },
    {
      name: 'scoutfs_server_merged_items_total',
      help: 'Items merged into the fs root',
      kind: 'counter',
      read: () => s()?.mergedItems ?? 0,
    },
    {
      name: 'scoutfs_server_merge_seconds_total',
      help: 'Time spent merging log trees into the fs root',
      kind: 'counter',
      read: () => (s()?.mergeMs ?? 0) / 1000,
    },
    {
      name: 'scoutfs_server_merge_tombstones_total',
      help: 'Merged deletions kept in the fs root while an older copy was in another log tree',
      kind: 'counter',
      read: () => s()?.tombstones ?? 0,
    },
    {
      name: 'scoutfs_server_reclaims_total',
      help: 'Mounts the server reclaimed (farewell, or gone)',
      kind: 'counter',
      read: () => s()?.reclaims ?? 0,
    },
    {
      name: 'scoutfs_server_recovery_seconds',
      help: 'How long the last lock recovery took (start to granting; 0 while none ran)',
      kind: 'gauge',
      read: () => (role()?.recoveryMs ?? 0) / 1000,
    },
    {
      name: 'scoutfs_server_clients',
      help: 'Mounts connected to this server (0 on agents that do not serve)',
      kind: 'gauge',
      read: () => role()?.clientCount ?? 0,
    },
    {
      name: 'scoutfs_server_log_trees',
      help: 'Log trees the committed roots hold (open and finalized)',
      kind: 'gauge',
      read: () => role()?.server.logTrees.length ?? 0,
    },
    {
      name: 'scoutfs_lock_server_grants_total',
      help: 'Grants the lock server sent (0 on agents that do not serve)',
      kind: 'counter',
      read: () => role()?.locks.counters.grants ?? 0,
    },
    {
      name: 'scoutfs_lock_server_invalidations_total',
      help: 'Invalidations the lock server sent (0 on agents that do not serve)',
      kind: 'counter',
      read: () => role()?.locks.counters.invalidations ?? 0,
    },
  ])
}
