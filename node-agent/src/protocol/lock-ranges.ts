/*
 * Every cluster lock range, and the mapping from an item key to the lock range that guards it
 * (DESIGN §8).  The item cache clips its coverage to these ranges, the filesystem asks for
 * them, the mount maps an invalidated range back to inodes: all of them use this module.
 *
 * Invariants:
 *  - every key lies in exactly one range, and lockRange() returns the same range for every
 *    key in it (an inode group in the FS zone, the whole zone elsewhere), so coverage clipped
 *    to a range never spans two locks;
 *  - inode groups are INODE_GROUP consecutive inode numbers starting on a multiple of it, so
 *    inode order and group-key order agree (the lock order relies on it);
 *  - the rename lock is one key in the LOCK zone, which holds no items.
 */
import { INODE_GROUP, KEY_SIZE, KeyType, Zone, makeKey } from '../storage/format.js'
import type { LockRange } from './lock-modes.js'

/** The inode number of an FS-zone key (its `first` field). */
function fsKeyIno(key: Buffer): number {
  return key.readUInt32BE(1) * 0x100000000 + key.readUInt32BE(5)
}

/** The lock range holding `key`: an inode group in the fs zone, else the whole zone. */
export function lockRange(key: Buffer): [Buffer, Buffer] {
  const lo = Buffer.alloc(KEY_SIZE, 0)
  const hi = Buffer.alloc(KEY_SIZE, 0xff)
  lo[0] = key[0]!
  hi[0] = key[0]!
  if (key[0] === Zone.FS) {
    const hiWord = key.readUInt32BE(1)
    const loWord = key.readUInt32BE(5)
    const base = loWord - (loWord % INODE_GROUP)
    lo.writeUInt32BE(hiWord, 1)
    lo.writeUInt32BE(base, 5)
    hi.writeUInt32BE(hiWord, 1)
    hi.writeUInt32BE(base + INODE_GROUP - 1, 5)
  }
  return [lo, hi]
}

/** group ranges kept (every operation asks for one or more: each is made once) */
const GROUP_RANGES_MAX = 4096
const groupRanges = new Map<number, LockRange>()

/**
 * The range of the inode group holding inode `ino` (all its items).  The same range is given
 * to every caller asking for the group: never change its buffers.
 */
export function inodeGroupRange(ino: number): LockRange {
  const group = Math.floor(ino / INODE_GROUP)
  let r = groupRanges.get(group)
  if (!r) {
    if (groupRanges.size >= GROUP_RANGES_MAX) groupRanges.clear()
    r = lockRange(makeKey(Zone.FS, ino, KeyType.INODE))
    groupRanges.set(group, r)
  }
  return r
}

/** The inode numbers [first, last] of an inode-group range; undefined for other ranges. */
export function lockRangeInodes(r: LockRange): [number, number] | undefined {
  return r[0][0] === Zone.FS ? [fsKeyIno(r[0]), fsKeyIno(r[1])] : undefined
}

/** The seq indexes (meta_seq and data_seq items of every inode): one range. */
export const SEQ_INDEX_RANGE: LockRange = Object.freeze(lockRange(makeKey(Zone.INODE_INDEX)))

/** The orphan items of every mount: one range. */
export const ORPHAN_RANGE: LockRange = Object.freeze(lockRange(makeKey(Zone.ORPHAN)))

/** The directory quota records (limits and usage of every quota tree): one range. */
export const QUOTA_RANGE: LockRange = Object.freeze(lockRange(makeKey(Zone.QUOTA)))

/** The searchable-xattr (srch) items of every inode: one range. */
export const SRCH_RANGE: LockRange = Object.freeze(lockRange(makeKey(Zone.SRCH)))

/** The xattr-total (totl) items of every inode: one range. */
export const XATTR_TOTL_RANGE: LockRange = Object.freeze(lockRange(makeKey(Zone.XATTR_TOTL)))

/* the lock zone's types (the original's SCOUTFS_RENAME_TYPE) */
export const LOCK_ZONE_RENAME_TYPE = 4
const RENAME_KEY = makeKey(Zone.LOCK, 0, LOCK_ZONE_RENAME_TYPE)
/** The global rename lock: one key, taken WRITE by cross-directory renames only. */
export const RENAME_LOCK_RANGE: LockRange = Object.freeze([RENAME_KEY, RENAME_KEY] as const)
