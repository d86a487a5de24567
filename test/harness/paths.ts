/*
 * Path-level helpers over an FsApi (which works by inode number) for the in-process tests:
 * resolve a path, make directories and files, read and write whole files, and catch the
 * errno of an operation expected to fail.  What a shell or python would do through FUSE.
 */
import { isFsError, type Errno } from '../../node-agent/src/util/errors.js'
import { ROOT_INO, S_IFREG, type Attr, type Caller, type FsApi } from '../../node-agent/src/fs/fs-api.js'

export const ROOT: Caller = { uid: 0, gid: 0 }

function split(path: string): string[] {
  return path.split('/').filter((p) => p !== '')
}

/** The attributes at `path` (symlinks are not followed), or the errno of the failed lookup. */
export async function lstat(fs: FsApi, path: string): Promise<Attr> {
  let a = await fs.getattr(ROOT_INO)
  for (const name of split(path)) a = await fs.lookup(a.ino, name)
  return a
}

/** The inode number of the directory holding `path`, and the last name. */
export async function parentOf(fs: FsApi, path: string): Promise<{ dir: number; name: string }> {
  const parts = split(path)
  const name = parts.pop()
  if (name === undefined) throw new Error(`'${path}' has no last name`)
  let ino = ROOT_INO
  for (const p of parts) ino = (await fs.lookup(ino, p)).ino
  return { dir: ino, name }
}

export async function mkdir(fs: FsApi, path: string, mode = 0o755): Promise<Attr> {
  const { dir, name } = await parentOf(fs, path)
  return fs.mkdir(dir, name, mode, ROOT)
}

/** Create an empty regular file (O_CREAT|O_EXCL: EEXIST if the name exists). */
export async function create(fs: FsApi, path: string, mode = 0o644): Promise<Attr> {
  const { dir, name } = await parentOf(fs, path)
  return fs.mknod(dir, name, S_IFREG | mode, 0, ROOT)
}

/** Create or truncate a file and write `data` into it. */
export async function writeFile(fs: FsApi, path: string, data: Buffer): Promise<Attr> {
  let a: Attr
  try {
    a = await create(fs, path)
  } catch (e) {
    if (!isFsError(e, 'EEXIST')) throw e
    a = await lstat(fs, path)
    await fs.setattr(a.ino, { size: 0 })
  }
  if (data.length) await fs.write(a.ino, 0, data)
  return fs.getattr(a.ino)
}

/** The whole content of the file at `path`. */
export async function readFile(fs: FsApi, path: string): Promise<Buffer> {
  const a = await lstat(fs, path)
  return fs.read(a.ino, 0, a.size + 1)
}

/** The names in the directory at `path`, without '.' and '..', sorted. */
export async function ls(fs: FsApi, path: string): Promise<string[]> {
  const d = await lstat(fs, path)
  const out: string[] = []
  let pos = 0
  for (;;) {
    const ents = await fs.readdir(d.ino, pos, 100)
    if (ents.length === 0) break
    for (const e of ents) if (e.name !== '.' && e.name !== '..') out.push(e.name)
    pos = ents[ents.length - 1]!.nextPos
  }
  return out.sort()
}

/** The errno `p` fails with, or 'OK' if it succeeds (non-FsError failures are rethrown). */
export async function errnoOf(p: Promise<unknown>): Promise<Errno | 'OK'> {
  try {
    await p
    return 'OK'
  } catch (e) {
    if (isFsError(e)) return e.code
    throw e
  }
}
