/*
 * A ScoutFilesystem's status as a pure function of what the reconciler found: whether the
 * devices are formatted (and why not), whether the running children are applied, and the
 * nodes' fresh views (node-status.ts).  Conditions keep their lastTransitionTime while their
 * status does not change; every condition carries the generation it was computed for.  The
 * leader is the slot that the freshest highest term names; a member is mounted while its node
 * says so in a fresh Lease.
 */
import type { NodeStatus } from './node-status.js'
import type {
  Condition,
  ConditionStatus,
  ConditionType,
  MemberStatus,
  Phase,
  ScoutFilesystem,
  ScoutFilesystemStatus,
} from './types.js'

export type FormatState =
  { state: 'formatted' } | { state: 'unconfirmed' } | { state: 'running' } | { state: 'failed'; message: string }

export interface Observed {
  format: FormatState
  /** the running children (DaemonSet, CSI, StorageClass) are applied for this generation */
  childrenApplied: boolean
  /** fresh node views by node name */
  nodes: Map<string, NodeStatus>
  /** nodes with a FenceRequest Fenced for this filesystem */
  fencedNodes: Set<string>
  deleting: boolean
}

type Want = Pick<Condition, 'status' | 'reason' | 'message'>

function cond(type: ConditionType, want: Want, prev: Condition[] | undefined, gen: number, now: string): Condition {
  const old = prev?.find((c) => c.type === type)
  return {
    type,
    ...want,
    observedGeneration: gen,
    lastTransitionTime: old && old.status === want.status ? old.lastTransitionTime : now,
  }
}

const t = (reason: string, message: string): Want => ({ status: 'True', reason, message })
const f = (reason: string, message: string): Want => ({ status: 'False', reason, message })
const u = (reason: string, message: string): Want => ({ status: 'Unknown', reason, message })

export function computeStatus(fs: ScoutFilesystem, o: Observed, now = new Date()): ScoutFilesystemStatus {
  const gen = fs.metadata.generation ?? 0
  const at = now.toISOString()
  const members = [...fs.spec.quorum.members].sort((a, b) => a.slot - b.slot)
  const majority = Math.floor(members.length / 2) + 1

  const memberStatus: MemberStatus[] = members.map((m) => {
    const st = o.nodes.get(m.node)
    return {
      slot: m.slot,
      node: m.node,
      mounted: st?.mounted === true,
      ...(st?.renewedAt ? { lastHeartbeat: st.renewedAt } : {}),
      fenced: o.fencedNodes.has(m.node),
    }
  })
  const mounted = memberStatus.filter((m) => m.mounted).length

  // the leader: the highest term any fresh view knows, and the slot it names
  let leader: ScoutFilesystemStatus['leader']
  for (const st of o.nodes.values()) {
    if (!st.mounted || st.term === undefined || st.leaderSlot === undefined || st.leaderSlot < 0) continue
    if (leader && leader.term >= st.term) continue
    const m = members.find((x) => x.slot === st.leaderSlot)
    leader = { slot: st.leaderSlot, node: m?.node ?? '', term: st.term }
  }
  let capacity: ScoutFilesystemStatus['capacity']
  let fsid: string | undefined
  for (const st of o.nodes.values()) {
    if (!st.mounted || !st.capacity) continue
    fsid ??= st.fsid
    capacity ??= {
      metadataBytesTotal: st.capacity.metaBytes,
      metadataBytesUsed: st.capacity.metaBytes - st.capacity.metaFreeBytes,
      dataBytesTotal: st.capacity.dataBytes,
      dataBytesUsed: st.capacity.dataBytes - st.capacity.dataFreeBytes,
    }
  }

  const formatted: Want =
    o.format.state === 'formatted'
      ? t('Formatted', 'the devices hold this filesystem')
      : o.format.state === 'unconfirmed'
        ? f(
            'ConfirmationRequired',
            'the operator formats the devices only with spec.format.confirm: true (and over an existing scoutfs filesystem only with spec.format.overwrite: true too)',
          )
        : o.format.state === 'running'
          ? f('Formatting', 'the format Job is running')
          : f('FormatFailed', o.format.message)

  const isFormatted = o.format.state === 'formatted'
  const quorum: Want = !isFormatted
    ? u('NotFormatted', 'no agents run before the devices are formatted')
    : leader && mounted >= majority
      ? t('LeaderElected', `slot ${leader.slot} (${leader.node || 'unknown node'}) leads in term ${leader.term}`)
      : f('NoLeader', `${mounted} of ${members.length} members mounted; ${majority} needed to elect a leader`)
  const quorumUp = quorum.status === 'True'
  const degraded: Want =
    o.format.state === 'failed'
      ? t('FormatFailed', o.format.message)
      : quorumUp && mounted < members.length
        ? t(
            'MembersDown',
            `members not mounted: ${memberStatus
              .filter((m) => !m.mounted)
              .map((m) => `${m.slot} (${m.node})`)
              .join(', ')}`,
          )
        : f('AsExpected', 'nothing is degraded')
  const ready: Want =
    isFormatted && o.childrenApplied && quorumUp && mounted === members.length
      ? t('Ready', `all ${members.length} members mounted`)
      : f(
          !isFormatted ? 'NotFormatted' : !o.childrenApplied ? 'Applying' : !quorumUp ? 'NoQuorum' : 'MembersDown',
          !isFormatted
            ? 'waiting for the format'
            : !o.childrenApplied
              ? 'applying the node DaemonSet and the CSI objects'
              : `${mounted} of ${members.length} members mounted`,
        )
  const progressing: Want =
    o.format.state === 'running'
      ? t('Formatting', 'the format Job is running')
      : isFormatted && ready.status !== 'True' && degraded.status !== 'True'
        ? t('Starting', 'starting the agents')
        : f('Stable', 'nothing in progress')

  const prev = fs.status?.conditions
  const conditions: Condition[] = [
    cond('Formatted', formatted, prev, gen, at),
    cond('QuorumEstablished', quorum, prev, gen, at),
    cond('Ready', ready, prev, gen, at),
    cond('Degraded', degraded, prev, gen, at),
    cond('Progressing', progressing, prev, gen, at),
  ]
  const phase: Phase = o.deleting
    ? 'Deleting'
    : o.format.state === 'failed'
      ? 'Failed'
      : o.format.state === 'unconfirmed'
        ? 'Pending'
        : o.format.state === 'running'
          ? 'Formatting'
          : ready.status === 'True'
            ? 'Ready'
            : degraded.status === 'True'
              ? 'Degraded'
              : 'Starting'
  return {
    observedGeneration: gen,
    phase,
    membersMounted: `${mounted}/${members.length}`,
    ...(fsid ? { fsid } : {}),
    ...(leader ? { leader } : {}),
    members: memberStatus,
    ...(capacity ? { capacity } : {}),
    conditions,
  }
}

/** the conditions whose status changed from `prev` to `next` (for Events) */
export function transitions(
  prev: Condition[] | undefined,
  next: Condition[],
): Array<{ type: ConditionType; from: ConditionStatus | undefined; to: Condition }> {
  const out: Array<{ type: ConditionType; from: ConditionStatus | undefined; to: Condition }> = []
  for (const c of next) {
    const old = prev?.find((p) => p.type === c.type)
    if (!old || old.status !== c.status || old.reason !== c.reason) out.push({ type: c.type, from: old?.status, to: c })
  }
  return out
}
