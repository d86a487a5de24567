/*
 * The archive commands, in the original's forms and output formats (DESIGN §10,
 * docs/archive.md): release, stage, data-waiting, data-wait-err, get-fiemap, search-xattrs,
 * read-xattr-totals and ino-path.  Each reaches the agent serving the path through its admin
 * socket (agent/admin-api.ts: the routes and their reply types).
 */
import { promises as fsp } from 'node:fs'
import { resolve } from 'node:path'
import { Command, Option } from 'commander'
import { adminCall } from '../agent/admin.js'
import { FsError } from '../util/errors.js'
import { DATA_BLOCK_SIZE } from '../storage/format.js'
import { CliUsageError, mountpointOf } from './mount-commands.js'

type Out = (s: string) => void

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 }

/** A whole number as the original's tools take it: decimal or 0x hex, optionally K/M/G/T/P. */
export function parseNumber(what: string, s: string): number {
  const m = /^(0x[0-9a-f]+|\d+)([KMGTP]?)$/i.exec(s.trim())
  const n = m ? Number(m[1]) * UNITS[m[2]!.toUpperCase()]! : NaN
  if (!Number.isSafeInteger(n)) throw new CliUsageError(`${what} '${s}' is not a whole number (units K, M, G, T, P)`)
  return n
}

async function inoOf(path: string): Promise<number> {
  const st = await fsp.lstat(path).catch(() => {
    throw new FsError('ENOENT', `${path} does not exist`)
  })
  return st.ino
}

interface RangeOpts {
  dataVersion?: string
  offset?: string
  length?: string
}

/** -V (required), -o and -l of release and stage; the length defaults to the rest of the file. */
async function rangeArgs(
  cmd: string,
  file: string,
  o: RangeOpts,
  roundUp: boolean,
): Promise<{ ino: number; version: number; offset: number; length: number }> {
  if (o.dataVersion === undefined) throw new CliUsageError(`${cmd} needs -V DATA_VERSION (see scoutfs stat)`)
  const version = parseNumber('data version', o.dataVersion)
  const offset = o.offset === undefined ? 0 : parseNumber('offset', o.offset)
  const st = await fsp.lstat(file).catch(() => {
    throw new FsError('ENOENT', `${file} does not exist`)
  })
  const end = roundUp ? Math.ceil(st.size / DATA_BLOCK_SIZE) * DATA_BLOCK_SIZE : st.size
  const length = o.length === undefined ? Math.max(0, end - offset) : parseNumber('length', o.length)
  return { ino: st.ino, version, offset, length }
}

const rangeOptions = (c: Command): Command =>
  c
    .option('-V, --data-version <VERS>', 'the data_version the file must still have')
    .option('-o, --offset <OFF>', 'first byte (4 KiB aligned)', undefined)
    .option('-l, --length <LEN>', 'bytes (4 KiB aligned; default: to the end of the file)', undefined)

export function registerArchiveCommands(program: Command, out: Out): void {
  rangeOptions(
    program
      .command('release')
      .description('free the data blocks of a file range and mark it offline, if data_version still matches')
      .argument('<FILE>'),
  ).action(async (file: string, o: RangeOpts) => {
    const p = await rangeArgs('release', file, o, true)
    await adminCall(await mountpointOf(file), 'POST /release', p)
  })

  rangeOptions(
    program
      .command('stage')
      .description('write ARCHIVE (from its start) into the offline range of FILE, if data_version still matches')
      .argument('<ARCHIVE>')
      .argument('<FILE>'),
  ).action(async (archive: string, file: string, o: RangeOpts) => {
    const p = await rangeArgs('stage', file, o, false)
    await adminCall(await mountpointOf(file), 'POST /stage', { ...p, archive: resolve(archive) })
  })

  program
    .command('data-waiting')
    .description('print the operations of this mount waiting for offline data, after inode INO block IBLOCK')
    .option('-I, --inode <INO>', 'list entries after this inode', '0')
    .option('-B, --block <IBLOCK>', 'and after this block of it', '0')
    .requiredOption('-p, --path <PATH>', 'a path in the filesystem')
    .action(async (o: { inode: string; block: string; path: string }) => {
      const mnt = await mountpointOf(o.path)
      let afterIno = parseNumber('inode', o.inode)
      let afterIblock = parseNumber('block', o.block)
      for (;;) {
        const r = await adminCall(mnt, 'GET /data-waiting', { afterIno, afterIblock, limit: 1000 })
        for (const e of r.entries) out(`ino ${e.ino} iblock ${e.iblock} ops ${e.ops.join(',')}\n`)
        const last = r.entries[r.entries.length - 1]
        if (!last || r.entries.length < 1000) break
        afterIno = last.ino
        afterIblock = last.iblock
      }
    })

  program
    .command('data-wait-err')
    .description('fail the waiters of this mount for a range of an inode with an errno')
    .requiredOption('-p, --path <PATH>', 'a path in the filesystem')
    .requiredOption('-I, --inode <INO>', 'inode number')
    .requiredOption('-V, --version <VERS>', 'data version (not checked, as the original since 1.25)')
    .requiredOption('-F, --offset <OFF>', 'first byte of the range')
    .requiredOption('-C, --count <COUNT>', 'bytes in the range')
    .addOption(new Option('-O, --op <OP>', 'the waiting operation').choices(['read', 'write', 'change_size']))
    .requiredOption('-E, --err <ERR>', 'a negative errno, e.g. -5 (EIO)')
    .action(
      async (o: {
        path: string
        inode: string
        version: string
        offset: string
        count: string
        op?: 'read' | 'write' | 'change_size'
        err: string
      }) => {
        if (!o.op) throw new CliUsageError('data-wait-err needs -O read, write or change_size')
        const err = Number(o.err)
        if (!Number.isInteger(err) || err >= 0) throw new CliUsageError(`err ${o.err} invalid: give a negative errno`)
        const r = await adminCall(await mountpointOf(o.path), 'POST /data-wait-err', {
          ino: parseNumber('inode', o.inode),
          version: parseNumber('version', o.version),
          offset: parseNumber('offset', o.offset),
          count: parseNumber('count', o.count),
          op: o.op,
          err,
        })
        out(`data_wait_err found ${r.found} waiters.\n`)
      },
    )

  program
    .command('get-fiemap')
    .description('print the extent map of a file (flags: O offline, U unwritten, L last)')
    .argument('<FILE>')
    .option('-P, --physical', 'physical offsets instead of logical', false)
    .option('-b, --byte', 'bytes instead of blocks', false)
    .action(async (file: string, o: { physical: boolean; byte: boolean }) => {
      const r = await adminCall(await mountpointOf(file), 'GET /fiemap', { ino: await inoOf(file) })
      const unit = o.byte ? 1 : DATA_BLOCK_SIZE
      r.extents.forEach((e, i) => {
        const off = (o.physical ? e.physical : e.logical) / unit
        const last = i === r.extents.length - 1
        out(`${i}: offset: ${off}, length: ${e.length / unit}, flags: ${e.offline ? 'O' : '.'}.${last ? 'L' : '.'}\n`)
      })
      out(`entries: ${r.extents.length}, extents: ${r.extents.length}\n`)
    })

  program
    .command('search-xattrs')
    .description('print the inode numbers of inodes that may have the given scoutfs.srch. xattr, on any mount')
    .argument('<XATTR-NAME>')
    .requiredOption('-p, --path <PATH>', 'a path in the filesystem')
    .action(async (name: string, o: { path: string }) => {
      const mnt = await mountpointOf(o.path)
      let firstIno = 0
      for (;;) {
        const r = await adminCall(mnt, 'GET /search-xattrs', { name, firstIno, limit: 100_000 })
        out(r.inos.map((i) => `${i}\n`).join(''))
        if (r.inos.length < 100_000) break
        firstIno = r.inos[r.inos.length - 1]! + 1
      }
    })

  program
    .command('read-xattr-totals')
    .description('print the totals of scoutfs.totl. xattrs: A.B.C = total, count')
    .requiredOption('-p, --path <PATH>', 'a path in the filesystem')
    .action(async (o: { path: string }) => {
      const r = await adminCall(await mountpointOf(o.path), 'GET /xattr-totals')
      out(r.totals.map((t) => `${t.name} = ${t.total}, ${t.count}\n`).join(''))
    })

  program
    .command('ino-path')
    .description('print the paths (from the root of the filesystem) that refer to inode INO')
    .argument('<INO>')
    .requiredOption('-p, --path <PATH>', 'a path in the filesystem')
    .action(async (ino: string, o: { path: string }) => {
      const r = await adminCall(await mountpointOf(o.path), 'GET /ino-path', { ino: parseNumber('inode', ino) })
      out(r.paths.map((p) => `${p}\n`).join(''))
    })
}
