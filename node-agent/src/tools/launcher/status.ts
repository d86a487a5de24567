/*
 * A launched agent's GET /status on its admin socket, typed as the cluster contract gives it
 * (for tests and benchmarks that watch their agents).
 */
import { adminCall } from '../../agent/admin.js'

export interface AgentStatus {
  rid: string
  seq: number
  commits: number
  items: number
  dirtyItems: number
  metrics?: string
  server: boolean
  serverAddr: string
  locks: {
    held: number
    read: number
    write: number
    writeOnly: number
    requests: number
    grants: number
    invalidations: number
  }
  serverState?: {
    mounts: string[]
    logTrees: number
    finalized: number
    commits: number
    merges: number
    recovering: boolean
  }
}

/** The /status of the agent serving `mnt`. */
export function agentStatus(mnt: string): Promise<AgentStatus> {
  return adminCall<AgentStatus>(mnt, 'GET', '/status')
}
