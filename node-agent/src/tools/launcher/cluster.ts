/*
 * A launched cluster: N agents on one set of devices formatted with addresses for the first
 * M quorum slots (M `members`, default 1).  Agent i < M mounts with quorum_slot_nr=i; the
 * members elect the server among themselves (with one member, agent 0 serves as soon as it
 * mounts).  The members start together (a mount needs an elected server, and electing needs
 * a majority), the others (plain clients) together once the members have mounted.  Stopping
 * goes the other way: the clients together, then the members that do not serve, and the
 * serving member once each of those has left or waits for it (the server holds the last
 * members' farewells until they can all leave together: server/farewell-gate.ts).  kill()
 * SIGKILLs every agent and forces every mount away.
 */
import { join } from 'node:path'
import { adminCall } from '../../agent/admin.js'
import { FsError } from '../../util/errors.js'
import { AgentProcess, type AgentSpec, type StopResult, type WaitResult } from './agent-process.js'
import { makeDevices, type Devices, type DevicePaths } from './devices.js'

/** The mount option that makes agent `i` quorum member i. */
export function memberOption(i: number): string {
  return `quorum_slot_nr=${i}`
}

/** `extra` options joined to `options`; undefined when there are none. */
export function joinOptions(...opts: Array<string | undefined>): string | undefined {
  return opts.filter(Boolean).join(',') || undefined
}

export type AgentSettings = Omit<AgentSpec, 'meta' | 'data'>

/**
 * Fresh devices in a temporary directory formatted for a cluster: `members` slots (default 1)
 * with addresses at free ports.
 */
export function makeClusterDevices(
  o: {
    metaBytes?: number
    dataBytes?: number
    slots?: number
    members?: number
    /** the members' hosts, slot by slot (default 127.0.0.1) */
    memberHosts?: string[]
    prefix?: string
  } = {},
): Promise<Devices & { serverAddr: string }> {
  return makeDevices({
    prefix: o.prefix ?? 'scoutfs-c-',
    metaBytes: o.metaBytes ?? 1 << 30,
    dataBytes: o.dataBytes ?? 2 * 1024 ** 3,
    quorumSlots: Math.max(o.slots ?? 3, o.members ?? 1),
    serverPort: 0,
    members: o.members,
    memberHosts: o.memberHosts,
  }) as Promise<Devices & { serverAddr: string }>
}

export type StartResult = WaitResult | 'not started'

export interface StartHooks {
  /** checked before each start and while waiting: true stops the start */
  aborted?: () => boolean
  /** right after an agent was spawned */
  onSpawn?: (a: AgentProcess) => void
  /** every JSON log line of a starting agent but its "mounted" */
  onLine?: (a: AgentProcess, v: Record<string, unknown>) => void
  /** an agent's wait ended (the cluster goes on only once this returns) */
  onResult?: (a: AgentProcess, r: WaitResult) => void | Promise<void>
}

/** `D`: what the caller keeps about the devices (a Devices with its directory, say). */
export class Cluster<D extends DevicePaths & { tlsOptions?: string } = DevicePaths> {
  readonly agents: AgentProcess[]

  /** `agents[i]` for i < `members` are quorum members: memberOption(i) is added to their options. */
  constructor(
    readonly dev: D,
    agents: AgentSettings[],
    readonly mountTimeoutMs = 60_000,
    readonly members = 1,
  ) {
    if (!agents.length) throw new FsError('EINVAL', 'a cluster needs at least one agent')
    if (members < 1 || members > agents.length)
      throw new FsError('EINVAL', `${members} quorum members for ${agents.length} agents`)
    this.agents = agents.map(
      (s, i) =>
        new AgentProcess({
          ...s,
          meta: dev.meta,
          data: dev.data,
          options: joinOptions(i < members ? memberOption(i) : undefined, s.options, dev.tlsOptions),
        }),
    )
  }

  /** agent 0: the server while it is the only member (the members elect one otherwise) */
  get server(): AgentProcess {
    return this.agents[0]!
  }

  /** the quorum members */
  get memberAgents(): AgentProcess[] {
    return this.agents.slice(0, this.members)
  }

  /** the plain clients (no quorum slot) */
  get clients(): AgentProcess[] {
    return this.agents.slice(this.members)
  }

  /** The server first; once it serves, the clients together.  Each agent's result, in order. */
  async start(h: StartHooks = {}): Promise<StartResult[]> {
    const results: StartResult[] = this.agents.map(() => 'not started')
    const one = async (i: number): Promise<void> => {
      const a = this.agents[i]!
      await a.start()
      h.onSpawn?.(a)
      const r = await a.waitMounted({
        timeoutMs: this.mountTimeoutMs,
        aborted: h.aborted,
        onLine: h.onLine && ((v) => h.onLine!(a, v)),
      })
      results[i] = r
      await h.onResult?.(a, r)
    }
    if (h.aborted?.()) return results
    await Promise.all(this.memberAgents.map((_, i) => one(i)))
    if (results.slice(0, this.members).some((r) => r !== 'mounted') || h.aborted?.()) return results
    await Promise.all(this.clients.map((_, i) => one(this.members + i)))
    return results
  }

  /** start(), and on any failure kill every agent and throw with the failed agent's log. */
  async startOrThrow(): Promise<void> {
    let results: StartResult[]
    try {
      results = await this.start()
    } catch (e) {
      await this.kill()
      throw e
    }
    const bad = results.findIndex((r) => r !== 'mounted')
    if (bad < 0) return
    await this.kill()
    const a = this.agents[bad]!
    throw new FsError(
      results[bad] === 'timeout' ? 'ETIMEDOUT' : 'EIO',
      `agent ${bad} (${a.mnt}) ${results[bad] === 'timeout' ? `did not mount within ${this.mountTimeoutMs / 1000} s` : results[bad]}:\n${a.log()}`,
    )
  }

  /**
   * Stop the live agents: the clients together, then the members (stopServingLast), each
   * SIGTERMed and given `timeoutMs`.  `onGroup` hears of each group before it is stopped,
   * `onStopped` of its results.
   */
  async stop(timeoutMs: number, h: StopHooks = {}): Promise<StopResults> {
    return [
      ...(await stopTogether(this.clients, timeoutMs, h)),
      ...(await stopServingLast(this.memberAgents, timeoutMs, h)),
    ]
  }

  /** The member serving now, by its admin socket (undefined if none answers that it is). */
  leader(): Promise<AgentProcess | undefined> {
    return servingAgent(this.memberAgents)
  }

  /** SIGKILL every agent and force every mount away. */
  async kill(): Promise<void> {
    await Promise.all(this.agents.map((a) => a.kill().catch(() => undefined)))
  }
}

export type StopResults = Array<{ agent: AgentProcess; result: StopResult }>

export interface StopHooks {
  onGroup?: (agents: AgentProcess[]) => void
  onStopped?: (results: StopResults) => void
}

/** Stop the live ones of `agents` together (SIGTERM, then `timeoutMs` each). */
export async function stopTogether(agents: AgentProcess[], timeoutMs: number, h: StopHooks = {}): Promise<StopResults> {
  const live = agents.filter((a) => a.running)
  if (!live.length) return []
  h.onGroup?.(live)
  const results = await Promise.all(live.map(async (agent) => ({ agent, result: await agent.stop(timeoutMs) })))
  h.onStopped?.(results)
  return results
}

/** The agent among `agents` that serves now, by its admin socket (undefined if none says so). */
export async function servingAgent(agents: AgentProcess[]): Promise<AgentProcess | undefined> {
  const views = await Promise.all(
    agents.map((a) =>
      a.running
        ? Promise.race([
            adminCall(a.mnt, 'GET /quorum').catch(() => undefined),
            new Promise<undefined>((r) => void setTimeout(r, 2000)),
          ])
        : undefined,
    ),
  )
  const i = views.findIndex((v) => v?.serving)
  return i < 0 ? undefined : agents[i]
}

/**
 * Stop quorum members cleanly: those that do not serve together, the serving one last (their
 * last commits and farewells need it) but without waiting for them all to exit: the last
 * members' farewells wait for its own (server/farewell-gate.ts), so it is stopped once each
 * of the others has left or waits on its farewell.
 */
export async function stopServingLast(
  agents: AgentProcess[],
  timeoutMs: number,
  h: StopHooks = {},
): Promise<StopResults> {
  const serving = await servingAgent(agents)
  const others = agents.filter((a) => a !== serving && a.running)
  const stopping = stopTogether(others, timeoutMs, h)
  let last: StopResults = []
  if (serving?.running) {
    await othersLeftOrHeld(serving.mnt, () => others.filter((a) => a.running).length, timeoutMs)
    last = await stopTogether([serving], timeoutMs, h)
  }
  return [...(await stopping), ...last]
}

/**
 * Wait until the agents stopping beside the server mounted at `serverMnt` have all left or
 * wait on their farewell (the server's GET /status lists the farewells it holds): `running()`
 * counts those still running.  Gives up after `timeoutMs` (the caller stops the server anyway).
 */
export async function othersLeftOrHeld(serverMnt: string, running: () => number, timeoutMs: number): Promise<void> {
  const until = Date.now() + timeoutMs
  while (Date.now() < until) {
    const n = running()
    if (n === 0) return
    const st = await adminCall(serverMnt, 'GET /status').catch(() => undefined)
    if (!st) return // the server's agent is gone or not answering: nothing to wait for
    if ((st.serverState?.farewellsHeld.length ?? 0) >= n) return
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Settings of `n` agents mounted at DIR/m0, m1, ... (test and benchmark clusters). */
export function numberedAgents(dir: string, n: number, s: Omit<AgentSettings, 'mnt'> = {}): AgentSettings[] {
  return Array.from({ length: n }, (_, i) => ({ ...s, mnt: join(dir, `m${i}`) }))
}
