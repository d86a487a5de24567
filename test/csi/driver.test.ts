/*
 * The CSI driver on a real two-agent cluster, each agent with its own driver process (agent
 * 0's in mode all, agent 1's in mode node), called over their real sockets: one
 * ReadWriteMany volume published (bind mounts) into two "pods" on the two agents, which see
 * each other's files; the volume's quota enforced and reported by df inside the published
 * path; online expansion; read-only publishing; deletion policies; publishing refused when
 * the agent mount is not up; and stats with an abnormal volume condition while the agent
 * under a published volume is stopped (SIGSTOP: statfs hangs) and then killed (last: it ends
 * agent 1).
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Cluster } from '../helpers/cluster.js'
import { PY_DEFS, clusterPerSuite } from '../helpers/cluster-tests.js'
import { dedent, runPy } from '../helpers/mount-tests.js'
import { sh } from '../helpers/fuse-harness.js'
import { csiClient, mountCap, startDriver, stopAllDrivers, type CsiClient } from '../helpers/csi.js'

const MiB = 1 << 20

/** a python snippet in directory `dir` with the cluster tests' helpers (gen, sha, fsha) */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
const py = (dir: string, script: string, ...args: string[]): Promise<any> =>
  runPy(dir, PY_DEFS + '\n' + dedent(script), ...args)

interface Volume {
  volume_id: string
  capacity_bytes: number
}

describe('csi: the driver on a 2-agent cluster', function () {
  this.timeout(300_000)
  let c: Cluster
  let work: string
  let ctl: CsiClient
  let metricsAddr: string | undefined
  let creates = 0
  let node1: CsiClient
  const targets: string[] = []

  // before the cluster stops: unpublish whatever a failed test left, stop the drivers
  after(async () => {
    for (const t of targets) await sh('umount', ['-l', t])
    ctl?.close()
    node1?.close()
    await stopAllDrivers()
    if (work) rmSync(work, { recursive: true, force: true })
  })
  clusterPerSuite(2, {}, (cl) => (c = cl))

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'scoutfs-csi-'))
    const d0 = await startDriver(c.agents[0]!.mnt, join(work, 'csi0.sock'), { nodeId: 'node-0', metrics: true })
    const d1 = await startDriver(c.agents[1]!.mnt, join(work, 'csi1.sock'), {
      nodeId: 'node-1',
      mode: 'node',
      statsTimeoutMs: 10_000,
    })
    ctl = csiClient(d0.socket)
    metricsAddr = d0.metricsAddr
    node1 = csiClient(d1.socket)
  })

  async function create(name: string, bytes: number, params: Record<string, string> = {}): Promise<Volume> {
    creates++
    const r = await ctl.CreateVolume({
      name,
      capacity_range: { required_bytes: bytes },
      volume_capabilities: [mountCap()],
      parameters: params,
    })
    return r.volume as Volume
  }

  /** NodeStage + NodePublish of `v` on node `n` (0 or 1) at a new target. */
  async function publish(n: number, v: Volume, readonly = false, flags: string[] = []): Promise<string> {
    const node = n === 0 ? ctl : node1
    const target = join(work, `pod-${targets.length}`)
    const staging = join(work, `staging-${targets.length}`)
    targets.push(target)
    await node.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: mountCap() })
    await node.NodePublishVolume({
      volume_id: v.volume_id,
      staging_target_path: staging,
      target_path: target,
      volume_capability: mountCap('MULTI_NODE_MULTI_WRITER', flags),
      readonly,
    })
    return target
  }

  async function unpublish(n: number, v: Volume, target: string): Promise<void> {
    await (n === 0 ? ctl : node1).NodeUnpublishVolume({ volume_id: v.volume_id, target_path: target })
  }

  const df = async (path: string): Promise<{ size: number; used: number }> => {
    const r = await sh('df', ['-B1', '--output=size,used', path])
    assert.equal(r.code, 0, r.stderr)
    const [size, used] = r.stdout.trim().split('\n')[1]!.trim().split(/\s+/).map(Number)
    return { size: size!, used: used! }
  }

  it('two pods on two agents write one RWX volume and see each other', async () => {
    const v = await create('rwx', 64 * MiB)
    assert.equal(v.capacity_bytes, 64 * MiB)
    assert.match(v.volume_id, /^v1:[0-9a-f]{16}:d:rwx$/)
    const p0 = await publish(0, v)
    const p1 = await publish(1, v)
    for (const [w, r] of [
      [p0, p1],
      [p1, p0],
    ] as const) {
      const wrote = await py(
        w,
        `wfile(p('from-' + ARGS[0]), gen(7, 300000), 0o644); out(sha(gen(7, 300000)))`,
        w.slice(-1),
      )
      const read = await py(r, `out(fsha(p('from-' + ARGS[0])))`, w.slice(-1))
      assert.equal(read, wrote, `${r} reads what ${w} wrote`)
    }
    const names0 = await py(p0, `out(sorted(os.listdir(D)))`)
    assert.deepEqual(await py(p1, `out(sorted(os.listdir(D)))`), names0)
    // the files are in the volume's directory of the filesystem, not on the node's disk
    assert.ok(existsSync(join(c.agents[0]!.mnt, 'volumes', 'rwx', 'from-1')))
    await unpublish(0, v, p0)
    await unpublish(1, v, p1)
    assert.equal(existsSync(p0), false)
  })

  it('the quota holds inside a published path and df there shows the volume; expansion is online', async () => {
    const v = await create('sized', 8 * MiB)
    const p0 = await publish(0, v)
    const p1 = await publish(1, v)
    assert.equal((await df(p1)).size, 8 * MiB)
    const fill = `
      res = []
      for i in range(int(ARGS[0])):
          try:
              wfile(p('f%d-%s' % (i, ARGS[1])), gen(i, 1 << 20), 0o644); res.append('ok')
          except OSError as e:
              res.append(errno.errorcode[e.errno]); break
      out(res)
      `
    const r = await py(p0, fill, '12', 'a')
    assert.equal(r[r.length - 1], 'EDQUOT', `writes: ${r}`)
    const stats = await node1.NodeGetVolumeStats({ volume_id: v.volume_id, volume_path: p1 })
    const usage = stats.usage as Array<{ unit: string; total: number; used: number }>
    const bytes = usage.find((u) => u.unit === 'BYTES')!
    assert.equal(bytes.total, 8 * MiB)
    assert.equal(bytes.used, (await df(p1)).used, 'stats and df agree on usage')
    assert.ok(bytes.used > 6 * MiB)
    assert.deepEqual(stats.volume_condition, { abnormal: false, message: 'volume is healthy' })

    const e = await ctl.ControllerExpandVolume({ volume_id: v.volume_id, capacity_range: { required_bytes: 32 * MiB } })
    assert.equal(e.capacity_bytes, 32 * MiB)
    assert.equal((await df(p1)).size, 32 * MiB, 'the other node sees the new size at once')
    const more = await py(p1, fill, '4', 'b')
    assert.deepEqual(more, ['ok', 'ok', 'ok', 'ok'])
    await unpublish(0, v, p0)
    await unpublish(1, v, p1)
  })

  it('a read-only publish with mount flags has them and refuses writes; the same volume again at the same target is idempotent', async () => {
    const v = await create('ro', 4 * MiB)
    const p = await publish(1, v, true, ['noexec', 'nosuid'])
    const opts = (await sh('findmnt', ['-n', '-o', 'OPTIONS', p])).stdout.trim().split(',')
    for (const o of ['ro', 'noexec', 'nosuid']) assert.ok(opts.includes(o), `${o} in the mount options ${opts}`)
    const r = await py(
      p,
      `
      try:
          wfile(p('x'), b'x', 0o644); out('ok')
      except OSError as e:
          out(errno.errorcode[e.errno])
      `,
    )
    assert.equal(r, 'EROFS')
    await node1.NodePublishVolume({
      volume_id: v.volume_id,
      staging_target_path: join(work, 'st'),
      target_path: p,
      volume_capability: mountCap(),
      readonly: true,
    })
    assert.equal((await sh('findmnt', ['-n', '-o', 'TARGET', p])).stdout.trim().split('\n').length, 1)
    await unpublish(1, v, p)
  })

  it('DeleteVolume deletes, retains or archives as the StorageClass says, and is idempotent', async () => {
    const mnt = c.agents[0]!.mnt
    const del = await create('del', MiB)
    const keep = await create('keep', MiB, { onDelete: 'retain' })
    const arch = await create('arch', MiB, { onDelete: 'archive' })
    for (const v of [del, keep, arch]) {
      await py(join(mnt, 'volumes', v.volume_id.split(':')[3]!), `wfile(p('data'), b'x' * 5000, 0o644); out(0)`)
      await ctl.DeleteVolume({ volume_id: v.volume_id })
      await ctl.DeleteVolume({ volume_id: v.volume_id })
    }
    assert.equal(existsSync(join(mnt, 'volumes', 'del')), false)
    assert.ok(existsSync(join(mnt, 'volumes', 'keep', 'data')))
    assert.equal(existsSync(join(mnt, 'volumes', 'arch')), false)
    const archived = await py(join(mnt, 'archive'), `out([n for n in os.listdir(D) if n.startswith('arch-')])`)
    assert.equal(archived.length, 1)
    await assert.rejects(
      ctl.CreateVolume({
        name: 'keep',
        capacity_range: { required_bytes: 2 * MiB },
        volume_capabilities: [mountCap()],
      }),
      /ALREADY_EXISTS/,
    )
  })

  it('publishing is refused while the agent mount is not up, and nothing is mounted', async () => {
    const notMounted = join(work, 'plain-dir')
    const d = await startDriver(notMounted, join(work, 'csi-nomount.sock'), { nodeId: 'node-x', mode: 'node' })
    const cl = csiClient(d.socket)
    try {
      const v = await create('refused', MiB)
      const target = join(work, 'refused-target')
      await assert.rejects(
        cl.NodePublishVolume({
          volume_id: v.volume_id,
          staging_target_path: join(work, 'st2'),
          target_path: target,
          volume_capability: mountCap(),
        }),
        (e: { code: number; details: string }) => e.code === 9 && /not mounted/.test(e.details),
      )
      assert.equal(existsSync(target), false)
      const probe = await cl.Probe({})
      assert.deepEqual(probe.ready, { value: false })
    } finally {
      cl.close()
      await d.stop()
    }
  })

  it('a Prometheus scrape counts every call by method and code', async () => {
    assert.ok(metricsAddr, 'the driver serves metrics')
    const text = await (await fetch(`http://${metricsAddr}/metrics`)).text()
    const value = (re: RegExp): number => Number(re.exec(text)?.[1] ?? NaN)
    assert.equal(value(/^scoutfs_csi_operations_total\{method="CreateVolume",code="OK"\} (\d+)$/m), creates)
    assert.equal(value(/^scoutfs_csi_operations_total\{method="CreateVolume",code="ALREADY_EXISTS"\} (\d+)$/m), 1)
    assert.equal(value(/^scoutfs_csi_volumes_deleted_total\{policy="archive"\} (\d+)$/m), 1)
    assert.equal(value(/^scoutfs_csi_mount_healthy (\d+)$/m), 1)
    assert.ok(value(/^scoutfs_csi_operation_duration_seconds_count\{method="NodePublishVolume"\} (\d+)$/m) >= 1)
  })

  it('stats report an abnormal volume while the agent under a published volume hangs, and once it is killed', async () => {
    const v = await create('hung', 4 * MiB)
    const p = await publish(1, v)
    const before = await node1.NodeGetVolumeStats({ volume_id: v.volume_id, volume_path: p })
    assert.equal((before.volume_condition as { abnormal: boolean }).abnormal, false)
    const a1 = c.agents[1]!
    // stopped: statfs at the path hangs until the driver's timeout kills its probe
    a1.proc.kill('SIGSTOP')
    const hung = await node1.NodeGetVolumeStats({ volume_id: v.volume_id, volume_path: p })
    const stopped = hung.volume_condition as { abnormal: boolean; message: string }
    assert.equal(stopped.abnormal, true)
    assert.match(stopped.message, /ETIMEDOUT/)
    // killed (a stopped process takes SIGKILL): the FUSE connection is gone, statfs fails at once
    a1.proc.kill('SIGKILL')
    await a1.exited
    const after = await node1.NodeGetVolumeStats({ volume_id: v.volume_id, volume_path: p })
    const cond = after.volume_condition as { abnormal: boolean; message: string }
    assert.equal(cond.abnormal, true)
    assert.match(cond.message, /ENOTCONN|EIO/)
    assert.deepEqual((await node1.Probe({})).ready, { value: false })
    await sh('umount', ['-l', p])
    await a1.kill9()
  })
})
