/*
 * The full archive cycle an archive agent runs, on a cluster of three real agents and FUSE
 * mounts (docs/archive.md): create many files on two mounts, walk-inodes from seq 0 to find
 * them, "archive" them (copy each out with its data_version), release them all, walk again
 * (release moved meta_seq but not data_seq), stage some back on another mount, and check their
 * contents against the archive copies while the rest stay offline.
 *
 * SCOUTFS_ARCHIVE_FILES sets the file count (default 10,000, the issue's; smaller runs are for
 * a loaded machine).  The per-file calls go straight to the admin socket (what each scoutfs
 * command does once), a few at a time; the walks use the scoutfs command itself.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { adminCall } from '../../node-agent/src/agent/admin.js'
import type { Cluster } from '../helpers/cluster.js'
import { clusterPerSuite, freshClusterDirs, onMount } from '../helpers/cluster-tests.js'
import { walkInodes, type WalkEntry } from '../helpers/mount-tests.js'
import { testRng } from '../helpers/rng.js'

const BS = 4096
const FILES = Number(process.env.SCOUTFS_ARCHIVE_FILES ?? 10_000)

/** Run `fn` over `items`, `width` at a time. */
async function pool<T>(items: readonly T[], width: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < items.length) await fn(items[next++]!)
    }),
  )
}

describe(`cluster: the archive cycle over ${FILES} files on 3 mounts`, function () {
  this.timeout(3_600_000)
  let c: Cluster
  const fresh = freshClusterDirs(() => c)
  clusterPerSuite(3, { metaBytes: 1 << 30 }, (cl) => (c = cl))
  let archiveDir: string
  before(() => (archiveDir = mkdtempSync(join(tmpdir(), 'scoutfs-archive-cycle-'))))
  after(() => rmSync(archiveDir, { recursive: true, force: true }))

  it('create, walk, archive, release all, walk again, stage some back, verify hashes', async () => {
    const rel = fresh('cycle')
    const rng = testRng('archive-cycle-files')
    const seed = rng.u32()
    const mnt = (i: number): string => c.agents[i]!.mnt
    const t0 = Date.now()
    const step = (what: string): void => console.log(`      ${what} (${((Date.now() - t0) / 1000).toFixed(1)} s)`)

    // mounts 1 and 2 make half of the files each (sizes 1 byte .. 3 blocks), in a directory of
    // their own.  Not mount 0: it made `rel`, so its new inodes share rel's inode group, and its
    // creates would take that group's lock from the others at every path lookup through rel.
    const made = await Promise.all(
      [1, 2].map(async (i) => {
        const mine = Math.floor(FILES / 2) + (i === 1 ? FILES % 2 : 0)
        const out: Array<[number, number]> = []
        // in batches: one python run has a time limit, and 10,000 creates take minutes here
        for (let k = 0; k < mine; k += 500)
          out.push(
            ...(await onMount<Array<[number, number]>>(
              c,
              i,
              rel,
              String.raw`
              m, first, n, seed = ARGS[0], int(ARGS[1]), int(ARGS[2]), int(ARGS[3])
              os.makedirs(p('m' + m), exist_ok=True)
              r = []
              for k in range(first, first + n):
                  rnd = random.Random(seed * 100003 + int(m) * 1000003 + k)
                  path = p('m' + m, str(k))
                  wfile(path, rnd.randbytes(rnd.randint(1, 3 * 4096)))
                  s = os.stat(path)
                  r.append([s.st_ino, s.st_size])
              out(r)
              `,
              String(i),
              String(k),
              String(Math.min(500, mine - k)),
              String(seed),
            )),
          )
        return out
      }),
    )
    const files = made.flat()
    const size = new Map(files)
    assert.equal(size.size, FILES, 'every file has its own inode')
    step(`created ${FILES} files`)

    const ours = (w: WalkEntry[]): WalkEntry[] => w.filter((e) => size.has(e.ino))
    const walk1 = ours(await walkInodes(mnt(0), 'data_seq', '0', '-1'))
    assert.deepEqual(
      walk1.map((e) => e.ino).sort((a, b) => a - b),
      [...size.keys()].sort((a, b) => a - b),
      'walk-inodes data_seq from 0 lists every file once',
    )
    const meta1 = new Map(ours(await walkInodes(mnt(1), 'meta_seq', '0', '-1')).map((e) => [e.ino, e.seq]))
    step('walked')

    // archive: each file's data_version, then its bytes copied out (read on mount 1)
    const version = new Map<number, number>()
    await pool(files, 8, async ([ino]) => {
      version.set(ino, (await adminCall(mnt(2), 'GET /stat', { ino })).data_version)
    })
    const hashes: Record<string, string> = {}
    for (const m of ['m1', 'm2'])
      Object.assign(
        hashes,
        await onMount<Record<string, string>>(
          c,
          1,
          rel,
          String.raw`
          r = {}
          for name in os.listdir(p(ARGS[1])):
              data = rfile(p(ARGS[1], name))
              ino = os.stat(p(ARGS[1], name)).st_ino
              with open(os.path.join(ARGS[0], str(ino)), 'wb') as f:
                  f.write(data)
              r[str(ino)] = sha(data)
          out(r)
          `,
          archiveDir,
          m,
        ),
      )
    assert.equal(Object.keys(hashes).length, FILES)
    step('archived')

    // release every file (from mount 2): all blocks offline, every file still its size
    await pool(files, 8, async ([ino, sz]) => {
      await adminCall(mnt(2), 'POST /release', {
        ino,
        version: version.get(ino)!,
        offset: 0,
        length: Math.ceil(sz / BS) * BS,
      })
    })
    step('released')
    const walk2 = ours(await walkInodes(mnt(0), 'data_seq', '0', '-1'))
    assert.deepEqual(walk2, walk1, 'release changed no data_seq')
    const meta2 = new Map(ours(await walkInodes(mnt(1), 'meta_seq', '0', '-1')).map((e) => [e.ino, e.seq]))
    for (const [ino] of files) assert.ok(meta2.get(ino)! > meta1.get(ino)!, `release moved meta_seq of inode ${ino}`)
    const sample = files.filter((_, k) => k % 7 === 0)
    await pool(sample, 8, async ([ino, sz]) => {
      const s = await adminCall(mnt(0), 'GET /stat', { ino })
      assert.deepEqual(
        [s.data_version, s.online_blocks, s.offline_blocks],
        [version.get(ino), 0, Math.ceil(sz / BS)],
        `inode ${ino} after release`,
      )
    })

    // stage every 50th back, on mount 0, from its archive copy
    const staged = files.filter((_, k) => k % 50 === 0)
    await pool(staged, 8, async ([ino, sz]) => {
      await adminCall(mnt(0), 'POST /stage', {
        ino,
        version: version.get(ino)!,
        offset: 0,
        length: sz,
        archive: join(archiveDir, String(ino)),
      })
    })
    step(`staged ${staged.length}`)
    const back = await onMount<Record<string, string>>(
      c,
      2,
      rel,
      String.raw`
      want = set(ARGS[0].split(','))
      r = {}
      for m in os.listdir(D):
          for name in os.listdir(p(m)):
              ino = str(os.stat(p(m, name)).st_ino)
              if ino in want:
                  r[ino] = fsha(p(m, name))
      out(r)
      `,
      staged.map(([ino]) => ino).join(','),
    )
    assert.equal(Object.keys(back).length, staged.length)
    for (const [ino] of staged) assert.equal(back[ino], hashes[ino], `inode ${ino} staged back intact`)
    const still = files.filter((_, k) => k % 50 === 1)
    await pool(still, 8, async ([ino]) => {
      const s = await adminCall(mnt(1), 'GET /stat', { ino })
      assert.equal(s.online_blocks, 0, `inode ${ino} was not staged: still offline`)
    })
    step('verified')
  })
})
