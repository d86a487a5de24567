/*
 * The FUSE operations: fuse-native's ops object (FuseOps) and the _op_ methods the adapter's
 * subclass answers itself, each mapping a path-based request onto the inode-based FsApi.
 *
 * Invariants: every request is answered exactly once -- respond() wraps the reply in a guard
 * that logs and drops a second answer, catches a synchronous throw, and handles every
 * rejection (an FsError answers with its errno, anything else with EIO and is logged); the
 * kernel's buffers (read, write, xattrs) are used only before the answer.  getattr/fgetattr
 * report nlink 0 and fail with EOVERFLOW for an inode number >= 2^32 (fuse-native's stat is
 * 32-bit); getxattr/listxattr honour the caller's buffer size (size query, ERANGE).
 */
import { constants as osConstants } from 'node:os'
import { FsError } from '../util/errors.js'
import type { Attr, Caller, FsApi, StatFs } from '../fs/fs-api.js'
import type { FuseOps, Reply, Signal } from './fuse-native.js'
import { HIDDEN_RE, type Handles } from './handles.js'
import { checkName, splitPath, type PathCache } from './path-cache.js'

const E = osConstants.errno
const O_APPEND = 0o2000
const U32 = 0x100000000
const NO_ID = 0xffffffff
const NAME_MAX = 255
const READDIR_BATCH = 1024
/** POSIX ACLs: libfuse 2 cannot negotiate FUSE_POSIX_ACL, so the kernel would neither enforce them nor update the mode */
const ACL_XATTRS = new Set(['system.posix_acl_access', 'system.posix_acl_default'])

export interface OpsLogger {
  error(msg: string, err?: unknown): void
  warn?(msg: string): void
}

export interface OpsContext {
  fs: FsApi
  paths: PathCache
  handles: Handles
  caller: () => Caller
  blksize: number
  log: OpsLogger
}

function noAcl(name: string): void {
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

/** the negative errno an op answers with for `e` */
function errno(log: OpsLogger, e: unknown, what: string): number {
  if (e instanceof FsError && e.errno > 0) return -e.errno
  log.error(`${what} failed`, e)
  return -E.EIO
}

/**
 * Run an op and answer it exactly once: ok(value, reply) on success, reply(-errno) on failure.
 * Never throws, never leaves the kernel waiting, never answers twice.
 */
export function respond<T>(
  log: OpsLogger,
  what: string,
  rawReply: Reply,
  fail: Reply,
  fn: () => Promise<T>,
  ok: (v: T, reply: Reply) => void,
): void {
  let answered = false
  const guard =
    (f: Reply): Reply =>
    (res, ...results) => {
      if (answered) {
        log.error(`${what}: a second answer to one request, dropped`, new Error('double reply'))
        return
      }
      answered = true
      f(res, ...results)
    }
  const reply = guard(rawReply)
  const failOnce = guard(fail)
  const onError = (e: unknown): void => {
    if (answered) return log.error(`${what}: failed after its answer`, e)
    failOnce(errno(log, e, what))
  }
  let p: Promise<T>
  try {
    p = fn()
  } catch (e) {
    return onError(e)
  }
  p.then((v) => {
    try {
      ok(v, reply)
    } catch (e) {
      onError(e)
    }
  }, onError)
}

/** respond() for a callback-style op: cb(0, ...results) or cb(-errno) */
function cbOp<T>(ctx: OpsContext, what: string, cb: Reply, fn: () => Promise<T>, results: (v: T) => unknown[]): void {
  respond(ctx.log, what, cb, cb, fn, (v, reply) => reply(0, ...results(v)))
}

const none = (): [] => []

async function readdir(ctx: OpsContext, path: string): Promise<[string[], Array<{ ino: number; mode: number }>]> {
  return ctx.paths.withIno(path, async (ino) => {
    const names: string[] = []
    const stats: Array<{ ino: number; mode: number }> = []
    let pos = 0
    let fits = true
    for (;;) {
      const batch = await ctx.fs.readdir(ino, pos, READDIR_BATCH)
      if (batch.length === 0) break
      for (const e of batch) {
        names.push(e.name)
        if (e.ino >= U32) fits = false
        // d_type is st_mode >> 12, and a DT_* value is exactly that
        stats.push({ ino: e.ino, mode: e.type << 12 })
        pos = e.nextPos
      }
      if (batch.length < READDIR_BATCH) break
    }
    // without stats libfuse reports unknown inode numbers instead of truncated ones
    return [names, fits ? stats : []]
  })
}

async function createEntry(
  ctx: OpsContext,
  path: string,
  make: (parent: number, name: string) => Promise<Attr>,
): Promise<void> {
  await ctx.paths.withParent(path, (parent, name) => ctx.paths.create(path, () => make(parent, name)))
}

async function unlink(ctx: OpsContext, path: string): Promise<void> {
  // libfuse's last close of an unlinked file: the fs deletes the inode at its last release
  if (ctx.handles.unhide(splitPath(path).name)) return
  await ctx.paths.withParent(path, (p, n) => ctx.fs.unlink(p, n))
  ctx.paths.invalidate(path)
}

async function rename(ctx: OpsContext, src: string, dest: string): Promise<void> {
  const s = splitPath(src)
  const d = splitPath(dest)
  checkName(s.name)
  checkName(d.name)
  if (ctx.handles.isHidden(s.name)) throw new FsError('ENOENT', `${src} was unlinked`)
  if (HIDDEN_RE.test(d.name) && !ctx.handles.isHidden(d.name)) {
    // libfuse hides an open file it is asked to unlink (or to replace by a rename): that is
    // an unlink in the fs, which keeps the inode while it is open; the name stays local
    const ino = (await ctx.paths.resolve(src)).ino
    await ctx.paths.withParent(src, (p, n) => ctx.fs.unlink(p, n))
    ctx.handles.hide(d.name, ino)
  } else {
    ctx.handles.checkNoOpenBelow(dest)
    await ctx.paths.withParent(src, (sp, sn) => ctx.paths.withParent(dest, (dp, dn) => ctx.fs.rename(sp, sn, dp, dn)))
    ctx.paths.invalidate(dest)
  }
  ctx.paths.invalidate(src)
  ctx.handles.movePaths(src, dest)
}

export async function getattrPath(ctx: OpsContext, path: string): Promise<Attr> {
  return ctx.paths.withIno(path, (ino, attr) => (attr ? Promise.resolve(attr) : ctx.fs.getattr(ino)))
}

/** the ops fuse-native registers with libfuse (flush and releasedir are left out: see handles.ts) */
export function makeOps(ctx: OpsContext): FuseOps {
  const { fs, paths, handles } = ctx
  const withIno = paths.withIno.bind(paths)
  // getattr/fgetattr/getxattr/listxattr/utimens are answered by the adapter's _op_ methods
  // (answer* below); the entries here only make fuse-native register them with libfuse
  const notUsed = (...args: unknown[]): void => {
    const cb = args[args.length - 1]
    if (typeof cb === 'function') cb(-E.ENOSYS)
  }
  return {
    init: (cb) => cb(0),
    access: (_path, _mode, cb) => cb(0),
    statfs: (_path, cb) =>
      cbOp(
        ctx,
        'statfs',
        cb,
        () => fs.statfs(),
        (s) => [statfsObject(s)],
      ),
    getattr: notUsed,
    fgetattr: notUsed,
    getxattr: notUsed,
    listxattr: notUsed,
    utimens: notUsed,
    readdir: (path, cb) =>
      cbOp(
        ctx,
        'readdir',
        cb,
        () => readdir(ctx, path),
        (r) => r,
      ),
    opendir: (path, _flags, cb) =>
      cbOp(
        ctx,
        'opendir',
        cb,
        async () => {
          const a = await getattrPath(ctx, path)
          if ((a.mode & 0o170000) !== 0o040000) throw new FsError('ENOTDIR', `${path} is not a directory`)
        },
        (): [number] => [0],
      ),
    fsyncdir: (path, datasync, _fh, cb) =>
      cbOp(ctx, 'fsyncdir', cb, () => withIno(path, (ino) => fs.fsync(ino, !!datasync)), none),
    open: (path, flags, cb) =>
      cbOp(
        ctx,
        'open',
        cb,
        async () => {
          const ino = await withIno(path, async (ino) => {
            await fs.open(ino)
            return ino
          })
          return handles.add(ino, flags, path)
        },
        (fh): [number] => [fh],
      ),
    create: (path, mode, cb) =>
      cbOp(
        ctx,
        'create',
        cb,
        async () => {
          const attr = await paths.withParent(path, (parent, name) =>
            paths.create(path, () => fs.mknod(parent, name, (mode & 0o7777) | 0o100000, 0, ctx.caller())),
          )
          await fs.open(attr.ino)
          return handles.add(attr.ino, 0, path)
        },
        (fh): [number] => [fh],
      ),
    release: (_path, fh, cb) =>
      cbOp(
        ctx,
        'release',
        cb,
        async () => {
          // forget the handle first: whatever fs.release does, it is called exactly once
          const ino = handles.remove(fh)
          if (ino === undefined) return ctx.log.warn?.(`release of unknown handle ${fh}`)
          await fs.release(ino)
        },
        none,
      ),
    read: (_path, fh, buf, len, pos, cb) =>
      respond(
        ctx.log,
        'read',
        cb,
        cb,
        async () => {
          const data = await fs.read(handles.get(fh).ino, pos, len)
          return data.copy(buf, 0, 0, Math.min(data.length, len))
        },
        (n, reply) => reply(n),
      ),
    write: (_path, fh, buf, len, pos, cb) =>
      respond(
        ctx.log,
        'write',
        cb,
        cb,
        async () => {
          const h = handles.get(fh)
          // copy: the kernel's buffer is only ours until we answer
          const data = Buffer.from(buf.subarray(0, len))
          return fs.write(h.ino, pos, data, (h.flags & O_APPEND) !== 0)
        },
        (n, reply) => reply(n),
      ),
    fsync: (path, datasync, fh, cb) =>
      cbOp(
        ctx,
        'fsync',
        cb,
        async () => {
          const h = handles.find(fh)
          return h ? fs.fsync(h.ino, !!datasync) : withIno(path, (ino) => fs.fsync(ino, !!datasync))
        },
        none,
      ),
    truncate: (path, size, cb) =>
      cbOp(ctx, 'truncate', cb, () => withIno(path, (ino) => fs.setattr(ino, { size })), none),
    ftruncate: (path, fh, size, cb) =>
      cbOp(
        ctx,
        'ftruncate',
        cb,
        async () => {
          const h = handles.find(fh)
          return h ? fs.setattr(h.ino, { size }) : withIno(path, (ino) => fs.setattr(ino, { size }))
        },
        none,
      ),
    chmod: (path, mode, cb) =>
      cbOp(ctx, 'chmod', cb, () => withIno(path, (ino) => fs.setattr(ino, { mode: mode & 0o7777 })), none),
    chown: (path, uid, gid, cb) =>
      cbOp(
        ctx,
        'chown',
        cb,
        () => {
          const set: { uid?: number; gid?: number } = {}
          if (uid !== NO_ID) set.uid = uid
          if (gid !== NO_ID) set.gid = gid
          return withIno(path, (ino) => fs.setattr(ino, set))
        },
        none,
      ),
    readlink: (path, cb) =>
      cbOp(
        ctx,
        'readlink',
        cb,
        () => withIno(path, (ino) => fs.readlink(ino)),
        (t): [string] => [t],
      ),
    mknod: (path, mode, dev, cb) =>
      cbOp(ctx, 'mknod', cb, () => createEntry(ctx, path, (p, n) => fs.mknod(p, n, mode, dev, ctx.caller())), none),
    mkdir: (path, mode, cb) =>
      cbOp(ctx, 'mkdir', cb, () => createEntry(ctx, path, (p, n) => fs.mkdir(p, n, mode & 0o7777, ctx.caller())), none),
    symlink: (target, path, cb) =>
      cbOp(ctx, 'symlink', cb, () => createEntry(ctx, path, (p, n) => fs.symlink(p, n, target, ctx.caller())), none),
    link: (src, dest, cb) =>
      cbOp(
        ctx,
        'link',
        cb,
        async () => {
          const ino = (await paths.resolve(src)).ino
          await createEntry(ctx, dest, (p, n) => fs.link(ino, p, n))
        },
        none,
      ),
    unlink: (path, cb) => cbOp(ctx, 'unlink', cb, () => unlink(ctx, path), none),
    rmdir: (path, cb) =>
      cbOp(
        ctx,
        'rmdir',
        cb,
        async () => {
          handles.checkNoOpenBelow(path)
          await paths.withParent(path, (p, n) => fs.rmdir(p, n))
          paths.invalidate(path)
        },
        none,
      ),
    rename: (src, dest, cb) => cbOp(ctx, 'rename', cb, () => rename(ctx, src, dest), none),
    setxattr: (path, name, value, _position, flags, cb) =>
      cbOp(
        ctx,
        'setxattr',
        cb,
        () => {
          noAcl(name)
          // copy: the kernel's buffer is only ours until we answer
          const v = Buffer.from(value)
          return withIno(path, (ino) => fs.setxattr(ino, name, v, flags))
        },
        none,
      ),
    removexattr: (path, name, cb) =>
      cbOp(
        ctx,
        'removexattr',
        cb,
        () => {
          noAcl(name)
          return withIno(path, (ino) => fs.removexattr(ino, name))
        },
        none,
      ),
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
