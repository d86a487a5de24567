/*
 * The ScoutFilesystem resource as the operator reads it (CRD:
 * charts/scoutfs/crds/scoutfs.io_scoutfilesystems.yaml; the API server applies the defaults, so
 * a field with a default is always present on an object read back), its status, and the names
 * and labels every child object shares.  Pure data: no API calls here.
 */
import type { KubernetesObject } from '@kubernetes/client-node'

export const GROUP = 'scoutfs.io'
export const VERSION = 'v1alpha1'
export const API_VERSION = `${GROUP}/${VERSION}`
export const FS_KIND = 'ScoutFilesystem'
export const FS_PLURAL = 'scoutfilesystems'
export const FENCE_PLURAL = 'fencerequests'
/** the finalizer that keeps a ScoutFilesystem until its cluster-scoped children are gone */
export const FINALIZER = 'scoutfs.io/cleanup'
/** the field manager of every write of the operator */
export const FIELD_MANAGER = 'scoutfs-operator'
export const LABEL_FS = 'scoutfs.io/filesystem'
export const LABEL_NODE = 'scoutfs.io/node'
export const LABEL_COMPONENT = 'app.kubernetes.io/component'
export const LABEL_PART_OF = 'app.kubernetes.io/part-of'
/** a node's status Lease carries the agent's view in this annotation (node-status.ts) */
export const NODE_STATUS_ANNOTATION = 'scoutfs.io/node-status'

export interface DeviceRef {
  claimName?: string
  path?: string
}

export interface QuorumMember {
  slot: number
  node: string
  address: string
  port: number
}

export type FenceMethod = 'deletePod' | 'cordonNode' | 'hook'

export interface ScoutFilesystemSpec {
  devices: { metadata: DeviceRef; data: DeviceRef }
  quorum: { members: QuorumMember[]; heartbeatTimeoutSeconds: number }
  mountOptions?: string[]
  tls?: { secretName?: string; insecure?: boolean }
  image: string
  imagePullPolicy: string
  mountRoot: string
  placement?: {
    nodeSelector?: Record<string, string>
    tolerations?: Record<string, unknown>[]
    resources?: Record<string, unknown>
  }
  fencing: {
    method: FenceMethod
    hook?: { command: string[]; timeoutSeconds: number }
    timeoutSeconds: number
  }
  format: { confirm: boolean; overwrite: boolean }
  csi: { provisionerImage: string; resizerImage: string; registrarImage: string; livenessProbeImage: string }
  storageClass: { create: boolean; name?: string; reclaimPolicy: string; allowVolumeExpansion: boolean }
}

export type ConditionType = 'Formatted' | 'QuorumEstablished' | 'Ready' | 'Degraded' | 'Progressing'
export type ConditionStatus = 'True' | 'False' | 'Unknown'

export interface Condition {
  type: ConditionType
  status: ConditionStatus
  observedGeneration: number
  lastTransitionTime: string
  reason: string
  message: string
}

export type Phase = 'Pending' | 'Formatting' | 'Starting' | 'Ready' | 'Degraded' | 'Failed' | 'Deleting'

export interface MemberStatus {
  slot: number
  node: string
  mounted: boolean
  lastHeartbeat?: string
  fenced: boolean
}

export interface ScoutFilesystemStatus {
  observedGeneration?: number
  phase?: Phase
  membersMounted?: string
  fsid?: string
  leader?: { slot: number; node: string; term: number }
  members?: MemberStatus[]
  capacity?: { metadataBytesTotal: number; metadataBytesUsed: number; dataBytesTotal: number; dataBytesUsed: number }
  conditions?: Condition[]
}

export interface ScoutFilesystem extends KubernetesObject {
  metadata: NonNullable<KubernetesObject['metadata']> & { name: string; namespace: string }
  spec: ScoutFilesystemSpec
  status?: ScoutFilesystemStatus
}

/** The names of a filesystem's children: namespaced ones by its name, cluster ones by namespace too. */
export function childNames(fs: Pick<ScoutFilesystem, 'metadata'>): {
  formatJob: string
  nodeDaemonSet: string
  controller: string
  serviceAccount: string
  config: string
  csiDriver: string
  storageClass: string
} {
  const { name, namespace } = fs.metadata
  return {
    formatJob: `${name}-format`,
    nodeDaemonSet: `${name}-node`,
    controller: `${name}-csi-controller`,
    serviceAccount: `${name}-agent`,
    config: `${name}-config`,
    csiDriver: `${name}.${namespace}.scoutfs.io`,
    storageClass: `${namespace}-${name}`,
  }
}

/** the labels of every child of `fs` (component: what the child is) */
export function childLabels(fs: Pick<ScoutFilesystem, 'metadata'>, component: string): Record<string, string> {
  return {
    [LABEL_PART_OF]: 'scoutfs',
    [LABEL_FS]: fs.metadata.name,
    [LABEL_COMPONENT]: component,
    'app.kubernetes.io/managed-by': FIELD_MANAGER,
  }
}

/** the name of the status Lease the node side of `fs` writes for `node` (node-status.ts) */
export function nodeLeaseName(fsName: string, node: string): string {
  return `${fsName}-node-${node}`.slice(0, 253)
}
