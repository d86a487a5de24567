/*
 * The libfuse 3 low-level addon (node-agent/native/fuse3, C), typed: loading it, its request
 * op codes, and the layouts of the attribute and statfs arrays its replies take.
 *
 * The addon reads /dev/fuse on the JavaScript thread (polled by the event loop) and calls one
 * dispatch function for every request (batched: what one wake-up finds), with the caller's credentials and
 * up to nine numbers and two byte strings (names, write data, xattr values: bytes, never
 * strings).  Every request except FORGET must be answered exactly once through a reply*
 * function; a second answer throws (EALREADY) and never reaches libfuse.
 *
 * The addon is built by scripts/build-fuse3.sh (node-gyp, against Debian's libfuse3-dev);
 * loading it fails with ENOENT and what to run when it has not been built.
 */
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { FsError } from '../util/errors.js'

/** op codes, as in fuse3_lowlevel.c's enum op */
export const OP = {
  LOOKUP: 1,
  FORGET: 2,
  GETATTR: 3,
  SETATTR: 4,
  READLINK: 5,
  MKNOD: 6,
  MKDIR: 7,
  UNLINK: 8,
  RMDIR: 9,
  SYMLINK: 10,
  RENAME: 11,
  LINK: 12,
  OPEN: 13,
  READ: 14,
  WRITE: 15,
  RELEASE: 16,
  FSYNC: 17,
  OPENDIR: 18,
  READDIR: 19,
  FSYNCDIR: 20,
  STATFS: 21,
  SETXATTR: 22,
  GETXATTR: 23,
  LISTXATTR: 24,
  REMOVEXATTR: 25,
  ACCESS: 26,
  CREATE: 27,
  FALLOCATE: 28,
  READDIRPLUS: 29,
} as const

/** libfuse's FUSE_SET_ATTR_* bits of a SETATTR */
export const SET_ATTR = {
  MODE: 1 << 0,
  UID: 1 << 1,
  GID: 1 << 2,
  SIZE: 1 << 3,
  ATIME: 1 << 4,
  MTIME: 1 << 5,
  ATIME_NOW: 1 << 7,
  MTIME_NOW: 1 << 8,
  CTIME: 1 << 10,
} as const

/** an opaque request handle (a napi external); null for FORGET, which takes no answer */
export type Req = object & { readonly __fuseReq: unique symbol }
/** an opaque mounted session */
export type Session = object & { readonly __fuseSession: unique symbol }

/**
 * dispatch(req, op, uid, gid, pid, umask, n0..n8, b0, b1): the numbers and byte strings of
 * each op are listed where fuse3-adapter.ts reads them (and at each ll_* in the C file).
 */
export type Dispatch = (
  req: Req | null,
  op: number,
  uid: number,
  gid: number,
  pid: number,
  umask: number,
  n0: number,
  n1: number,
  n2: number,
  n3: number,
  n4: number,
  n5: number,
  n6: number,
  n7: number,
  n8: number,
  b0: Buffer | undefined,
  b1: Buffer | undefined,
) => void

/** attribute array layout: a Float64Array of ATTR_LEN per inode */
export const ATTR_LEN = 12
export const A = {
  INO: 0,
  MODE: 1,
  NLINK: 2,
  UID: 3,
  GID: 4,
  RDEV: 5,
  SIZE: 6,
  BLOCKS: 7,
  ATIME: 8,
  MTIME: 9,
  CTIME: 10,
  BLKSIZE: 11,
} as const

export interface Fuse3Native {
  /** mount, poll /dev/fuse on this thread and start the notify thread; options is libfuse's -o string */
  mount(
    mountpoint: string,
    options: string,
    dispatch: Dispatch,
    attrTimeoutS: number,
    entryTimeoutS: number,
    debug: boolean,
    /**
     * equal Buffers of at least 1 MiB (at most 32) lent for WRITE data: a WRITE names the
     * one holding its data by index (n3, at n5, length n4; n3 -1: the data is b0); it is the
     * addon's again once the request is answered.  Buffers of 1 MiB + 4 KiB or more are read
     * into (no copy of the data).
     */
    writeBuffers: Buffer[],
    /** how long the event loop keeps polling after a request instead of sleeping (us; 0: never) */
    spinUs: number,
  ): Session
  /** stop reading, lazy unmount, end the notify thread (idempotent) */
  stop(s: Session): void
  /** requests queued or handed to JavaScript and not answered */
  pending(s: Session): number
  /** close /dev/fuse: after stop() and once pending() is 0 */
  destroy(s: Session): void
  /** queue a notify-invalidate of an inode (attributes, data) for the notify thread; 0 after stop */
  notifyInvalInode(s: Session, ino: number): number
  /** queue a notify-invalidate of the entry parent/name for the notify thread */
  notifyInvalEntry(s: Session, parent: number, name: Buffer): number
  /**
   * notifies the kernel took (or had nothing to drop for), notifies it refused, and the
   * security.capability questions the addon answered itself (it keeps the
   * inodes JavaScript answered ENODATA for until their xattrs may change), and the requests
   * that found the event loop asleep (not polling: spinUs had passed since the last one), and
   * the GETATTRs of directories it answered from what cacheAttr gave it
   */
  notifyCounters(s: Session): [number, number, number, number, number]
  replyErr(r: Req, errno: number): number
  replyEntry(r: Req, attr: Float64Array): number
  /** `made`: 1 when the file is new, so the addon knows it has no security.capability */
  replyCreate(r: Req, attr: Float64Array, fh: number, directIo: number, keepCache: number, made: number): number
  replyAttr(r: Req, attr: Float64Array): number
  /**
   * before the answer of a request that changed directory attr[INO] (a name made or removed in
   * it): its attributes now, which the addon answers the kernel's next GETATTR of it with,
   * unless anything may have changed them since the request was read
   */
  cacheAttr(r: Req, attr: Float64Array): void
  replyOpen(r: Req, fh: number, directIo: number, keepCache: number): number
  replyWrite(r: Req, count: number): number
  /** read data, readlink target, xattr value or name list */
  replyBuf(r: Req, data: Buffer): number
  replyXattrSize(r: Req, size: number): number
  /** [bsize, frsize, blocks, bfree, bavail, files, ffree, namemax] */
  replyStatfs(r: Req, s: Float64Array): number
  /** the entries that fitted the kernel's buffer; attrs: ATTR_LEN numbers per name */
  replyDirents(r: Req, names: Buffer[], attrs: Float64Array, offs: Float64Array, plus: number): number
}

/** where scripts/build-fuse3.sh puts the addon (from dist/node-agent/src/fuse or node-agent/src/fuse) */
function addonPath(): string {
  const rel = ['node-agent', 'native', 'fuse3', 'build', 'Release', 'fuse3_lowlevel.node']
  for (const up of [
    ['..', '..', '..', '..'],
    ['..', '..', '..'],
  ]) {
    const p = join(__dirname, ...up, ...rel)
    if (existsSync(p)) return p
  }
  return join(__dirname, '..', '..', '..', '..', ...rel)
}

let loaded: Fuse3Native | undefined

/** the addon, loaded once; ENOENT with what to run when it has not been built */
export function fuse3Native(): Fuse3Native {
  if (loaded) return loaded
  const p = addonPath()
  if (!existsSync(p))
    throw new FsError(
      'ENOENT',
      `the libfuse 3 binding is not built (${p} missing): run scripts/ensure-deps.sh (installs libfuse3-dev, builds it), or mount with -o frontend=fuse-native`,
    )
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  loaded = require(p) as Fuse3Native
  return loaded
}
