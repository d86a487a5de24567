/*
 * A mount's inode numbers (FsContext.allocIno, node-agent/src/fs/fs-context.ts): unique under
 * concurrent creates, taken from batches the server hands out, the next batch asked for once
 * ahead of need however many creates run, and a failed ask reported to a create that needs it.
 * The server here is a stub answering allocInodes only: the layer under test is the mount's.
 */
import assert from 'node:assert/strict'
import { FsContext } from '../../node-agent/src/fs/fs-context.js'
import type { ServerApi } from '../../node-agent/src/protocol/server-api.js'
import { FsError } from '../../node-agent/src/util/errors.js'

const GROUP = 1024

/** A server stub: batches start on a group boundary, answered after `ms`; `fail` rejects the next ask. */
function stubServer(ms: number): { api: ServerApi; asks: number[]; fail: { next: boolean } } {
  let nextIno = 100
  const asks: number[] = []
  const fail = { next: false }
  const allocInodes = async (_rid: number, count: number): Promise<{ first: number; count: number }> => {
    asks.push(count)
    await new Promise((r) => setTimeout(r, ms))
    if (fail.next) {
      fail.next = false
      throw new FsError('ENOTCONN', 'the server went away')
    }
    const first = Math.ceil(nextIno / GROUP) * GROUP
    nextIno = first + count
    return { first, count }
  }
  return { api: { allocInodes } as unknown as ServerApi, asks, fail }
}

function context(api: ServerApi): FsContext {
  const none = undefined as never
  return new FsContext(none, none, api, none, 1, none)
}

describe('inode numbers of a mount', () => {
  it('8 creators racing for 5,000 numbers get unique ones from one ask per batch', async () => {
    const s = stubServer(3)
    const c = context(s.api)
    const got: number[] = []
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let i = 0; i < 625; i++) got.push(await c.allocIno())
      }),
    )
    assert.equal(new Set(got).size, got.length, 'no number handed out twice')
    const batch = s.asks[0]!
    // the batches used, and at most one asked for ahead of need
    const needed = Math.ceil(got.length / batch)
    assert.ok(s.asks.length <= needed + 1, `${s.asks.length} asks for ${needed} batches of ${batch}`)
    // whole batches, none thrown away: every number lies in one of the first `needed` batches
    const batches = new Set(got.map((n) => Math.floor(n / GROUP)))
    assert.ok(batches.size <= needed * Math.ceil(batch / GROUP), `numbers from ${batches.size} groups`)
  })

  it('a failed ask fails the create that needs a number; one ahead of need is asked again when needed', async () => {
    const s = stubServer(1)
    const c = context(s.api)
    s.fail.next = true
    await assert.rejects(c.allocIno(), (e: unknown) => e instanceof FsError && e.code === 'ENOTCONN')
    const first = await c.allocIno()
    const batch = s.asks[1]!
    // the ask ahead of need fails; the create that finds the batch used up asks again
    s.fail.next = true
    for (let i = 1; i < batch; i++) await c.allocIno()
    await new Promise((r) => setTimeout(r, 10))
    const asked = s.asks.length
    const n = await c.allocIno()
    assert.equal(s.asks.length, asked + 1, 'asked again')
    assert.ok(n >= first + batch, `a number of a new batch (${n})`)
  })
})
