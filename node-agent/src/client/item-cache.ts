/*
 * The item cache: this mount's view of the items it works with, and the dirty items of its
 * open transaction.
 *
 * Items are kept in one ordered map.  A set of *covered* key intervals says where the cache
 * knows every item: a key in a covered interval that has no entry does not exist.  A miss
 * reads the leaves around the key from the forest, clipped to the key's lock range, inserts
 * the items it does not hold yet and covers the range the forest answered for.  Dirty entries
 * (including deletions, whose value is null) are authoritative whether covered or not.
 *
 * Invariants:
 *  - coverage never spans two lock ranges, so a lock invalidation can drop exactly its range;
 *  - a read that raced with a commit is thrown away and retried (the commit may have turned
 *    dirty deletions into clean absences that the older read would resurrect);
 *  - shrinking drops clean items and their coverage in least-recently-used order; dirty items
 *    stay until their commit.  Nothing refers to an entry across an await: every access looks
 *    the key up again, so there is nothing to use after it is freed.
 */
import { FsError } from '../util/errors.js'
import type { ForestReader } from './forest.js'
import { KEY_SIZE, Zone } from '../storage/format.js'
import { lockRange } from '../protocol/lock-ranges.js'
import { IntervalSet, SortedMap, nextKey } from '../util/sorted-map.js'

export interface CachedItem {
  /** null: deleted (only while dirty) */
  val: Buffer | null
  dirty: boolean
  seq: number
}

export interface DirtyItem {
  key: Buffer
  val: Buffer | null
  seq: number
  /** the key as the cache's map has it (latin1) */
  k: string
  /** the cache's entry (a dirty entry stays the same object until its commit is done) */
  item: CachedItem
}

export interface ItemCacheCounters {
  hits: number
  misses: number
  reads: number
  readRetries: number
  shrinks: number
  shrunkItems: number
}

const L = (b: Buffer): string => b.toString('latin1')
const MIN_K = '\0'.repeat(KEY_SIZE)
const MAX_K = '\xff'.repeat(KEY_SIZE)
const B = (s: string): Buffer => Buffer.from(s, 'latin1')

export class ItemCache {
  readonly counters: ItemCacheCounters = { hits: 0, misses: 0, reads: 0, readRetries: 0, shrinks: 0, shrunkItems: 0 }
  private readonly items = new SortedMap<CachedItem>()
  private readonly covered = new IntervalSet()
  /** interval start -> last use, in LRU order */
  private readonly lru = new Map<string, number>()
  private useClock = 0
  /** bumps at every commit; a forest read that spans one is retried */
  private commitGen = 0
  /**
   * the keys of the dirty entries (map key -> the key's bytes, kept so the commit, which
   * blocks new operations, converts nothing): a commit visits them, not the whole cache
   */
  private readonly dirtyKeys = new Map<string, Buffer>()
  private dirtyBytesTotal = 0

  constructor(
    private readonly forest: ForestReader,
    public maxItems = 500_000,
  ) {}

  get size(): number {
    return this.items.size
  }
  get intervals(): number {
    return this.covered.size
  }
  get dirtyItems(): number {
    return this.dirtyKeys.size
  }
  get dirtyBytes(): number {
    return this.dirtyBytesTotal
  }
  /** Bytes of keys and values the cache holds (counted by a walk: for metrics, not hot paths). */
  get bytes(): number {
    let n = 0
    for (const [, v] of this.items.range(MIN_K, MAX_K)) n += KEY_SIZE + (v.val?.length ?? 0)
    return n
  }

  private touch(start: string): void {
    this.lru.delete(start)
    this.lru.set(start, ++this.useClock)
  }

  /**
   * The interval covering `k` (and everything up to `through`), counted as a hit, if there is
   * one (no read, no await).
   */
  private cachedAt(k: string, through = k): [string, string] | undefined {
    let hit = this.covered.find(k)
    if (hit && hit[1] < through) hit = undefined
    if (hit) {
      this.counters.hits++
      this.touch(hit[0])
    }
    return hit
  }

  /** Make sure `k` is covered; returns the covering interval. */
  private async ensure(k: string): Promise<[string, string]> {
    const hit = this.cachedAt(k)
    if (hit) return hit
    this.counters.misses++
    for (;;) {
      const gen = this.commitGen
      const key = B(k)
      const [lo, hi] = lockRange(key)
      this.counters.reads++
      const r = await this.forest.readAround(key, lo, hi)
      if (gen !== this.commitGen) {
        this.counters.readRetries++
        continue
      }
      const again = this.covered.find(k)
      if (again) return again // a concurrent read covered it meanwhile
      const s = L(r.start)
      const e = L(r.end)
      for (const it of r.items) {
        const ik = L(it.key)
        if (this.covered.find(ik) || this.items.get(ik)) continue
        this.items.set(ik, { val: Buffer.from(it.val), dirty: false, seq: it.seq })
      }
      this.covered.add(s, e)
      const iv = this.covered.find(k)!
      this.touch(iv[0])
      this.maybeShrink(iv[0])
      return this.covered.find(k) ?? iv
    }
  }

  async get(key: Buffer): Promise<Buffer | undefined> {
    const k = L(key)
    const e = this.items.get(k)
    if (e?.dirty) {
      this.counters.hits++
      return e.val ?? undefined
    }
    if (this.cachedAt(k)) return e?.val ?? undefined
    // ensure() resolves in a later microtask than the one that covered k: a shrink may run in
    // between, so look again before trusting an absence
    for (;;) {
      await this.ensure(k)
      const e2 = this.items.get(k)
      if (e2?.dirty || this.covered.find(k)) return e2?.val ?? undefined
    }
  }

  /** The first existing item with start <= key <= end. */
  async next(start: Buffer, end: Buffer): Promise<{ key: Buffer; val: Buffer } | undefined> {
    // the whole range in one covered interval (the usual case): answered from the map
    const s = L(start)
    const e = L(end)
    if (s <= e && this.cachedAt(s, e)) {
      for (const [k, it] of this.items.range(s, e)) if (it.val) return { key: B(k), val: it.val }
      return undefined
    }
    for await (const it of this.range(start, end)) return it
    return undefined
  }

  /** The last existing item with start <= key <= end. */
  async prev(start: Buffer, end: Buffer): Promise<{ key: Buffer; val: Buffer } | undefined> {
    for await (const it of this.range(start, end, true)) return it
    return undefined
  }

  /** Existing items with start <= key <= end, in key order (or reverse). */
  async *range(start: Buffer, end: Buffer, reverse = false): AsyncGenerator<{ key: Buffer; val: Buffer }> {
    const s = L(start)
    const e = L(end)
    if (!reverse) {
      let cursor = s
      while (cursor <= e) {
        let iv = this.cachedAt(cursor)
        if (!iv) {
          await this.ensure(cursor)
          iv = this.covered.find(cursor) // again: a shrink may have run since
          if (!iv) continue
        }
        const ce = iv[1]
        const stop = ce < e ? ce : e
        const found: Array<{ key: Buffer; val: Buffer }> = []
        for (const [k, it] of this.items.range(cursor, stop)) if (it.val) found.push({ key: B(k), val: it.val })
        for (const f of found) yield f
        if (ce >= e) return
        cursor = nextKey(ce)
        if (found.length) {
          const last = L(found[found.length - 1]!.key)
          if (last >= cursor) cursor = nextKey(last)
        }
      }
    } else {
      let cursor = e
      while (cursor >= s) {
        await this.ensure(cursor)
        const iv = this.covered.find(cursor)
        if (!iv) continue
        const cs = iv[0]
        const stop = cs > s ? cs : s
        const found: Array<{ key: Buffer; val: Buffer }> = []
        for (const [k, it] of this.items.range(stop, cursor, true)) if (it.val) found.push({ key: B(k), val: it.val })
        for (const f of found) yield f
        if (cs <= s) return
        cursor = prevKeyStr(cs)
      }
    }
  }

  private dirty(key: Buffer, val: Buffer | null, seq: number): void {
    if (key.length !== KEY_SIZE) throw new FsError('EINVAL', `item key of ${key.length} bytes`)
    const k = L(key)
    const cur = this.items.get(k)
    if (cur?.dirty) this.dirtyBytesTotal -= KEY_SIZE + (cur.val?.length ?? 0)
    else this.dirtyKeys.set(k, Buffer.from(key))
    this.dirtyBytesTotal += KEY_SIZE + (val?.length ?? 0)
    if (cur) {
      // changed in place: a commit that listed the entry compares its seq and value (commitDone)
      cur.val = val
      cur.dirty = true
      cur.seq = seq
    } else this.items.set(k, { val, dirty: true, seq })
  }

  /** Create or replace an item in the open transaction `seq`. */
  put(key: Buffer, val: Buffer, seq: number): void {
    this.dirty(key, Buffer.from(val), seq)
  }

  /** Delete an item in the open transaction `seq` (a deletion item is written at commit). */
  delete(key: Buffer, seq: number): void {
    this.dirty(key, null, seq)
  }

  /**
   * Every dirty item, in key order, for the commit (which holds back new operations: this is
   * on its clock).  When the dirty items are a good part of the cache, a walk of the ordered
   * cache finds them faster than sorting their keys and looking each up.
   */
  dirtyList(): DirtyItem[] {
    const out: DirtyItem[] = []
    if (this.dirtyKeys.size * 8 >= this.items.size) {
      this.items.forEach(MIN_K, MAX_K, (k, it) => {
        if (it.dirty) out.push({ key: this.dirtyKeys.get(k)!, val: it.val, seq: it.seq, k, item: it })
      })
      return out
    }
    // latin1 strings compare as their bytes do: this is key order
    for (const [k, key] of [...this.dirtyKeys].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
      const it = this.items.get(k)!
      out.push({ key, val: it.val, seq: it.seq, k, item: it })
    }
    return out
  }

  /** The commit is durable: dirty items are clean now; deletions become plain absence. */
  commitDone(items: DirtyItem[]): void {
    this.commitGen++
    // dropped in one pass at the end (the list is in key order)
    const gone: string[] = []
    for (const d of items) {
      const k = d.k
      const cur = d.item
      // changed again during the commit: still dirty, for the next one
      if (!cur.dirty || cur.seq !== d.seq || cur.val !== d.val) continue
      this.dirtyKeys.delete(k)
      this.dirtyBytesTotal -= KEY_SIZE + (cur.val?.length ?? 0)
      // items written blindly (write-only zones: the seq indexes, orphans) are never read
      // back from here: once committed they would only crowd out what readers cached
      if (cur.val === null || (k.charCodeAt(0) !== Zone.FS && !this.covered.find(k))) gone.push(k)
      else cur.dirty = false
    }
    this.items.deleteMany(gone)
    this.maybeShrink()
  }

  /** Drop clean items and coverage in [start, end] (a lock was lost, or memory is short). */
  invalidate(start: Buffer, end: Buffer): number {
    return this.drop(L(start), L(end))
  }

  private drop(s: string, e: string): number {
    const gone: string[] = []
    for (const [k, it] of this.items.range(s, e)) if (!it.dirty) gone.push(k)
    for (const k of gone) this.items.delete(k)
    this.covered.remove(s, e)
    return gone.length
  }

  /** Shrink to 3/4 of maxItems, oldest intervals first, never the one holding `keep`. */
  private maybeShrink(keep?: string): void {
    if (this.items.size <= this.maxItems) return
    this.counters.shrinks++
    const target = Math.floor(this.maxItems * 0.75)
    for (const start of this.lru.keys()) {
      if (this.items.size <= target) break
      const iv = this.covered.find(start)
      if (keep !== undefined && iv && iv[0] <= keep && keep <= iv[1]) continue
      this.lru.delete(start) // deleting the entry being visited is safe in a Map iteration
      if (!iv) continue
      this.counters.shrunkItems += this.drop(iv[0], iv[1])
    }
  }

  /** Drop every clean item (tests, and memory pressure). */
  shrinkAll(): void {
    this.counters.shrinks++
    this.counters.shrunkItems += this.drop(MIN_K, MAX_K)
    this.lru.clear()
  }
}

function prevKeyStr(k: string): string {
  const b = B(k)
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] !== 0) {
      b[i]!--
      return L(b)
    }
    b[i] = 0xff
  }
  return k
}
