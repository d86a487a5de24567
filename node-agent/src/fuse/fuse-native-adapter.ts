/*
 * The FUSE adapter: serves an FsApi (inode-number based) through fuse-native (libfuse 2's
 * high-level, path-based API) and is the agent's Frontend (fs/frontend.ts).  DESIGN.md §12.
 *
 * Pieces: path-cache.ts turns paths into inode numbers (and forgets them on this mount's
 * namespace changes and on lock invalidation: invalidateInodes / invalidateEntry);
 * handles.ts keeps the open files and libfuse's hidden names of unlinked open ones; ops.ts
 * and attr-ops.ts answer the requests, each exactly once (reply.ts); fuse-native.ts types the
 * module.  This file mounts and unmounts.
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
 * POSIX filesystem (the answers are in ops.ts):
 *  - getattr/fgetattr: the binding turns nlink 0 into 1 and truncates inode numbers to 32
 *    bits; fgetattr uses the open handle.
 *  - getxattr/listxattr: the binding ignores the caller's buffer size.
 *  - utimens: the native code passes atime twice and never mtime; ours reads mtime from the
 *    native request block (after checking that the atime next to it matches).
 *  - _close: fuse-native skips releasing its native binding when fusermount fails (a mount
 *    already detached by `fusermount -uz`), which keeps the process alive; ours always does.
 *
 * Never block the event loop: every op is async, nothing here does synchronous I/O.
 */
import { resolve as resolvePath } from 'node:path'
import { FsError } from '../util/errors.js'
import type { Caller, FsApi } from '../fs/fs-api.js'
import type { Frontend, FrontendFactory, FrontendStats } from '../fs/frontend.js'
import {
  FuseNative,
  LOCALS_ATIME,
  LOCALS_MTIME,
  nativeBinding,
  OP_UTIMENS,
  type FuseNativeInstance,
  type Signal,
} from './fuse-native.js'
import { Handles } from './handles.js'
import { answerGetattr, answerGetxattr, answerListxattr, answerUtimens } from './attr-ops.js'
import { makeOps } from './ops.js'
import { forceUnmount } from './unmount.js'
import type { OpsContext, OpsLogger } from './reply.js'
import { PathCache } from './path-cache.js'

const U32 = 0x100000000

export type FuseLogger = OpsLogger

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

const defaultLogger: FuseLogger = {
  error: (msg, err) => console.error(`scoutfs fuse: ${msg}`, err ?? ''),
  warn: (msg) => console.warn(`scoutfs fuse: ${msg}`),
}

export class FuseAdapter implements Frontend {
  readonly mountpoint: string
  /** the -o option string handed to libfuse */
  readonly optionString: string
  private readonly fs: FsApi
  private readonly log: FuseLogger
  private readonly paths: PathCache
  private readonly handles = new Handles()
  private readonly ctx: OpsContext
  private fuse: FuseNativeInstance | undefined
  private mounted = false
  private unmounting: Promise<void> | undefined
  private utimensLocals: Buffer | undefined
  private warnedUtimens = false

  private constructor(fs: FsApi, mountpoint: string, opts: FuseMountOptions) {
    this.fs = fs
    this.mountpoint = mountpoint
    this.log = opts.log ?? defaultLogger
    this.paths = new PathCache(fs, opts.pathCache ?? true, opts.maxCacheEntries ?? 200_000, (name) =>
      this.handles.hiddenIno(name),
    )
    const uid = process.getuid?.() ?? 0
    const gid = process.getgid?.() ?? 0
    this.ctx = {
      fs,
      paths: this.paths,
      handles: this.handles,
      caller: opts.caller ?? (() => ({ uid, gid })),
      blksize: opts.blksize ?? 131072,
      log: this.log,
    }
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
    if (this.optionString.length > 1000) throw new FsError('EINVAL', 'mount option string too long for fuse-native')
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the subclass below has its own `this`
    const self = this
    const ctx = this.ctx
    const optString = '-o' + this.optionString
    class ScoutFuse extends FuseNative {
      constructor() {
        super(self.mountpoint, makeOps(ctx), { timeout: false })
        // fuse-native drops mtime on the way from C; keep the native request block so
        // _op_utimens can read mtime from it
        const orig = this._handlers[OP_UTIMENS]
        if (orig) {
          this._handlers[OP_UTIMENS] = (nativeLocals, ...rest) => {
            self.utimensLocals = nativeLocals
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
      _close(cb: (err: Error | null) => void): void {
        forceUnmount(self.mountpoint).then((gone) => {
          try {
            nativeBinding.fuse_native_unmount(self.mountpoint, this._thread)
          } catch (e) {
            return cb(e instanceof Error ? e : new Error(String(e)))
          }
          cb(gone ? null : new Error(`${self.mountpoint} is still mounted`))
        }, cb)
      }
      _op_getattr(signal: Signal, path: string): void {
        answerGetattr(ctx, signal, path)
      }
      _op_fgetattr(signal: Signal, path: string, fh: number): void {
        answerGetattr(ctx, signal, path, fh)
      }
      _op_getxattr(signal: Signal, path: string, name: string, valueBuf: Buffer): void {
        answerGetxattr(ctx, signal, path, name, valueBuf)
      }
      _op_listxattr(signal: Signal, path: string, listBuf: Buffer): void {
        answerListxattr(ctx, signal, path, listBuf)
      }
      _op_utimens(signal: Signal, path: string, aLow: number, aHigh: number, mLow: number, mHigh: number): void {
        const atime = aLow + aHigh * U32
        answerUtimens(ctx, signal, path, atime, self.nativeMtime(atime) ?? mLow + mHigh * U32)
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
    for (const ino of this.handles.drain()) {
      try {
        await this.fs.release(ino)
      } catch (e) {
        this.log.error(`release of inode ${ino} at unmount`, e)
      }
    }
    this.paths.invalidate()
  }

  // ---- Frontend (KernelCache): the kernel caches nothing (timeouts 0), only our path cache ----

  /** forget every path through an inode in [first, last] (directory or not), for lock invalidation */
  invalidateInodes(first: number, last: number = first): void {
    this.paths.invalidateInodes(first, last)
  }

  invalidateEntry(parent: number, name: string): void {
    this.paths.invalidateEntry(parent, name)
  }

  /** forget a path and everything below it; no path: forget everything */
  invalidate(path?: string): void {
    this.paths.invalidate(path)
  }

  clearCache(): void {
    this.paths.invalidate()
  }

  /** cached paths (for tests and metrics) */
  cacheSize(): number {
    return this.paths.size
  }

  /** open handles the kernel holds on this mount */
  openHandles(): number {
    return this.handles.size
  }

  /** every kernel cache is off: nothing held, nothing to notify */
  stats(): FrontendStats {
    return {
      heldInodes: 0,
      openHandles: this.handles.size,
      invalidatedInodes: 0,
      invalidatedEntries: 0,
      notifiesDone: 0,
      notifiesFailed: 0,
      notifyWaitsExpired: 0,
      movedDirectories: 0,
      staleParents: 0,
      noCapsAnswers: 0,
      loopWakeups: 0,
      cachedGetattrs: 0,
    }
  }

  /** hidden (unlinked, still open) files on this mount */
  hiddenCount(): number {
    return this.handles.hiddenCount
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
}

/** the agent's frontend: fuse-native with our mount options */
export const fuseNativeFrontend: FrontendFactory = (fs, mountpoint, opts) =>
  FuseAdapter.mount(fs, mountpoint, { fsname: opts.fsname, debug: opts.debug, log: opts.log })
