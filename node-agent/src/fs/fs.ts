/*
 * The POSIX filesystem of one mount, by inode number (FsApi), over the item cache and the
 * mount's transactions.
 *
 * Cluster locks (DESIGN §8) guard every item this mount reads or writes, so what another
 * mount did is what the next operation here sees.  A read takes READ on the inode group of
 * each inode it reads, one group at a time.  A change locks the inodes it touches locally
 * (inode-number order), then takes their groups' cluster locks in WRITE, the seq index's in
 * WRITE_ONLY (and the orphan zone's when it may orphan or delete an inode), and only then
 * holds the transaction; it never waits for a lock while holding it.  Its items carry
 * max(transaction seq, the write seqs of those locks), so a later holder's always win.
 * Cross-directory renames take the global rename lock first.
 *
 * Each inode change stamps meta_seq (and data_seq for data changes) with the transaction's
 * seq and moves the inode's seq index items in the same transaction, so `walk-inodes` finds
 * exactly the inodes changed since a seq.
 *
 * File data lives in extents on the data device.  A write allocates holes run by run, writes
 * the data (zero-padding partial blocks of new runs) and only then records the extent, so no
 * extent ever points at blocks holding another file's old data.  Freed data blocks go to the
 * transaction's data_freed tree and are reused only after the commit is durable.
 *
 * Unlinked inodes that are still open on this mount stay as orphans (an orphan item names
 * the mount) and are deleted at their last release, or by the orphan scan of the next mount
 * that starts after this one is gone.  Opens on other mounts are not known here (no open map
 * yet): an inode unlinked here while open elsewhere is deleted at once.
 */
import type { BlockDevice } from '../storage/device.js'
import { FsError, isFsError } from '../util/errors.js'
import { DATA_BLOCK_SIZE, KeyType } from '../storage/format.js'
import {
  DT,
  ROOT_INO,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  dtypeOf,
  XATTR_CREATE,
  XATTR_REPLACE,
  type Attr,
  type Caller,
  type DirEntry,
  type FsApi,
  type SetAttr,
  type StatFs,
} from './fs-api.js'
import {
  EXTENT_OFFLINE,
  NAME_MAX,
  ORPHAN_FIRST,
  ORPHAN_LAST,
  SYMLINK_MAX,
  XATTR_HDR,
  XATTR_NAME_MAX,
  XATTR_PART_MAX,
  XATTR_SIZE_MAX,
  backrefFirst,
  backrefKey,
  backrefLast,
  dataSeqKey,
  decodeDirent,
  decodeExtent,
  decodeInode,
  direntHashFirst,
  direntHashLast,
  direntKey,
  encodeDirent,
  encodeExtent,
  encodeInode,
  extentFirst,
  extentKey,
  extentLast,
  inodeFirstKey,
  inodeKey,
  inodeLastKey,
  metaSeqKey,
  msToTs,
  nameHash,
  newInode,
  nowTs,
  orphanKey,
  readdirKey,
  readdirLast,
  symlinkKey,
  tsToMs,
  xattrFirst,
  xattrHash,
  xattrHashFirst,
  xattrHashLast,
  xattrKey,
  xattrLast,
  type DataExtent,
  type Dirent,
  type Inode,
} from './fs-items.js'
import { InodeLocks } from '../lock/inode-locks.js'
import type { ItemCache } from '../client/item-cache.js'
import type { LockHandle, UnlockOpts } from '../lock/lock-client.js'
import { LockMode, LockOrderClass, type OrderedLockRequest } from '../protocol/lock-modes.js'
import { ORPHAN_RANGE, RENAME_LOCK_RANGE, SEQ_INDEX_RANGE, inodeGroupRange } from '../protocol/lock-ranges.js'
import type { ServerApi } from '../protocol/server-api.js'
import type { Trans } from '../client/trans.js'

const EMPTY = Buffer.alloc(0)
const BS = DATA_BLOCK_SIZE
const INO_BATCH = 1024

/**
 * The seqs of one changing operation: `trans` is its transaction's (meta_seq, data_seq and
 * the index keys use it); `seq` is the version its items carry, max(trans, the write seqs of
 * the cluster locks it holds), so a later holder's items always sort after an earlier one's.
 */
interface Tx {
  trans: number
  seq: number
}

/** What the filesystem needs of the cluster lock client (lock-client.ts LockClient). */
export interface ClusterLocks {
  lockAll(reqs: readonly OrderedLockRequest[]): Promise<LockHandle[]>
  unlockAll(handles: readonly LockHandle[], opts?: UnlockOpts): void
}

/** The cluster lock of the inode group holding `ino`. */
export function inodeLock(ino: number, mode: LockMode): OrderedLockRequest {
  return { cls: LockOrderClass.INODE, range: inodeGroupRange(ino), mode, ino }
}
const INDEX_WRITE_ONLY: OrderedLockRequest = {
  cls: LockOrderClass.WRITE_ONLY,
  range: SEQ_INDEX_RANGE,
  mode: LockMode.WRITE_ONLY,
}
const INDEX_READ: OrderedLockRequest = { cls: LockOrderClass.INDEX, range: SEQ_INDEX_RANGE, mode: LockMode.READ }
const ORPHAN_WRITE_ONLY: OrderedLockRequest = {
  cls: LockOrderClass.WRITE_ONLY,
  range: ORPHAN_RANGE,
  mode: LockMode.WRITE_ONLY,
}
const ORPHAN_READ: OrderedLockRequest = { cls: LockOrderClass.INDEX, range: ORPHAN_RANGE, mode: LockMode.READ }
const RENAME_WRITE: OrderedLockRequest = {
  cls: LockOrderClass.RENAME,
  range: RENAME_LOCK_RANGE,
  mode: LockMode.WRITE,
}

/** the `second` field of a key (a safe integer) */
const keySecond = (k: Buffer): number => k.readUInt32BE(10) * 0x100000000 + k.readUInt32BE(14)

/** an orphan item's value: the mount holding the unlinked inode open */
function orphanValue(rid: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(rid))
  return b
}

const isDir = (i: Inode): boolean => (i.mode & S_IFMT) === S_IFDIR
const isReg = (i: Inode): boolean => (i.mode & S_IFMT) === S_IFREG

function checkName(name: string): Buffer {
  const b = Buffer.from(name, 'utf8')
  if (b.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${b.length} bytes exceeds ${NAME_MAX}`)
  if (b.length === 0 || b.includes(0x2f) || name === '.' || name === '..')
    throw new FsError('EINVAL', `'${name}' is not a valid file name`)
  return b
}

export interface FsCounters {
  inodesCreated: number
  inodesDeleted: number
  orphansDeleted: number
  dataBytesWritten: number
  dataBytesRead: number
}

export class Filesystem implements FsApi {
  readonly counters: FsCounters = {
    inodesCreated: 0,
    inodesDeleted: 0,
    orphansDeleted: 0,
    dataBytesWritten: 0,
    dataBytesRead: 0,
  }
  private readonly locks = new InodeLocks()
  private renameLock: Promise<void> = Promise.resolve()
  private readonly opens = new Map<number, number>()
  private inoNext = 0
  private inoEnd = 0

  constructor(
    readonly items: ItemCache,
    readonly trans: Trans,
    private readonly server: ServerApi,
    private readonly data: BlockDevice,
    readonly rid: number,
    private readonly cluster: ClusterLocks,
  ) {}

  /* ---- plumbing ------------------------------------------------------------------------ */

  /**
   * Run `fn` with `inos` locked (locally, then their cluster locks in WRITE with the seq
   * index's WRITE_ONLY lock, and the orphan zone's when `orphans`) and the transaction held.
   * A data allocator that ran dry in this transaction (ENOBUFS) is refilled by a commit and
   * the operation retried once; still dry means the device is full (ENOSPC).
   */
  private async op<T>(inos: number[], fn: (t: Tx) => Promise<T>, o: { orphans?: boolean } = {}): Promise<T> {
    const reqs: OrderedLockRequest[] = inos.map((ino) => inodeLock(ino, LockMode.WRITE))
    reqs.push(INDEX_WRITE_ONLY)
    if (o.orphans) reqs.push(ORPHAN_WRITE_ONLY)
    for (let attempt = 0; ; attempt++) {
      const unlock = await this.locks.lock(inos)
      let retry = false
      try {
        const held = await this.cluster.lockAll(reqs)
        let transSeq: number | undefined
        try {
          transSeq = await this.trans.hold()
          // an item's seq also exceeds the write seqs of its locks (DESIGN §5)
          const t: Tx = { trans: transSeq, seq: Math.max(transSeq, ...held.map((h) => h.writeSeq)) }
          try {
            return await fn(t)
          } catch (e) {
            if (!isFsError(e, 'ENOBUFS')) throw e
            if (attempt > 0) throw new FsError('ENOSPC', 'the data device is full')
            retry = true
          } finally {
            this.trans.release()
          }
        } finally {
          this.cluster.unlockAll(held, { transSeq })
        }
      } finally {
        unlock()
      }
      if (retry) await this.trans.commit()
    }
  }

  /** Run `fn` with READ cluster locks on the groups of `inos` (reads take no local locks). */
  private reading<T>(inos: number[], fn: () => Promise<T>): Promise<T> {
    return this.withLocks(
      inos.map((ino) => inodeLock(ino, LockMode.READ)),
      fn,
    )
  }

  /** Run `fn` holding cluster locks (taken in the deadlock-free order). */
  private async withLocks<T>(reqs: readonly OrderedLockRequest[], fn: () => Promise<T>): Promise<T> {
    const held = await this.cluster.lockAll(reqs)
    try {
      return await fn()
    } finally {
      this.cluster.unlockAll(held)
    }
  }

  private async allocIno(): Promise<number> {
    if (this.inoNext >= this.inoEnd) {
      const r = await this.server.allocInodes(this.rid, INO_BATCH)
      this.inoNext = r.first
      this.inoEnd = r.first + r.count
    }
    return this.inoNext++
  }

  private async readInode(ino: number): Promise<Inode | undefined> {
    const v = await this.items.get(inodeKey(ino))
    return v ? decodeInode(ino, v) : undefined
  }

  private async getInode(ino: number): Promise<Inode> {
    const i = await this.readInode(ino)
    if (!i) throw new FsError('ENOENT', `inode ${ino} does not exist`)
    return i
  }

  private async getDir(ino: number): Promise<Inode> {
    const d = await this.getInode(ino)
    if (!isDir(d)) throw new FsError('ENOTDIR', `inode ${ino} is not a directory`)
    return d
  }

  /** Write the inode in transaction `t`, moving its seq index items along. */
  private putInode(i: Inode, t: Tx, dataChanged = false): void {
    if (i.metaSeq !== t.trans) {
      if (i.metaSeq) this.items.delete(metaSeqKey(i.metaSeq, i.ino), t.seq)
      i.metaSeq = t.trans
      this.items.put(metaSeqKey(t.trans, i.ino), EMPTY, t.seq)
    }
    if (dataChanged && isReg(i) && i.dataSeq !== t.trans) {
      if (i.dataSeq) this.items.delete(dataSeqKey(i.dataSeq, i.ino), t.seq)
      i.dataSeq = t.trans
      this.items.put(dataSeqKey(t.trans, i.ino), EMPTY, t.seq)
    }
    this.items.put(inodeKey(i.ino), encodeInode(i), t.seq)
  }

  private toAttr(i: Inode): Attr {
    return {
      ino: i.ino,
      mode: i.mode,
      nlink: i.nlink,
      uid: i.uid,
      gid: i.gid,
      rdev: i.rdev,
      size: i.size,
      blocks: i.onlineBlocks * (BS / 512),
      atimeMs: tsToMs(i.atime),
      mtimeMs: tsToMs(i.mtime),
      ctimeMs: tsToMs(i.ctime),
      crtimeMs: tsToMs(i.crtime),
    }
  }

  private async findDirent(dir: number, name: Buffer): Promise<Dirent | undefined> {
    const h = nameHash(name)
    for await (const it of this.items.range(direntHashFirst(dir, h), direntHashLast(dir, h))) {
      const d = decodeDirent(it.val)
      if (d.name.equals(name)) return d
    }
    return undefined
  }

  private addDirent(dir: Inode, name: Buffer, target: Inode, t: Tx): void {
    const d: Dirent = {
      ino: target.ino,
      hash: nameHash(name),
      pos: dir.nextReaddirPos++,
      type: dtypeOf(target.mode),
      name,
    }
    const v = encodeDirent(d)
    this.items.put(direntKey(dir.ino, d.hash, d.pos), v, t.seq)
    this.items.put(readdirKey(dir.ino, d.pos), v, t.seq)
    this.items.put(backrefKey(target.ino, dir.ino, d.pos), v, t.seq)
  }

  private removeDirent(dir: number, d: Dirent, t: Tx): void {
    this.items.delete(direntKey(dir, d.hash, d.pos), t.seq)
    this.items.delete(readdirKey(dir, d.pos), t.seq)
    this.items.delete(backrefKey(d.ino, dir, d.pos), t.seq)
  }

  private async parentOf(dir: number): Promise<number> {
    if (dir === ROOT_INO) return ROOT_INO
    const b = await this.items.next(backrefFirst(dir), backrefLast(dir))
    return b ? keySecond(b.key) : ROOT_INO
  }

  private async isEmptyDir(ino: number): Promise<boolean> {
    return !(await this.items.next(readdirKey(ino, 0), readdirLast(ino)))
  }

  /* ---- lookups ------------------------------------------------------------------------- */

  async lookup(parent: number, name: string): Promise<Attr> {
    const n = Buffer.from(name, 'utf8')
    if (n.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${n.length} bytes exceeds ${NAME_MAX}`)
    // the directory's lock is dropped before the child's is taken (no two READs at once)
    const child = await this.reading([parent], async () => {
      await this.getDir(parent)
      if (name === '.') return parent
      if (name === '..') return this.parentOf(parent)
      const d = await this.findDirent(parent, n)
      if (!d) throw new FsError('ENOENT', `no entry '${name}' in directory ${parent}`)
      return d.ino
    })
    return this.getattr(child)
  }

  async getattr(ino: number): Promise<Attr> {
    return this.reading([ino], async () => this.toAttr(await this.getInode(ino)))
  }

  readlink(ino: number): Promise<string> {
    return this.reading([ino], () => this.readlinkLocked(ino))
  }

  private async readlinkLocked(ino: number): Promise<string> {
    const i = await this.getInode(ino)
    if ((i.mode & S_IFMT) !== S_IFLNK) throw new FsError('EINVAL', `inode ${ino} is not a symlink`)
    const parts: Buffer[] = []
    for (let p = 0; p * 4096 < i.size; p++) {
      const v = await this.items.get(symlinkKey(ino, p))
      if (!v) throw new FsError('EIO', `symlink ${ino} is missing part ${p}`)
      parts.push(v)
    }
    return Buffer.concat(parts).toString('utf8')
  }

  readdir(ino: number, pos: number, max: number): Promise<DirEntry[]> {
    return this.reading([ino], () => this.readdirLocked(ino, pos, max))
  }

  private async readdirLocked(ino: number, pos: number, max: number): Promise<DirEntry[]> {
    const dir = await this.getDir(ino)
    const out: DirEntry[] = []
    if (pos === 0 && out.length < max) out.push({ name: '.', ino, type: DT.DIR, nextPos: 1 })
    if (pos <= 1 && out.length < max) out.push({ name: '..', ino: await this.parentOf(ino), type: DT.DIR, nextPos: 2 })
    if (out.length >= max) return out
    for await (const it of this.items.range(readdirKey(dir.ino, Math.max(pos, 2)), readdirLast(dir.ino))) {
      const d = decodeDirent(it.val)
      out.push({ name: d.name.toString('utf8'), ino: d.ino, type: d.type, nextPos: d.pos + 1 })
      if (out.length >= max) break
    }
    return out
  }

  async statfs(): Promise<StatFs> {
    const s = await this.server.statfs()
    const perBlock = 64 // inodes a free 64 KiB metadata block can hold, roughly
    return {
      bsize: BS,
      frsize: BS,
      blocks: s.totalDataBlocks,
      bfree: s.freeDataBlocks,
      bavail: s.freeDataBlocks,
      files: s.inodeCount + this.trans.inodesCreated - this.trans.inodesDeleted + s.freeMetaBlocks * perBlock,
      ffree: s.freeMetaBlocks * perBlock,
      namemax: NAME_MAX,
    }
  }

  /* ---- creating ------------------------------------------------------------------------ */

  private async create(
    parent: number,
    name: string,
    mode: number,
    rdev: number,
    who: Caller,
    fill?: (i: Inode, t: Tx) => void,
  ): Promise<Attr> {
    const n = checkName(name)
    const ino = await this.allocIno()
    return this.op([parent, ino], async (t) => {
      const dir = await this.getDir(parent)
      if (dir.nlink === 0) throw new FsError('ENOENT', `directory ${parent} has been removed`)
      if (await this.findDirent(parent, n)) throw new FsError('EEXIST', `'${name}' exists in directory ${parent}`)
      const now = nowTs()
      const i = newInode(ino, mode, who.uid, (dir.mode & 0o2000) !== 0 ? dir.gid : who.gid, now)
      i.rdev = rdev
      if ((mode & S_IFMT) === S_IFDIR && (dir.mode & 0o2000) !== 0) i.mode |= 0o2000
      fill?.(i, t)
      this.putInode(i, t, true)
      this.addDirent(dir, n, i, t)
      if (isDir(i)) dir.nlink++
      dir.mtime = dir.ctime = now
      this.putInode(dir, t)
      this.counters.inodesCreated++
      this.trans.inodesCreated++
      return this.toAttr(i)
    })
  }

  mknod(parent: number, name: string, mode: number, rdev: number, who: Caller): Promise<Attr> {
    if ((mode & S_IFMT) === 0) mode |= S_IFREG
    if ((mode & S_IFMT) === S_IFDIR || (mode & S_IFMT) === S_IFLNK)
      return Promise.reject(new FsError('EINVAL', 'mknod cannot make directories or symlinks'))
    return this.create(parent, name, mode, rdev, who)
  }

  mkdir(parent: number, name: string, mode: number, who: Caller): Promise<Attr> {
    return this.create(parent, name, S_IFDIR | (mode & 0o7777), 0, who)
  }

  symlink(parent: number, name: string, target: string, who: Caller): Promise<Attr> {
    const tb = Buffer.from(target, 'utf8')
    if (tb.length === 0) return Promise.reject(new FsError('ENOENT', 'empty symlink target'))
    if (tb.length > SYMLINK_MAX)
      return Promise.reject(new FsError('ENAMETOOLONG', `symlink target of ${tb.length} bytes`))
    return this.create(parent, name, S_IFLNK | 0o777, 0, who, (i, t) => {
      i.size = tb.length
      for (let p = 0; p * 4096 < tb.length; p++)
        this.items.put(symlinkKey(i.ino, p), tb.subarray(p * 4096, (p + 1) * 4096), t.seq)
    })
  }

  async link(ino: number, newParent: number, newName: string): Promise<Attr> {
    const n = checkName(newName)
    return this.op([ino, newParent], async (t) => {
      const i = await this.getInode(ino)
      if (isDir(i)) throw new FsError('EPERM', 'hard links to directories are not allowed')
      if (i.nlink === 0) throw new FsError('ENOENT', `inode ${ino} has been removed`)
      const dir = await this.getDir(newParent)
      if (await this.findDirent(newParent, n))
        throw new FsError('EEXIST', `'${newName}' exists in directory ${newParent}`)
      this.addDirent(dir, n, i, t)
      const now = nowTs()
      dir.mtime = dir.ctime = now
      this.putInode(dir, t)
      i.nlink++
      i.ctime = now
      this.putInode(i, t)
      return this.toAttr(i)
    })
  }

  /* ---- removing ------------------------------------------------------------------------ */

  /** Look up `name` and lock the directory and its target together; retried if it moved. */
  private async opOnEntry<T>(
    parent: number,
    name: string,
    extra: number[],
    fn: (t: Tx, d: Dirent) => Promise<T>,
  ): Promise<T> {
    const n = Buffer.from(name, 'utf8')
    if (n.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${n.length} bytes exceeds ${NAME_MAX}`)
    for (;;) {
      const d = await this.reading([parent], async () => {
        await this.getDir(parent)
        return this.findDirent(parent, n)
      })
      if (!d) throw new FsError('ENOENT', `no entry '${name}' in directory ${parent}`)
      const r = await this.op(
        [parent, d.ino, ...extra],
        async (t) => {
          const again = await this.findDirent(parent, n)
          if (!again || again.ino !== d.ino) return { moved: true as const }
          return { moved: false as const, v: await fn(t, again) }
        },
        { orphans: true },
      )
      if (!r.moved) return r.v
    }
  }

  /** nlink reached 0: delete now, or keep as an orphan while it is open. */
  private async dropInode(i: Inode, t: Tx): Promise<void> {
    if ((this.opens.get(i.ino) ?? 0) > 0) {
      this.items.put(orphanKey(i.ino), orphanValue(this.rid), t.seq)
      this.putInode(i, t)
      return
    }
    await this.deleteInode(i, t)
  }

  /** Remove every item of an inode and free its data. */
  private async deleteInode(i: Inode, t: Tx): Promise<void> {
    const keys: Buffer[] = []
    for await (const it of this.items.range(inodeFirstKey(i.ino), inodeLastKey(i.ino))) {
      keys.push(it.key)
      if (it.key[9] === KeyType.DATA_EXTENT) {
        const e = decodeExtent(it.key, it.val)
        if (!(e.flags & EXTENT_OFFLINE)) await this.trans.freeData(e.blkno, e.len)
      }
    }
    for (const k of keys) this.items.delete(k, t.seq)
    if (i.metaSeq) this.items.delete(metaSeqKey(i.metaSeq, i.ino), t.seq)
    if (i.dataSeq) this.items.delete(dataSeqKey(i.dataSeq, i.ino), t.seq)
    this.items.delete(orphanKey(i.ino), t.seq)
    this.counters.inodesDeleted++
    this.trans.inodesDeleted++
  }

  async unlink(parent: number, name: string): Promise<void> {
    await this.opOnEntry(parent, name, [], async (t, d) => {
      const dir = await this.getDir(parent)
      const i = await this.getInode(d.ino)
      if (isDir(i)) throw new FsError('EISDIR', `'${name}' is a directory`)
      this.removeDirent(parent, d, t)
      const now = nowTs()
      dir.mtime = dir.ctime = now
      this.putInode(dir, t)
      i.nlink--
      i.ctime = now
      if (i.nlink === 0) await this.dropInode(i, t)
      else this.putInode(i, t)
    })
  }

  async rmdir(parent: number, name: string): Promise<void> {
    await this.opOnEntry(parent, name, [], async (t, d) => {
      const dir = await this.getDir(parent)
      const i = await this.getInode(d.ino)
      if (!isDir(i)) throw new FsError('ENOTDIR', `'${name}' is not a directory`)
      if (!(await this.isEmptyDir(i.ino))) throw new FsError('ENOTEMPTY', `directory '${name}' is not empty`)
      this.removeDirent(parent, d, t)
      const now = nowTs()
      dir.nlink--
      dir.mtime = dir.ctime = now
      this.putInode(dir, t)
      i.nlink = 0
      i.ctime = now
      await this.dropInode(i, t)
    })
  }

  async rename(parent: number, name: string, newParent: number, newName: string): Promise<void> {
    const nn = checkName(newName)
    const on = Buffer.from(name, 'utf8')
    if (on.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${on.length} bytes exceeds ${NAME_MAX}`)
    if (parent === newParent) return this.renameEntries(parent, on, newParent, nn)
    // cross-directory renames take the global rename lock first (DESIGN §8): locally, so one
    // runs at a time on this mount, and in the cluster, so none runs anywhere else
    const prev = this.renameLock
    let releaseLocal!: () => void
    this.renameLock = new Promise<void>((res) => (releaseLocal = res))
    await prev
    try {
      await this.withLocks([RENAME_WRITE], () => this.renameEntries(parent, on, newParent, nn))
    } finally {
      releaseLocal()
    }
  }

  private async renameEntries(parent: number, on: Buffer, newParent: number, nn: Buffer): Promise<void> {
    for (;;) {
      const found = await this.reading([parent, newParent], async () => {
        await this.getDir(parent)
        await this.getDir(newParent)
        return { src: await this.findDirent(parent, on), dst: await this.findDirent(newParent, nn) }
      })
      const { src, dst } = found
      if (!src) throw new FsError('ENOENT', `no entry '${on.toString()}' in directory ${parent}`)
      if (src.type === DT.DIR && parent !== newParent) await this.checkNotUnder(src.ino, newParent)
      const r = await this.op(
        [parent, newParent, src.ino, ...(dst ? [dst.ino] : [])],
        async (t) => {
          const s = await this.findDirent(parent, on)
          const d = await this.findDirent(newParent, nn)
          if (!s || s.ino !== src.ino || (d?.ino ?? 0) !== (dst?.ino ?? 0)) return false
          await this.renameLocked(t, parent, s, newParent, nn, d)
          return true
        },
        { orphans: true },
      )
      if (r) return
    }
  }

  /**
   * Moving directory `dir` into `target` would cut it off from the tree if `target` is `dir`
   * or below it.  Walks up from `target` under each ancestor's READ lock, one at a time; the
   * caller holds the rename lock, so no ancestry changes meanwhile.
   */
  private async checkNotUnder(dir: number, target: number): Promise<void> {
    for (let a = target; ;) {
      if (a === dir) throw new FsError('EINVAL', 'cannot move a directory into itself')
      if (a === ROOT_INO) return
      const cur = a
      a = await this.reading([cur], () => this.parentOf(cur))
    }
  }

  private async renameLocked(
    t: Tx,
    p1: number,
    s: Dirent,
    p2: number,
    nn: Buffer,
    dst: Dirent | undefined,
  ): Promise<void> {
    if (dst && dst.ino === s.ino) return // both names are links to one inode: nothing to do
    const src = await this.getInode(s.ino)
    const d1 = await this.getDir(p1)
    const d2 = p1 === p2 ? d1 : await this.getDir(p2)
    const now = nowTs()
    if (dst) {
      const tgt = await this.getInode(dst.ino)
      if (isDir(tgt)) {
        if (!isDir(src)) throw new FsError('EISDIR', `'${nn.toString()}' is a directory`)
        if (!(await this.isEmptyDir(tgt.ino)))
          throw new FsError('ENOTEMPTY', `directory '${nn.toString()}' is not empty`)
      } else if (isDir(src)) {
        throw new FsError('ENOTDIR', `'${nn.toString()}' is not a directory`)
      }
      this.removeDirent(p2, dst, t)
      if (isDir(tgt)) {
        d2.nlink--
        tgt.nlink = 0
      } else {
        tgt.nlink--
      }
      tgt.ctime = now
      if (tgt.nlink === 0) await this.dropInode(tgt, t)
      else this.putInode(tgt, t)
    }
    this.removeDirent(p1, s, t)
    this.addDirent(d2, nn, src, t)
    if (isDir(src) && p1 !== p2) {
      d1.nlink--
      d2.nlink++
    }
    d1.mtime = d1.ctime = now
    d2.mtime = d2.ctime = now
    src.ctime = now
    this.putInode(d1, t)
    if (d2 !== d1) this.putInode(d2, t)
    this.putInode(src, t)
  }

  /* ---- open files ---------------------------------------------------------------------- */

  async open(ino: number): Promise<void> {
    await this.reading([ino], () => this.getInode(ino))
    this.opens.set(ino, (this.opens.get(ino) ?? 0) + 1)
  }

  async release(ino: number): Promise<void> {
    const n = (this.opens.get(ino) ?? 0) - 1
    if (n > 0) {
      this.opens.set(ino, n)
      return
    }
    this.opens.delete(ino)
    // most closes delete nothing: look under READ first, so closing a file another mount
    // writes does not take its lock away
    const orphaned = await this.reading([ino], async () => (await this.readInode(ino))?.nlink === 0)
    if (!orphaned) return
    await this.op(
      [ino],
      async (t) => {
        if (this.opens.has(ino)) return // reopened meanwhile
        const i = await this.readInode(ino)
        if (i && i.nlink === 0) await this.deleteInode(i, t)
      },
      { orphans: true },
    )
  }

  /**
   * Delete the orphans of mounts that are gone (their files were open when they ended).  An
   * orphan records the mount that holds it open; those of `liveRids` are left alone.
   */
  async deleteOrphans(liveRids: readonly number[]): Promise<number> {
    const live = new Set(liveRids)
    const inos = await this.withLocks([ORPHAN_READ], async () => {
      const out: number[] = []
      for await (const it of this.items.range(ORPHAN_FIRST, ORPHAN_LAST)) {
        const owner = it.val.length >= 8 ? Number(it.val.readBigUInt64BE(0)) : 0
        if (owner === this.rid || !live.has(owner)) out.push(keySecond(it.key))
      }
      return out
    })
    let n = 0
    for (const ino of inos) {
      if (this.opens.has(ino)) continue
      await this.op(
        [ino],
        async (t) => {
          const i = await this.readInode(ino)
          if (i && i.nlink === 0) {
            await this.deleteInode(i, t)
            n++
          } else this.items.delete(orphanKey(ino), t.seq)
        },
        { orphans: true },
      )
    }
    this.counters.orphansDeleted += n
    return n
  }

  /* ---- attributes ---------------------------------------------------------------------- */

  async setattr(ino: number, set: SetAttr): Promise<Attr> {
    return this.op([ino], async (t) => {
      const i = await this.getInode(ino)
      const now = nowTs()
      let dataChanged = false
      if (set.mode !== undefined) i.mode = (i.mode & S_IFMT) | (set.mode & 0o7777)
      if (set.uid !== undefined && set.uid !== -1 && set.uid !== 0xffffffff) i.uid = set.uid
      if (set.gid !== undefined && set.gid !== -1 && set.gid !== 0xffffffff) i.gid = set.gid
      if (set.size !== undefined) {
        if (isDir(i)) throw new FsError('EISDIR', `inode ${ino} is a directory`)
        if (!isReg(i)) throw new FsError('EINVAL', `inode ${ino} is not a regular file`)
        if (set.size < 0) throw new FsError('EINVAL', 'negative size')
        await this.truncate(i, set.size, t)
        i.dataVersion++
        i.mtime = now
        dataChanged = true
      }
      if (set.atimeMs !== undefined) i.atime = msToTs(set.atimeMs)
      if (set.mtimeMs !== undefined) i.mtime = msToTs(set.mtimeMs)
      i.ctime = now
      this.putInode(i, t, dataChanged)
      return this.toAttr(i)
    })
  }

  /* ---- data ---------------------------------------------------------------------------- */

  /** The extent holding file block `b`, if any. */
  private async extentAt(ino: number, b: number): Promise<DataExtent | undefined> {
    const it = await this.items.prev(extentFirst(ino), extentKey(ino, b))
    if (!it) return undefined
    const e = decodeExtent(it.key, it.val)
    return e.iblock + e.len > b ? e : undefined
  }

  /** How many blocks of [b0, b1] no extent maps. */
  private async holeBlocks(ino: number, b0: number, b1: number): Promise<number> {
    let mapped = 0
    const first = await this.extentAt(ino, b0)
    if (first) mapped += Math.min(first.iblock + first.len - 1, b1) - b0 + 1
    for await (const it of this.items.range(extentKey(ino, b0 + 1), extentKey(ino, b1))) {
      const e = decodeExtent(it.key, it.val)
      mapped += Math.min(e.iblock + e.len - 1, b1) - e.iblock + 1
    }
    return b1 - b0 + 1 - mapped
  }

  /** The first extent starting after block `b`, if any. */
  private async extentAfter(ino: number, b: number): Promise<DataExtent | undefined> {
    const it = await this.items.next(extentKey(ino, b + 1), extentLast(ino))
    return it ? decodeExtent(it.key, it.val) : undefined
  }

  private async truncate(i: Inode, size: number, t: Tx): Promise<void> {
    if (size < i.size) {
      const keep = Math.ceil(size / BS)
      const drop: DataExtent[] = []
      for await (const it of this.items.range(extentFirst(i.ino), extentLast(i.ino))) {
        const e = decodeExtent(it.key, it.val)
        if (e.iblock + e.len > keep) drop.push(e)
      }
      for (const e of drop) {
        const cut = Math.max(keep, e.iblock)
        const freeLen = e.iblock + e.len - cut
        if (!(e.flags & EXTENT_OFFLINE)) {
          await this.trans.freeData(e.blkno + (cut - e.iblock), freeLen)
          i.onlineBlocks -= freeLen
        } else i.offlineBlocks -= freeLen
        if (cut === e.iblock) this.items.delete(extentKey(i.ino, e.iblock), t.seq)
        else this.items.put(extentKey(i.ino, e.iblock), encodeExtent({ ...e, len: cut - e.iblock }), t.seq)
      }
      // bytes past the new end in its last block must read as zeros if the file grows again
      const tail = size % BS
      if (tail) {
        const e = await this.extentAt(i.ino, Math.floor(size / BS))
        if (e && !(e.flags & EXTENT_OFFLINE)) {
          const phys = e.blkno + (Math.floor(size / BS) - e.iblock)
          await this.data.write(phys * BS + tail, Buffer.alloc(BS - tail))
        }
      }
    }
    i.size = size
  }

  read(ino: number, offset: number, length: number): Promise<Buffer> {
    // the READ lock is held across the data reads: no writer frees the extents meanwhile
    return this.reading([ino], () => this.readLocked(ino, offset, length))
  }

  private async readLocked(ino: number, offset: number, length: number): Promise<Buffer> {
    const i = await this.getInode(ino)
    if (isDir(i)) throw new FsError('EISDIR', `inode ${ino} is a directory`)
    if (offset >= i.size || length <= 0) return EMPTY
    const end = Math.min(i.size, offset + length)
    const out = Buffer.alloc(end - offset)
    let b = Math.floor(offset / BS)
    const last = Math.floor((end - 1) / BS)
    while (b <= last) {
      const e = await this.extentAt(ino, b)
      if (!e) {
        const next = await this.extentAfter(ino, b)
        b = next ? next.iblock : last + 1 // a hole reads as the zeros `out` already holds
        continue
      }
      if (e.flags & EXTENT_OFFLINE) throw new FsError('EIO', `inode ${ino} block ${b} is offline; stage it first`)
      const runEnd = Math.min(e.iblock + e.len - 1, last)
      const phys = e.blkno + (b - e.iblock)
      const buf = await this.data.read(phys * BS, (runEnd - b + 1) * BS)
      const fileStart = b * BS
      const from = Math.max(offset, fileStart)
      const to = Math.min(end, (runEnd + 1) * BS)
      buf.copy(out, from - offset, from - fileStart, to - fileStart)
      b = runEnd + 1
    }
    this.counters.dataBytesRead += out.length
    return out
  }

  async write(ino: number, at: number, data: Buffer, append = false): Promise<number> {
    if (data.length === 0) return 0
    return this.op([ino], async (t) => {
      const i = await this.getInode(ino)
      if (isDir(i)) throw new FsError('EISDIR', `inode ${ino} is a directory`)
      // the kernel's idea of the end of the file may be another mount's old one: ours is current
      const offset = append ? i.size : at
      if (offset + data.length > Number.MAX_SAFE_INTEGER) throw new FsError('EFBIG', 'write past the largest file size')
      const end = offset + data.length
      let b = Math.floor(offset / BS)
      const last = Math.floor((end - 1) / BS)
      // fail for lack of space before changing anything (ENOBUFS: op() commits and retries)
      this.trans.reserveData(await this.holeBlocks(ino, b, last))
      while (b <= last) {
        const e = await this.extentAt(ino, b)
        if (e && !(e.flags & EXTENT_OFFLINE)) {
          const runEnd = Math.min(e.iblock + e.len - 1, last)
          await this.writeRun(e.blkno + (b - e.iblock), b, runEnd, offset, data, true)
          b = runEnd + 1
          continue
        }
        if (e) throw new FsError('EIO', `inode ${ino} block ${b} is offline; stage it first`)
        // a hole: allocate as much of it as this write needs, run by run
        const next = await this.extentAfter(ino, b)
        const holeEnd = Math.min(last, next ? next.iblock - 1 : last)
        const got = await this.trans.allocData(holeEnd - b + 1)
        const runEnd = b + got.len - 1
        await this.writeRun(got.start, b, runEnd, offset, data, false)
        const prev = b > 0 ? await this.extentAt(ino, b - 1) : undefined
        if (prev && !(prev.flags & EXTENT_OFFLINE) && prev.blkno + prev.len === got.start)
          this.items.put(extentKey(ino, prev.iblock), encodeExtent({ ...prev, len: prev.len + got.len }), t.seq)
        else
          this.items.put(
            extentKey(ino, b),
            encodeExtent({ iblock: b, len: got.len, blkno: got.start, flags: 0 }),
            t.seq,
          )
        i.onlineBlocks += got.len
        // the extent is recorded: so are its blocks, even if a later run of this write fails
        this.putInode(i, t, true)
        b = runEnd + 1
      }
      if (end > i.size) i.size = end
      i.dataVersion++
      i.mtime = i.ctime = nowTs()
      this.putInode(i, t, true)
      this.counters.dataBytesWritten += data.length
      return data.length
    })
  }

  /**
   * Write file blocks [b0, b1] (at device block `phys`) from the part of `data` (which starts
   * at file offset `offset`) that overlaps them.  Partial first/last blocks are read and
   * merged when the blocks hold file data already, zero-filled when they are new.
   */
  private async writeRun(
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
      await this.data.write(phys * BS, data.subarray(from - offset, to - offset))
      return
    }
    // a partial first or last block: write whole blocks, merging old contents at the edges
    const buf = Buffer.alloc(runEnd - runStart)
    if (existing) {
      if (from > runStart) (await this.data.read(phys * BS, BS)).copy(buf, 0)
      if (to < runEnd) (await this.data.read((phys + b1 - b0) * BS, BS)).copy(buf, (b1 - b0) * BS)
    }
    data.copy(buf, from - runStart, from - offset, to - offset)
    await this.data.write(phys * BS, buf)
  }

  async fsync(_ino: number, _datasync: boolean): Promise<void> {
    await this.trans.commit()
  }

  async sync(): Promise<void> {
    await this.trans.commit()
  }

  /* ---- xattrs -------------------------------------------------------------------------- */

  private checkXattrName(name: string): Buffer {
    const n = Buffer.from(name, 'utf8')
    if (n.length === 0 || n.length > XATTR_NAME_MAX) throw new FsError('ERANGE', `xattr name of ${n.length} bytes`)
    if (!/^(user|trusted|security|scoutfs)\./.test(name))
      throw new FsError(
        'EOPNOTSUPP',
        `xattr namespace of '${name}' is not supported (user., trusted., security., scoutfs.)`,
      )
    if (/^(user|trusted|security|scoutfs)\.$/.test(name))
      throw new FsError('EINVAL', `xattr name '${name}' is only a prefix`)
    return n
  }

  /** The xattr named `name`: its id, part count and value. */
  private async findXattr(
    ino: number,
    name: Buffer,
  ): Promise<{ id: number; parts: number; value: Buffer } | undefined> {
    const h = xattrHash(name)
    let found: { id: number; valLen: number; first: Buffer } | undefined
    for await (const it of this.items.range(xattrHashFirst(ino, h), xattrHashLast(ino, h))) {
      if (it.key.readUInt32BE(30) !== 0 || it.key.readUInt32BE(26) !== 0) continue // not part 0
      const valLen = it.val.readUInt32LE(0)
      const nameLen = it.val.readUInt16LE(4)
      if (!it.val.subarray(XATTR_HDR, XATTR_HDR + nameLen).equals(name)) continue
      found = { id: it.key.readUInt32BE(22), valLen, first: it.val.subarray(XATTR_HDR + nameLen) }
      break
    }
    if (!found) return undefined
    const chunks = [found.first]
    let have = found.first.length
    let part = 1
    while (have < found.valLen) {
      const v = await this.items.get(xattrKey(ino, h, found.id, part))
      if (!v) throw new FsError('EIO', `xattr of inode ${ino} is missing part ${part}`)
      chunks.push(v)
      have += v.length
      part++
    }
    return { id: found.id, parts: part, value: Buffer.concat(chunks) }
  }

  async setxattr(ino: number, name: string, value: Buffer, flags: number): Promise<void> {
    const n = this.checkXattrName(name)
    if (value.length > XATTR_SIZE_MAX)
      throw new FsError('E2BIG', `xattr value of ${value.length} bytes exceeds ${XATTR_SIZE_MAX}`)
    await this.op([ino], async (t) => {
      const i = await this.getInode(ino)
      const old = await this.findXattr(ino, n)
      if (old && flags & XATTR_CREATE) throw new FsError('EEXIST', `xattr '${name}' exists`)
      if (!old && flags & XATTR_REPLACE) throw new FsError('ENODATA', `no xattr '${name}'`)
      const h = xattrHash(n)
      // new parts first, old parts last
      const id = i.nextXattrId++
      const whole = Buffer.concat([Buffer.alloc(XATTR_HDR), n, value])
      whole.writeUInt32LE(value.length, 0)
      whole.writeUInt16LE(n.length, 4)
      for (let p = 0, off = 0; off < whole.length || p === 0; p++, off += XATTR_PART_MAX)
        this.items.put(xattrKey(ino, h, id, p), whole.subarray(off, off + XATTR_PART_MAX), t.seq)
      if (old) for (let p = 0; p < old.parts; p++) this.items.delete(xattrKey(ino, h, old.id, p), t.seq)
      i.ctime = nowTs()
      this.putInode(i, t)
    })
  }

  async getxattr(ino: number, name: string): Promise<Buffer> {
    const n = this.checkXattrName(name)
    const x = await this.reading([ino], async () => {
      await this.getInode(ino)
      return this.findXattr(ino, n)
    })
    if (!x) throw new FsError('ENODATA', `no xattr '${name}'`)
    return x.value
  }

  listxattr(ino: number): Promise<string[]> {
    return this.reading([ino], () => this.listxattrLocked(ino))
  }

  private async listxattrLocked(ino: number): Promise<string[]> {
    await this.getInode(ino)
    const names: string[] = []
    for await (const it of this.items.range(xattrFirst(ino), xattrLast(ino))) {
      if (it.key.readUInt32BE(30) !== 0 || it.key.readUInt32BE(26) !== 0) continue
      const nameLen = it.val.readUInt16LE(4)
      const name = it.val.subarray(XATTR_HDR, XATTR_HDR + nameLen).toString('utf8')
      if (!name.startsWith('scoutfs.hide.')) names.push(name)
    }
    return names
  }

  async removexattr(ino: number, name: string): Promise<void> {
    const n = this.checkXattrName(name)
    await this.op([ino], async (t) => {
      const i = await this.getInode(ino)
      const old = await this.findXattr(ino, n)
      if (!old) throw new FsError('ENODATA', `no xattr '${name}'`)
      const h = xattrHash(n)
      for (let p = 0; p < old.parts; p++) this.items.delete(xattrKey(ino, h, old.id, p), t.seq)
      i.ctime = nowTs()
      this.putInode(i, t)
    })
  }

  /* ---- scoutfs fields and indexes ------------------------------------------------------ */

  /**
   * Entries of a seq index from (firstSeq, firstIno) to (lastSeq, lastIno), at most `limit`.
   * Only committed changes are indexed: the caller commits first, and LAST is clamped to the
   * last seq no mount still has open, so a later walk never finds an entry behind this one.
   * The index READ lock makes every other mount commit what it wrote under its WRITE_ONLY
   * index lock first, so the walk lists the changes of every mount.
   */
  walkInodes(
    index: 'meta_seq' | 'data_seq',
    first: { seq: number; ino: number },
    last: { seq: number; ino: number },
    limit: number,
  ): Promise<Array<{ seq: number; ino: number }>> {
    return this.withLocks([INDEX_READ], () => this.walkLocked(index, first, last, limit))
  }

  private async walkLocked(
    index: 'meta_seq' | 'data_seq',
    first: { seq: number; ino: number },
    last: { seq: number; ino: number },
    limit: number,
  ): Promise<Array<{ seq: number; ino: number }>> {
    const stable = await this.server.getLastSeq()
    if (last.seq > stable) last = { seq: stable, ino: Number.MAX_SAFE_INTEGER }
    const key = index === 'meta_seq' ? metaSeqKey : dataSeqKey
    const out: Array<{ seq: number; ino: number }> = []
    if (first.seq > last.seq) return out
    for await (const it of this.items.range(key(first.seq, first.ino), key(last.seq, last.ino))) {
      out.push({ seq: keySecond(it.key), ino: it.key.readUInt32BE(18) * 0x100000000 + it.key.readUInt32BE(22) })
      if (out.length >= limit) break
    }
    return out
  }

  inode(ino: number): Promise<Inode> {
    return this.reading([ino], () => this.getInode(ino))
  }
}
