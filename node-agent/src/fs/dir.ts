/*
 * Directories and names (the original's dir.c): lookup, readdir, creating inodes (mknod,
 * mkdir, symlink), hard links, unlink and rmdir.  rename.ts moves names.
 *
 * A directory entry is three items with the full entry (DIRENT by name hash for lookup,
 * READDIR by position for iteration, LINK_BACKREF under the target for its parent), added
 * and removed together in one transaction.  An operation on an existing name looks it up
 * under READ, then locks the directory and the target together and checks the entry again,
 * retrying if it moved in between.
 */
import { FsError } from '../util/errors.js'
import {
  DT,
  ROOT_INO,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  dtypeOf,
  type Attr,
  type Caller,
  type FsName,
  type DirEntry,
} from './fs-api.js'
import {
  NAME_MAX,
  SYMLINK_MAX,
  backrefFirst,
  backrefKey,
  backrefKeyDir,
  backrefLast,
  decodeDirent,
  direntHashFirst,
  direntHashLast,
  direntKey,
  encodeDirent,
  nameHash,
  newInode,
  nowTs,
  readdirKey,
  readdirLast,
  symlinkKey,
  type Dirent,
  type Inode,
} from './fs-items.js'
import type { FsContext, Tx } from './fs-context.js'
import { getDir, getInode, getattr, isDir, putInode, toAttr } from './inode.js'
import { dropInode } from './orphan.js'
import { charge, checkSameTree, joinTree, opInTree, quotaRootOf } from './quota.js'

/** A name to create: valid, and at most NAME_MAX bytes. */
export function checkName(name: FsName): Buffer {
  const b = nameBytes(name)
  if (b.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${b.length} bytes exceeds ${NAME_MAX}`)
  if (b.length === 0 || b.includes(0x2f) || b.includes(0) || DOT.equals(b) || DOTDOT.equals(b))
    throw new FsError('EINVAL', `'${b.toString()}' is not a valid file name`)
  return b
}

const DOT = Buffer.from('.')
const DOTDOT = Buffer.from('..')

/** a name's bytes: a Buffer as it is (names are bytes), a string as UTF-8 */
export function nameBytes(name: FsName): Buffer {
  return Buffer.isBuffer(name) ? name : Buffer.from(name, 'utf8')
}

/** A name to look up: at most NAME_MAX bytes. */
export function lookupName(name: FsName): Buffer {
  const n = nameBytes(name)
  if (n.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${n.length} bytes exceeds ${NAME_MAX}`)
  return n
}

export async function findDirent(c: FsContext, dir: number, name: Buffer): Promise<Dirent | undefined> {
  const h = nameHash(name)
  for await (const it of c.items.range(direntHashFirst(dir, h), direntHashLast(dir, h))) {
    const d = decodeDirent(it.val)
    if (d.name.equals(name)) return d
  }
  return undefined
}

export function addDirent(c: FsContext, dir: Inode, name: Buffer, target: Inode, t: Tx): void {
  const d: Dirent = {
    ino: target.ino,
    hash: nameHash(name),
    pos: dir.nextReaddirPos++,
    type: dtypeOf(target.mode),
    name,
  }
  const v = encodeDirent(d)
  c.items.put(direntKey(dir.ino, d.hash, d.pos), v, t.seq)
  c.items.put(readdirKey(dir.ino, d.pos), v, t.seq)
  c.items.put(backrefKey(target.ino, dir.ino, d.pos), v, t.seq)
}

export function removeDirent(c: FsContext, dir: number, d: Dirent, t: Tx): void {
  c.items.delete(direntKey(dir, d.hash, d.pos), t.seq)
  c.items.delete(readdirKey(dir, d.pos), t.seq)
  c.items.delete(backrefKey(d.ino, dir, d.pos), t.seq)
}

export async function parentOf(c: FsContext, dir: number): Promise<number> {
  if (dir === ROOT_INO) return ROOT_INO
  const b = await c.items.next(backrefFirst(dir), backrefLast(dir))
  return b ? backrefKeyDir(b.key) : ROOT_INO
}

export async function isEmptyDir(c: FsContext, ino: number): Promise<boolean> {
  return !(await c.items.next(readdirKey(ino, 0), readdirLast(ino)))
}

/* ---- lookups ------------------------------------------------------------------------- */

export async function lookup(c: FsContext, parent: number, name: FsName): Promise<Attr> {
  const n = lookupName(name)
  // the directory's lock is dropped before the child's is taken (no two READs at once)
  const child = await c.reading([parent], async () => {
    await getDir(c, parent)
    if (name === '.') return parent
    if (name === '..') return parentOf(c, parent)
    const d = await findDirent(c, parent, n)
    if (!d) throw new FsError('ENOENT', `no entry '${name}' in directory ${parent}`)
    return d.ino
  })
  return getattr(c, child)
}

export function readlink(c: FsContext, ino: number): Promise<string> {
  return c.reading([ino], async () => {
    const i = await getInode(c, ino)
    if ((i.mode & S_IFMT) !== S_IFLNK) throw new FsError('EINVAL', `inode ${ino} is not a symlink`)
    const parts: Buffer[] = []
    for (let p = 0; p * 4096 < i.size; p++) {
      const v = await c.items.get(symlinkKey(ino, p))
      if (!v) throw new FsError('EIO', `symlink ${ino} is missing part ${p}`)
      parts.push(v)
    }
    return Buffer.concat(parts).toString('utf8')
  })
}

export function readdir(c: FsContext, ino: number, pos: number, max: number): Promise<DirEntry[]> {
  return c.reading([ino], async () => {
    const dir = await getDir(c, ino)
    const out: DirEntry[] = []
    if (pos === 0 && out.length < max) out.push({ name: '.', ino, type: DT.DIR, nextPos: 1 })
    if (pos <= 1 && out.length < max) out.push({ name: '..', ino: await parentOf(c, ino), type: DT.DIR, nextPos: 2 })
    if (out.length >= max) return out
    for await (const it of c.items.range(readdirKey(dir.ino, Math.max(pos, 2)), readdirLast(dir.ino))) {
      const d = decodeDirent(it.val)
      out.push({ name: d.name.toString('utf8'), nameBytes: d.name, ino: d.ino, type: d.type, nextPos: d.pos + 1 })
      if (out.length >= max) break
    }
    return out
  })
}

/* ---- creating ------------------------------------------------------------------------ */

async function create(
  c: FsContext,
  parent: number,
  name: FsName,
  mode: number,
  rdev: number,
  who: Caller,
  fill?: (i: Inode, t: Tx) => void,
): Promise<Attr> {
  const n = checkName(name)
  const ino = await c.allocIno()
  return opInTree(c, parent, [parent, ino], async (t, tree) => {
    const dir = await getDir(c, parent)
    if (dir.nlink === 0) throw new FsError('ENOENT', `directory ${parent} has been removed`)
    if (await findDirent(c, parent, n)) throw new FsError('EEXIST', `'${name}' exists in directory ${parent}`)
    if (tree) await charge(c, t, tree, 0, 1)
    joinTree(c, ino, tree, t)
    const now = nowTs()
    const i = newInode(ino, mode, who.uid, (dir.mode & 0o2000) !== 0 ? dir.gid : who.gid, now)
    i.rdev = rdev
    if ((mode & S_IFMT) === S_IFDIR && (dir.mode & 0o2000) !== 0) i.mode |= 0o2000
    fill?.(i, t)
    putInode(c, i, t, true)
    addDirent(c, dir, n, i, t)
    if (isDir(i)) dir.nlink++
    dir.mtime = dir.ctime = now
    putInode(c, dir, t)
    c.counters.inodesCreated++
    c.trans.inodesCreated++
    return toAttr(i)
  })
}

export function mknod(
  c: FsContext,
  parent: number,
  name: FsName,
  mode: number,
  rdev: number,
  who: Caller,
): Promise<Attr> {
  if ((mode & S_IFMT) === 0) mode |= S_IFREG
  if ((mode & S_IFMT) === S_IFDIR || (mode & S_IFMT) === S_IFLNK)
    return Promise.reject(new FsError('EINVAL', 'mknod cannot make directories or symlinks'))
  return create(c, parent, name, mode, rdev, who)
}

export function mkdir(c: FsContext, parent: number, name: FsName, mode: number, who: Caller): Promise<Attr> {
  return create(c, parent, name, S_IFDIR | (mode & 0o7777), 0, who)
}

export function symlink(c: FsContext, parent: number, name: FsName, target: string, who: Caller): Promise<Attr> {
  const tb = Buffer.from(target, 'utf8')
  if (tb.length === 0) return Promise.reject(new FsError('ENOENT', 'empty symlink target'))
  if (tb.length > SYMLINK_MAX)
    return Promise.reject(new FsError('ENAMETOOLONG', `symlink target of ${tb.length} bytes`))
  return create(c, parent, name, S_IFLNK | 0o777, 0, who, (i, t) => {
    i.size = tb.length
    for (let p = 0; p * 4096 < tb.length; p++)
      c.items.put(symlinkKey(i.ino, p), tb.subarray(p * 4096, (p + 1) * 4096), t.seq)
  })
}

export function link(c: FsContext, ino: number, newParent: number, newName: FsName): Promise<Attr> {
  const n = checkName(newName)
  return c.op([ino, newParent], async (t) => {
    const i = await getInode(c, ino)
    if (isDir(i)) throw new FsError('EPERM', 'hard links to directories are not allowed')
    if (i.nlink === 0) throw new FsError('ENOENT', `inode ${ino} has been removed`)
    const dir = await getDir(c, newParent)
    if (await findDirent(c, newParent, n)) throw new FsError('EEXIST', `'${newName}' exists in directory ${newParent}`)
    checkSameTree(ino, await quotaRootOf(c, ino), await quotaRootOf(c, newParent))
    addDirent(c, dir, n, i, t)
    const now = nowTs()
    dir.mtime = dir.ctime = now
    putInode(c, dir, t)
    i.nlink++
    i.ctime = now
    putInode(c, i, t)
    return toAttr(i)
  })
}

/* ---- removing ------------------------------------------------------------------------ */

/** Look up `name` and lock the directory and its target together; retried if it moved. */
async function opOnEntry<T>(
  c: FsContext,
  parent: number,
  name: FsName,
  fn: (t: Tx, d: Dirent) => Promise<T>,
): Promise<T> {
  const n = lookupName(name)
  for (;;) {
    const { d, tree } = await c.reading([parent], async () => {
      await getDir(c, parent)
      return { d: await findDirent(c, parent, n), tree: await quotaRootOf(c, parent) }
    })
    if (!d) throw new FsError('ENOENT', `no entry '${name}' in directory ${parent}`)
    const r = await c.op(
      [parent, d.ino],
      async (t) => {
        const again = await findDirent(c, parent, n)
        if (!again || again.ino !== d.ino) return { moved: true as const }
        return { moved: false as const, v: await fn(t, again) }
      },
      // a deleted inode leaves its tree: the parent's, or its own when it is a tree's root
      { orphans: true, quota: tree !== 0 || d.type === DT.DIR },
    )
    if (!r.moved) return r.v
  }
}

export async function unlink(c: FsContext, parent: number, name: FsName): Promise<void> {
  await opOnEntry(c, parent, name, async (t, d) => {
    const dir = await getDir(c, parent)
    const i = await getInode(c, d.ino)
    if (isDir(i)) throw new FsError('EISDIR', `'${name}' is a directory`)
    removeDirent(c, parent, d, t)
    const now = nowTs()
    dir.mtime = dir.ctime = now
    putInode(c, dir, t)
    i.nlink--
    i.ctime = now
    if (i.nlink === 0) await dropInode(c, i, t)
    else putInode(c, i, t)
  })
}

export async function rmdir(c: FsContext, parent: number, name: FsName): Promise<void> {
  await opOnEntry(c, parent, name, async (t, d) => {
    const dir = await getDir(c, parent)
    const i = await getInode(c, d.ino)
    if (!isDir(i)) throw new FsError('ENOTDIR', `'${name}' is not a directory`)
    if (!(await isEmptyDir(c, i.ino))) throw new FsError('ENOTEMPTY', `directory '${name}' is not empty`)
    removeDirent(c, parent, d, t)
    const now = nowTs()
    dir.nlink--
    dir.mtime = dir.ctime = now
    putInode(c, dir, t)
    i.nlink = 0
    i.ctime = now
    await dropInode(c, i, t)
  })
}
