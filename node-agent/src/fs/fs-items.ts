/*
 * The items that make up files and directories, and their keys (DESIGN §5).
 *
 * Per inode (zone FS, first = ino): the inode; xattr parts; directory entries three times
 * (DIRENT by name hash for lookup, READDIR by position for iteration, LINK_BACKREF under the
 * target inode for path resolution), each with the full entry; symlink target parts; data
 * extents keyed by first file block.  Seq index items (zone INODE_INDEX) have no value;
 * orphan items (zone ORPHAN) hold the mount that keeps the inode open.
 *
 * Every item's encoding, and every decoding of a key's fields, is here: the subsystems
 * (inode.ts, dir.ts, xattr.ts, extents.ts, orphan.ts) never read item bytes themselves.
 */
import { crc32c } from '@node-rs/crc32'
import { FsError } from '../util/errors.js'
import { KEY_SIZE, KeyType, Zone, makeKey, readU64, writeU64 } from '../storage/format.js'
import { S_IFDIR, S_IFMT } from './fs-api.js'

const U53 = 0x1fffffffffffff

/* ---- inode ---------------------------------------------------------------------------- */

export interface Timespec {
  sec: number
  nsec: number
}

export interface Inode {
  ino: number
  size: number
  metaSeq: number
  dataSeq: number
  dataVersion: number
  onlineBlocks: number
  offlineBlocks: number
  nextReaddirPos: number
  nextXattrId: number
  nlink: number
  uid: number
  gid: number
  mode: number
  rdev: number
  flags: number
  atime: Timespec
  ctime: Timespec
  mtime: Timespec
  crtime: Timespec
}

/** A new inode: empty, one link (two for a directory), all times `now`. */
export function newInode(ino: number, mode: number, uid: number, gid: number, now: Timespec): Inode {
  return {
    ino,
    size: 0,
    metaSeq: 0,
    dataSeq: 0,
    dataVersion: 0,
    onlineBlocks: 0,
    offlineBlocks: 0,
    nextReaddirPos: 2,
    nextXattrId: 1,
    nlink: (mode & S_IFMT) === S_IFDIR ? 2 : 1,
    uid,
    gid,
    mode,
    rdev: 0,
    flags: 0,
    atime: now,
    ctime: now,
    mtime: now,
    crtime: now,
  }
}

export const INODE_SIZE = 8 * 8 + 6 * 4 + 4 * 12

export function encodeInode(i: Inode): Buffer {
  const b = Buffer.alloc(INODE_SIZE)
  let o = 0
  for (const v of [
    i.size,
    i.metaSeq,
    i.dataSeq,
    i.dataVersion,
    i.onlineBlocks,
    i.offlineBlocks,
    i.nextReaddirPos,
    i.nextXattrId,
  ]) {
    writeU64(b, o, v)
    o += 8
  }
  for (const v of [i.nlink, i.uid, i.gid, i.mode, i.rdev, i.flags]) {
    b.writeUInt32LE(v >>> 0, o)
    o += 4
  }
  for (const t of [i.atime, i.ctime, i.mtime, i.crtime]) {
    writeU64(b, o, t.sec)
    b.writeUInt32LE(t.nsec, o + 8)
    o += 12
  }
  return b
}

export function decodeInode(ino: number, b: Buffer): Inode {
  if (b.length !== INODE_SIZE) throw new FsError('EIO', `inode ${ino} item is corrupt: ${b.length} bytes`)
  let o = 0
  const u64 = (): number => {
    const v = readU64(b, o)
    o += 8
    return v
  }
  const u32 = (): number => {
    const v = b.readUInt32LE(o)
    o += 4
    return v
  }
  const ts = (): Timespec => {
    const t = { sec: readU64(b, o), nsec: b.readUInt32LE(o + 8) }
    o += 12
    return t
  }
  return {
    ino,
    size: u64(),
    metaSeq: u64(),
    dataSeq: u64(),
    dataVersion: u64(),
    onlineBlocks: u64(),
    offlineBlocks: u64(),
    nextReaddirPos: u64(),
    nextXattrId: u64(),
    nlink: u32(),
    uid: u32(),
    gid: u32(),
    mode: u32(),
    rdev: u32(),
    flags: u32(),
    atime: ts(),
    ctime: ts(),
    mtime: ts(),
    crtime: ts(),
  }
}

export function nowTs(): Timespec {
  const ns = process.hrtime.bigint() // monotonic: only for nsec jitter
  const ms = Date.now()
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 + Number(ns % 1000000n) }
}

export function tsToMs(t: Timespec): number {
  return t.sec * 1000 + Math.floor(t.nsec / 1e6)
}

export function msToTs(ms: number): Timespec {
  const sec = Math.floor(ms / 1000)
  return { sec, nsec: Math.round((ms - sec * 1000) * 1e6) }
}

export const inodeKey = (ino: number): Buffer => makeKey(Zone.FS, ino, KeyType.INODE)

/** every item of an inode lies in [first, last] */
export const inodeFirstKey = (ino: number): Buffer => makeKey(Zone.FS, ino, 0)
export const inodeLastKey = (ino: number): Buffer => makeKey(Zone.FS, ino, 0xff, U53, U53, U53)

/* ---- seq indexes and orphans ----------------------------------------------------------- */

export const metaSeqKey = (seq: number, ino: number): Buffer => makeKey(Zone.INODE_INDEX, 0, KeyType.META_SEQ, seq, ino)
export const dataSeqKey = (seq: number, ino: number): Buffer => makeKey(Zone.INODE_INDEX, 0, KeyType.DATA_SEQ, seq, ino)
export const orphanKey = (ino: number): Buffer => makeKey(Zone.ORPHAN, 0, KeyType.ORPHAN, ino)
export const ORPHAN_FIRST = makeKey(Zone.ORPHAN, 0, KeyType.ORPHAN, 0)
export const ORPHAN_LAST = makeKey(Zone.ORPHAN, 0, KeyType.ORPHAN, U53, U53, U53)

/** the `second` field of a key (a safe integer) */
const keySecond = (k: Buffer): number => k.readUInt32BE(10) * 0x100000000 + k.readUInt32BE(14)

/** The (seq, ino) a meta_seq or data_seq key names. */
export function decodeSeqKey(k: Buffer): { seq: number; ino: number } {
  return { seq: keySecond(k), ino: k.readUInt32BE(18) * 0x100000000 + k.readUInt32BE(22) }
}

/** The inode an orphan key names. */
export const orphanKeyIno = keySecond

/** An orphan item's value: the mount holding the unlinked inode open. */
export function encodeOrphan(rid: number): Buffer {
  const b = Buffer.alloc(8)
  b.writeBigUInt64BE(BigInt(rid))
  return b
}

/** The mount an orphan item names (0 if the value is too short to name one). */
export function decodeOrphan(v: Buffer): number {
  return v.length >= 8 ? Number(v.readBigUInt64BE(0)) : 0
}

/* ---- directory entries ----------------------------------------------------------------- */

export interface Dirent {
  ino: number
  hash: bigint
  pos: number
  type: number
  name: Buffer
}

export const NAME_MAX = 255

/** 64-bit name hash: two differently seeded crc32c halves. */
export function nameHash(name: Buffer): bigint {
  return (BigInt(crc32c(name)) << 32n) | BigInt(crc32c(name, 0x5c0f5c0f))
}

export function encodeDirent(d: Dirent): Buffer {
  const b = Buffer.alloc(25 + d.name.length)
  writeU64(b, 0, d.ino)
  b.writeBigUInt64LE(d.hash, 8)
  writeU64(b, 16, d.pos)
  b.writeUInt8(d.type, 24)
  d.name.copy(b, 25)
  return b
}

export function decodeDirent(b: Buffer): Dirent {
  if (b.length < 26 || b.length > 25 + NAME_MAX)
    throw new FsError('EIO', `directory entry item of ${b.length} bytes is corrupt`)
  return {
    ino: readU64(b, 0),
    hash: b.readBigUInt64LE(8),
    pos: readU64(b, 16),
    type: b.readUInt8(24),
    name: Buffer.from(b.subarray(25)),
  }
}

export const direntKey = (dir: number, hash: bigint, pos: number): Buffer =>
  makeKey(Zone.FS, dir, KeyType.DIRENT, hash, pos)
export const direntHashFirst = (dir: number, hash: bigint): Buffer => makeKey(Zone.FS, dir, KeyType.DIRENT, hash, 0)
export const direntHashLast = (dir: number, hash: bigint): Buffer =>
  makeKey(Zone.FS, dir, KeyType.DIRENT, hash, U53, U53)
export const readdirKey = (dir: number, pos: number): Buffer => makeKey(Zone.FS, dir, KeyType.READDIR, pos)
export const readdirLast = (dir: number): Buffer => makeKey(Zone.FS, dir, KeyType.READDIR, U53, U53, U53)
export const backrefKey = (ino: number, dir: number, pos: number): Buffer =>
  makeKey(Zone.FS, ino, KeyType.LINK_BACKREF, dir, pos)
export const backrefFirst = (ino: number): Buffer => makeKey(Zone.FS, ino, KeyType.LINK_BACKREF, 0, 0)
export const backrefLast = (ino: number): Buffer => makeKey(Zone.FS, ino, KeyType.LINK_BACKREF, U53, U53, U53)
/** The directory a backref key names (the `second` field). */
export const backrefKeyDir = keySecond

/* ---- symlinks -------------------------------------------------------------------------- */

export const SYMLINK_MAX = 4095
export const symlinkKey = (ino: number, part: number): Buffer => makeKey(Zone.FS, ino, KeyType.SYMLINK, part)

/* ---- xattrs ---------------------------------------------------------------------------- */

export const XATTR_NAME_MAX = 255
export const XATTR_SIZE_MAX = 65536
export const XATTR_PART_MAX = 4000

export const xattrHash = (name: Buffer): number => crc32c(name)
export const xattrKey = (ino: number, hash: number, id: number, part: number): Buffer =>
  makeKey(Zone.FS, ino, KeyType.XATTR, hash, id, part)
export const xattrHashFirst = (ino: number, hash: number): Buffer => makeKey(Zone.FS, ino, KeyType.XATTR, hash, 0, 0)
export const xattrHashLast = (ino: number, hash: number): Buffer => makeKey(Zone.FS, ino, KeyType.XATTR, hash, U53, U53)
export const xattrFirst = (ino: number): Buffer => makeKey(Zone.FS, ino, KeyType.XATTR, 0, 0, 0)
export const xattrLast = (ino: number): Buffer => makeKey(Zone.FS, ino, KeyType.XATTR, U53, U53, U53)

/** part 0 starts with {value length u32, name length u16}, then the name, then the value */
export const XATTR_HDR = 6

/** The parts of xattr `name` = `value`, each XATTR_PART_MAX bytes at most. */
export function encodeXattr(name: Buffer, value: Buffer): Buffer[] {
  const whole = Buffer.concat([Buffer.alloc(XATTR_HDR), name, value])
  whole.writeUInt32LE(value.length, 0)
  whole.writeUInt16LE(name.length, 4)
  const parts: Buffer[] = []
  for (let off = 0; off < whole.length; off += XATTR_PART_MAX) parts.push(whole.subarray(off, off + XATTR_PART_MAX))
  return parts
}

/** An xattr key's id (the low word of its third field) and part (its fourth field). */
export function decodeXattrKey(k: Buffer): { id: number; part: number } {
  return { id: k.readUInt32BE(22), part: k.readUInt32BE(26) * 0x100000000 + k.readUInt32BE(30) }
}

/** Whether `key` is an xattr part's. */
export const isXattrKey = (key: Buffer): boolean => key[0] === Zone.FS && key[9] === KeyType.XATTR

/** Part 0 of an xattr: its whole value's length, its name and the first bytes of its value. */
export function decodeXattrHead(v: Buffer): { valLen: number; name: Buffer; first: Buffer } {
  if (v.length < XATTR_HDR) throw new FsError('EIO', `xattr item of ${v.length} bytes is corrupt`)
  const nameLen = v.readUInt16LE(4)
  return {
    valLen: v.readUInt32LE(0),
    name: v.subarray(XATTR_HDR, XATTR_HDR + nameLen),
    first: v.subarray(XATTR_HDR + nameLen),
  }
}

/* ---- data extents ---------------------------------------------------------------------- */

export const EXTENT_OFFLINE = 1

export interface DataExtent {
  /** first file block */
  iblock: number
  len: number
  /** first data device block (0 when offline) */
  blkno: number
  flags: number
}

export const extentKey = (ino: number, iblock: number): Buffer => makeKey(Zone.FS, ino, KeyType.DATA_EXTENT, iblock)
export const extentFirst = (ino: number): Buffer => makeKey(Zone.FS, ino, KeyType.DATA_EXTENT, 0)
export const extentLast = (ino: number): Buffer => makeKey(Zone.FS, ino, KeyType.DATA_EXTENT, U53, U53, U53)
/** Whether `key` is a data extent's. */
export const isExtentKey = (key: Buffer): boolean => key[0] === Zone.FS && key[9] === KeyType.DATA_EXTENT

export function encodeExtent(e: DataExtent): Buffer {
  const b = Buffer.alloc(17)
  writeU64(b, 0, e.len)
  writeU64(b, 8, e.blkno)
  b.writeUInt8(e.flags, 16)
  return b
}

export function decodeExtent(key: Buffer, b: Buffer): DataExtent {
  if (b.length !== 17 || key.length !== KEY_SIZE)
    throw new FsError('EIO', `data extent item of ${b.length} bytes is corrupt`)
  const iblock = key.readUInt32BE(10) * 0x100000000 + key.readUInt32BE(14)
  return { iblock, len: readU64(b, 0), blkno: readU64(b, 8), flags: b.readUInt8(16) }
}

/** The inode number an FS-zone key belongs to. */
export function keyIno(key: Buffer): number {
  return key.readUInt32BE(1) * 0x100000000 + key.readUInt32BE(5)
}

/* ---- directory quotas ------------------------------------------------------------------ */

/** An inode inside a quota tree: (FS, ino, QUOTA) holds the tree's root directory. */
export const quotaMemberKey = (ino: number): Buffer => makeKey(Zone.FS, ino, KeyType.QUOTA)
/** Whether `key` is an inode's quota membership item. */
export const isQuotaMemberKey = (key: Buffer): boolean => key[0] === Zone.FS && key[9] === KeyType.QUOTA

export function encodeQuotaMember(root: number): Buffer {
  const b = Buffer.alloc(8)
  writeU64(b, 0, root)
  return b
}

export function decodeQuotaMember(b: Buffer): number {
  if (b.length !== 8) throw new FsError('EIO', `quota membership item of ${b.length} bytes is corrupt`)
  return readU64(b, 0)
}

/** A quota tree's limits and usage (usage counts allocated data blocks, in bytes, and inodes). */
export interface QuotaRecord {
  root: number
  limitBytes: number
  limitInodes: number
  usedBytes: number
  usedInodes: number
}

/** (QUOTA, 0, QUOTA, root): one record per quota tree. */
export const quotaKey = (root: number): Buffer => makeKey(Zone.QUOTA, 0, KeyType.QUOTA, root)
export const QUOTA_FIRST = makeKey(Zone.QUOTA, 0, KeyType.QUOTA, 0)
export const QUOTA_LAST = makeKey(Zone.QUOTA, 0, KeyType.QUOTA, U53, U53, U53)

export function encodeQuota(q: QuotaRecord): Buffer {
  const b = Buffer.alloc(32)
  writeU64(b, 0, q.limitBytes)
  writeU64(b, 8, q.limitInodes)
  writeU64(b, 16, q.usedBytes)
  writeU64(b, 24, q.usedInodes)
  return b
}

export function decodeQuota(key: Buffer, b: Buffer): QuotaRecord {
  if (b.length !== 32) throw new FsError('EIO', `quota item of ${b.length} bytes is corrupt`)
  return {
    root: keySecond(key),
    limitBytes: readU64(b, 0),
    limitInodes: readU64(b, 8),
    usedBytes: readU64(b, 16),
    usedInodes: readU64(b, 24),
  }
}

/* ---- xattr tags: srch and totl ------------------------------------------------------------ */

/** FNV-1a 64 of an xattr name: the srch hash (as the original's srch.c). */
export function srchHash(name: Buffer): bigint {
  let h = 0xcbf29ce484222325n
  for (const b of name) h = BigInt.asUintN(64, (h ^ BigInt(b)) * 0x100000001b3n)
  return h
}

/** A srch item (no value): inode `ino` carries the `scoutfs.srch.` xattr `id` whose name hashes to `hash`. */
export const srchKey = (hash: bigint, ino: number, id: number): Buffer =>
  makeKey(Zone.SRCH, 0, KeyType.SRCH, hash, ino, id)
export const srchHashFirst = (hash: bigint): Buffer => makeKey(Zone.SRCH, 0, KeyType.SRCH, hash, 0, 0)
export const srchHashLast = (hash: bigint): Buffer => makeKey(Zone.SRCH, 0, KeyType.SRCH, hash, U53, U53)
/** The inode a srch key names (its `third` field). */
export const srchKeyIno = (k: Buffer): number => k.readUInt32BE(18) * 0x100000000 + k.readUInt32BE(22)

/** The name of a total: the last three dot-separated u64s of a `scoutfs.totl.` xattr name. */
export type TotlName = readonly [bigint, bigint, bigint]

/** One inode's part of total `n` (its xattrs of that name summed); no value of its own. */
export const totlKey = (n: TotlName, ino: number): Buffer =>
  makeKey(Zone.XATTR_TOTL, n[0], KeyType.XATTR_TOTL, n[1], n[2], ino)
export const TOTL_FIRST = makeKey(Zone.XATTR_TOTL, 0, KeyType.XATTR_TOTL, 0, 0, 0)
export const TOTL_LAST = makeKey(
  Zone.XATTR_TOTL,
  0xffffffffffffffffn,
  KeyType.XATTR_TOTL,
  0xffffffffffffffffn,
  0xffffffffffffffffn,
  U53,
)

/** The total a totl key belongs to. */
export function totlKeyName(k: Buffer): TotlName {
  return [k.readBigUInt64BE(1), k.readBigUInt64BE(10), k.readBigUInt64BE(18)]
}

/** A totl item's value: the inode's sum of values and how many xattrs it has of that total. */
export function encodeTotl(total: bigint, count: number): Buffer {
  const b = Buffer.alloc(16)
  b.writeBigUInt64LE(total, 0)
  writeU64(b, 8, count)
  return b
}

export function decodeTotl(v: Buffer): { total: bigint; count: number } {
  if (v.length !== 16) throw new FsError('EIO', `xattr total item of ${v.length} bytes is corrupt`)
  return { total: v.readBigUInt64LE(0), count: readU64(v, 8) }
}
