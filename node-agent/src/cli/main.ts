/*
 * The scoutfs command line.  One subcommand per action; each has --help.
 *
 * Exit codes: 0 success; 1 the operation failed (the message names the errno and what to
 * do); 2 the command line was wrong; check: 4 when it found problems.
 */
import { Command, CommanderError, Option } from 'commander'
import { FileDevice, type BlockDevice } from '../storage/device.js'
import { FsError, isFsError } from '../util/errors.js'
import { META_BLOCK_SIZE, DATA_BLOCK_SIZE, QUORUM_MAX_SLOTS } from '../storage/format.js'
import { human, mkfs } from '../tools/mkfs.js'
import { checkFilesystem } from '../tools/check.js'
import { printFilesystem } from '../tools/print.js'
import { changeQuorumConfig, describeQuorumSlots } from '../tools/quorum-config.js'

export const EXIT_OK = 0
export const EXIT_FAILED = 1
export const EXIT_USAGE = 2
export const EXIT_CHECK_PROBLEMS = 4

import { CliUsageError as UsageError, registerMountCommands } from './mount-commands.js'
import { registerCertCommands } from './cert-commands.js'
import { registerCountersCommand } from './counters-command.js'
import { progressLine } from './progress.js'
import { registerQuotaCommands } from './quota-commands.js'
import { registerArchiveCommands } from './archive-commands.js'

async function openDevice(path: string, role: string, readOnly = false): Promise<BlockDevice> {
  try {
    return await FileDevice.open(path, { readOnly })
  } catch (e) {
    if (isFsError(e, 'ENOENT'))
      throw new FsError(
        'ENOENT',
        `${role} device ${path} does not exist; give a block device, or create a file-backed one with 'truncate -s 10G ${path}'`,
      )
    throw e
  }
}

interface QuorumSpec {
  count: number
  addrs: string[]
  /** the largest -Q N given (undefined: none; count then covers the addressed slots) */
  givenCount?: number
}

/** -Q N (slot count) or -Q NR,ADDR,PORT (one slot with its address); repeatable. */
export function parseQuorum(values: string[]): QuorumSpec {
  let count = 0
  let givenCount: number | undefined
  const addrs: string[] = []
  for (const v of values) {
    if (/^\d+$/.test(v)) {
      count = Math.max(count, Number(v))
      givenCount = Math.max(givenCount ?? 0, Number(v))
      continue
    }
    const m = /^(\d+),([^,]+),(\d+)$/.exec(v)
    if (!m) throw new UsageError(`-Q takes a slot count N or NR,ADDR,PORT, not '${v}'`)
    const nr = Number(m[1])
    const port = Number(m[3])
    if (nr >= QUORUM_MAX_SLOTS) throw new UsageError(`quorum slot ${nr} is out of range 0..${QUORUM_MAX_SLOTS - 1}`)
    if (port < 1 || port > 65535) throw new UsageError(`quorum port ${port} is out of range 1..65535`)
    if (addrs[nr]) throw new UsageError(`quorum slot ${nr} is given twice`)
    addrs[nr] = `${m[2]}:${port}`
    count = Math.max(count, nr + 1)
  }
  if (count < 1 || count > QUORUM_MAX_SLOTS)
    throw new UsageError(`the quorum needs 1 to ${QUORUM_MAX_SLOTS} slots; give -Q N`)
  for (let i = 0; i < count; i++) addrs[i] ??= ''
  return { count, addrs, givenCount }
}

function collect(v: string, prev: string[]): string[] {
  return [...prev, v]
}

export function buildProgram(out: (s: string) => void, err: (s: string) => void): Command {
  const program = new Command('scoutfs')
  program
    .description('scoutfs: a clustered POSIX filesystem for large archives')
    .exitOverride()
    .configureOutput({ writeOut: out, writeErr: err })
    .showHelpAfterError('(add --help for usage)')

  program
    .command('mkfs')
    .description('format a metadata device and a data device as a new filesystem')
    .argument('<META>', 'metadata device (block device or file)')
    .argument('<DATA>', 'data device (block device or file)')
    .requiredOption(
      '-Q, --quorum <spec>',
      'quorum slots: a count N, or NR,ADDR,PORT per slot (repeatable)',
      collect,
      [],
    )
    .option('-f, --force', 'overwrite an existing scoutfs filesystem', false)
    .option('--progress', 'show progress on stderr even when it is not a terminal', false)
    .action(async (metaPath: string, dataPath: string, o: { quorum: string[]; force: boolean; progress: boolean }) => {
      const q = parseQuorum(o.quorum)
      const meta = await openDevice(metaPath, 'metadata')
      const data = await openDevice(dataPath, 'data').catch(async (e) => {
        await meta.close()
        throw e
      })
      try {
        const progress = progressLine(o.progress, { isTTY: process.stderr.isTTY, write: err })
        const r = await mkfs(meta, data, {
          quorumSlots: q.count,
          quorumAddrs: q.addrs,
          force: o.force,
          progress: progress.report,
        })
        progress.end()
        out(`Created scoutfs filesystem ${r.sb.fsid.toString(16).padStart(16, '0')}\n`)
        out(`  format version:  ${r.sb.formatVersion}\n`)
        out(
          `  metadata device: ${metaPath}: ${human(r.metaBlocks * META_BLOCK_SIZE)}, ${r.metaBlocks} blocks of 64 KiB, ${r.freeMetaBlocks} free\n`,
        )
        out(
          `  data device:     ${dataPath}: ${human(r.dataBlocks * DATA_BLOCK_SIZE)}, ${r.dataBlocks} blocks of 4 KiB, ${r.freeDataBlocks} free\n`,
        )
        out(`  quorum slots:    ${describeQuorumSlots({ slots: q.count, addrs: q.addrs })}\n`)
      } finally {
        await meta.close()
        await data.close()
      }
    })

  program
    .command('change-quorum-config')
    .description('replace the quorum slots and their addresses of an unmounted filesystem (every agent stopped)')
    .argument('<META>', 'metadata device')
    .requiredOption(
      '-Q, --quorum <spec>',
      'the new quorum: NR,ADDR,PORT per slot with an address (repeatable), and optionally a slot count N',
      collect,
      [],
    )
    .option(
      '-f, --force',
      'change it even though the filesystem looks mounted; use only when every agent is known to be stopped, e.g. after a crash',
      false,
    )
    .action(async (metaPath: string, o: { quorum: string[]; force: boolean }) => {
      if (!o.quorum.length) throw new UsageError('give the new quorum: -Q NR,ADDR,PORT for each slot with an address')
      const q = parseQuorum(o.quorum)
      const meta = await openDevice(metaPath, 'metadata')
      try {
        const r = await changeQuorumConfig(meta, {
          slots: q.givenCount ?? q.count,
          addrs: q.addrs,
          force: o.force,
        })
        const fsid = r.fsid.toString(16).padStart(16, '0')
        for (const w of r.overridden) err(`scoutfs: warning: --force: ${w}\n`)
        out(
          r.changed
            ? `Changed the quorum configuration of scoutfs filesystem ${fsid}\n`
            : `The quorum configuration of scoutfs filesystem ${fsid} is already this; nothing written\n`,
        )
        out(`  metadata device: ${metaPath}\n`)
        out(`  old quorum slots: ${describeQuorumSlots(r.old)}\n`)
        out(`  new quorum slots: ${describeQuorumSlots(r.new)}\n`)
        if (r.changed) {
          out(`  cleared quorum blocks: ${r.cleared.length ? r.cleared.map((s) => `slot ${s}`).join(', ') : 'none'}\n`)
          out(`  super write_seq: ${r.writeSeq}\n`)
        }
      } finally {
        await meta.close()
      }
    })

  program
    .command('print')
    .description('print the super block, trees and allocators of a metadata device')
    .argument('<META>', 'metadata device')
    .addOption(new Option('-n, --items <N>', 'items to print per tree (-1: all)').default(100).argParser(parseIntArg))
    .action(async (metaPath: string, o: { items: number }) => {
      const meta = await openDevice(metaPath, 'metadata', true)
      try {
        await printFilesystem(meta, (l) => out(l + '\n'), { maxItems: o.items })
      } finally {
        await meta.close()
      }
    })

  program
    .command('check')
    .description('verify every block reference, checksum and seq and the exact allocator accounting')
    .argument('<META>', 'metadata device')
    .argument('[DATA]', 'data device')
    .option('-q, --quiet', 'print only problems', false)
    .option('--progress', 'show progress on stderr even when it is not a terminal', false)
    .action(async (metaPath: string, dataPath: string | undefined, o: { quiet: boolean; progress: boolean }) => {
      const meta = await openDevice(metaPath, 'metadata', true)
      const data = dataPath ? await openDevice(dataPath, 'data', true) : undefined
      try {
        const progress = progressLine(o.progress, { isTTY: process.stderr.isTTY, write: err })
        const r = await checkFilesystem(meta, data, { progress: progress.report })
        progress.end()
        if (!r.sb) throw new FsError('EINVAL', r.problems[0] ?? `${metaPath} holds no valid scoutfs super block`)
        if (!o.quiet) {
          for (const n of r.notes) out(`note: ${n}\n`)
          if (r.sb) {
            const s = r.stats
            out(`fsid ${r.sb.fsid.toString(16).padStart(16, '0')}: ${s.items} items\n`)
            out(
              `  metadata blocks: ${s.metaBlocks} total, ${s.referencedMetaBlocks} referenced, ${s.freeMetaBlocks} free\n`,
            )
            out(`  data blocks:     ${s.dataBlocks} total, ${s.freeDataBlocks} free\n`)
          }
        }
        for (const p of r.problems) out(`problem: ${p}\n`)
        if (r.problems.length) {
          out(`${r.problems.length} problem${r.problems.length === 1 ? '' : 's'} found\n`)
          process.exitCode = EXIT_CHECK_PROBLEMS
        } else if (!o.quiet) out('clean\n')
      } finally {
        await meta.close()
        await data?.close()
      }
    })

  registerMountCommands(program, out)
  registerCertCommands(program, out)
  registerCountersCommand(program, out)
  registerQuotaCommands(program, out)
  registerArchiveCommands(program, out)
  return program
}

function parseIntArg(v: string): number {
  if (!/^-?\d+$/.test(v)) throw new UsageError(`'${v}' is not a whole number`)
  return Number(v)
}

export async function main(argv: string[]): Promise<number> {
  const out = (s: string): void => void process.stdout.write(s)
  const err = (s: string): void => void process.stderr.write(s)
  const program = buildProgram(out, err)
  if (argv.length === 0) {
    err(program.helpInformation())
    return EXIT_USAGE
  }
  try {
    await program.parseAsync(argv, { from: 'user' })
    return typeof process.exitCode === 'number' ? process.exitCode : EXIT_OK
  } catch (e) {
    if (e instanceof CommanderError) {
      if (e.code === 'commander.helpDisplayed' || e.code === 'commander.version' || e.code === 'commander.help')
        return EXIT_OK
      return EXIT_USAGE
    }
    if (e instanceof UsageError) {
      err(`scoutfs: ${e.message}\n(add --help for usage)\n`)
      return EXIT_USAGE
    }
    if (e instanceof FsError) {
      err(`scoutfs: ${e.message}\n`)
      return EXIT_FAILED
    }
    err(`scoutfs: unexpected error: ${(e as Error)?.stack ?? String(e)}\n`)
    return EXIT_FAILED
  }
}

if (require.main === module) {
  // a closed pipe (scoutfs print | head) ends the output, not the process with a stack trace
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(EXIT_OK)
    throw e
  })
  main(process.argv.slice(2)).then(
    (code) => {
      process.exitCode = code
    },
    (e) => {
      process.stderr.write(`scoutfs: ${String(e)}\n`)
      process.exitCode = EXIT_FAILED
    },
  )
}
