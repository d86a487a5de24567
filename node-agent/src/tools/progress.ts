/*
 * Progress of a long offline operation (mkfs, check), as the tools report it: the phase, how
 * far it got and, when known, how far it goes.  The tools only call a ProgressFn; showing it
 * (or not) is the caller's business (cli/progress.ts writes it to stderr).
 */
export interface ProgressEvent {
  phase: string
  done: number
  total?: number
}

export type ProgressFn = (e: ProgressEvent) => void

/** How many blocks a per-block loop goes between reports (a power of two: `(i & MASK) === 0`). */
export const PROGRESS_BLOCK_MASK = (1 << 22) - 1
