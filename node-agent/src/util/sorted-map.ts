/*
 * An ordered map from string keys to values: sorted chunks of at most CHUNK entries, found by
 * binary search over each chunk's last key.  Keys are latin1 strings of encoded item keys,
 * whose JavaScript string order equals byte order.  O(log n + CHUNK) per operation.
 */
const CHUNK = 256

interface Chunk<V> {
  keys: string[]
  vals: V[]
}

function lowerBound(a: string[], k: string): number {
  let lo = 0
  let hi = a.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (a[mid]! < k) lo = mid + 1
    else hi = mid
  }
  return lo
}

export class SortedMap<V> {
  private chunks: Array<Chunk<V>> = []
  private count = 0

  get size(): number {
    return this.count
  }

  /** index of the first chunk whose last key is >= k (chunks.length when none) */
  private chunkFor(k: string): number {
    let lo = 0
    let hi = this.chunks.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const c = this.chunks[mid]!
      if (c.keys[c.keys.length - 1]! < k) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  get(k: string): V | undefined {
    const ci = this.chunkFor(k)
    const c = this.chunks[ci]
    if (!c) return undefined
    const i = lowerBound(c.keys, k)
    return c.keys[i] === k ? c.vals[i] : undefined
  }

  has(k: string): boolean {
    return this.get(k) !== undefined
  }

  set(k: string, v: V): void {
    let ci = this.chunkFor(k)
    if (ci === this.chunks.length) {
      if (ci === 0) {
        this.chunks.push({ keys: [k], vals: [v] })
        this.count++
        return
      }
      ci-- // append to the last chunk
    }
    const c = this.chunks[ci]!
    const i = lowerBound(c.keys, k)
    if (c.keys[i] === k) {
      c.vals[i] = v
      return
    }
    c.keys.splice(i, 0, k)
    c.vals.splice(i, 0, v)
    this.count++
    if (c.keys.length > CHUNK * 2) {
      const half = c.keys.length >>> 1
      this.chunks.splice(ci + 1, 0, { keys: c.keys.splice(half), vals: c.vals.splice(half) })
    }
  }

  delete(k: string): boolean {
    const ci = this.chunkFor(k)
    const c = this.chunks[ci]
    if (!c) return false
    const i = lowerBound(c.keys, k)
    if (c.keys[i] !== k) return false
    c.keys.splice(i, 1)
    c.vals.splice(i, 1)
    this.count--
    if (c.keys.length === 0) this.chunks.splice(ci, 1)
    else if (c.keys.length < CHUNK / 4 && ci + 1 < this.chunks.length) {
      const n = this.chunks[ci + 1]!
      if (n.keys.length + c.keys.length <= CHUNK * 2) {
        c.keys.push(...n.keys)
        c.vals.push(...n.vals)
        this.chunks.splice(ci + 1, 1)
      }
    }
    return true
  }

  /**
   * Delete `keys` (absent ones are skipped; sorted first unless ascending) in one pass over
   * the chunks they fall in: a commit drops tens of thousands of entries at once, and a
   * search and two splices each cost more than rebuilding those chunks.  Returns how many
   * were deleted.
   */
  deleteMany(keys: readonly string[]): number {
    if (keys.length === 0) return 0
    for (let i = 1; i < keys.length; i++)
      if (keys[i - 1]! > keys[i]!) {
        keys = [...keys].sort()
        break
      }
    let ki = 0
    let removed = 0
    const out: Array<Chunk<V>> = []
    for (const c of this.chunks) {
      if (ki >= keys.length || keys[ki]! > c.keys[c.keys.length - 1]!) {
        out.push(c)
        continue
      }
      const nk: string[] = []
      const nv: V[] = []
      for (let i = 0; i < c.keys.length; i++) {
        const k = c.keys[i]!
        while (ki < keys.length && keys[ki]! < k) ki++
        if (keys[ki] === k) {
          ki++
          removed++
          continue
        }
        nk.push(k)
        nv.push(c.vals[i]!)
      }
      if (nk.length === 0) continue
      // a chunk left small joins the one before it when both fit in one
      const prev = out[out.length - 1]
      if (
        prev &&
        (nk.length < CHUNK / 4 || prev.keys.length < CHUNK / 4) &&
        prev.keys.length + nk.length <= CHUNK * 2
      ) {
        prev.keys.push(...nk)
        prev.vals.push(...nv)
      } else out.push({ keys: nk, vals: nv })
    }
    this.chunks = out
    this.count -= removed
    return removed
  }

  /** Call fn for each entry with start <= key <= end, in order, with no allocation per entry. */
  forEach(start: string, end: string, fn: (k: string, v: V) => void): void {
    if (start > end) return
    const first = this.chunkFor(start)
    for (let ci = first; ci < this.chunks.length; ci++) {
      const c = this.chunks[ci]!
      for (let i = ci === first ? lowerBound(c.keys, start) : 0; i < c.keys.length; i++) {
        if (c.keys[i]! > end) return
        fn(c.keys[i]!, c.vals[i]!)
      }
    }
  }

  /** Entries with start <= key <= end, in order (or reverse).  Do not modify while iterating. */
  *range(start: string, end: string, reverse = false): Generator<[string, V]> {
    if (start > end) return
    if (!reverse) {
      const first = this.chunkFor(start)
      for (let ci = first; ci < this.chunks.length; ci++) {
        const c = this.chunks[ci]!
        for (let i = ci === first ? lowerBound(c.keys, start) : 0; i < c.keys.length; i++) {
          if (c.keys[i]! > end) return
          yield [c.keys[i]!, c.vals[i]!]
        }
      }
    } else {
      let ci = Math.min(this.chunkFor(end), this.chunks.length - 1)
      for (; ci >= 0; ci--) {
        const c = this.chunks[ci]!
        let i = lowerBound(c.keys, end)
        if (i >= c.keys.length || c.keys[i]! > end) i--
        for (; i >= 0; i--) {
          if (c.keys[i]! < start) return
          yield [c.keys[i]!, c.vals[i]!]
        }
        end = c.keys[0]! // every key of earlier chunks is below this chunk's first
      }
    }
  }

  /** The first entry with key >= k and <= end. */
  ceil(k: string, end: string): [string, V] | undefined {
    for (const e of this.range(k, end)) return e
    return undefined
  }

  /** The last entry with key <= k and >= start. */
  floor(k: string, start: string): [string, V] | undefined {
    for (const e of this.range(start, k, true)) return e
    return undefined
  }

  clear(): void {
    this.chunks = []
    this.count = 0
  }
}

/** A set of disjoint, inclusive [start, end] string intervals. */
export class IntervalSet {
  private starts: string[] = []
  private ends: string[] = []

  get size(): number {
    return this.starts.length
  }

  /** the interval containing k, if any */
  find(k: string): [string, string] | undefined {
    const i = lowerBound(this.ends, k)
    if (i < this.starts.length && this.starts[i]! <= k) return [this.starts[i]!, this.ends[i]!]
    return undefined
  }

  /** add [s, e], merging with overlapping or adjacent-by-key intervals it touches */
  add(s: string, e: string): void {
    const i = lowerBound(this.ends, s)
    let ns = s
    let ne = e
    let j = i
    while (j < this.starts.length && this.starts[j]! <= e) {
      if (this.starts[j]! < ns) ns = this.starts[j]!
      if (this.ends[j]! > ne) ne = this.ends[j]!
      j++
    }
    this.starts.splice(i, j - i, ns)
    this.ends.splice(i, j - i, ne)
  }

  /** remove [s, e] from the set, trimming intervals that overlap it */
  remove(s: string, e: string): void {
    const i = lowerBound(this.ends, s) // first interval that may overlap
    let j = i
    while (j < this.starts.length && this.starts[j]! <= e) j++
    if (i === j) return
    const keepS: string[] = []
    const keepE: string[] = []
    if (this.starts[i]! < s) {
      keepS.push(this.starts[i]!)
      keepE.push(prevKey(s))
    }
    if (this.ends[j - 1]! > e) {
      keepS.push(nextKey(e))
      keepE.push(this.ends[j - 1]!)
    }
    this.starts.splice(i, j - i, ...keepS)
    this.ends.splice(i, j - i, ...keepE)
  }

  clear(): void {
    this.starts = []
    this.ends = []
  }

  *intervals(): Generator<[string, string]> {
    for (let i = 0; i < this.starts.length; i++) yield [this.starts[i]!, this.ends[i]!]
  }
}

/** the key string right after k (same length, +1 as a big-endian number) */
export function nextKey(k: string): string {
  const b = Buffer.from(k, 'latin1')
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] !== 0xff) {
      b[i]!++
      return b.toString('latin1')
    }
    b[i] = 0
  }
  return k
}

export function prevKey(k: string): string {
  const b = Buffer.from(k, 'latin1')
  for (let i = b.length - 1; i >= 0; i--) {
    if (b[i] !== 0) {
      b[i]!--
      return b.toString('latin1')
    }
    b[i] = 0xff
  }
  return k
}
