/*
 * Real clusters for tests, on the launcher (node-agent/src/tools/launcher/cluster.ts): one set
 * of file-backed devices formatted with a server address in quorum slot 0, the server agent
 * (`-o quorum_slot_nr=0`) started first, then the other agents, each a `scoutfs mount
 * --foreground` child process with its own FUSE mount.  Everything started here is stopped by
 * stopAllAgents() (agent.ts).
 */
import { withTestFrontend } from './frontend.js'
import {
  Cluster as Launched,
  makeClusterDevices as launchClusterDevices,
  numberedAgents,
} from '../../node-agent/src/tools/launcher/cluster.js'
import { registerDir, wrapAgent, type Agent, type Devices } from './agent.js'

export { freePort } from '../../node-agent/src/tools/launcher/ports.js'
export { agentStatus, type AgentStatus } from '../../node-agent/src/tools/launcher/status.js'

export interface ClusterDevices extends Devices {
  /** the server's address (quorum slot 0) */
  serverAddr: string
  /** the mount options of the cluster's mutual TLS (its CA and agent certificate) */
  tlsOptions?: string
}

/** Fresh devices formatted for a cluster: `slots` quorum slots, slot 0 at 127.0.0.1:<free port>. */
export async function makeClusterDevices(
  opts: { metaBytes?: number; dataBytes?: number; slots?: number; members?: number; memberHosts?: string[] } = {},
): Promise<ClusterDevices> {
  const d = await launchClusterDevices(opts)
  registerDir(d.dir)
  return {
    dir: d.dir,
    meta: d.meta,
    data: d.data,
    serverAddr: d.serverAddr,
    tlsOptions: d.tlsOptions,
    remove: () => undefined,
  }
}

export interface Cluster {
  dev: ClusterDevices
  /** agents[0] runs the server */
  agents: Agent[]
}

/**
 * Start `n` agents on `dev` (made when not given): agents 0..members-1 (default 1) as quorum
 * members (quorum_slot_nr=i; with one member, agent 0 is the server) first, together, then
 * the others in parallel.  `options` are extra -o mount options for every
 * agent; mountpoints are <dev.dir>/m0, m1, ...
 */
export async function startCluster(
  n: number,
  opts: {
    dev?: ClusterDevices
    options?: string
    metrics?: boolean
    members?: number
    /** network namespaces, agent by agent (undefined: this host's) */
    netns?: Array<string | undefined>
  } = {},
): Promise<Cluster> {
  const dev = opts.dev ?? (await makeClusterDevices({ members: opts.members }))
  const metricsAddr = opts.metrics ? '127.0.0.1:0' : undefined
  const c = new Launched(
    dev,
    numberedAgents(dev.dir, n, { logLevel: 'info', options: withTestFrontend(opts.options), metricsAddr }).map(
      (a, i) => ({
        ...a,
        netns: opts.netns?.[i],
      }),
    ),
    30_000,
    opts.members ?? 1,
  )
  await c.startOrThrow()
  return { dev, agents: c.agents.map(wrapAgent) }
}
