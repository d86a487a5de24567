/*
 * The Helm chart (charts/scoutfs) with the real helm: `helm lint` and `helm template` with every
 * values file of charts/scoutfs/ci, what each renders (kinds, the operator's flags, the
 * optional monitoring objects), and values.schema.json refusing bad values with a message that
 * names the value.  No API server: rendering only (the install is test/operator/operator.test.ts).
 */
import assert from 'node:assert/strict'
import { cpSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadAllYaml } from '@kubernetes/client-node'
import { component } from '../helpers/control-plane.js'
import { sh } from '../helpers/fuse-harness.js'

const CHART = 'charts/scoutfs'

type Obj = { kind: string; metadata: { name: string; namespace?: string; labels?: Record<string, string> } } & Record<
  string,
  any // eslint-disable-line @typescript-eslint/no-explicit-any
>

describe('helm chart charts/scoutfs', function () {
  this.timeout(120_000)
  let helm: string
  before(() => {
    helm = component('helm')
  })

  async function render(chart: string, ...args: string[]): Promise<Obj[]> {
    const r = await sh(helm, ['template', 'rel', chart, '-n', 'scoutfs-system', ...args])
    assert.equal(r.code, 0, r.stderr)
    return (loadAllYaml(r.stdout) as Array<Obj | null>).filter((o): o is Obj => o !== null)
  }

  const valuesFiles = readdirSync(join(CHART, 'ci')).filter((f) => f.endsWith('-values.yaml'))

  it('has several values files to check', () => assert.ok(valuesFiles.length >= 3, valuesFiles.join(', ')))

  for (const f of valuesFiles)
    it(`lints and renders with ci/${f}`, async () => {
      const lint = await sh(helm, ['lint', CHART, '--strict', '-f', join(CHART, 'ci', f)])
      assert.equal(lint.code, 0, lint.stdout + lint.stderr)
      const objs = await render(CHART, '-f', join(CHART, 'ci', f))
      const kinds = objs.map((o) => o.kind)
      for (const k of ['Deployment', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'Service'])
        assert.ok(kinds.includes(k), `${k} rendered`)
      for (const o of objs.filter((x) => x.kind === 'ClusterRole' || x.kind === 'Role'))
        for (const rule of o.rules as Array<{ verbs: string[]; resources: string[] }>) {
          assert.ok(!rule.verbs.includes('*') && !rule.resources.includes('*'), `${o.metadata.name}: no wildcards`)
          assert.ok(!rule.resources.includes('secrets'), `${o.metadata.name}: no Secrets`)
        }
      const dep = objs.find((o) => o.kind === 'Deployment') as Obj
      const c = dep.spec.template.spec.containers[0]
      assert.deepEqual(c.command, ['scoutfs', 'operator'])
      assert.ok((c.args as string[]).includes('--lease-name=rel-operator'))
    })

  it('the HA values: two replicas with leader election, a ServiceMonitor, the image they name', async () => {
    const objs = await render(CHART, '-f', join(CHART, 'ci', 'ha-monitoring-values.yaml'))
    const dep = objs.find((o) => o.kind === 'Deployment') as Obj
    assert.equal(dep.spec.replicas, 2)
    assert.equal(dep.spec.template.spec.containers[0].image, 'registry.example.com/scoutfs:0.1.0-rc1')
    assert.ok((dep.spec.template.spec.containers[0].args as string[]).includes('--leader-elect=true'))
    const sm = objs.find((o) => o.kind === 'ServiceMonitor') as Obj
    assert.equal(sm.metadata.labels?.release, 'prometheus')
    assert.equal(sm.spec.endpoints[0].interval, '15s')
  })

  it('dashboards become ConfigMaps for the Grafana sidecar; the PrometheusRule wraps files/prometheus-rules.yaml', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'scoutfs-chart-'))
    try {
      const chart = join(dir, 'scoutfs')
      cpSync(CHART, chart, { recursive: true })
      mkdirSync(join(chart, 'dashboards'), { recursive: true })
      mkdirSync(join(chart, 'files'), { recursive: true })
      writeFileSync(join(chart, 'dashboards', 'test_board.json'), '{"title": "test board", "panels": []}\n')
      writeFileSync(
        join(chart, 'files', 'prometheus-rules.yaml'),
        'groups:\n  - name: scoutfs-test\n    rules:\n      - alert: TestAlert\n        expr: vector(1)\n',
      )
      const objs = await render(chart, '--set', 'dashboards.enabled=true', '--set', 'prometheusRule.enabled=true')
      const board = objs.find((o) => o.kind === 'ConfigMap' && o.metadata.name.includes('test-board')) as Obj
      assert.equal(board.metadata.labels?.grafana_dashboard, '1')
      assert.deepEqual(JSON.parse(board.data['test_board.json'] as string), { title: 'test board', panels: [] })
      const rule = objs.find((o) => o.kind === 'PrometheusRule') as Obj
      assert.equal(rule.spec.groups[0].rules[0].alert, 'TestAlert')
      // off by default
      const plain = await render(chart)
      assert.ok(!plain.some((o) => o.kind === 'PrometheusRule' || o.kind === 'ServiceMonitor'))
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('values.schema.json refuses bad values, naming them', async () => {
    const bad: Array<[string[], RegExp]> = [
      [['--set', 'image.pullPolicy=Sometimes'], /pullPolicy/],
      [['--set', 'operator.replicas=0'], /replicas/],
      [['--set', 'operator.replicas=3', '--set', 'operator.leaderElect=false'], /leaderElect/],
      [['--set', 'operator.logLevel=loud'], /logLevel/],
      [['--set', 'serviceMonitor.interval=often'], /interval/],
      [['--set', 'operatr.replicas=2'], /operatr/],
    ]
    for (const [args, msg] of bad) {
      const r = await sh(helm, ['template', 'rel', CHART, ...args])
      assert.notEqual(r.code, 0, `${args.join(' ')} was accepted`)
      assert.match(r.stderr, msg, r.stderr)
    }
    const noName = await sh(helm, ['template', 'rel', CHART, '--set', 'serviceAccount.create=false'])
    assert.notEqual(noName.code, 0)
    assert.match(noName.stderr, /serviceAccount.name is required/)
  })
})
