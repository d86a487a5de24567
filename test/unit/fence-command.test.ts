/*
 * fence=command (node-agent/src/quorum/fence-command.ts) with real shell commands: the
 * request reaches the command in its environment; exit 0 confirms; failures are retried and
 * then reported (EIO, with the command's stderr); a command that hangs is killed with its
 * whole process group (ETIMEDOUT); an abort kills it too (ECANCELED).  Every process a test
 * starts is killed after it, whatever the test's outcome.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type FenceTarget, fenceAgent } from '../../node-agent/src/quorum/fence.js'
import { isFsError } from '../../node-agent/src/util/errors.js'
import { running } from '../helpers/proc.js'

const target: FenceTarget = {
  rid: 0xabcd,
  reason: 'client_timeout',
  host: 'node-7',
  pid: 4242,
  pidStart: 987654,
  addr: '10.1.2.3',
  slot: 2,
}

async function until(what: string, ok: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms
  while (!ok()) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

/** the pids written one per line into `file` (none if it does not exist) */
function pidsIn(file: string): number[] {
  try {
    return readFileSync(file, 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map(Number)
  } catch {
    return []
  }
}

describe('fence=command', function () {
  let dir = ''
  /** files the commands write the pids of what they start into; all killed after each test */
  let pidFiles: string[] = []
  let logs: Array<{ msg: string; fields?: Record<string, unknown> }> = []
  const log = (msg: string, fields?: Record<string, unknown>): void => void logs.push({ msg, fields })

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'scoutfs-fence-'))
    pidFiles = []
    logs = []
  })

  afterEach(() => {
    // each pid, and its process group (a command's shell leads one: $$ is its group id)
    for (const f of pidFiles)
      for (const pid of pidsIn(f))
        for (const p of [-pid, pid]) {
          try {
            process.kill(p, 'SIGKILL')
          } catch {
            // gone
          }
        }
    rmSync(dir, { recursive: true, force: true })
  })

  it('passes the request in the environment, with the parent environment, and exit 0 confirms', async () => {
    const out = join(dir, 'env')
    process.env.SCOUTFS_FENCE_TEST_PARENT = 'inherited'
    try {
      const agent = fenceAgent({ method: 'command', command: `env > '${out}'`, log })
      await agent.fence(target)
    } finally {
      delete process.env.SCOUTFS_FENCE_TEST_PARENT
    }
    const env = new Map(
      readFileSync(out, 'utf8')
        .split('\n')
        .filter((l) => l.includes('='))
        .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)] as const),
    )
    assert.equal(env.get('SCOUTFS_FENCED_REQ_RID'), '000000000000abcd')
    assert.equal(env.get('SCOUTFS_FENCED_REQ_IP'), '10.1.2.3')
    assert.equal(env.get('SCOUTFS_FENCED_REQ_HOST'), 'node-7')
    assert.equal(env.get('SCOUTFS_FENCED_REQ_PID'), '4242')
    assert.equal(env.get('SCOUTFS_FENCED_REQ_PID_START'), '987654')
    assert.equal(env.get('SCOUTFS_FENCED_REQ_REASON'), 'client_timeout')
    assert.equal(env.get('SCOUTFS_FENCED_REQ_SLOT'), '2')
    assert.equal(env.get('SCOUTFS_FENCE_TEST_PARENT'), 'inherited')
    assert.ok(env.has('PATH'))
    assert.deepEqual(
      logs.map((l) => l.msg),
      ['fencing mount', 'fenced mount'],
    )

    // not a quorum member, nothing known but the rid: empty values
    const agent = fenceAgent({ method: 'command', command: `env > '${out}'` })
    await agent.fence({ rid: 1, reason: 'recovery_timeout', host: '', pid: 0, pidStart: 0, addr: '' })
    const text = readFileSync(out, 'utf8')
    for (const line of [
      'SCOUTFS_FENCED_REQ_RID=0000000000000001',
      'SCOUTFS_FENCED_REQ_SLOT=',
      'SCOUTFS_FENCED_REQ_PID=',
      'SCOUTFS_FENCED_REQ_IP=',
      'SCOUTFS_FENCED_REQ_REASON=recovery_timeout',
    ])
      assert.ok(text.split('\n').includes(line), `${line} in ${text}`)
  })

  it('retries a failing command and resolves when it succeeds (3 attempts with retries=2)', async () => {
    const count = join(dir, 'count')
    const cmd = `n=$(cat '${count}' 2>/dev/null || echo 0); n=$((n+1)); echo $n > '${count}'; echo "attempt $n failed" >&2; [ $n -ge 3 ]`
    const agent = fenceAgent({ method: 'command', command: cmd, retries: 2, retryDelayMs: 20, log })
    await agent.fence(target)
    assert.equal(readFileSync(count, 'utf8').trim(), '3')
    const failed = logs.filter((l) => l.msg === 'fence command failed')
    assert.equal(failed.length, 2)
    assert.equal(failed[0]?.fields?.how, 'exit code 1')
    assert.equal(failed[1]?.fields?.stderr, 'attempt 2 failed')
  })

  it('rejects EIO with the stderr of a command that always fails, after retries+1 attempts', async () => {
    const count = join(dir, 'count')
    const cmd = `echo run >> '${count}'; echo "power switch 3: no route to host" >&2; exit 3`
    const agent = fenceAgent({ method: 'command', command: cmd, retries: 2, retryDelayMs: 20, log })
    await assert.rejects(
      agent.fence(target),
      (e: unknown) =>
        isFsError(e, 'EIO') &&
        e.message.includes('power switch 3: no route to host') &&
        e.message.includes('exit code 3') &&
        e.message.includes('000000000000abcd'),
    )
    assert.equal(readFileSync(count, 'utf8'), 'run\nrun\nrun\n')
    assert.equal(logs.filter((l) => l.msg === 'fence command failed').length, 3)
    assert.equal(logs.at(-1)?.msg, 'fence NOT confirmed')
  })

  it('kills a hanging command and its children (ETIMEDOUT)', async () => {
    const pids = join(dir, 'pids')
    pidFiles.push(pids)
    const cmd = `echo $$ >> '${pids}'; sleep 600 & echo $! >> '${pids}'; echo "waiting for the switch" >&2; wait`
    const agent = fenceAgent({ method: 'command', command: cmd, timeoutMs: 300, retries: 0, log })
    const t0 = Date.now()
    await assert.rejects(
      agent.fence(target),
      (e: unknown) => isFsError(e, 'ETIMEDOUT') && e.message.includes('waiting for the switch'),
    )
    const took = Date.now() - t0
    assert.ok(took >= 290 && took < 5000, `took ${took} ms`)
    const [shell, sleeper] = pidsIn(pids)
    assert.ok(shell && sleeper, 'the command wrote its pids')
    await until('the shell is gone', () => !running(shell))
    await until('its background child is gone', () => !running(sleeper))
  })

  it('is cancelled (ECANCELED) by an abort, which kills the running command', async () => {
    const pids = join(dir, 'pids')
    pidFiles.push(pids)
    const cmd = `echo $$ >> '${pids}'; sleep 600 & echo $! >> '${pids}'; wait`
    const agent = fenceAgent({ method: 'command', command: cmd, log })
    const ac = new AbortController()
    const p = agent.fence(target, ac.signal)
    await until('the command started', () => pidsIn(pids).length === 2)
    ac.abort()
    await assert.rejects(p, (e: unknown) => isFsError(e, 'ECANCELED'))
    const [shell, sleeper] = pidsIn(pids)
    await until('the command is gone', () => !running(shell as number))
    await until('its background child is gone', () => !running(sleeper as number))

    // an abort while waiting to retry
    const ac2 = new AbortController()
    const p2 = fenceAgent({ method: 'command', command: 'exit 1', retries: 5, retryDelayMs: 60000 }).fence(
      target,
      ac2.signal,
    )
    setTimeout(() => ac2.abort(), 100)
    await assert.rejects(p2, (e: unknown) => isFsError(e, 'ECANCELED'))
  })

  it('refuses bad option combinations (EINVAL)', () => {
    const bad = (f: () => unknown, re: RegExp): void =>
      assert.throws(f, (e: unknown) => isFsError(e, 'EINVAL') && re.test(e.message))
    bad(() => fenceAgent({ method: 'command' }), /fence_command=CMD/)
    bad(() => fenceAgent({ method: 'command', command: '  ' }), /fence_command=CMD/)
    bad(() => fenceAgent({ method: 'local', command: 'true' }), /only used with fence=command/)
    bad(() => fenceAgent({ method: 'local', retries: 1 }), /only used with fence=command/)
    bad(() => fenceAgent({ method: 'command', command: 'true', timeoutMs: 0 }), /fence_timeout_ms/)
    bad(() => fenceAgent({ method: 'command', command: 'true', retries: -1 }), /fence_retries/)
    bad(() => fenceAgent({ method: 'nope' as 'local' }), /unknown fence method/)
    bad(() => fenceAgent({ method: 'kubernetes' }), /namespace/)
    bad(
      () => fenceAgent({ method: 'local', kubernetes: { namespace: 'n', filesystem: 'f' } }),
      /only used with fence=kubernetes/,
    )
  })
})
