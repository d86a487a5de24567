/*
 * Inodes: reading and writing inode items, attributes (getattr/setattr), and the seq indexes
 * (the original's inode.c and index walks).
 *
 * Each inode change stamps meta_seq (and data_seq for data changes) with the transaction's
 * seq and moves the inode's seq index items in the same transaction (putInode), so
 * `walk-inodes` finds exactly the inodes changed since a seq.
 */
import { FsError } from '../util/errors.js'
import { DATA_BLOCK_SIZE } from '../storage/format.js'
import { FALLOC_FL_KEEP_SIZE, S_IFDIR, S_IFMT, S_IFREG, type Attr, type SetAttr } from './fs-api.js'
import {
  dataSeqKey,
  decodeInode,
  decodeSeqKey,
  encodeInode,
  inodeKey,
  metaSeqKey,
  msToTs,
  nowTs,
  tsToMs,
  type Inode,
} from './fs-items.js'
import { INDEX_READ, type FsContext, type Tx } from './fs-context.js'
import { firstOffline, truncateExtents } from './extents.js'
import { charge, opInTree } from './quota.js'
import { DataWaitOp, untilOnline, type Waiting } from './data-wait.js'

const EMPTY = Buffer.alloc(0)

export const isDir = (i: Inode): boolean => (i.mode & S_IFMT) === S_IFDIR
export const isReg = (i: Inode): boolean => (i.mode & S_IFMT) === S_IFREG

export async function readInode(c: FsContext, ino: number): Promise<Inode | undefined> {
  const v = await c.items.get(inodeKey(ino))
  return v ? decodeInode(ino, v) : undefined
}

export async function getInode(c: FsContext, ino: number): Promise<Inode> {
  const i = await readInode(c, ino)
  if (!i) throw new FsError('ENOENT', `inode ${ino} does not exist`)
  return i
}

export async function getDir(c: FsContext, ino: number): Promise<Inode> {
  const d = await getInode(c, ino)
  if (!isDir(d)) throw new FsError('ENOTDIR', `inode ${ino} is not a directory`)
  return d
}

/** Write the inode in transaction `t`, moving its seq index items along. */
export function putInode(c: FsContext, i: Inode, t: Tx, dataChanged = false): void {
  if (i.metaSeq !== t.trans) {
    if (i.metaSeq) c.items.delete(metaSeqKey(i.metaSeq, i.ino), t.seq)
    i.metaSeq = t.trans
    c.items.put(metaSeqKey(t.trans, i.ino), EMPTY, t.seq)
  }
  if (dataChanged && isReg(i) && i.dataSeq !== t.trans) {
    if (i.dataSeq) c.items.delete(dataSeqKey(i.dataSeq, i.ino), t.seq)
    i.dataSeq = t.trans
    c.items.put(dataSeqKey(t.trans, i.ino), EMPTY, t.seq)
  }
  c.items.put(inodeKey(i.ino), encodeInode(i), t.seq)
}

export function toAttr(i: Inode): Attr {
  return {
    ino: i.ino,
    mode: i.mode,
    nlink: i.nlink,
    uid: i.uid,
    gid: i.gid,
    rdev: i.rdev,
    size: i.size,
    blocks: i.onlineBlocks * (DATA_BLOCK_SIZE / 512),
    atimeMs: tsToMs(i.atime),
    mtimeMs: tsToMs(i.mtime),
    ctimeMs: tsToMs(i.ctime),
    crtimeMs: tsToMs(i.crtime),
  }
}

/** The inode `ino`, read under its READ lock. */
export function inode(c: FsContext, ino: number): Promise<Inode> {
  return c.reading([ino], () => getInode(c, ino))
}

export function getattr(c: FsContext, ino: number): Promise<Attr> {
  return c.reading([ino], async () => toAttr(await getInode(c, ino)))
}

export function setattr(c: FsContext, ino: number, set: SetAttr): Promise<Attr> {
  return untilOnline(() => setattrOnce(c, ino, set))
}

function setattrOnce(c: FsContext, ino: number, set: SetAttr): Promise<Attr | Waiting> {
  return opInTree(c, ino, [ino], async (t, tree) => {
    const i = await getInode(c, ino)
    // a size change waits for the whole file to be online, as the original's (data-wait.ts)
    if (set.size !== undefined && i.offlineBlocks) {
      const off = await firstOffline(c, ino, 0, Math.max(0, Math.ceil(i.size / DATA_BLOCK_SIZE) - 1))
      if (off !== undefined) return { waiting: c.dataWaiters.wait(ino, off, DataWaitOp.CHANGE_SIZE) }
    }
    const now = nowTs()
    let dataChanged = false
    if (set.mode !== undefined) i.mode = (i.mode & S_IFMT) | (set.mode & 0o7777)
    if (set.uid !== undefined && set.uid !== -1 && set.uid !== 0xffffffff) i.uid = set.uid
    if (set.gid !== undefined && set.gid !== -1 && set.gid !== 0xffffffff) i.gid = set.gid
    if (set.size !== undefined) {
      if (isDir(i)) throw new FsError('EISDIR', `inode ${ino} is a directory`)
      if (!isReg(i)) throw new FsError('EINVAL', `inode ${ino} is not a regular file`)
      if (set.size < 0) throw new FsError('EINVAL', 'negative size')
      const blocks = i.onlineBlocks
      await truncateExtents(c, i, set.size, t)
      if (tree) await charge(c, t, tree, (i.onlineBlocks - blocks) * DATA_BLOCK_SIZE, 0)
      i.dataVersion++
      i.mtime = now
      dataChanged = true
    }
    if (set.atimeMs !== undefined) i.atime = msToTs(set.atimeMs)
    if (set.mtimeMs !== undefined) i.mtime = msToTs(set.mtimeMs)
    i.ctime = now
    putInode(c, i, t, dataChanged)
    return toAttr(i)
  })
}

/** fallocate modes 0 and KEEP_SIZE (FsApi.fallocate): the size grows, no block is reserved */
export function fallocate(c: FsContext, ino: number, mode: number, offset: number, length: number): Promise<Attr> {
  if (mode & ~FALLOC_FL_KEEP_SIZE)
    return Promise.reject(
      new FsError('EOPNOTSUPP', `fallocate mode ${mode}: only 0, KEEP_SIZE and PUNCH_HOLE|KEEP_SIZE`),
    )
  if (offset < 0 || length <= 0) return Promise.reject(new FsError('EINVAL', 'fallocate: offset < 0 or length <= 0'))
  return c.op([ino], async (t) => {
    const i = await getInode(c, ino)
    if (isDir(i)) throw new FsError('EISDIR', `inode ${ino} is a directory`)
    if (!isReg(i)) throw new FsError('ENODEV', `inode ${ino} is not a regular file`)
    if (!(mode & FALLOC_FL_KEEP_SIZE) && offset + length > i.size) {
      i.size = offset + length
      i.dataVersion++
      i.mtime = i.ctime = nowTs()
      putInode(c, i, t, true)
    }
    return toAttr(i)
  })
}

export type SeqIndex = 'meta_seq' | 'data_seq'
export interface SeqPos {
  seq: number
  ino: number
}

/**
 * Entries of a seq index from (firstSeq, firstIno) to (lastSeq, lastIno), at most `limit`.
 * Only committed changes are indexed: the caller commits first, and LAST is clamped to the
 * last seq no mount still has open, so a later walk never finds an entry behind this one.
 * The index READ lock makes every other mount commit what it wrote under its WRITE_ONLY
 * index lock first, so the walk lists the changes of every mount.
 */
export function walkInodes(
  c: FsContext,
  index: SeqIndex,
  first: SeqPos,
  last: SeqPos,
  limit: number,
): Promise<SeqPos[]> {
  return c.withLocks([INDEX_READ], async () => {
    const stable = await c.server.getLastSeq()
    if (last.seq > stable) last = { seq: stable, ino: Number.MAX_SAFE_INTEGER }
    const key = index === 'meta_seq' ? metaSeqKey : dataSeqKey
    const out: SeqPos[] = []
    if (first.seq > last.seq) return out
    for await (const it of c.items.range(key(first.seq, first.ino), key(last.seq, last.ino))) {
      out.push(decodeSeqKey(it.key))
      if (out.length >= limit) break
    }
    return out
  })
}
