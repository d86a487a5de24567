/*
 * File data: reads and writes through the extents on the data device (the I/O half of the
 * original's data.c; extents.ts owns the extent items).
 *
 * A write allocates holes run by run, writes the data (zero-padding partial blocks of new
 * runs) and only then records the extent, so no extent ever points at blocks holding another
 * file's old data.  A read holds the inode group's READ lock across its device reads, so no
 * writer frees the extents it reads meanwhile.
 *
 * Offline blocks (released, release-stage.ts) are waited for, as the original does: a read
 * that reaches one, and a write that would touch one (before it changes anything), registers
 * a data waiter while it still holds its lock, drops the lock, waits until woken (a stage, here
 * or on another mount) and starts over; an archive agent may fail it with an errno instead
 * (data-wait.ts).  A write never allocates over an offline block: the block is staged first.
 *
 * Punching a hole (fallocate PUNCH_HOLE) frees the blocks wholly inside the range and writes
 * zeros over the part of a partly covered block at either end (an offline one is waited for
 * first, as a write would); the size stays.
 */
import { FsError } from '../util/errors.js'
import { DATA_BLOCK_SIZE } from '../storage/format.js'
import { EXTENT_OFFLINE, encodeExtent, extentKey, nowTs } from './fs-items.js'
import type { FsContext } from './fs-context.js'
import { getInode, isDir, isReg, putInode, toAttr } from './inode.js'
import { extentAfter, extentAt, firstOffline, holeBlocks, replaceAndFree } from './extents.js'
import type { Attr } from './fs-api.js'
import { charge, opInTree, reserve } from './quota.js'
import { DataWaitOp, untilOnline, type Waiting } from './data-wait.js'

const BS = DATA_BLOCK_SIZE
const EMPTY = Buffer.alloc(0)

/**
 * Read up to `length` bytes at `offset`: into `into` when it is large enough (a buffer the
 * caller reuses; the answer is then a part of it), else into a new buffer.
 */
export function read(c: FsContext, ino: number, offset: number, length: number, into?: Buffer): Promise<Buffer> {
  return untilOnline(() => readOnce(c, ino, offset, length, into))
}

function readOnce(
  c: FsContext,
  ino: number,
  offset: number,
  length: number,
  into: Buffer | undefined,
): Promise<Buffer | Waiting> {
  return c.reading([ino], async () => {
    const i = await getInode(c, ino)
    if (isDir(i)) throw new FsError('EISDIR', `inode ${ino} is a directory`)
    if (offset >= i.size || length <= 0) return EMPTY
    const end = Math.min(i.size, offset + length)
    const out = into && into.length >= end - offset ? into.subarray(0, end - offset) : Buffer.allocUnsafe(end - offset)
    let b = Math.floor(offset / BS)
    const last = Math.floor((end - 1) / BS)
    // file bytes [from, to) land at out[from - offset]
    const part = (from: number, to: number): Buffer => out.subarray(from - offset, to - offset)
    while (b <= last) {
      const fileStart = Math.max(offset, b * BS)
      const e = await extentAt(c, ino, b)
      if (!e) {
        // a hole reads as zeros
        const next = await extentAfter(c, ino, b)
        b = next && next.iblock <= last ? next.iblock : last + 1
        part(fileStart, Math.min(end, b * BS)).fill(0)
        continue
      }
      if (e.flags & EXTENT_OFFLINE) return { waiting: c.dataWaiters.wait(ino, b, DataWaitOp.READ) }
      const runEnd = Math.min(e.iblock + e.len - 1, last)
      const phys = e.blkno + (b - e.iblock)
      await c.data.readInto(phys * BS + (fileStart - b * BS), part(fileStart, Math.min(end, (runEnd + 1) * BS)))
      b = runEnd + 1
    }
    c.counters.dataBytesRead += out.length
    return out
  })
}

export async function write(c: FsContext, ino: number, at: number, data: Buffer, append: boolean): Promise<number> {
  if (data.length === 0) return 0
  return untilOnline(() => writeOnce(c, ino, at, data, append))
}

function writeOnce(c: FsContext, ino: number, at: number, data: Buffer, append: boolean): Promise<number | Waiting> {
  return opInTree(c, ino, [ino], async (t, tree) => {
    const i = await getInode(c, ino)
    if (isDir(i)) throw new FsError('EISDIR', `inode ${ino} is a directory`)
    // the kernel's idea of the end of the file may be another mount's old one: ours is current
    const offset = append ? i.size : at
    if (offset + data.length > Number.MAX_SAFE_INTEGER) throw new FsError('EFBIG', 'write past the largest file size')
    const end = offset + data.length
    let b = Math.floor(offset / BS)
    const last = Math.floor((end - 1) / BS)
    if (i.offlineBlocks) {
      const off = await firstOffline(c, ino, b, last)
      if (off !== undefined) return { waiting: c.dataWaiters.wait(ino, off, DataWaitOp.WRITE) }
    }
    // fail for lack of space or quota before changing anything (ENOBUFS: op() commits and retries)
    const holes = await holeBlocks(c, ino, b, last)
    if (tree) await reserve(c, t, tree, holes * BS, 0)
    c.trans.reserveData(holes)
    while (b <= last) {
      const e = await extentAt(c, ino, b)
      if (e && !(e.flags & EXTENT_OFFLINE)) {
        const runEnd = Math.min(e.iblock + e.len - 1, last)
        await writeRun(c, e.blkno + (b - e.iblock), b, runEnd, offset, data, true)
        b = runEnd + 1
        continue
      }
      if (e) throw new FsError('EIO', `inode ${ino} block ${b} is offline but its inode counts no offline blocks`)
      // a hole: allocate as much of it as this write needs, run by run
      const next = await extentAfter(c, ino, b)
      const holeEnd = Math.min(last, next ? next.iblock - 1 : last)
      const got = await c.trans.allocData(holeEnd - b + 1)
      const runEnd = b + got.len - 1
      await writeRun(c, got.start, b, runEnd, offset, data, false)
      const prev = b > 0 ? await extentAt(c, ino, b - 1) : undefined
      if (prev && !(prev.flags & EXTENT_OFFLINE) && prev.blkno + prev.len === got.start)
        c.items.put(extentKey(ino, prev.iblock), encodeExtent({ ...prev, len: prev.len + got.len }), t.seq)
      else c.items.put(extentKey(ino, b), encodeExtent({ iblock: b, len: got.len, blkno: got.start, flags: 0 }), t.seq)
      i.onlineBlocks += got.len
      if (tree) await charge(c, t, tree, got.len * BS, 0)
      // the extent is recorded: so are its blocks, even if a later run of this write fails
      // (after the last run, the put below records them)
      if (runEnd < last) putInode(c, i, t, true)
      b = runEnd + 1
    }
    if (end > i.size) i.size = end
    i.dataVersion++
    i.mtime = i.ctime = nowTs()
    putInode(c, i, t, true)
    c.counters.dataBytesWritten += data.length
    return data.length
  })
}

/**
 * Write file blocks [b0, b1] (at device block `phys`) from the part of `data` (which starts
 * at file offset `offset`) that overlaps them.  Partial first/last blocks are read and
 * merged when the blocks hold file data already, zero-filled when they are new.
 */
async function writeRun(
  c: FsContext,
  phys: number,
  b0: number,
  b1: number,
  offset: number,
  data: Buffer,
  existing: boolean,
): Promise<void> {
  const runStart = b0 * BS
  const runEnd = (b1 + 1) * BS
  const from = Math.max(offset, runStart)
  const to = Math.min(offset + data.length, runEnd)
  if (from === runStart && to === runEnd) {
    await c.data.write(phys * BS, data.subarray(from - offset, to - offset))
    return
  }
  // a partial first or last block: write whole blocks, merging old contents at the edges
  const buf = Buffer.alloc(runEnd - runStart)
  if (existing) {
    if (from > runStart) (await c.data.read(phys * BS, BS)).copy(buf, 0)
    if (to < runEnd) (await c.data.read((phys + b1 - b0) * BS, BS)).copy(buf, (b1 - b0) * BS)
  }
  data.copy(buf, from - runStart, from - offset, to - offset)
  await c.data.write(phys * BS, buf)
}

/**
 * fallocate(PUNCH_HOLE | KEEP_SIZE): bytes [offset, offset + length) read as zeros from now
 * on, and the blocks wholly inside the range (within the file) are freed; the size stays.
 */
export function punchHole(c: FsContext, ino: number, offset: number, length: number): Promise<Attr> {
  return untilOnline(() =>
    opInTree(c, ino, [ino], async (t, tree): Promise<Attr | Waiting> => {
      const i = await getInode(c, ino)
      if (isDir(i)) throw new FsError('EISDIR', `inode ${ino} is a directory`)
      if (!isReg(i)) throw new FsError('ENODEV', `inode ${ino} is not a regular file`)
      const end = Math.min(offset + length, i.size)
      if (end <= offset) return toAttr(i) // nothing of the file is in the range
      const first = Math.floor(offset / BS)
      const last = Math.floor((end - 1) / BS)
      // blocks wholly inside; the file's last block counts as whole when the range reaches EOF
      const wholeFrom = Math.ceil(offset / BS)
      const wholeTo = end === i.size ? last : Math.floor(end / BS) - 1
      const edges = [...new Set([first, last])].filter((b) => b < wholeFrom || b > wholeTo)
      // an offline edge is staged first (before anything changes), as for a write
      const online: Array<{ b: number; phys: number }> = []
      for (const b of edges) {
        const e = await extentAt(c, ino, b)
        if (!e) continue // a hole reads zeros already
        if (e.flags & EXTENT_OFFLINE) return { waiting: c.dataWaiters.wait(ino, b, DataWaitOp.WRITE) }
        online.push({ b, phys: e.blkno + (b - e.iblock) })
      }
      for (const { b, phys } of online) {
        const from = Math.max(offset, b * BS)
        const to = Math.min(end, (b + 1) * BS)
        await c.data.write(phys * BS + (from - b * BS), Buffer.alloc(to - from))
      }
      if (wholeFrom <= wholeTo) {
        const n = await replaceAndFree(c, i, wholeFrom, wholeTo, undefined, t)
        if (tree && n) await charge(c, t, tree, -n * BS, 0)
      }
      i.dataVersion++
      i.mtime = i.ctime = nowTs()
      putInode(c, i, t, true)
      return toAttr(i)
    }),
  )
}
