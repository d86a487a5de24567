/*
 * The open files of one fuse-native mount: file handles (fh -> inode, open flags, and the path
 * libfuse names the file by) and libfuse 2's hidden names of unlinked open files.
 *
 * Unlink of an open file: libfuse renames it to "<dir>/.fuse_hiddenXXXXXXXXYYYYYYYY" and
 * unlinks that name at the last close.  The rename is an fs.unlink of the source (the fs
 * keeps the inode while it is open); the hidden name resolves only here, through `hidden`, is
 * never created in the fs nor listed, and its final unlink only forgets the mapping.
 *
 * Invariant (issue 10): libfuse names an open file by its node's path in libfuse's own tree,
 * which only this mount's operations change; if this mount removes a directory with a file
 * open below it, libfuse calls release with a NULL path and fuse-native dies of SIGSEGV
 * (napi_create_string_utf8(NULL) leaves the argument unset).  So each handle's path follows
 * this mount's renames (movePaths), and checkNoOpenBelow refuses (ENOTEMPTY) to remove a
 * directory with a handle below it, however empty the fs has it (the file unlinked here, or
 * by another mount).  Other mounts see the directory as the fs has it.
 */
import { FsError } from '../util/errors.js'

/** libfuse 2's hidden name for an unlinked open file */
export const HIDDEN_RE = /^\.fuse_hidden[0-9a-f]{16}$/
/** hidden names released before libfuse's unlink of them arrived (bounded) */
const MAX_RELEASED_HIDDEN = 1024
const MAX_FH = 0x7ffffffe

export interface Handle {
  ino: number
  flags: number
  /** libfuse's path of the file (kept up to date with this mount's renames) */
  path: string
}

export class Handles {
  private readonly handles = new Map<number, Handle>()
  /** hidden name -> inode of an unlinked open file */
  private readonly hidden = new Map<string, number>()
  /** hidden names whose inode's last handle was released before libfuse sent their unlink */
  private readonly releasedHidden = new Set<string>()
  private nextFh = 1

  get size(): number {
    return this.handles.size
  }

  get hiddenCount(): number {
    return this.hidden.size
  }

  add(ino: number, flags: number, path: string): number {
    while (this.handles.has(this.nextFh)) this.nextFh = this.nextFh >= MAX_FH ? 1 : this.nextFh + 1
    const fh = this.nextFh
    this.nextFh = this.nextFh >= MAX_FH ? 1 : this.nextFh + 1
    this.handles.set(fh, { ino, flags, path })
    return fh
  }

  find(fh: number): Handle | undefined {
    return fh ? this.handles.get(fh) : undefined
  }

  /**
   * The inode of a file open here under libfuse's `path` (none: undefined).  The kernel's
   * fstat of an open file is a getattr by path; when another mount unlinked the name, this is
   * the inode the path still names here (the open map keeps it, DESIGN §7).
   */
  openInoAt(path: string): number | undefined {
    for (const h of this.handles.values()) if (h.path === path) return h.ino
    return undefined
  }

  get(fh: number): Handle {
    const h = this.handles.get(fh)
    if (!h) throw new FsError('EBADF', `no open handle ${fh}`)
    return h
  }

  /** forget a handle (the last close of an inode also forgets its hidden names); its inode */
  remove(fh: number): number | undefined {
    const h = this.handles.get(fh)
    if (!h) return undefined
    this.handles.delete(fh)
    this.forgetHiddenIfClosed(h.ino)
    return h.ino
  }

  /** every handle's inode, forgetting them all (unmount) */
  drain(): number[] {
    const inos = [...this.handles.values()].map((h) => h.ino)
    this.handles.clear()
    this.hidden.clear()
    this.releasedHidden.clear()
    return inos
  }

  /** the inode a hidden name stands for on this mount */
  hiddenIno(name: string): number | undefined {
    return HIDDEN_RE.test(name) ? this.hidden.get(name) : undefined
  }

  isHidden(name: string): boolean {
    return HIDDEN_RE.test(name) && this.hidden.has(name)
  }

  hide(name: string, ino: number): void {
    this.hidden.set(name, ino)
  }

  /** libfuse's final unlink of a hidden name: true if it was one (nothing to do in the fs) */
  unhide(name: string): boolean {
    if (!HIDDEN_RE.test(name) || !(this.hidden.has(name) || this.releasedHidden.has(name))) return false
    this.hidden.delete(name)
    this.releasedHidden.delete(name)
    return true
  }

  /** libfuse moved its node of src (and everything below) to dest: so do the handles' paths */
  movePaths(src: string, dest: string): void {
    const prefix = src + '/'
    for (const h of this.handles.values()) {
      if (h.path === src) h.path = dest
      else if (h.path.startsWith(prefix)) h.path = dest + h.path.slice(src.length)
    }
  }

  /** ENOTEMPTY if a file below dirPath is open on this mount (see the header) */
  checkNoOpenBelow(dirPath: string): void {
    const prefix = dirPath.endsWith('/') ? dirPath : dirPath + '/'
    for (const h of this.handles.values())
      if (h.path.startsWith(prefix))
        throw new FsError('ENOTEMPTY', `${dirPath} holds ${h.path}, unlinked but still open on this mount`)
  }

  /** the last handle of an inode is gone: its hidden names need no mapping any more */
  private forgetHiddenIfClosed(ino: number): void {
    if (this.hidden.size === 0) return
    for (const h of this.handles.values()) if (h.ino === ino) return
    for (const [name, i] of this.hidden) {
      if (i !== ino) continue
      this.hidden.delete(name)
      if (this.releasedHidden.size >= MAX_RELEASED_HIDDEN) {
        const oldest = this.releasedHidden.values().next().value
        if (oldest !== undefined) this.releasedHidden.delete(oldest)
      }
      this.releasedHidden.add(name)
    }
  }
}
