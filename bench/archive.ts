/*
 * Archive benchmark (issue 16): finding files by xattr and listing changed inodes without
 * walking the namespace, against the tools that must walk it, on the same mount in the same run.
 *
 * A cluster of 2 agents on fresh devices.  Mount 0 makes a tree of N empty files (directories
 * of 1,000), M of them (spread evenly) with the xattr `scoutfs.srch.bench` (N =
 * SCOUTFS_BENCH_ARCHIVE_FILES, default 100,000; M = SCOUTFS_BENCH_ARCHIVE_MATCHES, default 100).
 * Then, on mount 1 (which made none of it), alternately, ROUNDS times (default 3):
 *   - `scoutfs search-xattrs scoutfs.srch.bench -p MNT`  vs  `getfattr -R -n scoutfs.srch.bench MNT`
 *   - `scoutfs walk-inodes meta_seq 0 -1 MNT`            vs  `find MNT`
 * each a whole command as a user runs it (the scoutfs ones include starting node, ~0.3 s), each
 * checked: search-xattrs and getfattr find the same M files, walk-inodes and find the same
 * inodes.  Prints every time, the medians and the ratios (baseline / scoutfs).
 *
 *   npm run bench:archive                       (or: node dist/bench/archive.js)
 *   SCOUTFS_BENCH_ARCHIVE_FILES=100000 SCOUTFS_BENCH_ARCHIVE_MATCHES=100 SCOUTFS_BENCH_ARCHIVE_ROUNDS=3
 *
 * Every agent is stopped at the end, on failure and on Ctrl-C (the launcher's exit handler).
 */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { killAllAgents } from '../node-agent/src/tools/launcher/agent-process.js'
import { Cluster, makeClusterDevices, numberedAgents } from '../node-agent/src/tools/launcher/cluster.js'
import { SCOUTFS_BIN } from '../node-agent/src/tools/launcher/scoutfs-cli.js'

const FILES = Number(process.env.SCOUTFS_BENCH_ARCHIVE_FILES ?? 100_000)
const MATCHES = Number(process.env.SCOUTFS_BENCH_ARCHIVE_MATCHES ?? 100)
const ROUNDS = Number(process.env.SCOUTFS_BENCH_ARCHIVE_ROUNDS ?? 3)
const NAME = 'scoutfs.srch.bench'

const log = (s: string): void => void process.stdout.write(s + '\n')

/** Run a program; its stdout and the wall time (ms).  Fails on a non-zero exit unless `anyExit`. */
function run(cmd: string, args: string[], anyExit = false): Promise<{ out: string; ms: number }> {
  const t0 = process.hrtime.bigint()
  return new Promise((res, rej) => {
    const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    const out: Buffer[] = []
    let err = ''
    p.stdout.on('data', (d: Buffer) => out.push(d))
    p.stderr.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)))
    p.on('exit', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6
      if (code === 0 || anyExit) res({ out: Buffer.concat(out).toString(), ms })
      else rej(new Error(`${cmd} ${args.join(' ')} exited ${code}: ${err}`))
    })
  })
}

const scoutfs = (...args: string[]): Promise<{ out: string; ms: number }> =>
  run(process.execPath, [SCOUTFS_BIN, ...args])

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Make the tree on `mnt`: N empty files in directories of 1,000, every (N/M)th with the xattr. */
async function makeTree(mnt: string): Promise<number> {
  const py = String.raw`
import os, sys
root, n, m, name = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
every = n // m
for k in range(n):
    d = os.path.join(root, 'tree', 'd%d' % (k // 1000))
    if k % 1000 == 0:
        os.makedirs(d)
    f = os.path.join(d, 'f%d' % k)
    os.close(os.open(f, os.O_CREAT | os.O_WRONLY, 0o644))
    if k % every == 0 and k // every < m:
        os.setxattr(f, name, b'1')
`
  const t0 = Date.now()
  await run('python3', ['-c', py, mnt, String(FILES), String(MATCHES), NAME])
  return Date.now() - t0
}

async function main(): Promise<number> {
  const dev = await makeClusterDevices({
    members: 1,
    metaBytes: 2 * 1024 ** 3,
    dataBytes: 1024 ** 3,
    prefix: 'scoutfs-bench-archive-',
  })
  const c = new Cluster(dev, numberedAgents(dev.dir, 2, { logLevel: 'info' }), 60_000, 1)
  const [m0, m1] = [join(dev.dir, 'm0'), join(dev.dir, 'm1')]
  log(`archive: ${FILES} files, ${MATCHES} with ${NAME}, 2 mounts in ${dev.dir}, ${ROUNDS} rounds`)
  const times = { search: [] as number[], getfattr: [] as number[], walk: [] as number[], find: [] as number[] }
  try {
    await c.startOrThrow()
    const made = await makeTree(m0)
    log(`  made the tree on mount 0 in ${(made / 1000).toFixed(1)} s (${Math.round(FILES / (made / 1000))} files/s)`)
    await scoutfs('sync', m0)
    for (let r = 1; r <= ROUNDS; r++) {
      const s = await scoutfs('search-xattrs', NAME, '-p', m1)
      log(`  round ${r}: search-xattrs ${s.ms.toFixed(0)} ms`)
      const g = await run('getfattr', ['-R', '--absolute-names', '-n', NAME, m1], true)
      log(`  round ${r}: getfattr -R ${g.ms.toFixed(0)} ms`)
      const found = s.out.trim().split('\n').filter(Boolean)
      const gotByGetfattr = g.out.split('\n').filter((l) => l.startsWith('# file: ')).length
      if (found.length !== MATCHES || gotByGetfattr !== MATCHES)
        throw new Error(`search-xattrs found ${found.length}, getfattr ${gotByGetfattr}, ${MATCHES} were made`)
      const w = await scoutfs('walk-inodes', 'meta_seq', '0', '-1', m1)
      log(`  round ${r}: walk-inodes ${w.ms.toFixed(0)} ms`)
      const f = await run('find', [m1])
      const walked = w.out.split('\n').filter((l) => /^\d+\s/.test(l)).length
      const listed = f.out.trim().split('\n').length
      // walk-inodes lists every inode (the root's too); find every path
      if (walked !== listed) throw new Error(`walk-inodes listed ${walked} inodes, find ${listed} paths`)
      times.search.push(s.ms)
      times.getfattr.push(g.ms)
      times.walk.push(w.ms)
      times.find.push(f.ms)
      log(`  round ${r}: find ${f.ms.toFixed(0)} ms; ${walked} inodes walked, ${listed} paths found`)
    }
  } finally {
    for (const a of [...c.agents].reverse()) if (a.running) await a.stop(30_000)
    await killAllAgents()
    dev.remove()
  }
  const [s, g, w, f] = [median(times.search), median(times.getfattr), median(times.walk), median(times.find)]
  log('')
  log(`search-xattrs ${NAME}      median ${s.toFixed(0)} ms`)
  log(`getfattr -R -n ${NAME}     median ${g.toFixed(0)} ms   (${(g / s).toFixed(1)}x search-xattrs)`)
  log(`walk-inodes meta_seq 0 -1  median ${w.toFixed(0)} ms`)
  log(`find                       median ${f.toFixed(0)} ms   (${(f / w).toFixed(2)}x walk-inodes)`)
  return 0
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e)
    void killAllAgents().then(() => process.exit(1))
  },
)
