/*
 * A real Prometheus for tests: Debian's `prometheus` binary (scripts/ensure-deps.sh installs
 * it) started on loopback with its own config and a temporary TSDB, scraping the given
 * targets every second and evaluating the given rule files every second.  Never the system's
 * service.  Every Prometheus started here is remembered; stopAllPrometheus() kills what is
 * left and removes its directory.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { freePort } from '../../node-agent/src/tools/launcher/ports.js'
import { FsError } from '../../node-agent/src/util/errors.js'

export interface PromSeries {
  metric: Record<string, string>
  value: [number, string]
}

export interface PromRule {
  name: string
  query: string
  type: string
  health: string
  lastError?: string
  state?: string
}

export interface Prometheus {
  url: string
  /** an instant query: the result vector (EINVAL with Prometheus's error when the query fails) */
  query(expr: string): Promise<PromSeries[]>
  /** GET /api/v1/<path>: the data of a successful answer */
  api<T>(path: string): Promise<T>
  stop(): Promise<void>
  log(): string
}

const running = new Set<Prometheus>()

async function get(url: string): Promise<{ status: number; body: unknown }> {
  const r = await fetch(url)
  const text = await r.text()
  let body: unknown = text
  try {
    body = JSON.parse(text) as unknown
  } catch {
    // not JSON (/-/ready)
  }
  return { status: r.status, body }
}

/** Start Prometheus scraping `targets` (HOST:PORT, job "scoutfs") with `ruleFiles`; resolves once it is ready. */
export async function startPrometheus(
  targets: readonly string[],
  ruleFiles: readonly string[] = [],
): Promise<Prometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'scoutfs-prom-'))
  const config = join(dir, 'prometheus.yml')
  writeFileSync(
    config,
    JSON.stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      rule_files: ruleFiles,
      scrape_configs: [{ job_name: 'scoutfs', static_configs: [{ targets }] }],
    }),
  )
  const port = await freePort()
  const url = `http://127.0.0.1:${port}`
  let out = ''
  const proc: ChildProcess = spawn(
    'prometheus',
    [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=warn',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  proc.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  proc.stderr!.on('data', (b: Buffer) => (out += b.toString()))
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()))
  const spawnError = new Promise<never>((_, reject) =>
    proc.once('error', (e) =>
      reject(new FsError('ENOENT', `cannot run prometheus (${e.message}): run scripts/ensure-deps.sh as root`)),
    ),
  )
  const p: Prometheus = {
    url,
    log: () => out,
    async api<T>(path: string): Promise<T> {
      const r = await get(`${url}/api/v1/${path}`)
      const b = r.body as { status?: string; data?: T; error?: string }
      if (b.status !== 'success')
        throw new FsError('EINVAL', `prometheus ${path}: ${b.error ?? JSON.stringify(r.body)}`)
      return b.data as T
    },
    async query(expr: string): Promise<PromSeries[]> {
      const d = await p.api<{ resultType: string; result: PromSeries[] }>(`query?query=${encodeURIComponent(expr)}`)
      if (d.resultType !== 'vector') throw new FsError('EINVAL', `query ${expr} gave a ${d.resultType}, not a vector`)
      return d.result
    },
    async stop() {
      running.delete(p)
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM')
        const t = setTimeout(() => proc.kill('SIGKILL'), 10_000)
        await exited
        clearTimeout(t)
      }
      rmSync(dir, { recursive: true, force: true })
    },
  }
  running.add(p)
  // ready: /-/ready answers 200 (poll; the machine may be slow, mocha's timeout bounds it)
  for (;;) {
    if (proc.exitCode !== null) throw new FsError('EIO', `prometheus exited ${proc.exitCode}:\n${out}`)
    const ok = await Promise.race([
      get(`${url}/-/ready`).then(
        (r) => r.status === 200,
        () => false,
      ),
      spawnError,
    ])
    if (ok) return p
    await new Promise((r) => setTimeout(r, 200))
  }
}

export async function stopAllPrometheus(): Promise<void> {
  for (const p of [...running]) await p.stop()
}

/** Poll `cond` every 500 ms until it holds; after `ms` fail (never wait out the test's whole timeout). */
export async function until<T>(cond: () => Promise<T | undefined>, ms = 60_000): Promise<T> {
  for (const end = Date.now() + ms; ;) {
    const v = await cond()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`waited ${ms / 1000} s for Prometheus to show it (${cond.toString()})`)
    await new Promise((r) => setTimeout(r, 500))
  }
}
