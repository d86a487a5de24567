/*
 * Running the scoutfs command line from the launcher: where the repository, bin/scoutfs and
 * the compiled CLI are, and one run of `scoutfs ARGS...` (a child process of this Node) with
 * its output collected.
 */
import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'

/** The repository root (this file runs as dist/node-agent/src/tools/launcher/scoutfs-cli.js). */
export const REPO_ROOT = resolve(__dirname, '..', '..', '..', '..', '..')
/** The scoutfs command every launched agent and tool runs. */
export const SCOUTFS_BIN = join(REPO_ROOT, 'bin', 'scoutfs')
const CLI_MAIN = join(REPO_ROOT, 'dist', 'node-agent', 'src', 'cli', 'main.js')

/** Whether bin/scoutfs and the compiled CLI it loads are there. */
export function cliBuilt(): boolean {
  return existsSync(SCOUTFS_BIN) && existsSync(CLI_MAIN)
}

export interface CliResult {
  /** exit code; null when a signal ended it */
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/** Run `scoutfs ...args` to its end (SIGKILLed after `timeoutMs`, if given) and collect its output. */
export function runScoutfs(
  args: string[],
  opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<CliResult> {
  return new Promise((res) => {
    execFile(
      process.execPath,
      [SCOUTFS_BIN, ...args],
      {
        encoding: 'utf8',
        env: opts.env,
        timeout: opts.timeoutMs ?? 0,
        killSignal: 'SIGKILL',
        maxBuffer: 64 * 1024 * 1024,
      },
      (err, stdout, stderr) => {
        if (!err) return res({ code: 0, signal: null, stdout, stderr })
        const e = err as NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals | null }
        const spawnFailed = typeof e.code === 'string'
        res({
          code: typeof e.code === 'number' ? e.code : spawnFailed ? 127 : null,
          signal: e.signal ?? null,
          stdout,
          stderr: spawnFailed ? `${stderr}${e.message}` : stderr,
        })
      },
    )
  })
}
