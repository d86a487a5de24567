/*
 * CLI commands that work on a mounted filesystem: mount and umount run and stop an agent;
 * the rest (sync, walk-inodes, stat, statfs, df) reach the agent that serves a PATH through
 * its admin socket (agent/admin-api.ts: the routes and their reply types).
 */
import { spawn } from 'node:child_process'
import { promises as fsp, openSync, closeSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { Command, Option } from 'commander'
import pino from 'pino'
import { ADMIN_DIR, adminCall, adminSocketPath } from '../agent/admin.js'
import type { StatReply, StatfsReply } from '../agent/admin-api.js'
import { FsError } from '../util/errors.js'
import { Mount, type MountOptions } from '../agent/mount.js'
import type { FenceOptions } from '../quorum/fence.js'
import type { TlsFiles } from '../net/tls.js'
import { HEARTBEAT_TIMEOUT_MAX_MS, HEARTBEAT_TIMEOUT_MIN_MS } from '../quorum/quorum.js'
import { progressLine } from './progress.js'
import type { FrontendFactory } from '../fs/frontend.js'
import { FRONTENDS, isFrontendName } from '../fuse/frontends.js'

type Out = (s: string) => void

export class CliUsageError extends Error {}

/** The mountpoint of the filesystem holding `path` (walk up while the device stays the same). */
export async function mountpointOf(path: string): Promise<string> {
  let p: string
  try {
    p = await fsp.realpath(path)
  } catch {
    throw new FsError('ENOENT', `${path} does not exist`)
  }
  const dev = (await fsp.stat(p)).dev
  for (;;) {
    const up = dirname(p)
    if (up === p) return p
    if ((await fsp.stat(up)).dev !== dev) return p
    p = up
  }
}

interface MountCliOptions {
  metadev: string
  options?: string
  foreground: boolean
  metricsAddr?: string
  logFile?: string
  logLevel: string
}

const MOUNT_OPTIONS = [
  'frontend',
  'commit_interval_ms',
  'item_cache_items',
  'block_cache_blocks',
  'debug',
  'fuse_spin_us',
  'quorum_slot_nr',
  'server_addr',
  'recovery_ms',
  'mount_timeout_ms',
  'orphan_scan_delay_ms',
  'quorum_heartbeat_timeout_ms',
  'fence',
  'fence_command',
  'fence_timeout_ms',
  'fence_retries',
  'fence_namespace',
  'fence_filesystem',
  'tls_ca',
  'tls_cert',
  'tls_key',
  'tls_dir',
  'insecure',
]

function parseMountOptions(s: string | undefined): Record<string, string> {
  const out: Record<string, string> = {}
  for (const part of (s ?? '').split(',').filter(Boolean)) {
    const eq = part.indexOf('=')
    const k = eq < 0 ? part : part.slice(0, eq)
    const v = eq < 0 ? undefined : part.slice(eq + 1)
    if (!MOUNT_OPTIONS.includes(k))
      throw new CliUsageError(`unknown mount option '${k}' (known: ${MOUNT_OPTIONS.join(', ')})`)
    out[k] = v ?? '1'
  }
  return out
}

function wholeNumber(opts: Record<string, string>, k: string): number | undefined {
  if (opts[k] === undefined) return undefined
  const n = Number(opts[k])
  if (!Number.isSafeInteger(n) || n < 0)
    throw new CliUsageError(`mount option ${k} needs a whole number (0 or more), not '${opts[k]}'`)
  return n
}

function hostPort(opts: Record<string, string>, k: string): string | undefined {
  const v = opts[k]
  if (v === undefined) return undefined
  if (!/^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$/.test(v) || Number(v.slice(v.lastIndexOf(':') + 1)) > 65535)
    throw new CliUsageError(`mount option ${k} needs HOST:PORT, not '${v}'`)
  return v
}

function positiveInt(opts: Record<string, string>, k: string): number | undefined {
  if (opts[k] === undefined) return undefined
  const n = Number(opts[k])
  if (!Number.isSafeInteger(n) || n <= 0)
    throw new CliUsageError(`mount option ${k} needs a positive whole number, not '${opts[k]}'`)
  return n
}

/** orphan_scan_delay_ms: 0 (no periodic scan) or 100..600000 */
function orphanScanDelay(opts: Record<string, string>): number | undefined {
  const n = wholeNumber(opts, 'orphan_scan_delay_ms')
  if (n !== undefined && n !== 0 && (n < 100 || n > 600_000))
    throw new CliUsageError(`mount option orphan_scan_delay_ms must be 0 (off) or 100..600000, not ${n}`)
  return n
}

/** quorum_heartbeat_timeout_ms: 2000..60000 (the original's range) */
function heartbeatTimeout(opts: Record<string, string>): number | undefined {
  const n = wholeNumber(opts, 'quorum_heartbeat_timeout_ms')
  if (n !== undefined && (n < HEARTBEAT_TIMEOUT_MIN_MS || n > HEARTBEAT_TIMEOUT_MAX_MS))
    throw new CliUsageError(
      `mount option quorum_heartbeat_timeout_ms must be ${HEARTBEAT_TIMEOUT_MIN_MS}..${HEARTBEAT_TIMEOUT_MAX_MS} (ms), not ${n}`,
    )
  return n
}

/** fence=local|command|kubernetes and its settings (docs/fencing.md) */
function fenceSettings(opts: Record<string, string>): FenceOptions | undefined {
  const method = opts.fence
  const extra = ['fence_command', 'fence_timeout_ms', 'fence_retries', 'fence_namespace', 'fence_filesystem'].filter(
    (k) => opts[k] !== undefined,
  )
  if (method === undefined) {
    if (extra.length) throw new CliUsageError(`mount option ${extra[0]} needs fence=command or fence=kubernetes too`)
    return undefined
  }
  if (method !== 'local' && method !== 'command' && method !== 'kubernetes')
    throw new CliUsageError(`mount option fence must be local, command or kubernetes, not '${method}'`)
  if (method === 'command' && !opts.fence_command)
    throw new CliUsageError('mount option fence=command needs fence_command=PROGRAM (see docs/fencing.md)')
  if (method !== 'command' && opts.fence_command !== undefined)
    throw new CliUsageError(`mount option fence_command is for fence=command, not fence=${method}`)
  const fs = opts.fence_filesystem
  if (method === 'kubernetes' && !fs)
    throw new CliUsageError(
      'mount option fence=kubernetes needs fence_filesystem=NAME (the ScoutFilesystem it belongs to)',
    )
  return {
    method,
    command: opts.fence_command,
    timeoutMs: positiveInt(opts, 'fence_timeout_ms'),
    retries: wholeNumber(opts, 'fence_retries'),
    kubernetes:
      method === 'kubernetes' && fs
        ? { namespace: opts.fence_namespace ?? process.env.POD_NAMESPACE ?? 'default', filesystem: fs }
        : undefined,
  }
}

/** tls_ca/tls_cert/tls_key (all three) or tls_dir (ca.crt, tls.crt, tls.key), or insecure */
function tlsSettings(opts: Record<string, string>): { tls?: TlsFiles; insecure?: boolean } {
  const files = (['tls_ca', 'tls_cert', 'tls_key'] as const).filter((k) => opts[k] !== undefined)
  const insecure = opts.insecure !== undefined
  if (insecure && opts.insecure !== '1') throw new CliUsageError('mount option insecure takes no value')
  if (insecure && (files.length || opts.tls_dir))
    throw new CliUsageError('mount option insecure contradicts tls_*: give certificates or insecure, not both')
  if (opts.tls_dir !== undefined) {
    if (files.length) throw new CliUsageError(`give tls_dir or ${files.join(', ')}, not both`)
    const d = resolve(opts.tls_dir)
    return { tls: { ca: join(d, 'ca.crt'), cert: join(d, 'tls.crt'), key: join(d, 'tls.key') } }
  }
  if (files.length && files.length < 3)
    throw new CliUsageError(
      `mount options tls_ca, tls_cert and tls_key go together (missing: ${['tls_ca', 'tls_cert', 'tls_key'].filter((k) => opts[k] === undefined).join(', ')})`,
    )
  if (files.length === 3)
    return { tls: { ca: resolve(opts.tls_ca!), cert: resolve(opts.tls_cert!), key: resolve(opts.tls_key!) } }
  return insecure ? { insecure: true } : {}
}

/** fuse_spin_us=N: 0 (never poll) up to 1 s */
function fuseSpin(opts: Record<string, string>): number | undefined {
  const n = wholeNumber(opts, 'fuse_spin_us')
  if (n !== undefined && n > 1_000_000)
    throw new CliUsageError(`mount option fuse_spin_us is at most 1000000 (1 s), not ${n}`)
  return n
}

/** frontend=lowlevel|fuse-native (fuse/frontends.ts) */
function frontendSetting(opts: Record<string, string>): FrontendFactory | undefined {
  const v = opts.frontend
  if (v === undefined) return undefined
  if (!isFrontendName(v))
    throw new CliUsageError(`mount option frontend takes ${Object.keys(FRONTENDS).join(' or ')}, not '${v}'`)
  return FRONTENDS[v]
}

/** The -o options as Mount.start takes them; a wrong name or value is a usage error. */
function mountSettings(options: string | undefined): Partial<MountOptions> {
  const mo = parseMountOptions(options)
  return {
    commitIntervalMs: positiveInt(mo, 'commit_interval_ms'),
    itemCacheItems: positiveInt(mo, 'item_cache_items'),
    blockCacheBlocks: positiveInt(mo, 'block_cache_blocks'),
    fuseDebug: mo.debug === '1',
    fuseSpinUs: fuseSpin(mo),
    frontend: frontendSetting(mo),
    quorumSlotNr: wholeNumber(mo, 'quorum_slot_nr'),
    serverAddr: hostPort(mo, 'server_addr'),
    recoveryMs: wholeNumber(mo, 'recovery_ms'),
    mountTimeoutMs: positiveInt(mo, 'mount_timeout_ms'),
    orphanScanDelayMs: orphanScanDelay(mo),
    quorumHeartbeatTimeoutMs: heartbeatTimeout(mo),
    fence: fenceSettings(mo),
    ...tlsSettings(mo),
  }
}

async function runForeground(data: string, mountpoint: string, o: MountCliOptions): Promise<number> {
  const log = pino(
    { level: o.logLevel, base: { pid: process.pid, mountpoint } },
    o.logFile ? pino.destination({ dest: o.logFile, sync: true, append: true }) : pino.destination(2),
  )
  watchForCrashes(log, o.logFile)
  const m = await Mount.start({
    metaPath: o.metadev,
    dataPath: data,
    mountpoint,
    log,
    metricsAddr: o.metricsAddr,
    ...mountSettings(o.options),
  })

  process.send?.({ ready: true, metrics: m.metricsAddr })
  if (process.send) process.disconnect?.()
  const code = await new Promise<number>((resolveExit) => {
    let stopping = false
    const stop = (why: string): void => {
      if (stopping) {
        log.fatal({ why }, 'stopping again: exiting at once')
        process.exit(1)
      }
      stopping = true
      log.info({ why }, 'stopping')
      // a stop that cannot finish (no server to commit to) must not keep the agent alive
      setTimeout(() => {
        log.fatal({ why, ms: STOP_DEADLINE_MS }, 'stop did not finish in time: exiting')
        process.exit(1)
      }, STOP_DEADLINE_MS).unref()
      m.stop().then(
        () => resolveExit(0),
        (e: unknown) => {
          log.error({ err: String(e) }, 'unmount failed')
          resolveExit(1)
        },
      )
    }
    process.on('SIGTERM', () => stop('SIGTERM'))
    process.on('SIGINT', () => stop('SIGINT'))
    m.onStopped = () => resolveExit(0)
  })
  // stopped: whatever handle is still open must not keep the process alive
  setTimeout(() => {
    log.warn({ handles: process.getActiveResourcesInfo() }, 'still running after the stop: exiting')
    process.exit(code)
  }, 2000).unref()
  return code
}

/** how long a stop (SIGTERM, SIGINT) may take before the agent exits anyway */
const STOP_DEADLINE_MS = Number(process.env.SCOUTFS_STOP_DEADLINE_MS) || 20_000

/**
 * The agent's crashes leave their reason behind: an uncaught exception or unhandled rejection
 * is logged as one fatal line before the process exits 1, and a fatal V8 error (or SIGUSR2)
 * writes Node's diagnostic report next to the log file (or into the working directory).
 * A native crash (SIGSEGV) leaves no JS hook: only the report of a core dump or gdb names it.
 */
function watchForCrashes(log: pino.Logger, logFile: string | undefined): void {
  const fatal = (kind: string) => (e: unknown) => {
    log.fatal({ err: e instanceof Error ? (e.stack ?? e.message) : String(e), kind }, 'agent crashed')
    process.exit(1)
  }
  process.on('uncaughtException', fatal('uncaughtException'))
  process.on('unhandledRejection', fatal('unhandledRejection'))
  if (process.report) {
    process.report.directory = logFile ? dirname(resolve(logFile)) : process.cwd()
    process.report.reportOnFatalError = true
    process.report.reportOnUncaughtException = true
    process.report.reportOnSignal = true
  }
}

/** Start a detached agent and wait until it has mounted (or failed). */
async function runDaemon(argv: string[], mountpoint: string, logFile: string): Promise<number> {
  await fsp.mkdir(dirname(logFile), { recursive: true })
  const logStart = (await fsp.stat(logFile).catch(() => undefined))?.size ?? 0
  const fd = openSync(logFile, 'a')
  const child = spawn(
    process.execPath,
    [...process.execArgv, require.main?.filename ?? process.argv[1]!, ...argv, '--foreground', '--log-file', logFile],
    {
      detached: true,
      stdio: ['ignore', fd, fd, 'ipc'],
    },
  )
  closeSync(fd)
  const result = await new Promise<{ ok: boolean; code?: number | null; metrics?: string }>((res) => {
    child.once('message', (m: { ready?: boolean; metrics?: string }) => res({ ok: !!m.ready, metrics: m.metrics }))
    child.once('exit', (code) => res({ ok: false, code }))
  })
  if (!result.ok) {
    const log = (await fsp.readFile(logFile).catch(() => Buffer.alloc(0))).subarray(logStart).toString('utf8')
    const tail = log.trimEnd().split('\n').slice(-8).join('\n')
    throw new FsError(
      'EIO',
      `the agent for ${mountpoint} exited (code ${result.code}) before mounting; its log ${logFile} ends:\n${tail}`,
    )
  }
  child.unref()
  child.disconnect?.()
  return 0
}

async function waitUnmounted(mountpoint: string, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    const mounts = await fsp.readFile('/proc/mounts', 'utf8')
    const socket = await fsp.stat(adminSocketPath(mountpoint)).then(
      () => true,
      () => false,
    )
    if (!mounts.split('\n').some((l) => l.split(' ')[1] === mountpoint) && !socket) return true
    await new Promise((r) => setTimeout(r, 100))
  }
  return false
}

/** FIRST/LAST of walk-inodes: major[.minor[.ino]]; -1 is the largest. */
export function parsePosition(s: string, isLast: boolean): { seq: number; ino: number } {
  const MAX = Number.MAX_SAFE_INTEGER
  const parts = s.split('.')
  if (parts.length > 3 || parts.some((p) => !/^(-1|\d+)$/.test(p)))
    throw new CliUsageError(`'${s}' is not a position (major[.minor[.ino]])`)
  const n = (p: string | undefined, dflt: number): number =>
    p === undefined ? dflt : p === '-1' ? MAX : Math.min(Number(p), MAX)
  return { seq: n(parts[0], 0), ino: n(parts[2], isLast ? MAX : 0) }
}

export function registerMountCommands(program: Command, out: Out): void {
  program
    .command('mount')
    .description('mount a filesystem (runs the agent; in the background unless --foreground)')
    .requiredOption('--metadev <META>', 'metadata device')
    .argument('<DATA>', 'data device')
    .argument('<MOUNTPOINT>', 'directory to mount on (created if missing)')
    .option(
      '-o, --options <opts>',
      'mount options: commit_interval_ms=N, item_cache_items=N, block_cache_blocks=N, fuse_spin_us=N, debug',
    )
    .option('-f, --foreground', 'stay in the foreground, logging to stderr', false)
    .option('--metrics-addr <HOST:PORT>', 'serve Prometheus metrics at http://HOST:PORT/metrics')
    .option('--log-file <FILE>', 'append structured logs here')
    .addOption(
      new Option('--log-level <LEVEL>', 'log level').choices(['debug', 'info', 'warn', 'error']).default('info'),
    )
    .action(async (data: string, mnt: string, o: MountCliOptions) => {
      const mountpoint = resolve(mnt)
      mountSettings(o.options) // usage errors before anything starts
      await fsp.mkdir(mountpoint, { recursive: true })
      if (o.foreground) {
        process.exitCode = await runForeground(data, mountpoint, o)
        return
      }
      const argv = ['mount', '--metadev', o.metadev, data, mountpoint, '--log-level', o.logLevel]
      if (o.options) argv.push('-o', o.options)
      if (o.metricsAddr) argv.push('--metrics-addr', o.metricsAddr)
      const logFile = o.logFile ?? adminSocketPath(mountpoint).replace(/\.sock$/, '.log')
      await runDaemon(argv, mountpoint, logFile)
      out(`mounted ${mountpoint} (agent log: ${logFile})\n`)
    })

  program
    .command('umount')
    .alias('unmount')
    .description('commit, unmount and stop the agent of a mounted filesystem')
    .argument('<MOUNTPOINT>')
    .option('-t, --timeout <SECONDS>', 'how long to wait', '60')
    .action(async (mnt: string, o: { timeout: string }) => {
      const mountpoint = resolve(mnt)
      await adminCall(mountpoint, 'POST /unmount')
      if (!(await waitUnmounted(mountpoint, Number(o.timeout) * 1000)))
        throw new FsError(
          'ETIMEDOUT',
          `${mountpoint} is still mounted after ${o.timeout} s; see the agent's log in ${ADMIN_DIR}`,
        )
      out(`unmounted ${mountpoint}\n`)
    })

  program
    .command('sync')
    .description('commit the open transaction of the mount holding PATH (sync(2) does not reach a FUSE filesystem)')
    .argument('<PATH>')
    .action(async (path: string) => {
      await adminCall(await mountpointOf(path), 'POST /sync')
    })

  program
    .command('walk-inodes')
    .description(
      'list inodes whose index seq lies in FIRST..LAST: walk-inodes INDEX FIRST LAST PATH, or walk-inodes -p PATH -- INDEX FIRST LAST',
    )
    .argument(
      '<args...>',
      'INDEX FIRST LAST [PATH]: INDEX is meta_seq or data_seq; FIRST/LAST are major[.minor[.ino]], -1 the largest',
    )
    .option('-p, --path <PATH>', 'a path in the filesystem')
    .option('--progress', 'show progress on stderr even when it is not a terminal', false)
    .allowUnknownOption(false)
    .action(async (args: string[], o: { path?: string; progress: boolean }) => {
      const path = o.path ?? args[3]
      if (args.length !== (o.path ? 3 : 4) || !path)
        throw new CliUsageError('walk-inodes takes INDEX FIRST LAST PATH (or -p PATH -- INDEX FIRST LAST)')
      const [index, f, l] = args as [string, string, string]
      if (index !== 'meta_seq' && index !== 'data_seq')
        throw new CliUsageError(`INDEX is meta_seq or data_seq, not '${index}'`)
      let first = parsePosition(f, false)
      const last = parsePosition(l, true)
      const mnt = await mountpointOf(path)
      let row = 0
      const progress = progressLine(o.progress)
      const header = `${'#'.padEnd(8)} ${'major'.padEnd(20)} ${'minor'.padEnd(6)} ino\n`
      for (;;) {
        const r = await adminCall(mnt, 'GET /walk-inodes', {
          index,
          first: first.seq,
          firstIno: first.ino,
          last: last.seq,
          lastIno: last.ino,
          limit: 10000,
        })
        for (const e of r.entries) {
          if (row % 25 === 0) out(header)
          row++
          out(`${String(row).padEnd(8)} ${String(e.seq).padEnd(20)} ${'0'.padEnd(6)} ${e.ino}\n`)
        }
        if (r.entries.length < 10000) break
        const e = r.entries[r.entries.length - 1]!
        first = { seq: e.seq, ino: e.ino + 1 }
        progress.report?.({ phase: `inodes listed (at ${index} ${e.seq})`, done: row })
      }
      progress.end()
    })

  const STAT_FIELDS: ReadonlyArray<keyof StatReply> = [
    'meta_seq',
    'data_seq',
    'data_version',
    'online_blocks',
    'offline_blocks',
    'crtime',
  ]
  program
    .command('stat')
    .description("print an inode's scoutfs fields")
    .argument('<PATH>')
    .option('-s, --single-field <FIELD>', `print one field: ${STAT_FIELDS.join(', ')}`)
    .action(async (path: string, o: { singleField?: string }) => {
      const single = STAT_FIELDS.find((f) => f === o.singleField)
      if (o.singleField && !single)
        throw new CliUsageError(`unknown field '${o.singleField}' (${STAT_FIELDS.join(', ')})`)
      const st = await fsp.lstat(path).catch(() => {
        throw new FsError('ENOENT', `${path} does not exist`)
      })
      const r = await adminCall(await mountpointOf(path), 'GET /stat', { ino: st.ino })
      if (single) out(`${r[single]}\n`)
      else for (const f of STAT_FIELDS) out(`${f.padEnd(17)}${r[f]}\n`)
    })

  const STATFS_FIELDS: ReadonlyArray<keyof StatfsReply> = [
    'fsid',
    'rid',
    'committed_seq',
    'total_meta_blocks',
    'total_data_blocks',
    'quorum_slot_nr',
    'quorum_term',
    'quorum_leader_slot',
  ]
  program
    .command('statfs')
    .description('print filesystem fields: ' + STATFS_FIELDS.join(', '))
    .argument('<PATH>')
    .option('-s, --single-field <FIELD>', 'print one field')
    .action(async (path: string, o: { singleField?: string }) => {
      const single = STATFS_FIELDS.find((f) => f === o.singleField)
      if (o.singleField && !single)
        throw new CliUsageError(`unknown field '${o.singleField}' (${STATFS_FIELDS.join(', ')})`)
      const r = await adminCall(await mountpointOf(path), 'GET /statfs')
      if (single) out(`${r[single]}\n`)
      else for (const f of STATFS_FIELDS) out(`${f.padEnd(Math.max(17, f.length + 1))}${r[f]}\n`)
    })

  program
    .command('quorum')
    .description(
      "show the quorum as the mount's agent sees it (slot, term, leader, fencing); with -t, change a member's heartbeat timeout",
    )
    .argument('<PATH>')
    .option(
      '-t, --heartbeat-timeout-ms <MS>',
      `set quorum_heartbeat_timeout_ms (${HEARTBEAT_TIMEOUT_MIN_MS}..${HEARTBEAT_TIMEOUT_MAX_MS}) at run time`,
    )
    .option('-j, --json', 'print JSON', false)
    .action(async (path: string, o: { heartbeatTimeoutMs?: string; json: boolean }) => {
      const mnt = await mountpointOf(path)
      let q
      if (o.heartbeatTimeoutMs !== undefined) {
        const ms = Number(o.heartbeatTimeoutMs)
        if (!Number.isInteger(ms) || ms < HEARTBEAT_TIMEOUT_MIN_MS || ms > HEARTBEAT_TIMEOUT_MAX_MS)
          throw new CliUsageError(
            `--heartbeat-timeout-ms must be ${HEARTBEAT_TIMEOUT_MIN_MS}..${HEARTBEAT_TIMEOUT_MAX_MS}, not '${o.heartbeatTimeoutMs}'`,
          )
        q = await adminCall(mnt, 'POST /quorum/heartbeat-timeout', { ms })
      } else q = await adminCall(mnt, 'GET /quorum')
      if (o.json) {
        out(JSON.stringify(q) + '\n')
        return
      }
      const rows: Array<[string, string]> = [
        ['slot', q.slot < 0 ? '-1 (not a quorum member)' : String(q.slot)],
        ['role', q.role + (q.serving ? ' (serving)' : '')],
        ['term', String(q.term)],
        ['leader_slot', String(q.leaderSlot)],
        ['slots', `${q.slots.join(',')} (majority ${q.majority})`],
      ]
      if (q.slot >= 0) {
        rows.push(['heartbeat_timeout_ms', String(q.heartbeatTimeoutMs)])
        rows.push(['elections', `${q.elections} stood, ${q.elected} won`])
        rows.push(['fences', `${q.fenceRequests} asked, ${q.fencesConfirmed} confirmed, ${q.fenceErrors} failed`])
      }
      if (q.fencing)
        rows.push([
          'fencing',
          `rid ${q.fencing.rid} (${q.fencing.reason}) for ${(q.fencing.sinceMs / 1000).toFixed(1)} s, attempt ${q.fencing.attempts}${q.fencing.error ? `: ${q.fencing.error}` : ''}`,
        ])
      for (const [k, v] of rows) out(`${k.padEnd(21)}${v}\n`)
    })

  program
    .command('df')
    .description('print metadata and data usage')
    .argument('<PATH>')
    .option('-h, --human-readable', 'sizes in K/M/G/T', false)
    .action(async (path: string, o: { humanReadable: boolean }) => {
      const r = await adminCall(await mountpointOf(path), 'GET /statfs')
      const hum = (blocks: number, bs: number): string => {
        if (!o.humanReadable) return String(blocks)
        let v = blocks * bs
        const u = ['B', 'K', 'M', 'G', 'T', 'P']
        let i = 0
        while (v >= 1024 && i < u.length - 1) {
          v /= 1024
          i++
        }
        return `${v >= 10 || i === 0 ? v.toFixed(0) : v.toFixed(1)}${u[i]}`
      }
      const row = (type: string, size: string, total: number, free: number, bs: number): string => {
        const used = total - free
        const pct = total ? Math.ceil((used * 100) / total) : 0
        return `${type.padEnd(10)} ${size.padStart(5)} ${hum(total, bs).padStart(12)} ${hum(used, bs).padStart(12)} ${hum(free, bs).padStart(12)} ${String(pct).padStart(4)}%\n`
      }
      out(
        `${'Type'.padEnd(10)} ${'Size'.padStart(5)} ${'Total'.padStart(12)} ${'Used'.padStart(12)} ${'Free'.padStart(12)} ${'Use%'.padStart(5)}\n`,
      )
      out(row('MetaData', '64KB', r.total_meta_blocks, r.free_meta_blocks, 65536))
      out(row('Data', '4KB', r.total_data_blocks, r.free_data_blocks, 4096))
    })
}
