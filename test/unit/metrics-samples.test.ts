/*
 * AgentMetrics.samples() (`scoutfs counters`, GET /counters): every finite sample of the
 * registry, and none that JSON cannot carry (a gauge with no reading yet is NaN; prom-client's
 * event-loop delay is NaN until its first samples), so the admin reply always validates.
 */
import assert from 'node:assert/strict'
import { AgentMetrics } from '../../node-agent/src/agent/metrics.js'

describe('AgentMetrics.samples', () => {
  it('gives every finite sample and leaves out NaN ones, so the reply survives JSON', async () => {
    const m = new AgentMetrics({ fsid: 'f', rid: 'r' })
    let reading = NaN
    m.add([
      { name: 'scoutfs_test_reading', help: 'a reading', kind: 'gauge', read: () => reading },
      { name: 'scoutfs_test_things_total', help: 'things', kind: 'counter', read: () => 3 },
    ])
    const first = await m.samples()
    assert.deepEqual(JSON.parse(JSON.stringify(first)), first, 'the reply is plain JSON')
    assert.ok(first.samples.every((s) => Number.isFinite(s.value)))
    assert.equal(
      first.samples.find((s) => s.name === 'scoutfs_test_reading'),
      undefined,
    )
    assert.equal(first.samples.find((s) => s.name === 'scoutfs_test_things_total')?.value, 3)
    reading = 7
    const second = await m.samples()
    assert.equal(second.samples.find((s) => s.name === 'scoutfs_test_reading')?.value, 7)
  })
})
