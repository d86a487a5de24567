/*
 * Shared pieces of the tests that drive a real mount: python snippets run against a
 * directory with test/helpers/posix.py loaded, the agent log's error lines, and walk-inodes
 * output parsed into entries.
 */
import assert from 'node:assert/strict'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { makeDevices, scoutfs, startAgent, stopAllAgents, type Agent, type Devices } from './agent.js'
import { fuseMountsUnder, pyJson } from './fuse-harness.js'

export const HELPER = join(__dirname, '..', '..', '..', 'test', 'helpers', 'posix.py')

/** strip the common indentation of a template literal (python cares) */
export function dedent(s: string): string {
  const lines = s.replace(/^\n/, '').split('\n')
  const ind = Math.min(...lines.filter((l) => l.trim() !== '').map((l) => /^ */.exec(l)![0].length))
  return lines.map((l) => l.slice(ind)).join('\n')
}

/**
 * Run a python snippet on directory `dir` (D in the script, p(*names) joins below it), with
 * E/wfile/rfile/write_all from test/helpers/posix.py and umask 0; it must out() one JSON value.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export async function runPy<T = any>(dir: string, script: string, ...args: string[]): Promise<T> {
  const pre = dedent(String.raw`
    import time, hashlib, random
    exec(compile(open(sys.argv[1]).read(), sys.argv[1], 'exec'))
    D = sys.argv[2]
    ARGS = sys.argv[3:]
    def p(*x): return os.path.join(D, *x)
    os.umask(0)
  `)
  return pyJson<T>(pre + '\n' + dedent(script), [HELPER, dir, ...args], { timeoutMs: 150_000 })
}

/** error-level lines (pino level >= 50) of an agent's log */
export function errorLines(log: string): string[] {
  return log.split('\n').filter((l) => {
    const m = /"level":(\d+)/.exec(l)
    return m !== null && Number(m[1]) >= 50
  })
}

export interface WalkEntry {
  seq: number
  ino: number
}

/** `scoutfs walk-inodes INDEX FIRST LAST MNT`, parsed */
export async function walkInodes(
  mnt: string,
  index: 'meta_seq' | 'data_seq',
  first = '0',
  last = '-1',
): Promise<WalkEntry[]> {
  const r = await scoutfs('walk-inodes', index, first, last, mnt)
  assert.equal(r.code, 0, r.stderr)
  const out: WalkEntry[] = []
  for (const line of r.stdout.split('\n')) {
    const m = /^(\d+)\s+(\d+)\s+(\d+)\s+(\d+)$/.exec(line.trim())
    if (m) out.push({ seq: Number(m[2]), ino: Number(m[4]) })
  }
  return out
}

/**
 * One agent for a describe block: before() formats devices and mounts them and hands both to
 * `on`; after() stops every agent and asserts nothing is left mounted under the devices.
 */
export function agentPerSuite(on: (dev: Devices, agent: Agent) => void): void {
  let devDir: string | undefined
  before(async () => {
    const dev = await makeDevices()
    devDir = dev.dir
    on(dev, await startAgent(dev))
  })
  after(async () => {
    await stopAllAgents()
    if (devDir) assert.deepEqual(await fuseMountsUnder(devDir), [], 'no mount left behind')
  })
}

/** A maker of fresh, numbered directories below the mount `mnt()` returns, one per test. */
export function freshDirs(mnt: () => string): (name: string) => string {
  let n = 0
  return (name) => {
    const d = join(mnt(), `${++n}-${name}`)
    mkdirSync(d)
    return d
  }
}
