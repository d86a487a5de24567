/*
 * The storage layer's metrics: the metadata block cache of a mount and the btrees read and
 * written through block caches.  Readings read the components' own counters at scrape time.
 * Btree counters belong to a block cache (btreeCountersOf): the agent exports the sum over the
 * caches it owns (its mount's, and its server role's while it serves), as one process did when
 * the counters were global.
 */
import type { BlockCache } from '../storage/block.js'
import type { BtreeCounters } from '../storage/btree.js'
import type { MetricSink } from './metrics.js'

export function registerBlockCacheMetrics(m: MetricSink, cache: BlockCache): void {
  const b = cache.counters
  m.add([
    {
      name: 'scoutfs_block_cache_hits_total',
      help: 'Metadata block cache hits',
      kind: 'counter',
      read: () => b.cacheHits,
    },
    {
      name: 'scoutfs_block_cache_misses_total',
      help: 'Metadata block cache misses',
      kind: 'counter',
      read: () => b.cacheMisses,
    },
    {
      name: 'scoutfs_block_reads_total',
      help: 'Metadata blocks read from the device',
      kind: 'counter',
      read: () => b.reads,
    },
    {
      name: 'scoutfs_block_writes_total',
      help: 'Metadata blocks written to the device',
      kind: 'counter',
      read: () => b.writes,
    },
    {
      name: 'scoutfs_block_stale_reads_total',
      help: 'Metadata blocks read stale (seq or blkno mismatch)',
      kind: 'counter',
      read: () => b.staleReads,
    },
    {
      name: 'scoutfs_block_corrupt_reads_total',
      help: 'Metadata blocks that failed checksum, magic or fsid checks',
      kind: 'counter',
      read: () => b.corruptReads,
    },
  ])
}

/** `sources`: the btree counters this agent owns now (read at every scrape). */
export function registerBtreeMetrics(m: MetricSink, sources: () => readonly BtreeCounters[]): void {
  const sum = (k: keyof BtreeCounters): number => sources().reduce((n, c) => n + c[k], 0)
  m.add([
    {
      name: 'scoutfs_btree_splits_total',
      help: 'Btree block splits',
      kind: 'counter',
      read: () => sum('splits'),
    },
    {
      name: 'scoutfs_btree_joins_total',
      help: 'Btree block joins',
      kind: 'counter',
      read: () => sum('joins'),
    },
  ])
}
