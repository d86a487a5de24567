/*
 * The shared fixture of the POSIX-semantics mount tests (test/mount/posix-*.test.ts): one
 * `scoutfs mount --foreground` agent per file (before() mounts, after() unmounts even when a
 * test failed and checks the agent logged no errors), a fresh directory per test, and the
 * small helpers those files share.
 */
import assert from 'node:assert/strict'
import { type Agent, type Devices } from './agent.js'
import { testFrontend } from './frontend.js'
import { sh } from './fuse-harness.js'
import { agentPerSuite, errorLines, freshDirs } from './mount-tests.js'

/** `ls -fai DIR` as name -> inode number (getdents order, with . and ..) */
export async function lsInodes(dir: string): Promise<Map<string, number>> {
  const r = await sh('ls', ['-fai', '--', dir])
  assert.equal(r.code, 0, r.stderr)
  const m = new Map<string, number>()
  for (const line of r.stdout.split('\n')) {
    const x = /^\s*(\d+)\s+(.*)$/.exec(line)
    if (x) m.set(x[2]!, Number(x[1]))
  }
  return m
}

/**
 * A test of behaviour the fuse-native binding cannot deliver (docs/mount.md lists these; our
 * own low-level binding, the default frontend, delivers them).  When the tests run on
 * fuse-native (SCOUTFS_TEST_FRONTEND=fuse-native) it is skipped, loudly, unless
 * SCOUTFS_TEST_KNOWN_LIMITS=1 runs it; it is not counted as working.
 */
export function knownLimit(ctx: Mocha.Context, what: string): void {
  if (testFrontend() !== 'fuse-native' || process.env.SCOUTFS_TEST_KNOWN_LIMITS === '1') return
  console.log(`      KNOWN LIMIT (fuse-native): ${what}; run with SCOUTFS_TEST_KNOWN_LIMITS=1 to see it fail`)
  ctx.skip()
}

/**
 * Call inside a describe block: one agent for the block, handed to `on` in before().  after()
 * first checks the agent's log for error-level lines, then (agentPerSuite) stops it and
 * asserts nothing is left mounted — whether or not the tests passed.  Returns the maker of a
 * fresh directory on the mount for one test.
 */
export function posixMount(on: (dev: Devices, agent: Agent) => void = () => {}): (name: string) => string {
  let agent: Agent | undefined
  after(function () {
    if (!agent) return
    assert.deepEqual(errorLines(agent.log()), [], 'error-level lines in the agent log')
  })
  agentPerSuite((d, a) => {
    agent = a
    on(d, a)
  })
  return freshDirs(() => agent!.mnt)
}
