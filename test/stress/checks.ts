/*
 * The end checks of the stress engine (test/stress/engine.ts), after the workers stopped:
 * every held descriptor closed, every agent alive and answering its admin socket, each mount
 * synced, the final tree identical on every mount, a clean stop and a clean `scoutfs check`.
 */
import { createHash } from 'node:crypto'
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { Cluster } from '../../node-agent/src/tools/launcher/cluster.js'
import type { Devices } from '../../node-agent/src/tools/launcher/devices.js'
import { runScoutfs } from '../../node-agent/src/tools/launcher/scoutfs-cli.js'
import { agentStatus } from '../../node-agent/src/tools/launcher/status.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import { HUNG, XATTRS, deadline, errnoOf, type Held, type Tally, type XattrHelper } from './support.js'

/** What the end checks need of the run; `out` receives what they find as they go. */
export interface CheckCtx {
  N: number
  t: Tally
  cluster: Cluster
  dev: Devices
  held: Held[][]
  helpers: XattrHelper[]
  OP_DEADLINE: number
  log: (l: string) => void
  mnt: (m: number) => string
  top: (m: number, rel?: string) => string
  classify: (kind: string, e: unknown, heldFd?: boolean, ctx?: string) => boolean
  /** called just before the agents are stopped (their exits are expected from then on) */
  stopping: () => void
  out: { check: string; treeEntries: number }
}

/**
 * One line per entry of the tree under `root`, sorted by path: type, inode, nlink, its user.s*
 * xattrs (as `xattrs` reads them), and for files size and content hash.
 */
export async function listTree(root: string, xattrs: (path: string) => Promise<string>): Promise<string[]> {
  const out: string[] = []
  const walk = async (rel: string): Promise<void> => {
    const names = (await fsp.readdir(join(root, rel))).sort()
    for (const n of names) {
      const r = rel ? `${rel}/${n}` : n
      const st = await fsp.lstat(join(root, r))
      if (st.isDirectory()) {
        out.push(`${r} dir ino=${st.ino} nlink=${st.nlink} ${await xattrs(join(root, r))}`)
        await walk(r)
      } else if (st.isFile()) {
        const h = createHash('sha256')
          .update(await fsp.readFile(join(root, r)))
          .digest('hex')
          .slice(0, 16)
        out.push(`${r} file ino=${st.ino} size=${st.size} nlink=${st.nlink} sha=${h} ${await xattrs(join(root, r))}`)
      } else out.push(`${r} other mode=${st.mode.toString(8)}`)
    }
  }
  await walk('')
  return out
}

/** The first differences of two sorted listings. */
export function treeDiff(a: string[], b: string[], max = 10): string[] {
  const sa = new Set(a)
  const sb = new Set(b)
  const d = [...a.filter((x) => !sb.has(x)).map((x) => `- ${x}`), ...b.filter((x) => !sa.has(x)).map((x) => `+ ${x}`)]
  return d.slice(0, max)
}

export function tail(s: string, lines = 30): string {
  return s.split('\n').slice(-lines).join('\n')
}

/** The end checks; failures go to `x.t`. */
export async function endChecks(x: CheckCtx): Promise<void> {
  const { N, t, cluster, dev, held, helpers, OP_DEADLINE, log, mnt, top, classify } = x
  // close every descriptor still held
  for (const pool of held)
    for (const h of pool.splice(0)) {
      const r = await deadline(
        h.fh.close().then(
          () => undefined,
          (e: unknown) => e,
        ),
        OP_DEADLINE,
      )
      if (r === HUNG) t.fail(`close of held ${h.rel} (mount ${h.mount}) hung`)
      else if (r !== undefined) classify('release', r, true)
    }

  // every agent alive and answering (the others are left out of what follows)
  const bad = new Set<number>()
  for (const [i, a] of cluster.agents.entries()) {
    if (!a.running) {
      t.fail(`agent ${i} is not running at the end (${a.exitText})`)
      bad.add(i)
      continue
    }
    const s = await deadline(
      agentStatus(a.mnt).then(
        (v) => v,
        (e: unknown) => new FsError('EIO', `status: ${String(e)}`),
      ),
      15_000,
    )
    if (s === HUNG || s instanceof FsError) {
      t.fail(`agent ${i}: ${s === HUNG ? 'admin GET /status did not answer in 15 s' : s.message}`)
      bad.add(i)
    }
  }
  const good = [...Array(N).keys()].filter((m) => !bad.has(m))

  // quiesce, sync, compare
  for (const m of good) {
    const r = await runScoutfs(['sync', mnt(m)], { timeoutMs: OP_DEADLINE })
    if (r.code !== 0) t.fail(`scoutfs sync ${mnt(m)}: exit ${r.code ?? r.signal}: ${r.stderr.trim()}`)
  }
  const trees: Array<{ m: number; tree: string[] }> = []
  for (const m of good) {
    const tr = await deadline(
      listTree(top(m), async (path) => {
        const vals: string[] = []
        for (let i = 0; i < XATTRS; i++) {
          const [res, val] = await helpers[m]!.call('get', path, `user.s${i}`)
          vals.push(`s${i}=${res === 'OK' ? createHash('sha256').update(val!).digest('hex').slice(0, 8) : res}`)
        }
        return vals.join(' ')
      }).then(
        (v) => v,
        (e: unknown) => new FsError('EIO', `listing mount ${m}: ${errnoOf(e)} ${String(e)}`),
      ),
      2 * OP_DEADLINE,
    )
    if (tr === HUNG) t.fail(`listing the tree on mount ${m} did not finish within ${(2 * OP_DEADLINE) / 1000} s`)
    else if (tr instanceof FsError) t.fail(tr.message)
    else trees.push({ m, tree: tr })
  }
  if (trees.length) {
    const [first, ...rest] = trees
    x.out.treeEntries = first!.tree.length
    for (const { m, tree } of rest) {
      const d = treeDiff(first!.tree, tree)
      if (d.length) t.fail(`the final tree on mount ${m} differs from mount ${first!.m}'s:\n  ${d.join('\n  ')}`)
    }
    log(`final tree: ${x.out.treeEntries} entries, compared on mounts ${trees.map((x) => x.m).join(', ')}`)
  }

  for (const h of helpers) h.stop()
  x.stopping()
  const stops = await cluster.stop(60_000)
  for (const { agent, result } of stops) {
    if (!result.inTime) t.fail(`agent ${agent.mnt} did not stop within 60 s of SIGTERM`)
    else if (result.code !== 0)
      t.fail(`agent ${agent.mnt} exited ${agent.exitText} on stop; log tail:\n${tail(agent.log())}`)
    if (!result.unmounted) t.fail(`${agent.mnt} is still mounted after its agent stopped`)
  }
  const c = await runScoutfs(['check', dev.meta, dev.data], { timeoutMs: 600_000 })
  x.out.check = `exit ${c.code ?? c.signal}: ${c.stdout.trim()}${c.stderr.trim() ? `\n${c.stderr.trim()}` : ''}`
  if (c.code !== 0 || !/^clean$/m.test(c.stdout)) t.fail(`scoutfs check is not clean: ${x.out.check}`)
  log(`scoutfs check: ${x.out.check.split('\n').join(' | ')}`)
}
