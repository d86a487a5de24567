/*
 * check: offline verification of a filesystem's metadata.
 *
 * Reads everything the current super references, without trusting any of it:
 *  - every block reference: checksum, magic, fsid, blkno, seq and level; parent keys bound
 *    their children's keys; keys are sorted;
 *  - allocator accounting is exact: every metadata block from META_FIRST_BLKNO to the end of
 *    the device is exactly one of referenced (by a tree or a list), free in meta_alloc, on the
 *    server's avail list, or on its freed list; every data block is exactly one of free in
 *    data_alloc or referenced by a file extent.  A block owned twice or not at all is reported;
 *  - both indexes of every extent allocator hold the same extents and their total matches.
 * Problems are collected, never thrown: a corrupt block is reported and its subtree skipped.
 */
import { readList, type Extent } from '../storage/alloc.js'
import { BlockCache } from '../storage/block.js'
import { ITEM_DELETION, Node } from '../storage/btree.js'
import { EXTENT_OFFLINE, decodeExtent, decodeInode, keyIno } from '../fs/fs-items.js'
import { decodeLogTrees, type LogTrees } from '../protocol/server-api.js'
import type { BlockDevice } from '../storage/device.js'
import {
  DATA_FIRST_BLKNO,
  MAX_KEY,
  META_BLOCK_SIZE,
  META_FIRST_BLKNO,
  Magic,
  Zone,
  KeyType,
  DATA_BLOCK_SIZE,
  decodeKey,
  keyToString,
  type AllocRoot,
  type BlockRef,
  type BtreeRoot,
  type ListHead,
} from '../storage/format.js'
import { assertMetaSuper, readDataSuper, readSuperCopies, type SuperBlock } from '../storage/super.js'
import { PROGRESS_BLOCK_MASK, type ProgressFn } from './progress.js'

const SIZE_MAX = 0x1fffffffffffff

export interface CheckReport {
  problems: string[]
  notes: string[]
  sb?: SuperBlock
  stats: {
    metaBlocks: number
    referencedMetaBlocks: number
    freeMetaBlocks: number
    dataBlocks: number
    freeDataBlocks: number
    usedDataBlocks: number
    items: number
  }
}

export interface CheckOptions {
  /** called every so often: metadata blocks read, then the block accounting's loops */
  progress?: ProgressFn
}

class Ownership {
  private readonly owner: Int32Array
  private readonly names: string[] = ['']
  private readonly ids = new Map<string, number>()
  outOfRange = 0

  constructor(
    readonly what: string,
    readonly first: number,
    readonly total: number,
    private readonly problems: string[],
    private readonly progress: ProgressFn | undefined,
  ) {
    this.owner = new Int32Array(Math.max(total, 0))
  }

  private id(name: string): number {
    let i = this.ids.get(name)
    if (i === undefined) {
      i = this.names.length
      this.names.push(name)
      this.ids.set(name, i)
    }
    return i
  }

  mark(start: number, len: number, name: string): void {
    if (start < this.first || start + len > this.total || len <= 0) {
      this.problems.push(
        `${name}: ${this.what} blocks ${start}+${len} are outside the allocatable range ${this.first}..${this.total - 1}`,
      )
      return
    }
    const id = this.id(name)
    let reported = 0
    for (let b = start; b < start + len; b++) {
      if (((b - start) & PROGRESS_BLOCK_MASK) === 0 && b !== start)
        this.progress?.({ phase: `${this.what} blocks ${name}`, done: b - start, total: len })
      const cur = this.owner[b]!
      if (cur !== 0) {
        if (reported++ < 4) this.problems.push(`${this.what} block ${b} is both ${this.names[cur]} and ${name}`)
        continue
      }
      this.owner[b] = id
    }
    if (reported > 4) this.problems.push(`... and ${reported - 4} more ${this.what} blocks of ${name} owned twice`)
  }

  private report(phase: string, b: number): void {
    this.progress?.({ phase, done: b - this.first, total: this.total - this.first })
  }

  count(pred: (name: string) => boolean): number {
    let n = 0
    for (let b = this.first; b < this.total; b++) {
      if (((b - this.first) & PROGRESS_BLOCK_MASK) === 0) this.report(`counting ${this.what} blocks`, b)
      if (this.owner[b] !== 0 && pred(this.names[this.owner[b]!]!)) n++
    }
    return n
  }

  unowned(): Extent[] {
    const out: Extent[] = []
    for (let b = this.first; b < this.total; b++) {
      if (((b - this.first) & PROGRESS_BLOCK_MASK) === 0) this.report(`looking for leaked ${this.what} blocks`, b)
      if (this.owner[b] !== 0) continue
      const last = out[out.length - 1]
      if (last && last.start + last.len === b) last.len++
      else out.push({ start: b, len: 1 })
    }
    return out
  }
}

interface TreeVisit {
  items: number
  blocks: number
  readable: boolean
}

export async function checkFilesystem(
  meta: BlockDevice,
  data?: BlockDevice,
  opts: CheckOptions = {},
): Promise<CheckReport> {
  const problems: string[] = []
  const notes: string[] = []
  const stats: CheckReport['stats'] = {
    metaBlocks: 0,
    referencedMetaBlocks: 0,
    freeMetaBlocks: 0,
    dataBlocks: 0,
    freeDataBlocks: 0,
    usedDataBlocks: 0,
    items: 0,
  }
  const report: CheckReport = { problems, notes, stats }

  const supers = await readSuperCopies(meta)
  for (const c of supers.copies)
    if (c.problem)
      notes.push(`super copy at 4 KiB block ${c.blkno} is not valid (${c.problem}); the other copy is used`)
  const sb = supers.current
  if (!sb) {
    problems.push(`${meta.path}: no valid scoutfs super block; not a scoutfs metadata device`)
    notes.length = 0
    return report
  }
  try {
    assertMetaSuper(sb, meta.path)
  } catch (e) {
    problems.push((e as Error).message)
    return report
  }
  report.sb = sb
  const devMetaBlocks = Math.floor(meta.size / META_BLOCK_SIZE)
  if (sb.totalMetaBlocks > devMetaBlocks)
    problems.push(`super says ${sb.totalMetaBlocks} metadata blocks but ${meta.path} holds only ${devMetaBlocks}`)
  stats.metaBlocks = sb.totalMetaBlocks
  stats.dataBlocks = sb.totalDataBlocks

  if (data) {
    const dsb = await readDataSuper(data)
    if (!dsb) problems.push(`${data.path}: no scoutfs data super block; not this filesystem's data device`)
    else if (dsb.fsid !== sb.fsid)
      problems.push(`${data.path} belongs to filesystem ${dsb.fsid.toString(16)}, not ${sb.fsid.toString(16)}`)
    const devDataBlocks = Math.floor(data.size / DATA_BLOCK_SIZE)
    if (sb.totalDataBlocks > devDataBlocks)
      problems.push(`super says ${sb.totalDataBlocks} data blocks but ${data.path} holds only ${devDataBlocks}`)
  }

  const cache = new BlockCache(meta, sb.fsid, 1024)
  const metaOwn = new Ownership('metadata', META_FIRST_BLKNO, sb.totalMetaBlocks, problems, opts.progress)
  const dataOwn = new Ownership('data', DATA_FIRST_BLKNO, sb.totalDataBlocks, problems, opts.progress)
  let blocksRead = 0

  const walkTree = async (
    name: string,
    root: BtreeRoot,
    onItem: (key: Buffer, val: Buffer, flags: number, seq: number) => void,
  ): Promise<TreeVisit> => {
    const v: TreeVisit = { items: 0, blocks: 0, readable: true }
    const rec = async (ref: BlockRef, level: number, lo: Buffer | undefined, hi: Buffer): Promise<void> => {
      let n: Node
      try {
        n = await cache.read(ref, Magic.BTREE, 'btree', (b) => Node.parse(b, ref.blkno, ref.seq))
      } catch (e) {
        v.readable = false
        problems.push(`${name}: ${(e as Error).message}`)
        return
      }
      if (++blocksRead % 1000 === 0) opts.progress?.({ phase: 'metadata blocks read', done: blocksRead })
      v.blocks++
      metaOwn.mark(ref.blkno, 1, `${name} btree block`)
      if (n.level !== level)
        problems.push(`${name}: btree block ${ref.blkno} has level ${n.level}, its parent expects ${level}`)
      if (n.nr === 0) problems.push(`${name}: btree block ${ref.blkno} is empty`)
      for (let i = 0; i < n.nr; i++) {
        const k = n.keys[i]!
        if ((lo && Buffer.compare(k, lo) <= 0) || Buffer.compare(k, hi) > 0) {
          problems.push(`${name}: btree block ${ref.blkno} key ${keyToString(k)} is outside its parent's bounds`)
          break
        }
      }
      if (n.isLeaf) {
        for (let i = 0; i < n.nr; i++) onItem(n.keys[i]!, n.vals[i]!, n.flags[i]!, n.seqs[i]!)
        v.items += n.nr
        return
      }
      for (let i = 0; i < n.nr; i++) await rec(n.refs[i]!, level - 1, i > 0 ? n.keys[i - 1] : lo, n.keys[i]!)
      if (hi.equals(MAX_KEY) && !n.keys[n.nr - 1]!.equals(MAX_KEY))
        problems.push(`${name}: btree block ${ref.blkno} is on the right spine but its last key is not the maximum key`)
    }
    if (root.height > 0) await rec(root.ref, root.height - 1, undefined, MAX_KEY)
    else if (root.ref.blkno !== 0) problems.push(`${name}: empty tree with a block reference ${root.ref.blkno}`)
    stats.items += v.items
    return v
  }

  const checkAlloc = async (name: string, a: AllocRoot, own: Ownership): Promise<void> => {
    const byPos: Extent[] = []
    const bySize: Extent[] = []
    const v = await walkTree(name, a.root, (key) => {
      const f = decodeKey(key)
      if (f.zone === Zone.FREE_BLKNO) byPos.push({ start: Number(f.first), len: Number(f.second) })
      else if (f.zone === Zone.FREE_ORDER) bySize.push({ start: Number(f.second), len: SIZE_MAX - Number(f.first) })
      else problems.push(`${name}: unexpected item ${keyToString(key)} in an allocator`)
    })
    if (!v.readable) return
    const sum = byPos.reduce((s, e) => s + e.len, 0)
    if (sum !== a.totalLen) problems.push(`${name}: extents hold ${sum} free blocks but its total says ${a.totalLen}`)
    const posSet = new Set(byPos.map((e) => `${e.start}+${e.len}`))
    const sizeSet = new Set(bySize.map((e) => `${e.start}+${e.len}`))
    for (const e of posSet) if (!sizeSet.has(e)) problems.push(`${name}: extent ${e} is in the position index only`)
    for (const e of sizeSet) if (!posSet.has(e)) problems.push(`${name}: extent ${e} is in the size index only`)
    for (let i = 1; i < byPos.length; i++) {
      const p = byPos[i - 1]!
      if (p.start + p.len > byPos[i]!.start)
        problems.push(`${name}: extents ${p.start}+${p.len} and ${byPos[i]!.start}+${byPos[i]!.len} overlap`)
    }
    for (const e of byPos) own.mark(e.start, e.len, `free in ${name}`)
  }

  await walkTree('mounted_clients', sb.mountedClients, () => undefined)
  await walkTree('srch_root', sb.srchRoot, () => undefined)
  await checkAlloc('meta_alloc', sb.metaAlloc, metaOwn)
  await checkAlloc('data_alloc', sb.dataAlloc, dataOwn)

  const checkList = async (name: string, head: ListHead): Promise<void> => {
    try {
      const l = await readList(cache, head)
      for (const r of l.blocks) metaOwn.mark(r.blkno, 1, `${name} list block`)
      for (const e of l.entries) metaOwn.mark(e, 1, `on ${name}`)
    } catch (e) {
      problems.push(`${name}: ${(e as Error).message}`)
    }
  }
  await checkList('server avail list', sb.serverAvail)
  await checkList('server freed list', sb.serverFreed)

  // file extents: the newest copy of each extent item across the fs root and log trees
  const extents = new Map<string, { seq: number; flags: number; key: Buffer; val: Buffer }>()
  // and of each inode item, to hold its block counts against its extents
  const inodes = new Map<string, { seq: number; flags: number; key: Buffer; val: Buffer }>()
  const collectExtents = (key: Buffer, val: Buffer, flags: number, seq: number): void => {
    if (key[0] !== Zone.FS || (key[9] !== KeyType.DATA_EXTENT && key[9] !== KeyType.INODE)) return
    const into = key[9] === KeyType.INODE ? inodes : extents
    const k = key.toString('latin1')
    const cur = into.get(k)
    if (!cur || cur.seq < seq) into.set(k, { seq, flags, key, val })
  }
  const fs = await walkTree('fs_root', sb.fsRoot, collectExtents)
  const logTrees: LogTrees[] = []
  await walkTree('logs_root', sb.logsRoot, (key, val) => {
    try {
      logTrees.push(decodeLogTrees(val))
    } catch (e) {
      problems.push(`logs_root: item ${keyToString(key)}: ${(e as Error).message}`)
    }
  })
  for (const lt of logTrees) {
    const name = `log tree ${lt.rid.toString(16)}.${lt.nr}`
    await walkTree(name, lt.itemRoot, collectExtents)
    await checkList(`${name} meta avail`, lt.metaAvail)
    await checkList(`${name} meta freed`, lt.metaFreed)
    await checkAlloc(`${name} data avail`, lt.dataAvail, dataOwn)
    await checkAlloc(`${name} data freed`, lt.dataFreed, dataOwn)
  }
  const counted = new Map<number, { online: number; offline: number }>()
  for (const x of extents.values()) {
    if (x.flags & ITEM_DELETION) continue
    try {
      const e = decodeExtent(x.key, x.val)
      const c = counted.get(keyIno(x.key)) ?? { online: 0, offline: 0 }
      if (e.flags & EXTENT_OFFLINE) c.offline += e.len
      else c.online += e.len
      counted.set(keyIno(x.key), c)
      if (!(e.flags & EXTENT_OFFLINE)) dataOwn.mark(e.blkno, e.len, `file data of inode ${keyIno(x.key)}`)
    } catch (err) {
      problems.push(`data extent ${keyToString(x.key)}: ${(err as Error).message}`)
    }
  }
  for (const x of inodes.values()) {
    if (x.flags & ITEM_DELETION) continue
    const ino = keyIno(x.key)
    try {
      const i = decodeInode(ino, x.val)
      const c = counted.get(ino) ?? { online: 0, offline: 0 }
      if (i.onlineBlocks !== c.online || i.offlineBlocks !== c.offline)
        problems.push(
          `inode ${ino}: online/offline blocks ${i.onlineBlocks}/${i.offlineBlocks}, its extents hold ${c.online}/${c.offline}`,
        )
    } catch (err) {
      problems.push(`inode ${keyToString(x.key)}: ${(err as Error).message}`)
    }
  }

  stats.referencedMetaBlocks = metaOwn.count((n) => n.endsWith('block'))
  stats.freeMetaBlocks = metaOwn.count((n) => !n.endsWith('block'))
  stats.freeDataBlocks = dataOwn.count((n) => n.startsWith('free'))
  stats.usedDataBlocks = dataOwn.count((n) => n.startsWith('file data'))

  const leaked = metaOwn.unowned()
  if (leaked.length) {
    const n = leaked.reduce((s, e) => s + e.len, 0)
    problems.push(
      `${n} metadata blocks are neither referenced nor free (leaked): ` +
        leaked
          .slice(0, 8)
          .map((e) => (e.len === 1 ? `${e.start}` : `${e.start}-${e.start + e.len - 1}`))
          .join(', ') +
        (leaked.length > 8 ? ', ...' : '') +
        (fs.readable ? '' : ' (some trees could not be read; their blocks count as leaked)'),
    )
  }
  const lost = dataOwn.unowned()
  if (lost.length) {
    const n = lost.reduce((s, e) => s + e.len, 0)
    problems.push(
      `${n} data blocks are neither used by a file nor free (leaked): ` +
        lost
          .slice(0, 8)
          .map((e) => (e.len === 1 ? `${e.start}` : `${e.start}-${e.start + e.len - 1}`))
          .join(', ') +
        (lost.length > 8 ? ', ...' : ''),
    )
  }
  return report
}
