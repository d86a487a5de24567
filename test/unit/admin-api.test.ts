/*
 * The typed admin API (node-agent/src/agent/admin-api.ts) end to end over a real admin
 * socket: parameters are validated at the agent (EINVAL), replies at the caller (EIO when a
 * reply is not of its route's type), and a well-typed reply comes back as sent.  The socket
 * itself: a stale one (its agent died) is replaced, a live one refused (EBUSY), and close
 * removes it.
 */
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { existsSync, lstatSync } from 'node:fs'
import { AdminServer, adminCall, adminSocketPath } from '../../node-agent/src/agent/admin.js'
import { ADMIN_API, adminHandlers, type AdminImpl, type QuorumView } from '../../node-agent/src/agent/admin-api.js'
import { archiveRoutes, type ArchiveFs } from '../../node-agent/src/agent/admin-archive-routes.js'
import { FsError } from '../../node-agent/src/util/errors.js'

const status = {
  rid: '1a2b',
  seq: 3,
  committedSeq: 2,
  commits: 2,
  items: 10,
  dirtyItems: 1,
  server: false,
  serverAddr: '127.0.0.1:7150',
  locks: { held: 1, read: 1, write: 0, writeOnly: 0, requests: 1, grants: 1, invalidations: 0 },
}

describe('admin API', () => {
  it('validates each reply against its route', () => {
    assert.ok(ADMIN_API['GET /status'].isReply(status))
    assert.ok(!ADMIN_API['GET /status'].isReply({ ...status, locks: { held: 1 } }))
    assert.ok(!ADMIN_API['GET /status'].isReply({ ...status, metrics: 7 }))
    assert.ok(ADMIN_API['GET /walk-inodes'].isReply({ entries: [{ seq: 1, ino: 2 }] }))
    assert.ok(!ADMIN_API['GET /walk-inodes'].isReply({ entries: [{ seq: '1', ino: 2 }] }))
    assert.ok(!ADMIN_API['POST /unmount'].isReply({ unmounting: false }))
  })

  const quorum: QuorumView = {
    slot: 1,
    term: 4,
    leaderSlot: 0,
    role: 'follower',
    serving: false,
    heartbeatTimeoutMs: 2000,
    majority: 2,
    slots: [0, 1, 2],
    elections: 1,
    elected: 0,
    fenceRequests: 0,
    fencesConfirmed: 0,
    fenceErrors: 0,
  }

  it('carries typed parameters and replies over the socket, and rejects bad ones', async () => {
    const mnt = `/tmp/scoutfs-admin-api-${randomBytes(4).toString('hex')}`
    let badStatus = false
    let badCounters = false
    const counters = {
      fsid: 'f',
      rid: 'r',
      samples: [{ name: 'scoutfs_fs_ops_total', type: 'counter', labels: { op: 'read', result: 'ok' }, value: 3 }],
    }
    const seen: unknown[] = []
    const unused = (): never => {
      throw new FsError('ENOSYS', 'not in this test')
    }
    const archiveFs: ArchiveFs = {
      releaseData: unused,
      stageData: unused,
      fiemap: unused,
      dataWaiting: unused,
      dataWaitErr: (ino, iblock, blocks, op, code) => (seen.push({ ino, iblock, blocks, op, code }), 1),
      searchXattrs: unused,
      readXattrTotals: unused,
      inoPaths: unused,
    }
    const impl: AdminImpl = {
      'POST /sync': async () => ({ seq: 5 }),
      'GET /walk-inodes': async (p) => {
        seen.push(p)
        return { entries: [{ seq: p.first, ino: p.firstIno }] }
      },
      'GET /stat': async (p) => ({
        meta_seq: p.ino,
        data_seq: 0,
        data_version: 0,
        online_blocks: 0,
        offline_blocks: 0,
        crtime: '0.000000000',
        crtime_ms: 0,
      }),
      'GET /statfs': async () => {
        throw new FsError('ENOSPC', 'full')
      },
      'GET /status': async () => (badStatus ? ({ rid: 1 } as unknown as typeof status) : status),
      'POST /unmount': async () => ({ unmounting: true }),
      'GET /quorum': async () => quorum,
      'GET /quota': async () => ({}),
      'POST /quota': async () => ({}),
      'POST /quorum/heartbeat-timeout': async (p) => {
        seen.push(p)
        return { ...quorum, heartbeatTimeoutMs: p.ms }
      },
      'GET /counters': async () =>
        badCounters
          ? ({ fsid: 'f', rid: 'r', samples: [{ name: 'x', type: 'gauge', labels: { op: 1 }, value: 1 }] } as never)
          : counters,
      ...archiveRoutes(archiveFs, (ino) => seen.push({ changed: ino })),
    }
    const admin = await AdminServer.listen(adminSocketPath(mnt), adminHandlers(impl))
    try {
      assert.deepEqual(await adminCall(mnt, 'POST /sync'), { seq: 5 })
      assert.deepEqual(await adminCall(mnt, 'GET /status'), status)
      const w = await adminCall(mnt, 'GET /walk-inodes', {
        index: 'data_seq',
        first: 7,
        firstIno: 9,
        last: 10,
        lastIno: 11,
        limit: 3,
      })
      assert.deepEqual(w, { entries: [{ seq: 7, ino: 9 }] })
      assert.deepEqual(seen, [{ index: 'data_seq', first: 7, firstIno: 9, last: 10, lastIno: 11, limit: 3 }])
      assert.equal((await adminCall(mnt, 'GET /stat', { ino: 42 })).meta_seq, 42)
      assert.deepEqual(await adminCall(mnt, 'GET /quorum'), quorum)
      assert.equal((await adminCall(mnt, 'POST /quorum/heartbeat-timeout', { ms: 3000 })).heartbeatTimeoutMs, 3000)
      assert.deepEqual(seen.at(-1), { ms: 3000 })
      await assert.rejects(adminCall(mnt, 'GET /stat', { ino: -1 }), (e: unknown) => {
        return e instanceof FsError && e.code === 'EINVAL'
      })
      await assert.rejects(adminCall(mnt, 'GET /statfs'), (e: unknown) => e instanceof FsError && e.code === 'ENOSPC')
      badStatus = true
      await assert.rejects(adminCall(mnt, 'GET /status'), (e: unknown) => e instanceof FsError && e.code === 'EIO')
      assert.deepEqual(await adminCall(mnt, 'GET /counters'), counters)
      badCounters = true
      // a label value that is not a string is refused at the caller
      await assert.rejects(adminCall(mnt, 'GET /counters'), (e: unknown) => e instanceof FsError && e.code === 'EIO')
      // data-wait-err: a byte range becomes blocks, a negative errno its code; others are EINVAL
      const dwe = { ino: 12, version: 3, offset: 4096, count: 8192, op: 'write', err: -5 } as const
      assert.deepEqual(await adminCall(mnt, 'POST /data-wait-err', dwe), { found: 1 })
      assert.deepEqual(seen.at(-1), { ino: 12, iblock: 1, blocks: 2, op: 2, code: 'EIO' })
      for (const err of [5, -100000, -4000])
        await assert.rejects(
          adminCall(mnt, 'POST /data-wait-err', { ...dwe, err }),
          (e: unknown) => e instanceof FsError && e.code === 'EINVAL',
          `err ${err}`,
        )
    } finally {
      await admin.close()
    }
  })

  it('replaces a stale socket, refuses a live one with EBUSY, and removes its socket at close', async () => {
    const mnt = `/tmp/scoutfs-admin-sock-${randomBytes(4).toString('hex')}`
    const path = adminSocketPath(mnt)
    // a process that listens on the socket and dies without removing it: a stale socket
    const dead = spawnSync(process.execPath, [
      '-e',
      `require('net').createServer().listen(${JSON.stringify(path)}, () => process.kill(process.pid, 'SIGKILL'))`,
    ])
    assert.equal(dead.signal, 'SIGKILL')
    assert.ok(lstatSync(path).isSocket(), 'the dead listener left its socket behind')
    const impl = { 'POST /sync': async () => ({ seq: 1 }) } as unknown as AdminImpl
    const a = await AdminServer.listen(path, adminHandlers(impl))
    try {
      assert.deepEqual(await adminCall(mnt, 'POST /sync'), { seq: 1 })
      await assert.rejects(
        AdminServer.listen(path, adminHandlers(impl)),
        (e: unknown) => e instanceof FsError && e.code === 'EBUSY',
      )
      assert.deepEqual(await adminCall(mnt, 'POST /sync'), { seq: 1 }, 'the refused listen left the live socket alone')
    } finally {
      await a.close()
    }
    assert.ok(!existsSync(path), 'close left the socket behind')
  })
})
