/*
 * `scoutfs operator node`: what each node pod of a ScoutFilesystem runs (render.ts puts it in
 * the DaemonSet).  It reads the filesystem's node configuration (the ConfigMap, render.ts
 * NodeConfig), finds this node's quorum slot (none: a plain client), runs the agent
 * (`scoutfs mount --foreground`, with quorum_slot_nr, fence=kubernetes and TLS set from the
 * spec), publishes the agent's view every period in the node's status Lease (node-status.ts),
 * and answers the pod's probes: /healthz while the agent process runs, /readyz while it answers
 * on its admin socket.  SIGTERM stops the agent (it unmounts), publishes "not mounted" and exits;
 * if the agent exits by itself, so does this, with its exit code, and the kubelet restarts the pod.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { Kube } from './kube.js'
import type { Log } from './log.js'
import { publishNodeStatus, readAgent, type NodeStatus } from './node-status.js'
import type { NodeConfig } from './render.js'

/** The agent's mount options on `node`, from the filesystem's node configuration. */
export function agentMountOptions(c: NodeConfig, node: string): { slot: number; options: string } {
  const member = c.members.find((m) => m.node === node)
  const opts: string[] = []
  if (member) opts.push(`quorum_slot_nr=${member.slot}`, `quorum_heartbeat_timeout_ms=${c.heartbeatTimeoutMs}`)
  opts.push('fence=kubernetes', `fence_filesystem=${c.filesystem}`, `fence_namespace=${c.namespace}`)
  if (c.fenceTimeoutMs > 0) opts.push(`fence_timeout_ms=${c.fenceTimeoutMs}`)
  if (c.tlsDir) opts.push(`tls_dir=${c.tlsDir}`)
  else if (c.insecure) opts.push('insecure')
  opts.push(...c.mountOptions)
  return { slot: member ? member.slot : -1, options: opts.join(',') }
}

export function readNodeConfig(path: string): NodeConfig {
  const c = JSON.parse(readFileSync(path, 'utf8')) as NodeConfig
  if (typeof c.filesystem !== 'string' || !Array.isArray(c.members) || typeof c.mountpoint !== 'string')
    throw new Error(`${path}: not a scoutfs node configuration (filesystem, members, mountpoint)`)
  return c
}

export interface NodeRunOptions {
  config: NodeConfig
  node: string
  /** the scoutfs program (bin/scoutfs) */
  scoutfsBin: string
  periodMs: number
  healthPort: number
  kube: Kube
  log: Log
}

/** Publish the agent of `mountpoint`'s view every `periodMs` until stop() (the node side without the agent). */
export class NodeStatusPublisher {
  private timer: NodeJS.Timeout | undefined
  private stopped = false
  last: NodeStatus | undefined

  constructor(
    private readonly kube: Kube,
    private readonly c: Pick<NodeConfig, 'filesystem' | 'namespace' | 'mountpoint'>,
    private readonly node: string,
    private readonly slot: number,
    private readonly periodMs: number,
    private readonly log: Log,
  ) {}

  start(): void {
    const tick = async (): Promise<void> => {
      await this.publishOnce()
      if (!this.stopped) this.timer = setTimeout(() => void tick(), this.periodMs)
    }
    void tick()
  }

  async publishOnce(override?: NodeStatus): Promise<void> {
    const st = override ?? (await readAgent(this.node, this.slot, this.c.mountpoint))
    this.last = st
    try {
      await publishNodeStatus(this.kube, this.c.filesystem, this.c.namespace, st, this.periodMs)
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'node status not published')
    }
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    await this.publishOnce({ node: this.node, mounted: false, slot: this.slot, error: 'stopped' })
  }
}

export async function runNode(o: NodeRunOptions): Promise<number> {
  const { config: c, node, log } = o
  const { slot, options } = agentMountOptions(c, node)
  log.info({ filesystem: `${c.namespace}/${c.filesystem}`, node, slot, options }, 'starting the agent')
  const agent: ChildProcess = spawn(
    o.scoutfsBin,
    ['mount', '--foreground', '--metadev', c.metadev, c.datadev, c.mountpoint, '-o', options],
    { stdio: ['ignore', 'inherit', 'inherit'] },
  )
  const publisher = new NodeStatusPublisher(o.kube, c, node, slot, o.periodMs, log)
  publisher.start()
  let running = true
  const health: Server = createServer((req, res) => {
    const ok =
      req.url === '/healthz' ? running : req.url === '/readyz' ? running && publisher.last?.mounted === true : false
    res.writeHead(ok ? 200 : 503).end(ok ? 'ok\n' : 'not ready\n')
  })
  health.listen(o.healthPort)
  const exited = new Promise<number>((resolve) =>
    agent.on('exit', (code, signal) => {
      running = false
      log.info({ code, signal }, 'agent exited')
      resolve(code ?? 1)
    }),
  )
  const onTerm = (): void => {
    agent.kill('SIGTERM')
  }
  process.once('SIGTERM', onTerm)
  process.once('SIGINT', onTerm)
  const code = await exited
  await publisher.stop()
  health.close()
  return code
}
