/*
 * Unit tests of the operator's pure parts and its queue (operator/src): the work queue
 * (dedupe, one worker per key, re-run when added while running, backoff), the status
 * computation (conditions in the right order, transition times kept), the rendered children
 * (what the node pods need: privileged, /dev/fuse, raw block devices, Bidirectional
 * propagation, probes; a config hash that changes only with what the agents run), the agent's
 * mount options, and the node status Lease's freshness.  No API server here: the reconcilers
 * against a real one are test/operator/*.test.ts.
 */
import assert from 'node:assert/strict'
import { WorkQueue } from '../../operator/src/work-queue.js'
import { computeStatus, transitions, type Observed } from '../../operator/src/status.js'
import {
  formatJob,
  mkfsArgs,
  nodeConfig,
  nodeConfigHash,
  nodeDaemonSet,
  runningChildren,
} from '../../operator/src/render.js'
import { agentMountOptions } from '../../operator/src/node.js'
import { freshNodeStatus, nodeLease, type NodeStatus } from '../../operator/src/node-status.js'
import type { ScoutFilesystem } from '../../operator/src/types.js'

function fsObject(over: Partial<ScoutFilesystem['spec']> = {}): ScoutFilesystem {
  return {
    apiVersion: 'scoutfs.io/v1alpha1',
    kind: 'ScoutFilesystem',
    metadata: { name: 'archive', namespace: 'storage', uid: 'u-1', generation: 3 },
    spec: {
      devices: { metadata: { claimName: 'meta' }, data: { path: '/dev/sdc' } },
      quorum: {
        members: [
          { slot: 2, node: 'n2', address: '10.0.0.3', port: 7400 },
          { slot: 0, node: 'n0', address: '10.0.0.1', port: 7400 },
          { slot: 1, node: 'n1', address: '10.0.0.2', port: 7401 },
        ],
        heartbeatTimeoutSeconds: 10,
      },
      image: 'scoutfs:1',
      imagePullPolicy: 'IfNotPresent',
      mountRoot: '/var/lib/scoutfs',
      fencing: { method: 'deletePod', timeoutSeconds: 0 },
      format: { confirm: true, overwrite: false },
      tls: { insecure: true },
      csi: { provisionerImage: 'p', resizerImage: 'r', registrarImage: 'g', livenessProbeImage: 'l' },
      storageClass: { create: true, reclaimPolicy: 'Delete', allowVolumeExpansion: true },
      ...over,
    },
  }
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r))

describe('operator: work queue', () => {
  it('hands a key to one worker at a time and runs it again if it was added while running', async () => {
    const q = new WorkQueue({ baseMs: 1, maxMs: 10, workers: 4 })
    const runs: string[] = []
    let active = 0
    let maxActive = 0
    let release: () => void = () => undefined
    const gate = new Promise<void>((r) => (release = r))
    q.start(async (k) => {
      active++
      maxActive = Math.max(maxActive, active)
      runs.push(k)
      if (runs.length === 1) await gate
      active--
      return 'done'
    })
    q.add('a')
    await tick()
    q.add('a')
    q.add('a')
    assert.equal(q.depth, 0, 'a key being processed is not queued a second time')
    release()
    await tick()
    await q.idle()
    assert.deepEqual(runs, ['a', 'a'], 'added twice while running: one more run, not two')
    assert.equal(maxActive, 1)
    q.stop()
  })

  it('dedupes queued keys and retries a failure with a doubling backoff until forgotten', async () => {
    const q = new WorkQueue({ baseMs: 5, maxMs: 40, workers: 1 })
    assert.deepEqual(
      [0, 1, 2, 3, 4, 10].map((n) => q.backoffMs(n)),
      [5, 10, 20, 40, 40, 40],
    )
    let fails = 2
    const runs: number[] = []
    q.add('x')
    q.add('x')
    await new Promise<void>((resolve) =>
      q.start(async () => {
        runs.push(Date.now())
        if (fails-- > 0) throw new Error('boom')
        resolve()
        return 'done'
      }),
    )
    assert.equal(runs.length, 3, 'two failures, then a success; the duplicate add ran once')
    q.stop()
  })
})

function observed(over: Partial<Observed> = {}): Observed {
  return {
    format: { state: 'formatted' },
    childrenApplied: true,
    nodes: new Map(),
    fencedNodes: new Set(),
    deleting: false,
    ...over,
  }
}

function node(n: string, slot: number, term: number, leaderSlot: number): NodeStatus {
  return { node: n, mounted: true, slot, term, leaderSlot, role: 'follower', serving: false }
}

describe('operator: status', () => {
  const fs = fsObject()
  const cond = (s: ReturnType<typeof computeStatus>, t: string): string | undefined =>
    s.conditions?.find((c) => c.type === t)?.status

  it('without confirmation: Pending, Formatted False with the reason, nothing else claimed', () => {
    const s = computeStatus(fs, observed({ format: { state: 'unconfirmed' }, childrenApplied: false }))
    assert.equal(s.phase, 'Pending')
    const f = s.conditions?.find((c) => c.type === 'Formatted')
    assert.equal(f?.status, 'False')
    assert.equal(f?.reason, 'ConfirmationRequired')
    assert.match(f?.message ?? '', /spec\.format\.confirm/)
    assert.equal(cond(s, 'QuorumEstablished'), 'Unknown')
    assert.equal(cond(s, 'Ready'), 'False')
    assert.ok(s.conditions?.every((c) => c.observedGeneration === 3))
  })

  it('goes Formatted → QuorumEstablished (majority and a leader) → Ready (all mounted), Degraded while one is down', () => {
    const none = computeStatus(fs, observed())
    assert.equal(cond(none, 'QuorumEstablished'), 'False')
    assert.equal(none.phase, 'Starting')
    const two = computeStatus(
      fs,
      observed({
        nodes: new Map([
          ['n0', node('n0', 0, 4, 1)],
          ['n1', node('n1', 1, 5, 1)],
        ]),
      }),
    )
    assert.equal(cond(two, 'QuorumEstablished'), 'True')
    assert.deepEqual(two.leader, { slot: 1, node: 'n1', term: 5 }, 'the highest term names the leader')
    assert.equal(cond(two, 'Degraded'), 'True')
    assert.equal(cond(two, 'Ready'), 'False')
    assert.equal(two.membersMounted, '2/3')
    const all = computeStatus(
      fs,
      observed({
        nodes: new Map([
          ['n0', node('n0', 0, 5, 1)],
          ['n1', node('n1', 1, 5, 1)],
          ['n2', node('n2', 2, 5, 1)],
        ]),
      }),
    )
    assert.equal(all.phase, 'Ready')
    assert.equal(cond(all, 'Ready'), 'True')
    assert.equal(cond(all, 'Degraded'), 'False')
    assert.deepEqual(
      all.members?.map((m) => [m.slot, m.mounted]),
      [
        [0, true],
        [1, true],
        [2, true],
      ],
    )
  })

  it('keeps lastTransitionTime of an unchanged condition and reports the changed ones', () => {
    const a = computeStatus(fs, observed(), new Date('2026-01-01T00:00:00Z'))
    const later = computeStatus(
      { ...fs, status: a },
      observed({
        nodes: new Map([
          ['n0', node('n0', 0, 1, 0)],
          ['n1', node('n1', 1, 1, 0)],
        ]),
      }),
      new Date('2026-01-01T00:05:00Z'),
    )
    const f = later.conditions?.find((c) => c.type === 'Formatted')
    const q = later.conditions?.find((c) => c.type === 'QuorumEstablished')
    assert.equal(f?.lastTransitionTime, '2026-01-01T00:00:00.000Z')
    assert.equal(q?.lastTransitionTime, '2026-01-01T00:05:00.000Z')
    const changed = transitions(a.conditions, later.conditions ?? []).map((t) => t.type)
    assert.ok(changed.includes('QuorumEstablished'), 'False → True is a transition')
    assert.ok(changed.includes('Degraded'), 'False → True (one member down) is a transition')
    assert.ok(!changed.includes('Formatted'), 'an unchanged condition is not')
  })
})

describe('operator: rendered children', () => {
  it('the node DaemonSet gives the agent what FUSE and raw devices need', () => {
    const ds = nodeDaemonSet(fsObject()) as { spec: { template: { spec: Record<string, unknown> } } }
    const pod = ds.spec.template.spec as {
      containers: Array<Record<string, unknown>>
      volumes: Array<Record<string, unknown>>
      hostNetwork: boolean
    }
    assert.equal(pod.hostNetwork, true)
    const agent = pod.containers.find((c) => c.name === 'agent') as Record<string, unknown> & {
      volumeMounts: Array<{ name: string; mountPath: string; mountPropagation?: string }>
      volumeDevices: Array<{ name: string; devicePath: string }>
    }
    assert.deepEqual(agent.securityContext, { privileged: true })
    assert.ok(agent.livenessProbe && agent.readinessProbe)
    assert.deepEqual(
      agent.volumeDevices,
      [{ name: 'metadata-device', devicePath: '/dev/scoutfs/metadata' }],
      'the Block PVC is a raw device',
    )
    assert.ok(
      agent.volumeMounts.some((m) => m.mountPath === '/dev/scoutfs/data'),
      'the device path is a hostPath',
    )
    assert.equal(agent.volumeMounts.find((m) => m.name === 'mount-root')?.mountPropagation, 'Bidirectional')
    assert.deepEqual(
      pod.volumes.find((v) => v.name === 'fuse'),
      { name: 'fuse', hostPath: { path: '/dev/fuse', type: 'CharDevice' } },
    )
    assert.deepEqual(
      pod.volumes.find((v) => v.name === 'data-device'),
      { name: 'data-device', hostPath: { path: '/dev/sdc', type: 'BlockDevice' } },
    )
    const names = pod.containers.map((c) => c.name)
    assert.deepEqual(names, ['agent', 'csi-node', 'node-driver-registrar', 'liveness-probe'])
  })

  it('the config hash changes with what the agents run, not with the StorageClass', () => {
    const base = nodeConfigHash(fsObject())
    assert.notEqual(nodeConfigHash(fsObject({ mountOptions: ['commit_interval_ms=500'] })), base)
    assert.notEqual(nodeConfigHash(fsObject({ image: 'scoutfs:2' })), base)
    assert.equal(
      nodeConfigHash(
        fsObject({ storageClass: { create: false, reclaimPolicy: 'Retain', allowVolumeExpansion: false } }),
      ),
      base,
    )
  })

  it('mkfs gets every slot in order, and --force only with overwrite', () => {
    assert.deepEqual(mkfsArgs(fsObject()), [
      'mkfs',
      '/dev/scoutfs/metadata',
      '/dev/scoutfs/data',
      '-Q',
      '0,10.0.0.1,7400',
      '-Q',
      '1,10.0.0.2,7401',
      '-Q',
      '2,10.0.0.3,7400',
    ])
    assert.equal(mkfsArgs(fsObject({ format: { confirm: true, overwrite: true } })).at(-1), '--force')
    const job = formatJob(fsObject()) as {
      spec: { backoffLimit: number; template: { spec: { nodeSelector: Record<string, string> } } }
    }
    assert.equal(job.spec.backoffLimit, 0, 'a failed format is never retried by itself')
    assert.deepEqual(job.spec.template.spec.nodeSelector, { 'kubernetes.io/hostname': 'n0' })
  })

  it('no StorageClass when storageClass.create is false; every namespaced child is owned', () => {
    const kinds = (f: ScoutFilesystem): string[] => runningChildren(f).map((o) => o.kind as string)
    assert.ok(kinds(fsObject()).includes('StorageClass'))
    assert.ok(
      !kinds(
        fsObject({ storageClass: { create: false, reclaimPolicy: 'Delete', allowVolumeExpansion: true } }),
      ).includes('StorageClass'),
    )
    for (const o of runningChildren(fsObject())) {
      const m = o.metadata as { namespace?: string; ownerReferences?: Array<{ uid: string }> }
      if (m.namespace) assert.equal(m.ownerReferences?.[0]?.uid, 'u-1', `${o.kind as string} is owned`)
      else assert.equal(m.ownerReferences, undefined, `${o.kind as string} is cluster-scoped: no owner reference`)
    }
  })

  it('agent mount options: a member gets its slot, a plain client none; fencing and TLS from the spec', () => {
    const c = nodeConfig(fsObject({ fencing: { method: 'deletePod', timeoutSeconds: 30 } }))
    const m = agentMountOptions(c, 'n1')
    assert.equal(m.slot, 1)
    assert.equal(
      m.options,
      'quorum_slot_nr=1,quorum_heartbeat_timeout_ms=10000,fence=kubernetes,fence_filesystem=archive,fence_namespace=storage,fence_timeout_ms=30000,insecure',
    )
    const client = agentMountOptions(c, 'n9')
    assert.equal(client.slot, -1)
    assert.ok(!client.options.includes('quorum_slot_nr'))
  })
})

describe('operator: node status Leases', () => {
  it('a Lease counts while fresh and not after leaseDuration', () => {
    const st: NodeStatus = { node: 'n0', mounted: true, slot: 0, term: 2, leaderSlot: 0 }
    const at = new Date('2026-01-01T00:00:00Z')
    const l = nodeLease('archive', 'storage', st, 5000, at)
    assert.equal(l.spec?.leaseDurationSeconds, 15)
    assert.equal(String(l.spec?.renewTime), '2026-01-01T00:00:00.000000Z')
    assert.equal(freshNodeStatus(l, at.getTime() + 14_000)?.term, 2)
    assert.equal(freshNodeStatus(l, at.getTime() + 16_000), undefined)
  })
})
