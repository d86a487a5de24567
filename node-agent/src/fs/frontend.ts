/*
 * What the filesystem needs of the frontend that serves it to the kernel (a FUSE binding),
 * and what the agent needs to start and stop one.  The agent is handed a FrontendFactory, so a
 * second FUSE binding is another factory, not a change to the agent.
 *
 * KernelCache: the kernel (and a path-based binding's own path -> ino table) may cache
 * attributes, directory entries and data of inodes.  When this mount loses a cluster lock,
 * another mount may change those inodes, so the lock-invalidation policy (fs layer) tells the
 * frontend to forget them.  fuse-native runs with every kernel timeout at 0 and can only drop
 * its own path table; a low-level binding sends the kernel notify-invalidate requests.
 */
import type { FsApi } from './fs-api.js'

export interface KernelCache {
  /** inodes first..last may have changed on another mount: attributes, data, the entries they hold */
  invalidateInodes(first: number, last: number): void
  /** the entry `name` in directory `parent` may have changed (removed, renamed, replaced) */
  invalidateEntry(parent: number, name: string): void
}

/** A kernel cache that holds nothing (in-process tests, tools). */
export const NO_KERNEL_CACHE: KernelCache = {
  invalidateInodes: () => undefined,
  invalidateEntry: () => undefined,
}

export interface FrontendLogger {
  error(msg: string, err?: unknown): void
  warn(msg: string): void
}

export interface FrontendOptions {
  /** shown in /proc/mounts */
  fsname: string
  /** the binding's own debug output */
  debug?: boolean
  /**
   * how long the binding keeps polling for the next request after one, instead of sleeping
   * (us; 0: never; a binding without such a loop ignores it)
   */
  spinUs?: number
  log: FrontendLogger
}

/** What a frontend counts of the kernel's side (metrics): 0 where a binding has no such thing. */
export interface FrontendStats {
  /** inodes the kernel holds (lookup count above 0) */
  heldInodes: number
  /** files and directories the kernel has open */
  openHandles: number
  /** notify-invalidations of inodes and of entries queued for the kernel */
  invalidatedInodes: number
  invalidatedEntries: number
  /** notifies the kernel finished; refused (not ENOENT, which means nothing was cached) */
  notifiesDone: number
  notifiesFailed: number
  /** lookups that stopped waiting for the kernel to drop a moved directory's old name */
  notifyWaitsExpired: number
  /** directories found under a new name (renamed by another mount) while cached under the old */
  movedDirectories: number
  /** operations refused ESTALE: their directory was reached through a name that no longer leads there */
  staleParents: number
  /** the kernel's security.capability questions (before each write) answered without the agent */
  noCapsAnswers: number
  /** requests that found the binding's loop asleep, not polling for them */
  loopWakeups: number
  /** the kernel's GETATTRs of directories answered by the binding from attributes it was given */
  cachedGetattrs: number
}

/** A mounted frontend: serving `fs` at its mountpoint until unmount(). */
export interface Frontend extends KernelCache {
  unmount(): Promise<void>
  stats(): FrontendStats
}

export type FrontendFactory = (fs: FsApi, mountpoint: string, opts: FrontendOptions) => Promise<Frontend>
