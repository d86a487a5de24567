/*
 * Real clusters for tests and benchmarks: one set of file-backed devices formatted with a
 * server address in quorum slot 0, the server agent (`-o quorum_slot_nr=0`) started first,
 * then the other agents, each a `scoutfs mount --foreground` child process with its own
 * FUSE mount.  Everything started here is stopped by stopAllAgents() (agent.ts).
 */
import { createServer } from 'node:net'
import { mkdtempSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { adminCall } from '../../node-agent/src/agent/admin.js'
import { BIN, registerDir, startAgent, type Agent, type Devices } from './agent.js'
import { sh } from './fuse-harness.js'

/** A port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer()
    s.once('error', rej)
    s.listen(0, '127.0.0.1', () => {
      const a = s.address()
      const port = typeof a === 'object' && a ? a.port : 0
      s.close(() => res(port))
    })
  })
}

export interface ClusterDevices extends Devices {
  /** the server's address (quorum slot 0) */
  serverAddr: string
}

/** Fresh devices formatted for a cluster: `slots` quorum slots, slot 0 at 127.0.0.1:<free port>. */
export async function makeClusterDevices(
  opts: { metaBytes?: number; dataBytes?: number; slots?: number } = {},
): Promise<ClusterDevices> {
  const dir = mkdtempSync(join(tmpdir(), 'scoutfs-c-'))
  registerDir(dir)
  const meta = join(dir, 'meta.img')
  const data = join(dir, 'data.img')
  writeFileSync(meta, '')
  writeFileSync(data, '')
  truncateSync(meta, opts.metaBytes ?? 1 << 30)
  truncateSync(data, opts.dataBytes ?? 2 * 1024 ** 3)
  const port = await freePort()
  const r = await sh(process.execPath, [
    BIN,
    'mkfs',
    '-Q',
    String(opts.slots ?? 3),
    '-Q',
    `0,127.0.0.1,${port}`,
    meta,
    data,
  ])
  if (r.code !== 0) throw new Error(`mkfs failed: ${r.stderr}`)
  return { dir, meta, data, serverAddr: `127.0.0.1:${port}`, remove: () => undefined }
}

export interface Cluster {
  dev: ClusterDevices
  /** agents[0] runs the server */
  agents: Agent[]
}

/**
 * Start `n` agents on `dev` (made when not given): agent 0 with quorum_slot_nr=0 (the
 * server) first, then the others in parallel.  `options` are extra -o mount options for every
 * agent; mountpoints are <dev.dir>/m0, m1, ...
 */
export async function startCluster(
  n: number,
  opts: { dev?: ClusterDevices; options?: string; metrics?: boolean } = {},
): Promise<Cluster> {
  const dev = opts.dev ?? (await makeClusterDevices())
  const o = (extra?: string): string | undefined => [extra, opts.options].filter(Boolean).join(',') || undefined
  const metricsAddr = opts.metrics ? '127.0.0.1:0' : undefined
  const first = await startAgent(dev, join(dev.dir, 'm0'), { options: o('quorum_slot_nr=0'), metricsAddr })
  const rest = await Promise.all(
    Array.from({ length: n - 1 }, (_, i) => startAgent(dev, join(dev.dir, `m${i + 1}`), { options: o(), metricsAddr })),
  )
  return { dev, agents: [first, ...rest] }
}

/** The admin socket's GET /status of the agent serving `mnt`. */
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

export function agentStatus(mnt: string): Promise<AgentStatus> {
  return adminCall(mnt, 'GET /status')
}
