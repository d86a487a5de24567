/*
 * File-backed devices for launched agents: sparse metadata and data files, created at a given
 * size and formatted with `scoutfs mkfs` (optionally with addresses for the first quorum slots,
 * which a cluster's members need), in a directory of the caller's or a fresh temporary one.
 */
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { FsError } from '../../util/errors.js'
import { localCerts } from '../../net/certs.js'
import { FileDevice } from '../../storage/device.js'
import { readSuper } from '../../storage/super.js'
import { freePort } from './ports.js'
import { runScoutfs, type CliResult } from './scoutfs-cli.js'

export interface DevicePaths {
  meta: string
  data: string
}

export interface Devices extends DevicePaths {
  /** the directory holding both files (and, by convention, the agents' mountpoints) */
  dir: string
  /** the address of quorum slot 0 (HOST:PORT), when formatted for a cluster */
  serverAddr?: string
  /** the addresses of the slots that have one (slot i at index i) */
  quorumAddrs?: string[]
  /** for a cluster: the mount options of its mutual TLS (a CA and one agent certificate in DIR/tls) */
  tlsOptions?: string
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
  /** addresses of slots 0, 1, ... (-Q NR,HOST,PORT each), for a cluster */
  members?: Array<{ host: string; port: number }>
}

/** `scoutfs mkfs` on the two devices; the CLI's result, whatever it is. */
export function mkfs(dev: DevicePaths, o: MkfsOptions): Promise<CliResult> {
  const args = ['mkfs', '-Q', String(o.quorumSlots)]
  for (const [i, m] of (o.members ?? []).entries()) args.push('-Q', `${i},${m.host},${m.port}`)
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
  /** with serverPort: how many slots get an address (slots 1.. at free ports; default 1) */
  members?: number
  /** the members' hosts, slot by slot (default 127.0.0.1) */
  memberHosts?: string[]
}

/** The filesystem's fsid, from the super block on `meta`. */
export async function fsidOf(meta: string): Promise<bigint> {
  const dev = await FileDevice.open(meta, { readOnly: true })
  try {
    return (await readSuper(dev)).fsid
  } finally {
    await dev.close()
  }
}

/**
 * A CA and one agent certificate (named `agent`, for every agent) of the filesystem on `meta`
 * in `dir`; returns the mount options that use them.
 */
export async function clusterCerts(meta: string, dir: string, hosts: readonly string[] = []): Promise<string> {
  const r = await localCerts({
    dir,
    fsid: await fsidOf(meta),
    agents: ['agent'],
    hosts: ['localhost', '127.0.0.1', ...hosts],
  })
  const a = r.agents[0]!
  return `tls_ca=${r.ca.cert},tls_cert=${a.cert},tls_key=${a.key}`
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
    const members: Array<{ host: string; port: number }> = []
    if (o.serverPort !== undefined) {
      const host = (i: number): string => o.memberHosts?.[i] ?? '127.0.0.1'
      members.push({ host: host(0), port: o.serverPort || (await freePort()) })
      for (let i = 1; i < (o.members ?? 1); i++) members.push({ host: host(i), port: await freePort() })
    }
    const r = await mkfs({ meta, data }, { quorumSlots: Math.max(o.quorumSlots, members.length), members })
    if (r.code !== 0) throw new FsError('EIO', `mkfs failed (${r.code ?? r.signal}): ${r.stderr}`)
    const quorumAddrs = members.map((m) => `${m.host}:${m.port}`)
    const tlsOptions = members.length ? await clusterCerts(meta, join(dir, 'tls'), o.memberHosts) : undefined
    return {
      dir,
      meta,
      data,
      serverAddr: quorumAddrs[0],
      quorumAddrs: members.length ? quorumAddrs : undefined,
      tlsOptions,
      remove,
    }
  } catch (e) {
    remove()
    throw e
  }
}
