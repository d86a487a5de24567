/*
 * Local exclusive locks on inode numbers: the operations of one mount that change an inode
 * run one at a time, taking every inode they touch in inode-number order (no deadlock).  A
 * cluster lock is shared by every local user of its mode, so these are what serialize one
 * mount's changes; fs/fs-context.ts takes the cluster locks (DESIGN §8) after them, in the same order,
 * and holds the transaction last.
 */
export class InodeLocks {
  /** held inodes -> the lockers queued behind the holder, in arrival order */
  private readonly queues = new Map<number, Array<() => void>>()

  /** Lock `inos` (any order, duplicates ignored); resolves to the unlock function. */
  async lock(inos: number[]): Promise<() => void> {
    const sorted = uniqueSorted(inos)
    for (const ino of sorted) {
      const q = this.queues.get(ino)
      if (!q) this.queues.set(ino, [])
      else await new Promise<void>((res) => q.push(res)) // the holder's unlock passes it on
    }
    return this.unlocker(sorted)
  }

  /** lock() when every inode is free now: taken at once; undefined (nothing taken) otherwise. */
  tryLock(inos: number[]): (() => void) | undefined {
    const sorted = uniqueSorted(inos)
    for (const ino of sorted) if (this.queues.has(ino)) return undefined
    for (const ino of sorted) this.queues.set(ino, [])
    return this.unlocker(sorted)
  }

  private unlocker(sorted: number[]): () => void {
    let done = false
    return () => {
      if (done) return
      done = true
      for (let i = sorted.length - 1; i >= 0; i--) {
        const ino = sorted[i]!
        const next = this.queues.get(ino)!.shift()
        if (next)
          next() // held on by the next in line
        else this.queues.delete(ino)
      }
    }
  }
}

function uniqueSorted(inos: number[]): number[] {
  if (inos.length === 1) return [inos[0]!]
  return [...new Set(inos)].sort((a, b) => a - b)
}
