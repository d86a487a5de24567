/*
 * The data waiters of a mount (node-agent/src/fs/data-wait.ts): listed in (ino, iblock) order
 * after a cursor with their ops merged, woken by inode range, failed by inode, block range and
 * op with the errno given, and all failed at unmount.
 */
import assert from 'node:assert/strict'
import { DataWaitOp, DataWaiters } from '../../node-agent/src/fs/data-wait.js'
import { FsError } from '../../node-agent/src/util/errors.js'

/** A waiter's outcome once settled: 'woken' or its errno. */
function outcome(p: Promise<void>): { get: () => string | undefined } {
  let v: string | undefined
  p.then(
    () => (v = 'woken'),
    (e: unknown) => (v = e instanceof FsError ? e.code : 'other'),
  )
  return { get: () => v }
}
const settle = (): Promise<void> => new Promise((r) => setImmediate(r))

describe('data waiters', () => {
  it('lists, wakes by inode range and fails by inode, block range and op', async () => {
    const w = new DataWaiters()
    const a = outcome(w.wait(10, 3, DataWaitOp.READ))
    const b = outcome(w.wait(10, 3, DataWaitOp.WRITE))
    const c = outcome(w.wait(10, 7, DataWaitOp.READ))
    const d = outcome(w.wait(2000, 0, DataWaitOp.CHANGE_SIZE))
    assert.deepEqual(w.list(0, 0, 10), [
      { ino: 10, iblock: 3, op: DataWaitOp.READ | DataWaitOp.WRITE },
      { ino: 10, iblock: 7, op: DataWaitOp.READ },
      { ino: 2000, iblock: 0, op: DataWaitOp.CHANGE_SIZE },
    ])
    assert.deepEqual(w.list(10, 3, 1), [{ ino: 10, iblock: 7, op: DataWaitOp.READ }], 'after a cursor, at most max')

    assert.equal(w.fail(10, 0, 4, DataWaitOp.READ, 'ENODATA'), 1, 'only the read of blocks 0..3')
    await settle()
    assert.deepEqual([a.get(), b.get(), c.get()], ['ENODATA', undefined, undefined])

    w.wakeRange(0, 1023)
    await settle()
    assert.deepEqual([b.get(), c.get(), d.get()], ['woken', 'woken', undefined], 'the group of inodes 0..1023')
    assert.equal(w.size, 1)

    w.failAll('EIO', 'unmount')
    await settle()
    assert.equal(d.get(), 'EIO')
    assert.equal(w.size, 0)
    assert.deepEqual(w.counters, { waits: 4, failed: 2 })
  })
})
