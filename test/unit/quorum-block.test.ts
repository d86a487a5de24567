/*
 * Quorum blocks (node-agent/src/storage/quorum-block.ts): encode/decode round trips, what
 * reads as invalid (a flipped byte anywhere, another filesystem, another slot's block) or as
 * never written, reads and writes through a FileDevice on a temp file, and the decisions made
 * from the blocks alone: leaderOf, highestTerm and suspectLeaders.
 */
import assert from 'node:assert/strict'
import { promises as fsp } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileDevice } from '../../node-agent/src/storage/device.js'
import { QUORUM_BLKNO, QUORUM_MAX_SLOTS, SMALL_BLOCK_SIZE } from '../../node-agent/src/storage/format.js'
import {
  QUORUM_EVENTS,
  decodeQuorumBlock,
  encodeQuorumBlock,
  highestTerm,
  leaderOf,
  newQuorumBlock,
  quorumBlockOffset,
  readQuorumBlocks,
  suspectLeaders,
  writeQuorumBlock,
  type QuorumBlock,
  type QuorumEventName,
} from '../../node-agent/src/storage/quorum-block.js'

const FSID = 0x5c0a7f5_1234abcdn
const OTHER_FSID = 0x0bad_f00d_0000_0001n

/** A block for `slot` with the given events (rid, term), the rest never happened. */
function block(
  slot: number,
  events: Partial<Record<QuorumEventName, [rid: number, term: number]>> = {},
  votedFor = -1,
): QuorumBlock {
  const q = newQuorumBlock(slot, 4242)
  for (const [name, [rid, term]] of Object.entries(events) as Array<[QuorumEventName, [number, number]]>)
    q.events[name] = { rid, term, ts: 1_700_000_000_000 + term }
  q.votedFor = votedFor
  return q
}

/** A block whose every field is set to something distinct. */
function fullBlock(slot: number, votedFor: number, host: string): QuorumBlock {
  const q = newQuorumBlock(slot, 987_654_321_012)
  QUORUM_EVENTS.forEach((e, i) => {
    q.events[e] = { rid: 0x1234_5678_9abc + i, term: 1000 * (i + 1) + slot, ts: 1_700_000_000_000 + i * 7 }
  })
  q.votedFor = votedFor
  q.writes = 77
  q.pid = 4_000_000_000
  q.host = host
  return q
}

describe('quorum blocks', function () {
  describe('encode and decode', function () {
    it('round-trips every event, the vote (-1 and >= 0), pid, its start time, host and write count', () => {
      for (const slot of [0, 1, QUORUM_MAX_SLOTS - 1]) {
        for (const votedFor of [-1, 0, 7, QUORUM_MAX_SLOTS - 1]) {
          const q = fullBlock(slot, votedFor, `node-${slot}.example`)
          const b = encodeQuorumBlock(FSID, q)
          assert.equal(b.length, SMALL_BLOCK_SIZE)
          assert.deepEqual(decodeQuorumBlock(FSID, slot, b), q)
        }
      }
      // large u64 values survive
      const q = fullBlock(3, 2, 'h')
      q.events.elect = { rid: Number.MAX_SAFE_INTEGER, term: 2 ** 40 + 1, ts: 2 ** 52 }
      q.pidStart = 2 ** 50
      assert.deepEqual(decodeQuorumBlock(FSID, 3, encodeQuorumBlock(FSID, q)), q)
      // a fresh block: no events, no vote, this process
      const f = newQuorumBlock(4, 99)
      const d = decodeQuorumBlock(FSID, 4, encodeQuorumBlock(FSID, f))
      assert.ok(d && d !== 'invalid')
      assert.deepEqual(d, f)
      assert.equal(d.pid, process.pid)
      for (const e of QUORUM_EVENTS) assert.deepEqual(d.events[e], { rid: 0, term: 0, ts: 0 })
    })

    it('truncates a host of more than 255 bytes to 255', () => {
      for (const len of [0, 1, 254, 255, 256, 300, 1000]) {
        const host = Array.from({ length: len }, (_, i) => String.fromCharCode(97 + (i % 26))).join('')
        const d = decodeQuorumBlock(FSID, 1, encodeQuorumBlock(FSID, fullBlock(1, 0, host)))
        assert.ok(d && d !== 'invalid')
        assert.equal(d.host, host.slice(0, 255), `host of ${len} bytes`)
      }
    })

    it('any flipped byte makes the block invalid', () => {
      const good = encodeQuorumBlock(FSID, fullBlock(2, 1, 'node-2'))
      const wrong: string[] = []
      for (let i = 0; i < SMALL_BLOCK_SIZE; i++) {
        for (const flip of [1 << (i % 8), 0xff]) {
          const b = Buffer.from(good)
          b[i] = b[i]! ^ flip
          let d: string
          try {
            d = String(decodeQuorumBlock(FSID, 2, b))
          } catch (e) {
            d = `thrown ${(e as Error).message}`
          }
          if (d !== 'invalid') wrong.push(`byte ${i} ^ ${flip}: ${d}`)
        }
      }
      assert.deepEqual(wrong, [])
      assert.notEqual(decodeQuorumBlock(FSID, 2, good), 'invalid')
    })

    it("another filesystem's block, or another slot's, is invalid; a zeroed block was never written", () => {
      const b = encodeQuorumBlock(OTHER_FSID, fullBlock(2, 1, 'x'))
      assert.notEqual(decodeQuorumBlock(OTHER_FSID, 2, b), 'invalid')
      assert.equal(decodeQuorumBlock(FSID, 2, b), 'invalid')
      // slot 1's block where slot 2's belongs
      assert.equal(decodeQuorumBlock(FSID, 2, encodeQuorumBlock(FSID, fullBlock(1, 1, 'x'))), 'invalid')
      assert.equal(decodeQuorumBlock(FSID, 2, Buffer.alloc(SMALL_BLOCK_SIZE)), undefined)
    })

    it('places slot blocks after the fixed blocks and refuses slots out of range', () => {
      assert.equal(quorumBlockOffset(0), QUORUM_BLKNO * SMALL_BLOCK_SIZE)
      assert.equal(quorumBlockOffset(3), (QUORUM_BLKNO + 3) * SMALL_BLOCK_SIZE)
      for (const bad of [-1, QUORUM_MAX_SLOTS, 1.5]) assert.throws(() => quorumBlockOffset(bad), { code: 'EINVAL' })
    })
  })

  describe('on a FileDevice', function () {
    let dir: string
    let dev: FileDevice

    beforeEach(async () => {
      dir = await fsp.mkdtemp(join(tmpdir(), 'scoutfs-quorum-block-'))
      const path = join(dir, 'meta')
      await fsp.writeFile(path, '')
      await fsp.truncate(path, (QUORUM_BLKNO + QUORUM_MAX_SLOTS + 4) * SMALL_BLOCK_SIZE)
      dev = await FileDevice.open(path)
    })

    afterEach(async () => {
      await dev.close()
      await fsp.rm(dir, { recursive: true, force: true })
    })

    it('writes and reads blocks back; a write advances the write count', async () => {
      const q0 = block(0, { begin: [11, 1], term: [11, 3], elect: [11, 3] }, 0)
      const q2 = block(2, { begin: [22, 1], term: [22, 3] }, 0)
      await writeQuorumBlock(dev, FSID, q0)
      await writeQuorumBlock(dev, FSID, q2)
      q0.events.fence = { rid: 11, term: 3, ts: 5 }
      await writeQuorumBlock(dev, FSID, q0)
      assert.equal(q0.writes, 2)
      const r = await readQuorumBlocks(dev, FSID, 4)
      assert.deepEqual(r.invalid, [])
      assert.equal(r.blocks.length, 4)
      assert.deepEqual(r.blocks[0], q0)
      assert.equal(r.blocks[1], undefined)
      assert.deepEqual(r.blocks[2], q2)
      assert.equal(r.blocks[3], undefined)
      // nothing outside the slot blocks was written
      const raw = await dev.read(0, QUORUM_BLKNO * SMALL_BLOCK_SIZE)
      assert.ok(raw.every((x) => x === 0))
    })

    it('a corrupted block or one of another filesystem is listed invalid and read as absent, never as the leader', async () => {
      // slot 1 leads term 4; slot 2 would lead term 9 but is corrupted; slot 3 is another filesystem's;
      // slot 4 is corrupted in its header
      await writeQuorumBlock(dev, FSID, block(1, { elect: [101, 4] }))
      await writeQuorumBlock(dev, FSID, block(2, { elect: [102, 9], term: [102, 9] }))
      await writeQuorumBlock(dev, OTHER_FSID, block(3, { elect: [103, 12], term: [103, 12] }))
      const fh = await fsp.open(dev.path, 'r+')
      await fh.write(Buffer.from([0xff]), 0, 1, quorumBlockOffset(2) + 200)
      // slot 4: the top byte of its header's seq (a u64 that no longer fits 2^53) is corrupted
      await writeQuorumBlock(dev, FSID, block(4, { elect: [104, 3] }))
      await fh.write(Buffer.from([0xff]), 0, 1, quorumBlockOffset(4) + 23)
      await fh.close()
      const r = await readQuorumBlocks(dev, FSID, 5)
      assert.deepEqual(r.invalid, [2, 3, 4])
      assert.equal(r.blocks[2], undefined)
      assert.equal(r.blocks[3], undefined)
      assert.deepEqual(leaderOf(r.blocks), { slot: 1, term: 4, rid: 101 })
      assert.equal(highestTerm(r.blocks), 4)
      // the other filesystem reads its own block
      const o = await readQuorumBlocks(dev, OTHER_FSID, 5)
      assert.deepEqual(o.invalid, [1, 2, 4])
      assert.equal(o.blocks[3]?.events.elect.term, 12)
    })
  })

  describe('decisions from the blocks', function () {
    it('leaderOf: the greatest ELECT term above its slot STOP term; cleanly stopped ones are ignored', () => {
      assert.equal(leaderOf([]), undefined)
      assert.equal(leaderOf([undefined, block(1, { begin: [1, 1], term: [1, 2] })]), undefined)
      const blocks = [
        block(0, { elect: [100, 3] }),
        block(1, { elect: [101, 7], stop: [101, 7] }), // the highest elect, but stopped cleanly
        undefined,
        block(3, { elect: [103, 5], stop: [103, 2] }), // stopped an older leadership, not this one
        block(4, { elect: [104, 4] }),
      ]
      assert.deepEqual(leaderOf(blocks), { slot: 3, term: 5, rid: 103 })
      // the order of the slots does not matter
      assert.deepEqual(leaderOf([...blocks].reverse()), { slot: 3, term: 5, rid: 103 })
      // all stopped: no leader
      assert.equal(
        leaderOf([block(0, { elect: [1, 3], stop: [1, 3] }), block(1, { elect: [2, 5], stop: [2, 6] })]),
        undefined,
      )
      // a STOP term above the ELECT term ends it too (it stopped a later leadership of the slot)
      assert.deepEqual(leaderOf([block(0, { elect: [1, 3], stop: [1, 4] }), block(1, { elect: [2, 2] })]), {
        slot: 1,
        term: 2,
        rid: 2,
      })
    })

    it('highestTerm: the highest term of any event of any block', () => {
      assert.equal(highestTerm([]), 0)
      assert.equal(highestTerm([undefined, undefined]), 0)
      for (const e of QUORUM_EVENTS) {
        const blocks = [block(0, { begin: [1, 2], term: [1, 3] }), undefined, block(2, { [e]: [5, 11] })]
        assert.equal(highestTerm(blocks), 11, `the term of ${e}`)
      }
    })

    it('suspectLeaders: an unstopped leader of a lower term, not below the highest FENCE term, not this mount', () => {
      const me = { slot: 0, rid: 500, term: 10 }
      const slots = (qs: Array<QuorumBlock | undefined>): number[] => suspectLeaders(qs, me).map((q) => q.slot)
      // elected in a lower term and never stopped: fenced
      assert.deepEqual(slots([undefined, block(1, { elect: [201, 7] })]), [1])
      // stopped cleanly: not fenced
      assert.deepEqual(slots([undefined, block(1, { elect: [201, 7], stop: [201, 7] })]), [])
      // elected in our term or a later one: not ours to fence
      assert.deepEqual(slots([undefined, block(1, { elect: [201, 10] }), block(2, { elect: [202, 12] })]), [])
      // a leader elected below the highest FENCE term was fenced by the leader that wrote it
      const fenced = [
        undefined,
        block(1, { elect: [201, 3] }),
        block(2, { elect: [202, 5], fence: [202, 5] }),
        block(3, { elect: [203, 7] }),
      ]
      assert.deepEqual(slots(fenced), [2, 3], 'the FENCE writer itself (elect = fence term) is still suspect')
      // the FENCE term may sit in any block, even one that stopped since
      assert.deepEqual(
        slots([
          undefined,
          block(1, { elect: [201, 3] }),
          block(2, { elect: [202, 6], fence: [202, 6], stop: [202, 6] }),
        ]),
        [],
      )
      // this very mount (same slot, same rid) is not fenced; a previous mount of our slot is
      assert.deepEqual(slots([block(0, { elect: [500, 6] })]), [])
      assert.deepEqual(suspectLeaders([block(0, { elect: [499, 6] })], me), [block(0, { elect: [499, 6] })])
      // the same rid on another slot is another member (a duplicated rid is not ours to judge here)
      assert.deepEqual(slots([undefined, block(1, { elect: [500, 6] })]), [1])
      // everything at once
      const all = [
        block(0, { elect: [499, 8] }), // a previous mount of our slot: suspect
        block(1, { elect: [201, 9], stop: [201, 9] }), // stopped
        block(2, { elect: [202, 2] }), // below the FENCE term 4
        block(3, { elect: [203, 4], fence: [203, 4] }), // fenced its predecessors, never stopped: suspect
        undefined,
        block(5, { elect: [205, 10] }), // our term (n <= 2)
      ]
      assert.deepEqual(slots(all), [0, 3])
    })
  })
})
