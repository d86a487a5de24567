/*
 * A rate-limited work queue of keys (as client-go's workqueue): a key waits in the queue at
 * most once however often it is added; a key being processed is never handed to a second
 * worker — added meanwhile, it is processed again after the current run ends; a failed key
 * comes back after a per-key exponential backoff (baseMs doubling up to maxMs), and forget()
 * resets that backoff after a success.  addAfter() brings a key back later (a periodic
 * re-check).  Nothing here knows what a key means.
 */
export interface WorkQueueOptions {
  baseMs: number
  maxMs: number
  /** how many keys are processed at once */
  workers: number
  /** told the number of keys waiting whenever it changes */
  onDepth?: (depth: number) => void
}

export type Worker = (key: string) => Promise<'done' | 'retry'>

export class WorkQueue {
  private readonly queue: string[] = []
  private readonly queued = new Set<string>()
  private readonly processing = new Set<string>()
  private readonly dirty = new Set<string>()
  private readonly failures = new Map<string, number>()
  private readonly timers = new Map<string, { t: NodeJS.Timeout; due: number }>()
  private running = 0
  private worker: Worker | undefined
  private stopped = false
  private idleWaiters: Array<() => void> = []

  constructor(private readonly o: WorkQueueOptions) {}

  /** the keys waiting (not counting those being processed) */
  get depth(): number {
    return this.queue.length
  }

  add(key: string): void {
    if (this.stopped) return
    if (this.processing.has(key)) {
      this.dirty.add(key)
      return
    }
    if (this.queued.has(key)) return
    this.queued.add(key)
    this.queue.push(key)
    this.o.onDepth?.(this.queue.length)
    this.pump()
  }

  /** add `key` after `ms` (of two pending addAfter of a key, the earlier wins) */
  addAfter(key: string, ms: number): void {
    if (this.stopped) return
    const due = Date.now() + ms
    const pending = this.timers.get(key)
    if (pending) {
      if (pending.due <= due) return
      clearTimeout(pending.t)
    }
    const t = setTimeout(() => {
      this.timers.delete(key)
      this.add(key)
    }, ms)
    t.unref()
    this.timers.set(key, { t, due })
  }

  /** add `key` after its backoff, which doubles with each failure until forget() */
  addRateLimited(key: string): void {
    const n = this.failures.get(key) ?? 0
    this.failures.set(key, n + 1)
    this.addAfter(key, this.backoffMs(n))
  }

  backoffMs(failures: number): number {
    return Math.min(this.o.maxMs, this.o.baseMs * 2 ** Math.min(failures, 30))
  }

  forget(key: string): void {
    this.failures.delete(key)
  }

  /** start handing keys to `worker` ('retry': back after its backoff; a throw counts as 'retry') */
  start(worker: Worker): void {
    this.worker = worker
    this.pump()
  }

  /** resolves when nothing is queued or running (timers may still be pending) */
  idle(): Promise<void> {
    if (!this.queue.length && !this.running) return Promise.resolve()
    return new Promise((r) => this.idleWaiters.push(r))
  }

  stop(): void {
    this.stopped = true
    for (const { t } of this.timers.values()) clearTimeout(t)
    this.timers.clear()
    this.queue.length = 0
    this.queued.clear()
  }

  private pump(): void {
    while (this.worker && !this.stopped && this.running < this.o.workers && this.queue.length) {
      const key = this.queue.shift() as string
      this.queued.delete(key)
      this.o.onDepth?.(this.queue.length)
      this.processing.add(key)
      this.running++
      void this.run(this.worker, key)
    }
    if (!this.queue.length && !this.running) for (const w of this.idleWaiters.splice(0)) w()
  }

  private async run(worker: Worker, key: string): Promise<void> {
    let result: 'done' | 'retry'
    try {
      result = await worker(key)
    } catch {
      result = 'retry'
    }
    this.processing.delete(key)
    this.running--
    if (result === 'retry') this.addRateLimited(key)
    else this.forget(key)
    if (this.dirty.delete(key)) this.add(key)
    this.pump()
  }
}
