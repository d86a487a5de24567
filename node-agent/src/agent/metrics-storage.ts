/*
 * The storage layer's metrics: the metadata block cache of a mount and the btrees read and
 * written through block caches.  Readings read the components' own counters at scrape time.
 * Btree counters belong to a block cache (btreeCountersOf): the agent exports the sum over the
 * caches it owns (its mount's, and its server role's while it serves), as one process did when
 * the counters were global.
 */
import type { BlockCache } from '../storage/block.js'
import type { BtreeCounters } from '../storage/btree.js'
import { DATA_BLOCK_SIZE, META_BLOCK_SIZE } from '../storage/format.js'
import type { ServerStatfs } from '../protocol/server-api.js'
import { FsError } from '../util/errors.js'
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
      name: 'scoutfs_block_read_bytes_total',
      help: 'Metadata bytes read from the device',
      kind: 'counter',
      read: () => b.reads * META_BLOCK_SIZE,
    },
    {
      name: 'scoutfs_block_written_bytes_total',
      help: 'Metadata bytes written to the device',
      kind: 'counter',
      read: () => b.writes * META_BLOCK_SIZE,
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

/**
 * How long a scrape waits for the server's statfs answer before it reports the last one: a
 * scrape must stay quick in a failover (Prometheus gives up on a slow one: every metric of
 * the agent would be missing, the quorum ones that say what is wrong too).
 */
const STATFS_WAIT_MS = 250

/**
 * The filesystem's size and free space as the server counts them (`statfs`: one question to
 * the server at most every second, shared by the four readings of a scrape).  While the
 * server does not answer, the last answer is reported.
 */
export function registerFreeSpaceMetrics(m: MetricSink, statfs: () => Promise<ServerStatfs>): void {
  let last: ServerStatfs | undefined
  let inflight: Promise<ServerStatfs | undefined> | undefined
  let askedAt = 0
  const ask = async (): Promise<ServerStatfs> => {
    if (!inflight && Date.now() - askedAt > 1000) {
      askedAt = Date.now()
      inflight = statfs().then(
        (a) => (last = a),
        () => undefined,
      )
      void inflight.finally(() => (inflight = undefined))
    }
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<undefined>((res) => {
      timer = setTimeout(() => res(undefined), STATFS_WAIT_MS)
    })
    try {
      const got = inflight ? await Promise.race([inflight, late]) : undefined
      const a = got ?? last
      if (!a) throw new FsError('ETIMEDOUT', 'statfs: no answer from the server yet')
      return a
    } finally {
      clearTimeout(timer)
    }
  }
  m.add([
    {
      name: 'scoutfs_meta_size_bytes',
      help: 'Size of the metadata device the filesystem uses',
      kind: 'gauge',
      read: async () => (await ask()).totalMetaBlocks * META_BLOCK_SIZE,
    },
    {
      name: 'scoutfs_meta_free_bytes',
      help: 'Free metadata space',
      kind: 'gauge',
      read: async () => (await ask()).freeMetaBlocks * META_BLOCK_SIZE,
    },
    {
      name: 'scoutfs_data_size_bytes',
      help: 'Size of the data device the filesystem uses',
      kind: 'gauge',
      read: async () => (await ask()).totalDataBlocks * DATA_BLOCK_SIZE,
    },
    {
      name: 'scoutfs_data_free_bytes',
      help: 'Free data space',
      kind: 'gauge',
      read: async () => (await ask()).freeDataBlocks * DATA_BLOCK_SIZE,
    },
  ])
}
