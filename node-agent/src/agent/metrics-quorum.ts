/*
 * The quorum's metrics (DESIGN §11) and those of the member's listener (its TLS peers):
 * registered by quorum members only.  A plain client shows the quorum through its admin
 * socket (GET /quorum), not here: only members take part.
 */
import type { GrpcListener } from '../net/listener.js'
import type { QuorumMember } from '../quorum/quorum.js'
import type { MetricSink } from './metrics.js'

export function registerQuorumMetrics(m: MetricSink, q: QuorumMember): void {
  const s = (): ReturnType<QuorumMember['status']> => q.status()
  m.add([
    {
      name: 'scoutfs_quorum_term',
      help: 'The highest quorum term this member has seen',
      kind: 'gauge',
      read: () => s().term,
    },
    {
      name: 'scoutfs_quorum_is_leader',
      help: '1 while this member is the elected leader',
      kind: 'gauge',
      read: () => (s().role === 'leader' ? 1 : 0),
    },
    {
      name: 'scoutfs_quorum_serving',
      help: '1 while the server role runs on this member (elected, predecessors fenced, started)',
      kind: 'gauge',
      read: () => (s().serving ? 1 : 0),
    },
    {
      name: 'scoutfs_quorum_leader_slot',
      help: 'The slot this member knows to lead (-1: none)',
      kind: 'gauge',
      read: () => s().leaderSlot,
    },
    {
      name: 'scoutfs_quorum_elections_total',
      help: 'Elections this member stood in (raised its term as a candidate)',
      kind: 'counter',
      read: () => s().counters.elections,
    },
    {
      name: 'scoutfs_quorum_elected_total',
      help: 'Elections this member won',
      kind: 'counter',
      read: () => s().counters.elected,
    },
    {
      name: 'scoutfs_quorum_demoted_total',
      help: 'Times this member lost leadership (a higher term, or no majority heard)',
      kind: 'counter',
      read: () => s().counters.demoted,
    },
    {
      name: 'scoutfs_quorum_heartbeats_received_total',
      help: 'Leader heartbeats this member received',
      kind: 'counter',
      read: () => s().counters.heartbeatsReceived,
    },
    {
      name: 'scoutfs_quorum_fence_requests_total',
      help: 'Fences this member asked its fence agent for (previous leaders, silent mounts)',
      kind: 'counter',
      read: () => s().counters.fenceRequests,
    },
    {
      name: 'scoutfs_quorum_fences_confirmed_total',
      help: 'Fences the fence agent confirmed',
      kind: 'counter',
      read: () => s().counters.fencesConfirmed,
    },
    {
      name: 'scoutfs_quorum_fence_errors_total',
      help: 'Fence attempts that failed or timed out (the server waits on them)',
      kind: 'counter',
      read: () => s().counters.fenceErrors,
    },
    {
      name: 'scoutfs_quorum_fence_waiting',
      help: '1 while this member waits for a fence to be confirmed',
      kind: 'gauge',
      read: () => (s().fencing ? 1 : 0),
    },
    {
      name: 'scoutfs_quorum_heartbeat_timeout_seconds',
      help: 'Silence from the leader that starts an election',
      kind: 'gauge',
      read: () => s().heartbeatTimeoutMs / 1000,
    },
    {
      name: 'scoutfs_quorum_last_start_seconds',
      help: 'Election to serving (fencing and server start) the last time this member led',
      kind: 'gauge',
      read: () => (s().lastStartMs ?? 0) / 1000,
    },
  ])
}

export function registerTlsMetrics(m: MetricSink, l: GrpcListener): void {
  m.add([
    {
      name: 'scoutfs_tls_connections_accepted_total',
      help: "TLS connections to this member's listener whose peer was vetted (a certificate of this filesystem's CA naming it)",
      kind: 'counter',
      read: () => l.tls.accepted,
    },
  ])
  m.addLabeled(
    'scoutfs_tls_refusals_total',
    "Peers refused at this member's listener, by reason (no_certificate, untrusted, expired, not_yet_valid, wrong_fsid, handshake)",
    'reason',
    () => ({ ...l.tls.refused }),
    'counter',
  )
}
