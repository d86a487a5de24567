/*
 * AgentMetrics.instrument(): every FsApi method of the filesystem is wrapped, each call is
 * counted by operation and result (ok, or the errno name of an FsError; EIO for anything
 * else) and timed, and the call reaches the filesystem with its own `this` and arguments.
 */
import assert from 'node:assert/strict'
import { AgentMetrics, FS_OPS } from '../../node-agent/src/agent/metrics.js'
import type { FsApi } from '../../node-agent/src/fs/fs-api.js'
import { FsError } from '../../node-agent/src/util/errors.js'

/** a filesystem whose every method records its call and answers from `answer` */
function fakeFs(answer: (op: string, args: unknown[]) => Promise<unknown>): { fs: FsApi; calls: string[] } {
  const calls: string[] = []
  const fs = new Proxy(
    {},
    {
      get(_t, prop) {
        if (typeof prop !== 'string') return undefined
        return (...args: unknown[]) => {
          calls.push(`${prop}(${args.map((a) => JSON.stringify(a)).join(',')})`)
          return answer(prop, args)
        }
      },
    },
  ) as unknown as FsApi
  return { fs, calls }
}

function sample(s: Awaited<ReturnType<AgentMetrics['samples']>>, name: string, labels: Record<string, string>): number {
  const x = s.samples.find((v) => v.name === name && Object.entries(labels).every(([k, want]) => v.labels[k] === want))
  return x?.value ?? 0
}

describe('AgentMetrics.instrument', () => {
  it('counts and times every call by operation and result, passing calls through unchanged', async () => {
    const m = new AgentMetrics({ fsid: 'f', rid: 'r' })
    const { fs, calls } = fakeFs(async (op, args) => {
      if (op === 'lookup' && args[1] === 'missing') throw new FsError('ENOENT', 'no such name')
      if (op === 'unlink') throw new Error('not an FsError')
      return { op }
    })
    const w = m.instrument(fs)
    assert.deepEqual(await w.getattr(7), { op: 'getattr' })
    assert.deepEqual(await w.lookup(1, 'here'), { op: 'lookup' })
    await assert.rejects(w.lookup(1, 'missing'), (e: unknown) => e instanceof FsError && e.code === 'ENOENT')
    await assert.rejects(w.lookup(1, 'missing'), (e: unknown) => e instanceof FsError && e.code === 'ENOENT')
    await assert.rejects(w.unlink(1, 'x'), /not an FsError/)
    await w.write(3, 0, Buffer.from('ab'), true)
    assert.deepEqual(calls, [
      'getattr(7)',
      'lookup(1,"here")',
      'lookup(1,"missing")',
      'lookup(1,"missing")',
      'unlink(1,"x")',
      'write(3,0,{"type":"Buffer","data":[97,98]},true)',
    ])
    const s = await m.samples()
    const ops = 'scoutfs_fs_ops_total'
    assert.equal(sample(s, ops, { op: 'getattr', result: 'ok' }), 1)
    assert.equal(sample(s, ops, { op: 'lookup', result: 'ok' }), 1)
    assert.equal(sample(s, ops, { op: 'lookup', result: 'ENOENT' }), 2)
    assert.equal(sample(s, ops, { op: 'unlink', result: 'EIO' }), 1)
    assert.equal(sample(s, ops, { op: 'write', result: 'ok' }), 1)
    assert.equal(sample(s, 'scoutfs_fs_op_seconds_count', { op: 'lookup' }), 3)
    assert.equal(sample(s, 'scoutfs_fs_op_seconds_count', { op: 'unlink' }), 1)
    assert.equal(sample(s, 'scoutfs_fs_op_seconds_count', { op: 'rename' }), 0)
  })

  it('wraps every method a frontend may call, each calling the filesystem with it as this', async () => {
    const m = new AgentMetrics({ fsid: 'f', rid: 'r' })
    // its methods reach its own state through this: a wrapper calling them unbound fails
    class Fs {
      calls = 0
      statfs(): Promise<{ bsize: number }> {
        this.calls++
        return Promise.resolve({ bsize: 4096 })
      }
      sync(): Promise<void> {
        this.calls++
        return Promise.resolve()
      }
    }
    const raw = new Fs()
    const fs = raw as unknown as FsApi
    const w = m.instrument(fs)
    for (const op of FS_OPS) assert.equal(typeof (w as unknown as Record<string, unknown>)[op], 'function', op)
    await w.statfs()
    await w.sync()
    assert.equal(raw.calls, 2)
    const s = await m.samples()
    assert.equal(sample(s, 'scoutfs_fs_ops_total', { op: 'sync', result: 'ok' }), 1)
  })
})
