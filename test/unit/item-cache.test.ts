/*
 * The item cache against a model forest: coverage, dirty items and deletions, the
 * commit/read race, LRU shrinking (never dirty items, never under a running iteration) and
 * invalidation.  The forest here is a model (a sorted array answering in small windows, like
 * leaves), which is what this layer sees of the real one.
 */
import assert from 'node:assert/strict'
import type { Item } from '../../node-agent/src/storage/btree.js'
import type { ForestRead, ForestReader } from '../../node-agent/src/client/forest.js'
import { KeyType, Zone, makeKey } from '../../node-agent/src/storage/format.js'
import { ItemCache } from '../../node-agent/src/client/item-cache.js'
import { IntervalSet } from '../../node-agent/src/util/sorted-map.js'
import { testRng } from '../helpers/rng.js'

/** A forest over a sorted list of items that answers in windows of `leaf` items. */
class ModelForest implements ForestReader {
  items: Item[] = []
  reads = 0
  /** when set, reads wait for it (to interleave a commit) */
  gate: Promise<void> | undefined

  constructor(private readonly leaf = 8) {}

  set(key: Buffer, val: Buffer, seq: number): void {
    const i = this.items.findIndex((it) => Buffer.compare(it.key, key) >= 0)
    const item = { key, val, seq, flags: 0 }
    if (i < 0) this.items.push(item)
    else if (this.items[i]!.key.equals(key)) this.items[i] = item
    else this.items.splice(i, 0, item)
  }

  remove(key: Buffer): void {
    this.items = this.items.filter((it) => !it.key.equals(key))
  }

  async readAround(key: Buffer, lo: Buffer, hi: Buffer): Promise<ForestRead> {
    this.reads++
    const snapshot = this.items.slice()
    if (this.gate) await this.gate
    // windows aligned to multiples of `leaf` items, like leaves of a tree
    let i = snapshot.findIndex((it) => Buffer.compare(it.key, key) >= 0)
    if (i < 0) i = snapshot.length
    const w = Math.floor(i / this.leaf) * this.leaf
    const start = w === 0 ? lo : snapshot[w - 1]!.key
    const endIdx = Math.min(w + this.leaf, snapshot.length)
    const end = endIdx >= snapshot.length ? hi : snapshot[endIdx - 1]!.key
    const s = w === 0 ? lo : Buffer.concat([start.subarray(0, 33), Buffer.from([start[33]! + 1])])
    const clip = (b: Buffer, min: Buffer, max: Buffer): Buffer =>
      Buffer.compare(b, min) < 0 ? min : Buffer.compare(b, max) > 0 ? max : b
    const cs = clip(s, lo, hi)
    const ce = clip(end, lo, hi)
    return {
      items: snapshot.filter((it) => Buffer.compare(it.key, cs) >= 0 && Buffer.compare(it.key, ce) <= 0),
      start: cs,
      end: ce,
    }
  }
}

const k = (ino: number, n: number): Buffer => makeKey(Zone.FS, ino, KeyType.XATTR, n * 2) // even: room for odd inserts
const v = (s: string): Buffer => Buffer.from(s)
const FIRST = makeKey(Zone.FS, 0)
const LAST = makeKey(Zone.FS, 1023, 0xff, 0x1fffffffffffff)

async function all(c: ItemCache, reverse = false): Promise<string[]> {
  const out: string[] = []
  for await (const it of c.range(FIRST, LAST, reverse)) out.push(it.val.toString())
  return out
}

describe('item cache', () => {
  it('reads through to the forest once per covered range, and dirty items win', async () => {
    const f = new ModelForest()
    for (let i = 0; i < 40; i++) f.set(k(5, i), v(`v${i}`), 1)
    const c = new ItemCache(f)
    assert.equal((await c.get(k(5, 3)))?.toString(), 'v3')
    const reads = f.reads
    assert.equal((await c.get(k(5, 4)))?.toString(), 'v4')
    assert.equal(f.reads, reads, 'a neighbour in the same leaf window is a hit')
    assert.equal(await c.get(makeKey(Zone.FS, 5, KeyType.XATTR, 7)), undefined, 'absent inside a covered range')
    c.put(k(5, 3), v('new'), 2)
    c.delete(k(5, 4), 2)
    assert.equal((await c.get(k(5, 3)))?.toString(), 'new')
    assert.equal(await c.get(k(5, 4)), undefined)
    const list = await all(c)
    assert.equal(list.length, 39)
    assert.ok(!list.includes('v4') && list.includes('new'))
    assert.deepEqual(await all(c, true), list.slice().reverse())
    assert.equal(c.dirtyItems, 2)
  })

  it('a commit turns deletions into absence, and a racing forest read cannot resurrect them', async () => {
    const f = new ModelForest(4)
    for (let i = 0; i < 16; i++) f.set(k(1, i), v(`v${i}`), 1)
    const c = new ItemCache(f)
    assert.equal((await c.get(k(1, 0)))?.toString(), 'v0')
    c.delete(k(1, 9), 2) // not covered yet: a dirty deletion

    // a read of the range holding key 9 starts, sees the forest *before* the commit...
    let open!: () => void
    f.gate = new Promise((r) => (open = r))
    const racing = c.get(k(1, 10))
    // ...the commit lands: the forest now has the deletion, the cache forgets its dirty entry
    const dirty = c.dirtyList()
    f.remove(k(1, 9))
    c.commitDone(dirty)
    f.gate = undefined
    open()
    assert.equal((await racing)?.toString(), 'v10')
    assert.equal(await c.get(k(1, 9)), undefined, 'the deleted item stays deleted')
    assert.ok(c.counters.readRetries >= 1, 'the stale read was retried')
  })

  for (const cached of [0, 2000])
    it(`an item changed while its commit runs stays dirty for the next one (${cached ? 'sorted keys' : 'walk of the cache'})`, async () => {
      const f = new ModelForest(8)
      for (let i = 0; i < cached; i++) f.set(k(4, i), v(`c${i}`), 1)
      const c = new ItemCache(f)
      for (let i = 0; i < cached; i += 50) await c.get(k(4, i)) // a big clean cache: few dirty items in it
      c.put(k(3, 2), v('a1'), 5)
      c.put(k(3, 1), v('b1'), 5)
      c.delete(k(3, 3), 5)
      const first = c.dirtyList()
      assert.deepEqual(
        first.map((d) => d.val?.toString() ?? null),
        ['b1', 'a1', null],
        'in key order',
      )
      // the commit is writing them; meanwhile one is changed and one deleted again
      c.put(k(3, 2), v('a2'), 6)
      c.delete(k(3, 1), 6)
      c.commitDone(first)
      const second = c.dirtyList()
      assert.deepEqual(
        second.map((d) => [d.val?.toString() ?? null, d.seq]),
        [
          [null, 6],
          ['a2', 6],
        ],
        'what changed during the commit is still dirty, as it is now',
      )
      assert.equal(c.dirtyItems, 2)
      assert.equal((await c.get(k(3, 2)))?.toString(), 'a2')
      assert.equal(await c.get(k(3, 1)), undefined)
      c.commitDone(second)
      assert.equal(c.dirtyItems, 0)
      assert.deepEqual(c.dirtyList(), [])
    })

  it('shrinks clean items in LRU order, keeps dirty ones, and iteration survives shrinking', async () => {
    const rng = testRng('item-cache-shrink')
    const f = new ModelForest(8)
    const n = 400
    for (let i = 0; i < n; i++) f.set(k(2, i), v(`v${i}`), 1)
    const c = new ItemCache(f, 64)
    c.put(k(2, 1), v('dirty1'), 5)
    // iterate everything while random lookups elsewhere force shrinking
    const seen: string[] = []
    for await (const it of c.range(FIRST, LAST)) {
      seen.push(it.val.toString())
      await c.get(k(2, rng.int(n)))
    }
    assert.equal(seen.length, n)
    assert.equal(new Set(seen).size, n, 'no duplicates')
    assert.equal(seen[1], 'dirty1')
    assert.ok(c.counters.shrinks > 0, 'the cache shrank')
    assert.ok(c.size <= 64 + 16, `bounded: ${c.size} items`)
    assert.equal((await c.get(k(2, 1)))?.toString(), 'dirty1', 'dirty items are never shrunk')
    // a range just used survives a shrink that drops older ones
    await c.get(k(2, 300))
    const before = f.reads
    for (let i = 0; i < 20; i++) await c.get(k(2, 8 * i))
    await c.get(k(2, 301))
    assert.ok(f.reads - before <= 21)
  })

  it('a shrink between a read and its caller cannot turn an existing item into ENOENT', async () => {
    // two inode groups, each one leaf window; room for about one of them
    const f = new ModelForest(64)
    for (let i = 0; i < 40; i++) f.set(k(5000, i), v(`a${i}`), 1)
    for (let i = 0; i < 40; i++) f.set(k(9000, i), v(`b${i}`), 1)
    const c = new ItemCache(f, 50)
    for (let round = 0; round < 20; round++) {
      c.shrinkAll()
      let open!: () => void
      f.gate = new Promise((r) => (open = r))
      const a = c.get(k(5000, round))
      const b = c.get(k(9000, round))
      f.gate = undefined
      open()
      const [va, vb] = await Promise.all([a, b])
      assert.equal(va?.toString(), `a${round}`, `round ${round}: group a item read back`)
      assert.equal(vb?.toString(), `b${round}`, `round ${round}: group b item read back`)
    }
  })

  it('interval coverage: add and remove against a model', () => {
    const rng = testRng('intervals')
    const set = new IntervalSet()
    const model = new Array<boolean>(200).fill(false)
    const key = (n: number): string => Buffer.from([0, n]).toString('latin1')
    for (let op = 0; op < 3000; op++) {
      const a = rng.int(200)
      const b = Math.min(199, a + rng.int(20))
      if (rng.bool()) {
        set.add(key(a), key(b))
        for (let x = a; x <= b; x++) model[x] = true
      } else {
        set.remove(key(a), key(b))
        for (let x = a; x <= b; x++) model[x] = false
      }
      const x = rng.int(200)
      assert.equal(!!set.find(key(x)), model[x], `op ${op}: coverage of ${x}`)
    }
  })

  it('invalidation drops clean items of a range but not dirty ones', async () => {
    const f = new ModelForest(100)
    for (let i = 0; i < 20; i++) f.set(k(3, i), v(`v${i}`), 1)
    const c = new ItemCache(f)
    await c.get(k(3, 0))
    c.put(k(3, 5), v('mine'), 2)
    f.set(k(3, 6), v('changed elsewhere'), 3)
    c.invalidate(k(3, 0), k(3, 19))
    assert.equal((await c.get(k(3, 6)))?.toString(), 'changed elsewhere', 'reread after invalidation')
    assert.equal((await c.get(k(3, 5)))?.toString(), 'mine', 'dirty item kept')
  })
})
