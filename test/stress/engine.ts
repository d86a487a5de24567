/*
 * The multi-mount stress engine (fsstress-like), shared by test/stress/stress.test.ts and
 * scripts/stress.ts: a real cluster of N agents (agent 0 the server) on fresh file-backed
 * devices, worker loops on every mount doing seeded random syscalls through node:fs promises
 * (create, write, read, truncate, rename, link, unlink, mkdir, rmdir, stat, readdir, descriptors
 * held open on the same or another mount and used later, xattrs through one python3 helper per
 * mount, the rmdir D; mkdir D; mkdir D/w cycle while a file of D is held open, and a private
 * file per worker checked against a model of its bytes from every mount), errnos counted by
 * kind, then the end checks: every agent alive and answering its admin socket, each
 * mount synced, the final tree identical on every mount, a clean stop and a clean
 * `scoutfs check`.  It owns its cluster: everything it starts is killed and unmounted on the way
 * out, whatever happens.
 *
 * Its parts: the rmdir/mkdir cycle is test/stress/cycle.ts, the end checks test/stress/checks.ts,
 * and what they share (errnos, deadlines, the xattr helper, the tally) test/stress/support.ts.
 */
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { Cluster, makeClusterDevices, numberedAgents } from '../../node-agent/src/tools/launcher/cluster.js'
import type { Devices } from '../../node-agent/src/tools/launcher/devices.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import { Rng } from '../helpers/rng.js'
import { cycle } from './cycle.js'
import { endChecks, tail } from './checks.js'
import {
  HUNG,
  KNOWN_FSTAT_BY_PATH,
  KNOWN_HELD_EIO,
  KNOWN_MOVED_DIR_ESTALE,
  KNOWN_PATH_EIO,
  XATTRS,
  XattrHelper,
  Tally,
  deadline,
  errnoOf,
  type Held,
} from './support.js'

export interface StressOptions {
  seed: number
  durationMs: number
  /** mounts (agents) in the cluster; agent 0 runs the server */
  mounts?: number
  /** worker loops per mount */
  workersPerMount?: number
  /** one operation taking longer than this is a hang */
  opDeadlineMs?: number
  /** weights replacing those of the named kinds (0 leaves a kind out), to aim a run at one race */
  weights?: Partial<Record<Kind, number>>
  /** progress lines every this many ms (0: none) */
  progressMs?: number
  log?: (line: string) => void
  /** keep the devices directory (printed) instead of removing it */
  keep?: boolean
  /**
   * count EIO from the kernel as a known limit instead of a failure: libfuse 2's path API
   * hands a name's node to whatever takes the name on another mount, and when that changes
   * its type the kernel marks the node bad (EIO through held descriptors ever after, and now
   * and then for an operation racing the lookup that found it).  The agents must still log
   * no error at all, so an EIO of the filesystem's own always fails the run.
   */
  tolerateKernelEio?: boolean
  /**
   * count ESTALE by path as a known limit instead of a failure: the kernel answers it when a
   * directory another mount renamed is still cached here under its old name and it cannot
   * move that dentry (docs/fuse.md).  The agents must still log no error.
   */
  tolerateKernelEstale?: boolean
}

export interface KindCounts {
  ok: number
  errnos: Record<string, number>
}

export interface StressReport {
  seed: number
  mounts: number
  workers: number
  ms: number
  ops: number
  byKind: Record<string, KindCounts>
  errnos: Record<string, number>
  /** tolerated results of known limits, by description */
  knownLimits: Record<string, number>
  /** everything that is wrong (empty: the run passed; the first 200 of `failed`) */
  failures: string[]
  failed: number
  /** entries of the final tree (on mount 0) */
  treeEntries: number
  check: string
  devDir: string
  /** error lines of the agents' logs (when something failed) */
  agentLog: string[]
}

/** An expected errno of racing operations (any kind). */
const EXPECTED = new Set(['ENOENT', 'EEXIST', 'ENOTEMPTY', 'ENOTDIR', 'EISDIR', 'EXDEV'])
/** Further expected errnos of some kinds. */
const EXPECTED_BY_KIND: Record<string, string[]> = {
  rename: ['EINVAL'], // a directory into its own subtree
  renameX: ['EINVAL'],
  link: ['EPERM'], // a hard link to a directory
  linkX: ['EPERM'],
  getxattr: ['ENODATA'],
}

const TOP = ['d0', 'd1', 'd2', 'd3']
const DIRS = [...TOP, ...TOP.flatMap((d) => [`${d}/s0`, `${d}/s1`])]
const FILE_DIRS = ['', ...DIRS]
const NAMES = 6
const MAX_HELD = 4
/** the bytes every write takes a slice of */
const PATTERN_BYTES = 512 << 10

const KINDS = [
  ['create', 14],
  ['write', 10],
  ['read', 6],
  ['truncate', 4],
  ['rename', 8],
  ['renameX', 1], // destination on another mount: EXDEV
  ['link', 4],
  ['linkX', 1],
  ['unlink', 6],
  ['mkdir', 5],
  ['rmdir', 4],
  ['stat', 4],
  ['readdir', 4],
  ['hold', 4],
  ['heldIo', 8],
  ['release', 3],
  ['setxattr', 3],
  ['getxattr', 3],
  ['cycle', 2],
  ['own', 5],
] as const
export type Kind = (typeof KINDS)[number][0]

/** 'kind=weight,...' (SCOUTFS_STRESS_WEIGHTS, stress --weights) as StressOptions.weights */
export function parseWeights(v: string | undefined): Partial<Record<Kind, number>> | undefined {
  if (!v) return undefined
  const names: readonly string[] = KINDS.map((k) => k[0])
  const out: Partial<Record<Kind, number>> = {}
  for (const part of v.split(',')) {
    const m = /^([a-zA-Z]+)=(\d+)$/.exec(part.trim())
    if (!m || !names.includes(m[1]!))
      throw new FsError('EINVAL', `weights: '${part}' is not kind=weight with a kind of ${names.join(', ')}`)
    out[m[1] as Kind] = Number(m[2])
  }
  return out
}

/** Run the stress: start a cluster, work it for `durationMs`, check it, stop it.  Never throws for what it finds. */
export async function runStress(o: StressOptions): Promise<StressReport> {
  const N = o.mounts ?? 3
  const W = o.workersPerMount ?? 2
  const WEIGHTS = KINDS.map(([k, w]) => o.weights?.[k] ?? w)
  if (!WEIGHTS.some((w) => w > 0)) throw new FsError('EINVAL', 'every operation kind has weight 0')
  const OP_DEADLINE = o.opDeadlineMs ?? 120_000
  const log = o.log ?? ((l: string) => console.log(l))
  const t = new Tally()
  const root = new Rng(o.seed)
  const pattern = root.fork().bytes(PATTERN_BYTES)
  const t0 = Date.now()

  const dev: Devices & { serverAddr: string } = await makeClusterDevices({ prefix: 'scoutfs-stress-' })
  const cluster = new Cluster(dev, numberedAgents(dev.dir, N, { logLevel: 'info' }), 60_000)
  const helpers: XattrHelper[] = []
  const held: Held[][] = []
  let stopping = false
  let aborted = false
  let check = 'not run'
  let treeEntries = 0
  const agentLog: string[] = []
  let progress: NodeJS.Timeout | undefined
  const mnt = (m: number): string => cluster.agents[m]!.mnt
  const top = (m: number, rel = ''): string => join(mnt(m), 'stress', rel)
  try {
    await cluster.startOrThrow()
    log(`cluster of ${N} mounts up in ${Date.now() - t0} ms on ${dev.dir} (agent 0 the server)`)
    for (const [i, a] of cluster.agents.entries())
      void a.exited.then(() => {
        if (stopping) return
        t.fail(`agent ${i} (${a.mnt}) exited during the run (${a.exitText}); log tail:\n${tail(a.log())}`)
        aborted = true // the workers stop: what follows would only be ENOTCONN
      })
    await fsp.mkdir(top(0))
    for (let m = 0; m < N; m++) helpers.push(new XattrHelper())

    const workers: Array<Promise<void>> = []
    for (let m = 0; m < N; m++)
      for (let k = 0; k < W; k++) {
        const w = m * W + k
        const pool: Held[] = []
        held.push(pool)
        workers.push(worker(w, m, root.fork(), pool))
      }

    const tStart = Date.now()
    if (o.progressMs)
      progress = setInterval(() => {
        const s = (Date.now() - tStart) / 1000
        const open = held.reduce((n, p) => n + p.length, 0)
        log(
          `[${s.toFixed(0)} s] ${t.ops} ops (${(t.ops / s).toFixed(0)}/s), held fds ${open}, errnos ${fmt(t.errnos)}, known limits ${fmt(t.knownLimits)}, failures ${t.failed}`,
        )
      }, o.progressMs)

    const stuck = await deadline(Promise.all(workers), o.durationMs + OP_DEADLINE + 30_000)
    clearInterval(progress)
    if (stuck === HUNG) t.fail('workers did not finish (a hung operation: see the failures above)')
    const runMs = Date.now() - tStart
    log(`workers done: ${t.ops} ops in ${runMs} ms`)

    const out = { check, treeEntries }
    try {
      await endChecks({
        N,
        t,
        cluster,
        dev,
        held,
        helpers,
        OP_DEADLINE,
        log,
        mnt,
        top,
        classify,
        out,
        stopping: () => (stopping = true),
      })
    } finally {
      ;({ check, treeEntries } = out)
    }
  } catch (e) {
    t.fail(`the stress itself failed: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`)
  } finally {
    stopping = true
    clearInterval(progress)
    for (const h of helpers) h.stop()
    for (const pool of held)
      for (const h of pool.splice(0))
        await deadline(
          h.fh.close().catch(() => undefined),
          5000,
        )
    // an agent that logged an error (or EIO, ESTALE, EUCLEAN) fails the run: so the EIOs
    // counted as the path API's known limit above came from the kernel, not from the agents
    for (const [i, a] of cluster.agents.entries()) {
      const lines = a
        .log()
        .split('\n')
        .filter((l) => /"level":(5|6)\d/.test(l) || /EIO|ESTALE|EUCLEAN/.test(l))
      if (lines.length) t.fail(`agent ${i} logged ${lines.length} error lines`)
      agentLog.push(...lines.slice(0, 20).map((l) => `agent ${i}: ${l}`))
      if (lines.length > 20) agentLog.push(`agent ${i}: ... ${lines.length - 20} more error lines`)
    }
    await cluster.kill()
    if (o.keep) log(`devices kept in ${dev.dir}`)
    if (!o.keep) dev.remove()
  }
  return {
    seed: o.seed,
    mounts: N,
    workers: N * W,
    ms: Date.now() - t0,
    ops: t.ops,
    byKind: t.byKind,
    errnos: t.errnos,
    knownLimits: t.knownLimits,
    failures: t.failures,
    failed: t.failed,
    treeEntries,
    check,
    devDir: dev.dir,
    agentLog,
  }

  /** count `e` under `kind`; true when it was expected (or a known limit) */
  function classify(kind: string, e: unknown, heldFd = false, ctx = ''): boolean {
    const errno = errnoOf(e)
    t.err(kind, errno)
    if (heldFd) {
      // a held descriptor names no path: only the known limits explain an error
      if (errno === 'EIO' && o.tolerateKernelEio) {
        t.known(KNOWN_HELD_EIO)
        return true
      }
      if (kind === 'heldFstat' && errno === 'ENOTDIR') {
        t.known(KNOWN_FSTAT_BY_PATH)
        return true
      }
    } else if (EXPECTED.has(errno) || EXPECTED_BY_KIND[kind]?.includes(errno)) return true
    else if (errno === 'EIO' && o.tolerateKernelEio) {
      // the kernel's, not the agents': every agent error line fails the run at the end
      t.known(KNOWN_PATH_EIO)
      return true
    } else if (errno === 'ESTALE' && o.tolerateKernelEstale) {
      t.known(KNOWN_MOVED_DIR_ESTALE)
      return true
    }
    const at = ((Date.now() - t0) / 1000).toFixed(1)
    t.fail(
      `${kind}: unexpected ${errno} at ${at} s: ${e instanceof Error ? e.message : String(e)}${ctx ? ` (${ctx})` : ''}`,
    )
    return false
  }

  /** run one operation of `kind`, count its result */
  async function op(kind: string, f: () => Promise<unknown>, heldFd = false, ctx = ''): Promise<void> {
    try {
      await f()
      t.ok(kind)
    } catch (e) {
      classify(kind, e, heldFd, ctx)
    }
  }

  async function worker(w: number, m: number, rng: Rng, pool: Held[]): Promise<void> {
    const end = Date.now() + o.durationMs
    const N_ = N
    const fileRel = (): string => {
      const d = rng.pick(FILE_DIRS)
      return d ? `${d}/f${rng.int(NAMES)}` : `f${rng.int(NAMES)}`
    }
    const dirRel = (): string => rng.pick(DIRS)
    const other = (): number => (N_ === 1 ? m : (m + 1 + rng.int(N_ - 1)) % N_)
    const slice = (): Buffer => {
      const n = rng.bool(0.1) ? rng.range(64 << 10, 300 << 10) : rng.range(1, 16 << 10)
      const at = rng.int(PATTERN_BYTES - n)
      return pattern.subarray(at, at + n)
    }
    const P = (rel: string, mount = m): string => top(mount, rel)
    let cycles = 0
    let ownMade = false
    let model = Buffer.alloc(0)
    const ownLog: string[] = []

    while (Date.now() < end && !stopping && !aborted) {
      const kind: Kind = KINDS[rng.weighted(WEIGHTS)]![0]
      const what = `worker ${w} (mount ${m}) op ${kind}`
      const r = await deadline(one(kind), OP_DEADLINE)
      if (r === HUNG) {
        t.fail(`${what} did not finish within ${OP_DEADLINE / 1000} s (hang); seed ${o.seed}`)
        return
      }
    }

    async function one(kind: Kind): Promise<void> {
      switch (kind) {
        case 'create': {
          const flag = rng.pick(['wx', 'w', 'a'])
          const data = slice()
          return op(kind, async () => {
            const fh = await fsp.open(P(fileRel()), flag)
            try {
              await fh.write(data, 0, data.length)
            } finally {
              await fh.close()
            }
          })
        }
        case 'write': {
          const data = slice()
          const at = rng.int(512 << 10)
          return op(kind, async () => {
            const fh = await fsp.open(P(fileRel()), 'r+')
            try {
              await fh.write(data, 0, data.length, at)
            } finally {
              await fh.close()
            }
          })
        }
        case 'read':
          return op(kind, () => fsp.readFile(P(fileRel())))
        case 'truncate': {
          const size = rng.bool(0.3) ? 0 : rng.int(600 << 10)
          return op(kind, () => fsp.truncate(P(fileRel()), size))
        }
        case 'rename':
        case 'renameX': {
          const dir = rng.bool(0.25)
          const src = dir ? dirRel() : fileRel()
          // now and then across the kinds: files at directory names and the other way round
          let dst = dir !== rng.bool(0.05) ? dirRel() : fileRel()
          if (!dir && rng.bool(0.4) && /f\d+$/.test(dst)) dst = src.replace(/f\d+$/, `f${rng.int(NAMES)}`) // within its directory
          const dm = kind === 'renameX' ? other() : m
          return op(kind, () => fsp.rename(P(src), P(dst, dm)))
        }
        case 'link':
        case 'linkX': {
          const src = rng.bool(0.1) ? dirRel() : fileRel()
          const dst = fileRel()
          const dm = kind === 'linkX' ? other() : m
          return op(kind, () => fsp.link(P(src), P(dst, dm)))
        }
        case 'unlink':
          return op(kind, () => fsp.unlink(P(fileRel())))
        case 'mkdir':
          return op(kind, () => fsp.mkdir(P(dirRel())))
        case 'rmdir':
          return op(kind, () => fsp.rmdir(P(dirRel())))
        case 'stat':
          return op(kind, () => fsp.lstat(P(rng.bool(0.3) ? dirRel() : fileRel())))
        case 'readdir':
          return op(kind, () => fsp.readdir(P(rng.bool(0.2) ? '' : dirRel())))
        case 'hold': {
          const hm = rng.bool(0.5) ? m : other()
          const rel = fileRel()
          if (pool.length >= MAX_HELD) await release(rng.int(pool.length))
          return op(kind, async () => {
            const fh = await fsp.open(P(rel, hm), 'r+')
            pool.push({ fh, mount: hm, rel, since: Date.now() })
          })
        }
        case 'heldIo': {
          if (!pool.length) return
          const h = rng.pick(pool)
          const which = rng.pick(['heldRead', 'heldWrite', 'heldFstat'])
          const data = slice()
          const at = rng.int(512 << 10)
          return op(
            which,
            async () => {
              if (which === 'heldRead') await h.fh.read(Buffer.alloc(64 << 10), 0, 64 << 10, at)
              else if (which === 'heldWrite') await h.fh.write(data, 0, data.length, at)
              else await h.fh.stat()
            },
            true,
            heldCtx(h),
          )
        }
        case 'release':
          if (pool.length) await release(rng.int(pool.length))
          return
        case 'setxattr': {
          const name = `user.s${rng.int(XATTRS)}`
          const val = pattern.subarray(0, rng.range(1, 200)).toString('hex')
          const path = P(rng.bool(0.2) ? dirRel() : fileRel())
          const [res] = await helpers[m]!.call('set', path, name, val)
          if (res === 'OK') t.ok(kind)
          else classify(kind, { code: res })
          return
        }
        case 'getxattr': {
          const path = P(rng.bool(0.2) ? dirRel() : fileRel())
          const [res] = await helpers[m]!.call('get', path, `user.s${rng.int(XATTRS)}`)
          if (res === 'OK') t.ok(kind)
          else classify(kind, { code: res })
          return
        }
        case 'cycle':
          return cycle({ w, rng, N_, slice, P, t, seed: o.seed }, cycles++)
        case 'own':
          return own()
      }
    }

    /**
     * Worker-private file own<w>, written, truncated and read back from random mounts against
     * a model of its bytes: nobody else touches it, so every op succeeds and every read matches.
     */
    async function own(): Promise<void> {
      const om = rng.int(N_)
      const path = P(`own${w}`, om)
      const choice = ownMade ? rng.int(3) : 0
      let what = ''
      try {
        if (choice === 0) {
          const data = slice()
          const at = rng.int(512 << 10)
          what = `write ${data.length} B at ${at} @${om}`
          const fh = await fsp.open(path, ownMade ? 'r+' : 'w')
          try {
            await fh.write(data, 0, data.length, at)
          } finally {
            await fh.close()
          }
          ownMade = true
          if (model.length < at + data.length)
            model = Buffer.concat([model, Buffer.alloc(at + data.length - model.length)])
          data.copy(model, at)
        } else if (choice === 1) {
          const size = rng.int(600 << 10)
          what = `truncate to ${size} @${om}`
          await fsp.truncate(path, size)
          model =
            size <= model.length ? model.subarray(0, size) : Buffer.concat([model, Buffer.alloc(size - model.length)])
        } else {
          what = `read back @${om}`
          const got = await fsp.readFile(path)
          if (!got.equals(model)) {
            let at = 0
            while (at < got.length && at < model.length && got[at] === model[at]) at++
            throw new FsError('EIO', `read ${got.length} B, model ${model.length} B, first difference at ${at}`)
          }
        }
        t.ok(`own:${what.split(' ')[0]}`)
        ownLog.push(what)
      } catch (e) {
        t.err(`own:${what.split(' ')[0]}`, errnoOf(e))
        t.fail(
          `private file own${w} (seed ${o.seed}): ${what}: ${errnoOf(e)} ${e instanceof Error ? e.message : String(e)}; its last ops: ${ownLog.slice(-8).join('; ')}`,
        )
      }
      if (ownLog.length > 64) ownLog.splice(0, 32)
    }

    async function release(i: number): Promise<void> {
      const [h] = pool.splice(i, 1)
      if (h) await op('release', () => h.fh.close(), true, heldCtx(h))
    }

    function heldCtx(h: Held): string {
      return `worker ${w}: fd of ${h.rel} opened on mount ${h.mount} at ${((h.since - t0) / 1000).toFixed(1)} s`
    }
  }
}

/** `{a: 1, b: 2}` as "a 1, b 2", largest first. */
export function fmt(r: Record<string, number>): string {
  const e = Object.entries(r).sort((x, y) => y[1] - x[1])
  return e.length ? e.map(([k, v]) => `${k} ${v}`).join(', ') : 'none'
}

/** The report as printable lines. */
export function formatReport(r: StressReport): string[] {
  const lines = [
    `seed ${r.seed}: ${r.mounts} mounts, ${r.workers} workers, ${r.ops} ops in ${(r.ms / 1000).toFixed(1)} s (with setup and checks)`,
    'ops by kind (ok / errnos):',
  ]
  for (const [k, c] of Object.entries(r.byKind).sort())
    lines.push(`  ${k.padEnd(18)} ${String(c.ok).padStart(7)}  ${fmt(c.errnos)}`)
  lines.push(`errnos: ${fmt(r.errnos)}`)
  lines.push(`known limits: ${fmt(r.knownLimits)}`)
  lines.push(`final tree: ${r.treeEntries} entries; check: ${r.check.split('\n').join(' | ')}`)
  lines.push(`failures: ${r.failed}`)
  for (const f of r.failures.slice(0, 30)) lines.push(`  FAIL ${f}`)
  if (r.failed > 30) lines.push(`  ... ${r.failed - 30} more`)
  if (r.agentLog.length) lines.push('agent log errors:', ...r.agentLog.map((l) => `  ${l}`))
  return lines
}
