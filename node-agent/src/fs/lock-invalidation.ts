/*
 * The lock-invalidation policy of a mount (DESIGN §8): what happens to its caches when it
 * loses (part of) a cluster lock; the lock client calls the hook built here before replying.
 *
 * - what was written under the lock and is not committed yet goes to the log tree first:
 *   the next holder reads it from there (nothing to do when those writes are committed);
 * - then, unless the lock goes WRITE -> READ (the cached items stay true), the lock's key
 *   range is dropped from the item cache and, for inode-group ranges of the fs zone, the
 *   kernel cache forgets those inodes;
 * - for inode-group ranges, the mount's data waiters of those inodes wake and re-check under
 *   a new lock (another mount is about to change them: a stage there, data-wait.ts).
 *
 * The kernel cache is looked up at every invalidation: the frontend is mounted after the lock
 * client exists (before that nothing can be cached in the kernel).
 */
import type { ItemCache } from '../client/item-cache.js'
import type { Trans } from '../client/trans.js'
import type { InvalidateHook } from '../lock/lock-client.js'
import { invalidationDropsCache, isWriteMode } from '../protocol/lock-modes.js'
import { lockRangeInodes } from '../protocol/lock-ranges.js'
import type { KernelCache } from './frontend.js'

export function lockInvalidationHook(
  trans: Pick<Trans, 'commit' | 'committedSeq'>,
  items: Pick<ItemCache, 'invalidate'>,
  kernel: () => KernelCache,
  wakeDataWaiters: (first: number, last: number) => void,
): InvalidateHook {
  return async (range, oldMode, newMode, info) => {
    if (isWriteMode(oldMode) && info.wrote && !(info.dirtyTransSeq && info.dirtyTransSeq <= trans.committedSeq))
      await trans.commit()
    if (invalidationDropsCache(oldMode, newMode)) {
      items.invalidate(range[0], range[1])
      const inos = lockRangeInodes(range)
      if (inos) kernel().invalidateInodes(...inos)
    }
    const inos = lockRangeInodes(range)
    if (inos) wakeDataWaiters(...inos)
  }
}
