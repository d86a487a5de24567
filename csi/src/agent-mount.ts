/*
 * The agent mount the driver serves from (--mount): whether it is up, and the filesystem
 * operations the services need on it.  "Up" means /proc/self/mountinfo lists a FUSE mount of
 * scoutfs (fstype fuse.scoutfs) exactly at the path and the agent answers on its admin socket
 * in time; the driver never creates, publishes or deletes anything on a path that is not one
 * (a bind mount of an unmounted path would put a pod's data on the node's own disk).
 *
 * Layout on the filesystem: volumes/<dir> is a volume (a quota tree, fs/quota.ts),
 * archive/<dir>-<ms> a volume deleted with onDelete=archive.
 */
import { promises as fsp } from 'node:fs'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import type { Logger } from 'pino'
import { adminCall } from '../../node-agent/src/agent/admin.js'
import type { QuotaInfo, StatfsReply } from '../../node-agent/src/agent/admin-api.js'
import { FsError } from '../../node-agent/src/util/errors.js'
import { CsiError, grpc } from './server.js'
import type { CsiMetrics } from './metrics.js'

export const DATA_BLOCK = 4096

/** `p`, or ETIMEDOUT after `ms` (the work itself may go on: a hung mount cannot be cancelled). */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new FsError('ETIMEDOUT', `${what} did not answer in ${ms} ms`)), ms)
  })
  return Promise.race([p, t]).finally(() => clearTimeout(timer))
}

/** The mountinfo entries (mount point, fstype, source) of this process's mount namespace. */
export async function mountTable(): Promise<Array<{ point: string; fstype: string; root: string; major: string }>> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8')
  const unescape = (s: string): string =>
    s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)))
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [pre, post] = l.split(' - ')
      const f = pre!.split(' ')
      return { point: unescape(f[4]!), root: unescape(f[3]!), major: f[2]!, fstype: post!.split(' ')[0]! }
    })
}

/**
 * The filesystem answers statfs at `path` within `ms`: run in a child process (`stat -f`),
 * which is killed when the mount hangs, so no thread of the driver stays stuck in the kernel.
 * Resolves to the errno name the kernel gave (ENOTCONN of a dead agent, EIO, ...) or
 * 'ETIMEDOUT'; undefined when it answered.
 */
export function probeStatfs(path: string, ms: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const child = spawn('stat', ['-f', '-c', '%b', path], { stdio: ['ignore', 'ignore', 'pipe'] })
    let err = ''
    child.stderr.on('data', (b: Buffer) => (err += b.toString()))
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      resolve('ETIMEDOUT')
    }, ms)
    child.on('close', (code) => {
      clearTimeout(timer)
      if (code === 0) return resolve(undefined)
      if (/not connected/i.test(err)) return resolve('ENOTCONN')
      if (/stale/i.test(err)) return resolve('ESTALE')
      if (/no such file/i.test(err)) return resolve('ENOENT')
      resolve(/input\/output/i.test(err) ? 'EIO' : `error: ${err.trim()}`)
    })
  })
}

export class AgentMount {
  private fsidCache: string | undefined

  constructor(
    readonly mnt: string,
    private readonly log: Logger,
    private readonly metrics: CsiMetrics,
    readonly timeoutMs = 10_000,
  ) {}

  get volumesDir(): string {
    return join(this.mnt, 'volumes')
  }

  volumePath(dir: string): string {
    return join(this.volumesDir, dir)
  }

  /** The filesystem's statfs (admin socket), FAILED_PRECONDITION when the mount is not up. */
  async check(): Promise<StatfsReply> {
    try {
      const entry = (await mountTable()).find((m) => m.point === this.mnt)
      if (!entry) throw new FsError('ENOTCONN', `${this.mnt} is not mounted`)
      if (entry.fstype !== 'fuse.scoutfs')
        throw new FsError('ENOTCONN', `${this.mnt} is a ${entry.fstype} mount, not a scoutfs agent's`)
      const s = await withTimeout(adminCall(this.mnt, 'GET /statfs'), this.timeoutMs, `the agent of ${this.mnt}`)
      this.fsidCache = s.fsid
      this.metrics.mountHealthy.set(1)
      return s
    } catch (e) {
      this.metrics.mountHealthy.set(0)
      const why = e instanceof Error ? e.message : String(e)
      this.log.warn({ mnt: this.mnt, err: why }, 'agent mount is not up')
      throw new CsiError(
        grpc.status.FAILED_PRECONDITION,
        `the scoutfs agent mount ${this.mnt} is not up (${why}); start the agent on this node`,
      )
    }
  }

  /** The filesystem id (16 hex digits), from the last check (checking first if never). */
  async fsid(): Promise<string> {
    return this.fsidCache ?? (await this.check()).fsid
  }

  /** The quota of a volume directory; undefined when it does not exist or has none. */
  async quota(path: string): Promise<QuotaInfo | undefined> {
    let ino: number
    try {
      ino = (await withTimeout(fsp.stat(path), this.timeoutMs, `stat ${path}`)).ino
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw e
    }
    const r = await withTimeout(adminCall(this.mnt, 'GET /quota', { ino }), this.timeoutMs, `the agent of ${this.mnt}`)
    return r.quota?.root === ino ? r.quota : undefined
  }

  /** Set (or change) the byte limit of volume directory `path`. */
  async setQuota(path: string, bytes: number): Promise<QuotaInfo> {
    const ino = (await fsp.stat(path)).ino
    const r = await withTimeout(
      adminCall(this.mnt, 'POST /quota', { ino, bytes, inodes: Number.MAX_SAFE_INTEGER }),
      this.timeoutMs,
      `the agent of ${this.mnt}`,
    )
    if (!r.quota) throw new FsError('EIO', `the agent set no quota on ${path}`)
    return r.quota
  }
}
