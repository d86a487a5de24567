/*
 * Release and stage (the original's RELEASE and STAGE ioctls in data.c) and the extent map
 * (FIEMAP): what an archive agent uses to move file contents to an archive and back.
 *
 * Release frees the data blocks of a 4 KiB-aligned range and marks the whole range (holes
 * included, up to i_size) offline; stage writes data into offline blocks only.  Both demand
 * that data_version still equals the version the agent archived (ESTALE otherwise: the file
 * changed since) and change neither data_version, data_seq, size nor mtime/ctime; they move
 * meta_seq, since the online/offline block counts live in the inode.  Every change of extent
 * items is a replacement of the blocks [b0, b1] by one new extent (replaceRange), in the
 * transaction that changes the counts, so online + offline blocks always match the extents.
 * A stage wakes this mount's waiters of the inode when it is done; other mounts' waiters wake
 * when they lose the inode group's lock to it (data-wait.ts).
 */
import { charge, opInTree, reserve } from './quota.js'
import { FsError } from '../util/errors.js'
import { DATA_BLOCK_SIZE } from '../storage/format.js'
import { EXTENT_OFFLINE, decodeExtent, extentFirst, extentLast, type Inode } from './fs-items.js'
import type { FsContext } from './fs-context.js'
import { getInode, isReg, putInode } from './inode.js'
import { extentAt, replaceAndFree, replaceRange } from './extents.js'

const BS = DATA_BLOCK_SIZE

function checkVersion(i: Inode, vers: number): void {
  if (!isReg(i)) throw new FsError('EINVAL', `inode ${i.ino} is not a regular file`)
  if (i.dataVersion !== vers)
    throw new FsError(
      'ESTALE',
      `inode ${i.ino} has data_version ${i.dataVersion}, not ${vers}: its contents changed since they were archived`,
    )
}

function checkAligned(what: string, n: number): void {
  if (!Number.isSafeInteger(n) || n < 0 || n % BS)
    throw new FsError('EINVAL', `${what} ${n} is not a multiple of ${BS} bytes`)
}

/**
 * Release bytes [offset, offset + length) of `ino` if its data_version is `vers`: free their
 * blocks and mark them offline (to i_size).  Returns the number of blocks freed.
 */
export async function release(
  c: FsContext,
  ino: number,
  vers: number,
  offset: number,
  length: number,
): Promise<number> {
  checkAligned('release offset', offset)
  checkAligned('release length', length)
  return opInTree(c, ino, [ino], async (t, tree) => {
    const i = await getInode(c, ino)
    checkVersion(i, vers)
    const b0 = offset / BS
    const b1 = Math.min((offset + length) / BS, Math.ceil(i.size / BS)) - 1
    if (b1 < b0) return 0
    const n = await replaceAndFree(c, i, b0, b1, { blkno: 0, flags: EXTENT_OFFLINE }, t)
    // a quota counts allocated blocks: released ones no longer count
    if (tree) await charge(c, t, tree, -n * BS, 0)
    putInode(c, i, t)
    c.counters.blocksReleased += n
    return n
  })
}

/**
 * Stage `data` at `offset` of `ino` if its data_version is `vers`: every block it covers must
 * be offline; they become online, holding `data` (zero-padded to the block).  Returns the
 * bytes staged.
 */
export async function stage(c: FsContext, ino: number, vers: number, offset: number, data: Buffer): Promise<number> {
  checkAligned('stage offset', offset)
  if (data.length === 0) return 0
  const staged = await opInTree(c, ino, [ino], async (t, tree) => {
    const i = await getInode(c, ino)
    checkVersion(i, vers)
    const end = offset + data.length
    if (end > i.size)
      throw new FsError('EINVAL', `stage of bytes ${offset}..${end} goes past the file's size ${i.size}`)
    if (end % BS && end !== i.size)
      throw new FsError(
        'EINVAL',
        `stage length ${data.length} is not a multiple of ${BS} bytes and does not end at i_size`,
      )
    const b0 = offset / BS
    const b1 = Math.ceil(end / BS) - 1
    for (let b = b0; b <= b1;) {
      const e = await extentAt(c, ino, b)
      if (!e || !(e.flags & EXTENT_OFFLINE))
        throw new FsError('EINVAL', `block ${b} of inode ${ino} is not offline: only released blocks are staged`)
      b = e.iblock + e.len
    }
    // staged blocks count against the tree's quota again (EDQUOT before anything changes)
    if (tree) await reserve(c, t, tree, (b1 - b0 + 1) * BS, 0)
    c.trans.reserveData(b1 - b0 + 1)
    for (let b = b0; b <= b1;) {
      const got = await c.trans.allocData(b1 - b + 1)
      if (tree) await charge(c, t, tree, got.len * BS, 0)
      const from = (b - b0) * BS
      const bytes = Buffer.alloc(got.len * BS)
      data.copy(bytes, 0, from, Math.min(data.length, from + bytes.length))
      await c.data.write(got.start * BS, bytes)
      await replaceRange(c, i, b, b + got.len - 1, { blkno: got.start, flags: 0 }, t)
      b += got.len
    }
    putInode(c, i, t)
    c.counters.bytesStaged += data.length
    return data.length
  })
  c.dataWaiters.wakeInode(ino)
  return staged
}

export interface FiemapExtent {
  /** bytes */
  logical: number
  physical: number
  length: number
  offline: boolean
}

/** The extents of `ino` in file order (offline ones with physical 0). */
export function fiemap(c: FsContext, ino: number): Promise<FiemapExtent[]> {
  return c.reading([ino], async () => {
    await getInode(c, ino)
    const out: FiemapExtent[] = []
    for await (const it of c.items.range(extentFirst(ino), extentLast(ino))) {
      const e = decodeExtent(it.key, it.val)
      const offline = (e.flags & EXTENT_OFFLINE) !== 0
      out.push({ logical: e.iblock * BS, physical: offline ? 0 : e.blkno * BS, length: e.len * BS, offline })
    }
    return out
  })
}
