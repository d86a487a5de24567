/*
 * npm run bench:operator — the operator against a real control plane (etcd, kube-apiserver,
 * kube-controller-manager from .cache/test-components; the chart installed with helm; the
 * operator a process of its own, as its ServiceAccount).  Measures:
 *
 *   - the time from a new ScoutFilesystem (format confirmed) to its pre-format children (agent
 *     ServiceAccount, RoleBinding, ConfigMap, format Job; the Job is created last), and from the
 *     format Job's success to the running children (DaemonSet, CSIDriver, ClusterRoleBinding,
 *     CSI Deployment, StorageClass; the StorageClass is applied last), one filesystem at a time;
 *   - the floor: the same 9 objects applied directly by this process (server-side apply, one
 *     after the other), so operator / floor says what the operator adds to the API server's cost;
 *   - 50 filesystems created at once: time until all have their Job, and until all have their
 *     StorageClass after their Jobs succeed;
 *   - the operator's resident memory (VmRSS) idle with no filesystem (baseline) and with 50.
 *
 * The bench plays the kubelet: a format Job's pod is marked Succeeded through the pods/status
 * subresource, and the real Job controller completes the Job.
 */
import { spawn } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { KubeConfig, type V1Job, type V1Lease } from '@kubernetes/client-node'
import { ApiKube } from '../operator/src/kube.js'
import { agentRoleBinding, agentServiceAccount, configMap, formatJob, runningChildren } from '../operator/src/render.js'
import type { ScoutFilesystem } from '../operator/src/types.js'
import { component, startControlPlane, stopAllControlPlanes } from '../test/helpers/control-plane.js'
import { sh } from '../test/helpers/fuse-harness.js'

const NS = 'bench'
const SINGLE = Number(process.env.SCOUTFS_BENCH_SINGLE ?? 5)
const MANY = Number(process.env.SCOUTFS_BENCH_MANY ?? 50)

function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) * 1024 : NaN
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function fsYaml(name: string): string {
  return JSON.stringify({
    apiVersion: 'scoutfs.io/v1alpha1',
    kind: 'ScoutFilesystem',
    metadata: { name, namespace: NS },
    spec: {
      devices: { metadata: { path: '/dev/m' }, data: { path: '/dev/d' } },
      quorum: { members: [0, 1, 2].map((i) => ({ slot: i, node: `node-${i}`, address: `10.0.0.${i + 1}` })) },
      tls: { insecure: true },
      format: { confirm: true },
    },
  })
}

async function main(): Promise<void> {
  const cp = await startControlPlane()
  let op: ReturnType<typeof spawn> | undefined
  try {
    const helm = component('helm')
    const inst = await sh(helm, [
      'install',
      'scoutfs',
      'charts/scoutfs',
      '--kubeconfig',
      cp.adminKubeconfig,
      '-n',
      'scoutfs-system',
      '--create-namespace',
    ])
    if (inst.code !== 0) throw new Error(inst.stderr)
    await cp.kubectlOk(['wait', '--for=condition=Established', 'crd/scoutfilesystems.scoutfs.io', '--timeout=60s'])
    await cp.kubectlOk(['create', 'namespace', NS])
    const kc = new KubeConfig()
    kc.loadFromFile(cp.adminKubeconfig)
    const admin = new ApiKube(kc)
    const opKc = await cp.serviceAccountKubeconfig('scoutfs-system', 'scoutfs-operator')
    op = spawn(
      process.execPath,
      [
        'bin/scoutfs',
        'operator',
        '--kubeconfig',
        opKc,
        '--namespace',
        'scoutfs-system',
        '--lease-name',
        'scoutfs-operator',
        '--metrics-address',
        '127.0.0.1:0',
        '--resync-seconds',
        '30',
        '--log-level',
        'warn',
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    )
    const pid = op.pid as number
    // leading: it has taken the Lease
    for (;;) {
      const l = await admin.read<V1Lease>({
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        namespace: 'scoutfs-system',
        name: 'scoutfs-operator',
      })
      if (l?.spec?.holderIdentity) break
      await sleep(50)
    }
    await sleep(3000)
    const rssIdle = rssBytes(pid)

    const exists = async (apiVersion: string, kind: string, name: string, namespace?: string): Promise<boolean> =>
      (await admin.read({ apiVersion, kind, name, namespace })) !== undefined
    const waitUntil = async (f: () => Promise<boolean>): Promise<number> => {
      for (;;) {
        if (await f()) return performance.now()
        await sleep(10)
      }
    }
    /** how many objects of a kind have a name starting with `prefix`: one list call, every 100 ms */
    const count = async (apiVersion: string, kind: string, ns: string | undefined, prefix: string): Promise<number> => {
      await sleep(90)
      return (await admin.list(apiVersion, kind, ns)).filter((o) => o.metadata?.name?.startsWith(prefix)).length
    }
    const succeedFormat = async (name: string): Promise<void> => {
      let pod: string | undefined
      while (!pod) {
        const out = await cp.kubectlOk([
          'get',
          'pods',
          '-n',
          NS,
          '-l',
          `job-name=${name}-format`,
          '-o',
          'jsonpath={.items[0].metadata.name}',
        ])
        pod = out.trim() || undefined
        if (!pod) await sleep(50)
      }
      await cp.kubectlOk([
        'patch',
        'pod',
        pod,
        '-n',
        NS,
        '--subresource=status',
        '--type=merge',
        '-p',
        '{"status":{"phase":"Succeeded"}}',
      ])
    }
    const jobDone = async (name: string): Promise<boolean> => {
      const j = await admin.read<V1Job>({
        apiVersion: 'batch/v1',
        kind: 'Job',
        namespace: NS,
        name: `${name}-format`,
      })
      return (j?.status?.succeeded ?? 0) > 0
    }

    // one at a time
    const pre: number[] = []
    const run: number[] = []
    for (let i = 0; i < SINGLE; i++) {
      const name = `single-${i}`
      const f = `${cp.dir}/${name}.json`
      writeFileSync(f, fsYaml(name))
      const t0 = performance.now()
      await cp.kubectlOk(['create', '-f', f])
      const tJob = await waitUntil(() => exists('batch/v1', 'Job', `${name}-format`, NS))
      pre.push(tJob - t0)
      await succeedFormat(name)
      const tDone = await waitUntil(() => jobDone(name))
      const tSc = await waitUntil(() => exists('storage.k8s.io/v1', 'StorageClass', `${NS}-${name}`))
      run.push(tSc - tDone)
    }

    // the floor: the same objects applied directly
    const floor: number[] = []
    for (let i = 0; i < SINGLE; i++) {
      const name = `floor-${i}`
      const fs = JSON.parse(fsYaml(name)) as ScoutFilesystem
      await admin.create(fs)
      const full = (await admin.read<ScoutFilesystem>({
        apiVersion: 'scoutfs.io/v1alpha1',
        kind: 'ScoutFilesystem',
        namespace: NS,
        name,
      })) as ScoutFilesystem
      // the operator would act on it too: time only our own applies (it may have made some already)
      const t0 = performance.now()
      for (const o of [
        agentServiceAccount(full),
        agentRoleBinding(full),
        configMap(full),
        formatJob(full),
        ...runningChildren(full),
      ])
        await admin.apply(o)
      floor.push(performance.now() - t0)
    }

    // many at once
    const names = Array.from({ length: MANY }, (_, i) => `many-${i}`)
    const manyFile = `${cp.dir}/many.json`
    writeFileSync(
      manyFile,
      JSON.stringify({ apiVersion: 'v1', kind: 'List', items: names.map((n) => JSON.parse(fsYaml(n)) as unknown) }),
    )
    const m0 = performance.now()
    await cp.kubectlOk(['create', '-f', manyFile])
    await waitUntil(async () => (await count('batch/v1', 'Job', NS, 'many-')) === MANY)
    const manyPre = performance.now() - m0
    for (const n of names) await succeedFormat(n)
    await waitUntil(async () => {
      const jobs = await admin.list<V1Job>('batch/v1', 'Job', NS)
      return jobs.filter((j) => j.metadata?.name?.startsWith('many-') && (j.status?.succeeded ?? 0) > 0).length === MANY
    })
    const m1 = performance.now()
    await waitUntil(async () => (await count('storage.k8s.io/v1', 'StorageClass', undefined, `${NS}-many-`)) === MANY)
    const manyRun = performance.now() - m1
    await sleep(3000)
    const rssMany = rssBytes(pid)

    const fmt = (ms: number): string => `${ms.toFixed(0)} ms`
    const mib = (b: number): string => `${(b / 2 ** 20).toFixed(1)} MiB`
    process.stdout.write(
      [
        `operator bench: ${SINGLE} filesystems one at a time, then ${MANY} at once (real API server, operator as its ServiceAccount)`,
        `| | figure |`,
        `|---|---|`,
        `| new ScoutFilesystem → SA, RoleBinding, ConfigMap, format Job, median | ${fmt(median(pre))} (all: ${pre.map(fmt).join(', ')}) |`,
        `| format Job succeeded → DaemonSet, CSIDriver, CRB, CSI Deployment, StorageClass, median | ${fmt(median(run))} (all: ${run.map(fmt).join(', ')}) |`,
        `| floor: the same 9 objects applied directly, median | ${fmt(median(floor))} |`,
        `| operator (both steps) / floor | ${((median(pre) + median(run)) / median(floor)).toFixed(2)}× |`,
        `| ${MANY} at once: created → all Jobs | ${fmt(manyPre)} (${fmt(manyPre / MANY)} per filesystem) |`,
        `| ${MANY} at once: all Jobs succeeded → all StorageClasses | ${fmt(manyRun)} (${fmt(manyRun / MANY)} per filesystem) |`,
        `| operator RSS idle, no filesystem (baseline) | ${mib(rssIdle)} |`,
        `| operator RSS with ${MANY + 2 * SINGLE} filesystems | ${mib(rssMany)} (${(rssMany / rssIdle).toFixed(2)}× baseline; ${mib((rssMany - rssIdle) / (MANY + 2 * SINGLE))} per filesystem) |`,
        '',
      ].join('\n'),
    )
  } finally {
    op?.kill('SIGTERM')
    await stopAllControlPlanes()
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/operator: ${(e as Error).stack ?? String(e)}\n`)
  process.exitCode = 1
})
