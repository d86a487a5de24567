/*
 * Answering a FUSE request exactly once.  fuse-native's reply copies its arguments into
 * libfuse's request and wakes the FUSE thread blocked on it; a second reply would wake that
 * thread while it serves another request (memory corruption), and a missing one leaves it
 * blocked forever.  respond() guards every op: a second answer is logged and dropped, a
 * synchronous throw and every rejection become an answer (an FsError its errno, anything
 * else EIO, logged), and a failure after the answer is only logged.
 */
import { constants as osConstants } from 'node:os'
import { FsError } from '../util/errors.js'
import type { Caller, FsApi } from '../fs/fs-api.js'
import type { Reply } from './fuse-native.js'
import type { Handles } from './handles.js'
import type { PathCache } from './path-cache.js'

export interface OpsLogger {
  error(msg: string, err?: unknown): void
  warn?(msg: string): void
}

export interface OpsContext {
  fs: FsApi
  paths: PathCache
  handles: Handles
  caller: () => Caller
  blksize: number
  log: OpsLogger
}

/** the negative errno an op answers with for `e` */
function errno(log: OpsLogger, e: unknown, what: string): number {
  if (e instanceof FsError && e.errno > 0) return -e.errno
  log.error(`${what} failed`, e)
  return -osConstants.errno.EIO
}

/**
 * Run an op and answer it exactly once: ok(value, reply) on success, reply(-errno) on failure.
 * Never throws, never leaves the kernel waiting, never answers twice.
 */
export function respond<T>(
  log: OpsLogger,
  what: string,
  rawReply: Reply,
  fail: Reply,
  fn: () => Promise<T>,
  ok: (v: T, reply: Reply) => void,
): void {
  let answered = false
  const guard =
    (f: Reply): Reply =>
    (res, ...results) => {
      if (answered) {
        log.error(`${what}: a second answer to one request, dropped`, new Error('double reply'))
        return
      }
      answered = true
      f(res, ...results)
    }
  const reply = guard(rawReply)
  const failOnce = guard(fail)
  const onError = (e: unknown): void => {
    if (answered) return log.error(`${what}: failed after its answer`, e)
    failOnce(errno(log, e, what))
  }
  let p: Promise<T>
  try {
    p = fn()
  } catch (e) {
    return onError(e)
  }
  p.then((v) => {
    try {
      ok(v, reply)
    } catch (e) {
      onError(e)
    }
  }, onError)
}
