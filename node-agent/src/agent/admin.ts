/*
 * The agent's admin socket: a small HTTP/JSON API on a unix socket next to each mount, the
 * way the CLI reaches a mounted filesystem (FUSE through fuse-native carries no ioctls).  The
 * socket's path is derived from the mountpoint, so `scoutfs CMD PATH` finds it from any path
 * inside the mount.
 *
 * One socket per mountpoint: listen() replaces a stale socket (left by a dead agent: a connect
 * is refused) but refuses to take over a live one (EBUSY); the socket is removed at close()
 * and, failing that, when the process exits.  The routes and their types are admin-api.ts;
 * adminCall is the typed client of them.
 */
import { createHash } from 'node:crypto'
import { promises as fsp, rmSync } from 'node:fs'
import { connect } from 'node:net'
import { createServer, request, type IncomingMessage, type Server as HttpServer } from 'node:http'
import { dirname, join } from 'node:path'
import { FsError, type Errno } from '../util/errors.js'
import {
  ADMIN_API,
  encodeParams,
  routeTarget,
  type AdminParams,
  type AdminReply,
  type AdminRoute,
  type NoParams,
} from './admin-api.js'

export const ADMIN_DIR = process.env.SCOUTFS_ADMIN_DIR ?? '/run/scoutfs'

export function adminSocketPath(mountpoint: string): string {
  const h = createHash('sha256').update(mountpoint).digest('hex').slice(0, 16)
  return join(ADMIN_DIR, `mount-${h}.sock`)
}

export type AdminHandler = (query: URLSearchParams, body: unknown) => Promise<unknown>

export class AdminServer {
  private constructor(
    private readonly http: HttpServer,
    readonly path: string,
    private readonly removeAtExit: () => void,
  ) {}

  static async listen(path: string, routes: Record<string, AdminHandler>): Promise<AdminServer> {
    await fsp.mkdir(dirname(path), { recursive: true, mode: 0o700 })
    if (await answers(path)) throw new FsError('EBUSY', `${path}: another agent serves this mountpoint`)
    await fsp.rm(path, { force: true })
    const http = createServer((req, res) => {
      const url = new URL(req.url ?? '/', 'http://scoutfs')
      const route = routes[`${req.method} ${url.pathname}`]
      const reply = (status: number, v: unknown): void => {
        res.writeHead(status, { 'content-type': 'application/json' })
        res.end(JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x)))
      }
      if (!route) return reply(404, { code: 'ENOENT', message: `no admin route ${req.method} ${url.pathname}` })
      readBody(req)
        .then((body) => route(url.searchParams, body))
        .then(
          (v) => reply(200, v ?? {}),
          (e: unknown) =>
            reply(e instanceof FsError ? 400 : 500, {
              code: e instanceof FsError ? e.code : 'EIO',
              message: e instanceof Error ? e.message : String(e),
            }),
        )
    })
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject)
      http.listen(path, () => resolve())
    })
    await fsp.chmod(path, 0o600)
    const removeAtExit = (): void => rmSync(path, { force: true })
    process.once('exit', removeAtExit)
    return new AdminServer(http, path, removeAtExit)
  }

  async close(): Promise<void> {
    process.off('exit', this.removeAtExit)
    await new Promise<void>((r) => this.http.close(() => r()))
    await fsp.rm(this.path, { force: true })
  }
}

/** Whether something listens on the unix socket at `path` (false: none there, or a stale one). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path)
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    // ECONNREFUSED: a socket file nobody listens on; ENOENT: none
    s.once('error', () => resolve(false))
  })
}

async function readBody(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  for await (const c of req) chunks.push(c as Buffer)
  if (!chunks.length) return undefined
  return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown
}

/** The parameters adminCall takes for `route`: may be left out when the route has none. */
export type AdminCallArgs<R extends AdminRoute> =
  AdminParams<R> extends NoParams ? [params?: AdminParams<R>] : [params: AdminParams<R>]

/**
 * Call an admin route of the agent serving `mountpoint`; resolves to the reply once it has
 * been checked against the route's type (admin-api.ts), EIO when it is not of that type, the
 * agent's errno when the route failed there, ENOTCONN when no agent answers.
 */
export function adminCall<R extends AdminRoute>(
  mountpoint: string,
  route: R,
  ...[params]: AdminCallArgs<R>
): Promise<AdminReply<R>> {
  const socketPath = adminSocketPath(mountpoint)
  const { method, path } = routeTarget(route)
  const isReply = ADMIN_API[route].isReply as (v: unknown) => v is AdminReply<R>
  const query = encodeParams((params ?? {}) as Readonly<Record<string, string | number>>)
  return new Promise<AdminReply<R>>((resolve, reject) => {
    const req = request({ socketPath, method, path: path + query }, (res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => {
        let v: unknown
        try {
          v = JSON.parse(Buffer.concat(chunks).toString('utf8'))
        } catch {
          return reject(new FsError('EIO', `bad reply from the agent of ${mountpoint}`))
        }
        if (res.statusCode !== 200) {
          const err = (typeof v === 'object' && v !== null ? v : {}) as { code?: unknown; message?: unknown }
          const code = (typeof err.code === 'string' ? err.code : 'EIO') as Errno // the agent's FsError code
          return reject(new FsError(code, typeof err.message === 'string' ? err.message : 'agent error'))
        }
        if (!isReply(v)) return reject(new FsError('EIO', `the agent of ${mountpoint} sent a malformed ${route} reply`))
        resolve(v)
      })
    })
    req.on('error', (e: NodeJS.ErrnoException) =>
      reject(
        new FsError(
          'ENOTCONN',
          `cannot reach the scoutfs agent of ${mountpoint} (${e.code ?? e.message}); is it a scoutfs mount?`,
        ),
      ),
    )
    req.end()
  })
}
