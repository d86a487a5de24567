/*
 * `scoutfs change-quorum-config` as a user runs it: a real process per command, on
 * file-backed devices; the quorum blocks a mounted (or crashed) agent would leave are written
 * here with the storage layer's own writer.
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { closeSync, mkdtempSync, openSync, readSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FileDevice } from '../../node-agent/src/storage/device.js'
import { QUORUM_BLKNO, QUORUM_MAX_SLOTS, SMALL_BLOCK_SIZE, SUPER_BLKNOS } from '../../node-agent/src/storage/format.js'
import {
  newQuorumBlock,
  readQuorumBlocks,
  writeQuorumBlock,
  type QuorumBlock,
} from '../../node-agent/src/storage/quorum-block.js'
import { encodeSuper, readSuperCopies, type SuperBlock } from '../../node-agent/src/storage/super.js'
import { SuperWriter } from '../../node-agent/src/storage/super-writer.js'
import { NO_IDENTITY, encodeMountIdentity, mountedClientKey } from '../../node-agent/src/protocol/server-api.js'
import { ServerLease } from '../../node-agent/src/server/server-lease.js'
import { runScoutfs, type CliResult } from '../../node-agent/src/tools/launcher/scoutfs-cli.js'

const scoutfs = (...args: string[]): Promise<CliResult> => runScoutfs(args, { timeoutMs: 60_000 })

/** The bytes of both super copies and every quorum block: what a refused change must not touch. */
function fixedBlocks(path: string): Buffer {
  const first = SUPER_BLKNOS[0]
  const len = (QUORUM_BLKNO + QUORUM_MAX_SLOTS - first) * SMALL_BLOCK_SIZE
  const b = Buffer.alloc(len)
  const fd = openSync(path, 'r')
  try {
    readSync(fd, b, 0, len, first * SMALL_BLOCK_SIZE)
  } finally {
    closeSync(fd)
  }
  return b
}

function quorumBlockBytes(path: string, slot: number): Buffer {
  const b = Buffer.alloc(SMALL_BLOCK_SIZE)
  const fd = openSync(path, 'r')
  try {
    readSync(fd, b, 0, SMALL_BLOCK_SIZE, (QUORUM_BLKNO + slot) * SMALL_BLOCK_SIZE)
  } finally {
    closeSync(fd)
  }
  return b
}

async function withDev<T>(path: string, fn: (d: FileDevice) => Promise<T>): Promise<T> {
  const d = await FileDevice.open(path)
  try {
    return await fn(d)
  } finally {
    await d.close()
  }
}

async function currentSuper(path: string): Promise<SuperBlock> {
  const sb = await withDev(path, async (d) => (await readSuperCopies(d)).current)
  assert.ok(sb, `${path} has a valid super`)
  return sb
}

/** Write slot `slot`'s block with `events` (name -> [rid, term, ts]). */
async function writeBlock(
  path: string,
  slot: number,
  events: Partial<Record<keyof QuorumBlock['events'], [number, number, number]>>,
): Promise<void> {
  await withDev(path, async (d) => {
    const { fsid } = (await readSuperCopies(d)).current!
    const q = newQuorumBlock(slot, 12345)
    for (const [name, [rid, term, ts]] of Object.entries(events))
      q.events[name as keyof QuorumBlock['events']] = { rid, term, ts }
    await writeQuorumBlock(d, fsid, q)
  })
}

const A0 = '0,127.0.0.1,7001'
const A1 = '1,127.0.0.1,7002'
const A2 = '2,127.0.0.1,7003'

describe('scoutfs change-quorum-config', function () {
  let dir: string
  let meta: string
  let data: string

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'scoutfs-qcfg-'))
    meta = join(dir, 'meta.img')
    data = join(dir, 'data.img')
    writeFileSync(meta, '')
    writeFileSync(data, '')
    truncateSync(meta, 128 << 20)
    truncateSync(data, 64 << 20)
  })
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  async function mkfs(...q: string[]): Promise<void> {
    const r = await scoutfs('mkfs', ...q.flatMap((v) => ['-Q', v]), meta, data)
    assert.equal(r.code, 0, r.stderr)
  }

  it('changes one slot to three: print shows them, check is clean, the rest of the super is as it was', async () => {
    await mkfs(A0)
    const now = Date.now()
    // slot 0's member mounted and unmounted cleanly: its history stays (the address is kept)
    await writeBlock(meta, 0, { begin: [7, 2, now], term: [7, 5, now], end: [7, 5, now + 1] })
    const slot0 = quorumBlockBytes(meta, 0)
    const before = await currentSuper(meta)

    const r = await scoutfs('change-quorum-config', '-Q', A0, '-Q', A1, '-Q', A2, meta)
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /Changed the quorum configuration of scoutfs filesystem [0-9a-f]{16}/)
    assert.match(r.stdout, /old quorum slots: 1 \(0: 127\.0\.0\.1:7001\)/)
    assert.match(r.stdout, /new quorum slots: 3 \(0: 127\.0\.0\.1:7001, 1: 127\.0\.0\.1:7002, 2: 127\.0\.0\.1:7003\)/)
    assert.match(r.stdout, /cleared quorum blocks: slot 1, slot 2\n/)

    const p = await scoutfs('print', meta)
    assert.equal(p.code, 0, p.stderr)
    assert.match(p.stdout, /quorum_slots +3\n/)
    assert.match(p.stdout, /slot 0 +127\.0\.0\.1:7001\n/)
    assert.match(p.stdout, /slot 1 +127\.0\.0\.1:7002\n/)
    assert.match(p.stdout, /slot 2 +127\.0\.0\.1:7003\n/)
    assert.equal((p.stdout.match(/valid, write_seq/g) ?? []).length, 2, p.stdout)
    const c = await scoutfs('check', meta, data)
    assert.equal(c.code, 0, c.stdout + c.stderr)
    assert.match(c.stdout, /clean/)

    // both copies name the new configuration: no valid copy can bring the old one back
    const copies = await withDev(meta, async (d) => (await readSuperCopies(d)).copies)
    for (const cp of copies) assert.equal(cp.sb?.quorumSlots, 3, `copy at ${cp.blkno}`)
    // the new super is the old one byte for byte but for the quorum fields and its seq
    const after = await currentSuper(meta)
    assert.deepEqual(after.quorumAddrs, ['127.0.0.1:7001', '127.0.0.1:7002', '127.0.0.1:7003'])
    assert.ok(after.writeSeq > before.writeSeq)
    const blkno = SUPER_BLKNOS[after.writeSeq % 2]
    const expected = encodeSuper(
      { ...before, writeSeq: after.writeSeq, quorumSlots: 3, quorumAddrs: after.quorumAddrs },
      blkno,
    )
    const fd = openSync(meta, 'r')
    const raw = Buffer.alloc(SMALL_BLOCK_SIZE)
    readSync(fd, raw, 0, SMALL_BLOCK_SIZE, blkno * SMALL_BLOCK_SIZE)
    closeSync(fd)
    assert.ok(raw.equals(expected), 'super bytes other than the quorum fields and header changed')
    // the kept slot keeps its block, the new ones are empty
    assert.ok(quorumBlockBytes(meta, 0).equals(slot0), "slot 0's block was touched")

    // readdressing slot 1 clears the block its old member left; slot 0's stays
    await writeBlock(meta, 1, { begin: [8, 5, now], end: [8, 5, now + 1] })
    const s = await scoutfs('change-quorum-config', '-Q', A0, '-Q', '1,127.0.0.1,7012', '-Q', A2, meta)
    assert.equal(s.code, 0, s.stderr)
    assert.match(s.stdout, /cleared quorum blocks: slot 1\n/)
    assert.ok(quorumBlockBytes(meta, 1).equals(Buffer.alloc(SMALL_BLOCK_SIZE)), "slot 1's old block is still there")
    assert.ok(quorumBlockBytes(meta, 0).equals(slot0), "slot 0's block was touched")
    const blocks = await withDev(meta, (d) => readQuorumBlocks(d, after.fsid, 3))
    assert.deepEqual(blocks.invalid, [])
    assert.equal(blocks.blocks[0]?.events.term.term, 5)

    // the same configuration again writes nothing
    const same = fixedBlocks(meta)
    const again = await scoutfs('change-quorum-config', '-Q', A0, '-Q', '1,127.0.0.1,7012', '-Q', A2, meta)
    assert.equal(again.code, 0, again.stderr)
    assert.match(again.stdout, /nothing written/)
    assert.ok(fixedBlocks(meta).equals(same))
  })

  it('refuses (EBUSY) while a slot says mounted, and changes it with --force', async () => {
    await mkfs(A0, A1)
    const now = Date.now()
    await writeBlock(meta, 0, { begin: [7, 1, now - 10], end: [7, 1, now - 5] }) // unmounted cleanly
    await writeBlock(meta, 1, { begin: [9, 1, now] }) // mounted: no END
    const before = fixedBlocks(meta)
    const r = await scoutfs('change-quorum-config', '-Q', A0, '-Q', A1, '-Q', A2, meta)
    assert.equal(r.code, 1, r.stdout + r.stderr)
    assert.match(r.stderr, /EBUSY: .*looks mounted: quorum slot 1: a member mounted \(rid 9, agent pid \d+/)
    assert.doesNotMatch(r.stderr, /quorum slot 0:/)
    assert.match(r.stderr, /Unmount every agent/)
    assert.match(r.stderr, /--force/)
    assert.ok(fixedBlocks(meta).equals(before), 'a refused change wrote something')

    // an END of an earlier mount of the same rid does not end this one
    await writeBlock(meta, 1, { begin: [9, 1, now], end: [9, 1, now - 1] })
    const stale = fixedBlocks(meta)
    const r2 = await scoutfs('change-quorum-config', '-Q', A0, '-Q', A1, '-Q', A2, meta)
    assert.equal(r2.code, 1, r2.stdout + r2.stderr)
    assert.match(r2.stderr, /EBUSY: .*quorum slot 1: a member mounted/)
    assert.ok(fixedBlocks(meta).equals(stale), 'a refused change wrote something')

    const f = await scoutfs('change-quorum-config', '--force', '-Q', A0, '-Q', A1, '-Q', A2, meta)
    assert.equal(f.code, 0, f.stderr)
    assert.match(f.stderr, /warning: --force: the filesystem looks mounted: quorum slot 1/)
    assert.match(f.stdout, /new quorum slots: 3 /)
    assert.equal((await currentSuper(meta)).quorumSlots, 3)
  })

  it('accepts a cleanly unmounted slot without --force (the refusal above is the missing END)', async () => {
    await mkfs(A0, A1)
    const now = Date.now()
    await writeBlock(meta, 1, { begin: [9, 1, now], end: [9, 1, now] })
    const r = await scoutfs('change-quorum-config', '-Q', A0, '-Q', A1, '-Q', A2, meta)
    assert.equal(r.code, 0, r.stderr)
    assert.equal(r.stderr, '')
  })

  it('refuses while the super records mounted clients, and changes it with --force', async () => {
    await mkfs(A0)
    await withDev(meta, async (d) => {
      const w = await SuperWriter.open(d)
      await w.begin()
      await w.clients.put(mountedClientKey(0xabc), encodeMountIdentity(NO_IDENTITY), 0)
      await w.commit()
    })
    const before = fixedBlocks(meta)
    const r = await scoutfs('change-quorum-config', '-Q', A0, '-Q', A1, meta)
    assert.equal(r.code, 1, r.stdout + r.stderr)
    assert.match(r.stderr, /EBUSY: .*records 1 mounted client\(s\) \(rid abc\)/)
    assert.ok(fixedBlocks(meta).equals(before))
    const f = await scoutfs('change-quorum-config', '-f', '-Q', A0, '-Q', A1, meta)
    assert.equal(f.code, 0, f.stderr)
    assert.equal((await currentSuper(meta)).quorumSlots, 2)
  })

  it('refuses to clear the block of a leader that may still run, unless forced', async () => {
    await mkfs(A0, A1, A2)
    const now = Date.now()
    // slot 1 was elected in term 3 and never stopped, though its agent ended
    await writeBlock(meta, 1, { begin: [5, 2, now], elect: [5, 3, now], end: [5, 3, now + 1] })
    await writeBlock(meta, 0, { begin: [4, 2, now], end: [4, 2, now + 1] })
    const before = fixedBlocks(meta)
    const rm = await scoutfs('change-quorum-config', '-Q', A0, '-Q', A2, meta)
    assert.equal(rm.code, 1, rm.stdout + rm.stderr)
    assert.match(
      rm.stderr,
      /EBUSY: .*quorum slot 1's block shows it elected leader in term 3 and never stopped: removing/,
    )
    const moved = await scoutfs('change-quorum-config', '-Q', A0, '-Q', '1,127.0.0.1,7100', '-Q', A2, meta)
    assert.equal(moved.code, 1, moved.stdout + moved.stderr)
    assert.match(moved.stderr, /quorum slot 1's block .* readdressing/)
    assert.ok(fixedBlocks(meta).equals(before))
    // changing another slot keeps slot 1's record: allowed
    const other = await scoutfs('change-quorum-config', '-Q', A0, '-Q', A1, '-Q', '2,127.0.0.1,7200', meta)
    assert.equal(other.code, 0, other.stderr)
    // a later leader that fenced it (FENCE in term 4) makes it safe to drop
    await writeBlock(meta, 0, {
      begin: [4, 4, now],
      elect: [4, 4, now],
      fence: [4, 4, now],
      stop: [4, 4, now],
      end: [4, 4, now],
    })
    const fenced = await scoutfs('change-quorum-config', '-Q', A0, '-Q', '2,127.0.0.1,7200', meta)
    assert.equal(fenced.code, 0, fenced.stderr)
    assert.match(fenced.stdout, /cleared quorum blocks: slot 1\n/)
  })

  it('removes an unfenced leader slot with --force', async () => {
    await mkfs(A0, A1)
    const now = Date.now()
    await writeBlock(meta, 1, { begin: [5, 2, now], elect: [5, 3, now], end: [5, 3, now + 1] })
    const f = await scoutfs('change-quorum-config', '--force', '-Q', A0, meta)
    assert.equal(f.code, 0, f.stderr)
    assert.match(f.stderr, /warning: --force: quorum slot 1's block shows it elected leader/)
    assert.ok(quorumBlockBytes(meta, 1).equals(Buffer.alloc(SMALL_BLOCK_SIZE)))
    assert.equal((await currentSuper(meta)).quorumSlots, 1)
  })

  it('single-node to quorum: refused while the server lease is held, then clears the lease block', async () => {
    await mkfs('1')
    const fsid = (await currentSuper(meta)).fsid
    const d = await FileDevice.open(meta)
    let lease: ServerLease | undefined
    try {
      lease = await ServerLease.acquire(d, fsid, 77)
      const before = (await currentSuper(meta)).writeSeq
      const r = await scoutfs('change-quorum-config', '-Q', A0, meta)
      assert.equal(r.code, 1, r.stdout + r.stderr)
      assert.match(r.stderr, /EBUSY: .*the server lease says agent pid \d+ on .* serves this single-node filesystem/)
      assert.equal((await currentSuper(meta)).writeSeq, before)
      await lease.release()
      lease = undefined
    } finally {
      await lease?.release()
      await d.close()
    }
    assert.ok(!quorumBlockBytes(meta, 0).equals(Buffer.alloc(SMALL_BLOCK_SIZE)), 'the lease block is there')
    // slot 0 keeps no address, yet its block (the lease, not a quorum block) must go
    const r = await scoutfs('change-quorum-config', '-Q', '3', '-Q', A1, meta)
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /old quorum slots: 1\n/)
    assert.match(r.stdout, /new quorum slots: 3 \(0: -, 1: 127\.0\.0\.1:7002, 2: -\)/)
    assert.match(r.stdout, /cleared quorum blocks: slot 0, slot 1\n/)
    assert.ok(
      quorumBlockBytes(meta, 0).equals(Buffer.alloc(SMALL_BLOCK_SIZE)),
      'the lease block was left as a quorum block',
    )
    const blocks = await withDev(meta, (dev) => readQuorumBlocks(dev, fsid, 3))
    assert.deepEqual(blocks.invalid, [])
  })

  it('rejects bad input with a clear error and leaves the device as it was', async () => {
    await mkfs(A0)
    const before = fixedBlocks(meta)
    const cases: Array<{ args: string[]; code: number; err: RegExp }> = [
      { args: ['-Q', A0, '-Q', '0,127.0.0.1,7009'], code: 2, err: /quorum slot 0 is given twice/ },
      { args: ['-Q', '15,127.0.0.1,7001'], code: 2, err: /quorum slot 15 is out of range 0\.\.14/ },
      { args: ['-Q', '0,127.0.0.1,0'], code: 2, err: /quorum port 0 is out of range 1\.\.65535/ },
      { args: ['-Q', '0,127.0.0.1,65536'], code: 2, err: /quorum port 65536 is out of range/ },
      {
        args: ['-Q', '2', '-Q', A0, '-Q', '2,127.0.0.1,7003'],
        code: 1,
        err: /EINVAL: quorum slot 2 has an address \(127\.0\.0\.1:7003\) but the configuration has only 2 slot\(s\)/,
      },
      { args: ['-Q', '3'], code: 1, err: /EINVAL: the quorum configuration gives no slot an address/ },
      {
        args: ['-Q', A0, '-Q', '1,127.0.0.1,7001'],
        code: 1,
        err: /EINVAL: quorum slots 0 and 1 both have address 127\.0\.0\.1:7001/,
      },
      { args: ['-Q', `0,${'h'.repeat(70)},7001`], code: 1, err: /EINVAL: .* is longer than 63 bytes/ },
      { args: ['-Q', 'three'], code: 2, err: /-Q takes a slot count/ },
      { args: [], code: 2, err: /give the new quorum: -Q NR,ADDR,PORT/ },
    ]
    for (const c of cases) {
      const r = await scoutfs('change-quorum-config', ...c.args, meta)
      assert.equal(r.code, c.code, `${c.args.join(' ')}: ${r.stdout}${r.stderr}`)
      assert.match(r.stderr, c.err, c.args.join(' '))
      assert.equal(r.stdout, '', c.args.join(' '))
      assert.ok(fixedBlocks(meta).equals(before), `${c.args.join(' ')} changed the device`)
    }
    // the data device is not the metadata device
    const dataBefore = fixedBlocks(data)
    const d = await scoutfs('change-quorum-config', '-Q', A0, '-Q', A1, data)
    assert.equal(d.code, 1)
    assert.match(d.stderr, /is a scoutfs data device; give the metadata device/)
    assert.ok(fixedBlocks(data).equals(dataBefore))
  })

  it('refuses a device that holds no scoutfs filesystem and leaves it alone', async () => {
    const junk = randomBytes(1 << 20)
    writeFileSync(meta, junk)
    const r = await scoutfs('change-quorum-config', '-Q', A0, '-Q', A1, meta)
    assert.equal(r.code, 1, r.stdout + r.stderr)
    assert.match(r.stderr, /EINVAL: .*holds no valid scoutfs super block .*formatted with 'scoutfs mkfs'/)
    const fd = openSync(meta, 'r')
    const now = Buffer.alloc(junk.length)
    readSync(fd, now, 0, junk.length, 0)
    closeSync(fd)
    assert.ok(now.equals(junk), 'the device changed')
    const missing = await scoutfs('change-quorum-config', '-Q', A0, join(dir, 'nope.img'))
    assert.equal(missing.code, 1)
    assert.match(missing.stderr, /ENOENT: .*nope\.img does not exist/)
  })
})
