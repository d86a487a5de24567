/*
 * A minimal fuse-native passthrough filesystem for the filesystem benchmark (bench/fs.ts):
 * every op is forwarded to a backing directory with fs.promises.  It runs as a process of its
 * own (the process serving a FUSE mount must not do I/O on it), so the benchmark starts it:
 *
 *   node dist/bench/passthrough.js --backing DIR --mnt MNT [--options same|default]
 *
 *   --options same     the mount options scoutfs uses (FuseAdapter.optionList: use_ino,
 *                      direct_io, attr_timeout=0, entry_timeout=0, negative_timeout=0,
 *                      default_permissions, allow_other as root, big_writes, max_write=131072),
 *                      injected by overriding fuse-native's _fuseOptions() as fuse.ts does
 *   --options default  whatever fuse-native builds from an empty options object: no -o at
 *                      all, so libfuse 2's defaults (1 s attribute/entry cache, page cache,
 *                      4 KiB page-cache writes without big_writes)
 *
 * Either way the binding's per-op JS timeout is off ({ timeout: false }), as scoutfs has it.
 * When mounted it prints one JSON line {"mounted":MNT,"options":"..."} on stdout; SIGTERM or
 * SIGINT unmounts and exits.  Ops the benchmark never uses (xattrs) are not implemented
 * (ENOSYS).
 */
import { constants as fsConstants, promises as fsp, type Stats } from 'node:fs'
import type { FileHandle } from 'node:fs/promises'
import { resolve } from 'node:path'
import { FuseAdapter } from '../node-agent/src/fuse/fuse-native-adapter.js'
import { forceUnmount } from '../node-agent/src/fuse/unmount.js'

type Cb = (...args: unknown[]) => void
interface FuseNativeInstance {
  mount(cb: (err: Error | null) => void): void
  unmount(cb: (err: Error | null) => void): void
}
interface FuseNativeClass {
  new (mnt: string, ops: Record<string, unknown>, opts: Record<string, unknown>): FuseNativeInstance
}
// eslint-disable-next-line @typescript-eslint/no-require-imports
const FuseNative: FuseNativeClass = require('fuse-native')

const EIO = -5
const ENOSYS = -38
const EBADF = -9

/** the -o list for a mode: scoutfs's own options (fsname/subtype renamed), or none at all */
export function passthroughOptions(mode: 'same' | 'default'): string[] {
  if (mode === 'default') return []
  return FuseAdapter.optionList({ fsname: 'passthrough' }).map((o) =>
    o.startsWith('subtype=') ? 'subtype=passthrough' : o,
  )
}

/** a node fs error as the negative errno fuse-native wants */
function errno(e: unknown): number {
  const n = (e as NodeJS.ErrnoException | undefined)?.errno
  return typeof n === 'number' && n < 0 ? n : EIO
}

function makeOps(backing: string): Record<string, unknown> {
  const real = (p: string): string => (p === '/' ? backing : backing + p)
  const handles = new Map<number, FileHandle>()
  const keep = (fh: FileHandle): number => {
    handles.set(fh.fd, fh)
    return fh.fd
  }
  /** run fn, answer cb(0, ...result) or cb(-errno) */
  const op =
    <A extends unknown[]>(fn: (...a: A) => Promise<unknown[] | void>) =>
    (...args: unknown[]): void => {
      const cb = args[args.length - 1] as Cb
      fn(...(args.slice(0, -1) as A)).then(
        (r) => cb(0, ...(r ?? [])),
        (e: unknown) => cb(errno(e)),
      )
    }
  /** read/write answer with the byte count (or -errno) in the error position */
  const io =
    (fn: (fh: FileHandle, buf: Buffer, len: number, pos: number) => Promise<number>) =>
    (_path: unknown, fd: unknown, buf: unknown, len: unknown, pos: unknown, cb: unknown): void => {
      const h = handles.get(fd as number)
      if (!h) return (cb as Cb)(EBADF)
      fn(h, buf as Buffer, len as number, pos as number).then(
        (n) => (cb as Cb)(n),
        (e: unknown) => (cb as Cb)(errno(e)),
      )
    }
  const stat = (s: Stats): Stats => s
  return {
    init: (cb: Cb) => cb(0),
    access: op(async (p: string, mode: number) => fsp.access(real(p), mode)),
    statfs: op(async (p: string) => {
      const s = await fsp.statfs(real(p))
      const cap = (n: number): number => Math.min(n, 0xffffffff)
      return [
        {
          bsize: s.bsize,
          frsize: s.bsize,
          blocks: cap(s.blocks),
          bfree: cap(s.bfree),
          bavail: cap(s.bavail),
          files: cap(s.files),
          ffree: cap(s.ffree),
          favail: cap(s.ffree),
          fsid: 0,
          flag: 0,
          namemax: 255,
        },
      ]
    }),
    // fuse-native answers fgetattr with ops.getattr(path) too
    getattr: op(async (p: string) => [stat(await fsp.lstat(real(p)))]),
    fgetattr: op(async (p: string) => [stat(await fsp.lstat(real(p)))]),
    readdir: op(async (p: string) => {
      const names = await fsp.readdir(real(p))
      return [['.', '..', ...names], []]
    }),
    open: op(async (p: string, flags: number) => [keep(await fsp.open(real(p), flags))]),
    create: op(async (p: string, mode: number) => [
      keep(await fsp.open(real(p), fsConstants.O_CREAT | fsConstants.O_RDWR, mode & 0o7777)),
    ]),
    release: op(async (_p: string, fd: number) => {
      const h = handles.get(fd)
      handles.delete(fd)
      await h?.close()
    }),
    releasedir: (_p: unknown, _fd: unknown, cb: Cb) => cb(0),
    read: io((h, buf, len, pos) => h.read(buf, 0, len, pos).then((r) => r.bytesRead)),
    write: io((h, buf, len, pos) => h.write(buf, 0, len, pos).then((r) => r.bytesWritten)),
    flush: (_p: unknown, _fd: unknown, cb: Cb) => cb(0),
    fsync: op(async (_p: string, datasync: number, fd: number) => {
      const h = handles.get(fd)
      if (!h) throw Object.assign(new Error('bad fd'), { errno: EBADF })
      await (datasync ? h.datasync() : h.sync())
    }),
    truncate: op(async (p: string, size: number) => fsp.truncate(real(p), size)),
    ftruncate: op(async (p: string, fd: number, size: number) => {
      const h = handles.get(fd)
      await (h ? h.truncate(size) : fsp.truncate(real(p), size))
    }),
    utimens: op(async (p: string, atime: number, mtime: number) => fsp.utimes(real(p), atime / 1000, mtime / 1000)),
    chmod: op(async (p: string, mode: number) => fsp.chmod(real(p), mode & 0o7777)),
    chown: op(async (p: string, uid: number, gid: number) => fsp.lchown(real(p), uid | 0, gid | 0)),
    readlink: op(async (p: string) => [await fsp.readlink(real(p))]),
    mknod: op(async (p: string, mode: number) => {
      // node has no mknod: regular files only (all the benchmark makes)
      if ((mode & 0o170000) !== 0o100000) throw Object.assign(new Error('mknod'), { errno: ENOSYS })
      await (
        await fsp.open(real(p), fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_WRONLY, mode & 0o7777)
      ).close()
    }),
    mkdir: op(async (p: string, mode: number) => fsp.mkdir(real(p), mode & 0o7777)),
    rmdir: op(async (p: string) => fsp.rmdir(real(p))),
    unlink: op(async (p: string) => fsp.unlink(real(p))),
    rename: op(async (s: string, d: string) => fsp.rename(real(s), real(d))),
    link: op(async (s: string, d: string) => fsp.link(real(s), real(d))),
    symlink: op(async (target: string, p: string) => fsp.symlink(target, real(p))),
  }
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2)
  const arg = (n: string): string | undefined => {
    const i = argv.indexOf(`--${n}`)
    return i >= 0 ? argv[i + 1] : undefined
  }
  const backingArg = arg('backing')
  const mntArg = arg('mnt')
  const mode = arg('options') ?? 'same'
  if (!backingArg || !mntArg || (mode !== 'same' && mode !== 'default')) {
    console.error('usage: node dist/bench/passthrough.js --backing DIR --mnt MNT [--options same|default]')
    process.exit(2)
  }
  const backing = resolve(backingArg)
  const mnt = resolve(mntArg)
  await fsp.mkdir(mnt, { recursive: true })
  const list = passthroughOptions(mode)
  const optString = list.length ? '-o' + list.join(',') : ''
  class PassFuse extends FuseNative {
    _fuseOptions(): string {
      return optString
    }
  }
  const fuse = new PassFuse(mnt, makeOps(backing), { timeout: false })
  await new Promise<void>((res, rej) => fuse.mount((e) => (e ? rej(e) : res())))
  process.stdout.write(JSON.stringify({ mounted: mnt, options: list.join(',') }) + '\n')
  let stopping = false
  const stop = (): void => {
    if (stopping) return
    stopping = true
    fuse.unmount(async (e) => {
      if (e) await forceUnmount(mnt)
      process.exit(0)
    })
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

if (require.main === module) {
  main().catch((e: unknown) => {
    console.error('passthrough:', e)
    process.exit(1)
  })
}
