/*
 * Open files, orphans and inode deletion (the original's orphan handling in inode.c, with
 * its open map, DESIGN §7).
 *
 * An inode whose nlink reaches 0 is deleted only when no mount has it open: this mount's open
 * counts (FsContext.opens) and the open map, which asks every other mount through the server
 * (ServerApi.openInodes; an unanswered ask counts as open).  Until then it stays as an orphan:
 * the inode with nlink 0 and an orphan item (naming the mount that orphaned it, for the
 * record only); no directory lists it, since its entries are gone, and it stays fully usable
 * through the descriptors open on any mount.  The check runs, and the deletion is done,
 * holding the inode group's WRITE cluster lock: a new open needs the group's lock to look a
 * name up (the name is gone) or to read the inode, and an open is counted before that lock
 * is released, so no open can slip in between the check and the deletion.
 *
 * Who deletes: the last release on any mount (each re-checks the open map), and the orphan
 * scan (deleteOrphans: at mount start and periodically), which deletes every orphan with
 * nlink 0 that no mount has open, whichever mount it names: the orphans of a mount that died
 * with files open are freed once the server has reclaimed it.
 *
 * Deleting an inode removes all its items, its seq index items, its orphan item and the srch
 * and totl items of its tagged xattrs, and frees its online data blocks into the transaction's data_freed tree.
 */
import {
  EXTENT_OFFLINE,
  ORPHAN_FIRST,
  ORPHAN_LAST,
  dataSeqKey,
  decodeExtent,
  encodeOrphan,
  inodeFirstKey,
  inodeLastKey,
  isExtentKey,
  isQuotaMemberKey,
  decodeQuotaMember,
  isXattrKey,
  metaSeqKey,
  orphanKey,
  orphanKeyIno,
  type Inode,
} from './fs-items.js'
import { ORPHAN_READ, type FsContext, type Tx } from './fs-context.js'
import type { OpenInfo } from './fs-api.js'
import { getInode, putInode, readInode } from './inode.js'
import { openMapGroup } from '../protocol/open-map.js'
import { isFsError } from '../util/errors.js'
import { leaveTree, peekQuotaRoot } from './quota.js'
import { taggedXattrItem } from './xattr-tags.js'
import { srchDelete } from './srch.js'
import { dropTotl } from './totl.js'

/** A deleted inode's tagged xattr no longer has srch or totl items. */
function dropXattrTags(c: FsContext, ino: number, key: Buffer, val: Buffer, t: Tx): void {
  const x = taggedXattrItem(key, val)
  if (x?.tags.srch) srchDelete(c, ino, x.name, x.id, t)
  if (x?.tags.totl) dropTotl(c, ino, x.tags.totl, t)
}

/**
 * Whether another mount has `ino` open (the open map).  An ask that fails (a mount did not
 * answer, the server is away) counts as open: the inode stays an orphan and a later release
 * or orphan scan asks again.  A server from before the open map (ENOSYS) knows of no opens
 * elsewhere: the inode goes as it did then.
 */
async function openElsewhere(c: FsContext, ino: number): Promise<boolean> {
  try {
    return (await c.server.openInodes(c.rid, openMapGroup(ino))).includes(ino)
  } catch (e) {
    if (isFsError(e, 'ENOSYS')) return false
    if (isFsError(e)) return true
    throw e
  }
}

/** This mount's open inodes of inode group `group` (its answer to the open map). */
export function openInodes(c: FsContext, group: number): number[] {
  const out: number[] = []
  for (const [ino, n] of c.opens) if (n > 0 && openMapGroup(ino) === group) out.push(ino)
  return out
}

/**
 * nlink reached 0: delete now, or keep as an orphan while it is open here or elsewhere.  The
 * caller holds the inode group's WRITE lock and the orphan zone's WRITE_ONLY lock.
 */
export async function dropInode(c: FsContext, i: Inode, t: Tx): Promise<void> {
  if ((c.opens.get(i.ino) ?? 0) > 0 || (await openElsewhere(c, i.ino))) {
    c.items.put(orphanKey(i.ino), encodeOrphan(c.rid), t.seq)
    putInode(c, i, t)
    return
  }
  await deleteInode(c, i, t)
}

/** Remove every item of an inode and free its data. */
async function deleteInode(c: FsContext, i: Inode, t: Tx): Promise<void> {
  const keys: Buffer[] = []
  let tree = 0
  for await (const it of c.items.range(inodeFirstKey(i.ino), inodeLastKey(i.ino))) {
    keys.push(it.key)
    if (isQuotaMemberKey(it.key)) tree = decodeQuotaMember(it.val)
    if (isExtentKey(it.key)) {
      const e = decodeExtent(it.key, it.val)
      if (!(e.flags & EXTENT_OFFLINE)) await c.trans.freeData(e.blkno, e.len)
    } else if (isXattrKey(it.key)) dropXattrTags(c, i.ino, it.key, it.val, t)
  }
  if (tree) await leaveTree(c, t, i.ino, tree, i.onlineBlocks)
  for (const k of keys) c.items.delete(k, t.seq)
  if (i.metaSeq) c.items.delete(metaSeqKey(i.metaSeq, i.ino), t.seq)
  if (i.dataSeq) c.items.delete(dataSeqKey(i.dataSeq, i.ino), t.seq)
  c.items.delete(orphanKey(i.ino), t.seq)
  c.counters.inodesDeleted++
  c.trans.inodesDeleted++
}

export async function open(c: FsContext, ino: number): Promise<OpenInfo> {
  // counted before the group's lock is released: a deleter that gets the lock next sees it
  return c.reading([ino], async () => {
    const i = await getInode(c, ino)
    c.opens.set(ino, (c.opens.get(ino) ?? 0) + 1)
    return { offline: i.offlineBlocks > 0 }
  })
}

export async function release(c: FsContext, ino: number): Promise<void> {
  const n = (c.opens.get(ino) ?? 0) - 1
  if (n > 0) {
    c.opens.set(ino, n)
    return
  }
  c.opens.delete(ino)
  // most closes delete nothing: look under READ first, so closing a file another mount
  // writes does not take its lock away
  const orphaned = await c.reading([ino], async () => (await readInode(c, ino))?.nlink === 0)
  if (!orphaned) return
  await deleteIfUnused(c, ino)
}

/**
 * Under the inode group's WRITE lock: delete inode `ino` if it has nlink 0 and no mount has it
 * open; drop a stale orphan item (the inode is gone, or linked again).  Whether it was deleted.
 */
async function deleteIfUnused(c: FsContext, ino: number): Promise<boolean> {
  const tree = await peekQuotaRoot(c, ino)
  return c.op(
    [ino],
    async (t) => {
      if (c.opens.has(ino)) return false // reopened meanwhile
      const i = await readInode(c, ino)
      if (!i || i.nlink !== 0) {
        c.items.delete(orphanKey(ino), t.seq)
        return false
      }
      if (await openElsewhere(c, ino)) return false // the last release there deletes it
      await deleteInode(c, i, t)
      return true
    },
    { orphans: true, quota: tree !== 0 },
  )
}

/**
 * The orphan scan: delete every orphan (whichever mount it names) that has nlink 0 and is
 * open on no mount; returns how many were deleted.  The orphan zone is read only here.  An
 * orphan the open map shows open elsewhere is skipped without taking its group's WRITE lock
 * (the release there deletes it), so a periodic scan does not pull locks from busy mounts.
 */
export async function deleteOrphans(c: FsContext): Promise<number> {
  const inos = await c.withLocks([ORPHAN_READ], async () => {
    const out: number[] = []
    for await (const it of c.items.range(ORPHAN_FIRST, ORPHAN_LAST)) out.push(orphanKeyIno(it.key))
    return out
  })
  let n = 0
  const openByGroup = new Map<number, Set<number> | undefined>()
  for (const ino of inos) {
    if (c.opens.has(ino)) continue
    const g = openMapGroup(ino)
    if (!openByGroup.has(g)) {
      const open = await c.server.openInodes(c.rid, g).then(
        (r) => new Set(r),
        (e: unknown) => {
          if (isFsError(e)) return undefined // unknown: ask again under the lock
          throw e
        },
      )
      openByGroup.set(g, open)
    }
    if (openByGroup.get(g)?.has(ino)) continue
    if (await deleteIfUnused(c, ino)) n++
  }
  c.counters.orphansDeleted += n
  return n
}
