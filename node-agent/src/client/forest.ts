/*
 * The forest: reading items from the union of the fs root and every mount's committed log
 * tree.  For one key it reads, from each tree, the leaf that holds the key, keeps per key the
 * item with the highest seq, and drops deletion items.  The answer is complete only over the
 * key range every leaf read covers, so it also returns that range (clipped to the caller's
 * limits, its lock range): the item cache may treat every key in it as known.
 *
 * Roots come from the server.  A block that no longer matches its reference means the roots
 * are old (a merge freed and reused the block): refresh them and read again; the same failure
 * from fresh roots is corruption (EIO).  A block that looks corrupt is suspect at first (block.ts:
 * a reused block read while its new owner rewrote it is torn): refresh the roots and read again,
 * and it is corruption only if it fails again through the same reference, or from roots the
 * server says are still current (nothing freed it, so nothing rewrites it).
 *
 * Invalidating the roots (after this mount's commit, or for a lock grant that names a newer
 * roots version) must win over a fetch already in flight: that fetch may have been answered
 * before the commit it must see, so its answer is dropped and the roots fetched again, and a
 * grant's version is a floor the roots in use must reach.
 */
import { SuspectBlock, type BlockCache } from '../storage/block.js'
import { Btree, ITEM_DELETION, keyInc, type Item } from '../storage/btree.js'
import { FsError, isFsError } from '../util/errors.js'
import type { Roots } from '../protocol/server-api.js'

/** every reference the forest follows may be older than its block */
const OLD_REFS = { oldRefs: true } as const

export interface ForestRead {
  items: Item[]
  /** inclusive bounds of the key range the read answers for */
  start: Buffer
  end: Buffer
}

/** What the item cache needs of the forest (tests give it a model). */
export interface ForestReader {
  readAround(key: Buffer, lo: Buffer, hi: Buffer): Promise<ForestRead>
}

export interface ForestCounters {
  reads: number
  staleRetries: number
  treesRead: number
}

export class Forest implements ForestReader {
  private roots: Roots | undefined
  /** bumps at every invalidation: a fetch that spans one is not trusted */
  private gen = 0
  /** the roots in use must be at least this version (from lock grants) */
  private minVersion = 0
  readonly counters: ForestCounters = { reads: 0, staleRetries: 0, treesRead: 0 }

  constructor(
    readonly cache: BlockCache,
    private readonly fetchRoots: () => Promise<Roots>,
  ) {}

  /**
   * Forget the roots: the next read asks the server (after our own commit, or on ESTALE), and
   * uses nothing older than `minVersion`.
   */
  invalidateRoots(minVersion = 0): void {
    this.gen++
    this.roots = undefined
    if (minVersion > this.minVersion) this.minVersion = minVersion
  }

  private async getRoots(): Promise<Roots> {
    for (let tries = 0; ; tries++) {
      const have = this.roots
      if (have && have.version >= this.minVersion) return have
      const gen = this.gen
      const r = await this.fetchRoots()
      if (gen !== this.gen) continue // invalidated meanwhile: this answer may predate it
      if (r.version >= this.minVersion) {
        this.roots = r
        return r
      }
      // the server answered with roots older than a grant it sent: it restarted, or the
      // answer crossed the grant; ask again shortly
      if (tries > 100)
        throw new FsError('EIO', `the server's roots stay at version ${r.version}, below ${this.minVersion}`)
      await new Promise((res) => setTimeout(res, 10))
    }
  }

  async readAround(key: Buffer, lo: Buffer, hi: Buffer): Promise<ForestRead> {
    this.counters.reads++
    let lastVersion = -1
    // a block that failed as corrupt under roots that may be old: stale unless it fails again
    let suspect: SuspectBlock | undefined
    for (;;) {
      const roots = await this.getRoots()
      try {
        const r = await this.readFrom(roots, key, lo, hi)
        if (suspect) this.cache.settle(suspect, false)
        return r
      } catch (e) {
        const known = suspect
        suspect = undefined
        if (e instanceof SuspectBlock) {
          const again = known?.ref.blkno === e.ref.blkno && known.ref.seq === e.ref.seq
          if (known && !again) this.cache.settle(known, false)
          if (again || roots.version === lastVersion) throw this.cache.settle(e, true)
          suspect = e
        } else {
          if (known) this.cache.settle(known, false)
          if (!isFsError(e, 'ESTALE')) throw e
          if (roots.version === lastVersion)
            throw new FsError('EIO', `metadata stays stale after refreshing roots: ${e.message}`)
        }
        lastVersion = roots.version
        this.counters.staleRetries++
        this.cache.clear()
        this.invalidateRoots()
      }
    }
  }

  private async readFrom(roots: Roots, key: Buffer, lo: Buffer, hi: Buffer): Promise<ForestRead> {
    let start = lo
    let end = hi
    const best = new Map<string, Item>()
    const trees = [roots.fsRoot, ...roots.logTrees.map((lt) => lt.itemRoot)]
    for (const root of trees) {
      if (root.height === 0) continue
      this.counters.treesRead++
      const leaf = await new Btree(root, this.cache, undefined, OLD_REFS).leafAround(key)
      if (!leaf) continue
      if (leaf.lo && Buffer.compare(leaf.lo, start) >= 0) start = keyInc(leaf.lo)
      if (Buffer.compare(leaf.hi, end) < 0) end = leaf.hi
      for (const it of leaf.items) {
        const k = it.key.toString('latin1')
        const cur = best.get(k)
        if (!cur || cur.seq < it.seq) best.set(k, it)
      }
    }
    const items: Item[] = []
    for (const it of best.values()) {
      if (it.flags & ITEM_DELETION) continue
      if (Buffer.compare(it.key, start) < 0 || Buffer.compare(it.key, end) > 0) continue
      items.push(it)
    }
    return { items, start, end }
  }
}
