/*
 * The CSI driver's Prometheus metrics (prom-client, its own registry), served on
 * --metrics-address at /metrics: every call by method and gRPC status code, call durations,
 * and whether the agent mount the driver serves from is healthy.
 */
import { createServer, type Server as HttpServer } from 'node:http'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { FsError } from '../../node-agent/src/util/errors.js'

export class CsiMetrics {
  readonly registry = new Registry()
  readonly calls = new Counter({
    name: 'scoutfs_csi_operations_total',
    help: 'CSI calls answered, by method and gRPC status code',
    labelNames: ['method', 'code'] as const,
    registers: [this.registry],
  })
  readonly duration = new Histogram({
    name: 'scoutfs_csi_operation_duration_seconds',
    help: 'CSI call durations, by method',
    labelNames: ['method'] as const,
    buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60],
    registers: [this.registry],
  })
  readonly mountHealthy = new Gauge({
    name: 'scoutfs_csi_mount_healthy',
    help: '1 when the agent mount the driver serves from answered its last check, else 0',
    registers: [this.registry],
  })
  readonly volumesCreated = new Counter({
    name: 'scoutfs_csi_volumes_created_total',
    help: 'volumes (quota directories) made by CreateVolume',
    registers: [this.registry],
  })
  readonly volumesDeleted = new Counter({
    name: 'scoutfs_csi_volumes_deleted_total',
    help: 'volumes removed by DeleteVolume, by onDelete policy',
    labelNames: ['policy'] as const,
    registers: [this.registry],
  })
  private http: HttpServer | undefined

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'scoutfs_csi_' })
  }

  /** Serve /metrics on HOST:PORT (port 0 picks one); resolves to the bound address. */
  async listen(addr: string): Promise<string> {
    const m = /^(.*):(\d+)$/.exec(addr)
    if (!m) throw new FsError('EINVAL', `metrics address '${addr}' is not HOST:PORT`)
    const host = m[1] || '127.0.0.1'
    const http = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('try /metrics\n')
        return
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (e: Error) => res.writeHead(500).end(String(e)),
      )
    })
    this.http = http
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject)
      http.listen(Number(m[2]), host, () => resolve())
    })
    const a = http.address()
    return typeof a === 'object' && a ? `${host}:${a.port}` : addr
  }

  async close(): Promise<void> {
    const h = this.http
    this.http = undefined
    if (h) await new Promise<void>((r) => h.close(() => r()))
  }
}
