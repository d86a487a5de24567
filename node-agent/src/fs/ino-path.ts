/*
 * Paths from inode numbers (the original's INO_PATH ioctl): every name of an inode, as a path
 * from the root, found through the link backref items each directory entry has under its
 * target inode (fs-items.ts), so an archive agent can turn walk-inodes or search-xattrs
 * output into paths without walking the namespace.
 *
 * One path per link, in backref order (parent directory, then entry position).  Each step up
 * reads one inode's backrefs under that inode group's READ lock; a rename elsewhere between
 * steps can make a path stale, never invalid for a moment it was true of (as the original).
 */
import { FsError } from '../util/errors.js'
import { ROOT_INO } from './fs-api.js'
import { backrefFirst, backrefKeyDir, backrefLast, decodeDirent } from './fs-items.js'
import type { FsContext } from './fs-context.js'
import { getInode } from './inode.js'

/** deeper than this is a loop (a corrupt tree), not a path */
const MAX_DEPTH = 4096

interface Link {
  dir: number
  name: string
}

function links(c: FsContext, ino: number, max: number): Promise<Link[]> {
  return c.reading([ino], async () => {
    await getInode(c, ino)
    const out: Link[] = []
    for await (const it of c.items.range(backrefFirst(ino), backrefLast(ino))) {
      out.push({ dir: backrefKeyDir(it.key), name: decodeDirent(it.val).name.toString('utf8') })
      if (out.length >= max) break
    }
    return out
  })
}

/** The paths (relative to the root, no leading slash) of inode `ino`; the root's is "". */
export async function inoPaths(c: FsContext, ino: number): Promise<string[]> {
  if (ino === ROOT_INO) return ['']
  const out: string[] = []
  for (const l of await links(c, ino, Number.MAX_SAFE_INTEGER)) {
    const parts = [l.name]
    let dir = l.dir
    for (let depth = 0; dir !== ROOT_INO; depth++) {
      if (depth >= MAX_DEPTH) throw new FsError('ELOOP', `inode ${ino}: its parents go deeper than ${MAX_DEPTH}`)
      const up = (await links(c, dir, 1))[0]
      if (!up) throw new FsError('ENOENT', `directory ${dir} on the path of inode ${ino} has no name`)
      parts.push(up.name)
      dir = up.dir
    }
    out.push(parts.reverse().join('/'))
  }
  if (!out.length) throw new FsError('ENOENT', `inode ${ino} has no name (unlinked)`)
  return out
}
