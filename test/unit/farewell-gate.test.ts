/*
 * FarewellGate (server/farewell-gate.ts): when a mount saying farewell may leave.  Plain clients
 * at once; a quorum member while the members mounted after it keep a majority, or together
 * with the last ones; held farewells let go by farewells, greetings and reclaims, failed when
 * the server stops.
 */
import assert from 'node:assert/strict'
import { FarewellGate } from '../../node-agent/src/server/farewell-gate.js'
import { FsError } from '../../node-agent/src/util/errors.js'

/** what p settled to within a few event-loop turns ('pending' if not) */
async function state(p: Promise<boolean>): Promise<boolean | 'pending' | string> {
  let s: boolean | 'pending' | string = 'pending'
  void p.then(
    (v) => (s = v),
    (e: unknown) => (s = e instanceof FsError ? e.code : String(e)),
  )
  for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r))
  return s
}

function gate(majority: number): { g: FarewellGate; lines: string[] } {
  const lines: string[] = []
  return { g: new FarewellGate(majority, (m) => lines.push(m)), lines }
}

describe('FarewellGate', () => {
  it('3 slots: the first member leaves at once, the second waits, the last two leave together', async () => {
    const { g, lines } = gate(2)
    for (const [rid, slot] of [
      [10, 0],
      [11, 1],
      [12, 2],
    ] as const)
      g.mounted(rid, slot)
    assert.equal(await state(g.leave(10, 0)), true, 'two of three members stay: a majority')
    const second = g.leave(12, 2)
    assert.equal(await state(second), 'pending', 'one member would be left: fewer than a majority')
    assert.deepEqual(g.heldRids(), [12])
    assert.equal(g.leave(12, 2), second, 'asking again joins the same wait')
    assert.ok(lines.includes('farewell held: the quorum members left would be fewer than a majority'))
    // the last member (the server's own mount) says farewell: every mount left is leaving
    const last = g.leave(11, 1)
    assert.equal(await state(second), true)
    assert.equal(await state(last), true)
    assert.deepEqual(g.heldRids(), [])
    assert.ok(lines.includes('farewell let go'))
  })

  it('plain clients leave at once and keep the last members waiting while they are mounted', async () => {
    const { g } = gate(2)
    g.mounted(1, 0)
    g.mounted(2, 1)
    g.mounted(3) // a plain client
    g.mounted(4) // another
    const m1 = g.leave(1, 0)
    const m2 = g.leave(2, 1)
    assert.equal(await state(m1), 'pending', 'the client still needs a server')
    assert.equal(await state(m2), 'pending')
    assert.equal(await state(g.leave(3)), true, 'a plain client never waits')
    assert.equal(await state(m1), 'pending', 'client 4 is still mounted')
    // the other client is reclaimed (it stopped answering): only leaving members are left
    g.gone(4)
    assert.equal(await state(m1), true)
    assert.equal(await state(m2), true)
  })

  it('a member greeting again, or a new one, lets a held farewell go; a reclaimed held one resolves false', async () => {
    const { g } = gate(2)
    g.mounted(1, 0)
    g.mounted(2, 1)
    g.mounted(3, 2)
    g.mounted(9) // a plain client keeps the last members from leaving together
    assert.equal(await state(g.leave(1, 0)), true)
    const held = g.leave(2, 1)
    assert.equal(await state(held), 'pending')
    g.mounted(5, 0) // slot 0 mounts again
    assert.equal(await state(held), true, 'slots 0 and 2 stay: a majority')
    const held3 = g.leave(3, 2)
    assert.equal(await state(held3), 'pending')
    g.gone(3) // fenced and reclaimed while it waited
    assert.equal(await state(held3), false)
    assert.deepEqual(g.heldRids(), [])
  })

  it('counts slots, not mounts: a second mount of a slot does not keep a majority', async () => {
    const { g } = gate(2)
    g.mounted(1, 0)
    g.mounted(2, 0) // the old mount of slot 0, not reclaimed yet
    g.mounted(3, 1)
    g.mounted(9)
    assert.equal(await state(g.leave(3, 1)), 'pending', 'only slot 0 would be left')
    const { g: g2 } = gate(2)
    g2.mounted(1, 0)
    g2.mounted(2, 0)
    g2.mounted(3, 1)
    g2.mounted(9)
    assert.equal(await state(g2.leave(1, 0)), true, 'slot 0 stays mounted by its other mount')
  })

  it('5 slots (majority 3): two members leave at once, the third waits', async () => {
    const { g } = gate(3)
    for (let s = 0; s < 5; s++) g.mounted(100 + s, s)
    g.mounted(7)
    assert.equal(await state(g.leave(100, 0)), true)
    assert.equal(await state(g.leave(101, 1)), true)
    const third = g.leave(102, 2)
    assert.equal(await state(third), 'pending')
    assert.equal(await state(g.leave(7)), true)
    assert.equal(await state(third), 'pending', 'members 3 and 4 are mounted and not leaving')
    const fourth = g.leave(103, 3)
    assert.equal(await state(fourth), 'pending')
    const fifth = g.leave(104, 4)
    assert.deepEqual(await Promise.all([third, fourth, fifth]), [true, true, true])
  })

  it('without a quorum nothing waits; an unknown rid leaves as a plain client', async () => {
    const { g } = gate(0)
    g.mounted(1, 0)
    assert.equal(await state(g.leave(1, 0)), true)
    const { g: g2 } = gate(2)
    g2.mounted(1, 0)
    g2.mounted(2, 1)
    assert.equal(await state(g2.leave(77)), true)
  })

  it('the server stopping fails held farewells with ENXIO (their mounts ask the next server)', async () => {
    const { g } = gate(2)
    g.mounted(1, 0)
    g.mounted(2, 1)
    g.mounted(9)
    const held = g.leave(1, 0)
    assert.equal(await state(held), 'pending')
    g.close()
    assert.equal(await state(held), 'ENXIO')
    assert.deepEqual(g.heldRids(), [])
  })
})
