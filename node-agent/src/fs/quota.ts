/*
 * Directory quotas: a directory tree with a byte and an inode limit (what a CSI volume's
 * capacity is), enforced on every mount of the cluster.
 *
 * Items (fs-items.ts): every inode of a tree carries a membership item naming the tree's root
 * directory (the root names itself), written when the inode is created, in its own inode
 * group; one record per tree in the QUOTA zone holds the limits and the usage (allocated data
 * bytes, inodes).  The records are guarded by one cluster lock (QUOTA_RANGE): an operation
 * that changes a tree's usage holds it in WRITE (FsContext.op `quota`), so usage is read and
 * updated under the same lock on every mount and is exact cluster-wide; reads (statfs,
 * `scoutfs quota`) take it in READ.
 *
 * Invariants:
 *  - an inode's tree never changes after creation: link and rename refuse to cross trees
 *    (EXDEV, as project quotas do), and a quota is set only on an empty directory outside any
 *    tree (or changed on a tree's root), so a tree looked up before an operation is still the
 *    tree when its locks are held (opInTree checks the tree it assumed under the locks: a
 *    mount's hints may not know yet, and a quota may be set on the still-empty parent of a
 *    create);
 *  - growth past a limit fails with EDQUOT before anything changes; shrinking never fails;
 *    limits may be set below the usage (then only shrinking succeeds);
 *  - usage changes only in a transaction that holds the QUOTA WRITE lock (charge() checks).
 */
import { FsError } from '../util/errors.js'
import { DATA_BLOCK_SIZE } from '../storage/format.js'
import {
  decodeQuota,
  decodeQuotaMember,
  encodeQuota,
  encodeQuotaMember,
  quotaKey,
  quotaMemberKey,
  readdirKey,
  readdirLast,
  type QuotaRecord,
} from './fs-items.js'
import { QUOTA_READ, type FsContext, type Tx } from './fs-context.js'
import { getDir } from './inode.js'

/** The root of the quota tree `ino` is in, 0 for none.  The caller holds `ino`'s lock. */
export async function quotaRootOf(c: FsContext, ino: number): Promise<number> {
  const v = await c.items.get(quotaMemberKey(ino))
  return v ? decodeQuotaMember(v) : 0
}

/** quotaRootOf under `ino`'s READ lock (an inode's tree never changes: see the top). */
export function peekQuotaRoot(c: FsContext, ino: number): Promise<number> {
  return c.reading([ino], () => quotaRootOf(c, ino))
}

const HINTS_MAX = 65536

/** Remember that `ino` is in tree `root` (a hint: opInTree checks it under the locks). */
function hint(c: FsContext, ino: number, root: number): void {
  if (!root) {
    c.quotaHints.delete(ino)
    return
  }
  if (c.quotaHints.size >= HINTS_MAX) c.quotaHints.clear()
  c.quotaHints.set(ino, root)
}

/**
 * Run `fn` in an operation over `inos` (which include `ino`), with the quota lock when `ino`
 * is in a quota tree; `fn` gets that tree's root (0 for none).  The tree is first taken from
 * this mount's hints (none: outside every tree, so an inode outside every tree costs nothing
 * more) and checked under the locks; when it was wrong (an inode of a tree met for the first
 * time here, a quota set meanwhile on `ino`, an empty directory) the operation runs again
 * with the right one.
 */
export async function opInTree<T>(
  c: FsContext,
  ino: number,
  inos: number[],
  fn: (t: Tx, root: number) => Promise<T>,
  o: { orphans?: boolean } = {},
): Promise<T> {
  let root = c.quotaHints.get(ino) ?? 0
  for (;;) {
    const r = await c.op(
      inos,
      async (t) => {
        const now = await quotaRootOf(c, ino)
        if (now !== root) return { again: true as const, now }
        return { again: false as const, v: await fn(t, root) }
      },
      { ...o, quota: root !== 0 },
    )
    if (!r.again) return r.v
    root = r.now
    hint(c, ino, root)
  }
}

/** Make new inode `ino` a member of tree `root` (nothing for 0). */
export function joinTree(c: FsContext, ino: number, root: number, t: Tx): void {
  if (!root) return
  c.items.put(quotaMemberKey(ino), encodeQuotaMember(root), t.seq)
  hint(c, ino, root)
}

async function record(c: FsContext, root: number): Promise<QuotaRecord> {
  const v = await c.items.get(quotaKey(root))
  if (!v) throw new FsError('EIO', `quota tree ${root} has members but no quota record`)
  return decodeQuota(quotaKey(root), v)
}

/**
 * Change tree `root`'s usage by `bytes` and `inodes` (either may be negative).  Growth that
 * would pass a limit fails with EDQUOT and changes nothing.
 */
export async function charge(c: FsContext, t: Tx, root: number, bytes: number, inodes: number): Promise<void> {
  if (!t.quota) throw new FsError('EIO', `quota tree ${root} charged without the quota lock`)
  if (bytes === 0 && inodes === 0) return
  const q = await record(c, root)
  checkRoom(q, bytes, inodes)
  q.usedBytes = Math.max(0, q.usedBytes + bytes)
  q.usedInodes = Math.max(0, q.usedInodes + inodes)
  c.items.put(quotaKey(root), encodeQuota(q), t.seq)
}

/** EDQUOT unless `bytes` and `inodes` more fit in tree `root`, without charging them. */
export async function reserve(c: FsContext, t: Tx, root: number, bytes: number, inodes: number): Promise<void> {
  if (!t.quota) throw new FsError('EIO', `quota tree ${root} checked without the quota lock`)
  checkRoom(await record(c, root), bytes, inodes)
}

function checkRoom(q: QuotaRecord, bytes: number, inodes: number): void {
  if (bytes > 0 && q.usedBytes + bytes > q.limitBytes)
    throw new FsError(
      'EDQUOT',
      `quota of directory ${q.root} exceeded: ${q.usedBytes} + ${bytes} bytes > limit ${q.limitBytes}`,
    )
  if (inodes > 0 && q.usedInodes + inodes > q.limitInodes)
    throw new FsError(
      'EDQUOT',
      `quota of directory ${q.root} exceeded: ${q.usedInodes} + ${inodes} inodes > limit ${q.limitInodes}`,
    )
}

/** A deleted inode leaves its tree: its blocks and itself; a deleted root drops the record. */
export async function leaveTree(c: FsContext, t: Tx, ino: number, root: number, onlineBlocks: number): Promise<void> {
  if (root === ino) {
    if (!t.quota) throw new FsError('EIO', `quota tree ${root} removed without the quota lock`)
    c.items.delete(quotaKey(root), t.seq)
    return
  }
  await charge(c, t, root, -onlineBlocks * DATA_BLOCK_SIZE, -1)
}

/** Whether moving inode `ino` of tree `from` under a directory of tree `to` keeps usage exact. */
export function checkSameTree(ino: number, from: number, to: number): void {
  if (from === to || (from === ino && to === 0)) return
  throw new FsError('EXDEV', `inode ${ino} and the target directory are in different quota trees`)
}

export interface QuotaLimits {
  bytes: number
  inodes: number
}

/**
 * Set the limits of the tree rooted at directory `ino`: an empty directory outside any tree
 * becomes a root (its usage: itself), a root gets new limits (raised or lowered online).
 */
export function setQuota(c: FsContext, ino: number, limits: QuotaLimits): Promise<QuotaRecord> {
  for (const [what, v] of Object.entries(limits))
    if (!Number.isSafeInteger(v) || v < 0) throw new FsError('EINVAL', `quota ${what} limit ${v} is not a count`)
  return c.op(
    [ino],
    async (t) => {
      await getDir(c, ino)
      const root = await quotaRootOf(c, ino)
      let q: QuotaRecord
      if (root === ino) {
        q = { ...(await record(c, ino)), limitBytes: limits.bytes, limitInodes: limits.inodes }
      } else {
        if (root !== 0)
          throw new FsError('EINVAL', `directory ${ino} is inside the quota tree of ${root}: quotas do not nest`)
        if (await c.items.next(readdirKey(ino, 0), readdirLast(ino)))
          throw new FsError('ENOTEMPTY', `directory ${ino} is not empty: set a quota on a new, empty directory`)
        q = { root: ino, limitBytes: limits.bytes, limitInodes: limits.inodes, usedBytes: 0, usedInodes: 1 }
        joinTree(c, ino, ino, t)
      }
      c.items.put(quotaKey(ino), encodeQuota(q), t.seq)
      return q
    },
    { quota: true },
  )
}

/** The quota of the tree `ino` is in, undefined for none. */
export async function getQuota(c: FsContext, ino: number): Promise<QuotaRecord | undefined> {
  const root = await peekQuotaRoot(c, ino)
  if (!root) return undefined
  return c.withLocks([QUOTA_READ], () => record(c, root))
}
