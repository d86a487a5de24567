/*
 * The main job's status view (scripts/local-cluster-status.ts) against /status replies of the
 * shape in the cluster contract: defensive parsing, the table and its server line, log lines,
 * sizes, and fetchStatus over a real admin socket (including an agent that never answers).
 */
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { AdminServer, adminSocketPath } from '../../node-agent/src/agent/admin.js'
import { parseSize } from '../../scripts/local-cluster.js'
import {
  fetchStatus,
  formatLogLine,
  parseStatus,
  renderTable,
  type AgentStatus,
  type AgentView,
} from '../../scripts/local-cluster-status.js'

const serverStatus = {
  rid: '1a2b',
  seq: 17,
  commits: 16,
  items: 420,
  dirtyItems: 3,
  metrics: '127.0.0.1:9560',
  server: true,
  serverAddr: '127.0.0.1:7150',
  locks: { held: 4, read: 3, write: 1, writeOnly: 0, requests: 40, grants: 40, invalidations: 2 },
  serverState: {
    mounts: ['1a2b', '00003c4d', '9999'],
    logTrees: 3,
    finalized: 1,
    commits: 30,
    merges: 5,
    recovering: false,
  },
}
const clientStatus = {
  ...serverStatus,
  rid: '3c4d',
  server: false,
  metrics: '127.0.0.1:9561',
  locks: { held: 2, read: 2, write: 0, writeOnly: 0, requests: 7, grants: 7, invalidations: 1 },
  serverState: undefined,
}

function view(name: string, role: 'server' | 'client', status: AgentStatus | undefined, i: number): AgentView {
  return {
    name,
    mountpoint: `/x/run/mnt${i}`,
    role,
    pid: 100 + i,
    state: status ? 'up' : 'down',
    status,
    metricsAddr: `127.0.0.1:${9560 + i}`,
    logTail: [],
  }
}

describe('local cluster status view', () => {
  it('parses the contract shape and drops fields of the wrong type', () => {
    const s = parseStatus(serverStatus)
    assert.equal(s.rid, '1a2b')
    assert.equal(s.locks?.writeOnly, 0)
    assert.deepEqual(s.serverState?.mounts, ['1a2b', '00003c4d', '9999'])
    assert.deepEqual(parseStatus('nope'), {})
    const bad = parseStatus({ rid: 7, seq: '3', locks: [], serverState: { mounts: [1, 'a'], recovering: 'no' } })
    assert.equal(bad.rid, undefined)
    assert.equal(bad.seq, undefined)
    assert.equal(bad.locks, undefined)
    assert.deepEqual(bad.serverState?.mounts, ['a'])
    assert.equal(bad.serverState?.recovering, undefined)
  })

  it('renders rows, the server line (rids named by agent) and the log tail of a down agent', () => {
    const down = view('agent2', 'client', undefined, 2)
    down.error = 'no admin socket'
    down.logTail = ['07:00:00 ERROR lost the server']
    const lines = renderTable(
      { runDir: '/x/run', fsid: 'abcd', serverAddr: '127.0.0.1:7150' },
      [
        view('agent0', 'server', parseStatus(serverStatus), 0),
        view('agent1', 'client', parseStatus(clientStatus), 1),
        down,
      ],
      new Date(0),
    )
    const text = lines.join('\n')
    const row = (name: string): string[] => lines.find((l) => l.startsWith(name + ' '))!.split(/\s+/)
    assert.deepEqual(row('agent0').slice(2, 12), [
      '1a2b',
      'server',
      '100',
      'up',
      '17',
      '16',
      '3/1/0',
      '40/2',
      '420',
      'http://127.0.0.1:9560/metrics',
    ])
    assert.deepEqual(row('agent1').slice(3, 4), ['client'])
    assert.deepEqual(row('agent1').slice(8, 10), ['2/0/0', '7/1'])
    assert.deepEqual(row('agent2').slice(3, 6), ['client', '102', 'down'])
    assert.match(
      text,
      /server \(agent0\): mounts 3 \(agent0 agent1 rid 9999\) {2}log trees 3 {2}finalized 1 {2}merges 5/,
    )
    assert.match(text, /recovering no/)
    assert.match(text, /agent2: down \(no admin socket\); its log ends:\n {2}07:00:00 ERROR lost the server/)
    assert.match(lines[0]!, /2\/3 agents up/)
    assert.doesNotMatch(text, /warning/)
  })

  it('says so when several agents claim the server, or none reports server state', () => {
    const lines = renderTable(
      { runDir: '/x/run', fsid: 'abcd', serverAddr: '127.0.0.1:7150' },
      [view('agent0', 'server', { server: true }, 0), view('agent1', 'client', { server: true }, 1)],
      new Date(0),
    ).join('\n')
    assert.match(lines, /warning: agent0, agent1 all report running the server/)
    assert.match(lines, /server: no server state \(not reported\)/)
    assert.match(lines, /agent1 +\/x\/run\/mnt1 +- +server/)
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

  it('fetches /status over the admin socket and gives up on an agent that does not answer', async () => {
    const mnt = `/tmp/scoutfs-lc-test-${randomBytes(6).toString('hex')}`
    let hang = false
    const admin = await AdminServer.listen(adminSocketPath(mnt), {
      'GET /status': () => (hang ? new Promise<never>(() => undefined) : Promise.resolve(serverStatus)),
    })
    try {
      assert.equal((await fetchStatus(mnt, 2000)).serverState?.merges, 5)
      hang = true
      await assert.rejects(fetchStatus(mnt, 200), /no \/status reply within 200 ms/)
    } finally {
      await admin.close()
    }
    await assert.rejects(fetchStatus(mnt, 200), /no admin socket/)
  })
})
