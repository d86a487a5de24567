/*
 * Errors of the filesystem.  Every failure that leaves a subsystem is an FsError carrying a
 * Linux errno name (EIO, ESTALE, ENOSPC, ...) so the FUSE adapter, the CLI and the gRPC layer
 * can each map it to their own status without parsing messages.  Nothing throws strings.
 */
import { constants } from 'node:os'

export type Errno =
  | 'EIO'
  | 'ESTALE'
  | 'ENOSPC'
  | 'ENOBUFS'
  | 'EINVAL'
  | 'ENOENT'
  | 'EEXIST'
  | 'ENOTDIR'
  | 'EISDIR'
  | 'ENOTEMPTY'
  | 'ENAMETOOLONG'
  | 'ENODATA'
  | 'ERANGE'
  | 'EPERM'
  | 'EACCES'
  | 'EBUSY'
  | 'EFBIG'
  | 'ENODEV'
  | 'ENXIO'
  | 'EROFS'
  | 'EUCLEAN'
  | 'E2BIG'
  | 'EOPNOTSUPP'
  | 'EMLINK'
  | 'EXDEV'
  | 'EDQUOT'
  | 'ENOTCONN'
  | 'ETIMEDOUT'
  | 'EBADF'
  | 'EOVERFLOW'
  | 'ELOOP'
  | 'ENOSYS'
  | 'EHOSTUNREACH'
  | 'ECANCELED'

/** errnos Node's os.constants lacks */
const LINUX_ONLY: Partial<Record<Errno, number>> = { EUCLEAN: 117 }

export class FsError extends Error {
  readonly code: Errno
  readonly errno: number

  constructor(code: Errno, message: string) {
    // expected errors (ENOENT of a lookup, EEXIST, ...) are frequent and their message says
    // everything: skip capturing a stack trace, which costs more than the operation
    const limit = Error.stackTraceLimit
    Error.stackTraceLimit = 0
    super(`${code}: ${message}`)
    Error.stackTraceLimit = limit
    this.name = 'FsError'
    this.code = code
    this.errno = (constants.errno as Record<string, number>)[code] ?? LINUX_ONLY[code] ?? 5
  }
}

/** The message of an FsError without the "CODE: " prefix its constructor adds. */
export function bareMessage(e: FsError): string {
  const p = `${e.code}: `
  return e.message.startsWith(p) ? e.message.slice(p.length) : e.message
}

export function isFsError(e: unknown, code?: Errno): e is FsError {
  return e instanceof FsError && (code === undefined || e.code === code)
}

/** Node's own fs errors carry a string code; wrap them so callers see one error type. */
export function fromNodeError(e: unknown, what: string): FsError {
  if (e instanceof FsError) return e
  const err = e as NodeJS.ErrnoException
  const code = (typeof err?.code === 'string' ? err.code : 'EIO') as Errno
  return new FsError(code, `${what}: ${err?.message ?? String(e)}`)
}
