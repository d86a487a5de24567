/*
 * `scoutfs quota`: show and set the directory quota of a tree (fs/quota.ts) through the admin
 * socket of the agent serving the PATH (routes GET/POST /quota of agent/admin-api.ts).
 *
 *   scoutfs quota show PATH            the quota of the tree PATH is in
 *   scoutfs quota set -b SIZE [-i N] DIR   make an empty DIR a quota tree, or change its limits
 */
import { promises as fsp } from 'node:fs'
import type { Command } from 'commander'
import { adminCall } from '../agent/admin.js'
import type { QuotaReply } from '../agent/admin-api.js'
import { FsError } from '../util/errors.js'
import { CliUsageError, mountpointOf } from './mount-commands.js'

type Out = (s: string) => void

const UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40, P: 2 ** 50 }

/** A byte count: a whole number with an optional binary unit (K, M, G, T, P; Ki/KiB too). */
export function parseSize(v: string): number {
  const m = /^(\d+)\s*([KMGTP]?)(?:i?B?)$/i.exec(v.trim())
  const n = m ? Number(m[1]) * UNITS[m[2]!.toUpperCase()]! : NaN
  if (!Number.isSafeInteger(n))
    throw new CliUsageError(`'${v}' is not a size (a whole number of bytes, or with K, M, G, T)`)
  return n
}

async function inoOf(path: string): Promise<number> {
  const st = await fsp.stat(path).catch(() => {
    throw new FsError('ENOENT', `${path} does not exist`)
  })
  return st.ino
}

function print(out: Out, path: string, r: QuotaReply, json: boolean): void {
  if (json) return out(`${JSON.stringify(r.quota ?? null)}\n`)
  const q = r.quota
  if (!q) return out(`${path}: no quota\n`)
  out(`root         ${q.root}\n`)
  out(`bytes        ${q.used_bytes} / ${q.limit_bytes}\n`)
  out(`inodes       ${q.used_inodes} / ${q.limit_inodes}\n`)
}

export function registerQuotaCommands(program: Command, out: Out): void {
  const quota = program.command('quota').description('show or set the directory quota of a tree')
  quota
    .command('show')
    .description('print the quota (limits and usage) of the tree PATH is in')
    .argument('<PATH>')
    .option('-j, --json', 'print JSON', false)
    .action(async (path: string, o: { json: boolean }) => {
      const r = await adminCall(await mountpointOf(path), 'GET /quota', { ino: await inoOf(path) })
      print(out, path, r, o.json)
    })
  quota
    .command('set')
    .description('make empty directory DIR a quota tree, or change the limits of one (online)')
    .argument('<DIR>')
    .requiredOption('-b, --bytes <SIZE>', 'byte limit (e.g. 10G)')
    .option('-i, --inodes <N>', 'inode limit', String(Number.MAX_SAFE_INTEGER))
    .option('-j, --json', 'print JSON', false)
    .action(async (dir: string, o: { bytes: string; inodes: string; json: boolean }) => {
      const bytes = parseSize(o.bytes)
      if (!/^\d+$/.test(o.inodes)) throw new CliUsageError(`--inodes takes a whole number, not '${o.inodes}'`)
      const r = await adminCall(await mountpointOf(dir), 'POST /quota', {
        ino: await inoOf(dir),
        bytes,
        inodes: Number(o.inodes),
      })
      print(out, dir, r, o.json)
    })
}
