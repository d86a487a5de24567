/*
 * File-backed devices for launched agents: sparse metadata and data files, created at a given
 * size and formatted with `scoutfs mkfs` (optionally with a server address in quorum slot 0,
 * which a cluster needs), in a directory of the caller's or a fresh temporary one.
 */
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FsError } from '../../util/errors.js'
import { freePort } from './ports.js'
import { runScoutfs, type CliResult } from './scoutfs-cli.js'

export interface DevicePaths {
  meta: string
  data: string
}

export interface Devices extends DevicePaths {
  /** the directory holding both files (and, by convention, the agents' mountpoints) */
  dir: string
  /** the server's address in quorum slot 0 (HOST:PORT), when formatted for a cluster */
  serverAddr?: string
  /** remove `dir` and everything in it (nothing may be mounted below it) */
  remove(): void
}

/** Create `path` as a sparse file of `bytes`; with `exclusive`, fail when it exists. */
export function createSparse(path: string, bytes: number, exclusive = false): void {
  writeFileSync(path, '', exclusive ? { flag: 'wx' } : undefined)
  truncateSync(path, bytes)
}

export interface MkfsOptions {
  /** quorum slots (-Q N) */
  quorumSlots: number
  /** the address of quorum slot 0 (-Q 0,HOST,PORT), for a cluster */
  server?: { host: string; port: number }
}

/** `scoutfs mkfs` on the two devices; the CLI's result, whatever it is. */
export function mkfs(dev: DevicePaths, o: MkfsOptions): Promise<CliResult> {
  const args = ['mkfs', '-Q', String(o.quorumSlots)]
  if (o.server) args.push('-Q', `0,${o.server.host},${o.server.port}`)
  return runScoutfs([...args, dev.meta, dev.data])
}

export interface MakeDevicesOptions {
  /** where to put meta.img and data.img; a fresh directory under os.tmpdir() when not given */
  dir?: string
  /** the fresh directory's name prefix */
  prefix?: string
  metaBytes: number
  dataBytes: number
  quorumSlots: number
  /** format for a cluster: quorum slot 0 at 127.0.0.1:<port> (a free port when 0) */
  serverPort?: number
}

/** Fresh sparse devices, formatted; the directory is removed again when this fails. */
export async function makeDevices(o: MakeDevicesOptions): Promise<Devices> {
  const fresh = o.dir === undefined
  const dir = o.dir ?? mkdtempSync(join(tmpdir(), o.prefix ?? 'scoutfs-'))
  const remove = (): void => {
    if (fresh) rmSync(dir, { recursive: true, force: true })
    else for (const f of [meta, data]) rmSync(f, { force: true })
  }
  const meta = join(dir, 'meta.img')
  const data = join(dir, 'data.img')
  try {
    createSparse(meta, o.metaBytes)
    createSparse(data, o.dataBytes)
    const port = o.serverPort === undefined ? undefined : o.serverPort || (await freePort())
    const server = port === undefined ? undefined : { host: '127.0.0.1', port }
    const r = await mkfs({ meta, data }, { quorumSlots: o.quorumSlots, server })
    if (r.code !== 0) throw new FsError('EIO', `mkfs failed (${r.code ?? r.signal}): ${r.stderr}`)
    return { dir, meta, data, serverAddr: server && `${server.host}:${server.port}`, remove }
  } catch (e) {
    remove()
    throw e
  }
}
