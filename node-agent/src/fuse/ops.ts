/*
 * The ops object fuse-native registers with libfuse (FuseOps): each maps a path-based request
 * onto the inode-based FsApi through the path cache and the open handles, and answers through
 * respond() (reply.ts), so exactly once.  The kernel's buffers (read, write, setxattr) are
 * used only before the answer.  flush and releasedir are left out: libfuse may call them with
 * a NULL path, which fuse-native cannot take (handles.ts), and they have nothing to do.
 * getattr, fgetattr, getxattr, listxattr and utimens are answered by the adapter's _op_
 * methods (attr-ops.ts); their entries here only make fuse-native register them.
 */
import { constants as osConstants } from 'node:os'
import { FsError } from '../util/errors.js'
import type { Attr } from '../fs/fs-api.js'
import type { FuseOps, Reply } from './fuse-native.js'
import { getattrPath, noAcl, statfsObject } from './attr-ops.js'
import { HIDDEN_RE } from './handles.js'
import { checkName, splitPath } from './path-cache.js'
import { respond, type OpsContext } from './reply.js'

const E = osConstants.errno
const O_APPEND = 0o2000
const U32 = 0x100000000
const NO_ID = 0xffffffff
const READDIR_BATCH = 1024

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

/** the ops fuse-native registers with libfuse (flush and releasedir are left out: see handles.ts) */
export function makeOps(ctx: OpsContext): FuseOps {
  const { fs, paths, handles } = ctx
  const withIno = paths.withIno.bind(paths)
  const notUsed = (...args: unknown[]): void => {
    const cb = args[args.length - 1]
    if (typeof cb === 'function') cb(-E.ENOSYS)
  }
  return {
    init: (cb) => cb(0),
    access: (_path, _mode, cb) => cb(0),
    statfs: (path, cb) =>
      cbOp(
        ctx,
        'statfs',
        cb,
        () => withIno(path, (ino) => fs.statfs(ino)),
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
