/*
 * Mounts of one cluster working on the same objects at the same time, on real agents and real
 * FUSE mounts: O_APPEND records from three mounts into one file, thousands of creates from
 * three mounts into one directory, O_EXCL/mkdir/rename races on the same names, and writes
 * to disjoint, block-unaligned ranges of one file.  Each writer is a python process released
 * by a barrier; the results are checked on every mount against what the writers report.
 *
 * With FUSE direct_io, O_APPEND is resolved by the kernel of each node against the size it
 * last saw (docs/mount.md), so appends from several nodes are only atomic if the filesystem
 * serializes them under the inode's cluster lock: that test can fail and says how.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { agentStatus, type Cluster } from '../helpers/cluster.js'
import { clusterPerSuite, concurrently, freshClusterDirs, onMount } from '../helpers/cluster-tests.js'
import { envInt, testRng } from '../helpers/rng.js'

const N = 3

/** commits and lock traffic summed over the mounts (for the printed figures) */
async function lockCounts(c: Cluster): Promise<{ commits: number; requests: number; invalidations: number }> {
  const all = await Promise.all(c.agents.map((a) => agentStatus(a.mnt)))
  return {
    commits: all.reduce((n, s) => n + s.commits, 0),
    requests: all.reduce((n, s) => n + s.locks.requests, 0),
    invalidations: all.reduce((n, s) => n + s.locks.invalidations, 0),
  }
}

describe('cluster: concurrent work on shared objects from 3 mounts', function () {
  this.timeout(600_000)
  let c: Cluster
  const fresh = freshClusterDirs(() => c)
  clusterPerSuite(N, {}, (cl) => (c = cl))
  const path = (m: number, ...p: string[]): string => join(c.agents[m]!.mnt, ...p)

  it('O_APPEND records from 3 mounts into one file: none lost or torn, each writer in order', async () => {
    const rel = fresh('append')
    const K = envInt('SCOUTFS_TEST_APPENDS', 300)
    const REC = 100 // not a divisor of 4096: records straddle blocks
    await onMount(c, 0, rel, `wfile(p('log'), b''); out(None)`)
    const { results, ms } = await concurrently<{ short: number; errors: string[] }>(
      Array.from({ length: N }, (_, m) => ({
        script: String.raw`
        path, m, K, REC = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        short, errors = 0, []
        for i in range(K):
            head = b'%d:%06d:' % (m, i)
            rec = head + bytes([ord('a') + m]) * (REC - len(head) - 1) + b'\n'
            try:
                if os.write(fd, rec) != REC:
                    short += 1
            except OSError as e:
                errors.append(errno.errorcode.get(e.errno, str(e.errno)))
        os.close(fd)
        ready({'short': short, 'errors': errors[:5]})
        `,
        args: [path(m, rel, 'log'), String(m), String(K), String(REC)],
      })),
    )
    console.log(`      ${N} x ${K} appends of ${REC} B in ${ms} ms`)
    for (const r of results) assert.deepEqual(r, { short: 0, errors: [] }, 'every append wrote its whole record')
    const seen = await Promise.all(
      Array.from({ length: N }, (_, m) =>
        onMount(
          c,
          m,
          rel,
          String.raw`
          N, K, REC = int(ARGS[0]), int(ARGS[1]), int(ARGS[2])
          data = rfile(p('log'))
          seqs = {w: [] for w in range(N)}
          bad = []
          for off in range(0, len(data), REC):
              rec = data[off:off + REC]
              parts = rec[:-1].split(b':')
              ok = len(rec) == REC and rec[-1:] == b'\n' and len(parts) == 3
              if ok:
                  try:
                      w, i = int(parts[0]), int(parts[1])
                      ok = 0 <= w < N and parts[2] == bytes([ord('a') + w]) * len(parts[2])
                  except ValueError:
                      ok = False
              if ok:
                  seqs[w].append(i)
              else:
                  bad.append([off, rec[:40].decode('latin-1')])
          out({'size': len(data), 'size_stat': os.stat(p('log')).st_size, 'sha': sha(data), 'nbad': len(bad),
               'bad': bad[:5], 'per_writer': {w: len(s) for w, s in seqs.items()},
               'in_order': {w: s == list(range(K)) for w, s in seqs.items()},
               'lost': {w: sorted(set(range(K)) - set(s))[:10] for w, s in seqs.items()}})
          `,
          String(N),
          String(K),
          String(REC),
        ),
      ),
    )
    for (let m = 0; m < N; m++) {
      const s = seen[m]
      const why = `mount ${m}: ${JSON.stringify({ nbad: s.nbad, bad: s.bad, per_writer: s.per_writer, lost: s.lost })}`
      assert.equal(s.nbad, 0, `no torn or overwritten record; ${why}`)
      assert.deepEqual(s.per_writer, { 0: K, 1: K, 2: K }, `no lost record; ${why}`)
      assert.deepEqual(s.in_order, { 0: true, 1: true, 2: true }, `each writer's records in its order; ${why}`)
      assert.equal(s.size, N * K * REC, 'the size is the sum of the records')
      assert.equal(s.size_stat, N * K * REC)
      assert.equal(s.sha, seen[0].sha, `mount ${m} reads the same bytes as mount 0`)
    }
  })

  it('3 mounts creating files in one directory at once: every file on every mount, once', async () => {
    const rel = fresh('shared')
    const F = envInt('SCOUTFS_TEST_SHARED_FILES', 2000)
    const before = await lockCounts(c)
    const { results, ms } = await concurrently<{ secs: number; nerr: number; errors: Record<string, string> }>(
      Array.from({ length: N }, (_, m) => ({
        script: String.raw`
        d, m, F = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
        t0 = time.time()
        errs = {}
        for i in range(F):
            name = 'm%d-%05d' % (m, i)
            try:
                fd = os.open(os.path.join(d, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(fd, name.encode())
                os.close(fd)
            except OSError as e:
                errs[name] = errno.errorcode.get(e.errno, str(e.errno))
        ready({'secs': round(time.time() - t0, 2), 'nerr': len(errs), 'errors': dict(list(errs.items())[:5])})
        `,
        args: [path(m, rel), String(m), String(F)],
      })),
      600_000,
    )
    console.log(
      `      ${N} x ${F} creates in one directory: ${(ms / 1000).toFixed(1)} s wall ` +
        `(${Math.round((N * F) / (ms / 1000))} creates/s; per mount ${results.map((r) => r.secs).join(', ')} s)`,
    )
    const after = await lockCounts(c)
    console.log(
      `      meanwhile: ${after.commits - before.commits} commits, ${after.requests - before.requests} lock requests, ` +
        `${after.invalidations - before.invalidations} invalidations (all mounts)`,
    )
    for (const r of results) assert.deepEqual([r.nerr, r.errors], [0, {}], 'every create succeeded')
    const t0 = Date.now()
    const seen = await Promise.all(
      Array.from({ length: N }, (_, m) =>
        onMount(
          c,
          m,
          rel,
          String.raw`
          N, F, every = int(ARGS[0]), int(ARGS[1]), int(ARGS[2])
          want = {'m%d-%05d' % (w, i) for w in range(N) for i in range(F)}
          names = os.listdir(D)
          got = set(names)
          inos = set()
          nstat, bad = 0, []
          for k, name in enumerate(sorted(got & want)):
              s = os.lstat(p(name))
              nstat += 1
              inos.add(s.st_ino)
              if k % every == 0 and (s.st_size != len(name) or rfile(p(name)) != name.encode()):
                  bad.append(name)
          missing = sorted(want - got)
          # a name readdir lost may still be found by lookup (its readdir item overwritten)
          out({'listed': len(names), 'distinct': len(got), 'missing': missing[:10],
               'missing_found': sum(isinstance(st(p(x)), dict) for x in missing[:10]),
               'nmissing': len(want - got), 'extra': sorted(got - want)[:10], 'nstat': nstat,
               'inos': len(inos), 'bad': bad[:10], 'nlink': os.stat(D).st_nlink})
          `,
          String(N),
          String(F),
          // read every file's content on mount 1, every 10th elsewhere
          String(m === 1 ? 1 : 10),
        ),
      ),
    )
    console.log(
      `      listed and stat'ed ${N * F} files on each of ${N} mounts in ${((Date.now() - t0) / 1000).toFixed(1)} s`,
    )
    for (let m = 0; m < N; m++) {
      const s = seen[m]
      assert.deepEqual(
        s.missing,
        [],
        `mount ${m}: ${s.nmissing} files missing from readdir; ${s.missing_found} of the first ${s.missing.length} ` +
          'still found by name (their readdir entries lost, their lookup entries kept)',
      )
      assert.deepEqual(s.extra, [], `mount ${m}: names nobody made`)
      assert.equal(s.listed, N * F, `mount ${m}: readdir lists each name once (${s.listed} entries)`)
      assert.equal(s.distinct, N * F)
      assert.equal(s.nstat, N * F, `mount ${m}: every listed name stats`)
      assert.equal(s.inos, N * F, `mount ${m}: every file its own inode`)
      assert.deepEqual(s.bad, [], `mount ${m}: files whose size or content is not what their creator wrote`)
      assert.equal(s.nlink, 2, 'no subdirectories')
    }
  })

  it('O_EXCL creates, mkdirs and renames of the same names from 3 mounts: exactly one wins each', async () => {
    const rel = fresh('races')
    const rng = testRng('races')
    const NAMES = 200
    await onMount(
      c,
      0,
      rel,
      `[wfile(p('src-%d' % k), b'src-%d' % k) for k in range(int(ARGS[0]))]; out(None)`,
      String(NAMES),
    )
    const { results } = await concurrently<{ files: string[]; dirs: string[]; renamed: string[]; other: string[] }>(
      Array.from({ length: N }, (_, m) => ({
        script: String.raw`
        d, m, NAMES, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
        order = list(range(NAMES))
        random.Random(seed).shuffle(order)
        files, dirs, renamed, other = [], [], [], []
        for k in order:
            try:
                fd = os.open(os.path.join(d, 'f-%d' % k), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(fd, b'won by %d' % m)
                os.close(fd)
                files.append('f-%d' % k)
            except FileExistsError:
                pass
            except OSError as e:
                other.append('create f-%d: %s' % (k, errno.errorcode.get(e.errno)))
            try:
                os.mkdir(os.path.join(d, 'd-%d' % k))
                dirs.append('d-%d' % k)
            except FileExistsError:
                pass
            except OSError as e:
                other.append('mkdir d-%d: %s' % (k, errno.errorcode.get(e.errno)))
            try:
                os.rename(os.path.join(d, 'src-%d' % k), os.path.join(d, 'dst-%d-%d' % (k, m)))
                renamed.append('src-%d' % k)
            except FileNotFoundError:
                pass
            except OSError as e:
                other.append('rename src-%d: %s' % (k, errno.errorcode.get(e.errno)))
        ready({'files': files, 'dirs': dirs, 'renamed': renamed, 'other': other[:10]})
        `,
        args: [path(m, rel), String(m), String(NAMES), String(rng.u32())],
      })),
    )
    for (const r of results) assert.deepEqual(r.other, [], 'only EEXIST / ENOENT for the losers')
    for (const kind of ['files', 'dirs', 'renamed'] as const) {
      const winners = new Map<string, number[]>()
      results.forEach((r, m) => r[kind].forEach((name) => winners.set(name, [...(winners.get(name) ?? []), m])))
      const multi = [...winners].filter(([, ms]) => ms.length > 1)
      assert.deepEqual(multi.slice(0, 10), [], `${kind}: names more than one mount won`)
      assert.equal(winners.size, NAMES, `${kind}: every name won by someone`)
    }
    const winnerOf = new Map<string, number>()
    results.forEach((r, m) => r.files.forEach((f) => winnerOf.set(f, m)))
    const renamedBy = new Map<number, number>()
    results.forEach((r, m) => r.renamed.forEach((s) => renamedBy.set(Number(s.slice(4)), m)))
    for (let m = 0; m < N; m++) {
      const s = await onMount(
        c,
        m,
        rel,
        String.raw`
        out({'names': sorted(os.listdir(D)),
             'content': {n: rfile(p(n)).decode() for n in os.listdir(D) if n.startswith('f-') or n.startswith('dst-')}})
        `,
      )
      const want: string[] = []
      for (let k = 0; k < NAMES; k++) want.push(`f-${k}`, `d-${k}`, `dst-${k}-${renamedBy.get(k)}`)
      assert.deepEqual(s.names, want.sort(), `mount ${m}: the directory holds exactly the winners`)
      for (let k = 0; k < NAMES; k++) {
        assert.equal(
          s.content[`f-${k}`],
          `won by ${winnerOf.get(`f-${k}`)}`,
          `mount ${m}: f-${k} has its winner's data`,
        )
        assert.equal(s.content[`dst-${k}-${renamedBy.get(k)}`], `src-${k}`)
      }
    }
  })

  it('writes to disjoint, block-unaligned ranges of one file from 3 mounts: no range lost', async () => {
    const rel = fresh('ranges')
    const rng = testRng('ranges')
    const R = 240 // ranges
    const L = 1000 // bytes each: ranges share 4 KiB blocks with other writers' ranges
    const PASSES = 3
    await onMount(c, 0, rel, `wfile(p('f'), bytes(int(ARGS[0]))); out(None)`, String(R * L))
    const { ms } = await concurrently(
      Array.from({ length: N }, (_, m) => ({
        script: String.raw`
        path, m, N, R, L, PASSES, seed = sys.argv[1], *map(int, sys.argv[2:])
        rnd = random.Random(seed)
        fd = os.open(path, os.O_WRONLY)
        for ps in range(PASSES):
            mine = [r for r in range(R) if r % N == m]
            rnd.shuffle(mine)
            for r in mine:
                pat = (b'<%d.%d.%04d>' % (m, ps, r)) * (L // 10 + 1)
                os.pwrite(fd, pat[:L], r * L)
        os.close(fd)
        ready(None)
        `,
        args: [path(m, rel, 'f'), ...[m, N, R, L, PASSES, rng.u32()].map(String)],
      })),
    )
    console.log(`      ${N} x ${PASSES} passes over ${R / N} ranges of ${L} B each in ${ms} ms`)
    for (let m = 0; m < N; m++) {
      const s = await onMount(
        c,
        m,
        rel,
        String.raw`
        N, R, L, PASSES = map(int, ARGS)
        d = rfile(p('f'))
        wrong = []
        for r in range(R):
            pat = ((b'<%d.%d.%04d>' % (r % N, PASSES - 1, r)) * (L // 10 + 1))[:L]
            got = d[r * L:(r + 1) * L]
            if got != pat:
                wrong.append([r, got[:12].decode('latin-1')])
        out({'size': len(d), 'nwrong': len(wrong), 'wrong': wrong[:8]})
        `,
        ...[N, R, L, PASSES].map(String),
      )
      assert.equal(s.size, R * L)
      assert.deepEqual(
        [s.nwrong, s.wrong],
        [0, []],
        `mount ${m}: ranges not holding their writer's last pass (zeros: lost; older pass: stale block written back)`,
      )
    }
  })
})
