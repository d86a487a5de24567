/*
 * Copy-on-write B+trees of items in 64 KiB metadata blocks.
 *
 * An item is a fixed-size key, a seq (its version), flags (DELETION) and a value of at most
 * MAX_VAL_LEN bytes.  Leaves hold items in key order; a parent holds, per child, the greatest
 * key the child may contain and the child's block reference.  The right spine's keys are
 * MAX_KEY, so an insert past every key never has to update a parent.
 *
 * Copy on write: a tree is modified only inside a BtreeTxn.  The first time a transaction
 * touches a committed block it copies it to a newly allocated block (with a fresh random seq)
 * and frees the old one to the transaction's allocator, which must not reuse it until the
 * commit that stops referencing it is durable.  Blocks allocated inside the transaction are
 * modified in place.  Committed blocks are immutable and shared through the block cache.
 *
 * Invariants:
 *  - every key in child i is > key[i-1] and <= key[i] of its parent;
 *  - no block but the root is under a quarter full after a delete (joins and rebalances);
 *  - a node never holds more than NODE_CAPACITY bytes of items (splits);
 *  - one writer at a time per tree: concurrent modification throws instead of corrupting.
 */
import { BlockCache, sealBlock, type ReadOptions } from './block.js'
import { FsError } from '../util/errors.js'
import {
  EMPTY_ROOT,
  HDR_SIZE,
  KEY_SIZE,
  MAX_KEY,
  META_BLOCK_SIZE,
  Magic,
  randomSeq,
  readRef,
  readU64,
  writeRef,
  writeU64,
  type BlockRef,
  type BtreeRoot,
} from './format.js'

export const ITEM_DELETION = 1
export const MAX_VAL_LEN = 4096
export const MAX_HEIGHT = 20

const NODE_HDR = HDR_SIZE + 4 // level u8, pad u8, nr u16
export const NODE_CAPACITY = META_BLOCK_SIZE - NODE_HDR
const LEAF_ITEM_HDR = KEY_SIZE + 8 + 1 + 2
const PARENT_ITEM = KEY_SIZE + 16
const LOW_WATER = Math.floor(NODE_CAPACITY / 4)

export interface Item {
  key: Buffer
  seq: number
  flags: number
  val: Buffer
}

/** A decoded btree block.  Clean nodes are shared and never modified. */
export class Node {
  keys: Buffer[] = []
  seqs: number[] = [] // leaf
  flags: number[] = [] // leaf
  vals: Buffer[] = [] // leaf
  refs: BlockRef[] = [] // parent
  bytes = 0

  constructor(
    public blkno: number,
    public seq: number,
    public level: number,
  ) {}

  get isLeaf(): boolean {
    return this.level === 0
  }

  get nr(): number {
    return this.keys.length
  }

  itemBytes(i: number): number {
    return this.isLeaf ? LEAF_ITEM_HDR + this.vals[i]!.length : PARENT_ITEM
  }

  clone(blkno: number, seq: number): Node {
    const n = new Node(blkno, seq, this.level)
    n.keys = this.keys.slice()
    n.bytes = this.bytes
    if (this.isLeaf) {
      n.seqs = this.seqs.slice()
      n.flags = this.flags.slice()
      n.vals = this.vals.slice()
    } else {
      n.refs = this.refs.slice()
    }
    return n
  }

  /** first index whose key is >= key (nr when none) */
  lowerBound(key: Buffer): number {
    return searchKeys(this.keys, key)
  }

  /** move items [from, to) of this node into a new array-set; used by split and rebalance */
  take(from: number, to: number): Pick<Node, 'keys' | 'seqs' | 'flags' | 'vals' | 'refs'> & { bytes: number } {
    let bytes = 0
    for (let i = from; i < to; i++) bytes += this.itemBytes(i)
    const part = {
      keys: this.keys.splice(from, to - from),
      seqs: this.isLeaf ? this.seqs.splice(from, to - from) : [],
      flags: this.isLeaf ? this.flags.splice(from, to - from) : [],
      vals: this.isLeaf ? this.vals.splice(from, to - from) : [],
      refs: this.isLeaf ? [] : this.refs.splice(from, to - from),
      bytes,
    }
    this.bytes -= bytes
    return part
  }

  put(at: number, part: ReturnType<Node['take']>): void {
    this.keys.splice(at, 0, ...part.keys)
    if (this.isLeaf) {
      this.seqs.splice(at, 0, ...part.seqs)
      this.flags.splice(at, 0, ...part.flags)
      this.vals.splice(at, 0, ...part.vals)
    } else {
      this.refs.splice(at, 0, ...part.refs)
    }
    this.bytes += part.bytes
  }

  serialize(fsid: bigint): Buffer {
    const b = Buffer.alloc(META_BLOCK_SIZE)
    b.writeUInt8(this.level, HDR_SIZE)
    b.writeUInt16LE(this.nr, HDR_SIZE + 2)
    let off = NODE_HDR
    for (let i = 0; i < this.nr; i++) {
      this.keys[i]!.copy(b, off)
      off += KEY_SIZE
      if (this.isLeaf) {
        writeU64(b, off, this.seqs[i]!)
        b.writeUInt8(this.flags[i]!, off + 8)
        const v = this.vals[i]!
        b.writeUInt16LE(v.length, off + 9)
        v.copy(b, off + 11)
        off += 11 + v.length
      } else {
        writeRef(b, off, this.refs[i]!)
        off += 16
      }
    }
    if (off - NODE_HDR !== this.bytes) throw new FsError('EIO', `btree node ${this.blkno} byte count is wrong`)
    sealBlock(b, fsid, Magic.BTREE, this.blkno, this.seq)
    return b
  }

  static parse(b: Buffer, blkno: number, seq: number): Node {
    const level = b.readUInt8(HDR_SIZE)
    const nr = b.readUInt16LE(HDR_SIZE + 2)
    const n = new Node(blkno, seq, level)
    if (level >= MAX_HEIGHT) throw new FsError('EIO', `btree block ${blkno} is corrupt: level ${level}`)
    let off = NODE_HDR
    for (let i = 0; i < nr; i++) {
      if (off + (level === 0 ? LEAF_ITEM_HDR : PARENT_ITEM) > META_BLOCK_SIZE)
        throw new FsError('EIO', `btree block ${blkno} is corrupt: item ${i} runs past the block`)
      n.keys.push(b.subarray(off, off + KEY_SIZE))
      off += KEY_SIZE
      if (level === 0) {
        n.seqs.push(readU64(b, off))
        n.flags.push(b.readUInt8(off + 8))
        const len = b.readUInt16LE(off + 9)
        if (len > MAX_VAL_LEN || off + 11 + len > META_BLOCK_SIZE)
          throw new FsError('EIO', `btree block ${blkno} is corrupt: item ${i} value length ${len}`)
        n.vals.push(b.subarray(off + 11, off + 11 + len))
        off += 11 + len
      } else {
        n.refs.push(readRef(b, off))
        off += 16
      }
    }
    n.bytes = off - NODE_HDR
    for (let i = 1; i < nr; i++)
      if (Buffer.compare(n.keys[i - 1]!, n.keys[i]!) >= 0)
        throw new FsError('EIO', `btree block ${blkno} is corrupt: keys out of order at item ${i}`)
    return n
  }
}

/** Where a transaction gets new metadata blocks and returns the ones it stops using. */
export interface MetaAllocator {
  /** a free block; throws ENOSPC (or ENOBUFS: commit and refill) when there is none */
  alloc(): number
  /** a block no longer referenced once this transaction commits */
  free(blkno: number): void
}

/**
 * The dirty blocks of one transaction, across every tree it modifies.  commit() writes them
 * (the caller then flushes the device and publishes the roots that reference them).
 */
export class BtreeTxn {
  readonly dirty = new Map<number, Node>()

  constructor(
    readonly cache: BlockCache,
    public alloc: MetaAllocator,
  ) {}

  get dirtyBlocks(): number {
    return this.dirty.size
  }

  /** Write every dirty block; afterwards they are clean and cached. */
  async write(): Promise<number> {
    const fsid = this.cache.fsid
    const blocks = [...this.dirty.values()].map((n) => ({ node: n, blkno: n.blkno, buf: n.serialize(fsid) }))
    await this.cache.writeBlocks(blocks)
    for (const b of blocks) this.cache.adopt(b.blkno, b.node.seq, b.buf, 'btree', b.node)
    this.dirty.clear()
    return blocks.length
  }

  /** Drop every dirty block without writing (the transaction is abandoned). */
  discard(): void {
    this.dirty.clear()
  }
}

interface PathStep {
  node: Node
  idx: number // index of this node in its parent (-1 for the root)
}

/** The leaf that may hold a key and the key space it covers: (lo, hi], lo undefined for the leftmost. */
interface LeafBounds {
  leaf: Node
  lo: Buffer | undefined
  hi: Buffer
}

export interface RangeOptions {
  reverse?: boolean
}

/** What the trees read and written through one block cache did (for metrics). */
export interface BtreeCounters {
  splits: number
  joins: number
  rebalances: number
  cows: number
  lookups: number
  walks: number
}

/**
 * The counters of the trees that use `cache`: each cache user (a mount's transactions and
 * forest, a server's super writer) counts its own trees, even in one process.
 */
const countersByCache = new WeakMap<BlockCache, BtreeCounters>()
export function btreeCountersOf(cache: BlockCache): BtreeCounters {
  let c = countersByCache.get(cache)
  if (!c) {
    c = { splits: 0, joins: 0, rebalances: 0, cows: 0, lookups: 0, walks: 0 }
    countersByCache.set(cache, c)
  }
  return c
}

export class Btree {
  private busy = false
  private readonly counters: BtreeCounters

  /**
   * @param root  the tree's root; updated in place by modifications
   * @param cache where clean blocks are read from
   * @param txn   required for modifications; its dirty blocks are also what reads see first
   * @param reads how blocks are read (oldRefs: the root may be old, see block.ts)
   */
  constructor(
    public root: BtreeRoot,
    readonly cache: BlockCache,
    readonly txn?: BtreeTxn,
    private readonly reads?: ReadOptions,
  ) {
    this.counters = btreeCountersOf(cache)
  }

  private async getNode(ref: BlockRef): Promise<Node> {
    const d = this.txn?.dirty.get(ref.blkno)
    if (d && d.seq === ref.seq) return d
    return this.cache.read(ref, Magic.BTREE, 'btree', (b) => Node.parse(b, ref.blkno, ref.seq), this.reads)
  }

  /**
   * The node `ref` names when reading it needs no I/O: dirty in this transaction or in the block
   * cache (counted there as a hit).  Undefined otherwise; then getNode() reads it.
   */
  private peekNode(ref: BlockRef): Node | undefined {
    const d = this.txn?.dirty.get(ref.blkno)
    if (d !== undefined && d.seq === ref.seq) return d
    return this.cache.peek<Node>(ref, 'btree')
  }

  private checkLevel(n: Node, want: number): void {
    if (n.level !== want)
      throw new FsError('EIO', `btree block ${n.blkno} is corrupt: level ${n.level}, parent expects ${want}`)
  }

  /* ---- reads -------------------------------------------------------------------------- */

  /**
   * Descend to the leaf that may hold `key`.  Returns the leaf and the bounds of the key space
   * it covers: (lo, hi] where lo is undefined for the leftmost leaf.
   *
   * Cache hits cost no promise: the descent runs synchronously while every node is dirty or
   * cached, and only from the first node that must be read on does it continue asynchronously
   * (so the result is a promise only then).
   */
  private findLeaf(key: Buffer): LeafBounds | undefined | Promise<LeafBounds> {
    if (this.root.height === 0) return undefined
    this.counters.walks++
    const rootRef = this.root.ref
    let node = this.peekNode(rootRef)
    if (node === undefined) return this.findLeafFrom(key, rootRef, this.root.height - 1, undefined, MAX_KEY)
    this.checkLevel(node, this.root.height - 1)
    let lo: Buffer | undefined
    let hi = MAX_KEY
    while (!node.isLeaf) {
      let i = searchKeys(node.keys, key)
      if (i >= node.nr) i = node.nr - 1 // only on a corrupt right spine
      if (i > 0) lo = node.keys[i - 1]
      hi = node.keys[i]!
      const ref = node.refs[i]!
      const child: Node | undefined = this.peekNode(ref)
      if (child === undefined) return this.findLeafFrom(key, ref, node.level - 1, lo, hi)
      this.checkLevel(child, node.level - 1)
      node = child
    }
    return { leaf: node, lo, hi }
  }

  /** The rest of findLeaf from the block `ref` (of `level`, covering (lo, hi]), which needs a read. */
  private async findLeafFrom(
    key: Buffer,
    ref: BlockRef,
    level: number,
    lo: Buffer | undefined,
    hi: Buffer,
  ): Promise<LeafBounds> {
    let node = await this.getNode(ref)
    this.checkLevel(node, level)
    while (!node.isLeaf) {
      let i = searchKeys(node.keys, key)
      if (i >= node.nr) i = node.nr - 1 // only on a corrupt right spine
      if (i > 0) lo = node.keys[i - 1]
      hi = node.keys[i]!
      const childRef = node.refs[i]!
      const child = this.peekNode(childRef) ?? (await this.getNode(childRef))
      this.checkLevel(child, node.level - 1)
      node = child
    }
    return { leaf: node, lo, hi }
  }

  async lookup(key: Buffer): Promise<Item | undefined> {
    this.counters.lookups++
    let f = this.findLeaf(key)
    if (f instanceof Promise) f = await f
    if (!f) return undefined
    const i = searchKeys(f.leaf.keys, key)
    if (i < f.leaf.nr && keyCmp(f.leaf.keys[i]!, key) === 0) return itemAt(f.leaf, i)
    return undefined
  }

  /**
   * The items of the leaf that holds `key`, and the key range (lo, hi] that leaf covers (lo
   * undefined: from the smallest key).  Deletion items included.  For the forest.
   */
  async leafAround(key: Buffer): Promise<{ items: Item[]; lo: Buffer | undefined; hi: Buffer } | undefined> {
    const f = await this.findLeaf(key)
    if (!f) return undefined
    const items: Item[] = []
    for (let i = 0; i < f.leaf.nr; i++) items.push(itemAt(f.leaf, i))
    return { items, lo: f.lo, hi: f.hi }
  }

  /** The first item with key >= `key` (deletion items included). */
  async next(key: Buffer): Promise<Item | undefined> {
    for await (const it of this.range(key, MAX_KEY)) return it
    return undefined
  }

  /** The last item with key <= `key`. */
  async prev(key: Buffer): Promise<Item | undefined> {
    for await (const it of this.range(MIN_KEY_BUF, key, { reverse: true })) return it
    return undefined
  }

  /**
   * Items with start <= key <= end in key order (or reverse order).  The iteration reads one
   * leaf per step, so it stays correct if the caller modifies the tree between steps.
   */
  async *range(start: Buffer, end: Buffer, opts: RangeOptions = {}): AsyncGenerator<Item> {
    if (Buffer.compare(start, end) > 0) return
    if (!opts.reverse) {
      let cursor = start
      for (;;) {
        let f = this.findLeaf(cursor)
        if (f instanceof Promise) f = await f
        if (!f) return
        const items: Item[] = []
        for (let i = searchKeys(f.leaf.keys, cursor); i < f.leaf.nr; i++) {
          if (keyCmp(f.leaf.keys[i]!, end) > 0) break
          items.push(itemAt(f.leaf, i))
        }
        for (const it of items) yield it
        if (Buffer.compare(f.hi, end) >= 0 || f.hi.equals(MAX_KEY)) return
        cursor = keyInc(f.hi)
      }
    } else {
      let cursor = end
      for (;;) {
        let f = this.findLeaf(cursor)
        if (f instanceof Promise) f = await f
        if (!f) return
        const items: Item[] = []
        let i = searchKeys(f.leaf.keys, cursor)
        if (i >= f.leaf.nr || keyCmp(f.leaf.keys[i]!, cursor) > 0) i--
        for (; i >= 0; i--) {
          if (keyCmp(f.leaf.keys[i]!, start) < 0) break
          items.push(itemAt(f.leaf, i))
        }
        for (const it of items) yield it
        if (!f.lo || Buffer.compare(f.lo, start) < 0) return
        cursor = f.lo
      }
    }
  }

  /** Visit every block of the tree, parents before children (for check and print). */
  async walk(visit: (node: Node, ref: BlockRef, depth: number) => void | Promise<void>): Promise<void> {
    if (this.root.height === 0) return
    const rec = async (ref: BlockRef, level: number, depth: number): Promise<void> => {
      const n = this.peekNode(ref) ?? (await this.getNode(ref))
      this.checkLevel(n, level)
      await visit(n, ref, depth)
      if (!n.isLeaf) for (const r of n.refs) await rec(r, level - 1, depth + 1)
    }
    await rec(this.root.ref, this.root.height - 1, 0)
  }

  /* ---- writes ------------------------------------------------------------------------- */

  private enter(): BtreeTxn {
    if (!this.txn) throw new FsError('EROFS', 'btree modified outside a transaction')
    if (this.busy) throw new FsError('EBUSY', 'concurrent modification of one btree')
    this.busy = true
    return this.txn
  }

  private newNode(txn: BtreeTxn, level: number): Node {
    const n = new Node(txn.alloc.alloc(), randomSeq(), level)
    txn.dirty.set(n.blkno, n)
    return n
  }

  /** Make the block `ref` names writable in this transaction, copying it if committed. */
  private async dirtyNode(txn: BtreeTxn, ref: BlockRef): Promise<Node> {
    const d = txn.dirty.get(ref.blkno)
    if (d && d.seq === ref.seq) return d
    const clean = await this.getNode(ref)
    const blkno = txn.alloc.alloc()
    const n = clean.clone(blkno, randomSeq())
    txn.dirty.set(blkno, n)
    txn.alloc.free(ref.blkno)
    this.counters.cows++
    return n
  }

  /** Dirty the path from the root to the leaf that should hold `key`. */
  private async dirtyPath(txn: BtreeTxn, key: Buffer): Promise<PathStep[]> {
    const root = await this.dirtyNode(txn, this.root.ref)
    this.checkLevel(root, this.root.height - 1)
    this.root = { ref: { blkno: root.blkno, seq: root.seq }, height: this.root.height }
    const path: PathStep[] = [{ node: root, idx: -1 }]
    let node = root
    while (!node.isLeaf) {
      let i = node.lowerBound(key)
      if (i >= node.nr) i = node.nr - 1
      const child = await this.dirtyNode(txn, node.refs[i]!)
      this.checkLevel(child, node.level - 1)
      node.refs[i] = { blkno: child.blkno, seq: child.seq }
      path.push({ node: child, idx: i })
      node = child
    }
    return path
  }

  /** dirtyPath() to the leaf for `key`, and the last key that leaf covers (its parent's key). */
  private async dirtyLeaf(txn: BtreeTxn, key: Buffer): Promise<{ path: PathStep[]; hi: Buffer }> {
    const path = await this.dirtyPath(txn, key)
    let hi = MAX_KEY
    for (let d = 1; d < path.length; d++) hi = path[d - 1]!.node.keys[path[d]!.idx]!
    return { path, hi }
  }

  /**
   * Insert or replace the item at `key`.  Returns the item it replaced, if any.
   */
  async put(key: Buffer, val: Buffer, seq: number, flags = 0): Promise<Item | undefined> {
    checkItem(key, val)
    const txn = this.enter()
    try {
      this.growRoot(txn)
      const path = await this.dirtyPath(txn, key)
      // callers may reuse their buffers
      const old = setInLeaf(path[path.length - 1]!.node, Buffer.from(key), Buffer.from(val), seq, flags)
      await this.settle(txn, path)
      return old
    } finally {
      this.busy = false
    }
  }

  /**
   * put() of many items in ascending key order (a commit's dirty items), in one pass: the
   * path to a leaf is dirtied once for all the items that fall in that leaf, not once per
   * item.  The items' key and value buffers are kept, not copied: the caller must not change
   * them afterwards.
   */
  async putSorted(items: ReadonlyArray<Item>): Promise<void> {
    const txn = this.enter()
    try {
      let path: PathStep[] | undefined
      let hi = MAX_KEY // the last key the leaf at the end of `path` covers
      let prev: Buffer | undefined
      for (const it of items) {
        checkItem(it.key, it.val)
        if (prev && keyCmp(prev, it.key) >= 0) throw new FsError('EINVAL', 'putSorted: keys not in ascending order')
        prev = it.key
        if (this.growRoot(txn)) path = undefined
        if (!path || keyCmp(it.key, hi) > 0) ({ path, hi } = await this.dirtyLeaf(txn, it.key))
        setInLeaf(path[path.length - 1]!.node, it.key, it.val, it.seq, it.flags)
        // most puts leave the leaf within bounds: no await for those (a commit puts 100,000s)
        const settling = this.settle(txn, path)
        if (settling) {
          await settling
          path = undefined
        }
      }
    } finally {
      this.busy = false
    }
  }

  /** An empty tree gets a leaf root; whether it did. */
  private growRoot(txn: BtreeTxn): boolean {
    if (this.root.height !== 0) return false
    const leaf = this.newNode(txn, 0)
    this.root = { ref: { blkno: leaf.blkno, seq: leaf.seq }, height: 1 }
    return true
  }

  /**
   * Split or rebalance the leaf at the end of `path` after a put: settled when the returned
   * promise is (the path no longer holds); undefined when the leaf is within bounds.
   */
  private settle(txn: BtreeTxn, path: PathStep[]): Promise<void> | undefined {
    const leaf = path[path.length - 1]!.node
    if (leaf.bytes > NODE_CAPACITY) {
      this.split(txn, path)
      return Promise.resolve()
    }
    if (leaf.bytes < LOW_WATER && path.length > 1) return this.rebalance(txn, path)
    return undefined
  }

  /**
   * delete() of many keys in ascending order (the items a merge step consumed), in one pass:
   * the path to a leaf is dirtied once for all the keys in that leaf, and the leaf is
   * rebalanced once, when the pass leaves it.  A key not in the tree is skipped (its leaf is
   * dirtied all the same).
   */
  async deleteSorted(keys: ReadonlyArray<Buffer>): Promise<void> {
    const txn = this.enter()
    try {
      let path: PathStep[] | undefined
      let hi = MAX_KEY // the last key the leaf at the end of `path` covers
      let prev: Buffer | undefined
      for (const key of keys) {
        if (prev && keyCmp(prev, key) >= 0) throw new FsError('EINVAL', 'deleteSorted: keys not in ascending order')
        prev = key
        if (path && keyCmp(key, hi) > 0) {
          await this.rebalance(txn, path)
          path = undefined
        }
        if (this.root.height === 0) return
        if (!path) ({ path, hi } = await this.dirtyLeaf(txn, key))
        const leaf = path[path.length - 1]!.node
        const i = leaf.lowerBound(key)
        if (i < leaf.nr && keyCmp(leaf.keys[i]!, key) === 0) leaf.take(i, i + 1)
      }
      if (path) await this.rebalance(txn, path)
    } finally {
      this.busy = false
    }
  }

  /** Remove the item at `key` from the tree.  Returns the removed item, if there was one. */
  async delete(key: Buffer): Promise<Item | undefined> {
    if (!(await this.lookup(key))) return undefined
    const txn = this.enter()
    try {
      const path = await this.dirtyPath(txn, key)
      const leaf = path[path.length - 1]!.node
      const i = leaf.lowerBound(key)
      const old = itemAt(leaf, i)
      leaf.take(i, i + 1)
      await this.rebalance(txn, path)
      return old
    } finally {
      this.busy = false
    }
  }

  /** Split overfull nodes from the bottom of `path` up, growing the tree at the root. */
  private split(txn: BtreeTxn, path: PathStep[]): void {
    for (let d = path.length - 1; d >= 0; d--) {
      const { node, idx } = path[d]!
      if (node.bytes <= NODE_CAPACITY) return
      this.counters.splits++
      // the new left sibling takes the first half of the bytes
      let half = 0
      let at = 0
      while (at < node.nr - 1 && half + node.itemBytes(at) <= node.bytes / 2) half += node.itemBytes(at++)
      if (at === 0) at = 1
      const left = this.newNode(txn, node.level)
      left.put(0, node.take(0, at))
      const leftKey = left.keys[left.nr - 1]!
      const leftRef = { blkno: left.blkno, seq: left.seq }
      if (d === 0) {
        if (this.root.height >= MAX_HEIGHT) throw new FsError('ENOSPC', 'btree height limit reached')
        const root = this.newNode(txn, node.level + 1)
        root.keys = [leftKey, MAX_KEY]
        root.refs = [leftRef, { blkno: node.blkno, seq: node.seq }]
        root.bytes = 2 * PARENT_ITEM
        this.root = { ref: { blkno: root.blkno, seq: root.seq }, height: this.root.height + 1 }
        return
      }
      const parent = path[d - 1]!.node
      parent.keys.splice(idx, 0, leftKey)
      parent.refs.splice(idx, 0, leftRef)
      parent.bytes += PARENT_ITEM
      path[d] = { node, idx: idx + 1 }
    }
  }

  /** Join or rebalance underfull nodes from the bottom of `path` up; shrink the root. */
  private async rebalance(txn: BtreeTxn, path: PathStep[]): Promise<void> {
    for (let d = path.length - 1; d >= 1; d--) {
      const { node, idx } = path[d]!
      if (node.bytes >= LOW_WATER) break
      const parent = path[d - 1]!.node
      if (parent.nr < 2) break
      const sibIdx = idx + 1 < parent.nr ? idx + 1 : idx - 1
      const sib = await this.dirtyNode(txn, parent.refs[sibIdx]!)
      parent.refs[sibIdx] = { blkno: sib.blkno, seq: sib.seq }
      const [left, right, leftIdx] = sibIdx > idx ? [node, sib, idx] : [sib, node, sibIdx]
      if (left.bytes + right.bytes <= NODE_CAPACITY) {
        // join: the right node absorbs the left; the parent's key for the right stays
        this.counters.joins++
        right.put(0, left.take(0, left.nr))
        parent.keys.splice(leftIdx, 1)
        parent.refs.splice(leftIdx, 1)
        parent.bytes -= PARENT_ITEM
        txn.dirty.delete(left.blkno)
        txn.alloc.free(left.blkno)
      } else {
        // rebalance: move items across until both halves are near even
        this.counters.rebalances++
        const target = (left.bytes + right.bytes) / 2
        if (left.bytes < right.bytes) {
          let n = 0
          let moved = 0
          while (n < right.nr - 1 && left.bytes + moved + right.itemBytes(n) <= target + 1)
            moved += right.itemBytes(n++)
          if (n === 0) n = 1
          left.put(left.nr, right.take(0, n))
        } else {
          let n = 0
          let moved = 0
          while (n < left.nr - 1 && right.bytes + moved + left.itemBytes(left.nr - 1 - n) <= target + 1)
            moved += left.itemBytes(left.nr - 1 - n++)
          if (n === 0) n = 1
          right.put(0, left.take(left.nr - n, left.nr))
        }
        parent.keys[leftIdx] = left.keys[left.nr - 1]!
        parent.refs[leftIdx] = { blkno: left.blkno, seq: left.seq }
      }
    }
    // shrink: a parent root with one child hands the root to the child; an empty leaf root goes
    for (;;) {
      const ref = this.root.ref
      if (this.root.height === 0) return
      const root = await this.getNode(ref)
      if (root.isLeaf && root.nr === 0) {
        txn.dirty.delete(root.blkno)
        txn.alloc.free(root.blkno)
        this.root = EMPTY_ROOT
        return
      }
      if (root.isLeaf || root.nr !== 1) return
      txn.dirty.delete(root.blkno)
      txn.alloc.free(root.blkno)
      this.root = { ref: root.refs[0]!, height: this.root.height - 1 }
    }
  }
}

/*
 * Key comparison for the read path.  Buffer.compare is a native call costing ~100 ns even for
 * 34-byte keys; a JS loop that stops at the first differing byte costs a fraction of that, and
 * a lookup makes ~20 comparisons.  Same order as Buffer.compare (bytes, then length).
 */
function keyCmp(a: Buffer, b: Buffer): number {
  const n = a.length < b.length ? a.length : b.length
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!
    if (d !== 0) return d
  }
  return a.length - b.length
}

/** Node.lowerBound with keyCmp: the first index whose key is >= `key` (keys.length when none). */
function searchKeys(keys: Buffer[], key: Buffer): number {
  let lo = 0
  let hi = keys.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (keyCmp(keys[mid]!, key) < 0) lo = mid + 1
    else hi = mid
  }
  return lo
}

function checkItem(key: Buffer, val: Buffer): void {
  if (key.length !== KEY_SIZE) throw new FsError('EINVAL', `key of ${key.length} bytes`)
  if (val.length > MAX_VAL_LEN) throw new FsError('EINVAL', `item value of ${val.length} bytes exceeds ${MAX_VAL_LEN}`)
}

/** Insert or replace `key` in `leaf` (keeping the buffers given); the item it replaced, if any. */
function setInLeaf(leaf: Node, key: Buffer, val: Buffer, seq: number, flags: number): Item | undefined {
  const i = leaf.lowerBound(key)
  if (i < leaf.nr && keyCmp(leaf.keys[i]!, key) === 0) {
    const old = itemAt(leaf, i)
    leaf.bytes += val.length - leaf.vals[i]!.length
    leaf.seqs[i] = seq
    leaf.flags[i] = flags
    leaf.vals[i] = val
    return old
  }
  leaf.keys.splice(i, 0, key)
  leaf.seqs.splice(i, 0, seq)
  leaf.flags.splice(i, 0, flags)
  leaf.vals.splice(i, 0, val)
  leaf.bytes += LEAF_ITEM_HDR + val.length
  return undefined
}

function itemAt(n: Node, i: number): Item {
  return { key: n.keys[i]!, seq: n.seqs[i]!, flags: n.flags[i]!, val: n.vals[i]! }
}

const MIN_KEY_BUF = Buffer.alloc(KEY_SIZE, 0)

/** The smallest key greater than `k` (MAX_KEY stays MAX_KEY). */
export function keyInc(k: Buffer): Buffer {
  const r = Buffer.from(k)
  for (let i = r.length - 1; i >= 0; i--) {
    if (r[i] !== 0xff) {
      r[i]!++
      return r
    }
    r[i] = 0
  }
  return Buffer.from(MAX_KEY)
}

/** The largest key smaller than `k` (MIN stays MIN). */
export function keyDec(k: Buffer): Buffer {
  const r = Buffer.from(k)
  for (let i = r.length - 1; i >= 0; i--) {
    if (r[i] !== 0) {
      r[i]!--
      return r
    }
    r[i] = 0xff
  }
  return Buffer.alloc(KEY_SIZE, 0)
}
