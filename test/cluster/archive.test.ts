/*
 * Archive support across the mounts of one cluster (docs/archive.md), on real agents and real
 * FUSE mounts, through the scoutfs command as an archive agent runs it: release and stage with
 * data_version checks, readers (and writers) of offline data that wait on any mount until a
 * stage on another wakes them, data-waiting and data-wait-err, get-fiemap, search-xattrs over
 * files of three mounts, hidden xattrs, xattr totals, and ino-path of hard-linked files.
 *
 * Every expected value comes from what a mount observed (st_ino, sizes, hashes of what was
 * written, the data_version `scoutfs stat` printed), never from what the test merely asked.
 * Waiting is observed, not timed: a reader is known to wait when data-waiting lists it.
 */
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Cluster } from '../helpers/cluster.js'
import { clusterPerSuite, freshClusterDirs, onMount } from '../helpers/cluster-tests.js'
import { scoutfs } from '../helpers/agent.js'
import { killChildren, startPy, type Interactive } from '../helpers/fuse-harness.js'
import { testRng } from '../helpers/rng.js'

const BS = 4096

/** `scoutfs ARGS`, which must succeed; its stdout */
async function ok(...args: string[]): Promise<string> {
  const r = await scoutfs(...args)
  assert.equal(r.code, 0, `scoutfs ${args.join(' ')}: ${r.stderr}`)
  return r.stdout
}

/** `scoutfs stat PATH`, parsed (every line is `name value`) */
async function stat(path: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const line of (await ok('stat', path)).trim().split('\n')) {
    const [k, v] = line.split(/\s+/) as [string, string]
    out[k] = Number(v)
  }
  return out
}

/** Poll `data-waiting` on `mnt` until it lists `line` (a waiter registers when its op reaches the fs). */
async function waitListed(mnt: string, line: string): Promise<string[]> {
  for (;;) {
    const lines = (await ok('data-waiting', '-I', '0', '-B', '0', '-p', mnt)).trim().split('\n').filter(Boolean)
    if (lines.includes(line)) return lines
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** A python child that opens `path` and then reads (or writes) it, printing the result. */
function blockedReader(path: string, offset = 0, length = -1): Interactive {
  return startPy(
    String.raw`
import hashlib
path, off, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_RDONLY)
ready('open')
try:
    os.lseek(fd, off, 0)
    data = b''
    while n < 0 or len(data) < n:
        b = os.read(fd, 1 << 20 if n < 0 else n - len(data))
        if not b: break
        data += b
    ready({'sha': hashlib.sha256(data).hexdigest(), 'len': len(data)})
except OSError as e:
    ready({'errno': errno.errorcode[e.errno]})
`,
    [path, String(offset), String(length)],
  )
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

describe('cluster: archive (release, stage, waiting, srch, totl, ino-path) across 3 mounts', function () {
  this.timeout(300_000)
  let c: Cluster
  const fresh = freshClusterDirs(() => c)
  clusterPerSuite(3, {}, (cl) => (c = cl))
  const mnt = (i: number): string => c.agents[i]!.mnt
  let archiveDir: string
  before(() => (archiveDir = mkdtempSync(join(tmpdir(), 'scoutfs-archive-'))))
  after(() => rmSync(archiveDir, { recursive: true, force: true }))
  afterEach(() => killChildren())

  /** Write a random file of `size` bytes on mount `i`; its bytes (also kept as an archive copy). */
  async function makeFile(i: number, rel: string, name: string, size: number, seed: number): Promise<Buffer> {
    const made = await onMount(
      c,
      i,
      rel,
      `wfile(p(ARGS[0]), gen(int(ARGS[1]), int(ARGS[2]))); out(st(p(ARGS[0])))`,
      name,
      String(seed),
      String(size),
    )
    assert.equal(made.size, size)
    const data = Buffer.from(
      await onMount(c, i, rel, `out(rfile(p(ARGS[0])).hex())`, name).then((h: string) => Buffer.from(h, 'hex')),
    )
    writeFileSync(join(archiveDir, `${rel}-${name}`), data)
    return data
  }

  it('release frees the blocks and keeps size and times; a read on another mount waits until a stage there', async () => {
    const rel = fresh('cycle')
    const rng = testRng('archive-cycle')
    const size = rng.range(5 * BS + 1, 40 * BS)
    const data = await makeFile(0, rel, 'f', size, rng.u32())
    const f0 = join(mnt(0), rel, 'f')
    await ok('sync', mnt(0))
    const before = await stat(f0)
    const blocks = Math.ceil(size / BS)
    assert.ok(before.data_version >= 1, 'written: data_version counted the writes')
    assert.equal(before.online_blocks, blocks)
    assert.equal(before.offline_blocks, 0)
    const st0 = await onMount(c, 1, rel, `out(st(p('f')))`)

    // a stale version changes nothing
    const stale = await scoutfs('release', f0, '-V', String(before.data_version + 1))
    assert.equal(stale.code, 1)
    assert.match(stale.stderr, /ESTALE/)
    assert.deepEqual(await stat(f0), before, 'a refused release changed nothing')

    const df = async (): Promise<number> =>
      Number(
        (await ok('df', mnt(0)))
          .split('\n')
          .find((l) => l.startsWith('Data'))!
          .trim()
          .split(/\s+/)[4],
      )
    const freeBefore = await df()
    await ok('release', f0, '-V', String(before.data_version))
    const after = await stat(join(mnt(2), rel, 'f'))
    assert.equal(after.data_version, before.data_version, 'release keeps data_version')
    assert.equal(after.data_seq, before.data_seq, 'release keeps data_seq')
    assert.ok(after.meta_seq > before.meta_seq, 'release moves meta_seq')
    assert.equal(after.online_blocks, 0)
    assert.equal(after.offline_blocks, blocks)
    const st1 = await onMount(c, 1, rel, `out(st(p('f')))`)
    assert.equal(st1.size, st0.size, 'size stays')
    assert.equal(st1.mtime_ns, st0.mtime_ns, 'mtime stays')
    assert.equal(st1.ctime_ns, st0.ctime_ns, 'ctime stays')
    assert.equal(st1.blocks, 0, 'st_blocks counts online blocks only')
    assert.equal(
      await ok('get-fiemap', join(mnt(1), rel, 'f')),
      `0: offset: 0, length: ${blocks}, flags: O.L\nentries: 1, extents: 1\n`,
    )
    await ok('sync', mnt(0))
    assert.ok((await df()) >= freeBefore + blocks, `df shows the ${blocks} released blocks free`)

    // a reader on mount 1 waits, listed there, until mount 2 stages
    const reader = blockedReader(join(mnt(1), rel, 'f'))
    assert.equal(await reader.next(), 'open')
    const ino = st0.ino as number
    assert.deepEqual(await waitListed(mnt(1), `ino ${ino} iblock 0 ops read`), [`ino ${ino} iblock 0 ops read`])
    await ok('stage', join(archiveDir, `${rel}-f`), join(mnt(2), rel, 'f'), '-V', String(before.data_version))
    assert.deepEqual(await reader.next(120_000), { sha: sha(data), len: size }, 'the reader got the staged bytes')
    assert.equal((await ok('data-waiting', '-I', '0', '-B', '0', '-p', mnt(1))).trim(), '', 'no one waits any more')
    const staged = await stat(f0)
    assert.deepEqual(
      [staged.data_version, staged.data_seq, staged.online_blocks, staged.offline_blocks],
      [before.data_version, before.data_seq, blocks, 0],
      'stage keeps data_version and data_seq and brings every block online',
    )
    assert.match(await ok('get-fiemap', f0), /^0: offset: 0, length: \d+, flags: \.\.L\n/)
  })

  it('data_version: 0 for a new file, +1 for each write and size change, on whichever mount', async () => {
    const rel = fresh('dv')
    await onMount(c, 0, rel, `os.close(os.open(p('f'), os.O_CREAT | os.O_WRONLY, 0o644)); out(0)`)
    const f = (i: number): string => join(mnt(i), rel, 'f')
    assert.equal((await stat(f(1))).data_version, 0, 'a new, empty file')
    await onMount(c, 1, rel, `os.truncate(p('f'), 10000); out(0)`)
    assert.equal((await stat(f(2))).data_version, 1, 'a truncate')
    await onMount(c, 2, rel, `fd = os.open(p('f'), os.O_WRONLY); os.pwrite(fd, b'a' * 100, 50); os.close(fd); out(0)`)
    const s = await stat(f(0))
    assert.equal(s.data_version, 2, 'a write on a third mount')
    await onMount(c, 0, rel, `os.setxattr(p('f'), 'user.x', b'1'); os.chmod(p('f'), 0o600); out(0)`)
    assert.equal((await stat(f(1))).data_version, 2, 'metadata changes are no data changes')
  })

  it('partial stages: the staged part reads, the rest waits; stage refuses online blocks and stale versions', async () => {
    const rel = fresh('partial')
    const rng = testRng('archive-partial')
    const size = rng.range(6 * BS + 1, 12 * BS)
    const data = await makeFile(1, rel, 'f', size, rng.u32())
    const f = join(mnt(1), rel, 'f')
    const v = (await stat(f)).data_version
    await ok('release', f, '-V', String(v))
    // the first two blocks from the archive's start
    await ok('stage', join(archiveDir, `${rel}-f`), join(mnt(0), rel, 'f'), '-V', String(v), '-l', String(2 * BS))
    const head = await onMount(c, 2, rel, `fd = os.open(p('f'), os.O_RDONLY); out(os.pread(fd, ${2 * BS}, 0).hex())`)
    assert.equal(head, data.subarray(0, 2 * BS).toString('hex'), 'the staged blocks read on another mount')
    const again = await scoutfs('stage', join(archiveDir, `${rel}-f`), f, '-V', String(v), '-l', String(BS))
    assert.equal(again.code, 1, 'staging online blocks is refused')
    assert.match(again.stderr, /EINVAL.*not offline/)
    const staleStage = await scoutfs(
      'stage',
      join(archiveDir, `${rel}-f`),
      f,
      '-V',
      String(v + 1),
      '-o',
      String(2 * BS),
    )
    assert.match(staleStage.stderr, /ESTALE/)
    const tail = blockedReader(join(mnt(2), rel, 'f'), 2 * BS)
    assert.equal(await tail.next(), 'open')
    const ino = (await onMount(c, 2, rel, `out(st(p('f')))`)).ino as number
    await waitListed(mnt(2), `ino ${ino} iblock 2 ops read`)
    // the rest, from an archive file holding only the rest (stage reads the archive from its start)
    const restPath = join(archiveDir, `${rel}-rest`)
    writeFileSync(restPath, data.subarray(2 * BS))
    await ok('stage', restPath, f, '-V', String(v), '-o', String(2 * BS))
    assert.deepEqual(await tail.next(120_000), { sha: sha(data.subarray(2 * BS)), len: size - 2 * BS })
    assert.equal(await onMount(c, 0, rel, `out(fsha(p('f')))`), sha(data))
  })

  it('data-wait-err fails readers and writers of offline data with the errno given', async () => {
    const rel = fresh('wait-err')
    const size = 3 * BS
    await makeFile(2, rel, 'f', size, 7)
    const f = join(mnt(2), rel, 'f')
    const v = (await stat(f)).data_version
    await ok('release', f, '-V', String(v))
    const ino = (await onMount(c, 0, rel, `out(st(p('f')))`)).ino as number
    const reader = blockedReader(join(mnt(0), rel, 'f'))
    assert.equal(await reader.next(), 'open')
    const writer = startPy(
      String.raw`
fd = os.open(sys.argv[1], os.O_WRONLY)
ready('open')
try:
    os.pwrite(fd, b'x' * 10, ${BS + 5})
    ready('written')
except OSError as e:
    ready({'errno': errno.errorcode[e.errno]})
`,
      [join(mnt(0), rel, 'f')],
    )
    assert.equal(await writer.next(), 'open')
    await waitListed(mnt(0), `ino ${ino} iblock 0 ops read`)
    await waitListed(mnt(0), `ino ${ino} iblock 1 ops write`)
    const base = ['-p', mnt(0), '-I', String(ino), '-V', String(v), '-F', '0', '-C', String(size)]
    assert.equal(await ok('data-wait-err', ...base, '-O', 'read', '-E', '-61'), 'data_wait_err found 1 waiters.\n')
    assert.deepEqual(await reader.next(120_000), { errno: 'ENODATA' })
    assert.deepEqual(await waitListed(mnt(0), `ino ${ino} iblock 1 ops write`), [`ino ${ino} iblock 1 ops write`])
    assert.equal(await ok('data-wait-err', ...base, '-O', 'write', '-E', '-5'), 'data_wait_err found 1 waiters.\n')
    assert.deepEqual(await writer.next(120_000), { errno: 'EIO' })
    const bad = await scoutfs('data-wait-err', ...base, '-O', 'read', '-E', '5')
    assert.equal(bad.code, 2, 'a positive errno is a usage error')
    assert.equal((await stat(f)).data_version, v, 'the failed write changed nothing')
  })

  it('search-xattrs finds scoutfs.srch. xattrs set on three mounts, and stops finding removed ones', async () => {
    const rel = fresh('srch')
    const name = 'scoutfs.srch.archive-id'
    const inos: number[][] = []
    for (let i = 0; i < 3; i++) {
      const made = await onMount(
        c,
        i,
        rel,
        String.raw`
        m = ARGS[0]
        r = []
        for k in range(4):
            wfile(p(f'{m}-{k}'), b'x')
            os.setxattr(p(f'{m}-{k}'), ARGS[1], f'{m}-{k}'.encode())
            r.append(os.stat(p(f'{m}-{k}')).st_ino)
        wfile(p(f'{m}-plain'), b'y')
        os.setxattr(p(f'{m}-plain'), 'scoutfs.srch.other', b'1')
        out(r)
        `,
        String(i),
        name,
      )
      inos.push(made)
    }
    const all = inos.flat().sort((a, b) => a - b)
    const search = async (i: number): Promise<number[]> =>
      (await ok('search-xattrs', name, '-p', mnt(i))).trim().split('\n').filter(Boolean).map(Number)
    for (let i = 0; i < 3; i++) assert.deepEqual(await search(i), all, `mount ${i} finds the files of every mount`)
    // mount 1 replaces a value (still found once), removes one xattr and unlinks another file
    await onMount(
      c,
      1,
      rel,
      `os.setxattr(p('0-0'), ARGS[0], b'new'); os.removexattr(p('2-1'), ARGS[0]); os.unlink(p('0-3')); out(0)`,
      name,
    )
    const left = all.filter((x) => x !== inos[2]![1] && x !== inos[0]![3])
    for (let i = 0; i < 3; i++) assert.deepEqual(await search(i), left, `mount ${i} after removexattr and unlink`)
    const bad = await scoutfs('search-xattrs', 'user.not-indexed', '-p', mnt(0))
    assert.equal(bad.code, 1)
    assert.match(bad.stderr, /EINVAL.*srch/)
  })

  it('scoutfs.hide. xattrs are not listed but read by name, on every mount', async () => {
    const rel = fresh('hide')
    await onMount(
      c,
      0,
      rel,
      `wfile(p('f'), b''); os.setxattr(p('f'), 'scoutfs.hide.secret', b's1'); os.setxattr(p('f'), 'scoutfs.srch.hide.both', b's2'); os.setxattr(p('f'), 'user.shown', b'v'); out(0)`,
    )
    for (let i = 0; i < 3; i++) {
      const seen = await onMount(
        c,
        i,
        rel,
        `out([sorted(os.listxattr(p('f'))), os.getxattr(p('f'), 'scoutfs.hide.secret').decode(), os.getxattr(p('f'), 'scoutfs.srch.hide.both').decode()])`,
      )
      assert.deepEqual(seen, [['user.shown'], 's1', 's2'], `mount ${i}`)
    }
    const ino = (await onMount(c, 0, rel, `out(st(p('f')))`)).ino as number
    assert.ok((await ok('search-xattrs', 'scoutfs.srch.hide.both', '-p', mnt(2))).split('\n').includes(String(ino)))
  })

  it('read-xattr-totals sums scoutfs.totl. values set, changed and deleted on every mount', async () => {
    const rel = fresh('totl')
    const rng = testRng('archive-totl')
    /** the values each file's xattrs hold now, as the mounts set them */
    const model = new Map<string, Map<string, bigint>>()
    const totals = async (i: number): Promise<Map<string, string>> => {
      const m = new Map<string, string>()
      for (const line of (await ok('read-xattr-totals', '-p', mnt(i))).trim().split('\n').filter(Boolean)) {
        const [k, v] = line.split(' = ') as [string, string]
        m.set(k, v)
      }
      return m
    }
    const expect = (): Map<string, string> => {
      const sums = new Map<string, { t: bigint; n: number }>()
      for (const xs of model.values())
        for (const [name, v] of xs) {
          const k = name.split('.').slice(-3).join('.')
          const s = sums.get(k) ?? { t: 0n, n: 0 }
          sums.set(k, { t: s.t + v, n: s.n + 1 })
        }
      return new Map([...sums].filter(([, s]) => s.n > 0).map(([k, s]) => [k, `${s.t}, ${s.n}`]))
    }
    const names = [`scoutfs.totl.a.${rng.u32()}.2.3`, `scoutfs.totl.b.${rng.u32()}.0.1`]
    const set = async (i: number, file: string, name: string, v: bigint): Promise<void> => {
      await onMount(
        c,
        i,
        rel,
        `wfile(p(ARGS[0]), b'') if not os.path.exists(p(ARGS[0])) else None; os.setxattr(p(ARGS[0]), ARGS[1], ARGS[2].encode()); out(0)`,
        file,
        name,
        String(v),
      )
      if (!model.has(file)) model.set(file, new Map())
      model.get(file)!.set(name, v)
    }
    const mine = async (): Promise<void> => {
      const want = expect()
      for (let i = 0; i < 3; i++) {
        const got = await totals(i)
        for (const [k, v] of want) assert.equal(got.get(k), v, `mount ${i}: total ${k}`)
        for (const n of names) {
          const k = n.split('.').slice(-3).join('.')
          if (!want.has(k)) assert.equal(got.get(k), undefined, `mount ${i}: total ${k} is gone`)
        }
      }
    }
    for (let f = 0; f < 6; f++) await set(f % 3, `f${f}`, names[f % 2]!, BigInt(rng.range(1, 1_000_000)))
    await set(0, 'f0', names[1]!, 18446744073709551615n) // two totals on one file, one at u64 max
    await mine()
    await set(2, 'f1', names[1]!, 5n) // changed on another mount than set it
    await onMount(c, 1, rel, `os.removexattr(p('f2'), ARGS[0]); os.unlink(p('f3')); out(0)`, names[0]!)
    model.get('f2')!.delete(names[0]!)
    model.delete('f3')
    await mine()
    const bad = await onMount(c, 0, rel, `out(E(os.setxattr, p('f0'), 'scoutfs.totl.x.1.2.3', b'12a'))`)
    assert.equal(bad, 'EINVAL', 'a totl value that is not a number')
  })

  it('ino-path prints every path of a hard-linked file, through the link backrefs', async () => {
    const rel = fresh('ino-path')
    const ino = await onMount(
      c,
      0,
      rel,
      `os.makedirs(p('a', 'b')); os.mkdir(p('c')); wfile(p('a', 'b', 'f')); os.link(p('a', 'b', 'f'), p('c', 'g')); out(os.stat(p('c', 'g')).st_ino)`,
    )
    const paths = async (i: number): Promise<string[]> =>
      (await ok('ino-path', '-p', mnt(i), String(ino))).trim().split('\n').sort()
    for (let i = 0; i < 3; i++) assert.deepEqual(await paths(i), [`${rel}/a/b/f`, `${rel}/c/g`].sort(), `mount ${i}`)
    await onMount(c, 1, rel, `os.rename(p('a'), p('z')); os.unlink(p('c', 'g')); out(0)`)
    assert.deepEqual(await paths(2), [`${rel}/z/b/f`])
    const gone = await scoutfs('ino-path', '-p', mnt(0), String(ino + 1_000_000))
    assert.equal(gone.code, 1)
    assert.match(gone.stderr, /ENOENT/)
  })
})
