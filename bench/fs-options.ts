/*
 * Options of the filesystem benchmark (bench/fs.ts): the SCOUTFS_BENCH_* environment, the
 * command line, and the targets it can measure.
 */
import { readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'

/* ---- options ------------------------------------------------------------------------------ */

export interface Options {
  files: number
  fileSize: number
  seqMb: number
  walkFiles: number
  walkChanged: number
  walkWorkers: number
  readdirRepeat: number
  timeoutS: number
  dir: string
  json: boolean
  targets: Set<TargetKey>
  skipWalk: boolean
  mountOptions?: string
  /** writers of the parallel create workload */
  threads: number
  /** MiB of memory a child process holds through the run (a machine short of memory) */
  holdMb: number
  /** where the peer filesystems are mounted */
  peerDirs: Record<PeerKey, string>
}

export function envInt(name: string, def: number, min: number, max: number): number {
  const raw = process.env[name]
  if (raw === undefined || raw === '') return def
  const v = Number(raw.replace(/_/g, ''))
  if (!Number.isInteger(v) || v < min || v > max) {
    console.error(`${name} must be an integer from ${min} to ${max}, not ${raw}`)
    process.exit(2)
  }
  return v
}

export const ALL_TARGETS = ['local', 'ptDefault', 'ptSame', 'scoutfs', 'scoutfsFn', 'gluster', 'moosefs'] as const
export type TargetKey = (typeof ALL_TARGETS)[number]
/** other shared filesystems, measured where they are mounted (never started by the benchmark) */
export const PEERS = ['gluster', 'moosefs'] as const
export type PeerKey = (typeof PEERS)[number]
export const isPeer = (k: TargetKey): k is PeerKey => (PEERS as readonly string[]).includes(k)
export const LABEL: Record<TargetKey, string> = {
  local: 'local',
  ptDefault: 'pt-default',
  ptSame: 'pt-same',
  scoutfs: 'scoutfs',
  scoutfsFn: 'scoutfs-fn',
  gluster: 'glusterfs',
  moosefs: 'moosefs',
}

/** the mountpoints in /proc/mounts */
function mounted(): Set<string> {
  try {
    return new Set(
      readFileSync('/proc/mounts', 'utf8')
        .split('\n')
        .map((l) => l.split(' ')[1] ?? ''),
    )
  } catch {
    return new Set()
  }
}

export function parseOptions(argv: string[]): Options {
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(`usage: node dist/bench/fs.js [--json]
  env: SCOUTFS_BENCH_FILES (20000)        small files: create+4 KiB write+close, stat, readdir (0: skip)
       SCOUTFS_BENCH_FILE_SIZE (4096)     bytes written per small file
       SCOUTFS_BENCH_SEQ_MB (1024)        sequential write/read file size, in MiB (1 MiB I/Os; 0: skip)
       SCOUTFS_BENCH_WALK_FILES (100000)  files in the walk-inodes filesystem (0: skip the walk)
       SCOUTFS_BENCH_WALK_CHANGED (100)   files touched before walk-inodes / find -newer
       SCOUTFS_BENCH_WALK_WORKERS (4)     parallel processes creating the walk files
       SCOUTFS_BENCH_READDIR_REPEAT (3)   listings of the big directory per target
       SCOUTFS_BENCH_TIMEOUT_S (1800)     per workload and target; a slower run is cut off
       SCOUTFS_BENCH_THREADS (4)          writers of the parallel create workload (1: skip it)
       SCOUTFS_BENCH_HOLD_MB (0)          MiB of memory a process holds (touched) through the run
       SCOUTFS_BENCH_TARGETS (all)        comma list of local,pt-default,pt-same,scoutfs,scoutfs-fn,
                                          glusterfs,moosefs (all: the peers only where mounted)
       SCOUTFS_BENCH_GLUSTER_DIR          a GlusterFS mount to measure (/mnt/peer-gluster)
       SCOUTFS_BENCH_MOOSEFS_DIR          a MooseFS mount to measure (/mnt/peer-moosefs)
       SCOUTFS_BENCH_MOUNT_OPTIONS        scoutfs mount -o options (e.g. item_cache_items=1000000)
       SCOUTFS_BENCH_DIR (os tmpdir)      where temp dirs and devices go
       SCOUTFS_BENCH_JSON=1               also print the results as one JSON line`)
    process.exit(0)
  }
  const peerDirs: Record<PeerKey, string> = {
    gluster: process.env.SCOUTFS_BENCH_GLUSTER_DIR || '/mnt/peer-gluster',
    moosefs: process.env.SCOUTFS_BENCH_MOOSEFS_DIR || '/mnt/peer-moosefs',
  }
  const mounts = mounted()
  const targets = new Set<TargetKey>()
  const rawTargets = process.env.SCOUTFS_BENCH_TARGETS
  if (rawTargets) {
    for (const t of rawTargets.split(',').filter(Boolean)) {
      const k = ALL_TARGETS.find((x) => LABEL[x] === t || x === t)
      if (!k) {
        console.error(
          `SCOUTFS_BENCH_TARGETS: unknown target '${t}' (local, pt-default, pt-same, scoutfs, scoutfs-fn, glusterfs, moosefs)`,
        )
        process.exit(2)
      }
      if (isPeer(k) && !mounts.has(peerDirs[k])) {
        console.error(
          `SCOUTFS_BENCH_TARGETS: ${LABEL[k]} is not mounted at ${peerDirs[k]}: mount it there (or name its mount in SCOUTFS_BENCH_${k.toUpperCase()}_DIR)`,
        )
        process.exit(2)
      }
      targets.add(k)
    }
  } else for (const k of ALL_TARGETS) if (!isPeer(k) || mounts.has(peerDirs[k])) targets.add(k)
  const walkFiles = envInt('SCOUTFS_BENCH_WALK_FILES', 100_000, 0, 10_000_000)
  return {
    files: envInt('SCOUTFS_BENCH_FILES', 20_000, 0, 10_000_000),
    fileSize: envInt('SCOUTFS_BENCH_FILE_SIZE', 4096, 0, 1 << 30),
    seqMb: envInt('SCOUTFS_BENCH_SEQ_MB', 1024, 0, 1 << 20),
    walkFiles,
    walkChanged: Math.min(walkFiles, envInt('SCOUTFS_BENCH_WALK_CHANGED', 100, 1, 1_000_000)),
    walkWorkers: envInt('SCOUTFS_BENCH_WALK_WORKERS', 4, 1, 64),
    readdirRepeat: envInt('SCOUTFS_BENCH_READDIR_REPEAT', 3, 1, 1000),
    timeoutS: envInt('SCOUTFS_BENCH_TIMEOUT_S', 1800, 1, 86400 * 7),
    dir: process.env.SCOUTFS_BENCH_DIR || tmpdir(),
    json: argv.includes('--json') || process.env.SCOUTFS_BENCH_JSON === '1',
    targets,
    skipWalk: walkFiles === 0 || !targets.has('scoutfs'),
    mountOptions: process.env.SCOUTFS_BENCH_MOUNT_OPTIONS || undefined,
    threads: envInt('SCOUTFS_BENCH_THREADS', 4, 1, 64),
    holdMb: envInt('SCOUTFS_BENCH_HOLD_MB', 0, 0, 1 << 24),
    peerDirs,
  }
}
