/*
 * The mount table and the way to force a FUSE mount away (for the adapter, the launcher,
 * tests and benchmarks): /proc/mounts
 * read (octal escapes decoded), and a lazy unmount (fusermount3 -uz, fusermount -uz, then
 * umount -l) run as child processes, in an async and a synchronous flavour (the latter for
 * process 'exit' handlers, where nothing asynchronous runs any more).
 */
import { execFile, spawnSync } from 'node:child_process'
import { readFileSync, promises as fsp } from 'node:fs'

interface MountEntry {
  mnt: string
  type: string
}

function parseMounts(text: string): MountEntry[] {
  const out: MountEntry[] = []
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    if (f.length < 3 || !f[1]) continue
    out.push({
      mnt: f[1].replace(/\\([0-7]{3})/g, (_m, o: string) => String.fromCharCode(parseInt(o, 8))),
      type: f[2] ?? '',
    })
  }
  return out
}

function readMountsSync(): MountEntry[] {
  try {
    return parseMounts(readFileSync('/proc/mounts', 'utf8'))
  } catch {
    return []
  }
}

async function readMounts(): Promise<MountEntry[]> {
  try {
    return parseMounts(await fsp.readFile('/proc/mounts', 'utf8'))
  } catch {
    return []
  }
}

/** Every mountpoint in /proc/mounts. */
export function mountedPaths(): Set<string> {
  return new Set(readMountsSync().map((m) => m.mnt))
}

export async function isMounted(mnt: string): Promise<boolean> {
  return (await readMounts()).some((m) => m.mnt === mnt)
}

export function isMountedSync(mnt: string): boolean {
  return readMountsSync().some((m) => m.mnt === mnt)
}

/** Mountpoints at or below `dir` (FUSE mounts only with `fuseOnly`). */
export async function mountsBelow(dir: string, fuseOnly = false): Promise<string[]> {
  const prefix = dir.endsWith('/') ? dir : `${dir}/`
  return (await readMounts())
    .filter((m) => (m.mnt === dir || m.mnt.startsWith(prefix)) && (!fuseOnly || m.type.startsWith('fuse')))
    .map((m) => m.mnt)
}

/** The ways to force a mount away, tried in order. */
const UNMOUNTS: ReadonlyArray<readonly [string, (mnt: string) => string[]]> = [
  ['fusermount3', (mnt) => ['-uz', mnt]],
  ['fusermount', (mnt) => ['-uz', mnt]],
  ['umount', (mnt) => ['-l', mnt]],
]

function runQuietly(cmd: string, args: string[]): Promise<void> {
  return new Promise((res) => {
    execFile(cmd, args, { timeout: 30_000, killSignal: 'SIGKILL' }, () => res())
  })
}

/** Lazily unmount `mnt` when it is mounted; true when it is not mounted afterwards. */
export async function forceUnmount(mnt: string): Promise<boolean> {
  if (!(await isMounted(mnt))) return true
  for (const [cmd, args] of UNMOUNTS) {
    await runQuietly(cmd, args(mnt))
    if (!(await isMounted(mnt))) return true
  }
  return false
}

/** forceUnmount, synchronously. */
export function forceUnmountSync(mnt: string): boolean {
  if (!isMountedSync(mnt)) return true
  for (const [cmd, args] of UNMOUNTS) {
    spawnSync(cmd, args(mnt), { stdio: 'ignore', timeout: 30_000 })
    if (!isMountedSync(mnt)) return true
  }
  return false
}
