/*
 * What the stress engine's parts share (test/stress/engine.ts, cycle.ts, checks.ts): errnos,
 * the operation deadline, the python xattr helper of each mount, held descriptors, the tally
 * of counts and failures, and the known limits it counts instead of failing.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { promises as fsp } from 'node:fs'
import { constants as osConstants } from 'node:os'
import type { KindCounts } from './engine.js'

export const KNOWN_FSTAT_BY_PATH =
  'held-fd fstat ENOTDIR (libfuse 2 path API: fstat looks up the path the file had on this mount, which another mount changed)'
export const KNOWN_HELD_EIO =
  'held-fd EIO (libfuse 2 path API: its name retyped on another mount, kernel marks the node bad)'
export const KNOWN_PATH_EIO =
  'EIO by path (libfuse 2 path API: the name changed type on another mount while this kernel held its node; the agents logged no error)'
export const KNOWN_MOVED_DIR_ESTALE =
  'ESTALE by path (a directory another mount had just renamed or removed was still cached here under that name, and the retry met it too; docs/fuse.md)'
export const KNOWN_RMDIR_HOLDER = 'rmdir ENOTEMPTY on the mount holding a file of the dir open (fuse-native limit)'
/** xattr names user.s0.. */
export const XATTRS = 3
export const MAX_FAILURES = 200

export function errnoOf(e: unknown): string {
  const { code, errno } = (e ?? {}) as { code?: unknown; errno?: unknown }
  // libuv has no name for some errnos (ESTALE): Node calls them 'Unknown system error -116'
  if (typeof code === 'string' && code.startsWith('Unknown system error') && typeof errno === 'number') {
    const name = Object.entries(osConstants.errno).find(([, n]) => n === -errno)?.[0]
    if (name) return name
  }
  return typeof code === 'string' ? code : `non-errno error: ${String(e)}`
}

export const HUNG = Symbol('hung')

/** `p`, or HUNG once `ms` passed. */
export async function deadline<T>(p: Promise<T>, ms: number): Promise<T | typeof HUNG> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<typeof HUNG>((r) => (timer = setTimeout(() => r(HUNG), ms)))])
  } finally {
    clearTimeout(timer)
  }
}

/** One python3 process per mount answering setxattr/getxattr requests (node has no xattr API). */
export class XattrHelper {
  private proc: ChildProcess
  private buf = ''
  private next = 0
  private waiting = new Map<number, (r: [string, string | null]) => void>()

  constructor() {
    const py = String.raw`
import sys, os, json, errno
for line in sys.stdin:
    i, op, path, name, val = json.loads(line)
    try:
        if op == 'set':
            os.setxattr(path, name, bytes.fromhex(val))
            r = [i, 'OK', None]
        else:
            r = [i, 'OK', os.getxattr(path, name).hex()]
    except OSError as e:
        r = [i, errno.errorcode.get(e.errno, str(e.errno)), None]
    sys.stdout.write(json.dumps(r) + '\n')
    sys.stdout.flush()
`
    this.proc = spawn('python3', ['-c', py], { stdio: ['pipe', 'pipe', 'inherit'] })
    this.proc.stdout!.on('data', (c: Buffer) => {
      this.buf += c.toString()
      let nl: number
      while ((nl = this.buf.indexOf('\n')) >= 0) {
        const [i, res, val] = JSON.parse(this.buf.slice(0, nl)) as [number, string, string | null]
        this.buf = this.buf.slice(nl + 1)
        this.waiting.get(i)?.([res, val])
        this.waiting.delete(i)
      }
    })
    this.proc.on('exit', () => {
      for (const w of this.waiting.values()) w(['ENOTCONN (xattr helper exited)', null])
      this.waiting.clear()
    })
  }

  /** 'OK' (and the value's hex for get) or the errno's name. */
  call(op: 'set' | 'get', path: string, name: string, val = ''): Promise<[string, string | null]> {
    const i = this.next++
    return new Promise((res) => {
      this.waiting.set(i, res)
      this.proc.stdin!.write(JSON.stringify([i, op, path, name, val]) + '\n')
    })
  }

  stop(): void {
    this.proc.stdin!.end()
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL')
  }
}

export interface Held {
  fh: fsp.FileHandle
  mount: number
  rel: string
  /** when it was opened (Date.now()) */
  since: number
}

/** Counts and failures of one run. */
export class Tally {
  ops = 0
  byKind: Record<string, KindCounts> = {}
  errnos: Record<string, number> = {}
  knownLimits: Record<string, number> = {}
  failures: string[] = []

  private kind(k: string): KindCounts {
    return (this.byKind[k] ??= { ok: 0, errnos: {} })
  }

  ok(k: string): void {
    this.ops++
    this.kind(k).ok++
  }

  err(k: string, errno: string): void {
    this.ops++
    const c = this.kind(k)
    c.errnos[errno] = (c.errnos[errno] ?? 0) + 1
    this.errnos[errno] = (this.errnos[errno] ?? 0) + 1
  }

  known(what: string): void {
    this.knownLimits[what] = (this.knownLimits[what] ?? 0) + 1
  }

  /** failures found (only the first MAX_FAILURES are kept) */
  failed = 0

  fail(msg: string): void {
    if (++this.failed <= MAX_FAILURES) this.failures.push(msg)
  }
}

/**
 * One line per entry of the tree under `root`, sorted by path: type, inode, nlink, its user.s*
 * xattrs (as `xattrs` reads them), and for files size and content hash.
 */
