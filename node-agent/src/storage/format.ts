/*
 * The on-disk format: sizes, magics, the block header, keys, block references and the super
 * block.  Everything here is pure encoding; no I/O.
 *
 * Invariants kept here:
 *  - Keys are fixed-size and big-endian in sort order (zone, first, type, second, third,
 *    fourth), so comparing two encoded keys with Buffer.compare is comparing keys.
 *  - Every metadata block begins with the same 32-byte header {crc32c, magic, fsid, seq, blkno};
 *    the crc covers every byte of the block after the crc field.
 *  - The super block lives in two alternating 4 KiB copies; the valid copy with the higher
 *    header seq is the current one, so a torn super write falls back to the previous commit.
 */
import { FsError } from '../util/errors.js'

export const FORMAT_VERSION = 1

export const META_BLOCK_SHIFT = 16
export const META_BLOCK_SIZE = 1 << META_BLOCK_SHIFT // 64 KiB btree, list blocks
export const SMALL_BLOCK_SHIFT = 12
export const SMALL_BLOCK_SIZE = 1 << SMALL_BLOCK_SHIFT // 4 KiB super, quorum, data blocks
export const DATA_BLOCK_SIZE = SMALL_BLOCK_SIZE

/* 4 KiB block numbers of the fixed small blocks on the metadata device */
export const SUPER_BLKNOS = [16, 17] as const
export const QUORUM_BLKNO = 18
export const QUORUM_MAX_SLOTS = 15
/* the first 64 KiB metadata block the allocator may hand out (blocks 0..3 hold the above) */
export const META_FIRST_BLKNO = 4
/* the first 4 KiB data block the data allocator may hand out */
export const DATA_FIRST_BLKNO = 64

/* smallest devices mkfs accepts */
export const MIN_META_BLOCKS = 1024 // 64 MiB
export const MIN_DATA_BLOCKS = 4096 // 16 MiB

export const Magic = {
  SUPER: 0x103c428b,
  BTREE: 0xe597f96d,
  ALLOC_LIST: 0x8a93ac83,
  QUORUM: 0xbc310868,
} as const
export type MagicValue = (typeof Magic)[keyof typeof Magic]

export function magicName(m: number): string {
  for (const [k, v] of Object.entries(Magic)) if (v === m) return k
  return `0x${m.toString(16)}`
}

/* ---- block header ---------------------------------------------------------------------- */

export const HDR_SIZE = 32
export const HDR_CRC = 0
export const HDR_MAGIC = 4
export const HDR_FSID = 8
export const HDR_SEQ = 16
export const HDR_BLKNO = 24

export interface BlockHeader {
  crc: number
  magic: number
  fsid: bigint
  seq: number
  blkno: number
}

export function readHeader(b: Buffer): BlockHeader {
  return {
    crc: b.readUInt32LE(HDR_CRC),
    magic: b.readUInt32LE(HDR_MAGIC),
    fsid: b.readBigUInt64LE(HDR_FSID),
    seq: readU64(b, HDR_SEQ),
    blkno: readU64(b, HDR_BLKNO),
  }
}

export function writeHeader(b: Buffer, h: Omit<BlockHeader, 'crc'>): void {
  b.writeUInt32LE(h.magic, HDR_MAGIC)
  b.writeBigUInt64LE(h.fsid, HDR_FSID)
  writeU64(b, HDR_SEQ, h.seq)
  writeU64(b, HDR_BLKNO, h.blkno)
}

/* ---- 64-bit helpers: on-disk u64, in memory a safe integer ------------------------------ */

export function readU64(b: Buffer, off: number): number {
  const lo = b.readUInt32LE(off)
  const hi = b.readUInt32LE(off + 4)
  if (hi > 0x1fffff) throw new FsError('EUCLEAN', `u64 at offset ${off} exceeds 2^53`)
  return hi * 0x100000000 + lo
}

export function writeU64(b: Buffer, off: number, v: number): void {
  if (!Number.isSafeInteger(v) || v < 0) throw new FsError('EINVAL', `bad u64 value ${v}`)
  b.writeUInt32LE(v >>> 0, off)
  b.writeUInt32LE(Math.floor(v / 0x100000000), off + 4)
}

/* ---- block references ------------------------------------------------------------------ */

/** A reference to a metadata block: its number and the seq nonce it was written with. */
export interface BlockRef {
  blkno: number
  seq: number
}
export const REF_SIZE = 16
export const NULL_REF: BlockRef = Object.freeze({ blkno: 0, seq: 0 })

export function readRef(b: Buffer, off: number): BlockRef {
  return { blkno: readU64(b, off), seq: readU64(b, off + 8) }
}
export function writeRef(b: Buffer, off: number, r: BlockRef): void {
  writeU64(b, off, r.blkno)
  writeU64(b, off + 8, r.seq)
}

/** A random nonce for a newly written block: guards against reading a reused blkno. */
export function randomSeq(): number {
  return Math.floor(Math.random() * 0x1fffffffffffff) + 1
}

/* ---- keys ------------------------------------------------------------------------------ */

/*
 * Encoded key: zone u8 | first u64 | type u8 | second u64 | third u64 | fourth u64, all
 * big-endian, 34 bytes.  Fields accept a safe integer or a bigint (hashes use all 64 bits).
 */
export const KEY_SIZE = 34
export type KeyField = number | bigint

/** consecutive inode numbers that share one cluster lock (and item-cache coverage) */
export const INODE_GROUP = 1024

export const Zone = {
  INODE_INDEX: 4,
  ORPHAN: 8,
  QUOTA: 10,
  XATTR_TOTL: 12,
  XATTR_INDX: 14,
  FS: 16,
  LOCK: 20,
  LOG_TREES: 24,
  MOUNTED_CLIENT: 28,
  SRCH: 32,
  FREE_BLKNO: 36,
  FREE_ORDER: 40,
} as const

export const KeyType = {
  META_SEQ: 4,
  DATA_SEQ: 8,
  ORPHAN: 4,
  INODE: 4,
  XATTR: 8,
  DIRENT: 12,
  READDIR: 16,
  LINK_BACKREF: 20,
  SYMLINK: 24,
  DATA_EXTENT: 28,
  /** zone FS: the directory quota an inode counts against; zone QUOTA: a quota's limits and usage */
  QUOTA: 32,
  /** zone SRCH: a `scoutfs.srch.` xattr (name hash, ino, xattr id) */
  SRCH: 4,
  /** zone XATTR_TOTL: one inode's part of a `scoutfs.totl.` total (a, b, c, ino) */
  XATTR_TOTL: 4,
} as const

export interface KeyFields {
  zone: number
  first: KeyField
  type: number
  second: KeyField
  third: KeyField
  fourth: KeyField
}

function putU64BE(b: Buffer, off: number, v: KeyField): void {
  if (typeof v === 'bigint') {
    b.writeBigUInt64BE(BigInt.asUintN(64, v), off)
  } else {
    b.writeUInt32BE(Math.floor(v / 0x100000000) >>> 0, off)
    b.writeUInt32BE(v >>> 0, off + 4)
  }
}

function getU64BE(b: Buffer, off: number): number | bigint {
  const hi = b.readUInt32BE(off)
  const lo = b.readUInt32BE(off + 4)
  if (hi > 0x1fffff) return b.readBigUInt64BE(off)
  return hi * 0x100000000 + lo
}

export function makeKey(
  zone: number,
  first: KeyField = 0,
  type = 0,
  second: KeyField = 0,
  third: KeyField = 0,
  fourth: KeyField = 0,
): Buffer {
  const b = Buffer.allocUnsafe(KEY_SIZE)
  b[0] = zone
  putU64BE(b, 1, first)
  b[9] = type
  putU64BE(b, 10, second)
  putU64BE(b, 18, third)
  putU64BE(b, 26, fourth)
  return b
}

export function decodeKey(k: Buffer): KeyFields {
  return {
    zone: k[0]!,
    first: getU64BE(k, 1),
    type: k[9]!,
    second: getU64BE(k, 10),
    third: getU64BE(k, 18),
    fourth: getU64BE(k, 26),
  }
}

export function keyToString(k: Buffer): string {
  const f = decodeKey(k)
  return `${f.zone}.${f.first}.${f.type}.${f.second}.${f.third}.${f.fourth}`
}

export const MIN_KEY: Buffer = Buffer.alloc(KEY_SIZE, 0)
export const MAX_KEY: Buffer = Buffer.alloc(KEY_SIZE, 0xff)

export function compareKeys(a: Buffer, b: Buffer): number {
  return Buffer.compare(a, b)
}

/* ---- btree roots ----------------------------------------------------------------------- */

export interface BtreeRoot {
  ref: BlockRef
  height: number // 0: empty tree
}
export const ROOT_SIZE = REF_SIZE + 8
export const EMPTY_ROOT: BtreeRoot = Object.freeze({ ref: NULL_REF, height: 0 })

export function readRoot(b: Buffer, off: number): BtreeRoot {
  return { ref: readRef(b, off), height: b.readUInt8(off + REF_SIZE) }
}
export function writeRoot(b: Buffer, off: number, r: BtreeRoot): void {
  writeRef(b, off, r.ref)
  b.writeUInt8(r.height, off + REF_SIZE)
  b.fill(0, off + REF_SIZE + 1, off + ROOT_SIZE)
}

/** An extent allocator: a btree of free extents indexed by position and by size. */
export interface AllocRoot {
  root: BtreeRoot
  totalLen: number // free blocks it holds
}
export const ALLOC_ROOT_SIZE = ROOT_SIZE + 8
export function readAllocRoot(b: Buffer, off: number): AllocRoot {
  return { root: readRoot(b, off), totalLen: readU64(b, off + ROOT_SIZE) }
}
export function writeAllocRoot(b: Buffer, off: number, a: AllocRoot): void {
  writeRoot(b, off, a.root)
  writeU64(b, off + ROOT_SIZE, a.totalLen)
}

/** The head of an on-disk list of metadata block numbers (a chain of ALLOC_LIST blocks). */
export interface ListHead {
  ref: BlockRef
  totalNr: number
}
export const LIST_HEAD_SIZE = REF_SIZE + 8
export function readListHead(b: Buffer, off: number): ListHead {
  return { ref: readRef(b, off), totalNr: readU64(b, off + REF_SIZE) }
}
export function writeListHead(b: Buffer, off: number, l: ListHead): void {
  writeRef(b, off, l.ref)
  writeU64(b, off + REF_SIZE, l.totalNr)
}
export const EMPTY_LIST: ListHead = Object.freeze({ ref: NULL_REF, totalNr: 0 })

/* ALLOC_LIST block: header | next ref | nr u32 | pad u32 | blknos u64[] */
export const LIST_NEXT_OFF = HDR_SIZE
export const LIST_NR_OFF = HDR_SIZE + REF_SIZE
export const LIST_ENTRIES_OFF = LIST_NR_OFF + 8
export const LIST_BLOCK_CAPACITY = Math.floor((META_BLOCK_SIZE - LIST_ENTRIES_OFF) / 8)
