/*
 * The CSI Controller service: volumes are directories volumes/<dir> of the filesystem, each a
 * quota tree (fs/quota.ts) whose byte limit is the volume's capacity.  CreateVolume is
 * idempotent by name (the directory is a function of the name, volume-id.ts); DeleteVolume is
 * idempotent and follows the StorageClass parameter `onDelete` (delete | retain | archive),
 * carried in the volume id; ControllerExpandVolume raises the quota online.  Volumes are thin:
 * their capacities may add up to more than the filesystem holds (GetCapacity reports what is
 * free), as with NFS-backed drivers.  Every invalid
 * request gets the status code the spec names.
 */
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { CsiError, grpc, type Service } from './server.js'
import type { AgentMount } from './agent-mount.js'
import { DATA_BLOCK } from './agent-mount.js'
import type { CsiMetrics } from './metrics.js'
import { decodeVolumeId, dirForName, encodeVolumeId, isPolicy, type DeletePolicy, type VolumeRef } from './volume-id.js'

export const TOPOLOGY_KEY = 'topology.csi.scoutfs.io/fsid'
/** capacity of a volume whose request names none */
export const DEFAULT_CAPACITY = 1 << 30

type Req = Record<string, unknown>
const S = grpc.status

export const SUPPORTED_MODES = new Set([
  'SINGLE_NODE_WRITER',
  'SINGLE_NODE_READER_ONLY',
  'MULTI_NODE_READER_ONLY',
  'MULTI_NODE_MULTI_WRITER',
  'MULTI_NODE_SINGLE_WRITER',
  'SINGLE_NODE_SINGLE_WRITER',
  'SINGLE_NODE_MULTI_WRITER',
])

interface Capability {
  block?: object | null
  mount?: { fs_type?: string; mount_flags?: string[] } | null
  access_mode?: { mode?: string } | null
  access_type?: string
}

/** Why capability `c` cannot be served, or undefined when it can. */
export function capabilityProblem(c: Capability): string | undefined {
  if (c.block) return 'block volumes are not supported: scoutfs volumes are filesystem (mount) volumes'
  if (!c.mount) return 'the capability names no access type: give mount'
  if (c.mount.fs_type && c.mount.fs_type !== 'scoutfs') return `fs_type '${c.mount.fs_type}' is not scoutfs`
  const mode = c.access_mode?.mode
  if (!mode || mode === 'UNKNOWN') return 'the capability names no access mode'
  if (!SUPPORTED_MODES.has(mode)) return `access mode ${mode} is not supported`
  return undefined
}

export function requireId(req: Req): VolumeRef | undefined {
  const id = req.volume_id
  if (typeof id !== 'string' || !id) throw new CsiError(S.INVALID_ARGUMENT, 'volume_id is required')
  return decodeVolumeId(id)
}

function requireCapabilities(req: Req): Capability[] {
  const caps = req.volume_capabilities as Capability[] | undefined
  if (!caps?.length) throw new CsiError(S.INVALID_ARGUMENT, 'volume_capabilities are required')
  return caps
}

/** The capacity a CapacityRange asks for (required, else limit, else the default). */
function capacityOf(range: { required_bytes?: number; limit_bytes?: number } | null | undefined): {
  want: number
  min: number
  max: number
} {
  const min = range?.required_bytes ?? 0
  const max = range?.limit_bytes ?? 0
  if (min < 0 || max < 0) throw new CsiError(S.INVALID_ARGUMENT, 'capacity_range bytes must not be negative')
  if (max && min > max)
    throw new CsiError(S.INVALID_ARGUMENT, `required_bytes ${min} is larger than limit_bytes ${max}`)
  // whole data blocks (df reports blocks)
  const round = (n: number): number => Math.ceil(n / DATA_BLOCK) * DATA_BLOCK
  let want = min ? round(min) : max ? Math.floor(max / DATA_BLOCK) * DATA_BLOCK : DEFAULT_CAPACITY
  if (max && want > max) want = max
  if (!want) throw new CsiError(S.OUT_OF_RANGE, `limit_bytes ${max} is smaller than one ${DATA_BLOCK}-byte block`)
  return { want, min, max }
}

export function controllerService(m: AgentMount, log: Logger, metrics: CsiMetrics): Service {
  const topology = async (): Promise<object[]> => [{ segments: { [TOPOLOGY_KEY]: await m.fsid() } }]

  /** The volume a known id names on this filesystem, NOT_FOUND otherwise. */
  const existing = async (ref: VolumeRef | undefined, id: string): Promise<{ ref: VolumeRef; limit: number }> => {
    if (!ref || ref.fsid !== (await m.fsid())) throw new CsiError(S.NOT_FOUND, `volume ${id} does not exist`)
    const q = await m.quota(m.volumePath(ref.dir))
    if (!q) throw new CsiError(S.NOT_FOUND, `volume ${id} does not exist`)
    return { ref, limit: q.limit_bytes }
  }

  return {
    async CreateVolume(req) {
      const name = req.name
      if (typeof name !== 'string' || !name) throw new CsiError(S.INVALID_ARGUMENT, 'name is required')
      for (const c of requireCapabilities(req)) {
        const p = capabilityProblem(c)
        if (p) throw new CsiError(S.INVALID_ARGUMENT, p)
      }
      if (req.volume_content_source)
        throw new CsiError(
          S.INVALID_ARGUMENT,
          'volume content sources (snapshots, clones) are not supported: create an empty volume',
        )
      const params = (req.parameters ?? {}) as Record<string, string>
      for (const k of Object.keys(params))
        if (k !== 'onDelete' && !k.startsWith('csi.storage.k8s.io/'))
          throw new CsiError(S.INVALID_ARGUMENT, `unknown StorageClass parameter '${k}' (known: onDelete)`)
      const onDelete = params.onDelete ?? 'delete'
      if (!isPolicy(onDelete))
        throw new CsiError(S.INVALID_ARGUMENT, `onDelete '${onDelete}' is not delete, retain or archive`)
      const { want, min, max } = capacityOf(req.capacity_range as Parameters<typeof capacityOf>[0])
      const s = await m.check()
      const ref: VolumeRef = { fsid: s.fsid, onDelete: onDelete as DeletePolicy, dir: dirForName(name) }
      const path = m.volumePath(ref.dir)
      const had = await m.quota(path)
      let capacity: number
      if (had) {
        if (had.limit_bytes < min || (max && had.limit_bytes > max))
          throw new CsiError(
            S.ALREADY_EXISTS,
            `volume '${name}' exists with capacity ${had.limit_bytes}, outside the requested ${min}..${max || 'any'}`,
          )
        capacity = had.limit_bytes
      } else {
        await fsp.mkdir(path, { recursive: true })
        capacity = (await m.setQuota(path, want)).limit_bytes
        metrics.volumesCreated.inc()
        log.info({ name, dir: ref.dir, capacity }, 'volume created')
      }
      return {
        volume: {
          volume_id: encodeVolumeId(ref),
          capacity_bytes: capacity,
          volume_context: {},
          accessible_topology: await topology(),
        },
      }
    },

    async DeleteVolume(req) {
      const ref = requireId(req)
      // an id that is not ours, or of another filesystem, names no volume here: done
      if (!ref || ref.fsid !== (await m.check()).fsid) return {}
      const path = m.volumePath(ref.dir)
      if (!(await m.quota(path))) return {}
      if (ref.onDelete === 'delete') await fsp.rm(path, { recursive: true, force: true })
      else if (ref.onDelete === 'archive') {
        await fsp.mkdir(join(m.mnt, 'archive'), { recursive: true })
        await fsp.rename(path, join(m.mnt, 'archive', `${ref.dir}-${Date.now()}`))
      }
      metrics.volumesDeleted.inc({ policy: ref.onDelete })
      log.info({ dir: ref.dir, policy: ref.onDelete }, 'volume deleted')
      return {}
    },

    async ControllerExpandVolume(req) {
      const ref = requireId(req)
      const range = req.capacity_range as Parameters<typeof capacityOf>[0]
      if (!range) throw new CsiError(S.INVALID_ARGUMENT, 'capacity_range is required')
      const { want } = capacityOf(range)
      await m.check()
      const v = await existing(ref, req.volume_id as string)
      let capacity = v.limit
      if (want > capacity) capacity = (await m.setQuota(m.volumePath(v.ref.dir), want)).limit_bytes
      log.info({ dir: v.ref.dir, from: v.limit, to: capacity }, 'volume expanded')
      return { capacity_bytes: capacity, node_expansion_required: false }
    },

    async ValidateVolumeCapabilities(req) {
      const ref = requireId(req)
      const caps = requireCapabilities(req)
      await m.check()
      await existing(ref, req.volume_id as string)
      const problems = caps.map(capabilityProblem).filter((p): p is string => p !== undefined)
      if (problems.length) return { message: problems.join('; ') }
      return {
        confirmed: {
          volume_context: req.volume_context ?? {},
          volume_capabilities: caps,
          parameters: req.parameters ?? {},
        },
      }
    },

    async ListVolumes(req) {
      const max = (req.max_entries as number | undefined) ?? 0
      if (max < 0) throw new CsiError(S.INVALID_ARGUMENT, 'max_entries must not be negative')
      const token = (req.starting_token as string | undefined) ?? ''
      let after = ''
      if (token) {
        const t = /^t:([A-Za-z0-9_-]+)$/.exec(token)
        if (!t) throw new CsiError(S.ABORTED, `starting_token '${token}' is not one ListVolumes gave`)
        after = Buffer.from(t[1]!, 'base64url').toString('utf8')
      }
      const s = await m.check()
      const names = (await fsp.readdir(m.volumesDir).catch(() => [] as string[])).sort().filter((n) => n > after)
      const page = max ? names.slice(0, max) : names
      const entries: object[] = []
      for (const dir of page) {
        const q = await m.quota(m.volumePath(dir))
        if (!q) continue
        entries.push({
          volume: {
            // the policy is not recorded on disk: listed ids carry the default
            volume_id: encodeVolumeId({ fsid: s.fsid, onDelete: 'delete', dir }),
            capacity_bytes: q.limit_bytes,
            accessible_topology: await topology(),
          },
        })
      }
      const last = page[page.length - 1]
      const more = max > 0 && names.length > page.length && last !== undefined
      return { entries, next_token: more ? `t:${Buffer.from(last).toString('base64url')}` : '' }
    },

    async GetCapacity(req) {
      for (const c of (req.volume_capabilities as Capability[] | undefined) ?? []) {
        const p = capabilityProblem(c)
        if (p) return { available_capacity: 0 }
      }
      const s = await m.check()
      return {
        available_capacity: s.free_data_blocks * DATA_BLOCK,
        maximum_volume_size: { value: s.free_data_blocks * DATA_BLOCK },
      }
    },

    async ControllerGetCapabilities() {
      const rpc = (type: string): object => ({ rpc: { type } })
      return {
        capabilities: [rpc('CREATE_DELETE_VOLUME'), rpc('EXPAND_VOLUME'), rpc('LIST_VOLUMES'), rpc('GET_CAPACITY')],
      }
    },
  }
}
