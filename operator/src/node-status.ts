/*
 * How the operator learns what the agents do: each node's launcher (node.ts) asks its local
 * agent over the admin socket (GET /quorum, GET /statfs) every few seconds and writes the
 * answer into a coordination.k8s.io Lease of its own, `<fs>-node-<node>` in the filesystem's
 * namespace (labels scoutfs.io/filesystem, scoutfs.io/node; the view as JSON in the annotation
 * scoutfs.io/node-status; renewTime = when it was read).  The operator watches those Leases and
 * counts a node's view only while the Lease is fresh (renewTime + leaseDurationSeconds in the
 * future): a node whose launcher stopped writing is not mounted, whatever it said last.
 *
 * The operator never dials the agents: the admin socket is a unix socket on each node, and a
 * Lease per node is one small write every few seconds that RBAC can scope to the namespace.
 */
import type { KubernetesObject, V1Lease } from '@kubernetes/client-node'
import { adminCall } from '../../node-agent/src/agent/admin.js'
import { DATA_BLOCK_SIZE, META_BLOCK_SIZE } from '../../node-agent/src/storage/format.js'
import type { Kube } from './kube.js'
import { LABEL_FS, LABEL_NODE, LABEL_PART_OF, NODE_STATUS_ANNOTATION, nodeLeaseName } from './types.js'

/** One node's view, as its launcher publishes it. */
export interface NodeStatus {
  node: string
  /** the agent answers on its admin socket: the filesystem is mounted */
  mounted: boolean
  /** quorum slot, -1 for a plain client */
  slot: number
  rid?: string
  fsid?: string
  term?: number
  /** -1: none known */
  leaderSlot?: number
  role?: string
  serving?: boolean
  /** the fence this agent's server waits for, if any */
  fencing?: { rid: string; reason: string }
  capacity?: { metaBytes: number; metaFreeBytes: number; dataBytes: number; dataFreeBytes: number }
  /** why it is not mounted */
  error?: string
  /** when the Lease was last renewed (set by the reader, not published) */
  renewedAt?: string
}

/** Read the local agent of `mountpoint` (never throws: an agent that does not answer is not mounted). */
export async function readAgent(node: string, slot: number, mountpoint: string): Promise<NodeStatus> {
  try {
    const [q, s] = await Promise.all([adminCall(mountpoint, 'GET /quorum'), adminCall(mountpoint, 'GET /statfs')])
    return {
      node,
      mounted: true,
      slot: q.slot,
      rid: s.rid,
      fsid: s.fsid,
      term: q.term,
      leaderSlot: q.leaderSlot,
      role: q.role,
      serving: q.serving,
      ...(q.fencing ? { fencing: { rid: q.fencing.rid, reason: q.fencing.reason } } : {}),
      capacity: {
        metaBytes: s.total_meta_blocks * META_BLOCK_SIZE,
        metaFreeBytes: s.free_meta_blocks * META_BLOCK_SIZE,
        dataBytes: s.total_data_blocks * DATA_BLOCK_SIZE,
        dataFreeBytes: s.free_data_blocks * DATA_BLOCK_SIZE,
      },
    }
  } catch (e) {
    return { node, mounted: false, slot, error: (e as Error).message }
  }
}

/** MicroTime as the API server writes it */
function microTime(d: Date): string {
  return d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z')
}

/** The Lease that publishes `st` for `periodMs` times 3. */
export function nodeLease(
  fsName: string,
  namespace: string,
  st: NodeStatus,
  periodMs: number,
  now = new Date(),
): V1Lease {
  return {
    apiVersion: 'coordination.k8s.io/v1',
    kind: 'Lease',
    metadata: {
      name: nodeLeaseName(fsName, st.node),
      namespace,
      labels: { [LABEL_PART_OF]: 'scoutfs', [LABEL_FS]: fsName, [LABEL_NODE]: st.node },
      annotations: { [NODE_STATUS_ANNOTATION]: JSON.stringify(st) },
    },
    spec: {
      holderIdentity: st.node,
      leaseDurationSeconds: Math.max(1, Math.ceil((3 * periodMs) / 1000)),
      renewTime: microTime(now) as unknown as Date,
    },
  }
}

/** Publish `st` (server-side apply of the node's Lease). */
export async function publishNodeStatus(
  kube: Kube,
  fsName: string,
  namespace: string,
  st: NodeStatus,
  periodMs: number,
): Promise<void> {
  await kube.apply(nodeLease(fsName, namespace, st, periodMs))
}

/**
 * The node's view a Lease carries, if the Lease is still fresh at `now`; undefined for a stale
 * Lease or one that is not a node status Lease.
 */
export function freshNodeStatus(
  lease: KubernetesObject & { spec?: V1Lease['spec'] },
  now: number,
): NodeStatus | undefined {
  const raw = lease.metadata?.annotations?.[NODE_STATUS_ANNOTATION]
  const renew = lease.spec?.renewTime
  const dur = lease.spec?.leaseDurationSeconds
  if (!raw || !renew || !dur) return undefined
  const t = new Date(renew as unknown as string).getTime()
  if (!Number.isFinite(t) || t + dur * 1000 < now) return undefined
  try {
    const st = JSON.parse(raw) as NodeStatus
    return typeof st.node === 'string' && typeof st.mounted === 'boolean'
      ? { ...st, renewedAt: new Date(t).toISOString() }
      : undefined
  } catch {
    return undefined
  }
}
