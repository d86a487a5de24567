/*
 * The POSIX filesystem of one mount, by inode number (FsApi), over the item cache and the
 * mount's transactions.  This class only delegates: the work is done by the subsystems, as
 * in the original's kernel module, around one shared FsContext (fs-context.ts: the item
 * cache, transactions, server, data device and the lock-taking helpers):
 *
 *   inode.ts    inode items, getattr/setattr, the seq indexes (walk-inodes)
 *   dir.ts      lookup, readdir, readlink, mknod/mkdir/symlink, link, unlink, rmdir
 *   rename.ts   rename (with the global rename lock across directories)
 *   xattr.ts    extended attributes
 *   extents.ts  data extent items, truncation
 *   data.ts     read and write
 *   orphan.ts   open counts, orphans and inode deletion
 *   quota.ts    directory quotas (limits and usage of a tree, EDQUOT)
 *   release-stage.ts, data-wait.ts   archive: release, stage, fiemap, offline data waiters
 *   xattr-tags.ts, srch.ts, totl.ts  tagged xattrs: hidden, searchable, totals
 *   ino-path.ts paths of an inode from its link backrefs
 *
 * Item encodings are fs-items.ts's; lock ranges are protocol/lock-ranges.ts's.  Every
 * operation takes its cluster locks before it holds the transaction (see fs-context.ts).
 */
import type { BlockDevice } from '../storage/device.js'
import { DATA_BLOCK_SIZE } from '../storage/format.js'
import type { ItemCache } from '../client/item-cache.js'
import type { ServerApi } from '../protocol/server-api.js'
import type { Trans } from '../client/trans.js'
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  type Attr,
  type Caller,
  type DirEntry,
  type FsApi,
  type FsName,
  type OpenInfo,
  type SetAttr,
  type StatFs,
} from './fs-api.js'
import { NAME_MAX, type Inode, type QuotaRecord } from './fs-items.js'
import { FsContext, type ClusterLocks, type FsCounters } from './fs-context.js'
import * as inode from './inode.js'
import * as dir from './dir.js'
import * as data from './data.js'
import * as xattr from './xattr.js'
import * as orphan from './orphan.js'
import { rename } from './rename.js'
import * as quota from './quota.js'
import * as archive from './release-stage.js'
import type { DataWaitOp, DataWaiting, DataWaiters } from './data-wait.js'
import { searchXattrs } from './srch.js'
import { readTotals, type XattrTotal } from './totl.js'
import { inoPaths } from './ino-path.js'
import { FsError, type Errno } from '../util/errors.js'

export type { ClusterLocks, FsCounters } from './fs-context.js'

export class Filesystem implements FsApi {
  private readonly c: FsContext

  constructor(
    readonly items: ItemCache,
    readonly trans: Trans,
    server: ServerApi,
    dataDev: BlockDevice,
    readonly rid: number,
    cluster: ClusterLocks,
  ) {
    this.c = new FsContext(items, trans, server, dataDev, rid, cluster)
  }

  get counters(): FsCounters {
    return this.c.counters
  }

  /* ---- inodes and indexes -------------------------------------------------------------- */

  getattr(ino: number): Promise<Attr> {
    return inode.getattr(this.c, ino)
  }

  setattr(ino: number, set: SetAttr): Promise<Attr> {
    return inode.setattr(this.c, ino, set)
  }

  /** The inode item of `ino` (for the admin API). */
  inode(ino: number): Promise<Inode> {
    return inode.inode(this.c, ino)
  }

  /** Entries of a seq index from `first` to `last`, at most `limit` (see inode.ts). */
  walkInodes(index: inode.SeqIndex, first: inode.SeqPos, last: inode.SeqPos, limit: number): Promise<inode.SeqPos[]> {
    return inode.walkInodes(this.c, index, first, last, limit)
  }

  async statfs(ino?: number): Promise<StatFs> {
    const q = ino === undefined ? undefined : await quota.getQuota(this.c, ino)
    const s = await this.c.server.statfs()
    const perBlock = 64 // inodes a free 64 KiB metadata block can hold, roughly
    if (q) {
      // a quota tree looks like a filesystem of its limits (df in a pod shows the volume's size)
      const blocks = Math.floor(q.limitBytes / DATA_BLOCK_SIZE)
      const used = Math.ceil(q.usedBytes / DATA_BLOCK_SIZE)
      const free = Math.min(Math.max(0, blocks - used), s.freeDataBlocks)
      return {
        bsize: DATA_BLOCK_SIZE,
        frsize: DATA_BLOCK_SIZE,
        blocks,
        bfree: free,
        bavail: free,
        files: q.limitInodes,
        ffree: Math.max(0, q.limitInodes - q.usedInodes),
        namemax: NAME_MAX,
      }
    }
    return {
      bsize: DATA_BLOCK_SIZE,
      frsize: DATA_BLOCK_SIZE,
      blocks: s.totalDataBlocks,
      bfree: s.freeDataBlocks,
      bavail: s.freeDataBlocks,
      files: s.inodeCount + this.trans.inodesCreated - this.trans.inodesDeleted + s.freeMetaBlocks * perBlock,
      ffree: s.freeMetaBlocks * perBlock,
      namemax: NAME_MAX,
    }
  }

  /** Set the quota of directory `ino` (see quota.ts setQuota). */
  setQuota(ino: number, limits: quota.QuotaLimits): Promise<QuotaRecord> {
    return quota.setQuota(this.c, ino, limits)
  }

  /** The quota of the tree `ino` is in, undefined for none. */
  getQuota(ino: number): Promise<QuotaRecord | undefined> {
    return quota.getQuota(this.c, ino)
  }

  /* ---- directories --------------------------------------------------------------------- */

  lookup(parent: number, name: FsName): Promise<Attr> {
    return dir.lookup(this.c, parent, name)
  }

  readdir(ino: number, pos: number, max: number): Promise<DirEntry[]> {
    return dir.readdir(this.c, ino, pos, max)
  }

  readlink(ino: number): Promise<string> {
    return dir.readlink(this.c, ino)
  }

  mknod(parent: number, name: FsName, mode: number, rdev: number, who: Caller): Promise<Attr> {
    return dir.mknod(this.c, parent, name, mode, rdev, who)
  }

  mkdir(parent: number, name: FsName, mode: number, who: Caller): Promise<Attr> {
    return dir.mkdir(this.c, parent, name, mode, who)
  }

  symlink(parent: number, name: FsName, target: string, who: Caller): Promise<Attr> {
    return dir.symlink(this.c, parent, name, target, who)
  }

  link(ino: number, newParent: number, newName: FsName): Promise<Attr> {
    return dir.link(this.c, ino, newParent, newName)
  }

  unlink(parent: number, name: FsName): Promise<void> {
    return dir.unlink(this.c, parent, name)
  }

  rmdir(parent: number, name: FsName): Promise<void> {
    return dir.rmdir(this.c, parent, name)
  }

  rename(parent: number, name: FsName, newParent: number, newName: FsName, flags = 0): Promise<void> {
    return rename(this.c, parent, name, newParent, newName, flags)
  }

  /* ---- open files and data ------------------------------------------------------------- */

  open(ino: number): Promise<OpenInfo> {
    return orphan.open(this.c, ino)
  }

  release(ino: number): Promise<void> {
    return orphan.release(this.c, ino)
  }

  /** The orphan scan: delete the orphans no mount has open (see orphan.ts); returns how many. */
  deleteOrphans(): Promise<number> {
    return orphan.deleteOrphans(this.c)
  }

  /** This mount's open inodes of an inode group (its answer to the open map). */
  openInodes(group: number): number[] {
    return orphan.openInodes(this.c, group)
  }

  read(ino: number, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    return data.read(this.c, ino, offset, length, into)
  }

  write(ino: number, at: number, buf: Buffer, append = false): Promise<number> {
    return data.write(this.c, ino, at, buf, append)
  }

  fallocate(ino: number, mode: number, offset: number, length: number): Promise<Attr> {
    if (mode === (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) {
      if (offset < 0 || length <= 0)
        return Promise.reject(new FsError('EINVAL', 'fallocate: offset < 0 or length <= 0'))
      return data.punchHole(this.c, ino, offset, length)
    }
    return inode.fallocate(this.c, ino, mode, offset, length)
  }

  async fsync(_ino: number, _datasync: boolean): Promise<void> {
    await this.trans.commit()
  }

  async sync(): Promise<void> {
    await this.trans.commit()
  }

  /* ---- xattrs -------------------------------------------------------------------------- */

  setxattr(ino: number, name: string, value: Buffer, flags: number): Promise<void> {
    return xattr.setxattr(this.c, ino, name, value, flags)
  }

  getxattr(ino: number, name: string): Promise<Buffer> {
    return xattr.getxattr(this.c, ino, name)
  }

  listxattr(ino: number): Promise<string[]> {
    return xattr.listxattr(this.c, ino)
  }

  removexattr(ino: number, name: string): Promise<void> {
    return xattr.removexattr(this.c, ino, name)
  }

  /* ---- archive (release-stage.ts, data-wait.ts, srch.ts, totl.ts, ino-path.ts) ---------- */

  /** Free and mark offline bytes [offset, offset + length) if data_version is `vers`. */
  releaseData(ino: number, vers: number, offset: number, length: number): Promise<number> {
    return archive.release(this.c, ino, vers, offset, length)
  }

  /** Write `data` into offline blocks at `offset` if data_version is `vers`. */
  stageData(ino: number, vers: number, offset: number, data: Buffer): Promise<number> {
    return archive.stage(this.c, ino, vers, offset, data)
  }

  fiemap(ino: number): Promise<archive.FiemapExtent[]> {
    return archive.fiemap(this.c, ino)
  }

  get dataWaiters(): Pick<DataWaiters, 'list' | 'wakeRange' | 'failAll' | 'size' | 'counters'> {
    return this.c.dataWaiters
  }

  dataWaiting(afterIno: number, afterIblock: number, max: number): DataWaiting[] {
    return this.c.dataWaiters.list(afterIno, afterIblock, max)
  }

  /** Fail this mount's waiters of `ino` doing `op` in blocks [iblock, iblock + blocks); how many. */
  dataWaitErr(ino: number, iblock: number, blocks: number, op: DataWaitOp, code: Errno): number {
    return this.c.dataWaiters.fail(ino, iblock, blocks, op, code)
  }

  searchXattrs(name: string, firstIno: number, max: number): Promise<number[]> {
    return searchXattrs(this.c, name, firstIno, max)
  }

  readXattrTotals(): Promise<XattrTotal[]> {
    return readTotals(this.c)
  }

  inoPaths(ino: number): Promise<string[]> {
    return inoPaths(this.c, ino)
  }
}
