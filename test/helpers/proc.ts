/*
 * What /proc says about a process, read independently of the code under test (the fence
 * agents read /proc too; tests must not trust that reading to check it).
 */
import { readFileSync } from 'node:fs'

/** the process state (/proc/<pid>/stat field 3), '' if there is no such process */
export function procState(pid: number): string {
  try {
    const s = readFileSync(`/proc/${pid}/stat`, 'utf8')
    return s.slice(s.lastIndexOf(')') + 2).split(' ')[0] ?? ''
  } catch {
    return ''
  }
}

/** whether `pid` is a process that still runs (exists and is not a zombie) */
export function running(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }
  return procState(pid) !== 'Z'
}
