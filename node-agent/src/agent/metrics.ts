/*
 * Prometheus metrics of one agent: a prom-client registry whose gauges and counters read the
 * subsystems' own counter objects at scrape time (no double bookkeeping on hot paths), plus
 * per-operation counters and latency histograms of the filesystem API, and an HTTP server
 * for /metrics.
 */
import { createServer, type Server as HttpServer } from 'node:http'
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import type { FsApi } from '../fs/fs-api.js'
import { FsError } from '../util/errors.js'
import type { CounterSample } from './admin-api.js'

/**
 * A number read at scrape time, exported as a counter (monotonic) or a gauge.  A reading may
 * be asynchronous (a question to the server); when it fails the scrape shows the last value.
 */
export interface Reading {
  name: string
  help: string
  kind: 'counter' | 'gauge'
  read: () => number | Promise<number>
}

/** Every method of FsApi, each counted and timed by AgentMetrics.instrument. */
export const FS_OPS = [
  'lookup',
  'getattr',
  'setattr',
  'mknod',
  'mkdir',
  'symlink',
  'readlink',
  'link',
  'unlink',
  'rmdir',
  'rename',
  'readdir',
  'open',
  'release',
  'read',
  'write',
  'fallocate',
  'fsync',
  'setxattr',
  'getxattr',
  'listxattr',
  'removexattr',
  'statfs',
  'sync',
] as const satisfies ReadonlyArray<keyof FsApi>
type FsOp = (typeof FS_OPS)[number]
/** a method added to FsApi and not to FS_OPS fails to compile here */
const FS_OPS_COVER_FS_API: Exclude<keyof FsApi, FsOp> extends never ? true : never = true
void FS_OPS_COVER_FS_API

/** What a component's metric registration needs of the agent's registry. */
export type MetricSink = Pick<AgentMetrics, 'add' | 'addLabeled'>

export class AgentMetrics {
  readonly registry = new Registry()
  private readonly opTotal: Counter<'op' | 'result'>
  private readonly opSeconds: Histogram<'op'>
  /** time to take the cluster locks of one operation (0 when held locally already) */
  readonly lockWait: Histogram
  private http: HttpServer | undefined

  constructor(private readonly labels: { fsid: string; rid: string }) {
    this.registry.setDefaultLabels(labels)
    collectDefaultMetrics({ register: this.registry, prefix: 'scoutfs_agent_' })
    this.opTotal = new Counter({
      name: 'scoutfs_fs_ops_total',
      help: 'Filesystem operations served, by operation and result (ok or errno)',
      labelNames: ['op', 'result'],
      registers: [this.registry],
    })
    this.opSeconds = new Histogram({
      name: 'scoutfs_fs_op_seconds',
      help: 'Latency of filesystem operations',
      labelNames: ['op'],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5],
      registers: [this.registry],
    })
    this.lockWait = new Histogram({
      name: 'scoutfs_lock_wait_seconds',
      help: 'Time an operation waited for its cluster locks',
      buckets: [0.00001, 0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30],
      registers: [this.registry],
    })
  }

  /** A gauge (or counter) with one label whose values are read at scrape time. */
  addLabeled(
    name: string,
    help: string,
    label: string,
    read: () => Record<string, number>,
    kind: 'gauge' | 'counter' = 'gauge',
  ): void {
    if (kind === 'counter') {
      new Counter({
        name,
        help,
        labelNames: [label],
        registers: [this.registry],
        collect() {
          this.reset()
          for (const [k, v] of Object.entries(read())) this.inc({ [label]: k }, v)
        },
      })
      return
    }
    new Gauge({
      name,
      help,
      labelNames: [label],
      registers: [this.registry],
      collect() {
        this.reset()
        for (const [k, v] of Object.entries(read())) this.set({ [label]: k }, v)
      },
    })
  }

  add(readings: Reading[]): void {
    for (const r of readings) {
      if (r.kind === 'counter') {
        new Counter({
          name: r.name,
          help: r.help,
          registers: [this.registry],
          async collect() {
            const v = await r.read()
            this.reset()
            this.inc(v)
          },
        })
      } else {
        new Gauge({
          name: r.name,
          help: r.help,
          registers: [this.registry],
          async collect() {
            const v = await Promise.resolve(r.read()).catch(() => undefined)
            if (v !== undefined) this.set(v)
          },
        })
      }
    }
  }

  /**
   * A filesystem whose every call is counted and timed by operation: a plain object of
   * wrapped methods (a Proxy in front of fs cost ~8 % of create throughput: every property
   * read went through its trap, and its callers' inline caches gave up).  The label children
   * of each operation are looked up once (prom-client merges the default labels and hashes
   * them on every unlabelled call).
   */
  instrument(fs: FsApi): FsApi {
    const total = this.opTotal
    const seconds = this.opSeconds
    const out: Partial<Record<FsOp, unknown>> = {}
    for (const op of FS_OPS) {
      const fn = fs[op] as (...a: unknown[]) => Promise<unknown>
      const timer = seconds.labels({ op })
      const ok = total.labels({ op, result: 'ok' })
      const errors = new Map<string, { inc(): void }>()
      const failed = (t0: number, e: unknown): never => {
        timer.observe((performance.now() - t0) / 1000)
        const result = e instanceof FsError ? e.code : 'EIO'
        let c = errors.get(result)
        if (!c) errors.set(result, (c = total.labels({ op, result })))
        c.inc()
        throw e
      }
      out[op] = (...args: unknown[]): Promise<unknown> => {
        const t0 = performance.now()
        let r: Promise<unknown>
        try {
          r = fn.apply(fs, args)
        } catch (e) {
          return failed(t0, e)
        }
        return r.then(
          (x) => {
            timer.observe((performance.now() - t0) / 1000)
            ok.inc()
            return x
          },
          (e: unknown) => failed(t0, e),
        )
      }
    }
    return out as FsApi
  }

  /**
   * Every sample of the registry now, sorted by name (`scoutfs counters`, the admin socket's
   * GET /counters); the labels every sample carries (fsid, rid) are given once.
   */
  async samples(): Promise<{ fsid: string; rid: string; samples: CounterSample[] }> {
    const out: CounterSample[] = []
    for (const m of await this.registry.getMetricsAsJSON()) {
      for (const v of m.values) {
        const labels: Record<string, string> = {}
        for (const [k, x] of Object.entries(v.labels))
          if (k !== 'fsid' && k !== 'rid' && x !== undefined) labels[k] = String(x)
        const name = (v as { metricName?: string }).metricName ?? m.name
        // NaN (no reading yet: the event-loop delay before its first samples) has no JSON form
        if (!Number.isFinite(v.value)) continue
        out.push({ name, type: String(m.type), labels, value: v.value })
      }
    }
    out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    return { fsid: this.labels.fsid, rid: this.labels.rid, samples: out }
  }

  /** Serve /metrics on host:port (port 0 picks one); resolves to the bound address. */
  async listen(addr: string): Promise<string> {
    const m = /^(.*):(\d+)$/.exec(addr)
    if (!m) throw new FsError('EINVAL', `metrics address '${addr}' is not HOST:PORT`)
    const host = m[1] || '127.0.0.1'
    this.http = createServer((req, res) => {
      if (req.url !== '/metrics') {
        res.writeHead(404).end('try /metrics\n')
        return
      }
      this.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': this.registry.contentType }).end(body),
        (e: Error) => res.writeHead(500).end(String(e)),
      )
    })
    await new Promise<void>((resolve, reject) => {
      this.http!.once('error', reject)
      this.http!.listen(Number(m[2]), host, () => resolve())
    })
    const a = this.http.address()
    return typeof a === 'object' && a ? `${host}:${a.port}` : addr
  }

  async close(): Promise<void> {
    const h = this.http
    this.http = undefined
    if (h) await new Promise<void>((r) => h.close(() => r()))
  }
}
