/*
 * A launched agent's GET /status on its admin socket (for tests and benchmarks that watch
 * their agents); the type and its check are the admin API's (agent/admin-api.ts).
 */
import { adminCall } from '../../agent/admin.js'
import type { AgentStatus } from '../../agent/admin-api.js'

export type { AgentStatus }

/** The /status of the agent serving `mnt`. */
export function agentStatus(mnt: string): Promise<AgentStatus> {
  return adminCall(mnt, 'GET /status')
}
