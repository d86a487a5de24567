/*
 * The operator against a real control plane (test/helpers/control-plane.ts: etcd,
 * kube-apiserver with RBAC, kube-controller-manager; no kubelet, no scheduler).  The chart is
 * installed with the real helm; the operator runs as the chart's ServiceAccount with a token
 * kubeconfig, so every call it makes passes the chart's RBAC or fails the test.  The test plays
 * what is missing: the kubelet (a format pod "succeeds", a deleted pod is confirmed gone) and
 * the node side (real agents of a real 3-member scoutfs cluster, whose views are published by
 * the operator's own node status publisher, authenticated as the filesystem's agent
 * ServiceAccount, which the operator bound).
 *
 * The steps share one control plane and run in order; each waits for what it checks with a
 * generous deadline (the machine is loaded), never for a fixed time.
 */
import assert from 'node:assert/strict'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { KubeConfig } from '@kubernetes/client-node'
import { KubernetesFence } from '../../node-agent/src/quorum/fence-kubernetes.js'
import { ApiKube, type Kube } from '../../operator/src/kube.js'
import { makeLog } from '../../operator/src/log.js'
import { OperatorMetrics } from '../../operator/src/metrics.js'
import { NodeStatusPublisher } from '../../operator/src/node.js'
import { Operator } from '../../operator/src/operator.js'
import { type ControlPlane, component, startControlPlane, stopAllControlPlanes } from '../helpers/control-plane.js'
import { sh } from '../helpers/fuse-harness.js'
import { freePort, makeClusterDevices, startCluster, type Cluster } from '../helpers/cluster.js'
import { forceUnmount, stopAllAgents } from '../helpers/agent.js'
import { isMounted } from '../../node-agent/src/fuse/unmount.js'
import type { NodeConfig } from '../../operator/src/render.js'
import { spawn } from 'node:child_process'
import { adminCall } from '../../node-agent/src/agent/admin.js'

const REL = 'scoutfs'
const SYS = 'scoutfs-system'
const NS = 'storage'
const FS = 'archive'
const DEADLINE_MS = 90_000

async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, ms = DEADLINE_MS): Promise<T> {
  const end = Date.now() + ms
  let last: unknown
  for (;;) {
    try {
      const v = await fn()
      if (v !== undefined && v !== false) return v
    } catch (e) {
      last = e
    }
    if (Date.now() > end) throw new Error(`gave up waiting for ${what}${last ? `: ${(last as Error).message}` : ''}`)
    await new Promise((r) => setTimeout(r, 200))
  }
}

type Json = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

describe('operator on a real API server', function () {
  this.timeout(600_000)
  let cp: ControlPlane
  let helm: string
  let opKubeconfig: string
  let op: Operator | undefined
  let metrics: OperatorMetrics
  let cluster: Cluster | undefined
  const publishers: NodeStatusPublisher[] = []
  const log = makeLog(process.env.SCOUTFS_TEST_LOG ?? 'warn', 'operator-test')

  const kubectl = (...args: string[]): Promise<string> => cp.kubectlOk(args)
  const get = async (kind: string, name: string, ns?: string): Promise<Json | undefined> => {
    const r = await cp.kubectl(['get', kind, name, '-o', 'json', ...(ns ? ['-n', ns] : [])])
    if (r.code !== 0) {
      if (/NotFound/.test(r.stderr)) return undefined
      throw new Error(r.stderr)
    }
    return JSON.parse(r.stdout) as Json
  }
  const fsStatus = async (): Promise<Json> => (await get('scoutfilesystem', FS, NS))?.status ?? {}
  const condition = async (type: string): Promise<Json | undefined> =>
    ((await fsStatus()).conditions as Json[] | undefined)?.find((c) => c.type === type)
  const apply = async (yaml: string): Promise<{ code: number; stderr: string }> => {
    const f = join(cp.dir, `obj-${Date.now()}-${Math.random().toString(16).slice(2)}.yaml`)
    writeFileSync(f, yaml)
    return cp.kubectl(['apply', '-f', f])
  }

  let replicas = 0
  function makeOperator(kube?: (k: Kube) => Kube): { op: Operator; metrics: OperatorMetrics; identity: string } {
    const kc = new KubeConfig()
    kc.loadFromFile(opKubeconfig)
    const m = new OperatorMetrics()
    const identity = `test-${++replicas}`
    const o = new Operator({
      kubeConfig: kc,
      kube: kube ? kube(new ApiKube(kc)) : undefined,
      namespace: SYS,
      identity,
      leaderElect: true,
      leaseName: `${REL}-operator`,
      leaseDurationMs: 6000,
      renewDeadlineMs: 4000,
      retryPeriodMs: 1000,
      workers: 2,
      resyncMs: 1000,
      backoffBaseMs: 20,
      backoffMaxMs: 2000,
      metrics: m,
      log,
      onLostLeadership: () => undefined,
    })
    return { op: o, metrics: m, identity }
  }

  async function startOperator(kube?: (k: Kube) => Kube): Promise<Operator> {
    const r = makeOperator(kube)
    metrics = r.metrics
    await r.op.start()
    return r.op
  }

  const spec = (extra = ''): string => `apiVersion: scoutfs.io/v1alpha1
kind: ScoutFilesystem
metadata: {name: ${FS}, namespace: ${NS}}
spec:
  devices:
    metadata: {path: /dev/scoutfs-meta}
    data: {path: /dev/scoutfs-data}
  quorum:
    members:
      - {slot: 0, node: node-0, address: 127.0.0.1}
      - {slot: 1, node: node-1, address: 127.0.0.1}
      - {slot: 2, node: node-2, address: 127.0.0.1}
  tls: {insecure: true}
${extra}`

  before(async () => {
    helm = component('helm')
    cp = await startControlPlane()
  })

  after(async () => {
    for (const p of publishers) await p.stop().catch(() => undefined)
    await op?.stop().catch(() => undefined)
    await stopAllAgents()
    await stopAllControlPlanes()
  })

  it('helm install: CRDs, the operator Deployment, its ServiceAccount and least-privilege RBAC', async () => {
    const r = await sh(helm, [
      'install',
      REL,
      'charts/scoutfs',
      '--kubeconfig',
      cp.adminKubeconfig,
      '-n',
      SYS,
      '--create-namespace',
      '--wait=false',
    ])
    assert.equal(r.code, 0, r.stderr)
    assert.match(r.stdout, /kubectl get scoutfilesystems/, 'NOTES.txt tells what to do next')
    for (const crd of ['scoutfilesystems.scoutfs.io', 'fencerequests.scoutfs.io'])
      await kubectl('wait', '--for=condition=Established', `crd/${crd}`, '--timeout=60s')
    assert.ok(await get('deployment', `${REL}-operator`, SYS))
    const role = await get('clusterrole', 'scoutfs-operator')
    const rules = JSON.stringify(role?.rules)
    assert.ok(!rules.includes('"*"'), 'no wildcard in the operator ClusterRole')
    const bindings = JSON.parse(await kubectl('get', 'clusterrolebindings', '-o', 'json')) as Json
    const ours = (bindings.items as Json[]).filter((b) =>
      ((b.subjects ?? []) as Json[]).some((s) => s.name === `${REL}-operator` && s.namespace === SYS),
    )
    assert.deepEqual(
      ours.map((b) => b.roleRef.name),
      ['scoutfs-operator'],
      'the operator is bound to its own ClusterRole only (no cluster-admin)',
    )
    await kubectl('create', 'namespace', NS)
    opKubeconfig = await cp.serviceAccountKubeconfig(SYS, `${REL}-operator`)
    // RBAC really applies to it: it may not read Secrets
    const denied = await cp.kubectl(['--kubeconfig', opKubeconfig, 'get', 'secrets', '-n', NS])
    assert.notEqual(denied.code, 0)
    assert.match(denied.stderr, /forbidden/)
  })

  it('the CRD refuses bad specs with clear messages (schema and CEL)', async () => {
    const bad: Array<[string, string, RegExp]> = [
      [
        'both a claim and a path',
        spec().replace('{path: /dev/scoutfs-meta}', '{path: /dev/a, claimName: c}'),
        /exactly one of claimName/,
      ],
      ['the same device twice', spec().replace('/dev/scoutfs-data', '/dev/scoutfs-meta'), /must be different/],
      ['one node in two slots', spec().replace('node: node-1', 'node: node-0'), /only one quorum slot/],
      ['a slot twice', spec().replace('slot: 1,', 'slot: 0,'), /Duplicate value/],
      ['overwrite without confirm', spec('  format: {overwrite: true}\n'), /format.overwrite needs format.confirm/],
      ['hook without a command', spec('  fencing: {method: hook}\n'), /needs fencing.hook.command/],
      ['quorum_slot_nr in mountOptions', spec('  mountOptions: [quorum_slot_nr=1]\n'), /set by the operator/],
      ['no TLS choice', spec().replace('  tls: {insecure: true}\n', '  tls: {}\n'), /tls.secretName, or tls.insecure/],
      ['no tls at all', spec().replace('  tls: {insecure: true}\n', ''), /spec.tls: Required value/],
      ['slot 15', spec().replace('slot: 2,', 'slot: 15,'), /less than or equal to 14/],
    ]
    for (const [what, yaml, msg] of bad) {
      const r = await apply(yaml)
      assert.notEqual(r.code, 0, `${what} was accepted`)
      assert.match(r.stderr, msg, `${what}: ${r.stderr}`)
    }
    assert.equal(await get('scoutfilesystem', FS, NS), undefined, 'nothing was created')
  })

  it('without spec.format.confirm the operator never formats: Pending, ConfirmationRequired, a Warning Event', async () => {
    op = await startOperator()
    const r = await apply(spec())
    assert.equal(r.code, 0, r.stderr)
    const f = await waitFor('Formatted False', async () => {
      const c = await condition('Formatted')
      return c?.reason === 'ConfirmationRequired' && c
    })
    assert.equal(f.status, 'False')
    assert.equal((await fsStatus()).phase, 'Pending')
    assert.equal(await get('job', `${FS}-format`, NS), undefined, 'no format Job')
    assert.equal(await get('daemonset', `${FS}-node`, NS), undefined, 'no agents before the format')
    const events = await kubectl(
      'get',
      'events',
      '-n',
      NS,
      '--field-selector',
      `involvedObject.name=${FS}`,
      '-o',
      'json',
    )
    assert.ok(
      (JSON.parse(events).items as Json[]).some((e) => e.type === 'Warning' && e.reason === 'ConfirmationRequired'),
    )
    // the devices may not change once created
    const moved = await apply(spec().replace('/dev/scoutfs-data', '/dev/other'))
    assert.notEqual(moved.code, 0)
    assert.match(moved.stderr, /devices cannot be changed/)
  })

  it('confirmed: the format Job runs mkfs once; after it succeeds the DaemonSet and CSI objects are created', async () => {
    await kubectl(
      'patch',
      'scoutfilesystem',
      FS,
      '-n',
      NS,
      '--type=merge',
      '-p',
      '{"spec":{"format":{"confirm":true}}}',
    )
    const job = await waitFor('the format Job', () => get('job', `${FS}-format`, NS))
    const c = job.spec.template.spec.containers[0]
    assert.deepEqual(c.args, [
      'mkfs',
      '/dev/scoutfs/metadata',
      '/dev/scoutfs/data',
      '-Q',
      '0,127.0.0.1,7400',
      '-Q',
      '1,127.0.0.1,7400',
      '-Q',
      '2,127.0.0.1,7400',
    ])
    assert.equal((await fsStatus()).phase === 'Ready', false)
    assert.equal(await get('daemonset', `${FS}-node`, NS), undefined, 'no agents while formatting')
    // play the kubelet: the Job's pod ran mkfs and exited 0
    const pod = await waitFor('the format pod', async () => {
      const l = JSON.parse(await kubectl('get', 'pods', '-n', NS, '-l', `job-name=${FS}-format`, '-o', 'json')) as Json
      return (l.items as Json[])[0]
    })
    await kubectl(
      'patch',
      'pod',
      pod.metadata.name,
      '-n',
      NS,
      '--subresource=status',
      '--type=merge',
      '-p',
      JSON.stringify({
        status: {
          phase: 'Succeeded',
          containerStatuses: [
            {
              name: 'mkfs',
              image: c.image,
              imageID: '',
              ready: false,
              restartCount: 0,
              state: { terminated: { exitCode: 0, reason: 'Completed' } },
            },
          ],
        },
      }),
    )
    await waitFor('Formatted True', async () => (await condition('Formatted'))?.status === 'True')
    const ds = await waitFor('the node DaemonSet', () => get('daemonset', `${FS}-node`, NS))
    const agent = (ds.spec.template.spec.containers as Json[]).find((x) => x.name === 'agent')
    assert.equal(agent?.securityContext?.privileged, true)
    assert.equal(ds.metadata.ownerReferences[0].kind, 'ScoutFilesystem')
    assert.ok(await waitFor('the CSI controller', () => get('deployment', `${FS}-csi-controller`, NS)))
    assert.ok(await waitFor('the CSIDriver', () => get('csidriver', `${FS}.${NS}.scoutfs.io`)))
    const sc = await waitFor('the StorageClass', () => get('storageclass', `${NS}-${FS}`))
    assert.equal(sc.provisioner, `${FS}.${NS}.scoutfs.io`)
    assert.equal((await fsStatus()).phase, 'Starting')
    assert.equal((await condition('QuorumEstablished'))?.status, 'False', 'no agent has said anything yet')
  })

  it('real agents publish their views: QuorumEstablished, then Ready; Degraded when a member stops', async () => {
    cluster = await startCluster(3, { members: 3 })
    const agentKc = await cp.serviceAccountKubeconfig(NS, `${FS}-agent`)
    const kc = new KubeConfig()
    kc.loadFromFile(agentKc)
    const agentKube = new ApiKube(kc)
    const cfg = { filesystem: FS, namespace: NS }
    // two of three first: a majority elects, but not everything is mounted
    for (const i of [0, 1]) {
      const p = new NodeStatusPublisher(
        agentKube,
        { ...cfg, mountpoint: cluster.agents[i].mnt },
        `node-${i}`,
        i,
        1000,
        log,
      )
      publishers.push(p)
      p.start()
    }
    const q = await waitFor('QuorumEstablished', async () => {
      const c = await condition('QuorumEstablished')
      return c?.status === 'True' && c
    })
    const st = await fsStatus()
    // what the agents themselves say
    const view = await adminCall(cluster.agents[0].mnt, 'GET /quorum')
    assert.equal(st.leader.slot, view.leaderSlot)
    assert.equal(st.leader.node, `node-${view.leaderSlot}`)
    assert.equal(st.leader.term, view.term)
    assert.ok(st.leader.term >= 1)
    assert.equal((await condition('Ready'))?.status, 'False')
    assert.equal(st.membersMounted, '2/3')
    assert.ok(st.capacity.dataBytesTotal > 0 && st.capacity.metadataBytesTotal > 0)
    const p2 = new NodeStatusPublisher(agentKube, { ...cfg, mountpoint: cluster.agents[2].mnt }, 'node-2', 2, 1000, log)
    publishers.push(p2)
    p2.start()
    const ready = await waitFor('Ready', async () => {
      const c = await condition('Ready')
      return c?.status === 'True' && c
    })
    const formatted = await condition('Formatted')
    assert.ok(formatted && formatted.lastTransitionTime <= q.lastTransitionTime, 'Formatted before QuorumEstablished')
    assert.ok(q.lastTransitionTime <= ready.lastTransitionTime, 'QuorumEstablished before Ready')
    assert.equal((await fsStatus()).phase, 'Ready')
    const printed = await kubectl('get', 'sfs', '-n', NS)
    assert.match(printed, new RegExp(`${FS}\\s+Ready\\s+node-\\d\\s+3/3`), printed)
    // a member stops: its agent unmounts, its node says so
    await cluster.agents[2].stop()
    await waitFor('Degraded', async () => (await condition('Degraded'))?.status === 'True')
    const deg = await fsStatus()
    assert.equal(deg.phase, 'Degraded')
    assert.deepEqual(
      (deg.members as Json[]).map((m) => m.mounted),
      [true, true, false],
    )
    const events = JSON.parse(
      await kubectl('get', 'events', '-n', NS, '--field-selector', `involvedObject.name=${FS}`, '-o', 'json'),
    ) as Json
    const reasons = (events.items as Json[]).map((e) => e.reason)
    for (const r of ['Formatted', 'LeaderElected', 'Ready', 'MembersDown'])
      assert.ok(reasons.includes(r), `an Event ${r}: ${reasons.join(',')}`)
  })

  it('the node launcher (scoutfs operator node) runs a real agent, publishes its view, answers probes, stops cleanly', async () => {
    const dev = await makeClusterDevices({ members: 1 })
    const port = Number(dev.serverAddr.split(':').pop())
    const mnt = join(dev.dir, 'node-mnt')
    const cfgFile = join(dev.dir, 'filesystem.json')
    const config: NodeConfig = {
      filesystem: 'solo',
      namespace: NS,
      mountpoint: mnt,
      metadev: dev.meta,
      datadev: dev.data,
      members: [{ slot: 0, node: 'node-solo', address: '127.0.0.1', port }],
      heartbeatTimeoutMs: 5000,
      mountOptions: [],
      insecure: true,
      fenceTimeoutMs: 0,
    }
    writeFileSync(cfgFile, JSON.stringify(config))
    const health = await freePort()
    const agentKc = await cp.serviceAccountKubeconfig(NS, `${FS}-agent`)
    const proc = spawn(
      process.execPath,
      [
        'bin/scoutfs',
        'operator',
        'node',
        '--config',
        cfgFile,
        '--health-port',
        String(health),
        '--period-seconds',
        '1',
        '--kubeconfig',
        agentKc,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NODE_NAME: 'node-solo', KUBECONFIG: agentKc } },
    )
    let stderr = ''
    proc.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)))
    const exited = new Promise<number | null>((r) => proc.once('exit', (c) => r(c)))
    try {
      const lease = await waitFor('the node Lease saying mounted', async () => {
        const l = await get('lease', 'solo-node-node-solo', NS)
        const st = l && (JSON.parse(l.metadata.annotations['scoutfs.io/node-status']) as Json)
        return st?.mounted === true && st.leaderSlot === 0 && l
      })
      const st = JSON.parse(lease.metadata.annotations['scoutfs.io/node-status']) as Json
      assert.equal(st.slot, 0)
      assert.equal(st.node, 'node-solo')
      assert.ok(st.term >= 1 && st.serving === true, JSON.stringify(st))
      assert.equal(lease.metadata.labels['scoutfs.io/filesystem'], 'solo')
      assert.equal((await fetch(`http://127.0.0.1:${health}/healthz`)).status, 200)
      assert.equal((await fetch(`http://127.0.0.1:${health}/readyz`)).status, 200)
      // the agent really serves the mount: a file written through it is there
      writeFileSync(join(mnt, 'hello'), 'scoutfs')
      proc.kill('SIGTERM')
      assert.equal(await exited, 0, stderr)
      const last = JSON.parse(
        (await get('lease', 'solo-node-node-solo', NS))?.metadata.annotations['scoutfs.io/node-status'],
      ) as Json
      assert.equal(last.mounted, false, 'it says so when it stops')
      assert.equal(await isMounted(mnt), false, 'the agent unmounted')
    } finally {
      if (proc.exitCode === null) proc.kill('SIGKILL')
      await forceUnmount(mnt)
    }
  })

  it('a spec change that changes what the agents run rolls the DaemonSet', async () => {
    const before = await get('daemonset', `${FS}-node`, NS)
    const hash = before?.spec.template.metadata.annotations['scoutfs.io/config-hash']
    await kubectl(
      'patch',
      'scoutfilesystem',
      FS,
      '-n',
      NS,
      '--type=merge',
      '-p',
      '{"spec":{"mountOptions":["commit_interval_ms=500"]}}',
    )
    const after = await waitFor('a new pod template', async () => {
      const d = await get('daemonset', `${FS}-node`, NS)
      return d?.spec.template.metadata.annotations['scoutfs.io/config-hash'] !== hash && d
    })
    assert.ok(after.metadata.generation > before?.metadata.generation)
    const cm = await get('configmap', `${FS}-config`, NS)
    assert.deepEqual(JSON.parse(cm?.data['filesystem.json']).mountOptions, ['commit_interval_ms=500'])
    await waitFor(
      'the status of the new generation',
      async () => (await fsStatus()).observedGeneration === (await get('scoutfilesystem', FS, NS))?.metadata.generation,
    )
  })

  it('a fence request of a server is completed: the pod is deleted, and Fenced only once it is gone', async () => {
    const nodeYaml = `apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\n`
    assert.equal((await apply(nodeYaml)).code, 0)
    const podYaml = `apiVersion: v1
kind: Pod
metadata:
  name: ${FS}-node-test1
  namespace: ${NS}
  labels: {scoutfs.io/filesystem: ${FS}, app.kubernetes.io/component: node}
spec:
  nodeName: node-1
  containers: [{name: agent, image: scoutfs:test}]
`
    assert.equal((await apply(podYaml)).code, 0)
    const pod0 = await get('pod', `${FS}-node-test1`, NS)
    // the server's fence agent, as the agents run it, with the agent ServiceAccount's token
    const agentKc = await cp.serviceAccountKubeconfig(NS, `${FS}-agent`)
    const fenceLog: string[] = []
    const fence = new KubernetesFence({
      namespace: NS,
      filesystem: FS,
      kubeConfig: agentKc,
      pollMs: 200,
      timeoutMs: 0,
      nodeName: () => 'node-1',
      log: (msg) => fenceLog.push(msg),
    })
    let fenced = false
    const done = fence
      .fence({
        rid: 0x1a2b3c,
        reason: 'client_timeout',
        host: 'node-1',
        pid: 4242,
        pidStart: 99,
        addr: '10.0.0.2',
        slot: 1,
      })
      .then(() => (fenced = true))
    const name = `${FS}-00000000001a2b3c-client-timeout`
    // the operator deletes the pod gracefully; without a kubelet it stays Terminating
    await waitFor(
      'the pod terminating',
      async () => (await get('pod', `${FS}-node-test1`, NS))?.metadata.deletionTimestamp,
    )
    const fr = await waitFor('Fencing', async () => {
      const r = await get('fencerequest', name, NS)
      return r?.status?.phase === 'Fencing' && r
    })
    assert.match(fr.status.message, /waiting for pod/)
    assert.equal(fenced, false, 'not fenced while the pod may still run')
    // play the kubelet: the containers are dead, the pod object goes
    await kubectl('delete', 'pod', `${FS}-node-test1`, '-n', NS, '--grace-period=0', '--force')
    await done
    const end = await get('fencerequest', name, NS)
    assert.equal(end?.status.phase, 'Fenced')
    assert.match(end?.status.action, new RegExp(`deleted pod\\(s\\) ${FS}-node-test1 on node node-1`))
    assert.equal(end?.metadata.annotations['scoutfs.io/fence-targets'], `${FS}-node-test1/${pod0?.metadata.uid}`)
    assert.ok(fenceLog.includes('fence: posted'))
    const text = await metrics.registry.getSingleMetricAsString('scoutfs_operator_fences_total')
    assert.match(text, /method="deletePod",result="fenced"} 1/)
  })

  it('two replicas: the second waits for the Lease and acts only once the first stops', async () => {
    const first = (await get('lease', `${REL}-operator`, SYS))?.spec.holderIdentity as string
    const second = makeOperator()
    let leading = false
    const started = second.op.start().then(() => (leading = true))
    // the first keeps acting while the second waits
    await kubectl(
      'patch',
      'scoutfilesystem',
      FS,
      '-n',
      NS,
      '--type=merge',
      '-p',
      '{"spec":{"quorum":{"heartbeatTimeoutSeconds":11}}}',
    )
    const gen = (await get('scoutfilesystem', FS, NS))?.metadata.generation as number
    await waitFor('the first replica to reconcile', async () => (await fsStatus()).observedGeneration === gen)
    assert.equal(leading, false, 'the second replica does not act while the first holds the Lease')
    assert.equal((await second.metrics.leader.get()).values[0]?.value ?? 0, 0)
    assert.equal((await get('lease', `${REL}-operator`, SYS))?.spec.holderIdentity, first)
    // the first stops and releases the Lease: the second takes over without waiting for expiry
    await op?.stop()
    await started
    op = second.op
    metrics = second.metrics
    assert.equal((await get('lease', `${REL}-operator`, SYS))?.spec.holderIdentity, second.identity)
    assert.equal((await second.metrics.leader.get()).values[0]?.value, 1)
  })

  it('a status write over a newer object gets 409 and is retried from the newer object', async () => {
    await op?.stop()
    // between reading and writing, someone else changes the object: a real 409 from the server
    let injected = 0
    op = await startOperator((k) => ({
      ...k,
      apply: (o) => k.apply(o),
      create: (o) => k.create(o),
      replace: (o) => k.replace(o),
      read: (r) => k.read(r),
      list: (a, b, c, d) => k.list(a, b, c, d),
      mergePatch: (r, p) => k.mergePatch(r, p),
      remove: (r, o) => k.remove(r, o),
      patchStatus: async (ref, rv, status) => {
        if (ref.kind === 'ScoutFilesystem' && injected === 0) {
          injected++
          await kubectl('annotate', 'scoutfilesystem', FS, '-n', NS, `test/poke=${Date.now()}`, '--overwrite')
        }
        return k.patchStatus(ref, rv, status)
      },
    }))
    // make the status differ so the operator writes it
    await kubectl(
      'patch',
      'scoutfilesystem',
      FS,
      '-n',
      NS,
      '--type=merge',
      '-p',
      '{"spec":{"quorum":{"heartbeatTimeoutSeconds":12}}}',
    )
    const gen = (await get('scoutfilesystem', FS, NS))?.metadata.generation as number
    await waitFor('the status of the new generation', async () => (await fsStatus()).observedGeneration === gen)
    assert.equal(injected, 1)
    const text = await metrics.registry.getSingleMetricAsString('scoutfs_operator_reconciles_total')
    assert.match(text, /controller="filesystem",result="conflict"} [1-9]/, text)
  })

  it('an operator restart resumes: the next process takes the Lease and completes what came meanwhile', async () => {
    await op?.stop()
    op = undefined
    // a request made while no operator runs
    const fence = new KubernetesFence({
      namespace: NS,
      filesystem: FS,
      kubeConfig: await cp.serviceAccountKubeconfig(NS, `${FS}-agent`),
      pollMs: 200,
      timeoutMs: 0,
      nodeName: () => 'node-7',
      log: () => undefined,
    })
    const done = fence.fence({
      rid: 0x77,
      reason: 'recovery_timeout',
      host: 'node-7',
      pid: 1,
      pidStart: 1,
      addr: '',
      slot: 2,
    })
    await waitFor('the request', () => get('fencerequest', `${FS}-0000000000000077-recovery-timeout`, NS))
    // the operator as a process, with the metrics address of its flags
    const port = 20000 + Math.floor(Math.random() * 20000)
    const proc = spawn(
      process.execPath,
      [
        'bin/scoutfs',
        'operator',
        '--kubeconfig',
        opKubeconfig,
        '--namespace',
        SYS,
        '--lease-name',
        `${REL}-operator`,
        '--metrics-address',
        `127.0.0.1:${port}`,
        '--lease-duration-seconds',
        '6',
        '--resync-seconds',
        '1',
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    )
    let stderr = ''
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    try {
      await done
      const lease = await get('lease', `${REL}-operator`, SYS)
      assert.match(lease?.spec.holderIdentity, /_/, 'the process holds the Lease')
      const body = await waitFor('metrics', async () => {
        const r = await fetch(`http://127.0.0.1:${port}/metrics`)
        return r.ok && (await r.text())
      })
      assert.match(body, /scoutfs_operator_leader 1/)
      assert.match(body, /scoutfs_operator_fences_total\{method="deletePod",result="fenced"\} 1/)
      assert.match(body, /scoutfs_operator_reconcile_duration_seconds_bucket/)
      assert.match(body, /scoutfs_operator_queue_depth/)
    } finally {
      proc.kill('SIGTERM')
      const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)))
      assert.equal(code, 0, stderr)
    }
  })

  it('deleting the filesystem removes its cluster-scoped children (finalizer) and the rest by owner references', async () => {
    for (const p of publishers.splice(0)) await p.stop()
    op = await startOperator()
    await kubectl('delete', 'scoutfilesystem', FS, '-n', NS, '--wait=false')
    await waitFor('the filesystem gone', async () => (await get('scoutfilesystem', FS, NS)) === undefined)
    assert.equal(await get('csidriver', `${FS}.${NS}.scoutfs.io`), undefined)
    assert.equal(await get('storageclass', `${NS}-${FS}`), undefined)
    assert.equal(await get('clusterrolebinding', `scoutfs-${NS}-${FS}-csi`), undefined)
    await waitFor(
      'garbage collection of the DaemonSet',
      async () => (await get('daemonset', `${FS}-node`, NS)) === undefined,
    )
    await op.stop()
    op = undefined
  })

  it('helm upgrade changes the operator Deployment; helm uninstall removes what it installed', async () => {
    const up = await sh(helm, [
      'upgrade',
      REL,
      'charts/scoutfs',
      '--kubeconfig',
      cp.adminKubeconfig,
      '-n',
      SYS,
      '--set',
      'operator.logLevel=debug',
      '--set',
      'operator.replicas=2',
    ])
    assert.equal(up.code, 0, up.stderr)
    const d = await get('deployment', `${REL}-operator`, SYS)
    assert.equal(d?.spec.replicas, 2)
    assert.ok((d?.spec.template.spec.containers[0].args as string[]).includes('--log-level=debug'))
    const bad = await sh(helm, [
      'upgrade',
      REL,
      'charts/scoutfs',
      '--kubeconfig',
      cp.adminKubeconfig,
      '-n',
      SYS,
      '--set',
      'operator.replicas=2',
      '--set',
      'operator.leaderElect=false',
    ])
    assert.notEqual(bad.code, 0, 'two replicas without leader election are refused')
    assert.match(bad.stderr, /leaderElect/)
    const un = await sh(helm, ['uninstall', REL, '--kubeconfig', cp.adminKubeconfig, '-n', SYS, '--wait'])
    assert.equal(un.code, 0, un.stderr)
    for (const [kind, name, ns] of [
      ['deployment', `${REL}-operator`, SYS],
      ['serviceaccount', `${REL}-operator`, SYS],
      ['clusterrole', 'scoutfs-operator', undefined],
      ['clusterrole', 'scoutfs-agent', undefined],
      ['clusterrolebinding', 'scoutfs-operator', undefined],
    ] as const)
      assert.equal(await get(kind, name, ns), undefined, `${kind} ${name} removed`)
    assert.ok(
      await get('crd', 'scoutfilesystems.scoutfs.io'),
      'CRDs stay (helm never deletes them: that would delete every filesystem)',
    )
  })
})
