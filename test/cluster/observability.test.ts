/*
 * Observability on a real cluster (issue 14): three quorum members, each a `scoutfs mount`
 * process with its own FUSE mount and /metrics, under a short workload on every mount; a
 * real Prometheus (Debian's binary, on loopback) scrapes them and loads the chart's rules.
 *  - the agents' exported metric families equal docs/metrics.md's agent section;
 *  - `scoutfs counters` shows the same counters as /metrics, as a table and as JSON;
 *  - every query of every dashboard panel (template variables substituted) returns series,
 *    and the template variables' own queries find the filesystem and the nodes;
 *  - every alert rule is loaded healthy and its expression evaluates; ScoutfsNoQuorum's is
 *    empty while a member serves and becomes true once two of the three members are killed.
 */
import assert from 'node:assert/strict'
import { mkdir, readdir, readFile, rename, stat, unlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { adminCall } from '../../node-agent/src/agent/admin.js'
import type { CountersReply } from '../../node-agent/src/agent/admin-api.js'
import { REPO_ROOT } from '../../node-agent/src/tools/launcher/scoutfs-cli.js'
import { scoutfs, stopAllAgents } from '../helpers/agent.js'
import { makeClusterDevices, startCluster, type Cluster } from '../helpers/cluster.js'
import { alive } from '../helpers/cluster-tests.js'
import { fuseMountsUnder } from '../helpers/fuse-harness.js'
import { compareWithCatalogue, exposedFamilies, readCatalogue } from '../helpers/metrics-catalogue.js'
import { startPrometheus, stopAllPrometheus, until, type Prometheus } from '../helpers/prometheus.js'

const DASHBOARDS = join(REPO_ROOT, 'charts', 'scoutfs', 'dashboards')
const RULES = join(REPO_ROOT, 'charts', 'scoutfs', 'files', 'prometheus-rules.yaml')

interface Target {
  expr: string
}
interface Panel {
  title: string
  targets?: Target[]
}
interface TemplateVar {
  name: string
  type: string
  query?: { query: string } | string
}
interface Dashboard {
  title: string
  panels: Panel[]
  templating: { list: TemplateVar[] }
}

async function dashboards(): Promise<Array<{ file: string; d: Dashboard }>> {
  const files = (await readdir(DASHBOARDS)).filter((f) => f.endsWith('.json')).sort()
  return Promise.all(
    files.map(async (file) => ({ file, d: JSON.parse(await readFile(join(DASHBOARDS, file), 'utf8')) as Dashboard })),
  )
}

/** What Grafana puts in place of the variables: this filesystem, all nodes, a 1 m rate window. */
function substitute(expr: string, fsid: string): string {
  return expr
    .replaceAll('$__rate_interval', '1m')
    .replaceAll('$__interval', '15s')
    .replaceAll('$fsid', fsid)
    .replaceAll('$instance', '.*')
}

async function scrape(addr: string): Promise<string> {
  const r = await fetch(`http://${addr}/metrics`)
  assert.equal(r.status, 200)
  return r.text()
}

/** A short workload on mount `i`: files written, read, renamed, removed, looked up in vain, and shared with the others. */
async function workload(c: Cluster, i: number): Promise<void> {
  const root = c.agents[i]!.mnt
  const dir = join(root, `w${i}`)
  await mkdir(dir)
  for (let k = 0; k < 20; k++) await writeFile(join(dir, `f${k}`), Buffer.alloc(8192 + k * 100, k))
  for (let k = 0; k < 20; k++) await readFile(join(dir, `f${k}`))
  for (let k = 0; k < 10; k++) await rename(join(dir, `f${k}`), join(dir, `g${k}`))
  for (let k = 0; k < 5; k++) await unlink(join(dir, `g${k}`))
  // errors by errno: lookups of names that are not there
  for (let k = 0; k < 5; k++) await assert.rejects(stat(join(dir, `missing${k}`)), { code: 'ENOENT' })
  // the other mounts' directories: their locks move here (grants, invalidations)
  for (let j = 0; j < c.agents.length; j++) if (j !== i) await readdir(join(root, `w${j}`)).catch(() => [])
  await writeFile(join(root, 'shared'), `from ${i}\n`)
}

describe('observability: the metrics catalogue, scoutfs counters, dashboards and alerts on a real Prometheus', function () {
  this.timeout(600_000)
  let c: Cluster
  let devDir: string
  let prom: Prometheus
  let fsid: string

  before(async function () {
    this.timeout(300_000)
    // (1 GiB of metadata: each member mount reserves metadata blocks up front; sparse files)
    const dev = await makeClusterDevices({ members: 3, metaBytes: 1024 << 20, dataBytes: 1024 << 20 })
    devDir = dev.dir
    c = await startCluster(3, { dev, members: 3, metrics: true, options: 'quorum_heartbeat_timeout_ms=2000' })
    for (let i = 0; i < 3; i++) await workload(c, i)
    for (const a of c.agents) await adminCall(a.mnt, 'POST /sync')
    fsid = (await adminCall(c.agents[0]!.mnt, 'GET /statfs')).fsid
    prom = await startPrometheus(
      c.agents.map((a) => a.metricsAddr!),
      [RULES],
    )
    // wait for enough scrapes of every agent that rate() over 1 m has two samples of each
    await until(async () => {
      const up = await prom.query('count(up{job="scoutfs"} == 1)')
      const scrapes = await prom.query('min(count_over_time(up{job="scoutfs"}[1m]))')
      return up[0]?.value[1] === '3' && Number(scrapes[0]?.value[1] ?? 0) >= 3 ? true : undefined
    })
  })

  after(async function () {
    this.timeout(180_000)
    await stopAllPrometheus()
    await stopAllAgents()
    if (devDir) assert.deepEqual(await fuseMountsUnder(devDir), [], 'no mount left behind')
  })

  it("every metric the agents export is in docs/metrics.md's agent section with its type, and every one listed there is exported", async () => {
    const exported = new Map<string, string>()
    for (const a of c.agents) for (const [n, t] of exposedFamilies(await scrape(a.metricsAddr!))) exported.set(n, t)
    const agent = readCatalogue().get('agent')
    assert.ok(agent && agent.length > 0, 'docs/metrics.md has an "## agent" section with metric rows')
    const diff = compareWithCatalogue(agent, exported)
    assert.deepEqual(diff, { undocumented: [], notExported: [], wrongType: [] })
  })

  it("scoutfs counters prints the agent's counters as a table and as JSON (the values /metrics shows); a path outside scoutfs is refused", async () => {
    const a = c.agents[1]!
    const j = await scoutfs('counters', '-j', join(a.mnt, 'w1'))
    assert.equal(j.code, 0, j.stderr)
    const reply = JSON.parse(j.stdout) as CountersReply
    assert.equal(reply.fsid, fsid)
    const exposition = await scrape(a.metricsAddr!)
    // counters that do not move without a workload: the same in JSON and on /metrics
    for (const name of [
      'scoutfs_inodes_created_total',
      'scoutfs_data_written_bytes_total',
      'scoutfs_trans_commits_total',
    ]) {
      const s = reply.samples.find((x) => x.name === name)
      assert.ok(s, `${name} in counters -j`)
      const m = new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(exposition)
      assert.ok(m, `${name} on /metrics`)
      assert.equal(s.value, Number(m[1]), name)
    }
    assert.ok(reply.samples.find((x) => x.name === 'scoutfs_inodes_created_total')!.value >= 20)
    const enoent = reply.samples.find(
      (x) => x.name === 'scoutfs_fs_ops_total' && x.labels.op === 'lookup' && x.labels.result === 'ENOENT',
    )
    assert.ok(enoent && enoent.value >= 5, 'lookups of missing names counted by errno')
    // the new readings hold what the agent's other views say
    const v = (name: string, labels: Record<string, string> = {}): number => {
      const x = reply.samples.find(
        (y) => y.name === name && Object.entries(labels).every(([k, l]) => y.labels[k] === l),
      )
      assert.ok(x, `${name} ${JSON.stringify(labels)} in counters -j`)
      return x.value
    }
    const sf = await adminCall(a.mnt, 'GET /statfs')
    assert.equal(v('scoutfs_data_size_bytes'), sf.total_data_blocks * 4096)
    assert.equal(v('scoutfs_meta_size_bytes'), sf.total_meta_blocks * 65536)
    assert.ok(v('scoutfs_data_free_bytes') > 0 && v('scoutfs_data_free_bytes') < v('scoutfs_data_size_bytes'))
    assert.ok(v('scoutfs_item_cache_bytes') > 0 && v('scoutfs_item_cache_items') > 0)
    assert.equal(v('scoutfs_block_read_bytes_total'), v('scoutfs_block_reads_total') * 65536)
    assert.equal(v('scoutfs_lock_waiters'), 0, 'no lock use waits on an idle mount')
    assert.equal(v('scoutfs_lock_oldest_wait_seconds'), 0, 'so none has waited')
    assert.ok(v('scoutfs_lock_waits_total') > 0, 'the shared directories made lock uses wait')
    const t = await scoutfs('counters', a.mnt)
    assert.equal(t.code, 0, t.stderr)
    const created = reply.samples.find((x) => x.name === 'scoutfs_inodes_created_total')!.value
    assert.match(t.stdout, new RegExp(`^scoutfs_inodes_created_total +${created}$`, 'm'))
    assert.match(t.stdout, /^scoutfs_fs_ops_total\{op="lookup",result="ENOENT"\} +\d+$/m)
    assert.doesNotMatch(t.stdout, /_bucket/, 'the table leaves histogram buckets out')
    const bad = await scoutfs('counters', devDir)
    assert.notEqual(bad.code, 0)
    assert.match(bad.stderr, /scoutfs: /)
  })

  it('walk-inodes --progress prints the same stdout as without it (progress goes to stderr only)', async () => {
    const a = c.agents[0]!
    const plain = await scoutfs('walk-inodes', 'meta_seq', '0', '-1', a.mnt)
    assert.equal(plain.code, 0, plain.stderr)
    // the workload left 15 files per mount (and their directories)
    assert.ok(plain.stdout.split('\n').filter((l) => /^\d+ +\d+ +0 +\d+$/.test(l)).length >= 45, plain.stdout)
    const p = await scoutfs('walk-inodes', '--progress', 'meta_seq', '0', '-1', a.mnt)
    assert.equal(p.code, 0, p.stderr)
    assert.equal(p.stdout, plain.stdout)
  })

  it("every dashboard panel's queries return series, and the template variables find the filesystem and every node", async () => {
    const ds = await dashboards()
    assert.deepEqual(
      ds.map((d) => d.file),
      ['scoutfs-locks-cache.json', 'scoutfs-node.json', 'scoutfs-overview.json'],
    )
    const empty: string[] = []
    let queries = 0
    for (const { file, d } of ds) {
      const vars = d.templating.list.map((v) => v.name)
      assert.deepEqual(vars, ['datasource', 'fsid', 'instance'], `${file} variables`)
      for (const v of d.templating.list.filter((x) => x.type === 'query')) {
        const q = typeof v.query === 'string' ? v.query : v.query!.query
        const m = /^label_values\((.+), (\w+)\)$/.exec(q)
        assert.ok(m, `${file} variable ${v.name}: ${q}`)
        const values = await prom.api<string[]>(
          `label/${m[2]}/values?match[]=${encodeURIComponent(substitute(m[1]!, fsid))}`,
        )
        const want = v.name === 'fsid' ? [fsid] : c.agents.map((a) => a.metricsAddr!).sort()
        assert.deepEqual(values.sort(), want, `${file} variable ${v.name}`)
      }
      for (const p of d.panels) {
        assert.ok(p.targets && p.targets.length > 0, `${file} panel ${p.title} has queries`)
        for (const t of p.targets) {
          queries++
          const r = await prom.query(substitute(t.expr, fsid))
          if (r.length === 0) empty.push(`${file} / ${p.title}: ${t.expr}`)
        }
      }
    }
    assert.deepEqual(empty, [], 'panel queries without series')
    console.log(`      ${queries} panel queries over ${ds.length} dashboards returned series`)
  })

  it('every alert rule of the rules file is loaded healthy and its expression evaluates; none fires on a healthy cluster', async () => {
    const groups = (await prom.api<{ groups: Array<{ name: string; file: string; rules: PromRuleView[] }> }>('rules'))
      .groups
    interface PromRuleView {
      name: string
      query: string
      health: string
      lastError?: string
      type: string
      state?: string
    }
    // the groups and alerts of the file (its `- name:` and `- alert:` lines), all loaded, in order
    const file = await readFile(RULES, 'utf8')
    const inFile = (re: RegExp): string[] => [...file.matchAll(re)].map((m) => m[1]!)
    assert.deepEqual(groups.map((g) => g.name).sort(), inFile(/^ {2}- name: (\S+)$/gm).sort())
    const names = groups.flatMap((g) => g.rules.map((r) => r.name))
    assert.deepEqual(names.sort(), inFile(/^ {6}- alert: (\S+)$/gm).sort())
    for (const want of [
      'ScoutfsNoQuorum',
      'ScoutfsServerFlapping',
      'ScoutfsMountFenced',
      'ScoutfsChecksumErrors',
      'ScoutfsMetadataSpaceLow',
      'ScoutfsDataSpaceLow',
      'ScoutfsLockWaitsHigh',
      'ScoutfsLockStuck',
    ])
      assert.ok(names.includes(want), `rule ${want}`)
    // evaluated at least once by now (evaluation_interval 1 s): health ok, not unknown or err
    const rules = await until(async () => {
      const gs = (await prom.api<{ groups: Array<{ rules: PromRuleView[] }> }>('rules')).groups
      const all = gs.flatMap((g) => g.rules)
      return all.every((r) => r.health !== 'unknown') ? all : undefined
    })
    for (const r of rules) {
      assert.equal(r.type, 'alerting')
      assert.equal(r.health, 'ok', `${r.name}: ${r.lastError ?? ''}`)
      await prom.query(r.query) // throws on a query Prometheus refuses
      assert.equal(r.state, 'inactive', `${r.name} on a healthy cluster`)
    }
  })

  it("ScoutfsNoQuorum's expression is empty while a member serves, and true once two of the three members are killed", async () => {
    const rule = (await prom.api<{ groups: Array<{ rules: Array<{ name: string; query: string }> }> }>('rules')).groups
      .flatMap((g) => g.rules)
      .find((r) => r.name === 'ScoutfsNoQuorum')!
    assert.deepEqual(await prom.query(rule.query), [])
    // kill the serving member and one other: the one left cannot make a majority
    const serving: number[] = []
    for (const [i, a] of c.agents.entries()) if ((await adminCall(a.mnt, 'GET /quorum')).serving) serving.push(i)
    assert.equal(serving.length, 1, 'one member serves')
    const victims = [serving[0]!, (serving[0]! + 1) % 3]
    const survivor = [0, 1, 2].find((i) => !victims.includes(i))!
    for (const i of victims) await c.agents[i]!.kill9()
    assert.ok(alive(c.agents[survivor]!))
    const fired = await until(async () => {
      const r = await prom.query(rule.query)
      return r.length > 0 ? r : undefined
    })
    assert.deepEqual(
      fired.map((s) => s.metric.fsid),
      [fsid],
    )
    // and Prometheus's rule evaluation agrees: the alert is pending (its `for` has not passed)
    const alerts = await until(async () => {
      const a = (await prom.api<{ alerts: Array<{ labels: Record<string, string>; state: string }> }>('alerts')).alerts
      const mine = a.filter((x) => x.labels.alertname === 'ScoutfsNoQuorum')
      return mine.length > 0 ? mine : undefined
    })
    assert.ok(['pending', 'firing'].includes(alerts[0]!.state))
    assert.equal(alerts[0]!.labels.fsid, fsid)
  })
})
