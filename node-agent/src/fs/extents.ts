/*
 * The data extent items of a file: finding the extent at a block, counting holes, and
 * replacing a range (release, stage, punching holes), truncating (the mapping half of the
 * original's data.c; data.ts reads and writes through it).
 *
 * Extents never overlap and are keyed by their first file block.  Truncation frees the
 * online blocks past the new end into the transaction's data_freed tree (reused only after
 * the commit is durable) and zeroes the tail of the new last block, so a file that grows
 * again reads zeros there.
 */
import { DATA_BLOCK_SIZE } from '../storage/format.js'
import {
  EXTENT_OFFLINE,
  decodeExtent,
  encodeExtent,
  extentFirst,
  extentKey,
  extentLast,
  type DataExtent,
  type Inode,
} from './fs-items.js'
import type { FsContext, Tx } from './fs-context.js'

const BS = DATA_BLOCK_SIZE

/** The extent holding file block `b`, if any. */
export async function extentAt(c: FsContext, ino: number, b: number): Promise<DataExtent | undefined> {
  const it = await c.items.prev(extentFirst(ino), extentKey(ino, b))
  if (!it) return undefined
  const e = decodeExtent(it.key, it.val)
  return e.iblock + e.len > b ? e : undefined
}

/** The first extent starting after block `b`, if any. */
export async function extentAfter(c: FsContext, ino: number, b: number): Promise<DataExtent | undefined> {
  const it = await c.items.next(extentKey(ino, b + 1), extentLast(ino))
  return it ? decodeExtent(it.key, it.val) : undefined
}

/** The first offline block of [b0, b1], if any. */
export async function firstOffline(c: FsContext, ino: number, b0: number, b1: number): Promise<number | undefined> {
  const first = await extentAt(c, ino, b0)
  if (first && first.flags & EXTENT_OFFLINE) return b0
  for await (const it of c.items.range(extentKey(ino, b0 + 1), extentKey(ino, b1))) {
    const e = decodeExtent(it.key, it.val)
    if (e.flags & EXTENT_OFFLINE) return e.iblock
  }
  return undefined
}

/** How many blocks of [b0, b1] no extent maps. */
export async function holeBlocks(c: FsContext, ino: number, b0: number, b1: number): Promise<number> {
  let mapped = 0
  const first = await extentAt(c, ino, b0)
  if (first) mapped += Math.min(first.iblock + first.len - 1, b1) - b0 + 1
  for await (const it of c.items.range(extentKey(ino, b0 + 1), extentKey(ino, b1))) {
    const e = decodeExtent(it.key, it.val)
    mapped += Math.min(e.iblock + e.len - 1, b1) - e.iblock + 1
  }
  return b1 - b0 + 1 - mapped
}

/**
 * Replace whatever maps blocks [b0, b1] of `i` by `put` (or nothing); returns the online
 * pieces that were there (device start, length), for the caller to free, and adjusts the
 * inode's block counts for what went and what came.
 */
export async function replaceRange(
  c: FsContext,
  i: Inode,
  b0: number,
  b1: number,
  put: { blkno: number; flags: number } | undefined,
  t: Tx,
): Promise<Array<{ blkno: number; len: number }>> {
  const freed: Array<{ blkno: number; len: number }> = []
  const hits = []
  const first = await extentAt(c, i.ino, b0)
  if (first) hits.push(first)
  for await (const it of c.items.range(extentKey(i.ino, b0 + 1), extentKey(i.ino, b1)))
    hits.push(decodeExtent(it.key, it.val))
  for (const e of hits) {
    const from = Math.max(e.iblock, b0)
    const to = Math.min(e.iblock + e.len - 1, b1)
    const n = to - from + 1
    if (e.flags & EXTENT_OFFLINE) i.offlineBlocks -= n
    else {
      i.onlineBlocks -= n
      freed.push({ blkno: e.blkno + (from - e.iblock), len: n })
    }
    c.items.delete(extentKey(i.ino, e.iblock), t.seq)
    if (e.iblock < from) c.items.put(extentKey(i.ino, e.iblock), encodeExtent({ ...e, len: from - e.iblock }), t.seq)
    if (e.iblock + e.len - 1 > to) {
      const skip = to + 1 - e.iblock
      const rest = { ...e, iblock: to + 1, len: e.len - skip, blkno: e.flags & EXTENT_OFFLINE ? 0 : e.blkno + skip }
      c.items.put(extentKey(i.ino, rest.iblock), encodeExtent(rest), t.seq)
    }
  }
  if (put) {
    const len = b1 - b0 + 1
    c.items.put(extentKey(i.ino, b0), encodeExtent({ iblock: b0, len, blkno: put.blkno, flags: put.flags }), t.seq)
    if (put.flags & EXTENT_OFFLINE) i.offlineBlocks += len
    else i.onlineBlocks += len
  }
  return freed
}

/**
 * replaceRange, then free the online blocks that were there (into the transaction's
 * data_freed tree); returns how many were freed.
 */
export async function replaceAndFree(
  c: FsContext,
  i: Inode,
  b0: number,
  b1: number,
  put: { blkno: number; flags: number } | undefined,
  t: Tx,
): Promise<number> {
  let n = 0
  for (const f of await replaceRange(c, i, b0, b1, put, t)) {
    await c.trans.freeData(f.blkno, f.len)
    n += f.len
  }
  return n
}

/** Set the size of `i` to `size`, dropping (and freeing) the extents past a smaller one. */
export async function truncateExtents(c: FsContext, i: Inode, size: number, t: Tx): Promise<void> {
  if (size < i.size) {
    const keep = Math.ceil(size / BS)
    const drop: DataExtent[] = []
    for await (const it of c.items.range(extentFirst(i.ino), extentLast(i.ino))) {
      const e = decodeExtent(it.key, it.val)
      if (e.iblock + e.len > keep) drop.push(e)
    }
    for (const e of drop) {
      const cut = Math.max(keep, e.iblock)
      const freeLen = e.iblock + e.len - cut
      if (!(e.flags & EXTENT_OFFLINE)) {
        await c.trans.freeData(e.blkno + (cut - e.iblock), freeLen)
        i.onlineBlocks -= freeLen
      } else i.offlineBlocks -= freeLen
      if (cut === e.iblock) c.items.delete(extentKey(i.ino, e.iblock), t.seq)
      else c.items.put(extentKey(i.ino, e.iblock), encodeExtent({ ...e, len: cut - e.iblock }), t.seq)
    }
    // bytes past the new end in its last block must read as zeros if the file grows again
    const tail = size % BS
    if (tail) {
      const e = await extentAt(c, i.ino, Math.floor(size / BS))
      if (e && !(e.flags & EXTENT_OFFLINE)) {
        const phys = e.blkno + (Math.floor(size / BS) - e.iblock)
        await c.data.write(phys * BS + tail, Buffer.alloc(BS - tail))
      }
    }
  }
  i.size = size
}
