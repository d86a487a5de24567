/*
 * The fs layer's metrics: inodes created and deleted and file data moved by a mount's
 * filesystem; the archive's releases, stages and operations waiting for offline data.
 * (Per-operation counts and latencies come from AgentMetrics.instrument.)
 */
import type { FsCounters } from '../fs/fs.js'
import type { MetricSink } from './metrics.js'
import type { DataWaiters } from '../fs/data-wait.js'
import type { FrontendStats } from '../fs/frontend.js'

export function registerFsMetrics(
  m: MetricSink,
  fs: { readonly counters: FsCounters; readonly dataWaiters: Pick<DataWaiters, 'size' | 'counters'> },
): void {
  const f = fs.counters
  const w = fs.dataWaiters
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
    {
      name: 'scoutfs_data_released_blocks_total',
      help: 'Data blocks freed by release (now offline)',
      kind: 'counter',
      read: () => f.blocksReleased,
    },
    {
      name: 'scoutfs_data_staged_bytes_total',
      help: 'Bytes written into offline blocks by stage',
      kind: 'counter',
      read: () => f.bytesStaged,
    },
    {
      name: 'scoutfs_data_waiters',
      help: 'Operations of this mount waiting for offline data to be staged',
      kind: 'gauge',
      read: () => w.size,
    },
    {
      name: 'scoutfs_data_waits_total',
      help: 'Times an operation found offline data and waited',
      kind: 'counter',
      read: () => w.counters.waits,
    },
    {
      name: 'scoutfs_data_wait_errors_total',
      help: 'Waiters failed with an errno (data-wait-err, unmount)',
      kind: 'counter',
      read: () => w.counters.failed,
    },
  ])
}

/** The kernel's side of the mount, as the frontend counts it (none before it is attached). */
export function registerFrontendMetrics(m: MetricSink, stats: () => FrontendStats | undefined): void {
  const read = (k: keyof FrontendStats) => () => stats()?.[k] ?? 0
  m.add([
    {
      name: 'scoutfs_fuse_held_inodes',
      help: 'Inodes the kernel holds (looked up and not forgotten)',
      kind: 'gauge',
      read: read('heldInodes'),
    },
    {
      name: 'scoutfs_fuse_open_handles',
      help: 'Files and directories the kernel has open on this mount',
      kind: 'gauge',
      read: read('openHandles'),
    },
    {
      name: 'scoutfs_fuse_invalidated_inodes_total',
      help: 'Kernel inode caches (attributes, pages) invalidated after lost cluster locks',
      kind: 'counter',
      read: read('invalidatedInodes'),
    },
    {
      name: 'scoutfs_fuse_invalidated_entries_total',
      help: 'Kernel directory entries invalidated after lost cluster locks',
      kind: 'counter',
      read: read('invalidatedEntries'),
    },
    {
      name: 'scoutfs_fuse_notifies_done_total',
      help: 'Invalidation notifies the kernel finished',
      kind: 'counter',
      read: read('notifiesDone'),
    },
    {
      name: 'scoutfs_fuse_notifies_failed_total',
      help: 'Invalidation notifies the kernel refused',
      kind: 'counter',
      read: read('notifiesFailed'),
    },
    {
      name: 'scoutfs_fuse_notify_waits_expired_total',
      help: 'Lookups of a directory renamed elsewhere that stopped waiting for the kernel to drop its old name',
      kind: 'counter',
      read: read('notifyWaitsExpired'),
    },
    {
      name: 'scoutfs_fuse_moved_directories_total',
      help: 'Directories looked up under a new name while the kernel cached the old one',
      kind: 'counter',
      read: read('movedDirectories'),
    },
    {
      name: 'scoutfs_fuse_stale_parents_total',
      help: 'Operations refused ESTALE (the kernel looks the path up again and retries) because their directory was reached through a name that no longer leads there',
      kind: 'counter',
      read: read('staleParents'),
    },
    {
      name: 'scoutfs_fuse_nocaps_answers_total',
      help: "The kernel's security.capability questions (one before each write) answered by the FUSE binding without the agent",
      kind: 'counter',
      read: read('noCapsAnswers'),
    },
    {
      name: 'scoutfs_fuse_loop_wakeups_total',
      help: 'Times FUSE requests found the agent asleep (it had stopped polling /dev/fuse: mount option fuse_spin_us)',
      kind: 'counter',
      read: read('loopWakeups'),
    },
    {
      name: 'scoutfs_fuse_cached_getattrs_total',
      help: "The kernel's GETATTRs of directories (one after each name made or removed in one) answered by the FUSE binding without the agent",
      kind: 'counter',
      read: read('cachedGetattrs'),
    },
  ])
}
