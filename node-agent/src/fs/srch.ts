/*
 * Searchable xattrs (the original's srch.c): every `scoutfs.srch.` xattr has a srch item,
 * (FNV-1a 64 of its name, ino, xattr id), in the SRCH zone, so `search-xattrs NAME` lists the
 * inodes that carry NAME without walking the namespace.
 *
 * The items are written under the zone's WRITE_ONLY lock, which every mount holds at once (no
 * mount reads them while writing), and merge through the log trees like every other item; a
 * search takes the zone's READ lock, which makes every mount commit what it wrote first, so a
 * search sees every set and remove that completed before it, on any mount.  A set writes the
 * new id's item and deletes the old one's in the same transaction as the xattr; deleting the
 * inode deletes them with it.  Unlike the original's sorted log files the items are plain
 * btree items (a create and its delete cancel in the merge).  As in the original, a search
 * returns candidates: two names with one hash both match (FNV-1a 64: rare).
 */
import { FsError } from '../util/errors.js'
import { srchHash, srchHashLast, srchKey, srchKeyIno } from './fs-items.js'
import { SRCH_READ, type FsContext, type Tx } from './fs-context.js'
import { xattrTags } from './xattr-tags.js'

const EMPTY = Buffer.alloc(0)

/** the srch item of xattr `id` named `name` of inode `ino` */
const itemKey = (name: string, ino: number, id: number): Buffer => srchKey(srchHash(Buffer.from(name, 'utf8')), ino, id)

export function srchAdd(c: FsContext, ino: number, name: string, id: number, t: Tx): void {
  c.items.put(itemKey(name, ino, id), EMPTY, t.seq)
}

export function srchDelete(c: FsContext, ino: number, name: string, id: number, t: Tx): void {
  c.items.delete(itemKey(name, ino, id), t.seq)
}

/** The inodes from `firstIno` on that may carry xattr `name`, in order, at most `max`. */
export function searchXattrs(c: FsContext, name: string, firstIno: number, max: number): Promise<number[]> {
  if (!xattrTags(name).srch)
    throw new FsError('EINVAL', `'${name}' is not a searchable xattr name: it needs the scoutfs.srch. tag`)
  const h = srchHash(Buffer.from(name, 'utf8'))
  return c.withLocks([SRCH_READ], async () => {
    const out: number[] = []
    for await (const it of c.items.range(srchKey(h, firstIno, 0), srchHashLast(h))) {
      const ino = srchKeyIno(it.key)
      if (out[out.length - 1] !== ino) out.push(ino) // two ids of one inode: listed once
      if (out.length >= max) break
    }
    return out
  })
}
