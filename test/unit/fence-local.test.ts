/*
 * fence=local (node-agent/src/quorum/fence-local.ts) on real processes: a live target is
 * killed with SIGKILL and fence() resolves only once it is gone; a target that is gone already
 * (dead, a zombie, or its pid now another process) is confirmed without a signal; a target on
 * another host, without a pid, or that is this process is refused and nothing is killed.
 *
 * process.kill is watched while each test runs, so "nothing was signalled" is checked, not
 * assumed.  Every process a test starts is killed after it, whatever the test's outcome.
 */
import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { hostname } from 'node:os'
import { type FenceTarget, fenceAgent, processStartTime } from '../../node-agent/src/quorum/fence.js'
import { isFsError } from '../../node-agent/src/util/errors.js'
import { procState, running } from '../helpers/proc.js'

interface Started {
  child: ChildProcess
  pid: number
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>
}

const started: ChildProcess[] = []

async function start(cmd: string, args: string[], stdout: 'ignore' | 'pipe' = 'ignore'): Promise<Started> {
  const child = spawn(cmd, args, { stdio: ['ignore', stdout, 'ignore'] })
  started.push(child)
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  )
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', resolve)
    child.once('error', reject)
  })
  return { child, pid: child.pid as number, exited }
}

function target(pid: number, pidStart: number, extra: Partial<FenceTarget> = {}): FenceTarget {
  return { rid: 0x1a2b3c, reason: 'client_timeout', host: hostname(), pid, pidStart, addr: '127.0.0.1', ...extra }
}

describe('fence=local', function () {
  const realKill = process.kill
  /** every process.kill call with a signal other than 0, while a test runs */
  let signalled: Array<[number, string | number | undefined]> = []
  const logs: string[] = []
  const agent = fenceAgent({ method: 'local', timeoutMs: 5000, log: (m) => logs.push(m) })

  beforeEach(() => {
    signalled = []
    process.kill = ((pid: number, sig?: string | number) => {
      if (sig !== 0) signalled.push([pid, sig])
      return realKill.call(process, pid, sig)
    }) as typeof process.kill
  })

  afterEach(() => {
    process.kill = realKill
    for (const c of started.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
  })

  it('records a process start time, 0 for no process', async () => {
    assert.ok(processStartTime(process.pid) > 0)
    assert.equal(processStartTime(0), 0)
    assert.equal(processStartTime(-5), 0)
    const s = await start('sleep', ['600'])
    const t = processStartTime(s.pid)
    assert.ok(t >= processStartTime(process.pid), 'a child starts after its parent')
    s.child.kill('SIGKILL')
    await s.exited
    assert.equal(processStartTime(s.pid), 0)
  })

  it('kills a live target with SIGKILL and resolves once it is gone', async () => {
    const s = await start('sleep', ['600'])
    const pidStart = processStartTime(s.pid)
    assert.ok(pidStart > 0)
    await agent.fence(target(s.pid, pidStart))
    assert.equal(running(s.pid), false, 'the target no longer runs when fence() resolves')
    assert.deepEqual(signalled, [[s.pid, 'SIGKILL']])
    const how = await s.exited
    assert.equal(how.signal, 'SIGKILL')
  })

  it('confirms a target that is already dead without signalling anything', async () => {
    const s = await start('sleep', ['600'])
    const pidStart = processStartTime(s.pid)
    s.child.kill('SIGTERM')
    await s.exited
    assert.equal(running(s.pid), false)
    signalled = []
    await agent.fence(target(s.pid, pidStart))
    assert.deepEqual(signalled, [])
  })

  it('confirms a target whose pid is now another process, without killing that process', async () => {
    const s = await start('sleep', ['600'])
    const pidStart = processStartTime(s.pid)
    await agent.fence(target(s.pid, pidStart + 12345))
    assert.deepEqual(signalled, [])
    await new Promise((r) => setTimeout(r, 50))
    assert.equal(running(s.pid), true, 'the other process still runs')
    assert.equal(s.child.exitCode, null)
    assert.equal(s.child.signalCode, null)
    s.child.kill('SIGKILL')
    assert.equal((await s.exited).signal, 'SIGKILL')
  })

  it('confirms a zombie target without signalling it', async () => {
    // sh starts a short sleep in the background and becomes a long sleep, which never reaps it
    const parent = await start('sh', ['-c', 'sleep 0.05 & echo $!; exec sleep 600'], 'pipe')
    const zombie = await new Promise<number>((resolve, reject) => {
      parent.child.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim())))
      parent.child.once('exit', () => reject(new Error('the parent exited')))
    })
    const pidStart = processStartTime(zombie)
    for (let i = 0; i < 200 && procState(zombie) !== 'Z'; i++) await new Promise((r) => setTimeout(r, 10))
    assert.equal(procState(zombie), 'Z')
    assert.ok(pidStart > 0)
    await agent.fence(target(zombie, pidStart))
    assert.deepEqual(signalled, [])
  })

  it('refuses a target on another host (EHOSTUNREACH) and kills nothing', async () => {
    const s = await start('sleep', ['600'])
    await assert.rejects(
      agent.fence(target(s.pid, processStartTime(s.pid), { host: `not-${hostname()}` })),
      (e: unknown) => isFsError(e, 'EHOSTUNREACH') && /fence=command or fence=kubernetes/.test(e.message),
    )
    assert.deepEqual(signalled, [])
    assert.equal(running(s.pid), true)
  })

  it('refuses a target without a pid, and one that is this process (EINVAL)', async () => {
    await assert.rejects(agent.fence(target(0, 0)), (e: unknown) => isFsError(e, 'EINVAL'))
    await assert.rejects(agent.fence(target(process.pid, processStartTime(process.pid))), (e: unknown) =>
      isFsError(e, 'EINVAL'),
    )
    await assert.rejects(agent.fence(target(process.pid, 0)), (e: unknown) => isFsError(e, 'EINVAL'))
    assert.deepEqual(signalled, [])
  })

  it('is cancelled (ECANCELED) by an aborted signal and kills nothing', async () => {
    const s = await start('sleep', ['600'])
    const ac = new AbortController()
    ac.abort()
    await assert.rejects(agent.fence(target(s.pid, processStartTime(s.pid)), ac.signal), (e: unknown) =>
      isFsError(e, 'ECANCELED'),
    )
    assert.deepEqual(signalled, [])
    assert.equal(running(s.pid), true)
  })
})
