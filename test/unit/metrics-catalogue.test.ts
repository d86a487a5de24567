/*
 * The metrics catalogue (docs/metrics.md) and the files that use it, without a cluster:
 *  - the catalogue is well formed (sections agent, csi and operator; names, types, units);
 *  - the registries of the programs that run in-process (the CSI driver, the operator)
 *    export exactly the metrics of their sections (the agent's are checked on a real cluster:
 *    test/cluster/observability.test.ts);
 *  - every metric the dashboards and alert rules use is in the catalogue;
 *  - `promtool check rules` accepts the chart's rules file, and refuses a broken copy.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { REPO_ROOT } from '../../node-agent/src/tools/launcher/scoutfs-cli.js'
import { sh } from '../helpers/fuse-harness.js'
import { CsiMetrics } from '../../csi/src/metrics.js'
import { OperatorMetrics } from '../../operator/src/metrics.js'
import { compareWithCatalogue, exposedFamilies, readCatalogue } from '../helpers/metrics-catalogue.js'

const RULES = join(REPO_ROOT, 'charts', 'scoutfs', 'files', 'prometheus-rules.yaml')
const DASHBOARDS = join(REPO_ROOT, 'charts', 'scoutfs', 'dashboards')

/**
 * The in-process registries checked against their catalogue sections: a program's section
 * lists exactly what its registry exports.  A section with no registry here must list nothing.
 */
const REGISTRIES: Array<{ section: string; exposition: () => Promise<string> }> = [
  { section: 'csi', exposition: () => new CsiMetrics().registry.metrics() },
  { section: 'operator', exposition: () => new OperatorMetrics().registry.metrics() },
]

const TYPES = ['counter', 'gauge', 'histogram', 'summary']

describe('the metrics catalogue (docs/metrics.md)', () => {
  const cat = readCatalogue()

  it('has the sections agent, csi and operator, and well-formed rows: scoutfs_ names, known types, counters ending in _total, units, meanings, no duplicates', () => {
    for (const s of ['agent', 'csi', 'operator']) assert.ok(cat.has(s), `section "## ${s}"`)
    const seen = new Set<string>()
    for (const [section, rows] of cat) {
      for (const r of rows) {
        const where = `${section}: ${r.name}`
        assert.ok(!seen.has(r.name), `${where} listed twice`)
        seen.add(r.name)
        assert.ok(TYPES.includes(r.type), `${where}: type '${r.type}'`)
        if (r.type === 'counter') assert.match(r.name, /_total$/, `${where}: a counter's name ends in _total`)
        // only prom-client's default process metrics (not ours) have gauges named _total
        else if (!/^scoutfs_(agent|csi|operator)_nodejs_/.test(r.name))
          assert.doesNotMatch(r.name, /_total$/, `${where}: only a counter's name ends in _total`)
        assert.ok(r.unit.length > 0, `${where}: a unit`)
        assert.ok(r.meaning.length > 0, `${where}: what it means`)
        if (r.unit === 'seconds') assert.match(r.name, /_seconds(_total)?$/, `${where}: seconds in the name`)
        if (r.unit === 'bytes') assert.match(r.name, /_bytes(_total)?$/, `${where}: bytes in the name`)
      }
    }
    assert.ok((cat.get('agent') ?? []).length > 50, 'the agent section lists the agent metrics')
  })

  it('lists exactly what the CSI driver and the operator registries export (sections without a registry list nothing)', async () => {
    for (const r of REGISTRIES) {
      const diff = compareWithCatalogue(cat.get(r.section) ?? [], exposedFamilies(await r.exposition()))
      assert.deepEqual(diff, { undocumented: [], notExported: [], wrongType: [] }, r.section)
    }
    const checked = new Set(['agent', ...REGISTRIES.map((r) => r.section)])
    for (const [section, rows] of cat)
      if (!checked.has(section))
        assert.deepEqual(
          rows.map((r) => r.name),
          [],
          `section ${section} has no registry checked`,
        )
  })

  it('has every metric the dashboards and alert rules use', () => {
    const known = new Set([...cat.values()].flat().map((r) => r.name))
    const texts = [
      readFileSync(RULES, 'utf8'),
      ...readdirSync(DASHBOARDS)
        .filter((f) => f.endsWith('.json'))
        .map((f) => readFileSync(join(DASHBOARDS, f), 'utf8')),
    ]
    const used = new Set(texts.flatMap((t) => [...t.matchAll(/\bscoutfs_[a-z0-9_]+/g)].map((m) => m[0])))
    const unknown = [...used].filter((n) => !known.has(n) && !known.has(n.replace(/_(bucket|sum|count)$/, '')))
    assert.deepEqual(unknown, [])
    assert.ok(used.size > 30)
  })
})

describe('the chart rules file (charts/scoutfs/files/prometheus-rules.yaml)', () => {
  it('passes promtool check rules, and a copy with a broken expression does not', async function () {
    this.timeout(60_000)
    const ok = await sh('promtool', ['check', 'rules', RULES])
    assert.equal(ok.code, 0, `promtool (scripts/ensure-deps.sh installs it with prometheus): ${ok.stdout}${ok.stderr}`)
    assert.match(ok.stdout, /SUCCESS: \d+ rules found/)
    const dir = mkdtempSync(join(tmpdir(), 'scoutfs-rules-'))
    try {
      const broken = join(dir, 'rules.yaml')
      writeFileSync(
        broken,
        readFileSync(RULES, 'utf8').replace(
          'max by (fsid) (scoutfs_quorum_serving) < 1',
          'max by (fsid (scoutfs_quorum_serving) < 1',
        ),
      )
      const bad = await sh('promtool', ['check', 'rules', broken])
      assert.notEqual(bad.code, 0)
      assert.match(bad.stdout + bad.stderr, /parse error|FAILED/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
