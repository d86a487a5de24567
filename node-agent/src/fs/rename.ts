/*
 * Renames (the rename half of the original's dir.c).
 *
 * Cross-directory renames take the global rename lock first (DESIGN §8): locally, so one
 * runs at a time on this mount, and in the cluster, so none runs anywhere else; while it is
 * held no directory's ancestry changes, so the check that a directory is not moved below
 * itself stays true until the move.  Both names are looked up under READ, then every inode
 * involved is locked and the entries checked again, retrying if either moved meanwhile.
 *
 * renameat2 flags: RENAME_NOREPLACE fails with EEXIST when the target exists (checked under
 * the locks, so no other mount creates it between the check and the move); RENAME_EXCHANGE
 * swaps two existing names atomically (ENOENT when either is missing; each directory moved
 * is checked not to go below itself; a directory's link count follows the subdirectories it
 * gains and loses); RENAME_WHITEOUT is not supported (EINVAL), nor are both flags at once.
 */
import { FsError } from '../util/errors.js'
import { DT, ROOT_INO } from './fs-api.js'
import { nowTs, type Dirent } from './fs-items.js'
import { RENAME_WRITE, type FsContext, type Tx } from './fs-context.js'
import { getDir, getInode, isDir, putInode } from './inode.js'
import { dropInode } from './orphan.js'
import { checkSameTree, quotaRootOf } from './quota.js'
import { RENAME_EXCHANGE, RENAME_NOREPLACE, type FsName } from './fs-api.js'
import { addDirent, checkName, findDirent, isEmptyDir, lookupName, parentOf, removeDirent } from './dir.js'

export async function rename(
  c: FsContext,
  parent: number,
  name: FsName,
  newParent: number,
  newName: FsName,
  flags = 0,
): Promise<void> {
  if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE))
    throw new FsError('EINVAL', `rename flags ${flags}: only RENAME_NOREPLACE and RENAME_EXCHANGE are supported`)
  if (flags & RENAME_NOREPLACE && flags & RENAME_EXCHANGE)
    throw new FsError('EINVAL', 'RENAME_NOREPLACE and RENAME_EXCHANGE exclude each other')
  const mode: RenameMode = flags & RENAME_EXCHANGE ? 'exchange' : flags & RENAME_NOREPLACE ? 'noreplace' : 'replace'
  const nn = checkName(newName)
  const on = lookupName(name)
  if (parent === newParent) return renameEntries(c, parent, on, newParent, nn, mode)
  const prev = c.renameLock
  let releaseLocal!: () => void
  c.renameLock = new Promise<void>((res) => (releaseLocal = res))
  await prev
  try {
    await c.withLocks([RENAME_WRITE], () => renameEntries(c, parent, on, newParent, nn, mode))
  } finally {
    releaseLocal()
  }
}

type RenameMode = 'replace' | 'noreplace' | 'exchange'

async function renameEntries(
  c: FsContext,
  parent: number,
  on: Buffer,
  newParent: number,
  nn: Buffer,
  mode: RenameMode,
): Promise<void> {
  for (;;) {
    const found = await c.reading([parent, newParent], async () => {
      await getDir(c, parent)
      await getDir(c, newParent)
      return {
        src: await findDirent(c, parent, on),
        dst: await findDirent(c, newParent, nn),
        tree: await quotaRootOf(c, newParent),
      }
    })
    const { src, dst, tree } = found
    if (!src) throw new FsError('ENOENT', `no entry '${on.toString()}' in directory ${parent}`)
    if (!dst && mode === 'exchange')
      throw new FsError('ENOENT', `no entry '${nn.toString()}' in directory ${newParent}`)
    if (src.type === DT.DIR && parent !== newParent) await checkNotUnder(c, src.ino, newParent)
    if (dst?.type === DT.DIR && parent !== newParent && mode === 'exchange') await checkNotUnder(c, dst.ino, parent)
    const r = await c.op(
      [parent, newParent, src.ino, ...(dst ? [dst.ino] : [])],
      async (t) => {
        const s = await findDirent(c, parent, on)
        const d = await findDirent(c, newParent, nn)
        if (!s || s.ino !== src.ino || (d?.ino ?? 0) !== (dst?.ino ?? 0)) return false
        if (d && mode === 'noreplace')
          throw new FsError('EEXIST', `'${nn.toString()}' exists in directory ${newParent}`)
        if (mode === 'exchange') await exchangeLocked(c, t, parent, s, on, newParent, d!, nn)
        else await renameLocked(c, t, parent, s, newParent, nn, d)
        return true
      },
      // a replaced target leaves its tree: the new parent's, or its own when it is a root
      { orphans: mode !== 'exchange', quota: tree !== 0 || dst?.type === DT.DIR },
    )
    if (r) return
  }
}

/**
 * Moving directory `dir` into `target` would cut it off from the tree if `target` is `dir`
 * or below it.  Walks up from `target` under each ancestor's READ lock, one at a time; the
 * caller holds the rename lock, so no ancestry changes meanwhile.
 */
async function checkNotUnder(c: FsContext, dir: number, target: number): Promise<void> {
  for (let a = target; ;) {
    if (a === dir) throw new FsError('EINVAL', 'cannot move a directory into itself')
    if (a === ROOT_INO) return
    const cur = a
    a = await c.reading([cur], () => parentOf(c, cur))
  }
}

/** swap the inodes of names `on` in p1 (s) and `nn` in p2 (d), both present */
async function exchangeLocked(
  c: FsContext,
  t: Tx,
  p1: number,
  s: Dirent,
  on: Buffer,
  p2: number,
  d: Dirent,
  nn: Buffer,
): Promise<void> {
  if (d.ino === s.ino) return // two links to one inode: swapping changes nothing
  checkSameTree(s.ino, await quotaRootOf(c, s.ino), await quotaRootOf(c, p2))
  checkSameTree(d.ino, await quotaRootOf(c, d.ino), await quotaRootOf(c, p1))
  const a = await getInode(c, s.ino)
  const b = await getInode(c, d.ino)
  const d1 = await getDir(c, p1)
  const d2 = p1 === p2 ? d1 : await getDir(c, p2)
  const now = nowTs()
  removeDirent(c, p1, s, t)
  removeDirent(c, p2, d, t)
  addDirent(c, d2, nn, a, t)
  addDirent(c, d1, on, b, t)
  if (p1 !== p2 && isDir(a) !== isDir(b)) {
    // the directory among the two changes parent: so do both parents' subdirectory counts
    const gains = isDir(a) ? d2 : d1
    const loses = isDir(a) ? d1 : d2
    gains.nlink++
    loses.nlink--
  }
  d1.mtime = d1.ctime = now
  d2.mtime = d2.ctime = now
  a.ctime = b.ctime = now
  putInode(c, d1, t)
  if (d2 !== d1) putInode(c, d2, t)
  putInode(c, a, t)
  putInode(c, b, t)
}

async function renameLocked(
  c: FsContext,
  t: Tx,
  p1: number,
  s: Dirent,
  p2: number,
  nn: Buffer,
  dst: Dirent | undefined,
): Promise<void> {
  if (dst && dst.ino === s.ino) return // both names are links to one inode: nothing to do
  checkSameTree(s.ino, await quotaRootOf(c, s.ino), await quotaRootOf(c, p2))
  const src = await getInode(c, s.ino)
  const d1 = await getDir(c, p1)
  const d2 = p1 === p2 ? d1 : await getDir(c, p2)
  const now = nowTs()
  if (dst) {
    const tgt = await getInode(c, dst.ino)
    if (isDir(tgt)) {
      if (!isDir(src)) throw new FsError('EISDIR', `'${nn.toString()}' is a directory`)
      if (!(await isEmptyDir(c, tgt.ino))) throw new FsError('ENOTEMPTY', `directory '${nn.toString()}' is not empty`)
    } else if (isDir(src)) {
      throw new FsError('ENOTDIR', `'${nn.toString()}' is not a directory`)
    }
    removeDirent(c, p2, dst, t)
    if (isDir(tgt)) {
      d2.nlink--
      tgt.nlink = 0
    } else {
      tgt.nlink--
    }
    tgt.ctime = now
    if (tgt.nlink === 0) await dropInode(c, tgt, t)
    else putInode(c, tgt, t)
  }
  removeDirent(c, p1, s, t)
  addDirent(c, d2, nn, src, t)
  if (isDir(src) && p1 !== p2) {
    d1.nlink--
    d2.nlink++
  }
  d1.mtime = d1.ctime = now
  d2.mtime = d2.ctime = now
  src.ctime = now
  putInode(c, d1, t)
  if (d2 !== d1) putInode(c, d2, t)
  putInode(c, src, t)
}
