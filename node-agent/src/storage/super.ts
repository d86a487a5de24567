/*
 * The super block: the roots of everything, in two alternating 4 KiB copies at fixed offsets
 * of the metadata device (and one copy on the data device that ties it to the metadata).
 *
 * Writing: copy (hdr.seq % 2) gets the next version, after the caller has flushed every block
 * it references, and is flushed before the write returns.  Reading: both copies are read and
 * validated; the valid one with the higher seq wins.  A torn or lost super write therefore
 * leaves the previous version in force, which still references only durable blocks.
 */
import type { BlockDevice } from './device.js'
import { blockChecksum, sealBlock } from './block.js'
import { FsError } from '../util/errors.js'
import {
  ALLOC_ROOT_SIZE,
  EMPTY_LIST,
  EMPTY_ROOT,
  FORMAT_VERSION,
  HDR_CRC,
  HDR_MAGIC,
  HDR_SIZE,
  LIST_HEAD_SIZE,
  Magic,
  QUORUM_MAX_SLOTS,
  ROOT_SIZE,
  SMALL_BLOCK_SIZE,
  SUPER_BLKNOS,
  readAllocRoot,
  readHeader,
  readListHead,
  readRoot,
  readU64,
  writeAllocRoot,
  writeListHead,
  writeRoot,
  writeU64,
  type AllocRoot,
  type BtreeRoot,
  type ListHead,
} from './format.js'

export const SUPER_FLAG_META = 1

export interface SuperBlock {
  fsid: bigint
  /** version of this super: +1 per write; picks the current copy */
  writeSeq: number
  formatVersion: number
  flags: number
  /** the core counter issuing transaction, lock and merge seqs */
  nextSeq: number
  nextIno: number
  inodeCount: number
  totalMetaBlocks: number
  totalDataBlocks: number
  createdSec: number
  quorumSlots: number
  /** "host:port" per configured slot, '' where none was given */
  quorumAddrs: string[]
  fsRoot: BtreeRoot
  logsRoot: BtreeRoot
  mountedClients: BtreeRoot
  srchRoot: BtreeRoot
  metaAlloc: AllocRoot
  dataAlloc: AllocRoot
  serverAvail: ListHead
  serverFreed: ListHead
}

const O = {
  formatVersion: HDR_SIZE,
  flags: HDR_SIZE + 4,
  nextSeq: 40,
  nextIno: 48,
  inodeCount: 56,
  totalMeta: 64,
  totalData: 72,
  created: 80,
  quorumSlots: 88,
  fsRoot: 96,
  logsRoot: 96 + ROOT_SIZE,
  mountedClients: 96 + 2 * ROOT_SIZE,
  srchRoot: 96 + 3 * ROOT_SIZE,
  metaAlloc: 192,
  dataAlloc: 192 + ALLOC_ROOT_SIZE,
  serverAvail: 256,
  serverFreed: 256 + LIST_HEAD_SIZE,
  quorumAddrs: 320,
} as const
const ADDR_LEN = 64

export function newSuper(
  fields: Partial<SuperBlock> & Pick<SuperBlock, 'fsid' | 'totalMetaBlocks' | 'totalDataBlocks'>,
): SuperBlock {
  return {
    writeSeq: 0,
    formatVersion: FORMAT_VERSION,
    flags: SUPER_FLAG_META,
    nextSeq: 1,
    nextIno: 1024,
    inodeCount: 0,
    createdSec: Math.floor(Date.now() / 1000),
    quorumSlots: 0,
    quorumAddrs: [],
    fsRoot: EMPTY_ROOT,
    logsRoot: EMPTY_ROOT,
    mountedClients: EMPTY_ROOT,
    srchRoot: EMPTY_ROOT,
    metaAlloc: { root: EMPTY_ROOT, totalLen: 0 },
    dataAlloc: { root: EMPTY_ROOT, totalLen: 0 },
    serverAvail: EMPTY_LIST,
    serverFreed: EMPTY_LIST,
    ...fields,
  }
}

export function encodeSuper(sb: SuperBlock, blkno: number): Buffer {
  const b = Buffer.alloc(SMALL_BLOCK_SIZE)
  b.writeUInt32LE(sb.formatVersion, O.formatVersion)
  b.writeUInt32LE(sb.flags, O.flags)
  writeU64(b, O.nextSeq, sb.nextSeq)
  writeU64(b, O.nextIno, sb.nextIno)
  writeU64(b, O.inodeCount, sb.inodeCount)
  writeU64(b, O.totalMeta, sb.totalMetaBlocks)
  writeU64(b, O.totalData, sb.totalDataBlocks)
  writeU64(b, O.created, sb.createdSec)
  b.writeUInt8(sb.quorumSlots, O.quorumSlots)
  writeRoot(b, O.fsRoot, sb.fsRoot)
  writeRoot(b, O.logsRoot, sb.logsRoot)
  writeRoot(b, O.mountedClients, sb.mountedClients)
  writeRoot(b, O.srchRoot, sb.srchRoot)
  writeAllocRoot(b, O.metaAlloc, sb.metaAlloc)
  writeAllocRoot(b, O.dataAlloc, sb.dataAlloc)
  writeListHead(b, O.serverAvail, sb.serverAvail)
  writeListHead(b, O.serverFreed, sb.serverFreed)
  for (let i = 0; i < QUORUM_MAX_SLOTS; i++) {
    const a = Buffer.from(sb.quorumAddrs[i] ?? '', 'utf8')
    if (a.length >= ADDR_LEN) throw new FsError('EINVAL', `quorum address ${sb.quorumAddrs[i]} is too long`)
    a.copy(b, O.quorumAddrs + i * ADDR_LEN)
  }
  sealBlock(b, sb.fsid, Magic.SUPER, blkno, sb.writeSeq)
  return b
}

/** Decode a super copy; undefined when it is not a valid scoutfs super block. */
export function decodeSuper(b: Buffer, blkno: number): SuperBlock | undefined {
  // magic and checksum first: the header's u64 fields of a block nobody wrote (random bytes)
  // may be out of range, and reading them would throw
  if (b.readUInt32LE(HDR_MAGIC) !== Magic.SUPER || b.readUInt32LE(HDR_CRC) !== blockChecksum(b)) return undefined
  const h = readHeader(b)
  if (h.blkno !== blkno) return undefined
  const addrs: string[] = []
  const slots = b.readUInt8(O.quorumSlots)
  for (let i = 0; i < slots && i < QUORUM_MAX_SLOTS; i++) {
    const raw = b.subarray(O.quorumAddrs + i * ADDR_LEN, O.quorumAddrs + (i + 1) * ADDR_LEN)
    const end = raw.indexOf(0)
    addrs.push(raw.subarray(0, end < 0 ? ADDR_LEN : end).toString('utf8'))
  }
  return {
    fsid: h.fsid,
    writeSeq: h.seq,
    formatVersion: b.readUInt32LE(O.formatVersion),
    flags: b.readUInt32LE(O.flags),
    nextSeq: readU64(b, O.nextSeq),
    nextIno: readU64(b, O.nextIno),
    inodeCount: readU64(b, O.inodeCount),
    totalMetaBlocks: readU64(b, O.totalMeta),
    totalDataBlocks: readU64(b, O.totalData),
    createdSec: readU64(b, O.created),
    quorumSlots: slots,
    quorumAddrs: addrs,
    fsRoot: readRoot(b, O.fsRoot),
    logsRoot: readRoot(b, O.logsRoot),
    mountedClients: readRoot(b, O.mountedClients),
    srchRoot: readRoot(b, O.srchRoot),
    metaAlloc: readAllocRoot(b, O.metaAlloc),
    dataAlloc: readAllocRoot(b, O.dataAlloc),
    serverAvail: readListHead(b, O.serverAvail),
    serverFreed: readListHead(b, O.serverFreed),
  }
}

export interface SuperCopies {
  current: SuperBlock | undefined
  /** per copy: the decoded super, or why it is not valid */
  copies: Array<{ blkno: number; sb?: SuperBlock; problem?: string }>
}

export async function readSuperCopies(dev: BlockDevice): Promise<SuperCopies> {
  const copies: SuperCopies['copies'] = []
  for (const blkno of SUPER_BLKNOS) {
    if ((blkno + 1) * SMALL_BLOCK_SIZE > dev.size) {
      copies.push({ blkno, problem: 'past the end of the device' })
      continue
    }
    const b = await dev.read(blkno * SMALL_BLOCK_SIZE, SMALL_BLOCK_SIZE)
    const sb = decodeSuper(b, blkno)
    if (sb) copies.push({ blkno, sb })
    else
      copies.push({
        blkno,
        problem:
          b.readUInt32LE(HDR_MAGIC) !== Magic.SUPER
            ? 'no scoutfs super block magic'
            : b.readUInt32LE(HDR_CRC) !== blockChecksum(b)
              ? 'checksum mismatch (torn or corrupt)'
              : `header names block ${readHeader(b).blkno}`,
      })
  }
  let current: SuperBlock | undefined
  for (const c of copies) if (c.sb && (!current || c.sb.writeSeq > current.writeSeq)) current = c.sb
  return { current, copies }
}

/** Read the current super of a metadata device, or fail with a message that says what to do. */
export async function readSuper(dev: BlockDevice): Promise<SuperBlock> {
  const { current, copies } = await readSuperCopies(dev)
  if (!current)
    throw new FsError(
      'EINVAL',
      `${dev.path} holds no valid scoutfs super block (${copies.map((c) => `block ${c.blkno}: ${c.problem}`).join('; ')}); ` +
        `is it the metadata device, and was it formatted with 'scoutfs mkfs'?`,
    )
  assertMetaSuper(current, dev.path)
  return current
}

/** A super read from what should be a metadata device must say it is one, of our version. */
export function assertMetaSuper(sb: SuperBlock, path: string): void {
  if (sb.formatVersion !== FORMAT_VERSION)
    throw new FsError(
      'EINVAL',
      `${path} has format version ${sb.formatVersion}; this scoutfs supports ${FORMAT_VERSION}`,
    )
  if (!(sb.flags & SUPER_FLAG_META))
    throw new FsError('EINVAL', `${path} is a scoutfs data device; give the metadata device`)
}

/** Write the next version of the super to the other copy and flush it. */
export async function writeSuper(dev: BlockDevice, sb: SuperBlock): Promise<SuperBlock> {
  const next = { ...sb, writeSeq: sb.writeSeq + 1 }
  const blkno = SUPER_BLKNOS[next.writeSeq % 2]!
  await dev.write(blkno * SMALL_BLOCK_SIZE, encodeSuper(next, blkno))
  await dev.flush()
  return next
}

/** The data device's copy of the super: identifies it and ties it to its metadata device. */
export async function writeDataSuper(dev: BlockDevice, sb: SuperBlock): Promise<void> {
  const blkno = SUPER_BLKNOS[0]
  await dev.write(
    blkno * SMALL_BLOCK_SIZE,
    encodeSuper({ ...sb, flags: sb.flags & ~SUPER_FLAG_META, writeSeq: 1 }, blkno),
  )
  await dev.flush()
}

export async function readDataSuper(dev: BlockDevice): Promise<SuperBlock | undefined> {
  const blkno = SUPER_BLKNOS[0]
  if ((blkno + 1) * SMALL_BLOCK_SIZE > dev.size) return undefined
  return decodeSuper(await dev.read(blkno * SMALL_BLOCK_SIZE, SMALL_BLOCK_SIZE), blkno)
}
