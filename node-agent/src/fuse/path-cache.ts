/*
 * Path -> inode resolution for the path-based fuse-native binding: the only place paths
 * become inode numbers.  A bounded cache of path -> ino is filled by lookups (component by
 * component from ROOT_INO on a miss) and emptied by this mount's namespace changes and by lock
 * invalidation (invalidateInodes: another mount may change what those inodes hold).
 *
 * Invariants: a lookup that raced with an invalidation does not cache its result (the
 * generation count); a cached inode that turns out stale (ENOENT/ESTALE) is dropped and the
 * path resolved once more without the cache -- once, so resolution never recurses deeper than
 * the path has components.  Names longer than NAME_MAX fail with ENAMETOOLONG.
 */
import { FsError, isFsError } from '../util/errors.js'
import { ROOT_INO, type Attr, type FsApi } from '../fs/fs-api.js'

const NAME_MAX = 255

export interface Resolved {
  ino: number
  /** the attributes when they came from a lookup just now */
  attr?: Attr
  /** whether the ino came from the cache (and may be stale) */
  cached: boolean
}

export function splitPath(path: string): { dir: string; name: string } {
  const i = path.lastIndexOf('/')
  return { dir: i <= 0 ? '/' : path.slice(0, i), name: path.slice(i + 1) }
}

export function checkName(name: string): void {
  if (Buffer.byteLength(name, 'utf8') > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${name.length} chars`)
}

export class PathCache {
  private readonly cache = new Map<string, number>()
  /** bumped by every invalidation, so a lookup racing with one does not cache its result */
  private gen = 0

  constructor(
    private readonly fs: FsApi,
    private readonly enabled: boolean,
    private readonly maxEntries: number,
    /** names that resolve only on this mount (libfuse's hidden names of unlinked open files) */
    private readonly localName: (name: string) => number | undefined,
  ) {}

  get size(): number {
    return this.cache.size
  }

  /** forget a path and everything below it; no path: forget everything */
  invalidate(path?: string): void {
    this.gen++
    if (path === undefined || path === '/' || path === '') {
      this.cache.clear()
      return
    }
    this.cache.delete(path)
    const prefix = path.endsWith('/') ? path : path + '/'
    for (const k of this.cache.keys()) if (k.startsWith(prefix)) this.cache.delete(k)
  }

  /** forget every path through an inode in [first, last] (directory or not) */
  invalidateInodes(first: number, last: number): void {
    this.gen++
    // the root's entries are never cached under '/', so a root invalidation drops everything
    if (ROOT_INO >= first && ROOT_INO <= last) return this.cache.clear()
    const hit: string[] = []
    for (const [k, ino] of this.cache) if (ino >= first && ino <= last) hit.push(k)
    for (const k of hit) this.invalidate(k)
  }

  /** the entry `name` of directory inode `parent` changed: forget the paths ending in it */
  invalidateEntry(parent: number, name: string): void {
    if (parent === ROOT_INO) return this.invalidate('/' + name)
    const hit: string[] = []
    for (const [k, ino] of this.cache) if (ino === parent) hit.push(k + '/' + name)
    if (hit.length === 0) this.gen++
    for (const k of hit) this.invalidate(k)
  }

  /** run make(), then cache path -> the inode it made, unless an invalidation came between */
  async create(path: string, make: () => Promise<Attr>): Promise<Attr> {
    const gen = this.gen
    const a = await make()
    this.set(path, a.ino, gen)
    return a
  }

  async resolve(path: string, useCache = true): Promise<Resolved> {
    if (path === '/' || path === '') return { ino: ROOT_INO, cached: false }
    const { dir, name } = splitPath(path)
    checkName(name)
    const local = this.localName(name)
    if (local !== undefined) return { ino: local, cached: false }
    if (useCache && this.enabled) {
      const c = this.cache.get(path)
      if (c !== undefined) return { ino: c, cached: true }
    }
    const gen = this.gen
    const parent = await this.resolve(dir, useCache)
    let attr: Attr
    try {
      attr = await this.fs.lookup(parent.ino, name)
    } catch (e) {
      if (parent.cached && isFsError(e) && (e.code === 'ENOENT' || e.code === 'ESTALE')) {
        this.invalidate(dir)
        return this.resolve(path, false)
      }
      throw e
    }
    this.set(path, attr.ino, gen)
    return { ino: attr.ino, attr, cached: false }
  }

  /** run fn on the inode a path names, once more with a fresh lookup if a cached inode was stale */
  async withIno<T>(path: string, fn: (ino: number, attr?: Attr) => Promise<T>): Promise<T> {
    const r = await this.resolve(path)
    try {
      return await fn(r.ino, r.attr)
    } catch (e) {
      if (!r.cached || !isFsError(e) || (e.code !== 'ENOENT' && e.code !== 'ESTALE')) throw e
      this.invalidate(path)
      const r2 = await this.resolve(path, false)
      return fn(r2.ino, r2.attr)
    }
  }

  /** run fn on the parent directory of a path and the last name */
  withParent<T>(path: string, fn: (parent: number, name: string) => Promise<T>): Promise<T> {
    const { dir, name } = splitPath(path)
    checkName(name)
    return this.withIno(dir, (parent) => fn(parent, name))
  }

  private set(path: string, ino: number, gen: number): void {
    if (!this.enabled || gen !== this.gen) return
    if (this.cache.size >= this.maxEntries) {
      // drop the oldest tenth
      let n = Math.ceil(this.maxEntries / 10)
      for (const k of this.cache.keys()) {
        this.cache.delete(k)
        if (--n <= 0) break
      }
    }
    this.cache.set(path, ino)
  }
}
