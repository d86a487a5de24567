/*
 * The default frontend of an agent: fuse-native (fuse/fuse-native-adapter.ts) behind the
 * Frontend interface of fs/frontend.ts.  The path-based adapter keeps only a path -> ino table
 * (every kernel timeout is 0), so forgetting an entry forgets every path through its
 * directory.  Once FuseAdapter implements Frontend itself, this wrapper goes.
 */
import type { FsApi } from '../fs/fs-api.js'
import type { Frontend, FrontendFactory, FrontendOptions } from '../fs/frontend.js'
import { FuseAdapter } from '../fuse/fuse-native-adapter.js'

export const fuseNativeFrontend: FrontendFactory = async (
  fs: FsApi,
  mountpoint: string,
  o: FrontendOptions,
): Promise<Frontend> => {
  const fuse = await FuseAdapter.mount(fs, mountpoint, { debug: o.debug, fsname: o.fsname, log: o.log })
  return {
    invalidateInodes: (first, last) => fuse.invalidateInodes(first, last),
    invalidateEntry: (parent) => fuse.invalidateInodes(parent, parent),
    unmount: () => fuse.unmount(),
  }
}
