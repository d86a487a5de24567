/*
 * The shared fixture of the FUSE-adapter tests (test/fuse/adapter-*.test.ts): a logger that
 * records errors, small wait/exit-status helpers, and memFsMount(), one MemFs-backed FUSE
 * mount per describe block (before() mounts; after() unmounts even when a test failed).
 */
import assert from 'node:assert/strict'
import { type FuseLogger } from '../../node-agent/src/fuse/fuse-native-adapter.js'
import { MemFs } from './mem-fs.js'
import { fuseMountsUnder, mountFs, unmountAll, type TestMount } from './fuse-harness.js'

export const who = { uid: 0, gid: 0 }

export class RecordingLog implements FuseLogger {
  errors: string[] = []
  warnings: string[] = []
  error(msg: string, err?: unknown): void {
    this.errors.push(`${msg}: ${err instanceof Error ? err.message : String(err)}`)
  }
  warn(msg: string): void {
    this.warnings.push(msg)
  }
}

export async function waitFor(what: string, cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

export function ok(r: { code: number; stdout: string; stderr: string }): string {
  assert.equal(r.code, 0, `exit ${r.code}: ${r.stderr}`)
  return r.stdout
}

/** What memFsMount() hands a describe block in before(). */
export interface MemFsMount {
  fs: MemFs
  m: TestMount
  mnt: string
  log: RecordingLog
}

/**
 * One traced MemFs, mounted through the adapter, for a describe block; `on` receives it in
 * before().  after() first (with `endCheck`) asserts that the fs holds no open references and
 * the adapter no handles or hidden names, then — whatever that found — unmounts and asserts
 * nothing is left mounted.
 */
export function memFsMount(on: (x: MemFsMount) => void, endCheck = false): void {
  let x: MemFsMount | undefined
  before(async function () {
    const fs = new MemFs({ trace: true })
    const log = new RecordingLog()
    const m = await mountFs(fs, { log })
    x = { fs, m, mnt: m.mnt, log }
    on(x)
  })
  after(async function () {
    try {
      if (endCheck && x) {
        const { fs, m, log } = x
        await waitFor('all releases', () => fs.totalOpens() === 0)
        assert.equal(m.adapter.openHandles(), 0)
        assert.equal(m.adapter.hiddenCount(), 0)
        assert.equal(fs.lifetimeCalls.get('open'), fs.lifetimeCalls.get('release'))
        assert.ok(!log.errors.some((e) => /release/.test(e)), log.errors.join('; '))
      }
    } finally {
      await unmountAll()
      if (x) assert.deepEqual(await fuseMountsUnder(x.mnt), [], 'mount left behind')
    }
  })
}
