/*
 * MemFs: a small, POSIX-faithful in-memory FsApi, used only to test the FUSE adapter (and
 * anything else that sits on top of FsApi) without the real filesystem.
 *
 * It keeps an inode table; directories hold name -> ino entries with stable readdir
 * positions; regular files keep sparse 64 KiB chunks; nlink, open counts and deletion at the
 * last release of an unlinked inode follow Linux.  It errs like a Linux filesystem: ENOENT,
 * EEXIST, ENOTDIR, EISDIR, ENOTEMPTY, EINVAL (moving a directory into itself), EPERM (hard
 * link to a directory), ENODATA/EEXIST for xattrs with XATTR_REPLACE/XATTR_CREATE, ...
 *
 * For tests it counts calls per op (`calls`), can record every call with its arguments
 * (`trace`), and can make the next call of an op throw an arbitrary error (`injectFault`).
 */
import { FsError, type Errno } from '../../node-agent/src/util/errors.js'
import {
  DT,
  ROOT_INO,
  XATTR_CREATE,
  XATTR_REPLACE,
  type Attr,
  type Caller,
  type DirEntry,
  type FsApi,
  type SetAttr,
  type StatFs,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  dtypeOf,
  type OpenInfo,
} from '../../node-agent/src/fs/fs-api.js'

const S_ISGID = 0o2000

const CHUNK = 64 * 1024
const NAME_MAX = 255
const PATH_MAX = 4096
const XATTR_SIZE_MAX = 65536
const XATTR_LIST_MAX = 65536
const MAX_FILE_SIZE = 2 ** 44 // 16 TiB
const BLOCK_SIZE = 4096
const TOTAL_BLOCKS = 1 << 20 // 4 GiB
const TOTAL_INODES = 1 << 20

interface DirSlot {
  ino: number
  pos: number
}

interface Inode {
  ino: number
  mode: number
  nlink: number
  uid: number
  gid: number
  rdev: number
  size: number
  atimeMs: number
  mtimeMs: number
  ctimeMs: number
  crtimeMs: number
  opens: number
  xattrs: Map<string, Buffer>
  /** regular files: sparse data chunks */
  chunks?: Map<number, Buffer>
  /** directories */
  entries?: Map<string, DirSlot>
  nextPos?: number
  parent?: number
  /** symlinks */
  target?: string
}

function err(code: Errno | 'EOPNOTSUPP' | 'E2BIG' | 'EMLINK', msg: string): FsError {
  // errors.ts's Errno union lacks a few codes Linux returns here; FsError maps any errno name
  return new FsError(code as Errno, msg)
}

export interface MemFsOptions {
  /** first inode number handed out after the root (default 1000, so they differ from libfuse's node ids) */
  firstIno?: number
  /** record every call in `log` */
  trace?: boolean
}

export interface TraceEntry {
  op: string
  args: unknown[]
}

export class MemFs implements FsApi {
  private inodes = new Map<number, Inode>()
  private nextIno: number
  /** number of calls per op (resetCounts clears it) */
  readonly calls = new Map<string, number>()
  /** number of calls per op since construction */
  readonly lifetimeCalls = new Map<string, number>()
  /** every call, when tracing */
  readonly log: TraceEntry[] = []
  trace: boolean
  private faults = new Map<string, unknown[]>()
  /** inodes freed so far (nlink 0 and no opens) */
  readonly freed: number[] = []
  /** when set, statfs() returns this instead of its own numbers */
  statfsOverride: StatFs | undefined

  constructor(opts: MemFsOptions = {}) {
    this.nextIno = opts.firstIno ?? 1000
    this.trace = !!opts.trace
    const now = Date.now()
    this.inodes.set(ROOT_INO, {
      ino: ROOT_INO,
      mode: S_IFDIR | 0o755,
      nlink: 2,
      uid: 0,
      gid: 0,
      rdev: 0,
      size: 0,
      atimeMs: now,
      mtimeMs: now,
      ctimeMs: now,
      crtimeMs: now,
      opens: 0,
      xattrs: new Map(),
      entries: new Map(),
      nextPos: 2,
      parent: ROOT_INO,
    })
  }

  // ---- test helpers ----

  count(op: string): number {
    return this.calls.get(op) ?? 0
  }

  resetCounts(): void {
    this.calls.clear()
    this.log.length = 0
  }

  /** the next call of `op` throws `error` (queued: several faults fire one per call) */
  injectFault(op: string, error: unknown): void {
    const q = this.faults.get(op) ?? []
    q.push(error)
    this.faults.set(op, q)
  }

  /** open count of an inode, undefined once it is freed */
  openCount(ino: number): number | undefined {
    return this.inodes.get(ino)?.opens
  }

  exists(ino: number): boolean {
    return this.inodes.has(ino)
  }

  /** total open references over all inodes */
  totalOpens(): number {
    let n = 0
    for (const i of this.inodes.values()) n += i.opens
    return n
  }

  inodeCount(): number {
    return this.inodes.size
  }

  /** every name in every directory (for checking that no hidden name ever reaches the fs) */
  allNames(): string[] {
    const out: string[] = []
    for (const i of this.inodes.values()) if (i.entries) for (const n of i.entries.keys()) out.push(n)
    return out
  }

  /** resolve a slash-separated path from the root, for test assertions */
  async resolvePath(path: string): Promise<Attr> {
    let attr = await this.getattr(ROOT_INO)
    for (const part of path.split('/').filter((p) => p.length > 0)) attr = await this.lookup(attr.ino, part)
    return attr
  }

  // ---- internals ----

  private enter(op: string, args: unknown[]): void {
    this.calls.set(op, (this.calls.get(op) ?? 0) + 1)
    this.lifetimeCalls.set(op, (this.lifetimeCalls.get(op) ?? 0) + 1)
    if (this.trace) this.log.push({ op, args })
    const q = this.faults.get(op)
    if (q && q.length > 0) {
      const e = q.shift()
      if (q.length === 0) this.faults.delete(op)
      throw e
    }
  }

  private get(ino: number): Inode {
    const i = this.inodes.get(ino)
    if (!i) throw err('ENOENT', `inode ${ino} does not exist`)
    return i
  }

  private dir(ino: number): Inode {
    const d = this.get(ino)
    if (!d.entries) throw err('ENOTDIR', `inode ${ino} is not a directory`)
    if (d.nlink === 0) throw err('ENOENT', `directory ${ino} was removed`)
    return d
  }

  private checkName(name: string): void {
    if (name.length === 0) throw err('ENOENT', 'empty name')
    if (name.includes('/') || name.includes('\0')) throw err('EINVAL', `bad name ${JSON.stringify(name)}`)
    if (Buffer.byteLength(name, 'utf8') > NAME_MAX) throw err('ENAMETOOLONG', `name of ${name.length} chars`)
  }

  private checkNewName(d: Inode, name: string): void {
    this.checkName(name)
    if (name === '.' || name === '..' || d.entries!.has(name)) throw err('EEXIST', `${name} exists`)
  }

  private attr(i: Inode): Attr {
    let blocks = 0
    if (i.chunks) blocks = i.chunks.size * (CHUNK / 512)
    else if (i.entries || i.target !== undefined) blocks = BLOCK_SIZE / 512
    return {
      ino: i.ino,
      mode: i.mode,
      nlink: i.nlink,
      uid: i.uid,
      gid: i.gid,
      rdev: i.rdev,
      size: i.entries ? BLOCK_SIZE : i.size,
      blocks,
      atimeMs: i.atimeMs,
      mtimeMs: i.mtimeMs,
      ctimeMs: i.ctimeMs,
      crtimeMs: i.crtimeMs,
    }
  }

  private newInode(parent: Inode, mode: number, who: Caller): Inode {
    if (this.inodes.size >= TOTAL_INODES) throw err('ENOSPC', 'out of inodes')
    const now = Date.now()
    let gid = who.gid
    // BSD group semantics on set-group-id directories
    if (parent.mode & S_ISGID) {
      gid = parent.gid
      if ((mode & S_IFMT) === S_IFDIR) mode |= S_ISGID
    }
    const i: Inode = {
      ino: this.nextIno++,
      mode,
      nlink: 1,
      uid: who.uid,
      gid,
      rdev: 0,
      size: 0,
      atimeMs: now,
      mtimeMs: now,
      ctimeMs: now,
      crtimeMs: now,
      opens: 0,
      xattrs: new Map(),
    }
    this.inodes.set(i.ino, i)
    return i
  }

  private addEntry(d: Inode, name: string, ino: number): void {
    const pos = d.nextPos!
    d.nextPos = pos + 1
    d.entries!.set(name, { ino, pos })
    d.mtimeMs = d.ctimeMs = Date.now()
  }

  private removeEntry(d: Inode, name: string): void {
    d.entries!.delete(name)
    d.mtimeMs = d.ctimeMs = Date.now()
  }

  /** drop a link to `i`, freeing it when nothing references it any more */
  private dropLink(i: Inode): void {
    if (i.entries) i.nlink = 0
    else i.nlink--
    i.ctimeMs = Date.now()
    this.maybeFree(i)
  }

  private maybeFree(i: Inode): void {
    if (i.nlink === 0 && i.opens === 0) {
      this.inodes.delete(i.ino)
      this.freed.push(i.ino)
    }
  }

  private isDescendant(ino: number, ancestor: number): boolean {
    let cur = ino
    for (;;) {
      if (cur === ancestor) return true
      if (cur === ROOT_INO) return false
      const i = this.inodes.get(cur)
      if (!i || i.parent === undefined) return false
      cur = i.parent
    }
  }

  private readData(i: Inode, offset: number, length: number): Buffer {
    const end = Math.min(i.size, offset + length)
    if (offset >= end) return Buffer.alloc(0)
    const out = Buffer.alloc(end - offset)
    let pos = offset
    while (pos < end) {
      const ci = Math.floor(pos / CHUNK)
      const co = pos - ci * CHUNK
      const n = Math.min(CHUNK - co, end - pos)
      const c = i.chunks!.get(ci)
      if (c) c.copy(out, pos - offset, co, co + n)
      pos += n
    }
    return out
  }

  private writeData(i: Inode, offset: number, data: Buffer): void {
    let done = 0
    while (done < data.length) {
      const pos = offset + done
      const ci = Math.floor(pos / CHUNK)
      const co = pos - ci * CHUNK
      const n = Math.min(CHUNK - co, data.length - done)
      let c = i.chunks!.get(ci)
      if (!c) {
        c = Buffer.alloc(CHUNK)
        i.chunks!.set(ci, c)
      }
      data.copy(c, co, done, done + n)
      done += n
    }
    if (offset + data.length > i.size) i.size = offset + data.length
  }

  private truncateData(i: Inode, size: number): void {
    if (size < i.size) {
      for (const ci of [...i.chunks!.keys()]) {
        const start = ci * CHUNK
        if (start >= size) i.chunks!.delete(ci)
        else if (start + CHUNK > size) i.chunks!.get(ci)!.fill(0, size - start)
      }
    }
    i.size = size
  }

  // ---- FsApi ----

  async lookup(parent: number, name: string): Promise<Attr> {
    this.enter('lookup', [parent, name])
    const d = this.dir(parent)
    this.checkName(name)
    if (name === '.') return this.attr(d)
    if (name === '..') return this.attr(this.get(d.parent!))
    const slot = d.entries!.get(name)
    if (!slot) throw err('ENOENT', `${name} not found in ${parent}`)
    return this.attr(this.get(slot.ino))
  }

  async getattr(ino: number): Promise<Attr> {
    this.enter('getattr', [ino])
    return this.attr(this.get(ino))
  }

  async setattr(ino: number, set: SetAttr): Promise<Attr> {
    this.enter('setattr', [ino, set])
    const i = this.get(ino)
    const now = Date.now()
    if (set.size !== undefined) {
      if (i.entries) throw err('EISDIR', `truncate of directory ${ino}`)
      if (!i.chunks) throw err('EINVAL', `truncate of non-regular inode ${ino}`)
      if (!Number.isInteger(set.size) || set.size < 0) throw err('EINVAL', `bad size ${set.size}`)
      if (set.size > MAX_FILE_SIZE) throw err('EFBIG', `size ${set.size}`)
      if (set.size !== i.size) this.truncateData(i, set.size)
      i.mtimeMs = now
    }
    if (set.mode !== undefined) i.mode = (i.mode & S_IFMT) | (set.mode & 0o7777)
    if (set.uid !== undefined) i.uid = set.uid
    if (set.gid !== undefined) i.gid = set.gid
    if (set.atimeMs !== undefined) i.atimeMs = set.atimeMs
    if (set.mtimeMs !== undefined) i.mtimeMs = set.mtimeMs
    i.ctimeMs = now
    return this.attr(i)
  }

  async mknod(parent: number, name: string, mode: number, rdev: number, who: Caller): Promise<Attr> {
    this.enter('mknod', [parent, name, mode, rdev, who])
    const d = this.dir(parent)
    this.checkNewName(d, name)
    let type = mode & S_IFMT
    if (type === 0) type = S_IFREG
    if (![S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].includes(type)) throw err('EINVAL', `mknod type ${type}`)
    const i = this.newInode(d, type | (mode & 0o7777), who)
    if (type === S_IFREG) i.chunks = new Map()
    if (type === S_IFCHR || type === S_IFBLK) i.rdev = rdev
    this.addEntry(d, name, i.ino)
    return this.attr(i)
  }

  async mkdir(parent: number, name: string, mode: number, who: Caller): Promise<Attr> {
    this.enter('mkdir', [parent, name, mode, who])
    const d = this.dir(parent)
    this.checkNewName(d, name)
    const i = this.newInode(d, S_IFDIR | (mode & 0o7777), who)
    i.nlink = 2
    i.entries = new Map()
    i.nextPos = 2
    i.parent = d.ino
    d.nlink++
    this.addEntry(d, name, i.ino)
    return this.attr(i)
  }

  async symlink(parent: number, name: string, target: string, who: Caller): Promise<Attr> {
    this.enter('symlink', [parent, name, target, who])
    const d = this.dir(parent)
    this.checkNewName(d, name)
    if (target.length === 0) throw err('ENOENT', 'empty symlink target')
    const len = Buffer.byteLength(target, 'utf8')
    if (len >= PATH_MAX) throw err('ENAMETOOLONG', `symlink target of ${len} bytes`)
    const i = this.newInode(d, S_IFLNK | 0o777, who)
    i.target = target
    i.size = len
    this.addEntry(d, name, i.ino)
    return this.attr(i)
  }

  async readlink(ino: number): Promise<string> {
    this.enter('readlink', [ino])
    const i = this.get(ino)
    if (i.target === undefined) throw err('EINVAL', `inode ${ino} is not a symlink`)
    return i.target
  }

  async link(ino: number, newParent: number, newName: string): Promise<Attr> {
    this.enter('link', [ino, newParent, newName])
    const i = this.get(ino)
    if (i.entries) throw err('EPERM', `hard link to directory ${ino}`)
    const d = this.dir(newParent)
    this.checkNewName(d, newName)
    if (i.nlink === 0) throw err('ENOENT', `inode ${ino} is unlinked`)
    if (i.nlink >= 65000) throw err('EMLINK', `too many links to ${ino}`)
    i.nlink++
    i.ctimeMs = Date.now()
    this.addEntry(d, newName, ino)
    return this.attr(i)
  }

  async unlink(parent: number, name: string): Promise<void> {
    this.enter('unlink', [parent, name])
    const d = this.dir(parent)
    this.checkName(name)
    if (name === '.' || name === '..') throw err('EISDIR', `unlink of ${name}`)
    const slot = d.entries!.get(name)
    if (!slot) throw err('ENOENT', `${name} not found in ${parent}`)
    const i = this.get(slot.ino)
    if (i.entries) throw err('EISDIR', `unlink of directory ${name}`)
    this.removeEntry(d, name)
    this.dropLink(i)
  }

  async rmdir(parent: number, name: string): Promise<void> {
    this.enter('rmdir', [parent, name])
    const d = this.dir(parent)
    this.checkName(name)
    if (name === '.') throw err('EINVAL', 'rmdir of .')
    if (name === '..') throw err('ENOTEMPTY', 'rmdir of ..')
    const slot = d.entries!.get(name)
    if (!slot) throw err('ENOENT', `${name} not found in ${parent}`)
    const i = this.get(slot.ino)
    if (!i.entries) throw err('ENOTDIR', `${name} is not a directory`)
    if (i.entries.size > 0) throw err('ENOTEMPTY', `${name} is not empty`)
    this.removeEntry(d, name)
    d.nlink--
    this.dropLink(i)
  }

  async rename(parent: number, name: string, newParent: number, newName: string, flags = 0): Promise<void> {
    this.enter('rename', [parent, name, newParent, newName])
    if (flags & ~1) throw err('EINVAL', `rename flags ${flags}`)
    const sd = this.dir(parent)
    const dd = this.dir(newParent)
    this.checkName(name)
    this.checkName(newName)
    if (name === '.' || name === '..' || newName === '.' || newName === '..') throw err('EBUSY', 'rename of . or ..')
    const src = sd.entries!.get(name)
    if (!src) throw err('ENOENT', `${name} not found in ${parent}`)
    const si = this.get(src.ino)
    const dst = dd.entries!.get(newName)
    if (dst && flags & 1) throw err('EEXIST', `${newName} exists in ${newParent}`)
    // same inode under both names (hard links, or the same entry): nothing to do
    if (dst && dst.ino === src.ino) return
    if (si.entries && this.isDescendant(newParent, si.ino))
      throw err('EINVAL', `cannot move directory ${si.ino} into itself`)
    let di: Inode | undefined
    if (dst) {
      di = this.get(dst.ino)
      if (si.entries) {
        if (!di.entries) throw err('ENOTDIR', `${newName} is not a directory`)
        if (di.entries.size > 0) throw err('ENOTEMPTY', `${newName} is not empty`)
      } else if (di.entries) {
        throw err('EISDIR', `${newName} is a directory`)
      }
    }
    const now = Date.now()
    if (di) {
      this.removeEntry(dd, newName)
      if (di.entries) dd.nlink--
      this.dropLink(di)
    }
    this.removeEntry(sd, name)
    this.addEntry(dd, newName, si.ino)
    if (si.entries && sd !== dd) {
      sd.nlink--
      dd.nlink++
      si.parent = dd.ino
    }
    si.ctimeMs = now
  }

  async readdir(ino: number, pos: number, max: number): Promise<DirEntry[]> {
    this.enter('readdir', [ino, pos, max])
    const d = this.dir(ino)
    const out: DirEntry[] = []
    if (max <= 0) return out
    if (pos <= 0) out.push({ name: '.', ino: d.ino, type: DT.DIR, nextPos: 1 })
    if (pos <= 1 && out.length < max) out.push({ name: '..', ino: d.parent!, type: DT.DIR, nextPos: 2 })
    if (out.length >= max) return out
    // Map iteration is in insertion order, which is position order
    for (const [name, slot] of d.entries!) {
      if (slot.pos < pos) continue
      const i = this.inodes.get(slot.ino)
      out.push({ name, ino: slot.ino, type: i ? dtypeOf(i.mode) : DT.UNKNOWN, nextPos: slot.pos + 1 })
      if (out.length >= max) break
    }
    return out
  }

  async open(ino: number): Promise<OpenInfo> {
    this.enter('open', [ino])
    this.get(ino).opens++
    return { offline: false }
  }

  async release(ino: number): Promise<void> {
    this.enter('release', [ino])
    const i = this.get(ino)
    if (i.opens <= 0) throw err('EINVAL', `release of inode ${ino} that is not open`)
    i.opens--
    this.maybeFree(i)
  }

  async read(ino: number, offset: number, length: number): Promise<Buffer> {
    this.enter('read', [ino, offset, length])
    const i = this.get(ino)
    if (i.entries) throw err('EISDIR', `read of directory ${ino}`)
    if (!i.chunks) throw err('EINVAL', `read of non-regular inode ${ino}`)
    if (offset < 0 || length < 0) throw err('EINVAL', `read at ${offset}+${length}`)
    return this.readData(i, offset, length)
  }

  async write(ino: number, offset: number, data: Buffer): Promise<number> {
    this.enter('write', [ino, offset, data.length])
    const i = this.get(ino)
    if (i.entries) throw err('EISDIR', `write to directory ${ino}`)
    if (!i.chunks) throw err('EINVAL', `write to non-regular inode ${ino}`)
    if (offset < 0) throw err('EINVAL', `write at ${offset}`)
    if (offset + data.length > MAX_FILE_SIZE) throw err('EFBIG', `write past ${MAX_FILE_SIZE}`)
    this.writeData(i, offset, data)
    i.mtimeMs = i.ctimeMs = Date.now()
    return data.length
  }

  async fallocate(ino: number, mode: number, offset: number, length: number): Promise<Attr> {
    this.enter('fallocate', [ino, mode, offset, length])
    const i = this.get(ino)
    if (mode & ~1) throw err('EOPNOTSUPP', `fallocate mode ${mode}`)
    if (!(mode & 1) && offset + length > i.size) {
      i.size = offset + length
      i.mtimeMs = i.ctimeMs = Date.now()
    }
    return this.attr(i)
  }

  async fsync(ino: number, datasync: boolean): Promise<void> {
    this.enter('fsync', [ino, datasync])
    this.get(ino)
  }

  private checkXattrName(i: Inode, name: string, writing: boolean): void {
    if (name.length === 0 || Buffer.byteLength(name, 'utf8') > 255) throw err('ERANGE', 'bad xattr name length')
    const ns = name.slice(0, name.indexOf('.') + 1)
    // no POSIX ACLs (system.*) here: storing them opaquely would make cp/setfacl believe the
    // mode changed when it did not
    if (!['user.', 'trusted.', 'security.'].includes(ns) || name.length === ns.length)
      throw err('EOPNOTSUPP', `xattr namespace of ${name}`)
    if (ns === 'user.' && !i.chunks && !i.entries)
      throw writing ? err('EPERM', 'user xattrs on special files') : err('ENODATA', `no ${name}`)
  }

  async setxattr(ino: number, name: string, value: Buffer, flags: number): Promise<void> {
    this.enter('setxattr', [ino, name, value.length, flags])
    const i = this.get(ino)
    this.checkXattrName(i, name, true)
    if ((flags & ~(XATTR_CREATE | XATTR_REPLACE)) !== 0 || flags === (XATTR_CREATE | XATTR_REPLACE))
      throw err('EINVAL', `xattr flags ${flags}`)
    if (value.length > XATTR_SIZE_MAX) throw err('E2BIG', `xattr value of ${value.length} bytes`)
    const exists = i.xattrs.has(name)
    if (flags & XATTR_CREATE && exists) throw err('EEXIST', `${name} exists`)
    if (flags & XATTR_REPLACE && !exists) throw err('ENODATA', `no ${name}`)
    if (!exists) {
      let total = Buffer.byteLength(name) + 1
      for (const n of i.xattrs.keys()) total += Buffer.byteLength(n) + 1
      if (total > XATTR_LIST_MAX) throw err('ENOSPC', 'too many xattrs')
    }
    i.xattrs.set(name, Buffer.from(value))
    i.ctimeMs = Date.now()
  }

  async getxattr(ino: number, name: string): Promise<Buffer> {
    this.enter('getxattr', [ino, name])
    const i = this.get(ino)
    this.checkXattrName(i, name, false)
    const v = i.xattrs.get(name)
    if (!v) throw err('ENODATA', `no ${name}`)
    return Buffer.from(v)
  }

  async listxattr(ino: number): Promise<string[]> {
    this.enter('listxattr', [ino])
    return [...this.get(ino).xattrs.keys()]
  }

  async removexattr(ino: number, name: string): Promise<void> {
    this.enter('removexattr', [ino, name])
    const i = this.get(ino)
    this.checkXattrName(i, name, true)
    if (!i.xattrs.delete(name)) throw err('ENODATA', `no ${name}`)
    i.ctimeMs = Date.now()
  }

  async statfs(): Promise<StatFs> {
    this.enter('statfs', [])
    if (this.statfsOverride) return { ...this.statfsOverride }
    let used = 0
    for (const i of this.inodes.values()) used += i.chunks ? (i.chunks.size * CHUNK) / BLOCK_SIZE : 1
    const free = Math.max(0, TOTAL_BLOCKS - used)
    return {
      bsize: BLOCK_SIZE,
      frsize: BLOCK_SIZE,
      blocks: TOTAL_BLOCKS,
      bfree: free,
      bavail: free,
      files: TOTAL_INODES,
      ffree: TOTAL_INODES - this.inodes.size,
      namemax: NAME_MAX,
    }
  }

  async sync(): Promise<void> {
    this.enter('sync', [])
  }
}
