/*
 * The gRPC server of the driver: loads proto/csi.proto (the spec's csi.v1), serves the
 * services of the chosen mode on a unix socket created 0600 (a stale socket file is replaced,
 * a live one refused), and wraps every handler so that each call is logged with its duration,
 * counted by method and status code, and answered with a gRPC status: a CsiError's code, an
 * FsError's errno mapped to the code the CSI spec names for it, INTERNAL for anything else
 * (never a crash, never UNKNOWN).
 */
import { existsSync, promises as fsp } from 'node:fs'
import { connect } from 'node:net'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import type { Logger } from 'pino'
import { FsError, isFsError, type Errno } from '../../node-agent/src/util/errors.js'
import type { CsiMetrics } from './metrics.js'

/** A failure with the gRPC status code the CSI spec names for it. */
export class CsiError extends Error {
  constructor(
    readonly code: grpc.status,
    message: string,
  ) {
    super(message)
    this.name = 'CsiError'
  }
}

const ERRNO_STATUS: Partial<Record<Errno, grpc.status>> = {
  EINVAL: grpc.status.INVALID_ARGUMENT,
  ENOENT: grpc.status.NOT_FOUND,
  EEXIST: grpc.status.ALREADY_EXISTS,
  ENOSPC: grpc.status.RESOURCE_EXHAUSTED,
  EDQUOT: grpc.status.RESOURCE_EXHAUSTED,
  ENOTCONN: grpc.status.UNAVAILABLE,
  ETIMEDOUT: grpc.status.DEADLINE_EXCEEDED,
  EACCES: grpc.status.PERMISSION_DENIED,
  EPERM: grpc.status.PERMISSION_DENIED,
  EBUSY: grpc.status.ABORTED,
}

export function statusOf(e: unknown): { code: grpc.status; message: string } {
  if (e instanceof CsiError) return { code: e.code, message: e.message }
  if (isFsError(e)) return { code: ERRNO_STATUS[e.code] ?? grpc.status.INTERNAL, message: e.message }
  return { code: grpc.status.INTERNAL, message: e instanceof Error ? e.message : String(e) }
}

/** A unary handler: the request message (proto-loader objects) to the response message. */
export type Handler = (req: Record<string, unknown>) => Promise<object>
export type Service = Record<string, Handler>

const PROTO = join(__dirname, '..', '..', '..', 'proto', 'csi.proto')

function loadCsi(): Record<string, grpc.ServiceDefinition> {
  const def = protoLoader.loadSync(PROTO, {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  })
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    csi: { v1: Record<string, { service: grpc.ServiceDefinition }> }
  }
  const out: Record<string, grpc.ServiceDefinition> = {}
  for (const s of ['Identity', 'Controller', 'Node']) out[s] = pkg.csi.v1[s]!.service
  return out
}

/** Whether something accepts connections on unix socket `path`. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path)
    s.once('connect', () => (s.destroy(), resolve(true)))
    s.once('error', () => resolve(false))
  })
}

export class CsiServer {
  private readonly server = new grpc.Server()
  private socketPath: string | undefined

  constructor(
    private readonly log: Logger,
    private readonly metrics: CsiMetrics,
  ) {}

  /** Serve `impl` as CSI service `name` (Identity, Controller or Node). */
  add(name: 'Identity' | 'Controller' | 'Node', impl: Service): void {
    const def = loadCsi()[name]!
    const handlers: grpc.UntypedServiceImplementation = {}
    for (const method of Object.keys(def)) {
      const fn = impl[method]
      handlers[method] = (
        call: grpc.ServerUnaryCall<Record<string, unknown>, object>,
        cb: grpc.sendUnaryData<object>,
      ) => void this.run(method, fn, call.request, cb)
    }
    this.server.addService(def, handlers)
  }

  private async run(
    method: string,
    fn: Handler | undefined,
    req: Record<string, unknown>,
    cb: grpc.sendUnaryData<object>,
  ): Promise<void> {
    const start = process.hrtime.bigint()
    let code: grpc.status = grpc.status.OK
    let message = ''
    try {
      if (!fn) throw new CsiError(grpc.status.UNIMPLEMENTED, `${method} is not implemented by this driver`)
      const res = await fn(req)
      cb(null, res)
    } catch (e) {
      ;({ code, message } = statusOf(e))
      cb({ code, details: message })
    }
    const seconds = Number(process.hrtime.bigint() - start) / 1e9
    this.metrics.calls.inc({ method, code: grpc.status[code] })
    this.metrics.duration.observe({ method }, seconds)
    const line = { method, code: grpc.status[code], durationMs: Math.round(seconds * 1e6) / 1e3 }
    if (code === grpc.status.OK) this.log.info(line, 'csi call')
    else if (code === grpc.status.INTERNAL) this.log.error({ ...line, err: message }, 'csi call failed')
    else this.log.warn({ ...line, err: message }, 'csi call refused')
  }

  /** Listen on `endpoint` (unix:///PATH); the socket is created with mode 0600. */
  async listen(endpoint: string): Promise<void> {
    const m = /^unix:\/\/(\/.+)$/.exec(endpoint)
    if (!m) throw new FsError('EINVAL', `endpoint '${endpoint}' is not unix:///ABSOLUTE/PATH`)
    const path = m[1]!
    if (existsSync(path)) {
      if (await socketAnswers(path)) throw new FsError('EBUSY', `${path} is in use by a running driver`)
      await fsp.rm(path, { force: true })
    }
    const old = process.umask(0o177)
    try {
      await new Promise<void>((resolve, reject) =>
        this.server.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (e) =>
          e ? reject(new FsError('EINVAL', `cannot listen on ${path}: ${e.message}`)) : resolve(),
        ),
      )
    } finally {
      process.umask(old)
    }
    await fsp.chmod(path, 0o600)
    this.socketPath = path
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => this.server.tryShutdown(() => resolve()))
    if (this.socketPath) await fsp.rm(this.socketPath, { force: true })
  }
}

export { grpc }
