/*
 * How fast the CSI driver makes a volume usable (issue 12): CreateVolume + NodeStageVolume +
 * NodePublishVolume of a new volume over the driver's real socket, on a real agent mount;
 * median over N volumes (default 50) and volumes per second.  Baseline, measured in the same
 * run on the same mount: the same work done directly (mkdir, the agent's POST /quota, mount
 * --bind), so the ratio is what the driver adds (gRPC, checks of the agent mount, mountinfo).
 *
 *   npm run bench:csi                        (or: node dist/bench/csi.js)
 *   SCOUTFS_BENCH_CSI_VOLUMES=50
 *
 * Run as root (bind mounts).  Everything it starts is stopped and unmounted, also on failure.
 */
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { adminCall } from '../node-agent/src/agent/admin.js'
import { makeDevices, startAgent, stopAllAgents } from '../test/helpers/agent.js'
import { csiClient, mountCap, startDriver, stopAllDrivers } from '../test/helpers/csi.js'
import { sh } from '../test/helpers/fuse-harness.js'

const N = Number(process.env.SCOUTFS_BENCH_CSI_VOLUMES ?? 50)

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

async function main(): Promise<number> {
  const dev = await makeDevices()
  const targets: string[] = []
  try {
    const agent = await startAgent(dev)
    const driver = await startDriver(agent.mnt, join(dev.dir, 'csi.sock'), { nodeId: 'bench' })
    const c = csiClient(driver.socket)
    const viaCsi: number[] = []
    const direct: number[] = []
    for (let i = 0; i < N; i++) {
      // alternate, so load drifts hit both alike
      let t = process.hrtime.bigint()
      const v = (
        await c.CreateVolume({
          name: `bench-${i}`,
          capacity_range: { required_bytes: 1 << 30 },
          volume_capabilities: [mountCap()],
        })
      ).volume as { volume_id: string }
      const staging = join(dev.dir, `staging-${i}`)
      const target = join(dev.dir, `pod-${i}`)
      targets.push(target)
      await c.NodeStageVolume({ volume_id: v.volume_id, staging_target_path: staging, volume_capability: mountCap() })
      await c.NodePublishVolume({
        volume_id: v.volume_id,
        staging_target_path: staging,
        target_path: target,
        volume_capability: mountCap(),
      })
      viaCsi.push(Number(process.hrtime.bigint() - t) / 1e6)

      t = process.hrtime.bigint()
      const dir = join(agent.mnt, 'direct', `d-${i}`)
      await fsp.mkdir(dir, { recursive: true })
      const ino = (await fsp.stat(dir)).ino
      await adminCall(agent.mnt, 'POST /quota', { ino, bytes: 1 << 30, inodes: Number.MAX_SAFE_INTEGER })
      const dtarget = join(dev.dir, `direct-${i}`)
      targets.push(dtarget)
      await fsp.mkdir(dtarget)
      const r = await sh('mount', ['--bind', dir, dtarget])
      if (r.code !== 0) throw new Error(`mount --bind: ${r.stderr}`)
      direct.push(Number(process.hrtime.bigint() - t) / 1e6)
    }
    c.close()
    const mc = median(viaCsi)
    const md = median(direct)
    console.log(`CSI CreateVolume + NodeStageVolume + NodePublishVolume, ${N} new volumes on one agent mount`)
    console.log(`  via the driver   median ${mc.toFixed(1)} ms   ${(1000 / mc).toFixed(1)} volumes/s`)
    console.log(`  direct baseline  median ${md.toFixed(1)} ms   ${(1000 / md).toFixed(1)} volumes/s`)
    console.log(`  ratio driver / direct: ${(mc / md).toFixed(2)}x`)
    return 0
  } finally {
    for (const t of targets) await sh('umount', ['-l', t])
    await stopAllDrivers()
    await stopAllAgents()
    dev.remove()
  }
}

main().then(
  (code) => (process.exitCode = code),
  (e: unknown) => {
    console.error(e)
    process.exitCode = 1
  },
)
