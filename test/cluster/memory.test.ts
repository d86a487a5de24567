/*
 * Lock invalidation under memory pressure, on a real 3-mount cluster whose agents keep a
 * small item cache (`-o item_cache_items=2000`) over thousands of files: two mounts rewrite
 * batches of their files while the third reads and hashes every other file at the same time;
 * the test coordinates who touches what, so every read has one right answer (the version the
 * writer last reported), and a stale read names the version it saw.  The reader's item cache
 * must really have been shrinking (its metrics say so), or the test did not test pressure.
 */
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Cluster } from '../helpers/cluster.js'
import { PY_DEFS, clusterPerSuite, concurrently, onMount } from '../helpers/cluster-tests.js'
import { startPy } from '../helpers/fuse-harness.js'
import { dedent } from '../helpers/mount-tests.js'
import { envInt, testRng } from '../helpers/rng.js'

const WRITERS = [0, 2]
const READER = 1

/** a counter of the agent's Prometheus text (summed over labels) */
async function metric(addr: string, name: string): Promise<number> {
  const text = await (await fetch(`http://${addr}/metrics`)).text()
  let sum = 0
  let found = false
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line)
    if (m) {
      sum += Number(m[2])
      found = true
    }
  }
  assert.ok(found, `${name} in ${addr}/metrics`)
  return sum
}

describe('cluster: no stale reads under memory pressure (item_cache_items=2000)', function () {
  this.timeout(600_000)
  let c: Cluster
  clusterPerSuite(3, { options: 'item_cache_items=2000', metrics: true }, (cl) => (c = cl))

  it('a mount reading while two others rewrite reads the last version each writer reported', async () => {
    const rng = testRng('pressure')
    const FILES = envInt('SCOUTFS_TEST_PRESSURE_FILES', 2000) // in all, split over the writers
    const STEPS = envInt('SCOUTFS_TEST_PRESSURE_STEPS', 3)
    const BATCH = 150 // files each writer rewrites per step
    const per = Math.floor(FILES / WRITERS.length)
    const files = new Map<number, string[]>()
    for (const w of WRITERS) {
      await onMount(c, w, '', `os.mkdir(p('w${w}')); out(None)`)
      files.set(
        w,
        Array.from({ length: per }, (_, i) => `w${w}/f${String(i).padStart(5, '0')}`),
      )
    }
    const want = new Map<string, { sha: string; v: number }>()

    // the writers and the reader: long-running processes fed one batch per line
    const writerScript =
      'import random, hashlib\n' +
      PY_DEFS +
      dedent(String.raw`
    root = sys.argv[1]
    while True:
        line = wait()
        if not line:
            break
        done = {}
        for rel, v, seed, size in json.loads(line):
            data = ('%s v%d\n' % (rel, v)).encode() + gen(seed, size)
            fd = os.open(os.path.join(root, rel), os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.close(fd)
            done[rel] = sha(data)
        ready(done)
    `)
    const readerScript =
      'import random, hashlib\n' +
      PY_DEFS +
      dedent(String.raw`
    root = sys.argv[1]
    while True:
        line = wait()
        if not line:
            break
        got = {}
        for rel in json.loads(line):
            try:
                with open(os.path.join(root, rel), 'rb') as f:
                    data = f.read()
                got[rel] = [sha(data), data[:data.find(b'\n')].decode('latin-1')]
            except OSError as e:
                got[rel] = [errno.errorcode.get(e.errno, str(e.errno)), '']
        ready(got)
    `)
    const writers = new Map(WRITERS.map((w) => [w, startPy(writerScript, [c.agents[w]!.mnt])]))
    const reader = startPy(readerScript, [c.agents[READER]!.mnt])
    const batchFor = (rels: string[], v: number): Array<[string, number, number, number]> =>
      rels.map((rel) => [rel, v, rng.u32(), rng.range(0, 6000)])
    try {
      // version 0 of every file
      const tc = Date.now()
      for (const w of WRITERS) writers.get(w)!.send(JSON.stringify(batchFor(files.get(w)!, 0)))
      for (const w of WRITERS)
        for (const [rel, sha] of Object.entries(await writers.get(w)!.next<Record<string, string>>(300_000)))
          want.set(rel, { sha, v: 0 })
      assert.equal(want.size, per * WRITERS.length)
      console.log(
        `      ${want.size} files made on mounts ${WRITERS.join(', ')} in ${((Date.now() - tc) / 1000).toFixed(1)} s`,
      )

      let reads = 0
      const t0 = Date.now()
      for (let step = 1; step <= STEPS; step++) {
        const busy = new Set<string>()
        const batches = new Map<number, string[]>()
        for (const w of WRITERS) {
          const b = rng.shuffle([...files.get(w)!]).slice(0, BATCH)
          batches.set(w, b)
          for (const rel of b) busy.add(rel)
        }
        const toRead = rng.shuffle([...want.keys()].filter((rel) => !busy.has(rel)))
        // all at once: the writers rewrite their batches while the reader reads the rest
        for (const w of WRITERS) writers.get(w)!.send(JSON.stringify(batchFor(batches.get(w)!, step)))
        reader.send(JSON.stringify(toRead))
        const [got, ...wrote] = await Promise.all([
          reader.next<Record<string, [string, string]>>(300_000),
          ...WRITERS.map((w) => writers.get(w)!.next<Record<string, string>>(300_000)),
        ])
        const stale: string[] = []
        for (const rel of toRead) {
          const [sha, head] = got![rel]!
          const w = want.get(rel)!
          if (sha !== w.sha) stale.push(`${rel}: wanted v${w.v}, read '${head}' (${sha.slice(0, 12)})`)
        }
        reads += toRead.length
        assert.deepEqual(
          stale.slice(0, 10),
          [],
          `step ${step}: ${stale.length} of ${toRead.length} reads not the last version`,
        )
        for (const r of wrote)
          for (const [rel, sha] of Object.entries(r as Record<string, string>)) want.set(rel, { sha, v: step })
      }
      console.log(
        `      ${STEPS} steps: ${reads} reads on mount ${READER} while mounts ${WRITERS.join(', ')} rewrote ` +
          `${STEPS * BATCH * WRITERS.length} files, in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      )
    } finally {
      for (const p of [...writers.values(), reader]) await p.done(60_000).catch(() => p.kill())
    }

    // every mount reads every file's last version
    const expect = Object.fromEntries([...want].map(([rel, w]) => [rel, w.sha]))
    const { results, ms } = await concurrently<{ n: number; wrong: string[]; nwrong: number }>(
      c.agents.map((a) => ({
        script: String.raw`
        root, want = sys.argv[1], json.load(open(sys.argv[2]))
        wrong = [rel for rel, h in want.items() if fsha(os.path.join(root, rel)) != h]
        ready({'n': len(want), 'nwrong': len(wrong), 'wrong': wrong[:10]})
        `,
        args: [a.mnt, writeJson(c, expect)],
      })),
    )
    console.log(`      every mount read all ${want.size} files in ${(ms / 1000).toFixed(1)} s`)
    results.forEach((r, m) =>
      assert.deepEqual([r.nwrong, r.wrong], [0, []], `mount ${m}: files not at their last version`),
    )

    // the reader worked under pressure: its cache shrank, and it holds about what it may
    const shrinks = await metric(c.agents[READER]!.metricsAddr!, 'scoutfs_item_cache_shrinks_total')
    const items = await metric(c.agents[READER]!.metricsAddr!, 'scoutfs_item_cache_items')
    const invalidations = await metric(c.agents[READER]!.metricsAddr!, 'scoutfs_lock_invalidations_total')
    console.log(
      `      mount ${READER}: ${shrinks} item cache shrinks, ${items} items cached, ${invalidations} lock invalidations`,
    )
    assert.ok(shrinks > 0, 'the reader had to shrink its item cache (the test ran under memory pressure)')
    assert.ok(invalidations > 0, "the writers' rewrites invalidated the reader's locks")
  })
})

let jsonFiles = 0
/** write `v` as JSON into the cluster's device directory (removed with it) and return the path */
function writeJson(c: Cluster, v: unknown): string {
  const p = join(c.dev.dir, `want-${++jsonFiles}.json`)
  writeFileSync(p, JSON.stringify(v))
  return p
}
