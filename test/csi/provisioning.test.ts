/*
 * The real provisioning path: a real kube-apiserver and kube-controller-manager
 * (test/helpers/control-plane.ts), the real external-provisioner and external-resizer
 * sidecars (Go-built into .cache/test-components) pointed at the driver's socket, the driver
 * on a real agent mount.  A PVC becomes a bound PV whose volume is our quota directory; a
 * PVC resize reaches ControllerExpandVolume and raises the quota; deleting the PVC deletes
 * the directory, or keeps it with onDelete: retain.  No kubelet and no node-driver-registrar:
 * the test writes the Node and CSINode objects they would, and nothing is published here
 * (test/csi/driver.test.ts publishes).
 */
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, openSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { adminCall } from '../../node-agent/src/agent/admin.js'
import { makeDevices, startAgent, stopAllAgents, type Agent, type Devices } from '../helpers/agent.js'
import { startDriver, stopAllDrivers, type Driver } from '../helpers/csi.js'
import { component, startControlPlane, stopAllControlPlanes, type ControlPlane } from '../helpers/control-plane.js'

const MiB = 1 << 20
const TOPOLOGY_KEY = 'topology.csi.scoutfs.io/fsid'

/** Poll `fn` until it returns a value (not undefined); fails after `ms` with `what`. */
async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, ms = 120_000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`gave up waiting ${ms / 1000} s for ${what}`)
    await new Promise((r) => setTimeout(r, 250))
  }
}

describe('csi: provisioning through the real csi-provisioner and csi-resizer on a real kube-apiserver', function () {
  this.timeout(600_000)
  let dev: Devices
  let agent: Agent
  let driver: Driver
  let cp: ControlPlane
  const sidecars: Array<{ name: string; proc: ChildProcess; log: string }> = []

  before(async function () {
    this.timeout(300_000)
    const provisioner = component('csi-provisioner')
    const resizer = component('csi-resizer')
    dev = await makeDevices()
    agent = await startAgent(dev)
    driver = await startDriver(agent.mnt, join(dev.dir, 'csi.sock'), { nodeId: 'node-0', mode: 'controller' })
    cp = await startControlPlane()
    // what the kubelet and node-driver-registrar would publish for node-0 (neither runs here):
    // the Node with the driver's topology label and the CSINode naming the driver's topology
    // key, from which the provisioner builds the volume's accessibility requirements
    const fsid = (await adminCall(agent.mnt, 'GET /statfs')).fsid
    const node = { apiVersion: 'v1', kind: 'Node', metadata: { name: 'node-0', labels: { [TOPOLOGY_KEY]: fsid } } }
    const csiNode = {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'CSINode',
      metadata: { name: 'node-0' },
      spec: { drivers: [{ name: 'csi.scoutfs.io', nodeID: 'node-0', topologyKeys: [TOPOLOGY_KEY] }] },
    }
    for (const o of [node, csiNode]) await cp.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(o) })
    for (const [name, bin] of [
      ['provisioner', provisioner],
      ['resizer', resizer],
    ] as const) {
      const log = join(dev.dir, `${name}.log`)
      const fd = openSync(log, 'a')
      const args = [`--csi-address=${driver.socket}`, `--kubeconfig=${cp.adminKubeconfig}`, '--leader-election=false']
      args.push('--v=4', '--timeout=60s')
      sidecars.push({ name, proc: spawn(bin, args, { stdio: ['ignore', fd, fd] }), log })
    }
  })

  after(async () => {
    for (const s of sidecars) {
      if (s.proc.exitCode !== null || s.proc.signalCode !== null) continue
      const gone = new Promise((r) => s.proc.once('exit', r))
      s.proc.kill('SIGTERM')
      await gone
    }
    await stopAllDrivers()
    await stopAllControlPlanes()
    await stopAllAgents()
    dev?.remove()
  })

  afterEach(function () {
    if (this.currentTest?.state !== 'failed') return
    for (const s of sidecars) console.log(`      ${s.name} log tail:\n${readFileSync(s.log, 'utf8').slice(-3000)}`)
    console.log(`      driver log tail:\n${driver.log().slice(-3000)}`)
  })

  const storageClass = async (name: string, onDelete: string): Promise<void> => {
    const sc = {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: { name },
      provisioner: 'csi.scoutfs.io',
      allowVolumeExpansion: true,
      reclaimPolicy: 'Delete',
      volumeBindingMode: 'Immediate',
      parameters: { onDelete },
    }
    await cp.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(sc) })
  }

  const claim = async (name: string, sc: string, size: string): Promise<void> => {
    const pvc = {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name, namespace: 'default' },
      spec: { accessModes: ['ReadWriteMany'], storageClassName: sc, resources: { requests: { storage: size } } },
    }
    await cp.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(pvc) })
  }

  // a Kubernetes object as kubectl prints it
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  type Obj = Record<string, any>
  const get = async (args: string[]): Promise<Obj | undefined> => {
    const r = await cp.kubectl(['get', ...args, '-o', 'json'])
    return r.code === 0 ? (JSON.parse(r.stdout) as Obj) : undefined
  }

  /** the quota of volume directory `dir`, as the agent has it */
  const quotaOf = async (dir: string): Promise<number | undefined> => {
    const path = join(agent.mnt, 'volumes', dir)
    if (!existsSync(path)) return undefined
    return (await adminCall(agent.mnt, 'GET /quota', { ino: statSync(path).ino })).quota?.limit_bytes
  }

  it('a PVC becomes a bound PV with our volume; a resize reaches ControllerExpandVolume; delete removes the directory', async () => {
    await storageClass('scoutfs', 'delete')
    await claim('data', 'scoutfs', '16Mi')
    const pvc = await waitFor('the PVC to be bound', async () => {
      const p = await get(['pvc', 'data', '-n', 'default'])
      return p?.status?.phase === 'Bound' ? p : undefined
    })
    const pvName = pvc.spec.volumeName as string
    const pv = (await get(['pv', pvName]))!
    const handle = pv.spec.csi.volumeHandle as string
    assert.equal(pv.spec.csi.driver, 'csi.scoutfs.io')
    const fsid = (await adminCall(agent.mnt, 'GET /statfs')).fsid
    assert.equal(handle, `v1:${fsid}:d:${pvName}`)
    assert.equal(pv.spec.capacity.storage, '16Mi')
    assert.equal(await quotaOf(pvName), 16 * MiB, 'the directory carries the PVC size as its quota')

    await cp.kubectlOk([
      'patch',
      'pvc',
      'data',
      '-n',
      'default',
      '-p',
      JSON.stringify({ spec: { resources: { requests: { storage: '48Mi' } } } }),
    ])
    await waitFor('the PV to grow', async () =>
      (await get(['pv', pvName]))?.spec.capacity.storage === '48Mi' ? true : undefined,
    )
    assert.equal(await quotaOf(pvName), 48 * MiB, 'ControllerExpandVolume raised the quota')
    assert.match(driver.log(), /"method":"ControllerExpandVolume","code":"OK"/)
    await waitFor('the PVC to show the new size', async () =>
      (await get(['pvc', 'data', '-n', 'default']))?.status?.capacity?.storage === '48Mi' ? true : undefined,
    )

    await cp.kubectlOk(['delete', 'pvc', 'data', '-n', 'default'])
    await waitFor('the PV to be deleted', async () => ((await get(['pv', pvName])) === undefined ? true : undefined))
    assert.equal(existsSync(join(agent.mnt, 'volumes', pvName)), false, 'DeleteVolume removed the directory')
  })

  it('with onDelete: retain, deleting the PVC keeps the directory and its files', async () => {
    await storageClass('scoutfs-retain', 'retain')
    await claim('kept', 'scoutfs-retain', '8Mi')
    const pvc = await waitFor('the PVC to be bound', async () => {
      const p = await get(['pvc', 'kept', '-n', 'default'])
      return p?.status?.phase === 'Bound' ? p : undefined
    })
    const pvName = pvc.spec.volumeName as string
    writeFileSync(join(agent.mnt, 'volumes', pvName, 'precious'), 'data')
    await cp.kubectlOk(['delete', 'pvc', 'kept', '-n', 'default'])
    await waitFor('the PV to be deleted', async () => ((await get(['pv', pvName])) === undefined ? true : undefined))
    assert.equal(readFileSync(join(agent.mnt, 'volumes', pvName, 'precious'), 'utf8'), 'data')
    assert.match(driver.log(), /"method":"DeleteVolume","code":"OK"/)
  })
})
