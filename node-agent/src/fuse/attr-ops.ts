/*
 * The requests about attributes and xattrs that the adapter's fuse-native subclass answers
 * itself (its _op_ methods), because the binding's own glue gets them wrong: stat with nlink 0
 * kept and EOVERFLOW for an inode number >= 2^32 (fuse-native's stat is 32-bit); getxattr and
 * listxattr honouring the caller's buffer (size query, ERANGE); utimens with both times.  Also
 * the 32-bit statfs fields.  POSIX ACL xattrs are refused (EOPNOTSUPP): libfuse 2 cannot
 * negotiate FUSE_POSIX_ACL, so the kernel would neither enforce them nor update the mode.
 */
import { constants as osConstants } from 'node:os'
import { FsError, isFsError } from '../util/errors.js'
import type { Attr, StatFs } from '../fs/fs-api.js'
import type { Signal } from './fuse-native.js'
import { respond, type OpsContext } from './reply.js'

const E = osConstants.errno
const U32 = 0x100000000
const NO_ID = 0xffffffff
const NAME_MAX = 255
const ACL_XATTRS = new Set(['system.posix_acl_access', 'system.posix_acl_default'])

export function noAcl(name: string): void {
  if (ACL_XATTRS.has(name)) throw new FsError('EOPNOTSUPP', 'POSIX ACLs are not supported through libfuse 2')
}

function setU64(a: Uint32Array, i: number, n: number): void {
  const v = Math.max(0, Math.floor(n))
  a[i] = v % U32
  a[i + 1] = Math.floor(v / U32)
}

export function statArray(a: Attr, blksize: number): Uint32Array {
  if (a.ino >= U32) throw new FsError('EOVERFLOW', `inode number ${a.ino} does not fit fuse-native's 32 bits`)
  const s = new Uint32Array(18)
  s[0] = a.mode
  s[1] = a.uid
  s[2] = a.gid
  setU64(s, 3, a.size)
  s[5] = 0 // dev
  s[6] = a.nlink
  s[7] = a.ino
  s[8] = a.rdev
  s[9] = blksize
  setU64(s, 10, a.blocks)
  setU64(s, 12, a.atimeMs)
  setU64(s, 14, a.mtimeMs)
  setU64(s, 16, a.ctimeMs)
  return s
}

export function statfsObject(s: StatFs): Record<string, number> {
  // fuse-native passes statvfs as 32-bit fields: scale the fragment size up until the
  // block counts fit (df multiplies them by f_frsize)
  let frsize = s.frsize || s.bsize
  let { blocks, bfree, bavail } = s
  while (blocks > NO_ID) {
    frsize *= 2
    blocks = Math.floor(blocks / 2)
    bfree = Math.floor(bfree / 2)
    bavail = Math.floor(bavail / 2)
  }
  const files = Math.min(s.files, NO_ID)
  const ffree = Math.min(s.ffree, NO_ID)
  return {
    bsize: Math.min(s.bsize, NO_ID),
    frsize,
    blocks,
    bfree,
    bavail,
    files,
    ffree,
    favail: ffree,
    fsid: 0,
    flag: 0,
    namemax: s.namemax || NAME_MAX,
  }
}

export async function getattrPath(ctx: OpsContext, path: string): Promise<Attr> {
  try {
    return await ctx.paths.withIno(path, (ino, attr) => (attr ? Promise.resolve(attr) : ctx.fs.getattr(ino)))
  } catch (e) {
    // fstat is a getattr by path: a file open here whose name another mount removed
    const ino = isFsError(e, 'ENOENT') ? ctx.handles.openInoAt(path) : undefined
    if (ino === undefined) throw e
    return ctx.fs.getattr(ino)
  }
}

// ---- the requests the adapter's fuse-native subclass answers itself (_op_ methods) ----

export function answerGetattr(ctx: OpsContext, signal: Signal, path: string, fh?: number): void {
  const h = fh === undefined ? undefined : ctx.handles.find(fh)
  respond(
    ctx.log,
    fh === undefined ? 'getattr' : 'fgetattr',
    signal,
    signal,
    () => (h ? ctx.fs.getattr(h.ino) : getattrPath(ctx, path)),
    (a, reply) => reply(0, statArray(a, ctx.blksize)),
  )
}

export function answerUtimens(ctx: OpsContext, signal: Signal, path: string, atimeMs: number, mtimeMs: number): void {
  respond(
    ctx.log,
    'utimens',
    signal,
    signal,
    () => ctx.paths.withIno(path, (ino) => ctx.fs.setattr(ino, { atimeMs, mtimeMs })),
    (_v, reply) => reply(0),
  )
}

/** answer with the bytes `packed` into the caller's buffer: a size query, ERANGE, or the copy */
function answerBuffer(packed: Buffer, buf: Buffer, reply: Signal): void {
  const ab = buf.buffer
  if (buf.length === 0) return reply(packed.length, ab)
  if (packed.length > buf.length) return reply(-E.ERANGE, ab)
  packed.copy(buf)
  reply(packed.length, ab)
}

export function answerGetxattr(ctx: OpsContext, signal: Signal, path: string, name: string, buf: Buffer): void {
  respond(
    ctx.log,
    'getxattr',
    signal,
    (n) => signal(n, buf.buffer),
    () => {
      noAcl(name)
      return ctx.paths.withIno(path, (ino) => ctx.fs.getxattr(ino, name))
    },
    (value, reply) => answerBuffer(value, buf, reply),
  )
}

export function answerListxattr(ctx: OpsContext, signal: Signal, path: string, buf: Buffer): void {
  respond(
    ctx.log,
    'listxattr',
    signal,
    (n) => signal(n, buf.buffer),
    () => ctx.paths.withIno(path, (ino) => ctx.fs.listxattr(ino)),
    (names, reply) =>
      answerBuffer(
        Buffer.concat(names.filter((n) => !ACL_XATTRS.has(n)).map((n) => Buffer.from(n + '\0', 'utf8'))),
        buf,
        reply,
      ),
  )
}
