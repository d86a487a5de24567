/*
 * print: a human-readable dump of a metadata device: the super block (both copies), the
 * quorum blocks (each slot's events as term/mount, and the leader they name), every
 * tree's shape and items, the allocators' extents and the server's block lists.  Read-only;
 * a block that cannot be read is printed as an error line and its subtree skipped.
 */
import { ExtentAlloc, readList } from '../storage/alloc.js'
import { BlockCache } from '../storage/block.js'
import { Btree, ITEM_DELETION, type Node } from '../storage/btree.js'
import type { BlockDevice } from '../storage/device.js'
import { keyToString, type BlockRef, type BtreeRoot, type ListHead } from '../storage/format.js'
import { QUORUM_EVENTS, leaderOf, readQuorumBlocks } from '../storage/quorum-block.js'
import { assertMetaSuper, readSuperCopies, type SuperBlock } from '../storage/super.js'
import { FsError } from '../util/errors.js'

export interface PrintOptions {
  /** print at most this many items per tree (default 100; -1 for all) */
  maxItems?: number
}

const hex16 = (v: bigint): string => v.toString(16).padStart(16, '0')
const ref = (r: BlockRef): string => `${r.blkno}.${r.seq.toString(16)}`
const root = (r: BtreeRoot): string => (r.height ? `blkno ${ref(r.ref)} height ${r.height}` : 'empty')
const list = (l: ListHead): string => (l.totalNr ? `${l.totalNr} blocks, head ${ref(l.ref)}` : 'empty')

export function describeSuper(sb: SuperBlock): string[] {
  return [
    `fsid              ${hex16(sb.fsid)}`,
    `format_version    ${sb.formatVersion}`,
    `flags             0x${sb.flags.toString(16)}`,
    `write_seq         ${sb.writeSeq}`,
    `next_seq          ${sb.nextSeq}`,
    `next_ino          ${sb.nextIno}`,
    `inode_count       ${sb.inodeCount}`,
    `total_meta_blocks ${sb.totalMetaBlocks} (64 KiB)`,
    `total_data_blocks ${sb.totalDataBlocks} (4 KiB)`,
    `created           ${new Date(sb.createdSec * 1000).toISOString()}`,
    `quorum_slots      ${sb.quorumSlots}`,
    ...sb.quorumAddrs.map((a, i) => `  slot ${String(i).padEnd(14)} ${a || '(no address)'}`),
    `fs_root           ${root(sb.fsRoot)}`,
    `logs_root         ${root(sb.logsRoot)}`,
    `mounted_clients   ${root(sb.mountedClients)}`,
    `srch_root         ${root(sb.srchRoot)}`,
    `meta_alloc        ${sb.metaAlloc.totalLen} free, ${root(sb.metaAlloc.root)}`,
    `data_alloc        ${sb.dataAlloc.totalLen} free, ${root(sb.dataAlloc.root)}`,
    `server_avail      ${list(sb.serverAvail)}`,
    `server_freed      ${list(sb.serverFreed)}`,
  ]
}

/** One line per slot: who holds it and its events (term / mount) — storage/quorum-block.ts. */
export async function describeQuorumBlocks(meta: BlockDevice, sb: SuperBlock): Promise<string[]> {
  if (!sb.quorumAddrs.some((a) => a))
    return ['none (no slot has an address: a single-node filesystem, served under the lease)']
  const { blocks, invalid } = await readQuorumBlocks(meta, sb.fsid, sb.quorumSlots)
  const leader = leaderOf(blocks)
  return blocks.map((q, slot) => {
    if (invalid.includes(slot)) return `slot ${slot}: INVALID (checksum or fsid)`
    if (!q) return `slot ${slot}: never written`
    const ev = QUORUM_EVENTS.filter((e) => q.events[e].rid)
      .map((e) => `${e} ${q.events[e].term}/${q.events[e].rid.toString(16)}`)
      .join(' ')
    const who = `pid ${q.pid} on ${q.host || '?'}, vote ${q.votedFor}`
    return `slot ${slot}: ${ev} (${who})${leader?.slot === slot ? ' LEADER' : ''}`
  })
}

export async function printFilesystem(
  meta: BlockDevice,
  out: (line: string) => void,
  opts: PrintOptions = {},
): Promise<void> {
  const max = opts.maxItems ?? 100
  const { current, copies } = await readSuperCopies(meta)
  for (const c of copies)
    out(
      `super copy at 4 KiB block ${c.blkno}: ${c.sb ? `valid, write_seq ${c.sb.writeSeq}` : `invalid (${c.problem})`}`,
    )
  if (!current)
    throw new FsError('EINVAL', `${meta.path} holds no valid scoutfs super block; is it a scoutfs metadata device?`)
  assertMetaSuper(current, meta.path)
  out('')
  out('super block:')
  for (const l of describeSuper(current)) out(`  ${l}`)
  out('')
  out('quorum blocks:')
  for (const l of await describeQuorumBlocks(meta, current)) out(`  ${l}`)
  const cache = new BlockCache(meta, current.fsid, 1024)

  const tree = async (name: string, r: BtreeRoot): Promise<void> => {
    out('')
    out(`${name}: ${root(r)}`)
    if (!r.height) return
    const t = new Btree(r, cache)
    const levels = new Map<number, number>()
    try {
      await t.walk((n: Node) => {
        levels.set(n.level, (levels.get(n.level) ?? 0) + 1)
      })
    } catch (e) {
      out(`  error: ${(e as Error).message}`)
    }
    out(`  blocks per level: ${[...levels].map(([l, c]) => `${l}:${c}`).join(' ')}`)
    let shown = 0
    try {
      for await (const it of t.range(Buffer.alloc(34, 0), Buffer.alloc(34, 0xff))) {
        if (max >= 0 && shown >= max) {
          out('  ... (more items; use --items -1 to print all)')
          break
        }
        const del = it.flags & ITEM_DELETION ? ' deletion' : ''
        out(
          `  ${keyToString(it.key)} seq ${it.seq}${del} len ${it.val.length}${it.val.length ? ` ${it.val.subarray(0, 24).toString('hex')}${it.val.length > 24 ? '..' : ''}` : ''}`,
        )
        shown++
      }
    } catch (e) {
      out(`  error: ${(e as Error).message}`)
    }
  }

  const alloc = async (name: string, a: SuperBlock['metaAlloc']): Promise<void> => {
    out('')
    out(`${name}: ${a.totalLen} free blocks, ${root(a.root)}`)
    let shown = 0
    try {
      for await (const e of new ExtentAlloc(a, cache).extents()) {
        if (max >= 0 && shown >= max) {
          out('  ... (more extents)')
          break
        }
        out(`  free ${e.start}+${e.len}`)
        shown++
      }
    } catch (e) {
      out(`  error: ${(e as Error).message}`)
    }
  }

  const blocks = async (name: string, l: ListHead): Promise<void> => {
    out('')
    out(`${name}: ${list(l)}`)
    try {
      const r = await readList(cache, l)
      out(`  list blocks: ${r.blocks.map((b) => b.blkno).join(' ') || 'none'}`)
      const e = r.entries.slice().sort((a, b) => a - b)
      const runs: string[] = []
      for (let i = 0; i < e.length;) {
        let j = i + 1
        while (j < e.length && e[j] === e[j - 1]! + 1) j++
        runs.push(j - i === 1 ? `${e[i]}` : `${e[i]}-${e[j - 1]}`)
        i = j
      }
      out(`  entries: ${runs.join(' ') || 'none'}`)
    } catch (e) {
      out(`  error: ${(e as Error).message}`)
    }
  }

  await tree('fs_root', current.fsRoot)
  await tree('logs_root', current.logsRoot)
  await tree('mounted_clients', current.mountedClients)
  await tree('srch_root', current.srchRoot)
  await alloc('meta_alloc', current.metaAlloc)
  await alloc('data_alloc', current.dataAlloc)
  await blocks('server_avail', current.serverAvail)
  await blocks('server_freed', current.serverFreed)
}
