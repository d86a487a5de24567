/*
 * Open files, orphans and inode deletion (the original's orphan handling in inode.c).
 *
 * Unlinked inodes that are still open on this mount stay as orphans (an orphan item names
 * the mount) and are deleted at their last release, or by the orphan scan of the next mount
 * that starts after this one is gone.  Opens on other mounts are not known here (no open map
 * yet): an inode unlinked here while open elsewhere is deleted at once.  Deleting an inode
 * removes all its items, its seq index items and its orphan item, and frees its online data
 * blocks into the transaction's data_freed tree.
 */
import {
  EXTENT_OFFLINE,
  ORPHAN_FIRST,
  ORPHAN_LAST,
  dataSeqKey,
  decodeExtent,
  decodeOrphan,
  encodeOrphan,
  inodeFirstKey,
  inodeLastKey,
  isExtentKey,
  metaSeqKey,
  orphanKey,
  orphanKeyIno,
  type Inode,
} from './fs-items.js'
import { ORPHAN_READ, type FsContext, type Tx } from './fs-context.js'
import { getInode, putInode, readInode } from './inode.js'

/** nlink reached 0: delete now, or keep as an orphan while it is open. */
export async function dropInode(c: FsContext, i: Inode, t: Tx): Promise<void> {
  if ((c.opens.get(i.ino) ?? 0) > 0) {
    c.items.put(orphanKey(i.ino), encodeOrphan(c.rid), t.seq)
    putInode(c, i, t)
    return
  }
  await deleteInode(c, i, t)
}

/** Remove every item of an inode and free its data. */
async function deleteInode(c: FsContext, i: Inode, t: Tx): Promise<void> {
  const keys: Buffer[] = []
  for await (const it of c.items.range(inodeFirstKey(i.ino), inodeLastKey(i.ino))) {
    keys.push(it.key)
    if (isExtentKey(it.key)) {
      const e = decodeExtent(it.key, it.val)
      if (!(e.flags & EXTENT_OFFLINE)) await c.trans.freeData(e.blkno, e.len)
    }
  }
  for (const k of keys) c.items.delete(k, t.seq)
  if (i.metaSeq) c.items.delete(metaSeqKey(i.metaSeq, i.ino), t.seq)
  if (i.dataSeq) c.items.delete(dataSeqKey(i.dataSeq, i.ino), t.seq)
  c.items.delete(orphanKey(i.ino), t.seq)
  c.counters.inodesDeleted++
  c.trans.inodesDeleted++
}

export async function open(c: FsContext, ino: number): Promise<void> {
  await c.reading([ino], () => getInode(c, ino))
  c.opens.set(ino, (c.opens.get(ino) ?? 0) + 1)
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
  await c.op(
    [ino],
    async (t) => {
      if (c.opens.has(ino)) return // reopened meanwhile
      const i = await readInode(c, ino)
      if (i && i.nlink === 0) await deleteInode(c, i, t)
    },
    { orphans: true },
  )
}

/**
 * Delete the orphans of mounts that are gone (their files were open when they ended).  An
 * orphan records the mount that holds it open; those of `liveRids` are left alone.
 */
export async function deleteOrphans(c: FsContext, liveRids: readonly number[]): Promise<number> {
  const live = new Set(liveRids)
  const inos = await c.withLocks([ORPHAN_READ], async () => {
    const out: number[] = []
    for await (const it of c.items.range(ORPHAN_FIRST, ORPHAN_LAST)) {
      const owner = decodeOrphan(it.val)
      if (owner === c.rid || !live.has(owner)) out.push(orphanKeyIno(it.key))
    }
    return out
  })
  let n = 0
  for (const ino of inos) {
    if (c.opens.has(ino)) continue
    await c.op(
      [ino],
      async (t) => {
        const i = await readInode(c, ino)
        if (i && i.nlink === 0) {
          await deleteInode(c, i, t)
          n++
        } else c.items.delete(orphanKey(ino), t.seq)
      },
      { orphans: true },
    )
  }
  c.counters.orphansDeleted += n
  return n
}
