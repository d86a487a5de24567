/*
 * The tags of `scoutfs.` xattr names (the original's xattr.c tag parsing): after `scoutfs.`
 * a name may carry any of `hide.`, `srch.` and `totl.` in any order, e.g.
 * `scoutfs.hide.srch.owner`.  hide: not listed by listxattr (still readable by name); srch:
 * indexed for search-xattrs (srch.ts); totl: its value summed into a cluster-wide total named
 * by the name's last three numbers (totl.ts).  A tag with nothing after it is EINVAL.
 */
import { FsError } from '../util/errors.js'
import { XATTR_HDR, decodeXattrHead, decodeXattrKey, type TotlName } from './fs-items.js'

export interface XattrTags {
  hide: boolean
  srch: boolean
  /** the total a `totl.` xattr adds to */
  totl?: TotlName
}

const NONE: XattrTags = Object.freeze({ hide: false, srch: false })
const U64_MAX = 0xffffffffffffffffn

/** The tags of xattr `name` (EINVAL for a malformed tagged name). */
export function xattrTags(name: string): XattrTags {
  if (!name.startsWith('scoutfs.')) return NONE
  let rest = name.slice('scoutfs.'.length)
  const tags: XattrTags = { hide: false, srch: false }
  let totl = false
  for (;;) {
    const m = /^(hide|srch|totl)\./.exec(rest)
    if (!m) break
    if (m[1] === 'hide') tags.hide = true
    else if (m[1] === 'srch') tags.srch = true
    else totl = true
    rest = rest.slice(m[0].length)
  }
  if ((tags.hide || tags.srch || totl) && rest.length === 0)
    throw new FsError('EINVAL', `xattr name '${name}' has tags but no name after them`)
  if (totl) tags.totl = totlName(name)
  return tags
}

function totlName(name: string): TotlName {
  const nums = name
    .split('.')
    .slice(-3)
    .map((p) => (/^\d{1,20}$/.test(p) ? BigInt(p) : -1n))
  if (nums.length !== 3 || nums.some((n) => n < 0n || n > U64_MAX))
    throw new FsError('EINVAL', `totl xattr name '${name}' must end in three numbers .A.B.C (each 0..2^64-1)`)
  return [nums[0]!, nums[1]!, nums[2]!]
}

/** The value of a totl xattr: a decimal u64 of at most 23 characters (EINVAL otherwise). */
export function totlValue(name: string, value: Buffer): bigint {
  const s = value.toString('utf8').replace(/\0+$/, '')
  if (value.length > 23 || !/^\d{1,20}$/.test(s) || BigInt(s) > U64_MAX)
    throw new FsError('EINVAL', `totl xattr '${name}' needs a decimal value 0..2^64-1, not '${s.slice(0, 30)}'`)
  return BigInt(s)
}

/** The id, name, tags and (first part of the) value of an xattr item, if it is the first part of a tagged xattr. */
export function taggedXattrItem(
  key: Buffer,
  val: Buffer,
): { id: number; name: string; tags: XattrTags; value: Buffer } | undefined {
  const k = decodeXattrKey(key)
  if (k.part !== 0 || val.length < XATTR_HDR) return undefined
  const head = decodeXattrHead(val)
  const name = head.name.toString('utf8')
  if (!name.startsWith('scoutfs.')) return undefined
  let tags: XattrTags
  try {
    tags = xattrTags(name)
  } catch {
    return undefined // a malformed tagged name is refused at setxattr: none is stored
  }
  return { id: k.id, name, tags, value: head.first }
}
