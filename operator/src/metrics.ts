/*
 * The operator's Prometheus metrics (scoutfs_operator_*): reconciles by controller and result,
 * errors by controller and HTTP status, the work queue's depth, reconcile duration, whether
 * this replica leads, fences completed by method and result; and the HTTP server of /metrics
 * (--metrics-address).  Counters only grow; the queue depth and leader gauges are set by the
 * queue and the elector.
 */
import { createServer, type Server as HttpServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'

export type ReconcileResult = 'success' | 'requeue' | 'conflict' | 'error'

export class OperatorMetrics {
  readonly registry = new Registry()
  readonly reconciles: Counter<'controller' | 'result'>
  readonly errors: Counter<'controller' | 'code'>
  readonly queueDepth: Gauge<'controller'>
  readonly duration: Histogram<'controller'>
  readonly leader: Gauge
  readonly fences: Counter<'method' | 'result'>
  private http: HttpServer | undefined

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'scoutfs_operator_' })
    const registers = [this.registry]
    this.reconciles = new Counter({
      name: 'scoutfs_operator_reconciles_total',
      help: 'Reconciles run, by controller and result (success, requeue, conflict, error)',
      labelNames: ['controller', 'result'],
      registers,
    })
    this.errors = new Counter({
      name: 'scoutfs_operator_reconcile_errors_total',
      help: 'Reconciles that failed, by controller and HTTP status of the API error (0: no answer or not an API error)',
      labelNames: ['controller', 'code'],
      registers,
    })
    this.queueDepth = new Gauge({
      name: 'scoutfs_operator_queue_depth',
      help: 'Keys waiting in the work queue, by controller',
      labelNames: ['controller'],
      registers,
    })
    this.duration = new Histogram({
      name: 'scoutfs_operator_reconcile_duration_seconds',
      help: 'Time of one reconcile, by controller',
      labelNames: ['controller'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    })
    this.leader = new Gauge({
      name: 'scoutfs_operator_leader',
      help: '1 while this replica holds the leader Lease and acts, 0 otherwise',
      registers,
    })
    this.fences = new Counter({
      name: 'scoutfs_operator_fences_total',
      help: 'FenceRequests completed, by method and result (fenced, failed)',
      labelNames: ['method', 'result'],
      registers,
    })
  }

  /** serve /metrics at host:port (port 0: any); resolves with the address bound */
  listen(address: string): Promise<AddressInfo> {
    const i = address.lastIndexOf(':')
    const host = i > 0 ? address.slice(0, i).replace(/^\[|\]$/g, '') : '0.0.0.0'
    const port = Number(address.slice(i + 1))
    this.http = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('not found: try /metrics\n')
        return
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'Content-Type': this.registry.contentType }).end(body),
        (e: Error) => res.writeHead(500).end(e.message),
      )
    })
    const http = this.http
    return new Promise((resolve, reject) => {
      http.once('error', reject)
      http.listen(port, host, () => resolve(http.address() as AddressInfo))
    })
  }

  close(): Promise<void> {
    const http = this.http
    this.http = undefined
    return new Promise((r) => (http ? http.close(() => r()) : r()))
  }
}
