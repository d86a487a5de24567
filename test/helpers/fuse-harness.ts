/*
 * Helpers for tests that mount an FsApi through the FUSE adapter.
 *
 * The trap: the process that serves a FUSE mount must never touch the mount with synchronous
 * fs calls from its own event loop (the loop is then blocked inside the kernel waiting for a
 * request only the loop can answer: D state).  So tests look at the mount from child
 * processes (sh / py below) or, at most, with fs.promises (libuv threads).
 *
 * Every mount made here is remembered; unmountAll() (call it from an after/afterEach hook)
 * unmounts whatever is left, forcing it with the launcher's lazy unmount if need be, and
 * removes the temporary mountpoints (rmdir, never recursive: a mount may still be there).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rmdir } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FuseAdapter, type FuseMountOptions } from '../../node-agent/src/fuse/fuse-native-adapter.js'
import type { FsApi } from '../../node-agent/src/fs/fs-api.js'
import { forceUnmount } from '../../node-agent/src/fuse/unmount.js'

export interface Run {
  code: number
  stdout: string
  stderr: string
  /** the signal that ended the process, if any */
  signal?: string
}

export interface RunOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** kill the child after this long (default 30 s) */
  timeoutMs?: number
  /** data for the child's stdin */
  input?: string | Buffer
}

/** run a program (no shell) and collect its output; never rejects */
export function sh(cmd: string, args: string[] = [], opts: RunOptions = {}): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args,
      {
        encoding: 'utf8',
        cwd: opts.cwd,
        env: opts.env,
        timeout: opts.timeoutMs ?? 30_000,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        let code = 0
        let signal: string | undefined
        if (err) {
          const e = err as NodeJS.ErrnoException & { code?: number | string; signal?: string }
          code = typeof e.code === 'number' ? e.code : 127
          signal = e.signal ?? undefined
          if (signal) code = 128
          if (typeof e.code === 'string') stderr = `${stderr}${e.message}`
        }
        resolve({ code, stdout, stderr, signal })
      },
    )
    if (opts.input !== undefined) child.stdin?.end(opts.input)
    else child.stdin?.end()
  })
}

/** run a shell command line with bash -c */
export function bash(script: string, opts: RunOptions = {}): Promise<Run> {
  return sh('bash', ['-c', script], opts)
}

/**
 * A python3 prelude for tests: `err(f, *a)` returns f(*a) or the errno name of its OSError;
 * `out(x)` prints x as JSON.  Scripts get their arguments in sys.argv[1:].
 */
export const PY_PRELUDE = `
import os, sys, json, errno, stat, ctypes, ctypes.util
def err(f, *a, **k):
    try:
        return f(*a, **k)
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))
def out(x):
    print(json.dumps(x))
`

/** run a python3 script (with PY_PRELUDE before it); arguments become sys.argv[1:] */
export function py(script: string, args: string[] = [], opts: RunOptions = {}): Promise<Run> {
  return sh('python3', ['-c', PY_PRELUDE + '\n' + script, ...args], opts)
}

/** run a python3 script that prints one JSON document; fails with its stderr otherwise */
export async function pyJson<T = unknown>(script: string, args: string[] = [], opts: RunOptions = {}): Promise<T> {
  const r = await py(script, args, opts)
  if (r.code !== 0) throw new Error(`python3 failed (${r.code}): ${r.stderr}`)
  try {
    return JSON.parse(r.stdout) as T
  } catch {
    throw new Error(`python3 printed no JSON: ${r.stdout} ${r.stderr}`)
  }
}

/**
 * A long-running child (python3 with PY_PRELUDE) to talk to line by line: it can hold files
 * open while the test looks at the filesystem.  In the script, `ready(x)` prints x as a JSON
 * line and `wait()` blocks until the test sends a line (returned without its newline).
 */
export interface Interactive {
  /** resolves with the next JSON line the child printed */
  next<T = unknown>(timeoutMs?: number): Promise<T>
  send(line: string): void
  /** close stdin and wait for the exit */
  done(timeoutMs?: number): Promise<Run>
  kill(): void
}

const children = new Set<ChildProcess>()

export function startPy(script: string, args: string[] = []): Interactive {
  const prelude = `${PY_PRELUDE}
def ready(x=None):
    sys.stdout.write(json.dumps(x) + "\\n")
    sys.stdout.flush()
def wait():
    return sys.stdin.readline().rstrip("\\n")
`
  const child = spawn('python3', ['-u', '-c', prelude + '\n' + script, ...args], { stdio: ['pipe', 'pipe', 'pipe'] })
  children.add(child)
  let stdout = ''
  let stderr = ''
  let consumed = 0
  const waiters: Array<() => void> = []
  const wake = () => {
    for (const w of waiters.splice(0)) w()
  }
  child.stdout!.setEncoding('utf8').on('data', (d: string) => {
    stdout += d
    wake()
  })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => {
    stderr += d
  })
  let exitCode: number | null = null
  let exitSignal: string | null = null
  const exited = new Promise<void>((resolve) =>
    child.on('close', (code, sig) => {
      exitCode = code
      exitSignal = sig
      children.delete(child)
      wake()
      resolve()
    }),
  )
  child.on('error', () => undefined)
  child.stdin!.on('error', () => undefined)
  return {
    next<T>(timeoutMs = 20_000): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no line from python within ${timeoutMs} ms: ${stderr}`)),
          timeoutMs,
        )
        const check = () => {
          const nl = stdout.indexOf('\n', consumed)
          if (nl >= 0) {
            const line = stdout.slice(consumed, nl)
            consumed = nl + 1
            clearTimeout(timer)
            try {
              resolve(JSON.parse(line) as T)
            } catch {
              reject(new Error(`python printed a non-JSON line: ${line}`))
            }
            return
          }
          if (exitCode !== null || exitSignal !== null) {
            clearTimeout(timer)
            reject(new Error(`python exited (${exitCode ?? exitSignal}): ${stderr}`))
            return
          }
          waiters.push(check)
        }
        check()
      })
    },
    send(line: string) {
      child.stdin!.write(line + '\n')
    },
    async done(timeoutMs = 20_000): Promise<Run> {
      child.stdin!.end()
      await withTimeout(exited, timeoutMs, 'python exit').catch(() => child.kill('SIGKILL'))
      await exited
      return {
        code: exitCode ?? 128,
        stdout: stdout.slice(consumed),
        stderr,
        signal: exitSignal ?? undefined,
      }
    },
    kill() {
      child.kill('SIGKILL')
    },
  }
}

/** kill every child started by startPy that is still running */
export async function killChildren(): Promise<void> {
  const waits: Promise<void>[] = []
  for (const c of [...children]) {
    waits.push(
      new Promise<void>((resolve) =>
        c.exitCode !== null || c.signalCode !== null ? resolve() : c.once('close', () => resolve()),
      ),
    )
    c.kill('SIGKILL')
  }
  await withTimeout(Promise.all(waits), 10_000, 'killing children').catch(() => undefined)
}

/** fuse mounts (of any fuse type) whose mountpoint starts with prefix, from /proc/mounts */
export async function fuseMountsUnder(prefix: string): Promise<string[]> {
  const text = await readFile('/proc/mounts', 'utf8')
  const out: string[] = []
  for (const line of text.split('\n')) {
    const f = line.split(' ')
    if (f.length < 3 || !f[2].startsWith('fuse')) continue
    const mnt = f[1].replace(/\\040/g, ' ')
    if (mnt.startsWith(prefix)) out.push(mnt)
  }
  return out
}

export interface TestMount {
  adapter: FuseAdapter
  mnt: string
  /** a detached shell that force-unmounts mnt if this process dies without cleaning up */
  watchdog?: ChildProcess
  /** unmount and remove the mountpoint; safe to call twice */
  cleanup(): Promise<void>
}

const live = new Set<TestMount>()

/** mount fs at a fresh temporary directory */
export async function mountFs(fs: FsApi, opts: FuseMountOptions & { prefix?: string } = {}): Promise<TestMount> {
  const mnt = await mkdtemp(join(tmpdir(), opts.prefix ?? 'scoutfs-fuse-'))
  let adapter: FuseAdapter
  try {
    adapter = await FuseAdapter.mount(fs, mnt, opts)
  } catch (e) {
    await forceUnmount(mnt)
    await rmdir(mnt).catch(() => undefined)
    throw e
  }
  let done: Promise<void> | undefined
  const m: TestMount = {
    adapter,
    mnt,
    watchdog: startWatchdog(mnt),
    cleanup: () => {
      if (!done) done = cleanupMount(m)
      return done
    },
  }
  live.add(m)
  return m
}

async function cleanupMount(m: TestMount): Promise<void> {
  live.delete(m)
  try {
    await withTimeout(m.adapter.unmount(), 15_000, 'unmount')
  } catch {
    // fall through to forcing it
  }
  if ((await fuseMountsUnder(m.mnt)).length > 0) await forceUnmount(m.mnt)
  await rmdir(m.mnt).catch(() => undefined)
  if (m.watchdog?.pid !== undefined && m.watchdog.exitCode === null) {
    try {
      process.kill(m.watchdog.pid, 'SIGKILL')
    } catch {
      // already gone
    }
  }
}

/**
 * If this process dies (even by SIGKILL) with the mount still there, the mount would stay
 * behind dead ("Transport endpoint is not connected"): a detached shell waits for our pid to
 * go away and then unmounts it.  cleanup() kills the shell.
 */
function startWatchdog(mnt: string): ChildProcess | undefined {
  try {
    const script =
      'while kill -0 "$1" 2>/dev/null; do sleep 0.5; done; ' +
      'fusermount -uz "$2" 2>/dev/null || umount -l "$2" 2>/dev/null; rmdir "$2" 2>/dev/null; exit 0'
    const child = spawn('sh', ['-c', script, 'scoutfs-fuse-watchdog', String(process.pid), mnt], {
      detached: true,
      stdio: 'ignore',
    })
    child.on('error', () => undefined)
    child.unref()
    return child
  } catch {
    return undefined
  }
}

/** unmount every mount made by mountFs that is still there */
export async function unmountAll(): Promise<void> {
  await killChildren()
  for (const m of [...live]) await m.cleanup()
}

/** mount, run fn, always clean up */
export async function withMount<T>(
  fs: FsApi,
  fn: (m: TestMount) => Promise<T>,
  opts: FuseMountOptions = {},
): Promise<T> {
  const m = await mountFs(fs, opts)
  try {
    return await fn(m)
  } finally {
    await m.cleanup()
  }
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${what} timed out after ${ms} ms`)), ms)
    p.then(
      (v) => {
        clearTimeout(t)
        resolve(v)
      },
      (e) => {
        clearTimeout(t)
        reject(e)
      },
    )
  })
}
