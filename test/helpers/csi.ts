/*
 * The CSI driver for tests: `scoutfs csi` as a real child process on a real agent mount,
 * serving its unix socket, and a gRPC client of it built from proto/csi.proto.  Every driver
 * started here is stopped by stopAllDrivers() (call it in after()).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import * as grpc from '@grpc/grpc-js'
import * as protoLoader from '@grpc/proto-loader'
import { BIN } from './agent.js'

export interface Driver {
  endpoint: string
  socket: string
  proc: ChildProcess
  log: () => string
  metricsAddr?: string
  stop(): Promise<void>
}

const drivers = new Set<Driver>()

export async function startDriver(
  mnt: string,
  socket: string,
  opts: { nodeId?: string; mode?: string; metrics?: boolean; statsTimeoutMs?: number } = {},
): Promise<Driver> {
  const args = ['csi', '--endpoint', `unix://${socket}`, '--node-id', opts.nodeId ?? 'node-0', '--mount', mnt]
  if (opts.mode) args.push('--mode', opts.mode)
  if (opts.metrics) args.push('--metrics-address', '127.0.0.1:0')
  if (opts.statsTimeoutMs) args.push('--stats-timeout-ms', String(opts.statsTimeoutMs))
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  proc.stderr!.on('data', (b: Buffer) => (out += b.toString()))
  const d: Driver = {
    endpoint: `unix://${socket}`,
    socket,
    proc,
    log: () => out,
    async stop() {
      drivers.delete(d)
      if (proc.exitCode !== null || proc.signalCode !== null) return
      const done = new Promise<void>((r) => proc.once('close', () => r()))
      proc.kill('SIGTERM')
      await done
    },
  }
  drivers.add(d)
  for (;;) {
    const m = /"csi driver listening".*|"metrics":"([^"]+)"/.exec(out)
    if (/"msg":"csi driver listening"/.test(out) && existsSync(socket)) {
      d.metricsAddr = /"metrics":"([^"]+)"/.exec(out)?.[1] ?? m?.[1]
      return d
    }
    if (proc.exitCode !== null) throw new Error(`scoutfs csi exited ${proc.exitCode}:\n${out}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

export async function stopAllDrivers(): Promise<void> {
  await Promise.all([...drivers].map((d) => d.stop()))
}

type Unary = (req: object) => Promise<Record<string, unknown>>
type RawUnary = (req: object, cb: (e: grpc.ServiceError | null, r: Record<string, unknown>) => void) => void
export type CsiClient = Record<string, Unary> & { close(): void }

/** A client of the driver at `socket` with every Identity, Controller and Node method, promisified. */
export function csiClient(socket: string): CsiClient {
  const def = protoLoader.loadSync(join(__dirname, '..', '..', '..', 'proto', 'csi.proto'), {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  })
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    csi: { v1: Record<string, grpc.ServiceClientConstructor> }
  }
  const out: Record<string, unknown> = {}
  const clients: grpc.Client[] = []
  for (const s of ['Identity', 'Controller', 'Node']) {
    const Ctor = pkg.csi.v1[s]!
    const c = new Ctor(`unix://${socket}`, grpc.credentials.createInsecure())
    clients.push(c)
    for (const method of Object.keys(Ctor.service)) {
      const fn = (c as unknown as Record<string, RawUnary>)[method]!.bind(c)
      out[method] = (req: object) =>
        new Promise((resolve, reject) =>
          fn(req, (e: grpc.ServiceError | null, r: Record<string, unknown>) => (e ? reject(e) : resolve(r))),
        )
    }
  }
  out.close = () => clients.forEach((c) => c.close())
  return out as CsiClient
}

/** A mount capability of access mode `mode`. */
export const mountCap = (mode = 'MULTI_NODE_MULTI_WRITER', flags: string[] = []): object => ({
  mount: { fs_type: '', mount_flags: flags },
  access_mode: { mode },
})
