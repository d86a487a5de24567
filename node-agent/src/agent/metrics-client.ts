/*
 * The client layer's metrics: a mount's item cache, transactions and forest reads.  Readings
 * read the components' own counters at scrape time; names, types and help texts are part of
 * the agent's metrics interface (dashboards and tests scrape them).
 */
import type { Forest } from '../client/forest.js'
import type { ItemCache } from '../client/item-cache.js'
import type { Trans } from '../client/trans.js'
import type { MetricSink } from './metrics.js'

export function registerItemCacheMetrics(m: MetricSink, items: ItemCache): void {
  const c = items.counters
  m.add([
    {
      name: 'scoutfs_item_cache_hits_total',
      help: 'Item cache lookups answered from the cache',
      kind: 'counter',
      read: () => c.hits,
    },
    {
      name: 'scoutfs_item_cache_misses_total',
      help: 'Item cache lookups that read the forest',
      kind: 'counter',
      read: () => c.misses,
    },
    {
      name: 'scoutfs_item_cache_read_retries_total',
      help: 'Forest reads retried because a commit raced them',
      kind: 'counter',
      read: () => c.readRetries,
    },
    {
      name: 'scoutfs_item_cache_shrinks_total',
      help: 'Times the item cache shrank',
      kind: 'counter',
      read: () => c.shrinks,
    },
    {
      name: 'scoutfs_item_cache_shrunk_items_total',
      help: 'Clean items dropped by shrinking',
      kind: 'counter',
      read: () => c.shrunkItems,
    },
    { name: 'scoutfs_item_cache_items', help: 'Items in the item cache', kind: 'gauge', read: () => items.size },
    {
      name: 'scoutfs_item_cache_pages',
      help: 'Covered key ranges (pages) in the item cache',
      kind: 'gauge',
      read: () => items.intervals,
    },
    {
      name: 'scoutfs_item_cache_bytes',
      help: 'Bytes of keys and values in the item cache',
      kind: 'gauge',
      read: () => items.bytes,
    },
    {
      name: 'scoutfs_item_cache_dirty_items',
      help: 'Dirty items in the open transaction',
      kind: 'gauge',
      read: () => items.dirtyItems,
    },
    {
      name: 'scoutfs_item_cache_dirty_bytes',
      help: 'Bytes of dirty items in the open transaction',
      kind: 'gauge',
      read: () => items.dirtyBytes,
    },
  ])
}

export function registerTransMetrics(m: MetricSink, trans: Trans): void {
  const t = trans.counters
  m.add([
    {
      name: 'scoutfs_trans_commits_total',
      help: 'Transactions committed by this mount',
      kind: 'counter',
      read: () => t.commits,
    },
    {
      name: 'scoutfs_trans_commit_items_total',
      help: 'Items written by commits',
      kind: 'counter',
      read: () => t.commitItems,
    },
    {
      name: 'scoutfs_trans_commit_bytes_total',
      help: 'Metadata bytes written by commits',
      kind: 'counter',
      read: () => t.commitBlocks * 65536,
    },
    {
      name: 'scoutfs_trans_commit_seconds_total',
      help: 'Time spent committing',
      kind: 'counter',
      read: () => t.commitMs / 1000,
    },
    {
      name: 'scoutfs_trans_last_commit_seconds',
      help: 'Duration of the last commit',
      kind: 'gauge',
      read: () => t.lastCommitMs / 1000,
    },
    {
      name: 'scoutfs_trans_seq',
      help: 'Seq of the open transaction (0: none open)',
      kind: 'gauge',
      read: () => trans.openSeq,
    },
  ])
}

export function registerForestMetrics(m: MetricSink, forest: Forest): void {
  const f = forest.counters
  m.add([
    {
      name: 'scoutfs_forest_reads_total',
      help: 'Forest reads (item cache misses)',
      kind: 'counter',
      read: () => f.reads,
    },
    {
      name: 'scoutfs_forest_stale_retries_total',
      help: 'Forest reads retried after refreshing roots',
      kind: 'counter',
      read: () => f.staleRetries,
    },
  ])
}
