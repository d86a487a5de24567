/*
 * Extended attributes (the original's xattr.c).  An xattr is stored as parts under its
 * inode, keyed by (name hash, id, part); fs-items.ts holds their encoding.
 *
 * A change writes the new parts under a fresh id before deleting the old ones, in one
 * transaction, so a reader never sees a half-replaced value.  Tagged `scoutfs.` names
 * (xattr-tags.ts) are kept in step with their indexes in the same transaction: `hide.` ones
 * are not listed, `srch.` ones have srch items (srch.ts), `totl.` ones add to totals (totl.ts).
 */
import { FsError } from '../util/errors.js'
import { XATTR_CREATE, XATTR_REPLACE } from './fs-api.js'
import {
  XATTR_NAME_MAX,
  XATTR_SIZE_MAX,
  decodeXattrHead,
  decodeXattrKey,
  encodeXattr,
  nowTs,
  xattrFirst,
  xattrHash,
  xattrHashFirst,
  xattrHashLast,
  xattrKey,
  xattrLast,
} from './fs-items.js'
import type { FsContext, Tx } from './fs-context.js'
import { getInode, putInode } from './inode.js'
import { totlValue, xattrTags, type XattrTags } from './xattr-tags.js'
import { srchAdd, srchDelete } from './srch.js'
import { updateTotl } from './totl.js'

function checkXattrName(name: string): Buffer {
  const n = Buffer.from(name, 'utf8')
  if (n.length === 0 || n.length > XATTR_NAME_MAX) throw new FsError('ERANGE', `xattr name of ${n.length} bytes`)
  if (!/^(user|trusted|security|scoutfs)\./.test(name))
    throw new FsError(
      'EOPNOTSUPP',
      `xattr namespace of '${name}' is not supported (user., trusted., security., scoutfs.)`,
    )
  if (/^(user|trusted|security|scoutfs)\.$/.test(name))
    throw new FsError('EINVAL', `xattr name '${name}' is only a prefix`)
  return n
}

/** The xattr named `name`: its id, part count and value. */
async function findXattr(
  c: FsContext,
  ino: number,
  name: Buffer,
): Promise<{ id: number; parts: number; value: Buffer } | undefined> {
  const h = xattrHash(name)
  let found: { id: number; valLen: number; first: Buffer } | undefined
  for await (const it of c.items.range(xattrHashFirst(ino, h), xattrHashLast(ino, h))) {
    const k = decodeXattrKey(it.key)
    if (k.part !== 0) continue
    const head = decodeXattrHead(it.val)
    if (!head.name.equals(name)) continue
    found = { id: k.id, valLen: head.valLen, first: head.first }
    break
  }
  if (!found) return undefined
  const chunks = [found.first]
  let have = found.first.length
  let part = 1
  while (have < found.valLen) {
    const v = await c.items.get(xattrKey(ino, h, found.id, part))
    if (!v) throw new FsError('EIO', `xattr of inode ${ino} is missing part ${part}`)
    chunks.push(v)
    have += v.length
    part++
  }
  return { id: found.id, parts: part, value: Buffer.concat(chunks) }
}

export async function setxattr(c: FsContext, ino: number, name: string, value: Buffer, flags: number): Promise<void> {
  const n = checkXattrName(name)
  if (value.length > XATTR_SIZE_MAX)
    throw new FsError('E2BIG', `xattr value of ${value.length} bytes exceeds ${XATTR_SIZE_MAX}`)
  const tags = xattrTags(name)
  if (tags.totl) totlValue(name, value)
  await c.op(
    [ino],
    async (t) => {
      const i = await getInode(c, ino)
      const old = await findXattr(c, ino, n)
      if (old && flags & XATTR_CREATE) throw new FsError('EEXIST', `xattr '${name}' exists`)
      if (!old && flags & XATTR_REPLACE) throw new FsError('ENODATA', `no xattr '${name}'`)
      const h = xattrHash(n)
      // new parts first, old parts last
      const id = i.nextXattrId++
      encodeXattr(n, value).forEach((part, p) => c.items.put(xattrKey(ino, h, id, p), part, t.seq))
      if (old) for (let p = 0; p < old.parts; p++) c.items.delete(xattrKey(ino, h, old.id, p), t.seq)
      await updateTags(c, ino, name, tags, old?.id, id, t)
      i.ctime = nowTs()
      putInode(c, i, t)
    },
    { tags: isIndexed(tags) },
  )
}

const isIndexed = (tags: XattrTags): boolean => tags.srch || tags.totl !== undefined

/** Keep the srch and totl items of xattr `name` in step with its change from `oldId` to `newId`. */
async function updateTags(
  c: FsContext,
  ino: number,
  name: string,
  tags: XattrTags,
  oldId: number | undefined,
  newId: number | undefined,
  t: Tx,
): Promise<void> {
  if (tags.srch) {
    if (oldId !== undefined) srchDelete(c, ino, name, oldId, t)
    if (newId !== undefined) srchAdd(c, ino, name, newId, t)
  }
  if (tags.totl) await updateTotl(c, ino, tags.totl, t)
}

export async function getxattr(c: FsContext, ino: number, name: string): Promise<Buffer> {
  const n = checkXattrName(name)
  const x = await c.reading([ino], async () => {
    await getInode(c, ino)
    return findXattr(c, ino, n)
  })
  if (!x) throw new FsError('ENODATA', `no xattr '${name}'`)
  return x.value
}

export function listxattr(c: FsContext, ino: number): Promise<string[]> {
  return c.reading([ino], async () => {
    await getInode(c, ino)
    const names: string[] = []
    for await (const it of c.items.range(xattrFirst(ino), xattrLast(ino))) {
      if (decodeXattrKey(it.key).part !== 0) continue
      const name = decodeXattrHead(it.val).name.toString('utf8')
      if (!name.startsWith('scoutfs.') || !hidden(name)) names.push(name)
    }
    return names
  })
}

function hidden(name: string): boolean {
  try {
    return xattrTags(name).hide
  } catch {
    return false
  }
}

export async function removexattr(c: FsContext, ino: number, name: string): Promise<void> {
  const n = checkXattrName(name)
  const tags = xattrTags(name)
  await c.op(
    [ino],
    async (t) => {
      const i = await getInode(c, ino)
      const old = await findXattr(c, ino, n)
      if (!old) throw new FsError('ENODATA', `no xattr '${name}'`)
      const h = xattrHash(n)
      for (let p = 0; p < old.parts; p++) c.items.delete(xattrKey(ino, h, old.id, p), t.seq)
      await updateTags(c, ino, name, tags, old.id, undefined, t)
      i.ctime = nowTs()
      putInode(c, i, t)
    },
    { tags: isIndexed(tags) },
  )
}
