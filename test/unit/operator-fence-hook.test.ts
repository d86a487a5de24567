/*
 * The fence reconciler's hook method (operator/src/fence-reconciler.ts) above a fake Kube (the
 * deletePod method is tested against a real API server in test/operator/operator.test.ts): the
 * hook gets the request in SCOUTFS_FENCED_REQ_*, exit 0 is Fenced, a non-zero exit or a hang
 * is Failed with the reason and the end of stderr, and a finished request is left alone.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { KubernetesObject } from '@kubernetes/client-node'
import { EventRecorder } from '../../operator/src/events.js'
import { FenceReconciler, type FenceRequest } from '../../operator/src/fence-reconciler.js'
import type { Kube } from '../../operator/src/kube.js'
import { makeLog } from '../../operator/src/log.js'
import { OperatorMetrics } from '../../operator/src/metrics.js'
import type { ScoutFilesystem } from '../../operator/src/types.js'

function fakeKube(): { kube: Kube; statuses: Array<Record<string, unknown>>; events: string[] } {
  const statuses: Array<Record<string, unknown>> = []
  const events: string[] = []
  const no = (): never => {
    throw new Error('not expected of the hook method')
  }
  const kube: Kube = {
    apply: no,
    replace: no,
    read: no,
    list: no,
    mergePatch: no,
    remove: no,
    create: async <T extends KubernetesObject>(o: T): Promise<T> => {
      events.push(String((o as { reason?: string }).reason))
      return o
    },
    patchStatus: async (_ref, _rv, status) => {
      statuses.push(status)
    },
  }
  return { kube, statuses, events }
}

function request(phase?: string): FenceRequest {
  return {
    apiVersion: 'scoutfs.io/v1alpha1',
    kind: 'FenceRequest',
    metadata: { name: 'archive-0000000000000abc-client-timeout', namespace: 'storage', resourceVersion: '7' },
    spec: {
      filesystem: 'archive',
      rid: '0000000000000abc',
      reason: 'client_timeout',
      host: 'node-b',
      pid: 4242,
      pidStart: 99,
      addr: '10.0.0.2',
      slot: 1,
      nodeName: 'node-b',
      requestedAt: '2026-12-06T00:00:00Z',
    },
    ...(phase ? { status: { phase } } : {}),
  }
}

function filesystem(command: string[], timeoutSeconds = 10): ScoutFilesystem {
  return {
    metadata: { name: 'archive', namespace: 'storage' },
    spec: { fencing: { method: 'hook', hook: { command, timeoutSeconds }, timeoutSeconds: 0 } },
  } as unknown as ScoutFilesystem
}

describe('operator: fence hook', () => {
  const log = makeLog('silent')
  let dir: string
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'scoutfs-hook-'))))
  afterEach(() => rmSync(dir, { recursive: true, force: true }))

  async function reconcile(
    fr: FenceRequest,
    fs: ScoutFilesystem,
  ): Promise<ReturnType<typeof fakeKube> & { metrics: OperatorMetrics }> {
    const f = fakeKube()
    const metrics = new OperatorMetrics()
    const rec = new FenceReconciler(
      f.kube,
      { fenceRequest: () => fr, filesystem: () => fs },
      new EventRecorder(f.kube, log),
      metrics,
      log,
    )
    await rec.reconcile('storage', fr.metadata.name)
    return { ...f, metrics }
  }

  it('exit 0: Fenced, with the request in the environment', async () => {
    const out = join(dir, 'env')
    const r = await reconcile(
      request(),
      filesystem(['/bin/sh', '-c', `env | grep ^SCOUTFS_FENCED_REQ_ | sort > ${out}`]),
    )
    assert.deepEqual(
      r.statuses.map((s) => s.phase),
      ['Fencing', 'Fenced'],
    )
    assert.ok(typeof r.statuses[1].fencedAt === 'string')
    const env = readFileSync(out, 'utf8')
    for (const line of [
      'RID=0000000000000abc',
      'REASON=client_timeout',
      'HOST=node-b',
      'PID=4242',
      'PID_START=99',
      'SLOT=1',
      'NODE=node-b',
      'IP=10.0.0.2',
      'FILESYSTEM=archive',
      'NAMESPACE=storage',
    ])
      assert.ok(env.includes(`SCOUTFS_FENCED_REQ_${line}\n`), `${line} in\n${env}`)
    assert.deepEqual(r.events, ['Fenced'])
    assert.match(
      await r.metrics.registry.getSingleMetricAsString('scoutfs_operator_fences_total'),
      /method="hook",result="fenced"} 1/,
    )
  })

  it('a non-zero exit: Failed with the exit code and the end of stderr', async () => {
    const r = await reconcile(request(), filesystem(['/bin/sh', '-c', 'echo "BMC unreachable" >&2; exit 3']))
    const last = r.statuses.at(-1) as { phase: string; message: string }
    assert.equal(last.phase, 'Failed')
    assert.match(last.message, /exited 3: BMC unreachable/)
    assert.deepEqual(r.events, ['Failed'])
  })

  it('a hang past its timeout: Failed, saying so', async () => {
    const r = await reconcile(request(), filesystem(['/bin/sleep', '30'], 1))
    const last = r.statuses.at(-1) as { phase: string; message: string }
    assert.equal(last.phase, 'Failed')
    assert.match(last.message, /did not finish in 1000 ms/)
  })

  it('a command that cannot start: Failed', async () => {
    const r = await reconcile(request(), filesystem([join(dir, 'no-such-hook')]))
    const last = r.statuses.at(-1) as { phase: string; message: string }
    assert.equal(last.phase, 'Failed')
    assert.match(last.message, /could not start|ENOENT/)
  })

  it('a request already Fenced or Failed is left alone', async () => {
    for (const phase of ['Fenced', 'Failed']) {
      const r = await reconcile(request(phase), filesystem(['/bin/false']))
      assert.deepEqual(r.statuses, [])
    }
  })
})
