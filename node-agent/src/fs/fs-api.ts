/*
 * The filesystem's operations as the layer above (the FUSE adapter, the admin socket) sees
 * them: by inode number, like the kernel VFS and libfuse's low-level API, never by path.  A
 * different FUSE binding can replace the adapter without touching the filesystem.
 *
 * Every method fails with an FsError carrying the errno a Linux filesystem would return.
 */

export const ROOT_INO = 1

/** d_type values */
export const DT = { UNKNOWN: 0, FIFO: 1, CHR: 2, DIR: 4, BLK: 6, REG: 8, LNK: 10, SOCK: 12 } as const

/** file type bits of a mode */
export const S_IFMT = 0o170000
export const S_IFSOCK = 0o140000
export const S_IFLNK = 0o120000
export const S_IFREG = 0o100000
export const S_IFBLK = 0o060000
export const S_IFDIR = 0o040000
export const S_IFCHR = 0o020000
export const S_IFIFO = 0o010000

/** the d_type readdir reports for a mode */
export function dtypeOf(mode: number): number {
  switch (mode & S_IFMT) {
    case S_IFDIR:
      return DT.DIR
    case S_IFREG:
      return DT.REG
    case S_IFLNK:
      return DT.LNK
    case S_IFIFO:
      return DT.FIFO
    case S_IFCHR:
      return DT.CHR
    case S_IFBLK:
      return DT.BLK
    case S_IFSOCK:
      return DT.SOCK
  }
  return DT.UNKNOWN
}

export interface Attr {
  ino: number
  mode: number
  nlink: number
  uid: number
  gid: number
  rdev: number
  size: number
  /** 512-byte blocks allocated */
  blocks: number
  atimeMs: number
  mtimeMs: number
  ctimeMs: number
  crtimeMs: number
}

/**
 * A name in a directory: bytes (any but '/' and NUL); a string stands for its UTF-8 bytes.
 * The low-level frontend passes the kernel's bytes as they are.
 */
export type FsName = string | Buffer

export interface DirEntry {
  name: string
  /** the name's bytes (`name` is them decoded as UTF-8, which loses bytes that are not UTF-8) */
  nameBytes?: Buffer
  ino: number
  type: number
  /** readdir position of the entry after this one (for resuming) */
  nextPos: number
}

/** what open() learned of the inode */
export interface OpenInfo {
  /** the file had offline blocks when opened (release, docs/archive.md) */
  offline: boolean
}

export interface StatFs {
  bsize: number
  frsize: number
  blocks: number
  bfree: number
  bavail: number
  files: number
  ffree: number
  namemax: number
}

/** Who is asking: ownership of new inodes; permission checks are left to the kernel. */
export interface Caller {
  uid: number
  gid: number
}

export interface SetAttr {
  mode?: number
  uid?: number
  gid?: number
  size?: number
  atimeMs?: number
  mtimeMs?: number
}

/** renameat2 flags */
export const RENAME_NOREPLACE = 1
export const RENAME_EXCHANGE = 2

/** fallocate modes */
export const FALLOC_FL_KEEP_SIZE = 1
export const FALLOC_FL_PUNCH_HOLE = 2

export const XATTR_CREATE = 1
export const XATTR_REPLACE = 2

export interface FsApi {
  lookup(parent: number, name: FsName): Promise<Attr>
  getattr(ino: number): Promise<Attr>
  setattr(ino: number, set: SetAttr): Promise<Attr>
  /** a regular file, fifo, socket or device node; EEXIST if the name exists */
  mknod(parent: number, name: FsName, mode: number, rdev: number, who: Caller): Promise<Attr>
  mkdir(parent: number, name: FsName, mode: number, who: Caller): Promise<Attr>
  symlink(parent: number, name: FsName, target: string, who: Caller): Promise<Attr>
  readlink(ino: number): Promise<string>
  link(ino: number, newParent: number, newName: FsName): Promise<Attr>
  /** removes the name; the inode lives on while it is open (see open/release) */
  unlink(parent: number, name: FsName): Promise<void>
  rmdir(parent: number, name: FsName): Promise<void>
  /**
   * POSIX rename, replacing the target if it exists and is compatible; `flags` as renameat2's
   * (RENAME_NOREPLACE: EEXIST if the target exists; RENAME_EXCHANGE: swap two existing names;
   * others EINVAL)
   */
  rename(parent: number, name: FsName, newParent: number, newName: FsName, flags?: number): Promise<void>
  /** entries from position `pos` (0 starts with "." and ".."), at most `max` of them */
  readdir(ino: number, pos: number, max: number): Promise<DirEntry[]>
  /**
   * count an open reference: an unlinked inode is deleted at its last release.  Says whether
   * the file has offline (released) blocks: a frontend then reads it without readahead, so a
   * read of its online part never waits for a stage of the rest.
   */
  open(ino: number): Promise<OpenInfo>
  release(ino: number): Promise<void>
  /**
   * Read up to `length` bytes at `offset` (fewer at the end of the file).  With `into` (a
   * buffer the caller reuses once it has used the answer) the bytes land there when they fit,
   * and the answer is a part of it.
   */
  read(ino: number, offset: number, length: number, into?: Buffer): Promise<Buffer>
  /**
   * Write `data` at `offset`; with `append` (a file opened O_APPEND) at the end of the file as
   * it is when the write runs, ignoring `offset` (so appends from several nodes never overlap).
   * Nothing keeps `data` once the promise settles: the caller may reuse it then.
   */
  write(ino: number, offset: number, data: Buffer, append?: boolean): Promise<number>
  /**
   * fallocate(2) modes 0, FALLOC_FL_KEEP_SIZE and PUNCH_HOLE|KEEP_SIZE: mode 0 grows the size
   * to offset+length if it is smaller (the blocks are not reserved: a later write may still
   * find ENOSPC); KEEP_SIZE changes nothing; PUNCH_HOLE|KEEP_SIZE makes the range read zeros
   * and frees the blocks wholly inside it.  Other modes (PUNCH_HOLE alone too): EOPNOTSUPP.
   */
  fallocate(ino: number, mode: number, offset: number, length: number): Promise<Attr>
  /** make this inode's data and metadata durable */
  fsync(ino: number, datasync: boolean): Promise<void>
  setxattr(ino: number, name: string, value: Buffer, flags: number): Promise<void>
  getxattr(ino: number, name: string): Promise<Buffer>
  listxattr(ino: number): Promise<string[]>
  removexattr(ino: number, name: string): Promise<void>
  /** the filesystem's sizes; inside a quota tree (`ino` in one), the tree's limits and usage */
  statfs(ino?: number): Promise<StatFs>
  /** commit the open transaction (sync) */
  sync(): Promise<void>
}
