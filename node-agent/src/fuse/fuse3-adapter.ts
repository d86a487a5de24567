/*
 * The low-level libfuse 3 frontend: serves an FsApi by inode number through our own addon
 * (fuse3-lowlevel.ts), and is the agent's Frontend and KernelCache.  DESIGN.md §12.
 *
 * Owns: the open file handles (fh -> inode, open flags), the kernel's lookup counts (which
 * inodes the kernel holds, from entry replies and FORGETs) and the names the kernel was given
 * per directory, so a lost cluster lock can be turned into notify-invalidations of exactly
 * what the kernel caches.
 *
 * Invariants:
 *  - every request except FORGET is answered exactly once (answer(): a failure is its errno,
 *    anything that is not an FsError EIO and logged; a second answer is refused by the addon);
 *  - the kernel caches attributes and entries for CACHE_TIMEOUT_S and keeps file pages across
 *    opens (keep_cache), never negative entries: whatever it caches was read under a cluster
 *    lock this mount held, and the lock-invalidation hook (fs/lock-invalidation.ts) calls
 *    invalidateInodes when the lock goes, which drops attributes, pages and the entries below
 *    each directory (issued by the addon's notify thread, never inline);
 *  - a lookup that finds a directory the kernel holds under another name invalidates that
 *    name first (the kernel would otherwise answer ESTALE when it cannot move it: lookup());
 *  - an operation in a directory whose entry a lost lock invalidated, until a little after
 *    the kernel has done it, is checked: when the name no longer leads there (another mount
 *    removed or replaced it, and the path walk passed the old entry), it is refused ESTALE
 *    and the VFS retries it with every component looked up again; the same thread's retry
 *    is served as asked (a cwd there is not a path walk).  A lookup there whose name is in
 *    neither directory is answered ENOENT instead (staleLookup);
 *  - a file opened O_APPEND is direct I/O: its writes land at the end of the file as the
 *    cluster knows it (FsApi.write's append), so the page cache would not match;
 *  - so is a file that has offline blocks when opened (FsApi.open says): the kernel's
 *    readahead would otherwise ask for offline blocks past what the caller reads, and the
 *    read of an online part would wait for a stage of the rest (docs/archive.md);
 *  - after an operation that makes or removes a name in a directory, the directory's new
 *    attributes go to the addon with the answer (changedDir): the addon answers the kernel's
 *    next GETATTR of it until anything may change them (fuse3_lowlevel.c, struct aslot);
 *  - new inodes belong to the caller (uid, and gid unless the directory is setgid); the
 *    kernel applies the umask and checks permissions (default_permissions), and clears
 *    setuid/setgid on write and chown through SETATTR (no handle_killpriv).
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { resolve as resolvePath } from 'node:path'
import { FsError } from '../util/errors.js'
import {
  RENAME_EXCHANGE,
  S_IFDIR,
  S_IFMT,
  S_IFREG,
  type Attr,
  type Caller,
  type DirEntry,
  type FsApi,
  type SetAttr,
} from '../fs/fs-api.js'
import type { Frontend, FrontendFactory, FrontendLogger, FrontendStats } from '../fs/frontend.js'
import { A, ATTR_LEN, fuse3Native, OP, SET_ATTR, type Fuse3Native, type Req, type Session } from './fuse3-lowlevel.js'
import { forceUnmount } from './unmount.js'

/** how long the kernel may keep attributes and entries between invalidations (s) */
export const CACHE_TIMEOUT_S = 60
const O_ACCMODE = 3
const O_APPEND = 0o2000
const O_EXCL = 0o200
const MAX_FH = 0x7ffffffe
const BLKSIZE = 131072
const XATTR_SIZE_MAX = 65536
const NAME_MAX = 255
/**
 * The mount's readahead (KiB).  The kernel caps a FUSE mount's at its default 128 KiB whatever
 * max_readahead says, so sequential reads came as 128 KiB requests, each a trip through
 * JavaScript; 4 MiB lets it ask for 1 MiB (max_write) requests, several at once.
 */
const READAHEAD_KB = 4096
/** reads of up to this many bytes (the kernel's largest) go through a pool of READ_BUFS buffers */
const READ_BUF_SIZE = 1 << 20
const READ_BUFS = 16
/**
 * WRITE data arrives in one of these many buffers lent to the addon (else a new one): the
 * addon reads requests into a free one, so a WRITE's data is where the kernel put it; 1 MiB
 * (max_write) and the room libfuse wants for headers
 */
const WRITE_BUFS = 16
const WRITE_BUF_SIZE = (1 << 20) + 4096
/**
 * How long the event loop keeps polling /dev/fuse after a request instead of sleeping (us).
 * Waking a sleeping thread on another CPU is most of what a request costs (on this VM, a
 * trip through JavaScript took 86 us asleep, 40 us awake; docs/fuse.md): a caller making one
 * request after another (creates, small I/O) finds the loop awake.  The loop spends at most
 * this long polling after the last request, yielding the CPU to anything runnable.
 */
const SPIN_US = 500
/** how long an unmount waits for the requests JavaScript still runs (ms) */
const UNMOUNT_DRAIN_MS = 2000
/**
 * How long a lookup of a directory renamed elsewhere waits for its old entry's invalidation
 * (ms).  Bounded: the notify waits in the kernel for the old parent's lock, which a local
 * process may hold while it waits for this agent (a rename holds both parents' locks while it
 * looks the names up).  Lost locks never wait for their notifies, for the same reason: under
 * write sharing a tenth of them would.
 */
const MOVED_DIR_WAIT_MS = 50
/** past this many directories with an entry notify recorded, those past their grace are forgotten */
const STALE_NAMES_PRUNE = 4096
/**
 * How long after the kernel has done a directory entry's invalidation an operation in that
 * directory is still checked (ms): its path walk may have passed the entry just before, and
 * the request come after (a thread preempted between the two, on a loaded machine).
 */
const STALE_GRACE_MS = 1000
/**
 * A thread refused ESTALE for a directory has its operations there served as asked for this
 * long (ms): the VFS retries at once, and a retry may reach the same directory (a cwd)
 */
const RETRY_MS = 1000

export interface Fuse3MountOptions {
  fsname?: string
  debug?: boolean
  log: FrontendLogger
  /** attribute and entry cache timeout (s, default CACHE_TIMEOUT_S) */
  cacheTimeoutS?: number
  /** how long the event loop keeps polling /dev/fuse after a request (us, default SPIN_US; 0: never) */
  spinUs?: number
}

interface Handle {
  ino: number
  flags: number
}

function attrArray(a: Attr, out = new Float64Array(ATTR_LEN), at = 0): Float64Array {
  out[at + A.INO] = a.ino
  out[at + A.MODE] = a.mode
  out[at + A.NLINK] = a.nlink
  out[at + A.UID] = a.uid
  out[at + A.GID] = a.gid
  out[at + A.RDEV] = a.rdev
  out[at + A.SIZE] = a.size
  out[at + A.BLOCKS] = a.blocks
  out[at + A.ATIME] = a.atimeMs
  out[at + A.MTIME] = a.mtimeMs
  out[at + A.CTIME] = a.ctimeMs
  out[at + A.BLKSIZE] = BLKSIZE
  return out
}

/** a name from the kernel: its bytes, as they are */
function fsName(b: Buffer | undefined): Buffer {
  if (!b || b.length === 0) throw new FsError('EINVAL', 'empty name')
  if (b.length > NAME_MAX) throw new FsError('ENAMETOOLONG', `name of ${b.length} bytes exceeds ${NAME_MAX}`)
  return b
}

/** '.' or '..' */
const isDots = (b: Buffer): boolean => b[0] === 0x2e && (b.length === 1 || (b.length === 2 && b[1] === 0x2e))

/** a map key of a name's bytes (latin1 maps bytes to code points one to one) */
const nameKey = (b: Buffer): string => b.toString('latin1')

export class Fuse3Adapter implements Frontend {
  readonly mountpoint: string
  readonly optionString: string
  private readonly native: Fuse3Native
  private readonly fs: FsApi
  private readonly log: FrontendLogger
  private readonly timeoutS: number
  private session: Session | undefined
  private readonly handles = new Map<number, Handle>()
  /** read buffers answered and free again (at most READ_BUFS) */
  private readonly readBufs: Buffer[] = []
  /** lent to the addon for WRITE data (fuse3-lowlevel.ts mount) */
  private readonly writeBufs = Array.from({ length: WRITE_BUFS }, () => Buffer.allocUnsafeSlow(WRITE_BUF_SIZE))
  private nextFh = 1
  /** ino -> the kernel's lookup count and the attributes it was last given (the root is always held) */
  private readonly lookups = new Map<number, { n: number; last?: Attr }>([[1, { n: 1 }]])
  /** directory ino -> names (nameKey) the kernel was given entries for -> child ino */
  private readonly children = new Map<number, Map<string, number>>()
  /** directory ino -> the entry the kernel was last given for it (a directory has one name) */
  private readonly dirNames = new Map<number, { parent: number; key: string }>()
  /** bumped by every invalidation; a request remembers it when it starts (heldSince) */
  private invalEpoch = 0
  /** notifies queued to the addon's notify thread (it counts those it finished) */
  private notifiesQueued = 0
  /**
   * directory ino -> the name the kernel had for it when a lost lock invalidated it: the
   * notify's number in queue order, and when it was seen done (0: not yet)
   */
  private readonly staleNames = new Map<number, { seq: number; doneAt: number; parent: number; key: string }>()
  /** `${dir}/${pid}` -> until when that thread's operations in dir are served as asked (its ESTALE retry) */
  private readonly retries = new Map<string, number>()
  private unmounting: Promise<void> | undefined
  /** counters for tests and metrics */
  readonly counters = {
    requests: 0,
    invalidatedInodes: 0,
    invalidatedEntries: 0,
    movedDirectories: 0,
    notifyWaitsExpired: 0,
    staleParents: 0,
  }

  private constructor(fs: FsApi, mountpoint: string, opts: Fuse3MountOptions) {
    this.native = fuse3Native()
    this.fs = fs
    this.mountpoint = mountpoint
    this.log = opts.log
    this.timeoutS = opts.cacheTimeoutS ?? CACHE_TIMEOUT_S
    this.optionString = Fuse3Adapter.optionList(opts).join(',')
  }

  static optionList(opts: { fsname?: string } = {}): string[] {
    const fsname = (opts.fsname ?? 'scoutfs').replace(/[^A-Za-z0-9_.:@/-]/g, '_')
    const o = [`fsname=${fsname}`, 'subtype=scoutfs', 'default_permissions']
    if (process.getuid?.() === 0) o.push('allow_other')
    return o
  }

  static async mount(fs: FsApi, mountpoint: string, opts: Fuse3MountOptions): Promise<Fuse3Adapter> {
    const a = new Fuse3Adapter(fs, resolvePath(mountpoint), opts)
    try {
      a.session = a.native.mount(
        a.mountpoint,
        a.optionString,
        (req, op, uid, gid, pid, umask, n0, n1, n2, n3, n4, n5, n6, n7, n8, b0, b1) =>
          a.dispatch(req, op, { uid, gid }, pid, n0, n1, n2, n3, n4, n5, n6, n7, n8, b0, b1),
        a.timeoutS,
        a.timeoutS,
        !!opts.debug,
        a.writeBufs,
        opts.spinUs ?? SPIN_US,
      )
    } catch (e) {
      await forceUnmount(a.mountpoint)
      throw e instanceof FsError ? e : new FsError('EIO', `mount of ${a.mountpoint}: ${String(e)}`)
    }
    a.setReadahead(READAHEAD_KB)
    return a
  }

  /**
   * Set the readahead of the mount's backing device info (/sys/class/bdi/MAJ:MIN, found in
   * /proc/self/mountinfo, never by a stat of the mountpoint, which this thread would have to
   * answer).  Only root may; others keep the kernel's 128 KiB.
   */
  private setReadahead(kb: number): void {
    if (process.getuid?.() !== 0) return
    const unescape = (f: string): string =>
      f.replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8)))
    try {
      const line = readFileSync('/proc/self/mountinfo', 'utf8')
        .split('\n')
        .map((l) => l.split(' '))
        .filter((f) => f.length > 4 && unescape(f[4]!) === this.mountpoint)
        .pop()
      if (!line) throw new FsError('ENOENT', 'not in /proc/self/mountinfo')
      writeFileSync(`/sys/class/bdi/${line[2]}/read_ahead_kb`, String(kb))
    } catch (e) {
      this.log.warn(`readahead of ${this.mountpoint} left at the kernel's default: ${String(e)}`)
    }
  }

  // ---- lifecycle ----

  unmount(): Promise<void> {
    this.unmounting ??= this.doUnmount()
    return this.unmounting
  }

  private async doUnmount(): Promise<void> {
    const s = this.session
    if (!s) return
    this.native.stop(s)
    // what JavaScript still holds is answered (to the detached connection) before /dev/fuse
    // closes, unless it hangs (a server that is gone): then closing fails it in the kernel
    for (let waited = 0; this.native.pending(s) > 0 && waited < UNMOUNT_DRAIN_MS; waited += 10)
      await new Promise((r) => setTimeout(r, 10))
    const left = this.native.pending(s)
    if (left > 0) this.log.warn(`unmount of ${this.mountpoint}: ${left} requests still running, failed in the kernel`)
    this.native.destroy(s)
    if (!(await forceUnmount(this.mountpoint))) throw new FsError('EBUSY', `${this.mountpoint} is still mounted`)
    for (const h of this.handles.values()) {
      try {
        await this.fs.release(h.ino)
      } catch (e) {
        this.log.error(`release of inode ${h.ino} at unmount`, e)
      }
    }
    this.handles.clear()
  }

  // ---- KernelCache ----

  invalidateInodes(first: number, last: number = first): void {
    this.invalEpoch++
    const s = this.session
    if (!s) return
    const hit = (ino: number): void => {
      if (!this.lookups.has(ino)) return
      this.notifyInode(s, ino)
      this.counters.invalidatedInodes++
      const names = this.children.get(ino)
      if (!names) return
      this.children.delete(ino)
      for (const [k, child] of names) this.invalidateName(s, ino, Buffer.from(k, 'latin1'), child)
    }
    if (last - first < this.lookups.size) for (let ino = first; ino <= last; ino++) hit(ino)
    else for (const ino of [...this.lookups.keys()]) if (ino >= first && ino <= last) hit(ino)
  }

  invalidateEntry(parent: number, name: string): void {
    this.invalEpoch++
    const s = this.session
    if (!s) return
    const b = Buffer.from(name)
    this.invalidateName(s, parent, b, this.children.get(parent)?.get(nameKey(b)))
  }

  /** forget that the kernel holds entry parent/name, and queue its invalidation */
  private invalidateName(s: Session, parent: number, name: Buffer, child?: number): void {
    this.dropName(parent, name)
    this.notifyEntry(s, parent, name, child)
    this.counters.invalidatedEntries++
  }

  /**
   * Queue the invalidation of entry parent/name.  When it names a directory (`child`), that
   * directory is recorded: a path walk may still lead there through the entry until the
   * kernel has done it, and a little after (staleDir).
   */
  private notifyEntry(s: Session, parent: number, name: Buffer, child?: number): void {
    const queued = this.native.notifyInvalEntry(s, parent, name)
    this.notifiesQueued += queued
    if (!queued || child === undefined || !this.dirNames.has(child)) return
    this.staleNames.set(child, { seq: this.notifiesQueued, doneAt: 0, parent, key: nameKey(name) })
    if (this.staleNames.size > STALE_NAMES_PRUNE) {
      const done = this.notifiesDoneCount()
      const now = Date.now()
      for (const [ino, r] of this.staleNames) if (this.staleExpired(r, done, now)) this.staleNames.delete(ino)
    }
  }

  /** whether record r is past its grace (marks it done when its notify is) */
  private staleExpired(r: { seq: number; doneAt: number }, done: number, now: number): boolean {
    if (!r.doneAt && r.seq <= done) r.doneAt = now
    return r.doneAt !== 0 && now - r.doneAt > STALE_GRACE_MS
  }

  private notifiesDoneCount(): number {
    if (!this.session) return Infinity
    const [sent, failed] = this.native.notifyCounters(this.session)
    return sent + failed
  }

  /**
   * An operation from thread `pid` in directory `dir`, which the kernel may have reached
   * through an entry a lost lock invalidated: the notify is queued, not done (it may wait for
   * a directory lock a local process holds), or done just after the path walk passed it.
   * undefined: serve it in `dir` (no such entry, the name still leads there, or the thread
   * was refused ESTALE there just before: its retry); otherwise where the name leads now
   * (null: nowhere).
   *
   * The retry is served as asked because it may not come from a path walk: a process whose
   * cwd (or dirfd) is a directory another mount removed or renamed reaches it again, and must
   * get what the directory itself answers (ENOENT once removed).
   */
  private async staleDir(dir: number, pid: number): Promise<Attr | null | undefined> {
    const r = this.staleNames.get(dir)
    if (!r) return undefined
    const now = Date.now()
    if (this.staleExpired(r, this.notifiesDoneCount(), now)) {
      this.staleNames.delete(dir)
      return undefined
    }
    // kept until it expires: a retried open(O_CREAT) sends a LOOKUP, then a CREATE
    const until = this.retries.get(`${dir}/${pid}`)
    if (until !== undefined && until >= now) return undefined
    const leads = await this.fs.lookup(r.parent, Buffer.from(r.key, 'latin1')).catch(() => null)
    if (leads?.ino !== dir) return leads
    // the path was right; once the kernel has dropped the entry, a walk looks the name up again
    if (r.doneAt && this.staleNames.get(dir) === r) this.staleNames.delete(dir)
    return undefined
  }

  /**
   * Refuse an operation in `dir` reached through a name that no longer leads there: the VFS
   * retries the system call once with LOOKUP_REVAL, looking every component of the path up
   * again, so it lands where the name leads now.
   */
  private refuseStale(dir: number, pid: number): never {
    const now = Date.now()
    if (this.retries.size > STALE_NAMES_PRUNE)
      for (const [k, until] of this.retries) if (until < now) this.retries.delete(k)
    this.retries.set(`${dir}/${pid}`, now + RETRY_MS)
    this.counters.staleParents++
    throw new FsError('ESTALE', `directory ${dir} was reached through a name that no longer leads to it`)
  }

  private async reachedFresh(dir: number, pid: number): Promise<void> {
    if ((await this.staleDir(dir, pid)) !== undefined) this.refuseStale(dir, pid)
  }

  /** `fn`, once each of `dirs` was reached through a name that still leads to it */
  private async fresh<T>(pid: number, dirs: number[], fn: () => Promise<T>): Promise<T> {
    for (const d of dirs) await this.reachedFresh(d, pid)
    return fn()
  }

  private notifyInode(s: Session, ino: number): void {
    this.notifiesQueued += this.native.notifyInvalInode(s, ino)
  }

  /**
   * Wait (at most maxMs) until the notify thread has finished every notify queued so far (it
   * serves them in order).  Bounded: a notify waits in the kernel for the directory's lock,
   * which a process may hold while it waits for this agent.
   */
  private async notifiesDone(maxMs: number): Promise<void> {
    const s = this.session
    const target = this.notifiesQueued
    for (const until = Date.now() + maxMs; s && !this.unmounting;) {
      if (this.notifiesDoneCount() >= target) return
      if (Date.now() >= until) break
      await new Promise((r) => setTimeout(r, 1))
    }
    this.counters.notifyWaitsExpired++
  }

  /**
   * A lookup that finds a directory the kernel holds under another name (another mount
   * renamed it): the old entry is invalidated, and the answer waits for that, before the
   * kernel attaches the inode to its new name.  Otherwise the kernel must move the old
   * dentry itself, which it only tries (d_splice_alias takes the rename mutex and the old
   * parent's lock with trylock) and answers ESTALE to the caller when either is busy.
   */
  private async lookup(parent: number, name: Buffer, pid: number): Promise<Attr> {
    const leads = await this.staleDir(parent, pid)
    if (leads !== undefined) return this.staleLookup(parent, name, pid, leads)
    const a = await this.fs.lookup(parent, name)
    const was = (a.mode & S_IFMT) === S_IFDIR && !isDots(name) ? this.dirNames.get(a.ino) : undefined
    if (was && this.session && (was.parent !== parent || was.key !== nameKey(name))) {
      this.dirNames.delete(a.ino)
      this.invalidateName(this.session, was.parent, Buffer.from(was.key, 'latin1'), a.ino)
      this.counters.movedDirectories++
      await this.notifiesDone(MOVED_DIR_WAIT_MS)
    }
    return a
  }

  /**
   * A lookup in `parent`, reached through a name that now leads to `leads` (null: nowhere).
   * When neither `parent` nor where the name leads holds `name`, ENOENT is the answer either
   * way; the create that usually follows is refused ESTALE and retried as a whole.  ESTALE
   * here would reach the caller: the VFS does not retry the lookup of a name to create
   * (filename_create: mkdir, mknod, symlink, link).  Otherwise the lookup is refused ESTALE
   * (a path walk retries it).
   */
  private async staleLookup(parent: number, name: Buffer, pid: number, leads: Attr | null): Promise<never> {
    const absent = (p: Promise<Attr>): Promise<boolean> =>
      p.then(
        () => false,
        (e: unknown) => e instanceof FsError && e.code === 'ENOENT',
      )
    const there =
      leads === null || ((leads.mode & S_IFMT) === S_IFDIR && (await absent(this.fs.lookup(leads.ino, name))))
    if (there && (await absent(this.fs.lookup(parent, name))))
      throw new FsError(
        'ENOENT',
        `no ${JSON.stringify(name.toString())} where the name of directory ${parent} leads now`,
      )
    this.refuseStale(parent, pid)
  }

  /** open handles the kernel holds on this mount */
  openHandles(): number {
    return this.handles.size
  }

  /** inodes the kernel holds (lookup count > 0), the root included */
  heldInodes(): number {
    return this.lookups.size
  }

  /**
   * notifies the kernel took, notifies it refused, capability questions and directory
   * GETATTRs the addon answered, loop wake-ups
   */
  notifyCounters(): [number, number, number, number, number] {
    return this.session ? this.native.notifyCounters(this.session) : [0, 0, 0, 0, 0]
  }

  stats(): FrontendStats {
    const [done, failed, noCaps, wakeups, cachedGetattrs] = this.notifyCounters()
    const c = this.counters
    return {
      heldInodes: this.lookups.size,
      openHandles: this.handles.size,
      invalidatedInodes: c.invalidatedInodes,
      invalidatedEntries: c.invalidatedEntries,
      notifiesDone: done,
      notifiesFailed: failed,
      notifyWaitsExpired: c.notifyWaitsExpired,
      movedDirectories: c.movedDirectories,
      staleParents: c.staleParents,
      noCapsAnswers: noCaps,
      loopWakeups: wakeups,
      cachedGetattrs,
    }
  }

  // ---- requests ----

  /** run an op and answer it exactly once */
  private answer<T>(req: Req, what: string, fn: () => Promise<T>, ok: (v: T) => void): void {
    const fail = (e: unknown): void => {
      let errno = 5
      if (e instanceof FsError && e.errno > 0) errno = e.errno
      else this.log.error(`${what} failed`, e)
      try {
        this.native.replyErr(req, errno)
      } catch (e2) {
        this.log.error(`${what}: failed after its answer`, e2)
      }
    }
    let p: Promise<T>
    try {
      p = fn()
    } catch (e) {
      return fail(e)
    }
    p.then((v) => {
      try {
        ok(v)
      } catch (e) {
        fail(e)
      }
    }, fail)
  }

  private done(req: Req, what: string, fn: () => Promise<unknown>): void {
    this.answer(req, what, fn, () => this.native.replyErr(req, 0))
  }

  /** answer an entry, counting the kernel's new lookup and the name it now caches */
  private replyEntry(req: Req, parent: number, name: Buffer, a: Attr, epoch: number): void {
    if (this.native.replyEntry(req, attrArray(a)) === 0) this.heldSince(epoch, parent, name, a)
  }

  /**
   * held(), for an answer read at invalidation epoch `epoch`: when an invalidation ran while
   * the request was served (its cluster lock may have gone between the read and this answer,
   * before the name was recorded, so that invalidation could not name it), the entry and
   * inode just given are invalidated again: the kernel never keeps an entry read under a
   * lock that was lost before it was recorded.
   */
  private heldSince(epoch: number, parent: number, name: Buffer, a: Attr): void {
    this.held(parent, name, a)
    if (epoch === this.invalEpoch || !this.session) return
    this.invalidateName(this.session, parent, name, a.ino)
    this.notifyInode(this.session, a.ino)
  }

  private held(parent: number, name: Buffer, a: Attr): void {
    const ino = a.ino
    const l = this.lookups.get(ino)
    if (l) {
      l.n++
      l.last = a
    } else this.lookups.set(ino, { n: 1, last: a })
    this.recordName(parent, name, ino)
    // a directory's one name (not '..', which an NFS export's get_parent looks up); the kernel
    // moves its one dentry of the directory there, so no path leads through an older name
    if ((a.mode & S_IFMT) === S_IFDIR && !isDots(name)) {
      this.dirNames.set(ino, { parent, key: nameKey(name) })
      this.staleNames.delete(ino)
    }
  }

  private forget(ino: number, n: number): void {
    const l = this.lookups.get(ino)
    if (ino === 1 || !l) return
    l.n -= n
    if (l.n > 0) return
    this.lookups.delete(ino)
    this.children.delete(ino)
    this.dirNames.delete(ino)
    this.staleNames.delete(ino)
  }

  /**
   * A rename on this mount: the kernel moves its dentry to the new name (and with
   * RENAME_EXCHANGE the other one to the old name), so the names it holds move too (a lost
   * lock of either parent must invalidate them), unless an invalidation ran meanwhile: then
   * the entries are invalidated at once.
   */
  private renamed(
    parent: number,
    name: Buffer,
    newParent: number,
    newName: Buffer,
    exchange: boolean,
    epoch: number,
  ): void {
    const moved = this.children.get(parent)?.get(nameKey(name))
    const other = exchange ? this.children.get(newParent)?.get(nameKey(newName)) : undefined
    this.dropName(parent, name)
    this.dropName(newParent, newName)
    const put = (ino: number | undefined, p: number, n: Buffer): void => {
      if (ino === undefined || !this.lookups.has(ino)) return
      if (epoch !== this.invalEpoch) {
        if (this.session) this.invalidateName(this.session, p, n, ino)
        this.dirNames.delete(ino)
        return
      }
      this.recordName(p, n, ino)
      if (this.dirNames.has(ino)) this.dirNames.set(ino, { parent: p, key: nameKey(n) })
    }
    put(moved, newParent, newName)
    put(other, parent, name)
  }

  /** the kernel holds entry parent/name, naming `ino` */
  private recordName(parent: number, name: Buffer, ino: number): void {
    let m = this.children.get(parent)
    if (!m) this.children.set(parent, (m = new Map()))
    m.set(nameKey(name), ino)
  }

  private dropName(parent: number, name: Buffer | undefined): void {
    if (name) this.children.get(parent)?.delete(nameKey(name))
  }

  private addHandle(ino: number, flags: number): number {
    while (this.handles.has(this.nextFh)) this.nextFh = this.nextFh >= MAX_FH ? 1 : this.nextFh + 1
    const fh = this.nextFh
    this.nextFh = fh >= MAX_FH ? 1 : fh + 1
    this.handles.set(fh, { ino, flags })
    return fh
  }

  private handle(fh: number, ino: number): Handle {
    return this.handles.get(fh) ?? { ino, flags: 0 }
  }

  private dispatch(
    req: Req | null,
    op: number,
    who: Caller,
    pid: number,
    n0: number,
    n1: number,
    n2: number,
    n3: number,
    n4: number,
    n5: number,
    n6: number,
    n7: number,
    n8: number,
    b0: Buffer | undefined,
    b1: Buffer | undefined,
  ): void {
    const epoch = this.invalEpoch
    this.counters.requests++
    if (op === OP.FORGET) return this.forget(n0, n1)
    if (!req) return
    const fs = this.fs
    const native = this.native
    switch (op) {
      case OP.LOOKUP: // parent, name
        return this.answer(
          req,
          'lookup',
          () => this.lookup(n0, fsName(b0), pid),
          (a) => this.replyEntry(req, n0, b0!, a, epoch),
        )
      case OP.GETATTR: // ino, fh
        return this.answer(
          req,
          'getattr',
          () => this.getattr(n0),
          (a) => native.replyAttr(req, attrArray(a)),
        )
      case OP.SETATTR: // ino, to_set, mode, uid, gid, size, atimeMs, mtimeMs, fh
        return this.answer(
          req,
          'setattr',
          () => fs.setattr(n0, setAttrOf(n1, n2, n3, n4, n5, n6, n7)),
          (a) => native.replyAttr(req, attrArray(a)),
        )
      case OP.READLINK: // ino
        return this.answer(
          req,
          'readlink',
          () => fs.readlink(n0),
          (t) => native.replyBuf(req, Buffer.from(t, 'utf8')),
        )
      case OP.MKNOD: // parent, mode, rdev, name
        return this.answer(
          req,
          'mknod',
          () => this.fresh(pid, [n0], () => this.changedDir(req, n0, fs.mknod(n0, fsName(b0), n1, n2, who))),
          (a) => this.replyEntry(req, n0, b0!, a, epoch),
        )
      case OP.MKDIR: // parent, mode, name
        return this.answer(
          req,
          'mkdir',
          () => this.fresh(pid, [n0], () => this.changedDir(req, n0, fs.mkdir(n0, fsName(b0), n1 & 0o7777, who))),
          (a) => this.replyEntry(req, n0, b0!, a, epoch),
        )
      case OP.UNLINK: // parent, name
        return this.done(req, 'unlink', async () => {
          await this.reachedFresh(n0, pid)
          await this.changedDir(req, n0, fs.unlink(n0, fsName(b0)))
          this.dropName(n0, b0)
        })
      case OP.RMDIR: // parent, name
        return this.done(req, 'rmdir', async () => {
          await this.reachedFresh(n0, pid)
          await fs.rmdir(n0, fsName(b0))
          this.dropName(n0, b0)
        })
      case OP.SYMLINK: // parent, name, target
        return this.answer(
          req,
          'symlink',
          () =>
            this.fresh(pid, [n0], () =>
              this.changedDir(req, n0, fs.symlink(n0, fsName(b0), (b1 ?? Buffer.alloc(0)).toString('utf8'), who)),
            ),
          (a) => this.replyEntry(req, n0, b0!, a, epoch),
        )
      case OP.RENAME: // parent, newparent, flags, name, newname
        return this.done(req, 'rename', async () => {
          await this.reachedFresh(n0, pid)
          await this.reachedFresh(n1, pid)
          await fs.rename(n0, fsName(b0), n1, fsName(b1), n2)
          this.renamed(n0, b0!, n1, b1!, (n2 & RENAME_EXCHANGE) !== 0, epoch)
        })
      case OP.LINK: // ino, newparent, newname
        return this.answer(
          req,
          'link',
          () => this.fresh(pid, [n1], () => this.changedDir(req, n1, fs.link(n0, n1, fsName(b0)))),
          (a) => this.replyEntry(req, n1, b0!, a, epoch),
        )
      case OP.OPEN: // ino, flags
        return this.answer(
          req,
          'open',
          () => fs.open(n0),
          (info) => this.replyOpen(req, n0, n1, info.offline),
        )
      case OP.READ: {
        // ino, fh, size, off: read into a buffer of the pool (the kernel copies the answer
        // at once), so reads make no garbage; it goes back once answered
        const into = n2 <= READ_BUF_SIZE ? (this.readBufs.pop() ?? Buffer.allocUnsafeSlow(READ_BUF_SIZE)) : undefined
        const back = (): void => {
          if (into && this.readBufs.length < READ_BUFS) this.readBufs.push(into)
        }
        return this.answer(
          req,
          'read',
          () =>
            fs.read(this.handle(n1, n0).ino, n3, n2, into).catch((e: unknown) => {
              back()
              throw e
            }),
          (data) => {
            try {
              native.replyBuf(req, data.length > n2 ? data.subarray(0, n2) : data)
            } finally {
              back()
            }
          },
        )
      }
      case OP.WRITE: {
        // ino, fh, off, lent buffer (-1: data in b0), length, where in the buffer; the buffer
        // is the addon's again once answered, and fs.write keeps nothing of its data past its return
        const h = this.handle(n1, n0)
        const data = n3 >= 0 ? this.writeBufs[n3]!.subarray(n5, n5 + n4) : (b0 ?? Buffer.alloc(0))
        return this.answer(
          req,
          'write',
          () => fs.write(h.ino, n2, data, (h.flags & O_APPEND) !== 0),
          (n) => native.replyWrite(req, n),
        )
      }
      case OP.RELEASE: // ino, fh
        return this.done(req, 'release', async () => {
          const h = this.handles.get(n1)
          this.handles.delete(n1)
          if (h) await fs.release(h.ino)
          else this.log.warn(`release of unknown handle ${n1}`)
        })
      case OP.FSYNC: // ino, fh, datasync
      case OP.FSYNCDIR: // ino, datasync
        return this.done(req, 'fsync', () => fs.fsync(n0, !!(op === OP.FSYNC ? n2 : n1)))
      case OP.OPENDIR: // ino, flags
        return this.answer(
          req,
          'opendir',
          async () => {
            const a = await fs.getattr(n0)
            if ((a.mode & S_IFMT) !== S_IFDIR) throw new FsError('ENOTDIR', `inode ${n0} is not a directory`)
          },
          () => native.replyOpen(req, 0, 0, 0),
        )
      case OP.READDIR: // ino, fh, size, off
      case OP.READDIRPLUS:
        return this.answer(
          req,
          'readdir',
          () => this.readdir(req, n0, n2, n3, op === OP.READDIRPLUS, epoch),
          () => undefined,
        )
      case OP.STATFS: // ino (a quota tree's statfs is its limit and usage)
        return this.answer(
          req,
          'statfs',
          () => fs.statfs(n0),
          (s) =>
            native.replyStatfs(
              req,
              Float64Array.of(s.bsize, s.frsize || s.bsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.namemax),
            ),
        )
      case OP.SETXATTR: // ino, flags, name, value
        return this.done(req, 'setxattr', () => fs.setxattr(n0, xattrName(b0), b1 ?? Buffer.alloc(0), n1))
      case OP.GETXATTR: // ino, size, name
        return this.answer(
          req,
          'getxattr',
          () => fs.getxattr(n0, xattrName(b0)),
          (v) => sized(native, req, v, n1),
        )
      case OP.LISTXATTR: // ino, size
        return this.answer(
          req,
          'listxattr',
          () => fs.listxattr(n0),
          (names) => sized(native, req, Buffer.concat(names.map((n) => Buffer.from(n + '\0', 'utf8'))), n1),
        )
      case OP.REMOVEXATTR: // ino, name
        return this.done(req, 'removexattr', () => fs.removexattr(n0, xattrName(b0)))
      case OP.ACCESS: // ino, mask: the kernel checks permissions; the inode must exist
        return this.done(req, 'access', () => fs.getattr(n0))
      case OP.CREATE: // parent, mode, flags, name
        return this.answer(
          req,
          'create',
          () => this.fresh(pid, [n0], () => this.changedDir(req, n0, this.create(n0, b0, n1, n2, who))),
          ({ a, made }) => {
            const fh = this.addHandle(a.ino, n2)
            const append = (n2 & O_APPEND) !== 0
            if (this.native.replyCreate(req, attrArray(a), fh, append ? 1 : 0, append ? 0 : 1, made ? 1 : 0) === 0)
              this.heldSince(epoch, n0, b0!, a)
          },
        )
      case OP.FALLOCATE: // ino, fh, mode, offset, length
        return this.done(req, 'fallocate', () => fs.fallocate(n0, n2, n3, n4))
    }
    native.replyErr(req, 38) // ENOSYS
  }

  /**
   * The kernel's getattr: an inode it still holds that another mount deleted (a removed
   * directory that is a process's cwd here) is what it was, with no links, as on a local fs.
   */
  private async getattr(ino: number): Promise<Attr> {
    const l = this.lookups.get(ino)
    try {
      const a = await this.fs.getattr(ino)
      if (l) l.last = a
      return a
    } catch (e) {
      if (!(e instanceof FsError && e.code === 'ENOENT') || !l?.last) throw e
      return { ...l.last, nlink: 0 }
    }
  }

  /**
   * `op`, which changes directory `dir` (a name made or removed in it): the kernel drops the
   * directory's attributes when it is answered and asks for them before its next permission
   * check there, so they are given to the addon with the answer, which answers that GETATTR
   * itself unless anything may have changed them meanwhile (fuse3_lowlevel.c, struct aslot).
   */
  private async changedDir<T>(req: Req, dir: number, op: Promise<T>): Promise<T> {
    const v = await op
    const a = await this.fs.getattr(dir).catch(() => undefined)
    if (a) this.native.cacheAttr(req, attrArray(a))
    return v
  }

  /** an O_APPEND file, or one with offline blocks, is opened for direct I/O (no page cache) */
  private replyOpen(req: Req, ino: number, flags: number, offline: boolean): void {
    const fh = this.addHandle(ino, flags)
    const direct = (flags & O_APPEND) !== 0 || offline
    try {
      this.native.replyOpen(req, fh, direct ? 1 : 0, direct ? 0 : 1)
    } catch (e) {
      this.handles.delete(fh)
      throw e
    }
  }

  /**
   * create and open; an existing name (another mount won the race) is opened unless O_EXCL.
   * `made`: the inode is new (it has no xattrs).
   */
  private async create(
    parent: number,
    name: Buffer | undefined,
    mode: number,
    flags: number,
    who: Caller,
  ): Promise<{ a: Attr; made: boolean }> {
    let a: Attr
    let made = true
    try {
      a = await this.fs.mknod(parent, fsName(name), S_IFREG | (mode & 0o7777), 0, who)
    } catch (e) {
      if (!(e instanceof FsError && e.code === 'EEXIST') || flags & O_EXCL) throw e
      a = await this.fs.lookup(parent, fsName(name))
      made = false
      if ((a.mode & S_IFMT) === S_IFDIR && (flags & O_ACCMODE) !== 0) throw new FsError('EISDIR', 'a directory')
    }
    await this.fs.open(a.ino)
    return { a, made }
  }

  private async readdir(req: Req, ino: number, size: number, pos: number, plus: boolean, epoch: number): Promise<void> {
    // each entry takes at least 24 bytes (plus: 152) with its name, so ask for no more than fit
    const max = Math.max(1, Math.min(1024, Math.floor(size / (plus ? 160 : 32))))
    const isDot = (e: DirEntry): boolean => e.name === '.' || e.name === '..'
    const gone = (e: unknown): undefined => {
      if (e instanceof FsError && e.code === 'ENOENT') return undefined
      throw e
    }
    let entries: DirEntry[]
    let attrs: Array<Attr | undefined>
    for (;;) {
      entries = await this.fs.readdir(ino, pos, max)
      attrs = plus
        ? await Promise.all(entries.map((e) => (isDot(e) ? undefined : this.fs.getattr(e.ino).catch(gone))))
        : []
      // an empty answer ends the listing: when every entry of a batch went away meanwhile
      // (removed on another mount), read on from after them
      if (!plus || entries.length === 0 || entries.some((e, i) => isDot(e) || attrs[i])) break
      pos = entries[entries.length - 1]!.nextPos
    }
    const names: Buffer[] = []
    const arr = new Float64Array(entries.length * ATTR_LEN)
    const offs = new Float64Array(entries.length)
    const kept: Array<{ name: Buffer; at: number; counted: boolean }> = []
    for (let i = 0; i < entries.length; i++) {
      const e = entries[i]!
      const a = attrs[i]
      const dot = isDot(e)
      // an entry another mount removed meanwhile is left out (its position is still passed)
      if (plus && !dot && !a) continue
      const k = kept.length
      const nb = e.nameBytes ?? Buffer.from(e.name, 'utf8')
      names.push(nb)
      if (a) attrArray(a, arr, k * ATTR_LEN)
      else {
        arr[k * ATTR_LEN + A.INO] = e.ino
        arr[k * ATTR_LEN + A.MODE] = e.type << 12
      }
      offs[k] = e.nextPos
      kept.push({ name: nb, at: i, counted: plus && !dot })
    }
    const fitted = this.native.replyDirents(req, names, arr, offs, plus ? 1 : 0)
    for (let i = 0; i < fitted; i++) {
      const k = kept[i]!
      const a = attrs[k.at]
      if (k.counted && a) this.heldSince(epoch, ino, k.name, a)
    }
  }
}

function setAttrOf(
  toSet: number,
  mode: number,
  uid: number,
  gid: number,
  size: number,
  atimeMs: number,
  mtimeMs: number,
): SetAttr {
  const s: SetAttr = {}
  if (toSet & SET_ATTR.MODE) s.mode = mode & 0o7777
  if (toSet & SET_ATTR.UID) s.uid = uid
  if (toSet & SET_ATTR.GID) s.gid = gid
  if (toSet & SET_ATTR.SIZE) s.size = size
  const now = Date.now()
  if (toSet & SET_ATTR.ATIME_NOW) s.atimeMs = now
  else if (toSet & SET_ATTR.ATIME) s.atimeMs = atimeMs
  if (toSet & SET_ATTR.MTIME_NOW) s.mtimeMs = now
  else if (toSet & SET_ATTR.MTIME) s.mtimeMs = mtimeMs
  return s
}

function xattrName(b: Buffer | undefined): string {
  if (!b || b.length === 0 || b.length > NAME_MAX) throw new FsError('ERANGE', 'bad xattr name length')
  return b.toString('utf8')
}

/** a getxattr/listxattr answer: the size for a size query, ERANGE if it does not fit, else the bytes */
function sized(native: Fuse3Native, req: Req, v: Buffer, size: number): void {
  if (v.length > XATTR_SIZE_MAX) throw new FsError('E2BIG', 'xattr value too large')
  if (size === 0) native.replyXattrSize(req, v.length)
  else if (v.length > size)
    native.replyErr(req, 34) // ERANGE
  else native.replyBuf(req, v)
}

/** the agent's frontend: our libfuse 3 low-level binding */
export const fuse3Frontend: FrontendFactory = (fs, mountpoint, opts) =>
  Fuse3Adapter.mount(fs, mountpoint, { fsname: opts.fsname, debug: opts.debug, log: opts.log, spinUs: opts.spinUs })
