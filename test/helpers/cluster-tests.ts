/*
 * Shared pieces of the multi-mount tests (test/cluster/*.test.ts): one cluster per describe
 * block (started in before(), stopped cleanly and then swept in after(), asserting no mount is
 * left behind), python snippets run on mount i at the same relative directory, a stat record
 * in python that compares across mounts, an agent run that is expected to be refused, and the
 * server's /status sampled in the background.
 */
import { testFrontend } from './frontend.js'
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { adminCall } from '../../node-agent/src/agent/admin.js'
import { BIN, STOP_TIMEOUT_MS, forceUnmount, startAgent, stopAllAgents, type Agent } from './agent.js'
import { othersLeftOrHeld } from '../../node-agent/src/tools/launcher/cluster.js'
import { agentStatus, makeClusterDevices, startCluster, type Cluster, type ClusterDevices } from './cluster.js'
import { fuseMountsUnder, sh, startPy, type Run } from './fuse-harness.js'
import { dedent, errorLines, runPy } from './mount-tests.js'

/**
 * Python defined before every snippet run by onMount(): st(path) is the stat record compared
 * across mounts (or the errno name), gen(seed, n) deterministic bytes, sha(b) their hash.
 */
export const PY_DEFS = String.raw`
def st(path, follow=False):
    try:
        s = os.stat(path) if follow else os.lstat(path)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
    return {'ino': s.st_ino, 'mode': oct(s.st_mode), 'nlink': s.st_nlink, 'size': s.st_size,
            'blocks': s.st_blocks, 'uid': s.st_uid, 'gid': s.st_gid,
            'mtime_ns': s.st_mtime_ns, 'ctime_ns': s.st_ctime_ns}
def gen(seed, n):
    return random.Random(seed).randbytes(n)
def sha(b):
    return hashlib.sha256(b).hexdigest()
def fsha(path):
    try:
        with open(path, 'rb') as f:
            return sha(f.read())
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
`

/** Whether the agent's process is still running. */
export function alive(a: Agent): boolean {
  return a.proc.exitCode === null && a.proc.signalCode === null
}

/** The agent of `c` that serves now (its GET /quorum says so), else agents[0]. */
export async function servingAgent(c: Cluster): Promise<Agent | undefined> {
  for (const a of c.agents) {
    if (!alive(a)) continue
    const q = await adminCall(a.mnt, 'GET /quorum').catch(() => undefined)
    if (q?.serving) return a
  }
  return c.agents[0]
}

/**
 * Stop a cluster's live agents cleanly: every agent but the serving one together, then the
 * serving one once each of them has left or waits on its farewell (their last commits and
 * farewells need it; the last quorum members' farewells wait for its own: farewell-gate.ts).  Returns each stopped agent's
 * exit code with its mountpoint.
 */
export async function stopCluster(c: Cluster): Promise<Array<{ mnt: string; code: number | null; log: string }>> {
  const server = await servingAgent(c)
  const rest = [...new Set(c.agents)].filter((a) => alive(a) && a !== server)
  const stopping = Promise.all(rest.map((a) => a.stop()))
  let last: { mnt: string; code: number | null; log: string } | undefined
  // the last quorum members' farewells wait for the server's own (farewell-gate.ts)
  if (server && alive(server)) {
    await othersLeftOrHeld(server.mnt, () => rest.filter(alive).length, STOP_TIMEOUT_MS)
    last = { mnt: server.mnt, code: await server.stop(), log: server.log() }
  }
  const codes = await stopping
  const out = rest.map((a, i) => ({ mnt: a.mnt, code: codes[i]!, log: a.log() }))
  return last ? [...out, last] : out
}

/** Assert every agent of stopCluster() exited 0 (with the log of the first that did not). */
export function assertCleanStops(stops: Array<{ mnt: string; code: number | null; log: string }>): void {
  for (const s of stops) assert.equal(s.code, 0, `agent for ${s.mnt} exited ${s.code}; log:\n${s.log}`)
}

/**
 * One cluster of `n` mounts for a describe block.  before() starts it and hands it to `on`;
 * after() stops the live agents cleanly (clients, then the server), sweeps whatever is left
 * (stopAllAgents), asserts nothing is left mounted under the devices and that the clean stops
 * exited 0.  A test may replace entries of cluster.agents (restarts); after() stops those.
 */
/**
 * A maker of fresh, numbered directories, made on mount 0 of the cluster `c()` returns, each
 * named by its path relative to every mount's root (one per test).
 */
export function freshClusterDirs(c: () => Cluster): (name: string) => string {
  let n = 0
  return (name) => {
    const rel = `${++n}-${name}`
    mkdirSync(join(c().agents[0]!.mnt, rel))
    return rel
  }
}

export function clusterPerSuite(
  n: number,
  opts: { options?: string; metrics?: boolean; metaBytes?: number; dataBytes?: number },
  on: (c: Cluster) => void,
): void {
  let cluster: Cluster | undefined
  let devDir: string | undefined
  before(async function () {
    this.timeout(120_000)
    const dev = await makeClusterDevices({ metaBytes: opts.metaBytes, dataBytes: opts.dataBytes })
    devDir = dev.dir
    cluster = await startCluster(n, { dev, options: opts.options, metrics: opts.metrics })
    on(cluster)
  })
  // a failed test shows what the agents logged at error level (the evidence a report needs)
  afterEach(function () {
    if (this.currentTest?.state !== 'failed' || !cluster) return
    for (const [i, a] of [...new Set(cluster.agents)].entries()) {
      const lines = errorLines(a.log())
      if (lines.length)
        console.log(
          `      agent ${i} (${a.mnt}) error lines, last 10 of ${lines.length}:\n${lines.slice(-10).join('\n')}`,
        )
    }
  })
  after(async function () {
    this.timeout(180_000)
    let stops: Awaited<ReturnType<typeof stopCluster>> = []
    let stopErr: unknown
    try {
      if (cluster) stops = await stopCluster(cluster)
    } catch (e) {
      stopErr = e
    }
    await stopAllAgents()
    if (devDir) assert.deepEqual(await fuseMountsUnder(devDir), [], 'no mount left behind')
    if (stopErr) throw stopErr
    assertCleanStops(stops)
  })
}

/** Run a python snippet (PY_DEFS + runPy's helpers) on mount `i` of `c`, in directory `rel` below its root. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export function onMount<T = any>(c: Cluster, i: number, rel: string, script: string, ...args: string[]): Promise<T> {
  return runPy<T>(join(c.agents[i]!.mnt, rel), PY_DEFS + '\n' + dedent(script), ...args)
}

/** The indexes of every mount but `i`. */
export function others(c: Cluster, i: number): number[] {
  return c.agents.map((_, j) => j).filter((j) => j !== i)
}

/**
 * Run `scoutfs mount --foreground` that is expected to be refused: it must exit by itself
 * (within `timeoutMs`, else it is killed and reported as code 128 with signal SIGKILL).  A mount
 * it made anyway is forced away.
 */
export async function runRefusedMount(
  dev: { meta: string; data: string },
  mnt: string,
  options: string | undefined,
  timeoutMs = 60_000,
): Promise<Run & { mountedAtSomePoint: boolean }> {
  const args = ['mount', '--metadev', dev.meta, dev.data, mnt, '--foreground', '--log-level', 'info']
  const o = [options, (dev as { tlsOptions?: string }).tlsOptions].filter(Boolean).join(',')
  if (o) args.push('-o', o)
  const r = await sh(process.execPath, [BIN, ...args], { timeoutMs })
  const mountedAtSomePoint = /"msg":"mounted"/.test(r.stdout + r.stderr)
  await forceUnmount(mnt)
  return { ...r, mountedAtSomePoint }
}

/** Restart agent `i` of `c` on its mountpoint (agent 0 with quorum_slot_nr=0) and replace it in c.agents. */
export async function restartAgent(c: Cluster, i: number, options?: string): Promise<Agent> {
  const o = [i === 0 ? 'quorum_slot_nr=0' : undefined, options].filter(Boolean).join(',') || undefined
  const a = await startAgent(c.dev, join(c.dev.dir, `m${i}`), { options: o })
  c.agents[i] = a
  return a
}

/** The server agent's serverState.logTrees sampled every `everyMs` until stop(). */
export function sampleLogTrees(
  serverMnt: string,
  everyMs = 200,
): { stop(): Promise<{ samples: number[]; errors: string[]; last?: NonNullable<unknown> }> } {
  const samples: number[] = []
  const errors: string[] = []
  let last: NonNullable<unknown> | undefined
  let running = true
  const loop = (async () => {
    while (running) {
      try {
        const s = await agentStatus(serverMnt)
        if (s.serverState) {
          samples.push(s.serverState.logTrees)
          last = s.serverState
        } else errors.push('no serverState in the server agent /status')
      } catch (e) {
        errors.push(String(e))
      }
      await new Promise((r) => setTimeout(r, everyMs))
    }
  })()
  return {
    async stop() {
      running = false
      await loop
      return { samples, errors, last }
    },
  }
}

/**
 * A test of behaviour that `source` cannot deliver today — the fuse-native binding (libfuse
 * 2's path API; docs/mount.md, the low-level binding of DESIGN §12 is the fix) or the cluster
 * (docs/cluster.md's known limits) — as in test/mount/posix-*.test.ts: skipped, loudly, unless
 * SCOUTFS_TEST_KNOWN_LIMITS=1 runs it.  A fuse-native limit is skipped only when the tests run
 * on fuse-native (test/helpers/frontend.ts): the low-level frontend must pass it.
 */
export function knownLimit(ctx: Mocha.Context, what: string, source = 'fuse-native'): void {
  if (source === 'fuse-native' && testFrontend() !== 'fuse-native') return
  if (process.env.SCOUTFS_TEST_KNOWN_LIMITS === '1') return
  console.log(`      KNOWN LIMIT (${source}): ${what}; run with SCOUTFS_TEST_KNOWN_LIMITS=1 to see it fail`)
  ctx.skip()
}

export type { Cluster, ClusterDevices }

/**
 * Run one python process per entry at the same moment: each script (PY_DEFS loaded, plus
 * time/random/hashlib) runs after a barrier (every process started and ready) and must end
 * with ready(result).  Returns the results in order and the wall time from the go.
 */
export async function concurrently<T = unknown>(
  runs: Array<{ script: string; args: string[] }>,
  timeoutMs = 300_000,
): Promise<{ results: T[]; ms: number }> {
  const procs = runs.map((r) =>
    startPy('import time, random, hashlib\n' + PY_DEFS + '\nready("ready")\nwait()\n' + dedent(r.script), r.args),
  )
  try {
    for (const p of procs) assert.equal(await p.next(60_000), 'ready')
    const t0 = Date.now()
    for (const p of procs) p.send('go')
    const results = await Promise.all(procs.map((p) => p.next<T>(timeoutMs)))
    const ms = Date.now() - t0
    for (const p of procs) {
      const d = await p.done()
      assert.equal(d.code, 0, d.stderr)
    }
    return { results, ms }
  } finally {
    for (const p of procs) p.kill()
  }
}
