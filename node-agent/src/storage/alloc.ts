/*
 * Allocators for metadata and data blocks.
 *
 * Two structures:
 *  - ExtentAlloc: free extents in a btree, each stored twice, by position (zone FREE_BLKNO,
 *    start, len) to merge neighbours, and by size (zone FREE_ORDER, largest first, start) to
 *    allocate from the front of the largest extent, which leaves small frees room to coalesce.
 *    The server's meta_alloc and data_alloc are ExtentAllocs, and so is each mount's data
 *    avail/freed pair.
 *  - ListAllocator: the metadata allocator a transaction draws from.  Its avail blocks and the
 *    blocks it frees are plain lists of block numbers, persisted as chains of ALLOC_LIST
 *    blocks, so allocating a block for a btree never recurses into a btree.
 *
 * The invariant every piece keeps: a block freed in a transaction is not allocatable until
 * that transaction is durable.  ListAllocator puts frees of committed blocks on its freed list
 * (only blocks it allocated in this same transaction go straight back to avail); the owner of
 * the super block merges a committed freed list into meta_alloc in a later transaction.
 */
import { BlockCache, sealBlock } from './block.js'
import { Btree, BtreeTxn, type MetaAllocator } from './btree.js'
import { FsError } from '../util/errors.js'
import {
  EMPTY_LIST,
  LIST_BLOCK_CAPACITY,
  LIST_ENTRIES_OFF,
  LIST_NEXT_OFF,
  LIST_NR_OFF,
  META_BLOCK_SIZE,
  Magic,
  NULL_REF,
  Zone,
  decodeKey,
  makeKey,
  randomSeq,
  readRef,
  readU64,
  writeRef,
  writeU64,
  type AllocRoot,
  type BlockRef,
  type ListHead,
} from './format.js'

const EMPTY = Buffer.alloc(0)
const SIZE_MAX = 0x1fffffffffffff

export interface Extent {
  start: number
  len: number
}

function posKey(start: number, len: number): Buffer {
  return makeKey(Zone.FREE_BLKNO, start, 0, len)
}
function sizeKey(start: number, len: number): Buffer {
  return makeKey(Zone.FREE_ORDER, SIZE_MAX - len, 0, start)
}
const POS_FIRST = makeKey(Zone.FREE_BLKNO)
const POS_LAST = makeKey(Zone.FREE_BLKNO, SIZE_MAX, 0xff, SIZE_MAX, SIZE_MAX, SIZE_MAX)
const SIZE_FIRST = makeKey(Zone.FREE_ORDER)
const SIZE_LAST = makeKey(Zone.FREE_ORDER, SIZE_MAX, 0xff, SIZE_MAX, SIZE_MAX, SIZE_MAX)

export const allocCounters = { extentInserts: 0, extentAllocs: 0, listAllocs: 0, listFrees: 0 }

/** A btree of free extents.  `root` is the persistent AllocRoot; it is updated in place. */
export class ExtentAlloc {
  private readonly tree: Btree

  constructor(
    public root: AllocRoot,
    cache: BlockCache,
    txn?: BtreeTxn,
    readonly name = 'alloc',
  ) {
    this.tree = new Btree(root.root, cache, txn)
  }

  private sync(delta: number): void {
    this.root = { root: this.tree.root, totalLen: this.root.totalLen + delta }
  }

  get totalLen(): number {
    return this.root.totalLen
  }

  /** Every free extent, by position. */
  async *extents(): AsyncGenerator<Extent> {
    for await (const it of this.tree.range(POS_FIRST, POS_LAST)) {
      const f = decodeKey(it.key)
      yield { start: Number(f.first), len: Number(f.second) }
    }
  }

  /** Every extent as the size index has it (for check). */
  async *sizeIndex(): AsyncGenerator<Extent> {
    for await (const it of this.tree.range(SIZE_FIRST, SIZE_LAST)) {
      const f = decodeKey(it.key)
      yield { start: Number(f.second), len: SIZE_MAX - Number(f.first) }
    }
  }

  get btree(): Btree {
    return this.tree
  }

  private async add(start: number, len: number): Promise<void> {
    await this.tree.put(posKey(start, len), EMPTY, 0)
    await this.tree.put(sizeKey(start, len), EMPTY, 0)
  }

  private async remove(start: number, len: number): Promise<void> {
    await this.tree.delete(posKey(start, len))
    await this.tree.delete(sizeKey(start, len))
  }

  /** The free extent containing or starting before `blkno`, if any. */
  private async extentAtOrBefore(blkno: number): Promise<Extent | undefined> {
    const it = await this.tree.prev(makeKey(Zone.FREE_BLKNO, blkno, 0xff, SIZE_MAX, SIZE_MAX, SIZE_MAX))
    if (!it || it.key[0] !== Zone.FREE_BLKNO) return undefined
    const f = decodeKey(it.key)
    return { start: Number(f.first), len: Number(f.second) }
  }

  /** Mark [start, start+len) free, merging with free neighbours.  A double free is EIO. */
  async free(start: number, len: number): Promise<void> {
    if (len <= 0) return
    allocCounters.extentInserts++
    let s = start
    let l = len
    const left = await this.extentAtOrBefore(start + len - 1)
    if (left && left.start + left.len > start)
      throw new FsError(
        'EIO',
        `${this.name}: freeing blocks ${start}+${len} that are already free (extent ${left.start}+${left.len})`,
      )
    if (left && left.start + left.len === start) {
      await this.remove(left.start, left.len)
      s = left.start
      l += left.len
    }
    const after = await this.tree.next(makeKey(Zone.FREE_BLKNO, start + len))
    if (after && after.key[0] === Zone.FREE_BLKNO) {
      const f = decodeKey(after.key)
      if (Number(f.first) === start + len) {
        await this.remove(start + len, Number(f.second))
        l += Number(f.second)
      }
    }
    await this.add(s, l)
    this.sync(len)
  }

  /** Take up to `max` blocks from the front of the largest free extent. */
  async allocLargest(max: number): Promise<Extent | undefined> {
    const it = await this.tree.next(SIZE_FIRST)
    if (!it || it.key[0] !== Zone.FREE_ORDER) return undefined
    allocCounters.extentAllocs++
    const f = decodeKey(it.key)
    const len = SIZE_MAX - Number(f.first)
    const start = Number(f.second)
    const take = Math.min(max, len)
    await this.remove(start, len)
    if (take < len) await this.add(start + take, len - take)
    this.sync(-take)
    return { start, len: take }
  }

  /** Take exactly [start, start+len), which must be free (for tests and targeted use). */
  async allocExact(start: number, len: number): Promise<void> {
    const e = await this.extentAtOrBefore(start)
    if (!e || e.start + e.len < start + len)
      throw new FsError('ENOSPC', `${this.name}: blocks ${start}+${len} are not free`)
    await this.remove(e.start, e.len)
    if (e.start < start) await this.add(e.start, start - e.start)
    if (e.start + e.len > start + len) await this.add(start + len, e.start + e.len - start - len)
    this.sync(-len)
  }

  /** Move up to `count` blocks from this allocator into `dst` (largest extents first). */
  async moveTo(dst: ExtentAlloc, count: number): Promise<number> {
    let moved = 0
    while (moved < count) {
      const e = await this.allocLargest(count - moved)
      if (!e) break
      await dst.free(e.start, e.len)
      moved += e.len
    }
    return moved
  }
}

/* ---- lists of metadata blocks ----------------------------------------------------------- */

/** Read every block number on a list, and the list's own blocks. */
export async function readList(cache: BlockCache, head: ListHead): Promise<{ entries: number[]; blocks: BlockRef[] }> {
  const entries: number[] = []
  const blocks: BlockRef[] = []
  let ref = head.ref
  while (ref.blkno !== 0) {
    if (blocks.length > head.totalNr / LIST_BLOCK_CAPACITY + 2)
      throw new FsError('EIO', `alloc list block ${ref.blkno} is corrupt: the chain is longer than its head says`)
    blocks.push(ref)
    const cur = ref
    const parsed = await cache.read(ref, Magic.ALLOC_LIST, 'list', (b) => {
      const nr = b.readUInt32LE(LIST_NR_OFF)
      if (nr > LIST_BLOCK_CAPACITY) throw new FsError('EIO', `alloc list block ${cur.blkno} is corrupt: ${nr} entries`)
      const e: number[] = []
      for (let i = 0; i < nr; i++) e.push(readU64(b, LIST_ENTRIES_OFF + i * 8))
      return { next: readRef(b, LIST_NEXT_OFF), entries: e }
    })
    for (const e of parsed.entries) entries.push(e)
    ref = parsed.next
  }
  if (entries.length !== head.totalNr)
    throw new FsError(
      'EIO',
      `alloc list at block ${head.ref.blkno} is corrupt: head says ${head.totalNr} entries, found ${entries.length}`,
    )
  return { entries, blocks }
}

/**
 * Encode `entries` as a chain in the blocks `blknos`: at least one per LIST_BLOCK_CAPACITY
 * entries; a spare block (the list holding itself can need one more block than it fills)
 * is written with fewer or no entries.
 */
export function encodeList(
  fsid: bigint,
  entries: number[],
  blknos: number[],
): { head: ListHead; blocks: Array<{ blkno: number; buf: Buffer }> } {
  if (entries.length === 0 && blknos.length === 0) return { head: EMPTY_LIST, blocks: [] }
  const need = Math.ceil(entries.length / LIST_BLOCK_CAPACITY)
  if (blknos.length < need)
    throw new FsError('EINVAL', `list of ${entries.length} needs ${need} blocks, given ${blknos.length}`)
  const blocks: Array<{ blkno: number; buf: Buffer }> = []
  let next: BlockRef = NULL_REF
  for (let i = blknos.length - 1; i >= 0; i--) {
    const b = Buffer.alloc(META_BLOCK_SIZE)
    const part = entries.slice(i * LIST_BLOCK_CAPACITY, (i + 1) * LIST_BLOCK_CAPACITY)
    writeRef(b, LIST_NEXT_OFF, next)
    b.writeUInt32LE(part.length, LIST_NR_OFF)
    part.forEach((e, j) => writeU64(b, LIST_ENTRIES_OFF + j * 8, e))
    const seq = randomSeq()
    sealBlock(b, fsid, Magic.ALLOC_LIST, blknos[i]!, seq)
    blocks.push({ blkno: blknos[i]!, buf: b })
    next = { blkno: blknos[i]!, seq }
  }
  return { head: { ref: next, totalNr: entries.length }, blocks }
}

/**
 * A transaction's metadata allocator: allocates from `avail`, frees to `freed` (or straight
 * back to avail for blocks it allocated itself in this transaction).
 */
export class ListAllocator implements MetaAllocator {
  private readonly fresh = new Set<number>()

  constructor(
    public avail: number[],
    public freed: number[] = [],
    readonly name = 'meta',
  ) {}

  alloc(): number {
    const b = this.avail.pop()
    if (b === undefined) throw new FsError('ENOSPC', `${this.name}: no free metadata blocks left in this transaction`)
    this.fresh.add(b)
    allocCounters.listAllocs++
    return b
  }

  free(blkno: number): void {
    allocCounters.listFrees++
    if (this.fresh.delete(blkno)) this.avail.push(blkno)
    else this.freed.push(blkno)
  }

  /**
   * Persist both lists: allocates the list blocks themselves from avail (so the written avail
   * list no longer contains them) and returns the heads and the blocks to write.
   */
  persist(fsid: bigint): { avail: ListHead; freed: ListHead; blocks: Array<{ blkno: number; buf: Buffer }> } {
    const freedBlocks = Math.ceil(this.freed.length / LIST_BLOCK_CAPACITY)
    const fb: number[] = []
    for (let i = 0; i < freedBlocks; i++) fb.push(this.alloc())
    // the avail list shrinks by the blocks that hold it: the fewest blocks that can hold the rest
    const ab = Math.ceil(this.avail.length / (LIST_BLOCK_CAPACITY + 1))
    const abl: number[] = []
    for (let i = 0; i < ab; i++) abl.push(this.alloc())
    const f = encodeList(fsid, this.freed, fb)
    const a = encodeList(fsid, this.avail, abl)
    return { avail: a.head, freed: f.head, blocks: [...f.blocks, ...a.blocks] }
  }

  /** The transaction is durable: everything is committed state now. */
  committed(): void {
    this.fresh.clear()
  }
}
