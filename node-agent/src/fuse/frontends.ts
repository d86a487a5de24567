/*
 * The FUSE frontends an agent can serve the filesystem through, by the name the mount option
 * `frontend=` takes, and the default one.
 */
import type { FrontendFactory } from '../fs/frontend.js'
import { fuse3Frontend } from './fuse3-adapter.js'
import { fuseNativeFrontend } from './fuse-native-adapter.js'

export const FRONTENDS = {
  /** our libfuse 3 low-level binding (node-agent/native/fuse3): caching kept coherent by notifies */
  lowlevel: fuse3Frontend,
  /** fuse-native (libfuse 2's path API): every kernel cache off */
  'fuse-native': fuseNativeFrontend,
} as const satisfies Record<string, FrontendFactory>

export type FrontendName = keyof typeof FRONTENDS

export const DEFAULT_FRONTEND: FrontendName = 'lowlevel'

export function isFrontendName(s: string): s is FrontendName {
  return Object.hasOwn(FRONTENDS, s)
}
