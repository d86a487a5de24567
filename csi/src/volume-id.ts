/*
 * Volume ids: self-describing and versioned, so any driver instance (controller or node, on
 * any host) knows from the id alone which filesystem and directory a volume is and what to do
 * with it at deletion, without a lookup table:
 *
 *   v1:<fsid, 16 hex digits>:<policy d|r|a>:<directory name below volumes/>
 *
 * The directory name is the CO's volume name when that is a safe file name (letters, digits,
 * '.', '_', '-', at most DIR_MAX bytes, not starting with '.'), else `h-` and the sha256 of
 * the name, so one name always maps to one directory (CreateVolume is idempotent by name).
 * Every id is shorter than 128 bytes (the CSI spec's limit for a CO to store).
 */
import { createHash } from 'node:crypto'

export type DeletePolicy = 'delete' | 'retain' | 'archive'

const POLICY_CODE: Record<DeletePolicy, string> = { delete: 'd', retain: 'r', archive: 'a' }
const CODE_POLICY: Record<string, DeletePolicy> = { d: 'delete', r: 'retain', a: 'archive' }

/** longest directory name: 3 + 16 + 3 + 1 + DIR_MAX < 128 */
export const DIR_MAX = 100

export interface VolumeRef {
  fsid: string
  onDelete: DeletePolicy
  dir: string
}

const SAFE = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/

/** The directory below volumes/ of the volume named `name`. */
export function dirForName(name: string): string {
  if (SAFE.test(name) && Buffer.byteLength(name) <= DIR_MAX) return name
  return `h-${createHash('sha256').update(name).digest('hex').slice(0, 40)}`
}

export function isPolicy(v: string): v is DeletePolicy {
  return v in POLICY_CODE
}

export function encodeVolumeId(v: VolumeRef): string {
  return `v1:${v.fsid}:${POLICY_CODE[v.onDelete]}:${v.dir}`
}

/** The volume an id names; undefined when it is not one of our ids (a malformed id). */
export function decodeVolumeId(id: string): VolumeRef | undefined {
  const m = /^v1:([0-9a-f]{16}):([dra]):(.+)$/.exec(id)
  if (!m || !SAFE.test(m[3]!) || m[3]!.length > DIR_MAX) return undefined
  return { fsid: m[1]!, onDelete: CODE_POLICY[m[2]!]!, dir: m[3]! }
}
