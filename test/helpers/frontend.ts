/*
 * Which FUSE frontend the mount tests run on: the agent's default (fuse/frontends.ts), or
 * the one SCOUTFS_TEST_FRONTEND names (lowlevel or fuse-native), which the agent helpers then
 * pass as `-o frontend=`.  Known limits of fuse-native are skipped only when it is the one.
 */
import { DEFAULT_FRONTEND, isFrontendName, type FrontendName } from '../../node-agent/src/fuse/frontends.js'

export function testFrontend(): FrontendName {
  const v = process.env.SCOUTFS_TEST_FRONTEND
  if (v === undefined || v === '') return DEFAULT_FRONTEND
  if (!isFrontendName(v)) throw new Error(`SCOUTFS_TEST_FRONTEND=${v}: give lowlevel or fuse-native`)
  return v
}

/** `options` with frontend= added when SCOUTFS_TEST_FRONTEND asks for one */
export function withTestFrontend(options: string | undefined): string | undefined {
  const v = process.env.SCOUTFS_TEST_FRONTEND
  if (!v) return options
  return [options, `frontend=${testFrontend()}`].filter(Boolean).join(',')
}
