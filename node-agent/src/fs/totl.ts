/*
 * xattr totals (the original's totl.c): every `scoutfs.totl.NAME.A.B.C` xattr's value (a
 * decimal u64) adds to the total A.B.C, and `read-xattr-totals` lists every total with how
 * many xattrs make it up.
 *
 * Each inode keeps one totl item per total it adds to, (A, B, C, ino) holding its sum and
 * count, recomputed from the inode's own xattrs whenever one of them changes (under the
 * inode's WRITE lock, in the xattr's transaction).  The items are written under the zone's
 * WRITE_ONLY lock from every mount at once and merge through the log trees like every other
 * item; a total is the sum of its items, read under the zone's READ lock (which makes every
 * mount commit first), so it is exact, not the original's weakly cached value.  The original
 * keeps one delta item per total that its merge sums; these per-inode items are its deltas
 * before that summing: correct under any interleaving, at a read cost proportional to the
 * number of inodes with totl xattrs.
 */
import {
  TOTL_FIRST,
  TOTL_LAST,
  decodeTotl,
  encodeTotl,
  totlKey,
  totlKeyName,
  xattrFirst,
  xattrLast,
  type TotlName,
} from './fs-items.js'
import { TOTL_READ, type FsContext, type Tx } from './fs-context.js'
import { taggedXattrItem, totlValue } from './xattr-tags.js'

const sameTotl = (a: TotlName, b: TotlName): boolean => a[0] === b[0] && a[1] === b[1] && a[2] === b[2]

/** Rewrite inode `ino`'s part of total `n` from its xattrs (as they are in this transaction). */
export async function updateTotl(c: FsContext, ino: number, n: TotlName, t: Tx): Promise<void> {
  let total = 0n
  let count = 0
  for await (const it of c.items.range(xattrFirst(ino), xattrLast(ino))) {
    const x = taggedXattrItem(it.key, it.val)
    if (!x?.tags.totl || !sameTotl(x.tags.totl, n)) continue
    total += totlValue(x.name, x.value)
    count++
  }
  if (count) c.items.put(totlKey(n, ino), encodeTotl(BigInt.asUintN(64, total), count), t.seq)
  else c.items.delete(totlKey(n, ino), t.seq)
}

/** Inode `ino` is deleted: it no longer adds to total `n`. */
export function dropTotl(c: FsContext, ino: number, n: TotlName, t: Tx): void {
  c.items.delete(totlKey(n, ino), t.seq)
}

export interface XattrTotal {
  name: TotlName
  total: bigint
  count: number
}

/** Every total, in A.B.C order. */
export function readTotals(c: FsContext): Promise<XattrTotal[]> {
  return c.withLocks([TOTL_READ], async () => {
    const out: XattrTotal[] = []
    for await (const it of c.items.range(TOTL_FIRST, TOTL_LAST)) {
      const n = totlKeyName(it.key)
      const v = decodeTotl(it.val)
      const last = out[out.length - 1]
      if (last && sameTotl(last.name, n)) {
        last.total += v.total
        last.count += v.count
      } else out.push({ name: n, total: v.total, count: v.count })
    }
    return out
  })
}
