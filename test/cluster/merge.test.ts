/*
 * Log trees and their merge on a real 3-mount cluster: a workload of thousands of small
 * files, rewrites of other mounts' files, unlinks and renames across mounts, with the
 * server's /status sampled meanwhile (the number of log trees must stay bounded, and merges
 * must happen); then a clean stop of every agent, `scoutfs check` of the devices, a restart
 * of the cluster, and every file's content hash checked on every mount.
 *
 * The bound on log trees: each mount writes into one open log tree (DESIGN §6), so N mounts
 * have N open trees; a tree is finalized when it is tall enough and then merged, and the
 * server finalizes a mount's tree only when its previous finalized tree has been merged
 * (server.ts getLogTrees), so at any moment there are at most N open + N finalized trees:
 * 2N.  More means finalization outruns merging with nothing to push back, and the trees
 * every reader must search grow without bound.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { registerDir, scoutfs } from '../helpers/agent.js'
import { startCluster, type Cluster } from '../helpers/cluster.js'
import {
  assertCleanStops,
  clusterPerSuite,
  concurrently,
  onMount,
  sampleLogTrees,
  stopCluster,
} from '../helpers/cluster-tests.js'
import { envInt, testRng } from '../helpers/rng.js'

const N = 3

describe('cluster: log merge under a multi-mount workload, check, restart', function () {
  this.timeout(600_000)
  let c: Cluster
  clusterPerSuite(N, {}, (cl) => (c = cl))

  it('keeps the log trees bounded, merges, checks clean, and every file reads back after a restart', async () => {
    const rng = testRng('merge')
    const OWN = envInt('SCOUTFS_TEST_MERGE_FILES', 1200) // per mount, in its own directory
    const SHARED = 60 // per mount, in one shared directory
    // each mount makes its own directory: directories one mount makes together share an inode
    // group and so its cluster lock, and their creates would serialize (see the report)
    for (let m = 0; m < N; m++) await onMount(c, m, '', `os.mkdir(p('own-${m}')); out(None)`)
    await onMount(c, 0, '', `os.mkdir(p('shared')); out(None)`)
    const want = new Map<string, string>() // path -> sha, as the writers report
    const apply = (reports: Array<{ wrote: Record<string, string>; gone: string[]; moved: string[][] }>): void => {
      for (const r of reports) {
        for (const [from, to] of r.moved) {
          want.set(to!, want.get(from!)!)
          want.delete(from!)
        }
        for (const [p, h] of Object.entries(r.wrote)) want.set(p, h)
        for (const p of r.gone) want.delete(p)
      }
    }
    const phase = async (name: string, script: string, argsOf: (m: number) => string[]): Promise<void> => {
      const { results, ms } = await concurrently<{ wrote: Record<string, string>; gone: string[]; moved: string[][] }>(
        Array.from({ length: N }, (_, m) => ({ script, args: [c.agents[m]!.mnt, String(m), ...argsOf(m)] })),
        600_000,
      )
      const n = results.reduce((a, r) => a + Object.keys(r.wrote).length + r.gone.length + r.moved.length, 0)
      console.log(`      ${name}: ${n} changes in ${(ms / 1000).toFixed(1)} s`)
      apply(results)
    }
    const WRITE = String.raw`
    root, m = sys.argv[1], int(sys.argv[2])
    def put(rel, seed, size):
        data = (rel + ':%d:' % seed).encode() + gen(seed, size)
        fd = os.open(os.path.join(root, rel), os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
        write_all(fd, data)
        os.close(fd)
        return sha(data)
    def write_all(fd, data):
        v = memoryview(data)
        while v:
            v = v[os.write(fd, v):]
    `
    const sampler = sampleLogTrees(c.agents[0]!.mnt)
    let status: Awaited<ReturnType<ReturnType<typeof sampleLogTrees>['stop']>>
    try {
      // 1: every mount creates files in its own directory and some in the shared one
      await phase(
        'create',
        WRITE +
          String.raw`
    OWN, SHARED, seed = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rnd = random.Random(seed)
    wrote = {}
    for i in range(OWN):
        rel = 'own-%d/f%05d' % (m, i)
        wrote[rel] = put(rel, rnd.getrandbits(32), rnd.randint(0, 3000))
    for i in range(SHARED):
        rel = 'shared/m%d-%03d' % (m, i)
        wrote[rel] = put(rel, rnd.getrandbits(32), rnd.randint(0, 300))
    ready({'wrote': wrote, 'gone': [], 'moved': []})
    `,
        () => [String(OWN), String(SHARED), String(rng.u32())],
      )
      // 2: every mount rewrites half the files of the next mount's directory
      await phase(
        'rewrite next',
        WRITE +
          String.raw`
    OWN, seed = int(sys.argv[3]), int(sys.argv[4])
    rnd = random.Random(seed)
    o = (m + 1) % 3
    wrote = {}
    for i in rnd.sample(range(OWN), OWN // 2):
        rel = 'own-%d/f%05d' % (o, i)
        wrote[rel] = put(rel, rnd.getrandbits(32), rnd.randint(0, 5000))
    ready({'wrote': wrote, 'gone': [], 'moved': []})
    `,
        () => [String(OWN), String(rng.u32())],
      )
      // 3: rewrites of the mount after next, unlinks and renames of its own shared files,
      //    unlinks in its own directory
      await phase(
        'rewrite, unlink, rename',
        WRITE +
          String.raw`
    OWN, SHARED, seed = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    rnd = random.Random(seed)
    o = (m + 2) % 3
    wrote, gone, moved = {}, [], []
    # the mount after next unlinks odd-numbered files of its own directory at the same time:
    # rewrite only even-numbered ones, so every file has one outcome
    for i in rnd.sample(range(0, OWN, 2), OWN // 6):
        rel = 'own-%d/f%05d' % (o, i)
        wrote[rel] = put(rel, rnd.getrandbits(32), rnd.randint(0, 2000))
    for i in rnd.sample(range(SHARED), SHARED // 2):
        rel = 'shared/m%d-%03d' % (m, i)
        if rnd.random() < 0.5:
            os.unlink(os.path.join(root, rel))
            gone.append(rel)
        else:
            to = 'own-%d/moved-%03d' % (m, i)
            os.rename(os.path.join(root, rel), os.path.join(root, to))
            moved.append([rel, to])
    for i in rnd.sample(range(1, OWN, 2), OWN // 10):
        rel = 'own-%d/f%05d' % (m, i)
        os.unlink(os.path.join(root, rel))
        gone.append(rel)
    ready({'wrote': wrote, 'gone': gone, 'moved': moved})
    `,
        () => [String(OWN), String(SHARED), String(rng.u32())],
      )
      // 4: everyone rewrites its own directory's survivors once more (smaller files)
      await phase(
        'rewrite own',
        WRITE +
          String.raw`
    seed = int(sys.argv[3])
    rnd = random.Random(seed)
    d = 'own-%d' % m
    names = sorted(os.listdir(os.path.join(root, d)))
    wrote = {}
    for name in rnd.sample(names, len(names) // 2):
        rel = d + '/' + name
        wrote[rel] = put(rel, rnd.getrandbits(32), rnd.randint(0, 700))
    ready({'wrote': wrote, 'gone': [], 'moved': []})
    `,
        () => [String(rng.u32())],
      )
    } finally {
      status = await sampler.stop()
    }
    const samples = status.samples
    const last = status.last as { merges: number; finalized: number; logTrees: number } | undefined
    const max = Math.max(...samples)
    const hist = new Map<number, number>()
    for (const s of samples) hist.set(s, (hist.get(s) ?? 0) + 1)
    console.log(
      `      log trees over ${samples.length} samples: max ${max}; ` +
        `${[...hist]
          .sort((a, b) => a[0] - b[0])
          .map(([k, v]) => `${k}:${v}`)
          .join(' ')}; ` +
        `last ${JSON.stringify(last)}`,
    )
    assert.ok(samples.length >= 10, `sampled the server ${samples.length} times`)
    assert.ok(
      last && last.merges > 0,
      `log trees were finalized and merged during the workload: ${JSON.stringify(last)}`,
    )
    assert.ok(max <= 2 * N, `at most ${2 * N} log trees (N open + N finalized) at any sample; saw ${max}`)

    // clean stop, check, restart
    const stops = await stopCluster(c)
    assertCleanStops(stops)
    const check = await scoutfs('check', c.dev.meta, c.dev.data)
    assert.equal(check.code, 0, `scoutfs check after the clean stop:\n${check.stdout}${check.stderr}`)
    console.log(`      check: ${check.stdout.trim().split('\n').slice(-1)[0]}`)
    const again = await startCluster(N, { dev: c.dev })
    c.agents.splice(0, c.agents.length, ...again.agents)
    const expect = JSON.stringify(Object.fromEntries(want))
    const seen = await Promise.all(
      Array.from({ length: N }, (_, m) =>
        onMount(
          c,
          m,
          '',
          String.raw`
          want = json.load(open(ARGS[0]))
          have = {}
          for d, sub, files in os.walk(D):
              for f in files:
                  rel = os.path.relpath(os.path.join(d, f), D)
                  have[rel] = fsha(os.path.join(d, f))
          def found(k):
              # not listed by readdir: is it there by name (a lost readdir entry)?
              return have[k] if k in have else 'unlisted, lookup ' + ('finds it' if isinstance(st(p(k)), dict) else 'ENOENT')
          wrong = [[k, want.get(k), found(k)] for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
          out({'files': len(have), 'nwrong': len(wrong), 'wrong': wrong[:8]})
          `,
          writeTemp(expect),
        ),
      ),
    )
    for (let m = 0; m < N; m++)
      assert.deepEqual(
        [seen[m].nwrong, seen[m].wrong],
        [0, []],
        `mount ${m} after the restart: files missing, extra or with other content ([path, wanted, found]) of ${want.size}`,
      )
    assert.equal(seen[0].files, want.size)
    // last, so that it does not hide the rest
    assert.deepEqual(
      status.errors.slice(0, 3),
      [],
      `the server answers /status throughout: ${status.errors.length} of ${status.errors.length + samples.length} calls failed`,
    )
  })
})

/** a file holding `text`, in a temp directory stopAllAgents() removes */
function writeTemp(text: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'scoutfs-merge-'))
  registerDir(dir)
  const p = join(dir, 'want.json')
  writeFileSync(p, text)
  return p
}
