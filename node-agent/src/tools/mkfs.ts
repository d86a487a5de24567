/*
 * mkfs: format a metadata and a data device as a new scoutfs filesystem.
 *
 * Checks first, writes last: both devices must exist and be large enough, and neither may
 * already hold a scoutfs filesystem unless `force` is set.  The metadata device gets zeroed
 * quorum blocks, an empty fs root, meta_alloc holding every block not used by the format, and
 * data_alloc holding every data block; the data device gets a copy of the super that names it
 * as the data device of this fsid.
 */
import { randomBytes } from 'node:crypto'
import type { BlockDevice } from '../storage/device.js'
import type { ProgressFn } from './progress.js'
import { FsError } from '../util/errors.js'
import {
  DATA_BLOCK_SIZE,
  DATA_FIRST_BLKNO,
  META_BLOCK_SIZE,
  META_FIRST_BLKNO,
  MIN_DATA_BLOCKS,
  MIN_META_BLOCKS,
  QUORUM_BLKNO,
  QUORUM_MAX_SLOTS,
  SMALL_BLOCK_SIZE,
} from '../storage/format.js'
import {
  newSuper,
  readDataSuper,
  readSuperCopies,
  writeDataSuper,
  writeSuper,
  type SuperBlock,
} from '../storage/super.js'
import { SUPER_WRITER_BOOT_BLOCKS, SuperWriter } from '../storage/super-writer.js'
import { ROOT_INO } from '../fs/fs-api.js'
import { encodeInode, inodeKey, metaSeqKey, newInode, nowTs } from '../fs/fs-items.js'

export interface MkfsOptions {
  quorumSlots: number
  quorumAddrs?: string[]
  force?: boolean
  /** for tests: a fixed fsid */
  fsid?: bigint
  /** told as each step starts (done: steps finished of total) */
  progress?: ProgressFn
}

export interface MkfsResult {
  sb: SuperBlock
  metaBlocks: number
  dataBlocks: number
  freeMetaBlocks: number
  freeDataBlocks: number
}

function human(bytes: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB']
  let i = 0
  while (bytes >= 1024 && i < u.length - 1) {
    bytes /= 1024
    i++
  }
  return `${bytes.toFixed(i ? 1 : 0)} ${u[i]}`
}

const MKFS_STEPS = 3

export async function mkfs(meta: BlockDevice, data: BlockDevice, opts: MkfsOptions): Promise<MkfsResult> {
  if (!Number.isInteger(opts.quorumSlots) || opts.quorumSlots < 1 || opts.quorumSlots > QUORUM_MAX_SLOTS)
    throw new FsError('EINVAL', `the quorum slot count must be 1 to ${QUORUM_MAX_SLOTS}, not ${opts.quorumSlots}`)
  const addrs = opts.quorumAddrs ?? []
  if (addrs.length > opts.quorumSlots)
    throw new FsError('EINVAL', `${addrs.length} quorum addresses given for ${opts.quorumSlots} slots`)

  const metaBlocks = Math.floor(meta.size / META_BLOCK_SIZE)
  const dataBlocks = Math.floor(data.size / DATA_BLOCK_SIZE)
  if (metaBlocks < MIN_META_BLOCKS)
    throw new FsError(
      'EINVAL',
      `metadata device ${meta.path} is ${human(meta.size)}; it must be at least ${human(MIN_META_BLOCKS * META_BLOCK_SIZE)}`,
    )
  if (dataBlocks < MIN_DATA_BLOCKS)
    throw new FsError(
      'EINVAL',
      `data device ${data.path} is ${human(data.size)}; it must be at least ${human(MIN_DATA_BLOCKS * DATA_BLOCK_SIZE)}`,
    )

  if (!opts.force) {
    const m = await readSuperCopies(meta)
    if (m.current)
      throw new FsError(
        'EEXIST',
        `${meta.path} already holds scoutfs filesystem ${m.current.fsid.toString(16).padStart(16, '0')}; use --force to overwrite it`,
      )
    const d = await readDataSuper(data)
    if (d)
      throw new FsError(
        'EEXIST',
        `${data.path} already holds scoutfs filesystem ${d.fsid.toString(16).padStart(16, '0')}; use --force to overwrite it`,
      )
  }

  const fsid = opts.fsid ?? randomBytes(8).readBigUInt64LE(0)
  const step = (n: number, phase: string): void => opts.progress?.({ phase, done: n, total: MKFS_STEPS })
  step(0, 'clearing the super blocks and quorum blocks')
  // clear both super copies and the quorum blocks first: a half-written mkfs is no filesystem
  const fixed = Buffer.alloc(SMALL_BLOCK_SIZE * (QUORUM_BLKNO + QUORUM_MAX_SLOTS - 16))
  await meta.write(16 * SMALL_BLOCK_SIZE, fixed)
  await data.write(16 * SMALL_BLOCK_SIZE, Buffer.alloc(SMALL_BLOCK_SIZE))
  await meta.flush()
  await data.flush()

  const sb = newSuper({
    fsid,
    totalMetaBlocks: metaBlocks,
    totalDataBlocks: dataBlocks,
    quorumSlots: opts.quorumSlots,
    quorumAddrs: Array.from({ length: opts.quorumSlots }, (_, i) => addrs[i] ?? ''),
  })
  // the first transaction draws from a few blocks handed to it directly
  const boot: number[] = []
  for (let b = META_FIRST_BLKNO + SUPER_WRITER_BOOT_BLOCKS - 1; b >= META_FIRST_BLKNO; b--) boot.push(b)
  const w = SuperWriter.create(meta, sb, boot)
  step(1, `writing the allocators of ${metaBlocks} metadata and ${dataBlocks} data blocks`)
  await w.metaAlloc.free(
    META_FIRST_BLKNO + SUPER_WRITER_BOOT_BLOCKS,
    metaBlocks - META_FIRST_BLKNO - SUPER_WRITER_BOOT_BLOCKS,
  )
  await w.dataAlloc.free(DATA_FIRST_BLKNO, dataBlocks - DATA_FIRST_BLKNO)
  await w.reserve()
  // the root directory
  step(2, 'writing the root directory and the super blocks')
  const seq = w.nextSeq()
  const root = newInode(ROOT_INO, 0o040755, 0, 0, nowTs())
  root.metaSeq = seq
  await w.fs.put(inodeKey(ROOT_INO), encodeInode(root), seq)
  await w.fs.put(metaSeqKey(seq, ROOT_INO), Buffer.alloc(0), seq)
  w.sb.inodeCount = 1
  await w.commit()
  // write the second copy too, so a fresh filesystem has two valid supers
  const sb1 = await writeSuper(meta, w.sb)
  await writeDataSuper(data, sb1)
  return {
    sb: sb1,
    metaBlocks,
    dataBlocks,
    freeMetaBlocks: sb1.metaAlloc.totalLen + sb1.serverAvail.totalNr,
    freeDataBlocks: sb1.dataAlloc.totalLen,
  }
}

export { human }
