/*
 * Local exclusive locks on inode numbers: the operations of one mount that change an inode
 * run one at a time, taking every inode they touch in inode-number order (no deadlock).  A
 * cluster lock is shared by every local user of its mode, so these are what serialize one
 * mount's changes; fs/fs-context.ts takes the cluster locks (DESIGN §8) after them, in the same order,
 * and holds the transaction last.
 */
export class InodeLocks {
  private readonly tails = new Map<number, Promise<void>>()

  /** Lock `inos` (any order, duplicates ignored); resolves to the unlock function. */
  async lock(inos: number[]): Promise<() => void> {
    const sorted = [...new Set(inos)].sort((a, b) => a - b)
    const releases: Array<() => void> = []
    for (const ino of sorted) {
      const prev = this.tails.get(ino) ?? Promise.resolve()
      let release!: () => void
      const mine = new Promise<void>((res) => (release = res))
      const tail = prev.then(() => mine)
      this.tails.set(ino, tail)
      await prev
      releases.push(() => {
        release()
        if (this.tails.get(ino) === tail) this.tails.delete(ino)
      })
    }
    let done = false
    return () => {
      if (done) return
      done = true
      for (const r of releases.reverse()) r()
    }
  }
}
