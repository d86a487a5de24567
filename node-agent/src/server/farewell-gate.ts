/*
 * FarewellGate: when a mount that says farewell may leave (the original's farewell rule,
 * reference "Farewell").  A leader steps down when it hears from fewer than a majority of the
 * quorum slots (quorum/election.ts), so quorum members that unmount one after another would
 * leave the last of them, and every plain client, with no server.  The gate prevents it:
 *
 * - a plain client (greeted without a quorum slot) leaves at once;
 * - a quorum member leaves while the slots of the members still mounted after it (each slot
 *   counted once) are at least the majority: the leader keeps hearing from a majority;
 * - when every mount left is a quorum member saying farewell, they all leave together (the
 *   last mounts of the cluster stop at once).
 *
 * Otherwise its farewell waits (held) until a farewell, a greeting or a reclaim changes the
 * answer.  Held members are let go in the order they asked.
 *
 * Invariants: a rid is let go at most once, and stops counting as mounted when it is; a rid
 * reclaimed while held resolves false (its caller does nothing more); a rid the gate never
 * saw greet counts as a plain client, and mounts recorded but not yet greeted as plain
 * clients that are not leaving (so the last members wait for them to return or be reclaimed).
 */

import { FsError } from '../util/errors.js'

type Log = (msg: string, fields?: Record<string, unknown>) => void

interface Held {
  promise: Promise<boolean>
  resolve: (leave: boolean) => void
  reject: (e: Error) => void
  since: number
  /** it did not leave at once (it was logged as held) */
  waited: boolean
}

export class FarewellGate {
  /** mounts that greeted (or are recorded) and have not left: rid -> quorum slot, or -1 */
  private readonly mounts = new Map<number, number>()
  /** farewells waiting, in the order asked */
  private readonly held = new Map<number, Held>()

  /**
   * @param majority how many quorum slots elect a leader (0: no quorum, nothing is held)
   */
  constructor(
    private readonly majority: number,
    private readonly log: Log,
  ) {}

  /** Mount `rid` greeted, a quorum member of `slot` if given. */
  mounted(rid: number, slot?: number): void {
    this.mounts.set(rid, slot ?? -1)
    this.settle()
  }

  /** Mount `rid` is gone without a farewell (reclaimed): a held farewell of it resolves false. */
  gone(rid: number): void {
    this.mounts.delete(rid)
    const h = this.held.get(rid)
    if (h) {
      this.held.delete(rid)
      h.resolve(false)
    }
    this.settle()
  }

  /**
   * Mount `rid` says farewell (`slot`: the quorum slot it says it is, if a member).  Resolves
   * true when it may leave (its record is then the caller's to reclaim), false if it was
   * reclaimed meanwhile.  Asking again while held joins the same wait.
   */
  leave(rid: number, slot?: number): Promise<boolean> {
    const h = this.held.get(rid)
    if (h) return h.promise
    if (slot !== undefined) this.mounts.set(rid, slot)
    let resolve!: (leave: boolean) => void
    let reject!: (e: Error) => void
    const promise = new Promise<boolean>((res, rej) => {
      resolve = res
      reject = rej
    })
    const h2: Held = { promise, resolve, reject, since: Date.now(), waited: false }
    this.held.set(rid, h2)
    this.settle()
    if (this.held.has(rid)) {
      h2.waited = true
      this.log('farewell held: the quorum members left would be fewer than a majority', {
        rid: rid.toString(16),
        slot,
        membersMounted: this.memberSlots().size,
        majority: this.majority,
        mounts: this.mounts.size,
      })
    }
    return promise
  }

  /** The server stops: held farewells fail with ENXIO (their mounts ask the next server). */
  close(): void {
    for (const h of this.held.values())
      h.reject(new FsError('ENXIO', 'the server stopped while this farewell waited for the other quorum members'))
    this.held.clear()
  }

  /** The farewells waiting now (rids, in the order asked). */
  heldRids(): number[] {
    return [...this.held.keys()]
  }

  /** The distinct quorum slots of the mounts counted as mounted, but for `except`. */
  private memberSlots(except?: number): Set<number> {
    const s = new Set<number>()
    for (const [rid, slot] of this.mounts) if (slot >= 0 && rid !== except) s.add(slot)
    return s
  }

  /** Let go of every held farewell that may leave now. */
  private settle(): void {
    if (this.held.size === 0) return
    const lastTogether = [...this.mounts].every(([rid, slot]) => slot >= 0 && this.held.has(rid))
    for (const [rid, h] of [...this.held]) {
      const slot = this.mounts.get(rid) ?? -1
      if (!lastTogether && slot >= 0 && this.majority > 0 && this.memberSlots(rid).size < this.majority) continue
      this.held.delete(rid)
      this.mounts.delete(rid)
      if (h.waited)
        this.log('farewell let go', { rid: rid.toString(16), slot, waitedMs: Date.now() - h.since, lastTogether })
      h.resolve(true)
    }
  }
}
