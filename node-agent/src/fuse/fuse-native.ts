/*
 * Types for the fuse-native module (it ships none) and the few things of it we reach past its
 * API: the native binding (to release it at unmount) and the request block of utimens.
 *
 * A reply ("cb" of an op, "signal" of a _op_ method) hands its arguments to the binding,
 * which copies them into libfuse's request and wakes the FUSE thread waiting on it.  It must
 * be called exactly once per request: a second call wakes that thread while it serves another
 * request (memory corruption), and none leaves it blocked forever.  ops.ts guards that.
 */
import { createRequire } from 'node:module'
import { dirname } from 'node:path'

/** an op's reply: 0 (or a byte count) or a negative errno, then the op's results */
export type Reply = (err: number, ...results: unknown[]) => void

/** the ops object handed to fuse-native (paths are libfuse's, never NULL for these ops) */
export interface FuseOps {
  init(cb: Reply): void
  access(path: string, mode: number, cb: Reply): void
  statfs(path: string, cb: Reply): void
  getattr(path: string, cb: Reply): void
  fgetattr(path: string, fh: number, cb: Reply): void
  getxattr(path: string, name: string, position: number, cb: Reply): void
  listxattr(path: string, cb: Reply): void
  utimens(path: string, atime: number, mtime: number, cb: Reply): void
  readdir(path: string, cb: Reply): void
  opendir(path: string, flags: number, cb: Reply): void
  fsyncdir(path: string, datasync: number, fh: number, cb: Reply): void
  open(path: string, flags: number, cb: Reply): void
  create(path: string, mode: number, cb: Reply): void
  release(path: string, fh: number, cb: Reply): void
  read(path: string, fh: number, buf: Buffer, len: number, pos: number, cb: Reply): void
  write(path: string, fh: number, buf: Buffer, len: number, pos: number, cb: Reply): void
  fsync(path: string, datasync: number, fh: number, cb: Reply): void
  truncate(path: string, size: number, cb: Reply): void
  ftruncate(path: string, fh: number, size: number, cb: Reply): void
  chmod(path: string, mode: number, cb: Reply): void
  chown(path: string, uid: number, gid: number, cb: Reply): void
  readlink(path: string, cb: Reply): void
  mknod(path: string, mode: number, dev: number, cb: Reply): void
  mkdir(path: string, mode: number, cb: Reply): void
  symlink(target: string, path: string, cb: Reply): void
  link(src: string, dest: string, cb: Reply): void
  unlink(path: string, cb: Reply): void
  rmdir(path: string, cb: Reply): void
  rename(src: string, dest: string, cb: Reply): void
  setxattr(path: string, name: string, value: Buffer, position: number, flags: number, cb: Reply): void
  removexattr(path: string, name: string, cb: Reply): void
}

/** the signal a _op_ method answers with (fuse-native's bound native signal) */
export type Signal = Reply

/** a fuse-native handler: (native request block, opcode, ...op arguments) */
export type NativeHandler = (nativeLocals: Buffer, opcode: number, ...args: unknown[]) => unknown

export interface FuseNativeInstance {
  /** the native fuse_thread_t of the mount */
  _thread: Buffer
  _handlers: Array<NativeHandler | undefined>
  mount(cb: (err: Error | null) => void): void
  unmount(cb: (err: Error | null) => void): void
}

export interface FuseNativeClass {
  new (mnt: string, ops: FuseOps, opts: { timeout: false }): FuseNativeInstance
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const FuseNative: FuseNativeClass = require('fuse-native')

/** the native binding fuse-native loaded (node-gyp-build hands out the same module) */
export const nativeBinding = createRequire(require.resolve('fuse-native'))('node-gyp-build')(
  dirname(require.resolve('fuse-native')),
) as { fuse_native_unmount(mnt: string, thread: Buffer): void }

/** opcode of utimens in fuse-native 2.x (fuse-native.c: op_utimens) */
export const OP_UTIMENS = 12
/** offsets of atime and mtime in fuse-native's fuse_thread_locals_t on 64-bit Linux */
export const LOCALS_ATIME = 104
export const LOCALS_MTIME = 112
