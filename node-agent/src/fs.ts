/*
 * The POSIX filesystem of one mount, by inode number (FsApi), over the item cache and the
 * mount's transactions.
 *
 * Every changing operation: lock the inodes it touches (inode-number order), hold the
 * transaction, change items, release.  Each inode change stamps meta_seq (and data_seq for
 * data changes) with the transaction's seq and moves the inode's seq index items in the same
 * transaction, so `walk-inodes` finds exactly the inodes changed since a seq.
 *
 * File data lives in extents on the data device.  A write allocates holes run by run, writes
 * the data (zero-padding partial blocks of new runs) and only then records the extent, so no
 * extent ever points at blocks holding another file's old data.  Freed data blocks go to the
 * transaction's data_freed tree and are reused only after the commit is durable.
 *
 * Unlinked inodes that are still open stay as orphans (an orphan item marks them) and are
 * deleted at their last release, or by the orphan scan when the filesystem is next mounted.
 */
import type { BlockDevice } from './device.js'
import { FsError, isFsError } from './errors.js'
import { DATA_BLOCK_SIZE, KeyType } from './format.js'
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
import { InodeLocks } from './inode-locks.js'
import type { ItemCache } from './item-cache.js'
import type { ServerApi } from './server-api.js'
import type { Trans } from './trans.js'

const EMPTY = Buffer.alloc(0)
const BS = DATA_BLOCK_SIZE
const INO_BATCH = 1024

/** the `second` field of a key (a safe integer) */
const keySecond = (k: Buffer): number => k.readUInt32BE(10) * 0x100000000 + k.readUInt32BE(14)

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
  ) {}

  /* ---- plumbing ------------------------------------------------------------------------ */

  /**
   * Run `fn` with `inos` locked and the transaction held.  A data allocator that ran dry in
   * this transaction (ENOBUFS) is refilled by a commit and the operation retried once; still
   * dry means the device is full (ENOSPC).
   */
  private async op<T>(inos: number[], fn: (seq: number) => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      const unlock = await this.locks.lock(inos)
      let retry = false
      try {
        const seq = await this.trans.hold()
        try {
          return await fn(seq)
        } catch (e) {
          if (!isFsError(e, 'ENOBUFS')) throw e
          if (attempt > 0) throw new FsError('ENOSPC', 'the data device is full')
          retry = true
        } finally {
          this.trans.release()
        }
      } finally {
        unlock()
      }
      if (retry) await this.trans.commit()
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

  /** Write the inode in transaction `seq`, moving its seq index items along. */
  private putInode(i: Inode, seq: number, dataChanged = false): void {
    if (i.metaSeq !== seq) {
      if (i.metaSeq) this.items.delete(metaSeqKey(i.metaSeq, i.ino), seq)
      i.metaSeq = seq
      this.items.put(metaSeqKey(seq, i.ino), EMPTY, seq)
    }
    if (dataChanged && isReg(i) && i.dataSeq !== seq) {
      if (i.dataSeq) this.items.delete(dataSeqKey(i.dataSeq, i.ino), seq)
      i.dataSeq = seq
      this.items.put(dataSeqKey(seq, i.ino), EMPTY, seq)
    }
    this.items.put(inodeKey(i.ino), encodeInode(i), seq)
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

  private addDirent(dir: Inode, name: Buffer, target: Inode, seq: number): void {
    const d: Dirent = {
      ino: target.ino,
      hash: nameHash(name),
      pos: dir.nextReaddirPos++,
      type: dtypeOf(target.mode),
      name,
    }
    const v = encodeDirent(d)
    this.items.put(direntKey(dir.ino, d.hash, d.pos), v, seq)
    this.items.put(readdirKey(dir.ino, d.pos), v, seq)
    this.items.put(backrefKey(target.ino, dir.ino, d.pos), v, seq)
  }

  private removeDirent(dir: number, d: Dirent, seq: number): void {
    this.items.delete(direntKey(dir, d.hash, d.pos), seq)
    this.items.delete(readdirKey(dir, d.pos), seq)
    this.items.delete(backrefKey(d.ino, dir, d.pos), seq)
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
    await this.getDir(parent)
    if (name === '.') return this.getattr(parent)
    if (name === '..') return this.getattr(await this.parentOf(parent))
    const d = await this.findDirent(parent, n)
    if (!d) throw new FsError('ENOENT', `no entry '${name}' in directory ${parent}`)
    return this.getattr(d.ino)
  }

  async getattr(ino: number): Promise<Attr> {
    return this.toAttr(await this.getInode(ino))
  }

  async readlink(ino: number): Promise<string> {
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

  async readdir(ino: number, pos: number, max: number): Promise<DirEntry[]> {
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
    fill?: (i: Inode, seq: number) => void,
  ): Promise<Attr> {
    const n = checkName(name)
    const ino = await this.allocIno()
    return this.op([parent, ino], async (seq) => {
      const dir = await this.getDir(parent)
      if (dir.nlink === 0) throw new FsError('ENOENT', `directory ${parent} has been removed`)
      if (await this.findDirent(parent, n)) throw new FsError('EEXIST', `'${name}' exists in directory ${parent}`)
      const now = nowTs()
      const i = newInode(ino, mode, who.uid, (dir.mode & 0o2000) !== 0 ? dir.gid : who.gid, now)
      i.rdev = rdev
      if ((mode & S_IFMT) === S_IFDIR && (dir.mode & 0o2000) !== 0) i.mode |= 0o2000
      fill?.(i, seq)
      this.putInode(i, seq, true)
      this.addDirent(dir, n, i, seq)
      if (isDir(i)) dir.nlink++
      dir.mtime = dir.ctime = now
      this.putInode(dir, seq)
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
    const t = Buffer.from(target, 'utf8')
    if (t.length === 0) return Promise.reject(new FsError('ENOENT', 'empty symlink target'))
    if (t.length > SYMLINK_MAX)
      return Promise.reject(new FsError('ENAMETOOLONG', `symlink target of ${t.length} bytes`))
    return this.create(parent, name, S_IFLNK | 0o777, 0, who, (i, seq) => {
      i.size = t.length
      for (let p = 0; p * 4096 < t.length; p++)
        this.items.put(symlinkKey(i.ino, p), t.subarray(p * 4096, (p + 1) * 4096), seq)
    })
  }

  async link(ino: number, newParent: number, newName: string): Promise<Attr> {
    const n = checkName(newName)
    return this.op([ino, newParent], async (seq) => {
      const i = await this.getInode(ino)
      if (isDir(i)) throw new FsError('EPERM', 'hard links to directories are not allowed')
      if (i.nlink === 0) throw new FsError('ENOENT', `inode ${ino} has been removed`)
      const dir = await this.getDir(newParent)
      if (await this.findDirent(newParent, n))
        throw new FsError('EEXIST', `'${newName}' exists in directory ${newParent}`)
      this.addDirent(dir, n, i, seq)
      const now = nowTs()
      dir.mtime = dir.ctime = now
      this.putInode(dir, seq)
      i.nlink++
      i.ctime = now
      this.putInode(i, seq)
      return this.toAttr(i)
    })
  }

  /* ---- removing ------------------------------------------------------------------------ */

  /** Look up `name` and lock the directory and its target together; retried if it moved. */
  private async opOnEntry<T>(
    parent: number,
    name: string,
    extra: number[],
    fn: (seq: number, d: Dirent) => Promise<T>,
  ): Promise<T> {
    const n = Buffer.from(name, 'utf8')
    if (n.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${n.length} bytes exceeds ${NAME_MAX}`)
    for (;;) {
      await this.getDir(parent)
      const d = await this.findDirent(parent, n)
      if (!d) throw new FsError('ENOENT', `no entry '${name}' in directory ${parent}`)
      const r = await this.op([parent, d.ino, ...extra], async (seq) => {
        const again = await this.findDirent(parent, n)
        if (!again || again.ino !== d.ino) return { moved: true as const }
        return { moved: false as const, v: await fn(seq, again) }
      })
      if (!r.moved) return r.v
    }
  }

  /** nlink reached 0: delete now, or keep as an orphan while it is open. */
  private async dropInode(i: Inode, seq: number): Promise<void> {
    if ((this.opens.get(i.ino) ?? 0) > 0) {
      this.items.put(orphanKey(i.ino), EMPTY, seq)
      this.putInode(i, seq)
      return
    }
    await this.deleteInode(i, seq)
  }

  /** Remove every item of an inode and free its data. */
  private async deleteInode(i: Inode, seq: number): Promise<void> {
    const keys: Buffer[] = []
    for await (const it of this.items.range(inodeFirstKey(i.ino), inodeLastKey(i.ino))) {
      keys.push(it.key)
      if (it.key[9] === KeyType.DATA_EXTENT) {
        const e = decodeExtent(it.key, it.val)
        if (!(e.flags & EXTENT_OFFLINE)) await this.trans.freeData(e.blkno, e.len)
      }
    }
    for (const k of keys) this.items.delete(k, seq)
    if (i.metaSeq) this.items.delete(metaSeqKey(i.metaSeq, i.ino), seq)
    if (i.dataSeq) this.items.delete(dataSeqKey(i.dataSeq, i.ino), seq)
    this.items.delete(orphanKey(i.ino), seq)
    this.counters.inodesDeleted++
    this.trans.inodesDeleted++
  }

  async unlink(parent: number, name: string): Promise<void> {
    await this.opOnEntry(parent, name, [], async (seq, d) => {
      const dir = await this.getDir(parent)
      const i = await this.getInode(d.ino)
      if (isDir(i)) throw new FsError('EISDIR', `'${name}' is a directory`)
      this.removeDirent(parent, d, seq)
      const now = nowTs()
      dir.mtime = dir.ctime = now
      this.putInode(dir, seq)
      i.nlink--
      i.ctime = now
      if (i.nlink === 0) await this.dropInode(i, seq)
      else this.putInode(i, seq)
    })
  }

  async rmdir(parent: number, name: string): Promise<void> {
    await this.opOnEntry(parent, name, [], async (seq, d) => {
      const dir = await this.getDir(parent)
      const i = await this.getInode(d.ino)
      if (!isDir(i)) throw new FsError('ENOTDIR', `'${name}' is not a directory`)
      if (!(await this.isEmptyDir(i.ino))) throw new FsError('ENOTEMPTY', `directory '${name}' is not empty`)
      this.removeDirent(parent, d, seq)
      const now = nowTs()
      dir.nlink--
      dir.mtime = dir.ctime = now
      this.putInode(dir, seq)
      i.nlink = 0
      i.ctime = now
      await this.dropInode(i, seq)
    })
  }

  async rename(parent: number, name: string, newParent: number, newName: string): Promise<void> {
    const nn = checkName(newName)
    const on = Buffer.from(name, 'utf8')
    if (on.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${on.length} bytes exceeds ${NAME_MAX}`)
    // cross-directory renames take the global rename lock first (DESIGN §8)
    let releaseRename: (() => void) | undefined
    if (parent !== newParent) {
      const prev = this.renameLock
      let rel!: () => void
      this.renameLock = new Promise<void>((res) => (rel = res))
      releaseRename = rel
      await prev
    }
    try {
      for (;;) {
        await this.getDir(parent)
        await this.getDir(newParent)
        const src = await this.findDirent(parent, on)
        if (!src) throw new FsError('ENOENT', `no entry '${name}' in directory ${parent}`)
        const dst = await this.findDirent(newParent, nn)
        const r = await this.op([parent, newParent, src.ino, ...(dst ? [dst.ino] : [])], async (seq) => {
          const s = await this.findDirent(parent, on)
          const t = await this.findDirent(newParent, nn)
          if (!s || s.ino !== src.ino || (t?.ino ?? 0) !== (dst?.ino ?? 0)) return false
          await this.renameLocked(seq, parent, s, newParent, nn, t)
          return true
        })
        if (r) return
      }
    } finally {
      releaseRename?.()
    }
  }

  private async renameLocked(
    seq: number,
    p1: number,
    s: Dirent,
    p2: number,
    nn: Buffer,
    t: Dirent | undefined,
  ): Promise<void> {
    if (t && t.ino === s.ino) return // both names are links to one inode: nothing to do
    const src = await this.getInode(s.ino)
    const d1 = await this.getDir(p1)
    const d2 = p1 === p2 ? d1 : await this.getDir(p2)
    if (isDir(src) && p1 !== p2) {
      // moving a directory under itself would cut it off from the tree
      for (let a = p2; ; a = await this.parentOf(a)) {
        if (a === src.ino) throw new FsError('EINVAL', 'cannot move a directory into itself')
        if (a === ROOT_INO) break
      }
    }
    const now = nowTs()
    if (t) {
      const tgt = await this.getInode(t.ino)
      if (isDir(tgt)) {
        if (!isDir(src)) throw new FsError('EISDIR', `'${nn.toString()}' is a directory`)
        if (!(await this.isEmptyDir(tgt.ino)))
          throw new FsError('ENOTEMPTY', `directory '${nn.toString()}' is not empty`)
      } else if (isDir(src)) {
        throw new FsError('ENOTDIR', `'${nn.toString()}' is not a directory`)
      }
      this.removeDirent(p2, t, seq)
      if (isDir(tgt)) {
        d2.nlink--
        tgt.nlink = 0
      } else {
        tgt.nlink--
      }
      tgt.ctime = now
      if (tgt.nlink === 0) await this.dropInode(tgt, seq)
      else this.putInode(tgt, seq)
    }
    this.removeDirent(p1, s, seq)
    this.addDirent(d2, nn, src, seq)
    if (isDir(src) && p1 !== p2) {
      d1.nlink--
      d2.nlink++
    }
    d1.mtime = d1.ctime = now
    d2.mtime = d2.ctime = now
    src.ctime = now
    this.putInode(d1, seq)
    if (d2 !== d1) this.putInode(d2, seq)
    this.putInode(src, seq)
  }

  /* ---- open files ---------------------------------------------------------------------- */

  async open(ino: number): Promise<void> {
    await this.getInode(ino)
    this.opens.set(ino, (this.opens.get(ino) ?? 0) + 1)
  }

  async release(ino: number): Promise<void> {
    const n = (this.opens.get(ino) ?? 0) - 1
    if (n > 0) {
      this.opens.set(ino, n)
      return
    }
    this.opens.delete(ino)
    await this.op([ino], async (seq) => {
      if (this.opens.has(ino)) return // reopened meanwhile
      const i = await this.readInode(ino)
      if (i && i.nlink === 0) await this.deleteInode(i, seq)
    })
  }

  /** Delete orphans left by a mount that ended while files were open (at mount time). */
  async deleteOrphans(): Promise<number> {
    const inos: number[] = []
    for await (const it of this.items.range(ORPHAN_FIRST, ORPHAN_LAST)) inos.push(keySecond(it.key))
    let n = 0
    for (const ino of inos) {
      if (this.opens.has(ino)) continue
      await this.op([ino], async (seq) => {
        const i = await this.readInode(ino)
        if (i && i.nlink === 0) {
          await this.deleteInode(i, seq)
          n++
        } else this.items.delete(orphanKey(ino), seq)
      })
    }
    this.counters.orphansDeleted += n
    return n
  }

  /* ---- attributes ---------------------------------------------------------------------- */

  async setattr(ino: number, set: SetAttr): Promise<Attr> {
    return this.op([ino], async (seq) => {
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
        await this.truncate(i, set.size)
        i.dataVersion++
        i.mtime = now
        dataChanged = true
      }
      if (set.atimeMs !== undefined) i.atime = msToTs(set.atimeMs)
      if (set.mtimeMs !== undefined) i.mtime = msToTs(set.mtimeMs)
      i.ctime = now
      this.putInode(i, seq, dataChanged)
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

  private async truncate(i: Inode, size: number): Promise<void> {
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
        if (cut === e.iblock) this.items.delete(extentKey(i.ino, e.iblock), this.trans.seq)
        else this.items.put(extentKey(i.ino, e.iblock), encodeExtent({ ...e, len: cut - e.iblock }), this.trans.seq)
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

  async read(ino: number, offset: number, length: number): Promise<Buffer> {
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

  async write(ino: number, offset: number, data: Buffer): Promise<number> {
    if (data.length === 0) return 0
    if (offset + data.length > Number.MAX_SAFE_INTEGER) throw new FsError('EFBIG', 'write past the largest file size')
    return this.op([ino], async (seq) => {
      const i = await this.getInode(ino)
      if (isDir(i)) throw new FsError('EISDIR', `inode ${ino} is a directory`)
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
          this.items.put(extentKey(ino, prev.iblock), encodeExtent({ ...prev, len: prev.len + got.len }), seq)
        else
          this.items.put(extentKey(ino, b), encodeExtent({ iblock: b, len: got.len, blkno: got.start, flags: 0 }), seq)
        i.onlineBlocks += got.len
        // the extent is recorded: so are its blocks, even if a later run of this write fails
        this.putInode(i, seq, true)
        b = runEnd + 1
      }
      if (end > i.size) i.size = end
      i.dataVersion++
      i.mtime = i.ctime = nowTs()
      this.putInode(i, seq, true)
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
    await this.op([ino], async (seq) => {
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
        this.items.put(xattrKey(ino, h, id, p), whole.subarray(off, off + XATTR_PART_MAX), seq)
      if (old) for (let p = 0; p < old.parts; p++) this.items.delete(xattrKey(ino, h, old.id, p), seq)
      i.ctime = nowTs()
      this.putInode(i, seq)
    })
  }

  async getxattr(ino: number, name: string): Promise<Buffer> {
    const n = this.checkXattrName(name)
    await this.getInode(ino)
    const x = await this.findXattr(ino, n)
    if (!x) throw new FsError('ENODATA', `no xattr '${name}'`)
    return x.value
  }

  async listxattr(ino: number): Promise<string[]> {
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
    await this.op([ino], async (seq) => {
      const i = await this.getInode(ino)
      const old = await this.findXattr(ino, n)
      if (!old) throw new FsError('ENODATA', `no xattr '${name}'`)
      const h = xattrHash(n)
      for (let p = 0; p < old.parts; p++) this.items.delete(xattrKey(ino, h, old.id, p), seq)
      i.ctime = nowTs()
      this.putInode(i, seq)
    })
  }

  /* ---- scoutfs fields and indexes ------------------------------------------------------ */

  /**
   * Entries of a seq index from (firstSeq, firstIno) to (lastSeq, lastIno), at most `limit`.
   * Only committed changes are indexed: the caller commits first, and LAST is clamped to the
   * last seq no mount still has open, so a later walk never finds an entry behind this one.
   */
  async walkInodes(
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

  async inode(ino: number): Promise<Inode> {
    return this.getInode(ino)
  }
}
