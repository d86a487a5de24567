/*
 * The CSI Node service: a volume is published by bind-mounting its directory below the
 * node's agent mount onto the target path (`mount --bind`, then a bind remount for readonly
 * and the capability's mount flags).  Staging checks that the agent mount is up and the
 * volume exists; nothing is ever mounted while the agent mount is not up, so a pod's data
 * cannot land on the node's own disk.  Publish and unpublish are idempotent.
 * NodeGetVolumeStats reports the quota's bytes and inodes, and an abnormal VolumeCondition
 * when statfs at the path fails (ENOTCONN of a dead agent, EIO, ESTALE) or hangs.
 */
import { promises as fsp } from 'node:fs'
import { execFile } from 'node:child_process'
import type { Logger } from 'pino'
import { CsiError, grpc, type Service } from './server.js'
import { mountTable, probeStatfs, type AgentMount } from './agent-mount.js'
import { capabilityProblem, requireId, TOPOLOGY_KEY } from './controller.js'
import type { VolumeRef } from './volume-id.js'

const S = grpc.status
type Req = Record<string, unknown>

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(cmd, args, { timeout: 60_000 }, (e, _out, err) =>
      e ? reject(new CsiError(S.INTERNAL, `${cmd} ${args.join(' ')} failed: ${err.trim() || e.message}`)) : resolve(),
    ),
  )
}

function requirePath(req: Req, field: string): string {
  const p = req[field]
  if (typeof p !== 'string' || !p) throw new CsiError(S.INVALID_ARGUMENT, `${field} is required`)
  return p
}

interface MountCap {
  mount?: { mount_flags?: string[] } | null
  access_mode?: { mode?: string } | null
  block?: object | null
}

function requireCapability(req: Req): MountCap {
  const c = req.volume_capability as MountCap | null | undefined
  if (!c) throw new CsiError(S.INVALID_ARGUMENT, 'volume_capability is required')
  const p = capabilityProblem(c)
  if (p) throw new CsiError(S.INVALID_ARGUMENT, p)
  return c
}

/** The mount at `path` (the last one, as the kernel stacks them), if any. */
async function mountAt(path: string): Promise<{ point: string; root: string; major: string } | undefined> {
  return (await mountTable()).filter((e) => e.point === path).pop()
}

export function nodeService(m: AgentMount, nodeId: string, log: Logger, statsTimeoutMs: number): Service {
  /** The volume's directory, after checking the agent mount is up; NOT_FOUND without one. */
  const volumeDir = async (ref: VolumeRef | undefined, id: string): Promise<string> => {
    const s = await m.check()
    if (!ref || ref.fsid !== s.fsid) throw new CsiError(S.NOT_FOUND, `volume ${id} does not exist on this filesystem`)
    const path = m.volumePath(ref.dir)
    if (!(await m.quota(path))) throw new CsiError(S.NOT_FOUND, `volume ${id} does not exist`)
    return path
  }

  return {
    async NodeStageVolume(req) {
      const ref = requireId(req)
      const staging = requirePath(req, 'staging_target_path')
      requireCapability(req)
      await volumeDir(ref, req.volume_id as string)
      await fsp.mkdir(staging, { recursive: true })
      return {}
    },

    async NodeUnstageVolume(req) {
      requireId(req)
      requirePath(req, 'staging_target_path')
      return {}
    },

    async NodePublishVolume(req) {
      const ref = requireId(req)
      const target = requirePath(req, 'target_path')
      const cap = requireCapability(req)
      const readonly =
        req.readonly === true || /READER_ONLY$/.test(cap.access_mode?.mode ?? '') ? ['ro'] : ([] as string[])
      const src = await volumeDir(ref, req.volume_id as string)
      const flags = [...readonly, ...(cap.mount?.mount_flags ?? [])]
      const have = await mountAt(target)
      if (have) {
        // published already: the same volume is fine (idempotent), anything else is not
        const agent = await mountAt(m.mnt)
        if (agent && have.major === agent.major && have.root.endsWith(`/volumes/${ref!.dir}`)) return {}
        throw new CsiError(S.ALREADY_EXISTS, `${target} has another mount already`)
      }
      await fsp.mkdir(target, { recursive: true })
      await run('mount', ['--bind', src, target])
      if (flags.length) {
        try {
          await run('mount', ['-o', ['remount', 'bind', ...flags].join(','), target])
        } catch (e) {
          await run('umount', [target]).catch(() => undefined)
          throw e
        }
      }
      log.info({ target, src, flags }, 'volume published')
      return {}
    },

    async NodeUnpublishVolume(req) {
      requireId(req)
      const target = requirePath(req, 'target_path')
      while (await mountAt(target)) await run('umount', [target])
      await fsp.rmdir(target).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw new CsiError(S.INTERNAL, `cannot remove the target ${target}: ${e.message}`)
      })
      log.info({ target }, 'volume unpublished')
      return {}
    },

    async NodeGetVolumeStats(req) {
      const ref = requireId(req)
      const path = requirePath(req, 'volume_path')
      const err = await probeStatfs(path, statsTimeoutMs)
      if (err === 'ENOENT') throw new CsiError(S.NOT_FOUND, `volume_path ${path} does not exist`)
      if (err)
        return {
          usage: [],
          volume_condition: {
            abnormal: true,
            message: `statfs at ${path}: ${err}; the node's scoutfs agent is down or hung`,
          },
        }
      if (!ref) throw new CsiError(S.NOT_FOUND, `volume ${req.volume_id as string} does not exist`)
      const q = await m.quota(m.volumePath(ref.dir)).catch(() => undefined)
      if (!q) {
        const up = await m.check().then(
          () => true,
          () => false,
        )
        if (up) throw new CsiError(S.NOT_FOUND, `volume ${req.volume_id as string} does not exist`)
        return {
          usage: [],
          volume_condition: { abnormal: true, message: `the scoutfs agent of ${m.mnt} does not answer` },
        }
      }
      return {
        usage: [
          {
            unit: 'BYTES',
            total: q.limit_bytes,
            used: q.used_bytes,
            available: Math.max(0, q.limit_bytes - q.used_bytes),
          },
          {
            unit: 'INODES',
            total: q.limit_inodes,
            used: q.used_inodes,
            available: Math.max(0, q.limit_inodes - q.used_inodes),
          },
        ],
        volume_condition: { abnormal: false, message: 'volume is healthy' },
      }
    },

    async NodeGetCapabilities() {
      const rpc = (type: string): object => ({ rpc: { type } })
      return {
        capabilities: [rpc('STAGE_UNSTAGE_VOLUME'), rpc('GET_VOLUME_STATS'), rpc('VOLUME_CONDITION')],
      }
    },

    async NodeGetInfo() {
      const fsid = await m.fsid()
      return { node_id: nodeId, max_volumes_per_node: 0, accessible_topology: { segments: { [TOPOLOGY_KEY]: fsid } } }
    },
  }
}
