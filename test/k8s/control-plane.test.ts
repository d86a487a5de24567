/*
 * The real control plane the operator and CSI tests run against (test/helpers/control-plane.ts):
 * the API server enforces RBAC on a ServiceAccount's real token, the controller manager makes
 * ServiceAccounts and garbage-collects dependents, kubectl parses the server's version.
 */
import assert from 'node:assert/strict'
import { startControlPlane, stopAllControlPlanes, type ControlPlane } from '../helpers/control-plane.js'

describe('control plane (etcd, kube-apiserver, kube-controller-manager)', function () {
  this.timeout(300_000)
  let cp: ControlPlane
  before(async () => {
    cp = await startControlPlane()
  })
  after(stopAllControlPlanes)

  it('serves its version to kubectl', async () => {
    const v = JSON.parse(await cp.kubectlOk(['version', '-o', 'json']))
    assert.match(v.serverVersion.gitVersion, /^v1\.\d+\.\d+/)
  })

  it('enforces RBAC on a ServiceAccount token until a Role grants it', async () => {
    await cp.kubectlOk(['create', 'namespace', 'rbac-t'])
    await cp.kubectlOk(['create', 'serviceaccount', 'reader', '-n', 'rbac-t'])
    const kc = await cp.serviceAccountKubeconfig('rbac-t', 'reader')
    const denied = await cp.kubectl(['--kubeconfig', kc, 'get', 'configmaps', '-n', 'rbac-t'])
    assert.notEqual(denied.code, 0)
    assert.match(denied.stderr, /forbidden/i)
    await cp.kubectlOk(['create', 'role', 'cm-reader', '-n', 'rbac-t', '--verb=list', '--resource=configmaps'])
    await cp.kubectlOk([
      'create',
      'rolebinding',
      'r',
      '-n',
      'rbac-t',
      '--role=cm-reader',
      '--serviceaccount=rbac-t:reader',
    ])
    const allowed = await cp.kubectl(['--kubeconfig', kc, 'get', 'configmaps', '-n', 'rbac-t'])
    assert.equal(allowed.code, 0, allowed.stderr)
  })

  it('garbage-collects an object whose owner is deleted', async () => {
    await cp.kubectlOk(['create', 'configmap', 'owner', '-n', 'default'])
    const uid = (await cp.kubectlOk(['get', 'configmap', 'owner', '-o', 'jsonpath={.metadata.uid}'])).trim()
    const owned = {
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: {
        name: 'owned',
        namespace: 'default',
        ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'owner', uid }],
      },
    }
    await cp.kubectlOk(['apply', '-f', '-'], { input: JSON.stringify(owned) })
    await cp.kubectlOk(['delete', 'configmap', 'owner'])
    for (let i = 0; ; i++) {
      const r = await cp.kubectl(['get', 'configmap', 'owned'])
      if (r.code !== 0 && /NotFound/.test(r.stderr)) break
      assert.ok(i < 300, 'the dependent was not garbage-collected within 60 s')
      await new Promise((res) => setTimeout(res, 200))
    }
  })
})
