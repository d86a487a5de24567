/*
 * The fs layer's metrics: inodes created and deleted and file data moved by a mount's
 * filesystem.  (Per-operation counts and latencies come from AgentMetrics.instrument.)
 */
import type { FsCounters } from '../fs/fs.js'
import type { MetricSink } from './metrics.js'

export function registerFsMetrics(m: MetricSink, fs: { readonly counters: FsCounters }): void {
  const f = fs.counters
  m.add([
    {
      name: 'scoutfs_inodes_created_total',
      help: 'Inodes created by this mount',
      kind: 'counter',
      read: () => f.inodesCreated,
    },
    {
      name: 'scoutfs_inodes_deleted_total',
      help: 'Inodes deleted by this mount',
      kind: 'counter',
      read: () => f.inodesDeleted,
    },
    {
      name: 'scoutfs_data_written_bytes_total',
      help: 'File data bytes written',
      kind: 'counter',
      read: () => f.dataBytesWritten,
    },
    {
      name: 'scoutfs_data_read_bytes_total',
      help: 'File data bytes read',
      kind: 'counter',
      read: () => f.dataBytesRead,
    },
  ])
}
