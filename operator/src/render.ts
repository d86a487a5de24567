/*
 * The desired child objects of a ScoutFilesystem, as pure functions of its spec (no API calls):
 * the agents' ServiceAccount and RoleBinding, the node configuration ConfigMap, the format Job,
 * the node DaemonSet (agent + CSI node plugin + registrar + livenessprobe), the CSI controller
 * Deployment (plugin + provisioner + resizer + livenessprobe) and its ClusterRoleBinding, the
 * CSIDriver and the StorageClass.  Namespaced children carry an owner reference to the
 * filesystem (garbage-collected with it); cluster-scoped ones carry its labels and are deleted
 * by the finalizer (filesystem-reconciler.ts).  The node pods' template carries a hash of the
 * node configuration, so a spec change that changes what the agents run rolls the DaemonSet.
 */
import { createHash } from 'node:crypto'
import type { KubernetesObject } from '@kubernetes/client-node'
import {
  API_VERSION,
  FS_KIND,
  LABEL_FS,
  childLabels,
  childNames,
  type DeviceRef,
  type QuorumMember,
  type ScoutFilesystem,
} from './types.js'

/** the ClusterRoles the chart installs and the operator binds (charts/scoutfs/templates/rbac.yaml) */
export const AGENT_CLUSTER_ROLE = 'scoutfs-agent'
export const CSI_CONTROLLER_CLUSTER_ROLE = 'scoutfs-csi-controller'

/** where the node pods see things */
export const CONFIG_DIR = '/etc/scoutfs'
export const CONFIG_FILE = 'filesystem.json'
export const TLS_DIR = '/etc/scoutfs/tls'
export const META_DEVICE = '/dev/scoutfs/metadata'
export const DATA_DEVICE = '/dev/scoutfs/data'
export const ADMIN_DIR = '/run/scoutfs'
export const CSI_SOCKET_DIR = '/csi'
/** the node launcher's health port (node.ts: /healthz, /readyz) */
export const NODE_HEALTH_PORT = 9810
export const CSI_HEALTH_PORT = 9808

/** What the node launcher (node.ts) reads from the ConfigMap. */
export interface NodeConfig {
  filesystem: string
  namespace: string
  mountpoint: string
  metadev: string
  datadev: string
  members: QuorumMember[]
  heartbeatTimeoutMs: number
  /** mount options from spec.mountOptions */
  mountOptions: string[]
  tlsDir?: string
  insecure?: boolean
  fenceTimeoutMs: number
}

type Obj = KubernetesObject & Record<string, unknown>

function ownerRef(fs: ScoutFilesystem): Record<string, unknown> {
  return {
    apiVersion: API_VERSION,
    kind: FS_KIND,
    name: fs.metadata.name,
    uid: fs.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  }
}

function meta(fs: ScoutFilesystem, name: string, component: string, namespaced = true): Record<string, unknown> {
  return namespaced
    ? { name, namespace: fs.metadata.namespace, labels: childLabels(fs, component), ownerReferences: [ownerRef(fs)] }
    : { name, labels: { ...childLabels(fs, component), 'scoutfs.io/namespace': fs.metadata.namespace } }
}

export function mountpointOf(fs: ScoutFilesystem): string {
  return `${fs.spec.mountRoot.replace(/\/+$/, '')}/${fs.metadata.namespace}/${fs.metadata.name}`
}

export function nodeConfig(fs: ScoutFilesystem): NodeConfig {
  const s = fs.spec
  return {
    filesystem: fs.metadata.name,
    namespace: fs.metadata.namespace,
    mountpoint: mountpointOf(fs),
    metadev: META_DEVICE,
    datadev: DATA_DEVICE,
    members: [...s.quorum.members].sort((a, b) => a.slot - b.slot),
    heartbeatTimeoutMs: s.quorum.heartbeatTimeoutSeconds * 1000,
    mountOptions: s.mountOptions ?? [],
    ...(s.tls?.secretName ? { tlsDir: TLS_DIR } : {}),
    ...(s.tls?.insecure ? { insecure: true } : {}),
    fenceTimeoutMs: s.fencing.timeoutSeconds * 1000,
  }
}

/** the hash of what the node pods run: changes with anything that needs the agents restarted */
export function nodeConfigHash(fs: ScoutFilesystem): string {
  const s = fs.spec
  const what = { config: nodeConfig(fs), image: s.image, tls: s.tls ?? null, placement: s.placement ?? null }
  return createHash('sha256').update(JSON.stringify(what)).digest('hex').slice(0, 16)
}

export function agentServiceAccount(fs: ScoutFilesystem): Obj {
  const n = childNames(fs)
  return { apiVersion: 'v1', kind: 'ServiceAccount', metadata: meta(fs, n.serviceAccount, 'agent') }
}

/** the agents may create and read FenceRequests and write their status Leases, in this namespace only */
export function agentRoleBinding(fs: ScoutFilesystem): Obj {
  const n = childNames(fs)
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'RoleBinding',
    metadata: meta(fs, n.serviceAccount, 'agent'),
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: AGENT_CLUSTER_ROLE },
    subjects: [{ kind: 'ServiceAccount', name: n.serviceAccount, namespace: fs.metadata.namespace }],
  }
}

/** the CSI controller (provisioner, resizer) watches PVs, PVCs and StorageClasses cluster-wide */
export function csiControllerBinding(fs: ScoutFilesystem): Obj {
  const n = childNames(fs)
  return {
    apiVersion: 'rbac.authorization.k8s.io/v1',
    kind: 'ClusterRoleBinding',
    metadata: meta(fs, `scoutfs-${fs.metadata.namespace}-${fs.metadata.name}-csi`, 'csi-controller', false),
    roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: CSI_CONTROLLER_CLUSTER_ROLE },
    subjects: [{ kind: 'ServiceAccount', name: n.serviceAccount, namespace: fs.metadata.namespace }],
  }
}

export function configMap(fs: ScoutFilesystem): Obj {
  const n = childNames(fs)
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: meta(fs, n.config, 'config'),
    data: { [CONFIG_FILE]: JSON.stringify(nodeConfig(fs), null, 2) + '\n' },
  }
}

/** a device as the pod sees it: a Block PVC as a volumeDevice, a node path as a hostPath BlockDevice */
function deviceVolume(
  which: 'metadata' | 'data',
  d: DeviceRef,
  devicePath: string,
): { volume: Record<string, unknown>; device?: Record<string, unknown>; mount?: Record<string, unknown> } {
  const name = `${which}-device`
  if (d.claimName)
    return {
      volume: { name, persistentVolumeClaim: { claimName: d.claimName } },
      device: { name, devicePath },
    }
  return {
    volume: { name, hostPath: { path: d.path, type: 'BlockDevice' } },
    mount: { name, mountPath: devicePath },
  }
}

function devices(fs: ScoutFilesystem): {
  volumes: Record<string, unknown>[]
  volumeDevices: Record<string, unknown>[]
  volumeMounts: Record<string, unknown>[]
} {
  const m = deviceVolume('metadata', fs.spec.devices.metadata, META_DEVICE)
  const d = deviceVolume('data', fs.spec.devices.data, DATA_DEVICE)
  return {
    volumes: [m.volume, d.volume],
    volumeDevices: [m.device, d.device].filter((x): x is Record<string, unknown> => x !== undefined),
    volumeMounts: [m.mount, d.mount].filter((x): x is Record<string, unknown> => x !== undefined),
  }
}

/** `scoutfs mkfs` arguments: the quorum slots with their addresses; -f only with overwrite */
export function mkfsArgs(fs: ScoutFilesystem): string[] {
  const args = ['mkfs', META_DEVICE, DATA_DEVICE]
  for (const m of nodeConfig(fs).members) args.push('-Q', `${m.slot},${m.address},${m.port}`)
  if (fs.spec.format.overwrite) args.push('--force')
  return args
}

/** The format Job: runs once on the first member's node (device paths are per node). */
export function formatJob(fs: ScoutFilesystem): Obj {
  const n = childNames(fs)
  const dev = devices(fs)
  const first = nodeConfig(fs).members[0]
  return {
    apiVersion: 'batch/v1',
    kind: 'Job',
    metadata: meta(fs, n.formatJob, 'format'),
    spec: {
      backoffLimit: 0,
      template: {
        metadata: { labels: childLabels(fs, 'format') },
        spec: {
          restartPolicy: 'Never',
          serviceAccountName: n.serviceAccount,
          nodeSelector: { 'kubernetes.io/hostname': first.node },
          tolerations: fs.spec.placement?.tolerations ?? [],
          containers: [
            {
              name: 'mkfs',
              image: fs.spec.image,
              imagePullPolicy: fs.spec.imagePullPolicy,
              command: ['scoutfs'],
              args: mkfsArgs(fs),
              securityContext: { privileged: true },
              volumeDevices: dev.volumeDevices,
              volumeMounts: dev.volumeMounts,
            },
          ],
          volumes: dev.volumes,
        },
      },
    },
  }
}

function csiDriverName(fs: ScoutFilesystem): string {
  return childNames(fs).csiDriver
}

function env(fs: ScoutFilesystem): Record<string, unknown>[] {
  return [
    { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
    { name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    { name: 'SCOUTFS_FILESYSTEM', value: fs.metadata.name },
  ]
}

/** The node DaemonSet: on every node the placement selects; members get their quorum slot from the config. */
export function nodeDaemonSet(fs: ScoutFilesystem): Obj {
  const n = childNames(fs)
  const dev = devices(fs)
  const s = fs.spec
  const driver = csiDriverName(fs)
  const pluginDir = `/var/lib/kubelet/plugins/${driver}`
  const selector = { [LABEL_FS]: fs.metadata.name, 'app.kubernetes.io/component': 'node' }
  const common = { image: s.image, imagePullPolicy: s.imagePullPolicy, env: env(fs) }
  const mountRoot = s.mountRoot
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata: meta(fs, n.nodeDaemonSet, 'node'),
    spec: {
      selector: { matchLabels: selector },
      // one node at a time: a majority of the quorum stays up through a roll
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
      template: {
        metadata: {
          labels: childLabels(fs, 'node'),
          annotations: { 'scoutfs.io/config-hash': nodeConfigHash(fs) },
        },
        spec: {
          serviceAccountName: n.serviceAccount,
          hostNetwork: true,
          dnsPolicy: 'ClusterFirstWithHostNet',
          priorityClassName: 'system-node-critical',
          terminationGracePeriodSeconds: 60,
          nodeSelector: s.placement?.nodeSelector ?? {},
          tolerations: s.placement?.tolerations ?? [],
          containers: [
            {
              name: 'agent',
              ...common,
              command: ['scoutfs'],
              args: [
                'operator',
                'node',
                '--config',
                `${CONFIG_DIR}/${CONFIG_FILE}`,
                '--health-port',
                `${NODE_HEALTH_PORT}`,
              ],
              securityContext: { privileged: true },
              resources: s.placement?.resources ?? {},
              ports: [{ name: 'health', containerPort: NODE_HEALTH_PORT }],
              livenessProbe: {
                httpGet: { path: '/healthz', port: 'health' },
                periodSeconds: 10,
                failureThreshold: 6,
              },
              readinessProbe: { httpGet: { path: '/readyz', port: 'health' }, periodSeconds: 5 },
              volumeDevices: dev.volumeDevices,
              volumeMounts: [
                ...dev.volumeMounts,
                { name: 'config', mountPath: CONFIG_DIR, readOnly: true },
                { name: 'fuse', mountPath: '/dev/fuse' },
                { name: 'mount-root', mountPath: mountRoot, mountPropagation: 'Bidirectional' },
                { name: 'admin', mountPath: ADMIN_DIR },
                ...(s.tls?.secretName ? [{ name: 'tls', mountPath: TLS_DIR, readOnly: true }] : []),
              ],
            },
            {
              name: 'csi-node',
              ...common,
              command: ['scoutfs'],
              args: [
                'csi',
                '--mode',
                'node',
                '--driver-name',
                driver,
                '--endpoint',
                `unix://${CSI_SOCKET_DIR}/csi.sock`,
                '--node-id',
                '$(NODE_NAME)',
                '--mount',
                mountpointOf(fs),
              ],
              securityContext: { privileged: true },
              ports: [{ name: 'csi-health', containerPort: CSI_HEALTH_PORT }],
              livenessProbe: {
                httpGet: { path: '/healthz', port: 'csi-health' },
                periodSeconds: 10,
                failureThreshold: 5,
              },
              volumeMounts: [
                { name: 'plugin-dir', mountPath: CSI_SOCKET_DIR },
                { name: 'kubelet-pods', mountPath: '/var/lib/kubelet/pods', mountPropagation: 'Bidirectional' },
                { name: 'mount-root', mountPath: mountRoot, mountPropagation: 'Bidirectional' },
                { name: 'admin', mountPath: ADMIN_DIR },
              ],
            },
            {
              name: 'node-driver-registrar',
              image: s.csi.registrarImage,
              args: [`--csi-address=${CSI_SOCKET_DIR}/csi.sock`, `--kubelet-registration-path=${pluginDir}/csi.sock`],
              volumeMounts: [
                { name: 'plugin-dir', mountPath: CSI_SOCKET_DIR },
                { name: 'registration-dir', mountPath: '/registration' },
              ],
            },
            {
              name: 'liveness-probe',
              image: s.csi.livenessProbeImage,
              args: [`--csi-address=${CSI_SOCKET_DIR}/csi.sock`, `--health-port=${CSI_HEALTH_PORT}`],
              volumeMounts: [{ name: 'plugin-dir', mountPath: CSI_SOCKET_DIR }],
            },
          ],
          volumes: [
            ...dev.volumes,
            { name: 'config', configMap: { name: n.config } },
            { name: 'fuse', hostPath: { path: '/dev/fuse', type: 'CharDevice' } },
            { name: 'mount-root', hostPath: { path: mountRoot, type: 'DirectoryOrCreate' } },
            {
              name: 'admin',
              hostPath: {
                path: `${ADMIN_DIR}/${fs.metadata.namespace}-${fs.metadata.name}`,
                type: 'DirectoryOrCreate',
              },
            },
            { name: 'plugin-dir', hostPath: { path: pluginDir, type: 'DirectoryOrCreate' } },
            { name: 'registration-dir', hostPath: { path: '/var/lib/kubelet/plugins_registry', type: 'Directory' } },
            { name: 'kubelet-pods', hostPath: { path: '/var/lib/kubelet/pods', type: 'Directory' } },
            ...(s.tls?.secretName ? [{ name: 'tls', secret: { secretName: s.tls.secretName } }] : []),
          ],
        },
      },
    },
  }
}

/** The CSI controller: provisions and expands volumes (directories with quotas) in the mounted filesystem. */
export function csiControllerDeployment(fs: ScoutFilesystem): Obj {
  const n = childNames(fs)
  const s = fs.spec
  const driver = csiDriverName(fs)
  const selector = { [LABEL_FS]: fs.metadata.name, 'app.kubernetes.io/component': 'csi-controller' }
  const socket = `${CSI_SOCKET_DIR}/csi.sock`
  const sidecar = (name: string, image: string, args: string[]): Record<string, unknown> => ({
    name,
    image,
    args,
    volumeMounts: [{ name: 'socket-dir', mountPath: CSI_SOCKET_DIR }],
  })
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: meta(fs, n.controller, 'csi-controller'),
    spec: {
      replicas: 1,
      selector: { matchLabels: selector },
      strategy: { type: 'Recreate' },
      template: {
        metadata: { labels: childLabels(fs, 'csi-controller') },
        spec: {
          serviceAccountName: n.serviceAccount,
          nodeSelector: s.placement?.nodeSelector ?? {},
          tolerations: s.placement?.tolerations ?? [],
          // where the filesystem is mounted: beside a node pod of this filesystem
          affinity: {
            podAffinity: {
              requiredDuringSchedulingIgnoredDuringExecution: [
                {
                  labelSelector: {
                    matchLabels: { [LABEL_FS]: fs.metadata.name, 'app.kubernetes.io/component': 'node' },
                  },
                  topologyKey: 'kubernetes.io/hostname',
                },
              ],
            },
          },
          containers: [
            {
              name: 'csi-controller',
              image: s.image,
              imagePullPolicy: s.imagePullPolicy,
              command: ['scoutfs'],
              args: [
                'csi',
                '--mode',
                'controller',
                '--driver-name',
                driver,
                '--endpoint',
                `unix://${socket}`,
                '--node-id',
                '$(NODE_NAME)',
                '--mount',
                mountpointOf(fs),
              ],
              env: env(fs),
              ports: [{ name: 'csi-health', containerPort: CSI_HEALTH_PORT }],
              livenessProbe: {
                httpGet: { path: '/healthz', port: 'csi-health' },
                periodSeconds: 10,
                failureThreshold: 5,
              },
              volumeMounts: [
                { name: 'socket-dir', mountPath: CSI_SOCKET_DIR },
                { name: 'mount-root', mountPath: s.mountRoot, mountPropagation: 'HostToContainer' },
                { name: 'admin', mountPath: ADMIN_DIR },
              ],
            },
            sidecar('csi-provisioner', s.csi.provisionerImage, [
              `--csi-address=${socket}`,
              '--leader-election',
              `--leader-election-namespace=${fs.metadata.namespace}`,
              '--extra-create-metadata',
            ]),
            sidecar('csi-resizer', s.csi.resizerImage, [
              `--csi-address=${socket}`,
              '--leader-election',
              `--leader-election-namespace=${fs.metadata.namespace}`,
            ]),
            sidecar('liveness-probe', s.csi.livenessProbeImage, [
              `--csi-address=${socket}`,
              `--health-port=${CSI_HEALTH_PORT}`,
            ]),
          ],
          volumes: [
            { name: 'socket-dir', emptyDir: {} },
            { name: 'mount-root', hostPath: { path: s.mountRoot, type: 'DirectoryOrCreate' } },
            {
              name: 'admin',
              hostPath: {
                path: `${ADMIN_DIR}/${fs.metadata.namespace}-${fs.metadata.name}`,
                type: 'DirectoryOrCreate',
              },
            },
          ],
        },
      },
    },
  }
}

export function csiDriver(fs: ScoutFilesystem): Obj {
  return {
    apiVersion: 'storage.k8s.io/v1',
    kind: 'CSIDriver',
    metadata: meta(fs, csiDriverName(fs), 'csi', false),
    spec: {
      attachRequired: false,
      podInfoOnMount: false,
      volumeLifecycleModes: ['Persistent'],
      fsGroupPolicy: 'File',
      requiresRepublish: false,
    },
  }
}

export function storageClass(fs: ScoutFilesystem): Obj {
  const sc = fs.spec.storageClass
  return {
    apiVersion: 'storage.k8s.io/v1',
    kind: 'StorageClass',
    metadata: meta(fs, sc.name ?? childNames(fs).storageClass, 'storage-class', false),
    provisioner: csiDriverName(fs),
    reclaimPolicy: sc.reclaimPolicy,
    allowVolumeExpansion: sc.allowVolumeExpansion,
    volumeBindingMode: 'Immediate',
    parameters: { filesystem: `${fs.metadata.namespace}/${fs.metadata.name}` },
  }
}

/** everything the filesystem runs once formatted, in the order they are applied */
export function runningChildren(fs: ScoutFilesystem): Obj[] {
  return [
    nodeDaemonSet(fs),
    csiDriver(fs),
    csiControllerBinding(fs),
    csiControllerDeployment(fs),
    ...(fs.spec.storageClass.create ? [storageClass(fs)] : []),
  ]
}

/** the cluster-scoped children (no owner reference: the finalizer deletes them) */
export function clusterChildren(fs: ScoutFilesystem): Array<{ apiVersion: string; kind: string; name: string }> {
  const out = [csiDriver(fs), csiControllerBinding(fs), storageClass(fs)]
  return out.map((o) => ({
    apiVersion: o.apiVersion as string,
    kind: o.kind as string,
    name: (o.metadata as { name: string }).name,
  }))
}
