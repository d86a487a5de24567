/*
 * change-quorum-config: replace the quorum slot configuration (slot count and each slot's
 * address) in the super block of an unmounted filesystem (the original's
 * `scoutfs change-quorum-config`).
 *
 * What it owns: the super block's quorumSlots/quorumAddrs, and clearing the quorum blocks the
 * new configuration makes meaningless.  Nothing else on the device is touched.
 *
 * Invariants:
 *  - Nothing is written unless the new configuration is valid (1..15 slots, every address
 *    HOST:PORT with a port of 1..65535 in a slot below the count, at least one address, no two
 *    slots on one address) and the device holds a metadata super block this version decodes
 *    and re-encodes to the very same bytes (so rewriting it changes only the quorum fields and
 *    the header's seq, blkno and crc).
 *  - Nothing is written while the filesystem looks mounted, unless forced:
 *      a quorum slot's block records a BEGIN without its END (a member mounted and never
 *      unmounted cleanly), or cannot be read (we cannot tell);
 *      the super block records mounted clients (mounts the server never saw leave);
 *      a single-node filesystem's server lease (server/server-lease.ts, slot 0's block when no
 *      slot has an address) says a server runs, or crashed without releasing it.
 *    The agents read the configuration once, at mount: changing it under a running one would
 *    split the cluster.  `force` is for when every agent is known to be stopped (a crash).
 *  - A slot whose address changed or that is removed gets its quorum block zeroed (its
 *    history belongs to another member); so does slot 0 of a single-node filesystem (its
 *    block is the lease, not a quorum block).  Unchanged slots keep their blocks: terms and
 *    votes persist, and an unfenced leadership stays visible to the next leader.  Zeroing the
 *    block of a slot whose leadership may still run (elected, not stopped, not fenced by a
 *    later leader) would hide it from the next leader's fencing: refused unless forced.
 *  - Order: the blocks are zeroed (and flushed) before the super names the new configuration,
 *    so a crash in between leaves the old configuration with some blocks zeroed (safe: no
 *    member runs) and running the command again clears what it must.  The super is then
 *    written to both copies, one after the other, each flushed: after the first the new
 *    configuration is in force (a torn first write leaves the old one), after the second no
 *    valid copy names the old slots any more.
 *  - The data device's copy of the super is not rewritten: it only identifies the data device
 *    (fsid, flags); nothing reads its quorum fields.
 * Offline only: nothing stops an agent from mounting while this runs.
 */
import { BlockCache } from '../storage/block.js'
import { Btree } from '../storage/btree.js'
import type { BlockDevice } from '../storage/device.js'
import { QUORUM_MAX_SLOTS, SMALL_BLOCK_SIZE, SUPER_BLKNOS } from '../storage/format.js'
import { decodeQuorumBlock, quorumBlockOffset, suspectLeaders, type QuorumBlock } from '../storage/quorum-block.js'
import { encodeSuper, readSuper, readSuperCopies, writeSuper, type SuperBlock } from '../storage/super.js'
import { mountedClientKey } from '../protocol/server-api.js'
import { readServerLease } from '../server/server-lease.js'
import { FsError } from '../util/errors.js'

/** bytes an address may take in the super block (its field is 64 bytes, NUL-terminated) */
const ADDR_MAX_BYTES = 63

export interface QuorumConfig {
  /** the slot count */
  slots: number
  /** per slot (index = slot number): "host:port", '' where the slot has no address */
  addrs: string[]
}

export interface ChangeQuorumOptions extends QuorumConfig {
  /** change it even though the filesystem looks mounted, or a cleared slot may still lead */
  force?: boolean
}

export interface ChangeQuorumResult {
  fsid: bigint
  old: QuorumConfig
  new: QuorumConfig
  /** false when the new configuration equals the old: nothing was written */
  changed: boolean
  /** slots whose quorum blocks were zeroed */
  cleared: number[]
  /** what `force` overrode (empty when nothing needed it) */
  overridden: string[]
  /** the write seq of the super now in force */
  writeSeq: number
}

/** "3 (0: 10.0.0.1:7001, 1: -, 2: -)": a configuration as mkfs prints it. */
export function describeQuorumSlots(c: QuorumConfig): string {
  const addrs = Array.from({ length: c.slots }, (_, i) => c.addrs[i] ?? '')
  return `${c.slots}${addrs.some((a) => a) ? ` (${addrs.map((a, i) => `${i}: ${a || '-'}`).join(', ')})` : ''}`
}

/** Check a configuration (EINVAL naming what is wrong); returns its addresses padded to the count. */
export function validateQuorumConfig(c: QuorumConfig): string[] {
  if (!Number.isInteger(c.slots) || c.slots < 1 || c.slots > QUORUM_MAX_SLOTS)
    throw new FsError('EINVAL', `the quorum slot count must be 1 to ${QUORUM_MAX_SLOTS}, not ${c.slots}`)
  const seen = new Map<string, number>()
  c.addrs.forEach((a, slot) => {
    if (!a) return
    if (slot >= QUORUM_MAX_SLOTS)
      throw new FsError('EINVAL', `quorum slot ${slot} is out of range 0..${QUORUM_MAX_SLOTS - 1}`)
    if (slot >= c.slots)
      throw new FsError(
        'EINVAL',
        `quorum slot ${slot} has an address (${a}) but the configuration has only ${c.slots} slot(s), 0..${c.slots - 1}: ` +
          `give -Q ${slot + 1} or more, or leave out -Q N`,
      )
    const m = /^(.+):(\d+)$/.exec(a)
    if (!m || !m[1]) throw new FsError('EINVAL', `quorum slot ${slot}'s address '${a}' is not HOST:PORT`)
    const port = Number(m[2])
    if (port < 1 || port > 65535)
      throw new FsError('EINVAL', `quorum slot ${slot}'s port ${m[2]} is out of range 1..65535`)
    if (Buffer.byteLength(a, 'utf8') > ADDR_MAX_BYTES)
      throw new FsError('EINVAL', `quorum slot ${slot}'s address '${a}' is longer than ${ADDR_MAX_BYTES} bytes`)
    const other = seen.get(a)
    if (other !== undefined)
      throw new FsError('EINVAL', `quorum slots ${other} and ${slot} both have address ${a}: each member needs its own`)
    seen.set(a, slot)
  })
  if (!seen.size)
    throw new FsError(
      'EINVAL',
      'the quorum configuration gives no slot an address: give at least one -Q NR,ADDR,PORT (the slots with an address are the quorum)',
    )
  return Array.from({ length: c.slots }, (_, i) => c.addrs[i] ?? '')
}

/** Why the filesystem looks mounted (empty: it does not). */
async function inUse(meta: BlockDevice, sb: SuperBlock): Promise<{ reasons: string[]; blocks: QuorumBlock[] }> {
  const reasons: string[] = []
  const blocks: QuorumBlock[] = []
  if (sb.quorumAddrs.some((a) => a)) {
    const raw = await meta.read(quorumBlockOffset(0), sb.quorumSlots * SMALL_BLOCK_SIZE)
    for (let s = 0; s < sb.quorumSlots; s++) {
      let q: QuorumBlock | undefined | 'invalid'
      try {
        q = decodeQuorumBlock(sb.fsid, s, raw.subarray(s * SMALL_BLOCK_SIZE, (s + 1) * SMALL_BLOCK_SIZE))
      } catch {
        q = 'invalid' // a field out of range: not a quorum block this version wrote
      }
      if (q === 'invalid') {
        reasons.push(
          `quorum slot ${s}'s block is unreadable (corrupt, or not this filesystem's): whether a member is mounted there cannot be told`,
        )
        continue
      }
      if (!q) continue
      blocks.push(q)
      const { begin, end } = q.events
      if (begin.rid !== 0 && (end.rid !== begin.rid || end.ts < begin.ts))
        reasons.push(
          `quorum slot ${s}: a member mounted (rid ${begin.rid.toString(16)}, agent pid ${q.pid} on ${q.host || '?'}, ` +
            `${new Date(begin.ts).toISOString()}) and never unmounted cleanly`,
        )
    }
  } else {
    // a single-node filesystem: slot 0's block is the server lease, not a quorum block
    let lease: Awaited<ReturnType<typeof readServerLease>>
    try {
      lease = await readServerLease(meta, sb.fsid)
    } catch {
      reasons.push(`the server lease (quorum slot 0's block) is unreadable: whether a server runs cannot be told`)
    }
    if (lease?.running)
      reasons.push(
        `the server lease says agent pid ${lease.pid} on ${lease.host || '?'} serves this single-node filesystem (or crashed without releasing it)`,
      )
  }
  const cache = new BlockCache(meta, sb.fsid, 64)
  const rids: string[] = []
  for await (const it of new Btree(sb.mountedClients, cache).range(
    mountedClientKey(0),
    mountedClientKey(0x1fffffffffffff),
  ))
    rids.push(it.key.readBigUInt64BE(1).toString(16))
  if (rids.length)
    reasons.push(
      `the super block records ${rids.length} mounted client(s) (rid ${rids.slice(0, 8).join(', ')}${rids.length > 8 ? ', ...' : ''}) that never unmounted cleanly`,
    )
  return { reasons, blocks }
}

/** Replace the quorum configuration of the filesystem on `meta` (see the top of this file). */
export async function changeQuorumConfig(meta: BlockDevice, opts: ChangeQuorumOptions): Promise<ChangeQuorumResult> {
  const addrs = validateQuorumConfig(opts)
  const sb = await readSuper(meta)
  const { copies } = await readSuperCopies(meta)
  const cur = copies.find((c) => c.sb?.writeSeq === sb.writeSeq && c.sb.fsid === sb.fsid)
  if (!cur)
    throw new FsError('EIO', `${meta.path}: the super block changed while it was read; is an agent running on it?`)
  const raw = await meta.read(cur.blkno * SMALL_BLOCK_SIZE, SMALL_BLOCK_SIZE)
  if (!encodeSuper(sb, cur.blkno).equals(raw))
    throw new FsError(
      'EUCLEAN',
      `${meta.path}: the super block at 4 KiB block ${cur.blkno} holds bytes this version of scoutfs does not write; ` +
        `refusing to rewrite it (run 'scoutfs check' and use the scoutfs that made it)`,
    )

  const old: QuorumConfig = { slots: sb.quorumSlots, addrs: sb.quorumAddrs.slice() }
  const next: QuorumConfig = { slots: opts.slots, addrs }
  const result: ChangeQuorumResult = {
    fsid: sb.fsid,
    old,
    new: next,
    changed: false,
    cleared: [],
    overridden: [],
    writeSeq: sb.writeSeq,
  }
  const singleNode = !old.addrs.some((a) => a)
  for (let s = 0; s < Math.max(old.slots, next.slots); s++)
    if (s >= next.slots || (old.addrs[s] ?? '') !== (next.addrs[s] ?? '') || (singleNode && s === 0))
      result.cleared.push(s)
  if (old.slots === next.slots && result.cleared.length === 0) return result

  const refuse: string[] = []
  const { reasons, blocks } = await inUse(meta, sb)
  if (reasons.length) refuse.push(`the filesystem looks mounted: ${reasons.join('; ')}`)
  // leaderships not known to be fenced: elected, not stopped, not older than the last FENCE
  const suspects = suspectLeaders(blocks, { slot: -1, rid: -1, term: Number.MAX_SAFE_INTEGER })
  for (const q of suspects.filter((q) => result.cleared.includes(q.slot)))
    refuse.push(
      `quorum slot ${q.slot}'s block shows it elected leader in term ${q.events.elect.term} and never stopped: ` +
        `${q.slot >= next.slots || !next.addrs[q.slot] ? 'removing' : 'readdressing'} the slot clears that record, ` +
        `so the next leader would not fence it`,
    )
  if (refuse.length && !opts.force)
    throw new FsError(
      'EBUSY',
      `${meta.path}: ${refuse.join('; ')}.  Unmount every agent of the filesystem cleanly (scoutfs umount on each, ` +
        `or stop their pods) and run change-quorum-config again; only when every agent is known to be stopped ` +
        `(e.g. after a crash) add --force`,
    )
  result.overridden = refuse

  const zero = Buffer.alloc(SMALL_BLOCK_SIZE)
  for (const s of result.cleared) await meta.write(quorumBlockOffset(s), zero)
  await meta.flush()

  let sb2 = await writeSuper(meta, { ...sb, quorumSlots: next.slots, quorumAddrs: next.addrs })
  sb2 = await writeSuper(meta, sb2)
  const check = await readSuperCopies(meta)
  const now = check.current
  if (
    !now ||
    now.writeSeq !== sb2.writeSeq ||
    check.copies.some((c) => !c.sb) ||
    !encodeSuper(sb2, SUPER_BLKNOS[sb2.writeSeq % 2]!).equals(
      await meta.read(SUPER_BLKNOS[sb2.writeSeq % 2]! * SMALL_BLOCK_SIZE, SMALL_BLOCK_SIZE),
    )
  )
    throw new FsError('EIO', `${meta.path}: the super block read back after the change is not the one written`)
  result.changed = true
  result.writeSeq = sb2.writeSeq
  return result
}
