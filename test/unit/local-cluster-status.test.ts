/*
 * The main job's status view (scripts/local-cluster-status.ts) against /status and /quorum
 * replies of the shapes the agent gives: defensive parsing, the table with its quorum header
 * (leader slot, term), per-agent slot, quorum role and SERVES, the server line, a dead leader
 * and the election after it, log lines, sizes, and fetchStatus/fetchQuorum over a real admin
 * socket (including an agent that never answers).
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { AdminServer, adminSocketPath } from '../../node-agent/src/agent/admin.js'
import { parseSize } from '../../scripts/local-cluster.js'
import {
  fetchQuorum,
  fetchStatus,
  formatLogLine,
  parseQuorum,
  parseStatus,
  quorumSummary,
  renderTable,
  type AgentStatus,
  type AgentView,
  type ClusterInfo,
  type QuorumState,
} from '../../scripts/local-cluster-status.js'

const leaderStatus = {
  rid: '1a2b',
  seq: 17,
  commits: 16,
  items: 420,
  dirtyItems: 3,
  metrics: '127.0.0.1:9561',
  server: true,
  serverAddr: '127.0.0.1:7151',
  locks: { held: 4, read: 3, write: 1, writeOnly: 0, requests: 40, grants: 40, invalidations: 2 },
  serverState: {
    mounts: ['1a2b', '00000c4d', '9999'],
    logTrees: 3,
    finalized: 1,
    commits: 30,
    merges: 5,
    reclaims: 1,
    recovering: false,
  },
}
const followerStatus = {
  ...leaderStatus,
  rid: '3c4d',
  server: false,
  metrics: '127.0.0.1:9560',
  locks: { held: 2, read: 2, write: 0, writeOnly: 0, requests: 7, grants: 7, invalidations: 1 },
  serverState: undefined,
}
/** GET /quorum of a member: follower of slot 1 in term 3 unless told otherwise */
const quorumReply = (slot: number, o: Partial<QuorumState> = {}): Record<string, unknown> => ({
  slot,
  term: 3,
  leaderSlot: 1,
  role: 'follower',
  serving: false,
  heartbeatTimeoutMs: 2000,
  majority: 2,
  slots: [0, 1, 2],
  elections: 0,
  elected: 0,
  fenceRequests: 0,
  fencesConfirmed: 0,
  fenceErrors: 0,
  ...o,
})
const info: ClusterInfo = {
  runDir: '/x/run',
  fsid: 'abcd',
  slotAddrs: ['127.0.0.1:7150', '127.0.0.1:7151', '127.0.0.1:7152'],
}

function view(i: number, status: AgentStatus | undefined, quorum?: Record<string, unknown>): AgentView {
  return {
    name: `agent${i}`,
    mountpoint: `/x/run/mnt${i}`,
    slot: i,
    pid: 100 + i,
    state: status ? 'up' : 'down',
    status,
    quorum: quorum && parseQuorum(quorum),
    metricsAddr: `127.0.0.1:${9560 + i}`,
    logTail: [],
  }
}

const leader = (): AgentView =>
  view(1, parseStatus(leaderStatus), quorumReply(1, { role: 'leader', serving: true, elected: 1 }))
const follower = (i: number, o: Partial<QuorumState> = {}): AgentView =>
  view(i, parseStatus({ ...followerStatus, rid: `${i}c4d` }), quorumReply(i, o))
/** the table's row of `name`, split into its cells */
const rowOf = (lines: string[], name: string): string[] => lines.find((l) => l.startsWith(name + ' '))!.split(/\s+/)
/** the header line's quorum part */
const leaderPart = (lines: string[]): string => /fsid abcd {2}(.*?) {2}\d\/\d agents up/.exec(lines[0]!)![1]!

describe('local cluster status view', () => {
  it('parses the contract shapes and drops fields of the wrong type', () => {
    const s = parseStatus(leaderStatus)
    assert.equal(s.rid, '1a2b')
    assert.equal(s.locks?.writeOnly, 0)
    assert.deepEqual(s.serverState?.mounts, ['1a2b', '00000c4d', '9999'])
    assert.equal(s.serverState?.reclaims, 1)
    assert.deepEqual(parseStatus('nope'), {})
    const bad = parseStatus({ rid: 7, seq: '3', locks: [], serverState: { mounts: [1, 'a'], recovering: 'no' } })
    assert.equal(bad.rid, undefined)
    assert.equal(bad.seq, undefined)
    assert.equal(bad.locks, undefined)
    assert.deepEqual(bad.serverState?.mounts, ['a'])
    assert.equal(bad.serverState?.recovering, undefined)

    const q = parseQuorum(
      quorumReply(2, { fencing: { rid: '1a2b', reason: 'quorum_block_leader', attempts: 2, sinceMs: 1500 } }),
    )
    assert.deepEqual(
      [q.slot, q.term, q.leaderSlot, q.role, q.serving, q.heartbeatTimeoutMs, q.majority],
      [2, 3, 1, 'follower', false, 2000, 2],
    )
    assert.deepEqual(q.fencing, {
      rid: '1a2b',
      reason: 'quorum_block_leader',
      attempts: 2,
      sinceMs: 1500,
      error: undefined,
    })
    assert.deepEqual(parseQuorum([]), {})
    const badQ = parseQuorum({ slot: '1', term: 3, role: 4, serving: 'yes', fencing: 'x' })
    assert.deepEqual(
      [badQ.slot, badQ.term, badQ.role, badQ.serving, badQ.fencing],
      [undefined, 3, undefined, undefined, undefined],
    )
  })

  it("shows the leader slot and term, each agent's slot, quorum role and SERVES, and the server line", () => {
    const down = view(2, undefined)
    down.error = 'no admin socket'
    down.logTail = ['07:00:00 ERROR lost the server']
    const lines = renderTable(info, [follower(0), leader(), down], new Date(0))
    const text = lines.join('\n')
    assert.equal(leaderPart(lines), 'leader: slot 1 (agent1)  term 3')
    assert.match(lines[0]!, /2\/3 agents up/)
    assert.deepEqual(lines[1]!.split(/\s+/).slice(2, 6), ['RID', 'SLOT', 'QUORUM', 'SERVES'])
    assert.deepEqual(rowOf(lines, 'agent1').slice(2, 14), [
      '1a2b',
      '1',
      'leader',
      'yes',
      '101',
      'up',
      '17',
      '16',
      '3/1/0',
      '40/2',
      '420',
      'http://127.0.0.1:9561/metrics',
    ])
    assert.deepEqual(rowOf(lines, 'agent0').slice(2, 8), ['0c4d', '0', 'follower', 'no', '100', 'up'])
    assert.deepEqual(rowOf(lines, 'agent0').slice(10, 12), ['2/0/0', '7/1'])
    assert.deepEqual(rowOf(lines, 'agent2').slice(2, 8), ['-', '2', '-', '-', '102', 'down'])
    assert.match(
      text,
      /\nserver \(agent1, slot 1 at 127\.0\.0\.1:7151\): mounts 3 \(agent1 agent0 rid 9999\) {2}log trees 3 {2}finalized 1 {2}merges 5 {2}commits 30 {2}reclaims 1 {2}recovering no\n/,
    )
    assert.match(text, /agent2: down \(no admin socket\); its log ends:\n {2}07:00:00 ERROR lost the server/)
    assert.doesNotMatch(text, /warning|fencing/)
  })

  it('follows a killed leader: shown dead while the others still name it, then the election and the new leader', () => {
    const dead = (): AgentView => {
      const a = view(1, undefined)
      a.state = 'exited'
      a.exit = 'signal SIGKILL'
      a.logTail = ['07:00:00 INFO serving as quorum leader term=3']
      return a
    }
    // the followers have not missed enough heartbeats yet: they still name slot 1
    let lines = renderTable(info, [follower(0), dead(), follower(2)], new Date(0))
    assert.equal(leaderPart(lines), 'leader: slot 1 (agent1, exited (signal SIGKILL))  term 3')
    assert.match(lines[0]!, /2\/3 agents up/)
    assert.deepEqual(rowOf(lines, 'agent1').slice(2, 9), ['-', '1', '-', '-', '101', 'exited', '(signal'])
    assert.match(lines.join('\n'), /\nserver: none serving \(the leader agent1 is exited \(signal SIGKILL\); the other/)
    assert.match(lines.join('\n'), /agent1: exited \(signal SIGKILL\); its log ends:\n {2}07:00:00 INFO serving/)

    // agent2 stands in term 4; agent0 has not heard of it yet: the higher term is the news
    lines = renderTable(
      info,
      [follower(0), dead(), follower(2, { role: 'candidate', term: 4, leaderSlot: -1 })],
      new Date(0),
    )
    assert.equal(leaderPart(lines), 'leader: none elected  term 4')
    assert.deepEqual(rowOf(lines, 'agent2').slice(3, 6), ['2', 'candidate', 'no'])
    assert.match(lines.join('\n'), /\nserver: none serving \(no leader is elected yet\)/)

    // elected, fencing the dead leader before it serves
    const fencing = { rid: '1a2b', reason: 'quorum_block_leader', attempts: 1, sinceMs: 300, error: 'still alive' }
    lines = renderTable(
      info,
      [
        follower(0, { term: 4, leaderSlot: 2 }),
        dead(),
        follower(2, { role: 'leader', term: 4, leaderSlot: 2, fencing }),
      ],
      new Date(0),
    )
    assert.equal(leaderPart(lines), 'leader: slot 2 (agent2)  term 4')
    assert.deepEqual(rowOf(lines, 'agent2').slice(3, 6), ['2', 'leader', 'fencing'])
    assert.match(lines.join('\n'), /\nserver: none serving \(the leader agent2 fences before it serves\)/)
    assert.match(
      lines.join('\n'),
      /\nagent2: fencing rid 1a2b \(quorum_block_leader\) before it serves: attempt 1, 0\.3 s, last error: still alive\n/,
    )

    // serving
    const now = follower(2, { role: 'leader', term: 4, leaderSlot: 2, serving: true })
    now.status = parseStatus({
      ...leaderStatus,
      rid: '2c4d',
      serverState: { ...leaderStatus.serverState, mounts: ['0c4d', '2c4d'] },
    })
    lines = renderTable(info, [follower(0, { term: 4, leaderSlot: 2 }), dead(), now], new Date(0))
    assert.equal(leaderPart(lines), 'leader: slot 2 (agent2)  term 4')
    assert.deepEqual(rowOf(lines, 'agent2').slice(3, 6), ['2', 'leader', 'yes'])
    assert.deepEqual(rowOf(lines, 'agent0').slice(3, 6), ['0', 'follower', 'no'])
    assert.match(lines.join('\n'), /\nserver \(agent2, slot 2 at 127\.0\.0\.1:7152\): mounts 2 \(agent0 agent2\)/)
    assert.doesNotMatch(lines.join('\n'), /fencing|warning/)

    // and that leader killed too: one member of three is left, no majority
    const second = dead()
    second.name = 'agent2'
    second.slot = 2
    lines = renderTable(info, [follower(0, { term: 4, leaderSlot: 2 }), dead(), second], new Date(0))
    assert.equal(leaderPart(lines), 'leader: slot 2 (agent2, exited (signal SIGKILL))  term 4')
    assert.match(
      lines.join('\n'),
      /\nserver: none serving \(the leader agent2 is exited \(signal SIGKILL\); 1 of 3 members left, no majority \(2\): no leader can be elected\)/,
    )
  })

  it('takes leader and term from the highest term, a known leader before none, and only from agents up', () => {
    assert.equal(quorumSummary([view(0, undefined), view(1, undefined)]), undefined)
    const stale = follower(0, { term: 5, leaderSlot: 0, role: 'leader', serving: true })
    stale.state = 'down' // not answering /status: its quorum reply does not count
    let q = quorumSummary([stale, follower(1, { term: 3, leaderSlot: -1 }), follower(2, { term: 3, leaderSlot: 2 })])
    assert.deepEqual([q?.term, q?.leaderSlot, q?.leader?.name], [3, 2, 'agent2'])
    q = quorumSummary([follower(0, { term: 4, leaderSlot: -1 }), follower(1, { term: 3, leaderSlot: 1 })])
    assert.deepEqual([q?.term, q?.leaderSlot, q?.leader], [4, -1, undefined])
    assert.equal(
      leaderPart(renderTable(info, [view(0, {}), view(1, {})], new Date(0))),
      'quorum: no agent answers GET /quorum',
    )
  })

  it('says so when several agents claim the server, and when the server reports no state', () => {
    const lines = renderTable(
      info,
      [view(0, { server: true }, quorumReply(0, { serving: true })), view(1, { server: true })],
      new Date(0),
    ).join('\n')
    assert.match(lines, /warning: agent0, agent1 all report running the server/)
    assert.match(lines, /server \(agent0, slot 0 at 127\.0\.0\.1:7150\): no server state \(not reported\)/)
    assert.match(lines, /agent1 +\/x\/run\/mnt1 +- +1 +- +yes/)
  })

  it('formats pino lines and leaves other lines alone', () => {
    const l = formatLogLine(JSON.stringify({ level: 50, time: 0, pid: 1, mountpoint: '/m', msg: 'boom', seq: 3 }))
    assert.match(l, /^\d\d:\d\d:\d\d ERROR boom seq=3$/)
    assert.equal(formatLogLine('Error: x'), 'Error: x')
    assert.equal(formatLogLine('{"no":"msg"}'), '{"no":"msg"}')
  })

  it('parses sizes the way truncate does', () => {
    assert.equal(parseSize('1G'), 1 << 30)
    assert.equal(parseSize('512M'), 512 << 20)
    assert.equal(parseSize('4GiB'), 4 * 2 ** 30)
    assert.equal(parseSize('123'), 123)
    for (const bad of ['', '0', '1X', '-1G', '1.5G']) assert.equal(parseSize(bad), undefined, bad)
  })

  it('fetches /status and /quorum over the admin socket and gives up on an agent that does not answer', async () => {
    const mnt = `/tmp/scoutfs-lc-test-${randomBytes(6).toString('hex')}`
    let hang = false
    const answer = (v: unknown): Promise<unknown> => (hang ? new Promise<never>(() => undefined) : Promise.resolve(v))
    const admin = await AdminServer.listen(adminSocketPath(mnt), {
      'GET /status': () => answer(leaderStatus),
      'GET /quorum': () => answer(quorumReply(1, { role: 'leader', serving: true, term: 7 })),
    })
    try {
      assert.equal((await fetchStatus(mnt, 2000)).serverState?.merges, 5)
      const q = await fetchQuorum(mnt, 2000)
      assert.deepEqual([q.slot, q.role, q.serving, q.term], [1, 'leader', true, 7])
      hang = true
      await assert.rejects(fetchStatus(mnt, 200), /no \/status reply within 200 ms/)
      await assert.rejects(fetchQuorum(mnt, 200), /no \/quorum reply within 200 ms/)
    } finally {
      await admin.close()
    }
    await assert.rejects(fetchStatus(mnt, 200), /no admin socket/)
    await assert.rejects(fetchQuorum(mnt, 200), /no admin socket/)
  })
})
