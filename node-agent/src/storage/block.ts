/*
 * Metadata blocks: checksummed 64 KiB blocks addressed by (blkno, seq) references, and a
 * bounded cache of them.
 *
 * Every read is validated against the reference that led to it: checksum, magic and fsid must
 * be right or the block is *corrupt* (EIO); blkno and seq must match the reference or the block
 * is *stale* (ESTALE: the caller read an old root and should refresh it and retry).  A block
 * that fails validation is never cached and never returned.
 *
 * A reader whose references may be old (the forest, reading through roots a newer commit may
 * have replaced) can also read a block that is being rewritten by its new owner: that torn read
 * fails its checksum without any corruption.  Such a reader asks for `oldRefs`; a block that
 * then looks corrupt is thrown as a SuspectBlock, counted nowhere until the reader has read
 * again from fresh roots and settles it (as what it was: stale, or corrupt), as the original's
 * block_check_stale does.
 *
 * The cache keeps validated blocks together with the object a caller parsed from them (the
 * btree caches its decoded nodes here), keyed by blkno and checked against the ref's seq on
 * every hit.  It holds only clean, committed blocks; dirty blocks belong to their transaction.
 */
import { crc32c } from '@node-rs/crc32'
import type { BlockDevice } from './device.js'
import { FsError, bareMessage } from '../util/errors.js'
import { HDR_CRC, META_BLOCK_SIZE, magicName, readHeader, writeHeader, type BlockRef } from './format.js'

export interface BlockCounters {
  cacheHits: number
  cacheMisses: number
  reads: number
  writes: number
  staleReads: number
  corruptReads: number
  evictions: number
}

export function blockChecksum(b: Buffer): number {
  return crc32c(b.subarray(HDR_CRC + 4))
}

/** Fill in the header and checksum of a block about to be written. */
export function sealBlock(b: Buffer, fsid: bigint, magic: number, blkno: number, seq: number): void {
  writeHeader(b, { magic, fsid, seq, blkno })
  b.writeUInt32LE(blockChecksum(b), HDR_CRC)
}

/** Validate a block read for `ref`; throws EIO (corrupt) or ESTALE (stale). */
export function validateBlock(b: Buffer, fsid: bigint, magic: number, ref: BlockRef, what = 'metadata block'): void {
  const where = `${what} ${ref.blkno}`
  // the checksum first: the header's fields decode only once they are known sound (a flipped
  // high bit of seq or blkno would otherwise fail their decode, EUCLEAN, not EIO naming the block)
  const crc = b.readUInt32LE(HDR_CRC)
  if (crc !== blockChecksum(b))
    throw new FsError('EIO', `${where} is corrupt: checksum ${crc.toString(16)} does not match its contents`)
  const h = readHeader(b)
  if (h.fsid !== fsid)
    throw new FsError('EIO', `${where} is corrupt: fsid ${h.fsid.toString(16)} is not this filesystem's`)
  // a sound block of this filesystem written since the reference was made is stale, whatever
  // it holds now: freed and reused, it may well be another kind of block (a list block where
  // a reader with old roots expects a btree node); the reader refreshes its roots
  if (h.blkno !== ref.blkno || h.seq !== ref.seq)
    throw new FsError(
      'ESTALE',
      `${where} is stale: holds blkno ${h.blkno} seq ${h.seq}, reference wants blkno ${ref.blkno} seq ${ref.seq}`,
    )
  if (h.magic !== magic)
    throw new FsError('EIO', `${where} is corrupt: magic ${magicName(h.magic)}, expected ${magicName(magic)}`)
}

/** How a read treats its reference. */
export interface ReadOptions {
  /** the reference may be older than the block (see the top of this file) */
  oldRefs?: boolean
}

/**
 * A block that failed validation as corrupt (checksum, magic, fsid, contents) when read through
 * a reference that may be old: corrupt, or torn by its new owner's write.  The reader settles
 * it with BlockCache.settle() once it has read again from fresh roots.
 */
export class SuspectBlock extends FsError {
  constructor(
    readonly ref: BlockRef,
    readonly found: FsError,
  ) {
    super('EIO', bareMessage(found))
  }
}

interface CacheEntry {
  seq: number
  buf: Buffer
  parsed: Map<string, unknown>
}

export class BlockCache {
  readonly counters: BlockCounters = {
    cacheHits: 0,
    cacheMisses: 0,
    reads: 0,
    writes: 0,
    staleReads: 0,
    corruptReads: 0,
    evictions: 0,
  }
  /** insertion order is LRU order: a hit moves the entry to the end */
  private readonly entries = new Map<number, CacheEntry>()
  /** called once per block that fails validation (for logs and metrics) */
  onBadBlock: ((err: FsError, blkno: number) => void) | undefined

  constructor(
    readonly dev: BlockDevice,
    readonly fsid: bigint,
    readonly maxBlocks = 4096,
  ) {}

  get totalBlocks(): number {
    return Math.floor(this.dev.size / META_BLOCK_SIZE)
  }

  get cachedBlocks(): number {
    return this.entries.size
  }

  /**
   * Read and validate the block `ref` names, returning `parse(buf)`; the parsed object is cached
   * under `kind` with the block.  Parsers must not keep the buffer mutable: blocks are shared.
   */
  async read<T>(ref: BlockRef, magic: number, kind: string, parse: (buf: Buffer) => T, opts?: ReadOptions): Promise<T> {
    const e = this.entries.get(ref.blkno)
    if (e && e.seq === ref.seq) {
      this.counters.cacheHits++
      this.entries.delete(ref.blkno)
      this.entries.set(ref.blkno, e)
      let p = e.parsed.get(kind) as T | undefined
      if (p === undefined) {
        p = parse(e.buf)
        e.parsed.set(kind, p)
      }
      return p
    }
    if (e) this.entries.delete(ref.blkno)
    this.counters.cacheMisses++
    const buf = await this.readRaw(ref, magic, opts)
    let parsed: T
    try {
      parsed = parse(buf)
    } catch (err) {
      // a block whose checksum is right but whose contents do not decode is corrupt too
      throw err instanceof FsError ? this.bad(err, ref, opts) : err
    }
    this.insert(ref.blkno, { seq: ref.seq, buf, parsed: new Map([[kind, parsed]]) })
    return parsed
  }

  /**
   * The object parsed as `kind` from the cached block `ref` names, synchronously: no I/O and no
   * promise, for callers that want to skip the async overhead of read() on a hit.  A hit counts
   * and refreshes the block's LRU place exactly as a hit in read() does.  When the block is not
   * cached, is cached with another seq, or was never parsed as `kind`, this returns undefined and
   * counts nothing: the caller then calls read(), which counts (and validates) as usual.
   */
  peek<T>(ref: BlockRef, kind: string): T | undefined {
    const e = this.entries.get(ref.blkno)
    if (e === undefined || e.seq !== ref.seq) return undefined
    const p = e.parsed.get(kind)
    if (p === undefined) return undefined
    this.counters.cacheHits++
    this.entries.delete(ref.blkno)
    this.entries.set(ref.blkno, e)
    return p as T
  }

  private async readRaw(ref: BlockRef, magic: number, opts?: ReadOptions): Promise<Buffer> {
    if (ref.blkno <= 0 || ref.blkno >= this.totalBlocks)
      throw this.bad(new FsError('EIO', `block reference ${ref.blkno} is outside the metadata device`), ref, opts)
    this.counters.reads++
    const buf = await this.dev.read(ref.blkno * META_BLOCK_SIZE, META_BLOCK_SIZE)
    try {
      validateBlock(buf, this.fsid, magic, ref)
    } catch (err) {
      throw this.bad(err as FsError, ref, opts)
    }
    return buf
  }

  private bad(err: FsError, ref: BlockRef, opts: ReadOptions | undefined): FsError {
    if (err.code !== 'ESTALE' && opts?.oldRefs) return new SuspectBlock(ref, err)
    return this.report(err, ref.blkno)
  }

  private report(err: FsError, blkno: number): FsError {
    if (err.code === 'ESTALE') this.counters.staleReads++
    else this.counters.corruptReads++
    this.onBadBlock?.(err, blkno)
    return err
  }

  /**
   * Count and report a SuspectBlock once its reader knows what it was: `corrupt` (it failed
   * again from roots that still use it) gives the error as found; otherwise (the read from
   * fresh roots went past it) it was stale, torn by its new owner's write, and counts as a
   * stale read.
   */
  settle(s: SuspectBlock, corrupt: boolean): FsError {
    if (corrupt) return this.report(s.found, s.ref.blkno)
    return this.report(
      new FsError('ESTALE', `${bareMessage(s.found)}, read through old roots: a reused block`),
      s.ref.blkno,
    )
  }

  private insert(blkno: number, e: CacheEntry): void {
    this.entries.set(blkno, e)
    while (this.entries.size > this.maxBlocks) {
      const oldest = this.entries.keys().next().value as number
      this.entries.delete(oldest)
      this.counters.evictions++
    }
  }

  /** Cache a block this process just wrote, with the object it was serialized from. */
  adopt(blkno: number, seq: number, buf: Buffer, kind: string, parsed: unknown): void {
    this.entries.delete(blkno)
    this.insert(blkno, { seq, buf, parsed: new Map([[kind, parsed]]) })
  }

  /** Forget a cached block (it was freed or rewritten). */
  forget(blkno: number): void {
    this.entries.delete(blkno)
  }

  /** Drop every cached block (e.g. after another writer changed the device). */
  clear(): void {
    this.entries.clear()
  }

  /**
   * Write sealed blocks (each buffer already carries its header and crc), coalescing runs of
   * adjacent block numbers into single device writes.  The caller flushes.
   */
  async writeBlocks(blocks: Array<{ blkno: number; buf: Buffer }>): Promise<void> {
    blocks.sort((a, b) => a.blkno - b.blkno)
    const runs: Array<{ start: number; bufs: Buffer[] }> = []
    for (const b of blocks) {
      if (b.buf.length !== META_BLOCK_SIZE)
        throw new FsError('EINVAL', `block ${b.blkno} is not ${META_BLOCK_SIZE} bytes`)
      const last = runs[runs.length - 1]
      if (last && last.start + last.bufs.length === b.blkno && last.bufs.length < 16) last.bufs.push(b.buf)
      else runs.push({ start: b.blkno, bufs: [b.buf] })
      this.forget(b.blkno)
    }
    // at most 8 writes in flight; after a failure start no more, and return only once every
    // write already issued has finished, so nothing of a failed batch lands later
    let next = 0
    let failed: unknown
    const worker = async (): Promise<void> => {
      while (next < runs.length && failed === undefined) {
        const r = runs[next++]!
        try {
          await this.dev.write(r.start * META_BLOCK_SIZE, r.bufs.length === 1 ? r.bufs[0]! : Buffer.concat(r.bufs))
          this.counters.writes += r.bufs.length
        } catch (e) {
          failed ??= e
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(8, runs.length) }, worker))
    if (failed !== undefined) throw failed
  }
}
