/*
 * The lock-invalidation policy (node-agent/src/fs/lock-invalidation.ts): commit only what was
 * written under the lock and is not committed, keep the caches on WRITE -> READ, otherwise
 * drop the item-cache range and tell the kernel cache the inodes of an inode-group range;
 * wake the data waiters of an inode-group range at every invalidation, and of no other range.
 */
import assert from 'node:assert/strict'
import { SEQ_INDEX_RANGE, lockRange } from '../../node-agent/src/protocol/lock-ranges.js'
import { inodeKey } from '../../node-agent/src/fs/fs-items.js'
import { NO_KERNEL_CACHE, type KernelCache } from '../../node-agent/src/fs/frontend.js'
import { lockInvalidationHook } from '../../node-agent/src/fs/lock-invalidation.js'
import { LockMode } from '../../node-agent/src/protocol/lock-modes.js'

describe('lock invalidation hook', () => {
  it('commits, drops and tells the kernel cache as the modes say', async () => {
    const calls: string[] = []
    const trans = {
      committedSeq: 4,
      commit: async (): Promise<void> => void calls.push('commit'),
    }
    const items = { invalidate: (): number => (calls.push('items'), 0) }
    let kernel: KernelCache = NO_KERNEL_CACHE
    const woken: Array<[number, number]> = []
    const hook = lockInvalidationHook(
      trans,
      items,
      () => kernel,
      (first, last) => woken.push([first, last]),
    )
    const range = lockRange(inodeKey(1030))
    const info = (wrote: boolean, dirtyTransSeq = 0) => ({ wrote, dirtyTransSeq, release: false })

    await hook(range, LockMode.WRITE, LockMode.READ, info(true, 5))
    assert.deepEqual(calls, ['commit'], 'WRITE -> READ: commit, caches stay')

    calls.length = 0
    await hook(range, LockMode.WRITE, LockMode.NULL, info(true, 3))
    assert.deepEqual(calls, ['items'], 'writes committed already: no commit; no frontend yet: nothing told')

    calls.length = 0
    kernel = {
      invalidateInodes: (first, last) => void calls.push(`inodes ${first}..${last}`),
      invalidateEntry: () => undefined,
    }
    await hook(range, LockMode.READ, LockMode.NULL, info(false))
    assert.equal(calls[0], 'items')
    assert.match(calls[1] ?? '', /^inodes \d+\.\.\d+$/)
    const [first, last] = (calls[1] ?? '').slice(7).split('..').map(Number) as [number, number]
    assert.ok(first <= 1030 && 1030 <= last, `${first}..${last} covers inode 1030`)
    assert.equal(woken.length, 3, 'every invalidation of the inode group woke its data waiters')
    assert.ok(
      woken.every(([a, b]) => a === first && b === last),
      'waiters of the group range',
    )
    await hook(SEQ_INDEX_RANGE, LockMode.WRITE_ONLY, LockMode.NULL, info(false))
    assert.equal(woken.length, 3, 'a range that is no inode group wakes no one')
  })
})
