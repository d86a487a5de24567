/*
 * InodeLocks (lock/inode-locks.ts): one mount's local exclusive inode locks.  Exclusion, first
 * come first served, tryLock taking all or nothing, duplicates, and an unlock that runs twice.
 */
import assert from 'node:assert/strict'
import { InodeLocks } from '../../node-agent/src/lock/inode-locks.js'
import { settles } from '../helpers/settles.js'

describe('InodeLocks', () => {
  it('excludes, serves waiters in arrival order, and passes each lock on at unlock', async () => {
    const l = new InodeLocks()
    const u1 = await l.lock([5, 3, 5])
    const order: string[] = []
    const w2 = l.lock([3]).then((u) => (order.push('w2'), u))
    const w3 = l.lock([5, 7]).then((u) => (order.push('w3'), u))
    const w4 = l.lock([3, 5]).then((u) => (order.push('w4'), u))
    assert.equal(await settles(w2), false, 'inode 3 is held')
    assert.equal(await settles(w3), false, 'inode 5 is held')
    const u7 = l.tryLock([7])
    assert.ok(u7, 'w3 waits for 5 before it takes 7 (inode order): 7 is free')
    u7()
    u1()
    u1() // a second unlock changes nothing
    const u2 = await w2
    const u3 = await w3
    assert.deepEqual([...order].sort(), ['w2', 'w3'], 'both got what they waited for')
    assert.equal(await settles(w4), false, 'w4 waits for both')
    u2()
    assert.equal(await settles(w4), false, 'w4 still waits for 5')
    u3()
    const u4 = await w4
    assert.equal(order[2], 'w4', 'w4 came after the two before it on its inodes')
    u4()
    const u5 = l.tryLock([3, 5, 7])
    assert.ok(u5, 'everything is free again')
    u5()
  })

  it('tryLock takes every inode or none', async () => {
    const l = new InodeLocks()
    const u = l.tryLock([2, 1, 2])
    assert.ok(u)
    assert.equal(l.tryLock([1]), undefined)
    assert.equal(l.tryLock([3, 2]), undefined, 'inode 2 is held')
    const u3 = l.tryLock([3])
    assert.ok(u3, 'inode 3 was not taken by the refused try')
    u3()
    const w = l.lock([1, 2])
    assert.equal(await settles(w), false)
    u()
    ;(await w)()
    assert.ok(l.tryLock([1, 2, 3]))
  })
})
