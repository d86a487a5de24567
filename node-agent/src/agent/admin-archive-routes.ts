/*
 * The archive routes of the admin socket (admin-api.ts, docs/archive.md): release, stage,
 * fiemap, data-waiting, data-wait-err, search-xattrs, xattr totals and ino-path, each a thin
 * call of the mount's Filesystem.  Stage reads the archive file itself (the admin socket is
 * the agent's own user's only) and stages it in 1 MiB pieces, each its own transaction, as
 * the original's tool does with its ioctl.
 */
import { open } from 'node:fs/promises'
import { constants } from 'node:os'
import { FsError, fromNodeError, type Errno } from '../util/errors.js'
import { DATA_BLOCK_SIZE } from '../storage/format.js'
import type { Filesystem } from '../fs/fs.js'
import { DATA_WAIT_OP_NAMES, DataWaitOp } from '../fs/data-wait.js'
import type { AdminImpl } from './admin-api.js'

type ArchiveRoute =
  | 'POST /release'
  | 'POST /stage'
  | 'GET /fiemap'
  | 'GET /data-waiting'
  | 'POST /data-wait-err'
  | 'GET /search-xattrs'
  | 'GET /xattr-totals'
  | 'GET /ino-path'

export type ArchiveFs = Pick<
  Filesystem,
  | 'releaseData'
  | 'stageData'
  | 'fiemap'
  | 'dataWaiting'
  | 'dataWaitErr'
  | 'searchXattrs'
  | 'readXattrTotals'
  | 'inoPaths'
>

const STAGE_CHUNK = 1 << 20
const OPS = { read: DataWaitOp.READ, write: DataWaitOp.WRITE, change_size: DataWaitOp.CHANGE_SIZE } as const

/** The errnos an archive agent may fail waiters with (those the filesystem's errors carry). */
const WAIT_ERRNOS: readonly Errno[] = [
  'EIO',
  'ENOENT',
  'ENODATA',
  'ENOSPC',
  'EACCES',
  'EPERM',
  'ETIMEDOUT',
  'ECANCELED',
  'ESTALE',
  'EINVAL',
  'ENXIO',
  'EHOSTUNREACH',
  'ENOTCONN',
  'EBUSY',
]

function errnoCode(err: number): Errno {
  const errnos = constants.errno as Record<string, number>
  const code = WAIT_ERRNOS.find((c) => errnos[c] === -err)
  if (!code)
    throw new FsError(
      'EINVAL',
      `err ${err} is not one waiters can be failed with; use one of ${WAIT_ERRNOS.map((c) => `-${errnos[c]} (${c})`).join(', ')}`,
    )
  return code
}

async function stageFromFile(
  fs: ArchiveFs,
  p: { ino: number; version: number; offset: number; length: number; archive: string },
): Promise<number> {
  const f = await open(p.archive, 'r').catch((e: unknown) => {
    throw fromNodeError(e, `cannot open archive file ${p.archive}`)
  })
  try {
    let done = 0
    while (done < p.length) {
      const want = Math.min(STAGE_CHUNK, p.length - done)
      const buf = Buffer.alloc(want)
      const { bytesRead } = await f.read(buf, 0, want, done)
      if (bytesRead < want)
        throw new FsError(
          'EIO',
          `archive file ${p.archive} ends at ${done + bytesRead} bytes, ${p.length} were to be staged`,
        )
      done += await fs.stageData(p.ino, p.version, p.offset + done, buf)
    }
    return done
  } finally {
    await f.close()
  }
}

/**
 * `changed(ino)` runs after release and stage changed an inode outside the frontend: the
 * kernel's cached attributes (block counts) and pages of it must go.
 */
export function archiveRoutes(fs: ArchiveFs, changed: (ino: number) => void): Pick<AdminImpl, ArchiveRoute> {
  return {
    'POST /release': async (p) => {
      const blocks = await fs.releaseData(p.ino, p.version, p.offset, p.length)
      changed(p.ino)
      return { blocks }
    },
    'POST /stage': async (p) => {
      try {
        return { bytes: await stageFromFile(fs, p) }
      } finally {
        changed(p.ino) // a failed stage may have staged its first pieces
      }
    },
    'GET /fiemap': async (p) => ({ extents: await fs.fiemap(p.ino) }),
    'GET /data-waiting': async (p) => ({
      entries: fs.dataWaiting(p.afterIno, p.afterIblock, p.limit).map((w) => ({
        ino: w.ino,
        iblock: w.iblock,
        ops: Object.values(DataWaitOp)
          .filter((bit) => w.op & bit)
          .map((bit) => DATA_WAIT_OP_NAMES[bit]),
      })),
    }),
    'POST /data-wait-err': async (p) => {
      // the version is not checked, as in the original since 1.25: waiters are failed by range
      const first = Math.floor(p.offset / DATA_BLOCK_SIZE)
      const blocks = p.count === 0 ? 0 : Math.floor((p.offset + p.count - 1) / DATA_BLOCK_SIZE) - first + 1
      return { found: fs.dataWaitErr(p.ino, first, blocks, OPS[p.op], errnoCode(p.err)) }
    },
    'GET /search-xattrs': async (p) => ({ inos: await fs.searchXattrs(p.name, p.firstIno, p.limit) }),
    'GET /xattr-totals': async () => ({
      totals: (await fs.readXattrTotals()).map((t) => ({
        name: t.name.join('.'),
        total: t.total.toString(),
        count: t.count,
      })),
    }),
    'GET /ino-path': async (p) => ({ paths: await fs.inoPaths(p.ino) }),
  }
}
