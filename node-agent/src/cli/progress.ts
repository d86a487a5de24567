/*
 * Progress on stderr where a person waits (mkfs, check, walk-inodes): shown when stderr is a
 * terminal, or always with --progress.  On a terminal one line is rewritten in place (and
 * cleared at the end); elsewhere (a log file) a line per report, at most one a second.  It
 * never writes to stdout: scripts that parse the output see the same output with or without it.
 */
import type { ProgressEvent, ProgressFn } from '../tools/progress.js'

export interface ProgressLine {
  /** undefined when progress is not shown (the tools then skip the reporting) */
  report: ProgressFn | undefined
  /** clear the line (terminal) once the operation has finished */
  end(): void
}

function text(e: ProgressEvent): string {
  if (e.total === undefined || e.total <= 0) return `${e.phase}: ${e.done}`
  return `${e.phase}: ${e.done}/${e.total} (${Math.floor((e.done * 100) / e.total)}%)`
}

export function progressLine(
  flag: boolean,
  stderr: { isTTY?: boolean; write(s: string): unknown } = process.stderr,
  clock: () => number = Date.now,
): ProgressLine {
  const tty = stderr.isTTY === true
  if (!flag && !tty) return { report: undefined, end: () => undefined }
  const everyMs = tty ? 200 : 1000
  let last = 0
  let shown = false
  let phase = ''
  return {
    report(e) {
      const now = clock()
      // a new phase is shown at once; within a phase at most one report per interval
      if (e.phase === phase && now - last < everyMs) return
      phase = e.phase
      last = now
      shown = true
      stderr.write(tty ? `\r\x1b[K${text(e)}` : `${text(e)}\n`)
    },
    end() {
      if (tty && shown) stderr.write('\r\x1b[K')
    },
  }
}
