/*
 * The FUSE adapter: serves an FsApi (inode-number based) through fuse-native (libfuse 2's
 * high-level, path-based API).  DESIGN.md §12.
 *
 * Paths become inode numbers here and nowhere else: a path -> ino cache is filled by lookups
 * (resolving component by component from ROOT_INO on a miss) and cleared by our own namespace
 * changes and, later, by lock invalidation (invalidate / invalidateInodes / clearCache).
 *
 * Mount options (see FuseAdapter.optionList): use_ino (stat/readdir show our inode numbers,
 * not libfuse's node ids), attr_timeout=0, entry_timeout=0, negative_timeout=0 and direct_io
 * (every stat and read reaches the fs, so another node's writes are seen at once),
 * default_permissions (the kernel checks permissions), allow_other when running as root,
 * big_writes with max_write=128 KiB.  fuse-native cannot express most of these (it drops a
 * timeout of 0 and has no use_ino/direct_io/negative_timeout/big_writes), so a subclass of
 * its Fuse class overrides _fuseOptions() to build the option string itself.
 *
 * The subclass also replaces a few of the binding's JS glue functions that are wrong for a
 * POSIX filesystem:
 *  - getattr/fgetattr: the binding turns nlink 0 into 1 and truncates inode numbers to 32
 *    bits; ours reports nlink 0 and fails with EOVERFLOW for an inode number >= 2^32 (what
 *    stat(2) does when st_ino does not fit), and fgetattr uses the open handle.
 *  - getxattr/listxattr: the binding ignores the caller's buffer size; ours returns the size
 *    for a size query and ERANGE when the buffer is too small.
 *  - utimens: the native code passes atime twice and never mtime; ours reads mtime from the
 *    native request block (after checking that the atime next to it matches).
 *
 * Unlink of an open file: libfuse renames it to "<dir>/.fuse_hiddenXXXXXXXXYYYYYYYY" and
 * unlinks that name at the last close.  A rename onto such a name is an fs.unlink of the
 * source (the fs keeps the inode alive while it is open); the hidden name resolves only here,
 * through a map from hidden name to inode, and is never created in the fs nor listed; its
 * final unlink only forgets the mapping.
 *
 * Never block the event loop: every op is async, nothing here does synchronous I/O.
 */
import { execFile } from 'node:child_process'
import { constants as osConstants } from 'node:os'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, resolve as resolvePath } from 'node:path'
import { FsError, isFsError } from '../util/errors.js'
import { ROOT_INO, type Attr, type Caller, type FsApi, type StatFs } from '../fs/fs-api.js'

// fuse-native has no type declarations; describe the little of it we use.
type Cb = (...args: unknown[]) => void
type Signal = (...args: unknown[]) => void
interface FuseNativeInstance {
  _thread: Buffer
  mount(cb: (err: Error | null) => void): void
  unmount(cb: (err: Error | null) => void): void
  _handlers: Array<((...args: unknown[]) => unknown) | undefined>
}
interface FuseNativeClass {
  new (mnt: string, ops: Record<string, Cb>, opts: Record<string, unknown>): FuseNativeInstance
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const FuseNative: FuseNativeClass = require('fuse-native')
/** the native binding fuse-native loaded (node-gyp-build returns the same module) */
const nativeBinding = createRequire(require.resolve('fuse-native'))('node-gyp-build')(
  dirname(require.resolve('fuse-native')),
) as { fuse_native_unmount(mnt: string, thread: Buffer): void }

const E = osConstants.errno
const NAME_MAX = 255
const O_APPEND = 0o2000
/** libfuse 2's hidden name for an unlinked open file */
const HIDDEN_RE = /^\.fuse_hidden[0-9a-f]{16}$/
const U32 = 0x100000000
const NO_ID = 0xffffffff
/** opcode of utimens in fuse-native 2.x (fuse-native.c: op_utimens) */
const OP_UTIMENS = 12
/** offsets of atime and mtime in fuse-native's fuse_thread_locals_t on 64-bit Linux */
const LOCALS_ATIME = 104
const LOCALS_MTIME = 112
const READDIR_BATCH = 1024
/** hidden names released before libfuse's unlink of them arrived (bounded) */
const MAX_RELEASED_HIDDEN = 1024
/** POSIX ACLs: libfuse 2 cannot negotiate FUSE_POSIX_ACL, so the kernel would neither enforce them nor update the mode */
const ACL_XATTRS = new Set(['system.posix_acl_access', 'system.posix_acl_default'])
/** errno numbers node's os.constants.errno lacks (Linux values) */
const ERRNO_FALLBACK: Record<string, number> = { EUCLEAN: 117, EOPNOTSUPP: 95, ENOTSUP: 95 }

export interface FuseLogger {
  error(msg: string, err?: unknown): void
  warn?(msg: string): void
}

export interface FuseMountOptions {
  /** libfuse debug output (to stderr) */
  debug?: boolean
  /** more -o options, appended to ours */
  extraOptions?: string[]
  /** fsname shown in /proc/mounts (default "scoutfs") */
  fsname?: string
  /** keep a path -> ino cache (default true) */
  pathCache?: boolean
  /** bound of the path cache (default 200000 entries) */
  maxCacheEntries?: number
  /** who owns new inodes (default: this process's uid/gid; fuse-native does not pass the caller's) */
  caller?: () => Caller
  /** st_blksize reported to stat (default 131072, one FUSE request) */
  blksize?: number
  log?: FuseLogger
}

interface Handle {
  ino: number
  flags: number
  path: string
}

interface Resolved {
  ino: number
  /** the attributes when they came from a lookup just now */
  attr?: Attr
  /** whether the ino came from the cache (and may be stale) */
  cached: boolean
}

const defaultLogger: FuseLogger = {
  error: (msg, err) => console.error(`scoutfs fuse: ${msg}`, err ?? ''),
  warn: (msg) => console.warn(`scoutfs fuse: ${msg}`),
}

function fsErr(code: string, msg: string): FsError {
  return new FsError(code as FsError['code'], msg)
}

function splitPath(path: string): { dir: string; name: string } {
  const i = path.lastIndexOf('/')
  return { dir: i <= 0 ? '/' : path.slice(0, i), name: path.slice(i + 1) }
}

function checkName(name: string): void {
  if (Buffer.byteLength(name, 'utf8') > NAME_MAX) throw fsErr('ENAMETOOLONG', `name of ${name.length} chars`)
}

function setU64(a: Uint32Array, i: number, n: number): void {
  const v = Math.max(0, Math.floor(n))
  a[i] = v % U32
  a[i + 1] = Math.floor(v / U32)
}

function execQuiet(cmd: string, args: string[]): Promise<boolean> {
  return new Promise((resolve) => execFile(cmd, args, (err) => resolve(!err)))
}

async function isMounted(mountpoint: string): Promise<boolean> {
  const mounts = await readFile('/proc/mounts', 'utf8').catch(() => '')
  return mounts.split('\n').some((l) => l.split(' ')[1]?.replace(/\\040/g, ' ') === mountpoint)
}

/** forceUnmount, unless it is not mounted (any more); whether it is gone */
async function forceUnmountIfMounted(mountpoint: string): Promise<boolean> {
  if (!(await isMounted(mountpoint))) return true
  return (await forceUnmount(mountpoint)) || !(await isMounted(mountpoint))
}

/** force a mount away: fusermount -uz, then umount -l */
export async function forceUnmount(mountpoint: string): Promise<boolean> {
  if (await execQuiet('fusermount', ['-uz', mountpoint])) return true
  if (await execQuiet('fusermount3', ['-uz', mountpoint])) return true
  return execQuiet('umount', ['-l', mountpoint])
}

export class FuseAdapter {
  readonly mountpoint: string
  /** the -o option string handed to libfuse */
  readonly optionString: string
  private readonly fs: FsApi
  private readonly log: FuseLogger
  private readonly caller: () => Caller
  private readonly useCache: boolean
  private readonly maxCache: number
  private readonly blksize: number
  private fuse: FuseNativeInstance | undefined
  private mounted = false
  private unmounting: Promise<void> | undefined

  private readonly cache = new Map<string, number>()
  /** bumped by every invalidation, so a lookup racing with one does not cache its result */
  private cacheGen = 0
  /** hidden name (libfuse's .fuse_hidden*) -> inode of an unlinked open file and its directory */
  private readonly hidden = new Map<string, { ino: number; parent: number }>()
  /** hidden names whose inode's last handle was released before libfuse sent their unlink */
  private readonly releasedHidden = new Set<string>()
  private readonly handles = new Map<number, Handle>()
  private nextFh = 1
  private utimensLocals: Buffer | undefined
  private warnedUtimens = false

  private constructor(fs: FsApi, mountpoint: string, opts: FuseMountOptions) {
    this.fs = fs
    this.mountpoint = mountpoint
    this.log = opts.log ?? defaultLogger
    this.useCache = opts.pathCache ?? true
    this.maxCache = opts.maxCacheEntries ?? 200_000
    this.blksize = opts.blksize ?? 131072
    const uid = process.getuid?.() ?? 0
    const gid = process.getgid?.() ?? 0
    this.caller = opts.caller ?? (() => ({ uid, gid }))
    this.optionString = FuseAdapter.optionList(opts).join(',')
  }

  /** the mount options we use, in order */
  static optionList(opts: FuseMountOptions = {}): string[] {
    const o: string[] = []
    if (opts.debug) o.push('debug')
    const fsname = (opts.fsname ?? 'scoutfs').replace(/[^A-Za-z0-9_.:@/-]/g, '_')
    o.push(`fsname=${fsname}`, 'subtype=scoutfs')
    o.push('use_ino', 'direct_io', 'attr_timeout=0', 'entry_timeout=0', 'negative_timeout=0')
    o.push('default_permissions')
    if (process.getuid?.() === 0) o.push('allow_other')
    o.push('big_writes', 'max_write=131072')
    for (const x of opts.extraOptions ?? []) if (x.length > 0) o.push(x)
    return o
  }

  static async mount(fs: FsApi, mountpoint: string, opts: FuseMountOptions = {}): Promise<FuseAdapter> {
    const a = new FuseAdapter(fs, resolvePath(mountpoint), opts)
    await a.start()
    return a
  }

  // ---- lifecycle ----

  private async start(): Promise<void> {
    if (this.optionString.length > 1000) throw fsErr('EINVAL', 'mount option string too long for fuse-native')
    const self = this
    const optString = '-o' + this.optionString
    class ScoutFuse extends FuseNative {
      constructor() {
        super(self.mountpoint, self.ops(), { timeout: false })
        // fuse-native drops mtime on the way from C; keep the native request block so
        // _op_utimens can read mtime from it
        const orig = this._handlers[OP_UTIMENS]
        if (orig) {
          this._handlers[OP_UTIMENS] = (nativeLocals: unknown, ...rest: unknown[]) => {
            self.utimensLocals = Buffer.isBuffer(nativeLocals) ? nativeLocals : undefined
            try {
              return orig(nativeLocals, ...rest)
            } finally {
              self.utimensLocals = undefined
            }
          }
        }
      }
      _fuseOptions(): string {
        return optString
      }
      // fuse-native's _close skips the binding's unmount (which unrefs the handle the FUSE
      // thread wakes the loop with) when fusermount fails, e.g. on a mount already detached
      // by `fusermount -uz`: the process then never exits.  Always release the binding.
      _close(cb: (err: Error | null) => void): void {
        forceUnmountIfMounted(self.mountpoint).then((gone) => {
          try {
            nativeBinding.fuse_native_unmount(self.mountpoint, this._thread)
          } catch (e) {
            return cb(e instanceof Error ? e : new Error(String(e)))
          }
          cb(gone ? null : new Error(`${self.mountpoint} is still mounted`))
        }, cb)
      }
      _op_getattr(signal: Signal, path: string): void {
        self.respond(
          signal,
          () => self.getattrPath(path),
          (a) => signal(0, self.statArray(a)),
        )
      }
      _op_fgetattr(signal: Signal, path: string, fh: number): void {
        self.respond(
          signal,
          () => self.getattrHandle(path, fh),
          (a) => signal(0, self.statArray(a)),
        )
      }
      _op_getxattr(signal: Signal, path: string, name: string, valueBuf: Buffer): void {
        self.getxattrOp(signal, path, name, valueBuf)
      }
      _op_listxattr(signal: Signal, path: string, listBuf: Buffer): void {
        self.listxattrOp(signal, path, listBuf)
      }
      _op_utimens(signal: Signal, path: string, aLow: number, aHigh: number, mLow: number, mHigh: number): void {
        const atime = aLow + aHigh * U32
        const mtime = self.nativeMtime(atime) ?? mLow + mHigh * U32
        self.respond(
          signal,
          () => self.utimens(path, atime, mtime),
          () => signal(0),
        )
      }
    }
    const fuse = new ScoutFuse()
    this.fuse = fuse
    try {
      await new Promise<void>((resolve, reject) => fuse.mount((err) => (err ? reject(err) : resolve())))
    } catch (e) {
      // fuse_new can fail after fuse_mount succeeded: do not leave a dead mount behind
      await forceUnmount(this.mountpoint)
      throw e
    }
    this.mounted = true
  }

  /** unmount (lazily), then release whatever handles the kernel still had open */
  unmount(): Promise<void> {
    if (!this.unmounting) this.unmounting = this.doUnmount()
    return this.unmounting
  }

  private async doUnmount(): Promise<void> {
    const fuse = this.fuse
    if (fuse && this.mounted) {
      try {
        await new Promise<void>((resolve, reject) => fuse.unmount((err) => (err ? reject(err) : resolve())))
      } catch (e) {
        this.log.error(`unmount of ${this.mountpoint} failed, forcing it`, e)
        if (!(await forceUnmount(this.mountpoint))) throw e
      }
      this.mounted = false
    }
    const left = [...this.handles.values()]
    this.handles.clear()
    for (const h of left) {
      try {
        await this.fs.release(h.ino)
      } catch (e) {
        this.log.error(`release of inode ${h.ino} at unmount`, e)
      }
    }
    this.hidden.clear()
    this.releasedHidden.clear()
    this.cache.clear()
  }

  // ---- path cache ----

  /** forget a path and everything below it; no path: forget everything */
  invalidate(path?: string): void {
    this.cacheGen++
    if (path === undefined || path === '/' || path === '') {
      this.cache.clear()
      return
    }
    this.cache.delete(path)
    const prefix = path.endsWith('/') ? path : path + '/'
    for (const k of this.cache.keys()) if (k.startsWith(prefix)) this.cache.delete(k)
  }

  clearCache(): void {
    this.invalidate()
  }

  /** forget every path through an inode in [first, last] (directory or not), for lock invalidation */
  invalidateInodes(first: number, last: number = first): void {
    this.cacheGen++
    const hit: string[] = []
    for (const [k, ino] of this.cache) if (ino >= first && ino <= last) hit.push(k)
    for (const k of hit) this.invalidate(k)
    // the root's entries are never cached under '/', so a root invalidation drops everything
    if (ROOT_INO >= first && ROOT_INO <= last) this.cache.clear()
  }

  /** cached paths (for tests and metrics) */
  cacheSize(): number {
    return this.cache.size
  }

  /** open handles the kernel holds on this mount */
  openHandles(): number {
    return this.handles.size
  }

  /** hidden (unlinked, still open) files on this mount */
  hiddenCount(): number {
    return this.hidden.size
  }

  private cacheSet(path: string, ino: number, gen: number): void {
    if (!this.useCache || gen !== this.cacheGen) return
    if (this.cache.size >= this.maxCache) {
      // drop the oldest tenth
      let n = Math.ceil(this.maxCache / 10)
      for (const k of this.cache.keys()) {
        this.cache.delete(k)
        if (--n <= 0) break
      }
    }
    this.cache.set(path, ino)
  }

  private async resolve(path: string, useCache = true): Promise<Resolved> {
    if (path === '/' || path === '') return { ino: ROOT_INO, cached: false }
    const { dir, name } = splitPath(path)
    checkName(name)
    if (HIDDEN_RE.test(name)) {
      const h = this.hidden.get(name)
      if (h !== undefined) return { ino: h.ino, cached: false }
    }
    if (useCache && this.useCache) {
      const c = this.cache.get(path)
      if (c !== undefined) return { ino: c, cached: true }
    }
    const gen = this.cacheGen
    const parent = await this.resolve(dir, useCache)
    let attr: Attr
    try {
      attr = await this.fs.lookup(parent.ino, name)
    } catch (e) {
      if (parent.cached && isFsError(e) && (e.code === 'ENOENT' || e.code === 'ESTALE')) {
        this.invalidate(dir)
        return this.resolve(path, false)
      }
      throw e
    }
    this.cacheSet(path, attr.ino, gen)
    return { ino: attr.ino, attr, cached: false }
  }

  /** run fn on the inode a path names, once more with a fresh lookup if a cached inode was stale */
  private async withIno<T>(path: string, fn: (ino: number, attr?: Attr) => Promise<T>): Promise<T> {
    const r = await this.resolve(path)
    try {
      return await fn(r.ino, r.attr)
    } catch (e) {
      if (!r.cached || !isFsError(e) || (e.code !== 'ENOENT' && e.code !== 'ESTALE')) throw e
      this.invalidate(path)
      const r2 = await this.resolve(path, false)
      return fn(r2.ino, r2.attr)
    }
  }

  /** run fn on the parent directory of a path and the last name */
  private async withParent<T>(path: string, fn: (parent: number, name: string) => Promise<T>): Promise<T> {
    const { dir, name } = splitPath(path)
    checkName(name)
    return this.withIno(dir, (parent) => fn(parent, name))
  }

  private handle(fh: number): Handle {
    const h = this.handles.get(fh)
    if (!h) throw fsErr('EBADF', `no open handle ${fh}`)
    return h
  }

  private addHandle(ino: number, flags: number, path: string): number {
    while (this.handles.has(this.nextFh)) this.nextFh = this.nextFh >= 0x7ffffffe ? 1 : this.nextFh + 1
    const fh = this.nextFh
    this.nextFh = this.nextFh >= 0x7ffffffe ? 1 : this.nextFh + 1
    this.handles.set(fh, { ino, flags, path })
    return fh
  }

  // ---- error plumbing ----

  private errno(e: unknown, what: string): number {
    if (e instanceof FsError && e.errno > 0) {
      // errors.ts falls back to EIO for names node does not know
      if (e.errno === E.EIO && e.code !== 'EIO' && ERRNO_FALLBACK[e.code] !== undefined) return -ERRNO_FALLBACK[e.code]
      return -e.errno
    }
    this.log.error(`${what} failed`, e)
    return -E.EIO
  }

  /** run an op, answer with ok(result) or the negative errno; never throws, never leaves the kernel waiting */
  private respond<T>(signal: Signal, fn: () => Promise<T>, ok: (v: T) => void, what = 'op'): void {
    let p: Promise<T>
    try {
      p = fn()
    } catch (e) {
      signal(this.errno(e, what))
      return
    }
    p.then(
      (v) => {
        try {
          ok(v)
        } catch (e) {
          signal(this.errno(e, what))
        }
      },
      (e) => signal(this.errno(e, what)),
    )
  }

  /** callback-style variant for the ops object: cb(0, ...result) or cb(-errno) */
  private cbOp<T>(what: string, cb: Cb, fn: () => Promise<T>, ok: (v: T) => unknown[] = () => []): void {
    this.respond(cb, fn, (v) => cb(0, ...ok(v)), what)
  }

  // ---- attributes ----

  statArray(a: Attr): Uint32Array {
    if (a.ino >= U32) throw fsErr('EOVERFLOW', `inode number ${a.ino} does not fit fuse-native's 32 bits`)
    const s = new Uint32Array(18)
    s[0] = a.mode
    s[1] = a.uid
    s[2] = a.gid
    setU64(s, 3, a.size)
    s[5] = 0 // dev
    s[6] = a.nlink
    s[7] = a.ino
    s[8] = a.rdev
    s[9] = this.blksize
    setU64(s, 10, a.blocks)
    setU64(s, 12, a.atimeMs)
    setU64(s, 14, a.mtimeMs)
    setU64(s, 16, a.ctimeMs)
    return s
  }

  private async getattrPath(path: string): Promise<Attr> {
    return this.withIno(path, (ino, attr) => (attr ? Promise.resolve(attr) : this.fs.getattr(ino)))
  }

  private async getattrHandle(path: string, fh: number): Promise<Attr> {
    const h = fh ? this.handles.get(fh) : undefined
    if (h) return this.fs.getattr(h.ino)
    return this.getattrPath(path)
  }

  private nativeMtime(atime: number): number | undefined {
    const l = this.utimensLocals
    if (!l || l.length < LOCALS_MTIME + 8) return undefined
    const a = Number(l.readBigUInt64LE(LOCALS_ATIME))
    if (a !== atime) {
      if (!this.warnedUtimens) {
        this.warnedUtimens = true
        this.log.warn?.('fuse-native request layout is not the expected one: utimens sets mtime to atime')
      }
      return undefined
    }
    return Number(l.readBigUInt64LE(LOCALS_MTIME))
  }

  private async utimens(path: string, atimeMs: number, mtimeMs: number): Promise<void> {
    await this.withIno(path, (ino) => this.fs.setattr(ino, { atimeMs, mtimeMs }))
  }

  // ---- xattrs with the caller's buffer ----

  private getxattrOp(signal: Signal, path: string, name: string, valueBuf: Buffer): void {
    const ab = valueBuf.buffer
    this.respond(
      (res: unknown) => signal(res, ab),
      () => {
        if (ACL_XATTRS.has(name)) throw fsErr('EOPNOTSUPP', 'POSIX ACLs are not supported through libfuse 2')
        return this.withIno(path, (ino) => this.fs.getxattr(ino, name))
      },
      (value) => {
        if (valueBuf.length === 0) return signal(value.length, ab)
        if (value.length > valueBuf.length) return signal(-E.ERANGE, ab)
        value.copy(valueBuf)
        signal(value.length, ab)
      },
      'getxattr',
    )
  }

  private listxattrOp(signal: Signal, path: string, listBuf: Buffer): void {
    const ab = listBuf.buffer
    this.respond(
      (res: unknown) => signal(res, ab),
      () => this.withIno(path, (ino) => this.fs.listxattr(ino)),
      (names) => {
        const packed = Buffer.concat(names.filter((n) => !ACL_XATTRS.has(n)).map((n) => Buffer.from(n + '\0', 'utf8')))
        if (listBuf.length === 0) return signal(packed.length, ab)
        if (packed.length > listBuf.length) return signal(-E.ERANGE, ab)
        packed.copy(listBuf)
        signal(packed.length, ab)
      },
      'listxattr',
    )
  }

  // ---- the ops fuse-native calls ----

  private ops(): Record<string, Cb> {
    const fs = this.fs
    const notUsed: Cb = (...args) => (args[args.length - 1] as Cb)(-E.ENOSYS)
    return {
      init: (cb) => (cb as Cb)(0),
      access: (_path, _mode, cb) => (cb as Cb)(0),
      statfs: (_path, cb) =>
        this.cbOp(
          'statfs',
          cb as Cb,
          () => fs.statfs(),
          (s) => [statfsObject(s)],
        ),
      // getattr/fgetattr/getxattr/listxattr/utimens are answered by the subclass's _op_ methods;
      // the entries here only make fuse-native register them with libfuse
      getattr: notUsed,
      fgetattr: notUsed,
      getxattr: notUsed,
      listxattr: notUsed,
      utimens: notUsed,
      readdir: (path, cb) =>
        this.cbOp(
          'readdir',
          cb as Cb,
          () => this.readdir(path as string),
          (r) => [r.names, r.stats],
        ),
      opendir: (path, _flags, cb) =>
        this.cbOp(
          'opendir',
          cb as Cb,
          async () => {
            const a = await this.getattrPath(path as string)
            if ((a.mode & 0o170000) !== 0o040000) throw fsErr('ENOTDIR', `${path as string} is not a directory`)
          },
          () => [0],
        ),
      fsyncdir: (path, datasync, _fh, cb) =>
        this.cbOp('fsyncdir', cb as Cb, () => this.withIno(path as string, (ino) => fs.fsync(ino, !!datasync))),
      open: (path, flags, cb) =>
        this.cbOp(
          'open',
          cb as Cb,
          async () => {
            const ino = await this.withIno(path as string, async (ino) => {
              await fs.open(ino)
              return ino
            })
            return this.addHandle(ino, flags as number, path as string)
          },
          (fh) => [fh],
        ),
      create: (path, mode, cb) =>
        this.cbOp(
          'create',
          cb as Cb,
          async () => {
            const attr = await this.withParent(path as string, async (parent, name) => {
              const gen = this.cacheGen
              const a = await fs.mknod(parent, name, ((mode as number) & 0o7777) | 0o100000, 0, this.caller())
              this.cacheSet(path as string, a.ino, gen)
              return a
            })
            await fs.open(attr.ino)
            return this.addHandle(attr.ino, 0, path as string)
          },
          (fh) => [fh],
        ),
      release: (_path, fh, cb) =>
        this.cbOp('release', cb as Cb, async () => {
          const h = this.handles.get(fh as number)
          if (!h) {
            this.log.warn?.(`release of unknown handle ${fh as number}`)
            return
          }
          // forget the handle first: whatever fs.release does, it is called exactly once
          this.handles.delete(fh as number)
          this.forgetHiddenIfClosed(h.ino)
          await fs.release(h.ino)
        }),
      read: (_path, fh, buf, len, pos, cb) =>
        this.respond(
          cb as Cb,
          async () => {
            const h = this.handle(fh as number)
            const data = await fs.read(h.ino, pos as number, len as number)
            const n = Math.min(data.length, len as number)
            data.copy(buf as Buffer, 0, 0, n)
            return n
          },
          (n) => (cb as Cb)(n),
          'read',
        ),
      write: (_path, fh, buf, len, pos, cb) =>
        this.respond(
          cb as Cb,
          async () => {
            const h = this.handle(fh as number)
            // copy: the kernel's buffer is only ours until we answer
            const data = Buffer.from((buf as Buffer).subarray(0, len as number))
            return fs.write(h.ino, pos as number, data, (h.flags & O_APPEND) !== 0)
          },
          (n) => (cb as Cb)(n),
          'write',
        ),
      fsync: (path, datasync, fh, cb) =>
        this.cbOp('fsync', cb as Cb, async () => {
          const h = this.handles.get(fh as number)
          if (h) return fs.fsync(h.ino, !!datasync)
          return this.withIno(path as string, (ino) => fs.fsync(ino, !!datasync))
        }),
      truncate: (path, size, cb) =>
        this.cbOp('truncate', cb as Cb, () =>
          this.withIno(path as string, (ino) => fs.setattr(ino, { size: size as number })),
        ),
      ftruncate: (path, fh, size, cb) =>
        this.cbOp('ftruncate', cb as Cb, async () => {
          const h = this.handles.get(fh as number)
          if (h) return fs.setattr(h.ino, { size: size as number })
          return this.withIno(path as string, (ino) => fs.setattr(ino, { size: size as number }))
        }),
      chmod: (path, mode, cb) =>
        this.cbOp('chmod', cb as Cb, () =>
          this.withIno(path as string, (ino) => fs.setattr(ino, { mode: (mode as number) & 0o7777 })),
        ),
      chown: (path, uid, gid, cb) =>
        this.cbOp('chown', cb as Cb, () => {
          const set: { uid?: number; gid?: number } = {}
          if (uid !== NO_ID) set.uid = uid as number
          if (gid !== NO_ID) set.gid = gid as number
          return this.withIno(path as string, (ino) => fs.setattr(ino, set))
        }),
      readlink: (path, cb) =>
        this.cbOp(
          'readlink',
          cb as Cb,
          () => this.withIno(path as string, (ino) => fs.readlink(ino)),
          (t) => [t],
        ),
      mknod: (path, mode, dev, cb) =>
        this.cbOp('mknod', cb as Cb, () =>
          this.createEntry(path as string, (p, n) => fs.mknod(p, n, mode as number, dev as number, this.caller())),
        ),
      mkdir: (path, mode, cb) =>
        this.cbOp('mkdir', cb as Cb, () =>
          this.createEntry(path as string, (p, n) => fs.mkdir(p, n, (mode as number) & 0o7777, this.caller())),
        ),
      symlink: (target, path, cb) =>
        this.cbOp('symlink', cb as Cb, () =>
          this.createEntry(path as string, (p, n) => fs.symlink(p, n, target as string, this.caller())),
        ),
      link: (src, dest, cb) =>
        this.cbOp('link', cb as Cb, async () => {
          const ino = (await this.resolve(src as string)).ino
          await this.createEntry(dest as string, (p, n) => fs.link(ino, p, n))
        }),
      unlink: (path, cb) => this.cbOp('unlink', cb as Cb, () => this.unlink(path as string)),
      rmdir: (path, cb) =>
        this.cbOp('rmdir', cb as Cb, async () => {
          this.checkNoOpenBelow(path as string)
          await this.withParent(path as string, (p, n) => fs.rmdir(p, n))
          this.invalidate(path as string)
        }),
      rename: (src, dest, cb) => this.cbOp('rename', cb as Cb, () => this.rename(src as string, dest as string)),
      setxattr: (path, name, value, _position, flags, cb) =>
        this.cbOp('setxattr', cb as Cb, () => {
          if (ACL_XATTRS.has(name as string))
            throw fsErr('EOPNOTSUPP', 'POSIX ACLs are not supported through libfuse 2')
          // copy: the kernel's buffer is only ours until we answer
          const v = Buffer.from(value as Buffer)
          return this.withIno(path as string, (ino) => fs.setxattr(ino, name as string, v, flags as number))
        }),
      removexattr: (path, name, cb) =>
        this.cbOp('removexattr', cb as Cb, () => {
          if (ACL_XATTRS.has(name as string))
            throw fsErr('EOPNOTSUPP', 'POSIX ACLs are not supported through libfuse 2')
          return this.withIno(path as string, (ino) => fs.removexattr(ino, name as string))
        }),
    }
  }

  private async createEntry(path: string, make: (parent: number, name: string) => Promise<Attr>): Promise<void> {
    await this.withParent(path, async (parent, name) => {
      const gen = this.cacheGen
      const a = await make(parent, name)
      this.cacheSet(path, a.ino, gen)
    })
  }

  private async readdir(path: string): Promise<{ names: string[]; stats: Array<{ ino: number; mode: number }> }> {
    return this.withIno(path, async (ino) => {
      const names: string[] = []
      const stats: Array<{ ino: number; mode: number }> = []
      let pos = 0
      let fits = true
      for (;;) {
        const batch = await this.fs.readdir(ino, pos, READDIR_BATCH)
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
      return { names, stats: fits ? stats : [] }
    })
  }

  private async unlink(path: string): Promise<void> {
    const { name } = splitPath(path)
    if (HIDDEN_RE.test(name) && (this.hidden.has(name) || this.releasedHidden.has(name))) {
      // libfuse's last close of an unlinked file: the fs deletes the inode at its last release
      this.hidden.delete(name)
      this.releasedHidden.delete(name)
      return
    }
    await this.withParent(path, (p, n) => this.fs.unlink(p, n))
    this.invalidate(path)
  }

  /**
   * libfuse 2 names an open file by the path of its node in libfuse's own tree, which only
   * this mount's operations change.  Once this mount removes a directory (rmdir, or a rename
   * over it) with a file open below it -- the file unlinked here (its hidden name) or by
   * another mount, so the fs sees the directory empty -- libfuse can no longer build that
   * path and calls flush/release with a NULL path, on which fuse-native dies of SIGSEGV
   * (napi_create_string_utf8(NULL) leaves its argument unset).  So on this mount, as on any
   * libfuse 2 filesystem, a directory with a file open below it is not empty.  Other mounts
   * see it as the fs has it.  (The handles' paths follow this mount's renames: movePaths.)
   */
  private checkNoOpenBelow(dirPath: string): void {
    const prefix = dirPath.endsWith('/') ? dirPath : dirPath + '/'
    for (const h of this.handles.values())
      if (h.path.startsWith(prefix))
        throw fsErr('ENOTEMPTY', `${dirPath} holds ${h.path}, unlinked but still open on this mount`)
  }

  /** the last handle of an inode is gone: its hidden names need no mapping any more */
  private forgetHiddenIfClosed(ino: number): void {
    if (this.hidden.size === 0) return
    for (const h of this.handles.values()) if (h.ino === ino) return
    for (const [name, h] of this.hidden) {
      if (h.ino !== ino) continue
      this.hidden.delete(name)
      if (this.releasedHidden.size >= MAX_RELEASED_HIDDEN) {
        const oldest = this.releasedHidden.values().next().value
        if (oldest !== undefined) this.releasedHidden.delete(oldest)
      }
      this.releasedHidden.add(name)
    }
  }

  private async rename(src: string, dest: string): Promise<void> {
    const s = splitPath(src)
    const d = splitPath(dest)
    checkName(s.name)
    checkName(d.name)
    if (HIDDEN_RE.test(s.name) && this.hidden.has(s.name)) throw fsErr('ENOENT', `${src} was unlinked`)
    if (HIDDEN_RE.test(d.name) && !this.hidden.has(d.name)) {
      // libfuse hides an open file it is asked to unlink (or to replace by a rename): that is
      // an unlink in the fs, which keeps the inode while it is open; the name stays local
      const ino = (await this.resolve(src)).ino
      const parent = await this.withParent(src, async (p, n) => {
        await this.fs.unlink(p, n)
        return p
      })
      this.hidden.set(d.name, { ino, parent })
      this.invalidate(src)
      this.movePaths(src, dest)
      return
    }
    this.checkNoOpenBelow(dest)
    await this.withParent(src, (sp, sn) => this.withParent(dest, (dp, dn) => this.fs.rename(sp, sn, dp, dn)))
    this.invalidate(src)
    this.invalidate(dest)
    this.movePaths(src, dest)
  }

  /** libfuse moved its node of src (and everything below) to dest: so do the handles' paths */
  private movePaths(src: string, dest: string): void {
    const prefix = src + '/'
    for (const h of this.handles.values()) {
      if (h.path === src) h.path = dest
      else if (h.path.startsWith(prefix)) h.path = dest + h.path.slice(src.length)
    }
  }
}

function statfsObject(s: StatFs): Record<string, number> {
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
