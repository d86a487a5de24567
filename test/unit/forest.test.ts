/*
 * The forest's roots: an invalidation (this mount's commit, or a lock grant naming a newer
 * roots version) must win over a roots fetch already in flight, whose answer may predate the
 * commit the next read has to see.  The server here is a function answering GetRoots with
 * whatever the test decides, when the test decides.
 */
import assert from 'node:assert/strict'
import { BlockCache } from '../../node-agent/src/storage/block.js'
import { EMPTY_ROOT, makeKey, Zone } from '../../node-agent/src/storage/format.js'
import { Forest } from '../../node-agent/src/client/forest.js'
import type { Roots } from '../../node-agent/src/protocol/server-api.js'
import { MemDevice } from '../helpers/mem-device.js'

const roots = (version: number): Roots => ({ fsRoot: EMPTY_ROOT, logTrees: [], version })
const KEY = makeKey(Zone.FS, 5)
const LO = makeKey(Zone.FS)
const HI = makeKey(Zone.FS, 1023, 0xff)

describe('forest roots', function () {
  /** a GetRoots whose answers the test releases one by one */
  function controlledServer(): { fetch: () => Promise<Roots>; pending: Array<(r: Roots) => void>; calls: number } {
    const s = {
      pending: [] as Array<(r: Roots) => void>,
      calls: 0,
      fetch: (): Promise<Roots> => {
        s.calls++
        return new Promise<Roots>((res) => s.pending.push(res))
      },
    }
    return s
  }
  const turn = (): Promise<void> => new Promise((r) => setImmediate(r))

  it('drops the answer of a fetch that an invalidation overtook, and fetches again', async function () {
    const srv = controlledServer()
    const f = new Forest(new BlockCache(new MemDevice(64 << 20), 1n, 16), srv.fetch)
    const read = f.readAround(KEY, LO, HI)
    await turn()
    assert.equal(srv.calls, 1)
    f.invalidateRoots() // e.g. our own commit just became durable
    srv.pending.shift()!(roots(10)) // the old answer arrives after it
    await turn()
    assert.equal(srv.calls, 2, 'the overtaken answer is not used: the roots are fetched again')
    srv.pending.shift()!(roots(11))
    await read
    // the next read uses the fresh roots without asking again
    await f.readAround(KEY, LO, HI)
    assert.equal(srv.calls, 2)
  })

  it('never uses roots older than the version a lock grant named', async function () {
    const srv = controlledServer()
    const f = new Forest(new BlockCache(new MemDevice(64 << 20), 1n, 16), srv.fetch)
    const first = f.readAround(KEY, LO, HI)
    await turn()
    srv.pending.shift()!(roots(20))
    await first
    f.invalidateRoots(22) // a grant carrying roots version 22
    const read = f.readAround(KEY, LO, HI)
    await turn()
    srv.pending.shift()!(roots(21)) // a reply that crossed the grant
    for (let i = 0; i < 50 && srv.pending.length === 0; i++) await new Promise((r) => setTimeout(r, 5))
    assert.equal(srv.calls, 3, 'version 21 < 22: asked again')
    srv.pending.shift()!(roots(22))
    await read
  })
})
