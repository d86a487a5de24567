/*
 * The free-space metrics (agent/metrics-storage.ts) ask the server's statfs at most once a
 * second and never make a scrape wait for a server that does not answer (a failover): the
 * last answer is reported meanwhile.
 */
import assert from 'node:assert/strict'
import { AgentMetrics } from '../../node-agent/src/agent/metrics.js'
import { registerFreeSpaceMetrics } from '../../node-agent/src/agent/metrics-storage.js'
import type { ServerStatfs } from '../../node-agent/src/protocol/server-api.js'

const answer = (freeDataBlocks: number): ServerStatfs => ({
  fsid: 1n,
  totalMetaBlocks: 100,
  freeMetaBlocks: 50,
  totalDataBlocks: 1000,
  freeDataBlocks,
  inodeCount: 1,
  committedSeq: 1,
})

async function freeData(m: AgentMetrics): Promise<number | undefined> {
  const j = await m.registry.getMetricsAsJSON()
  const v = j.find((x) => x.name === 'scoutfs_data_free_bytes')?.values[0]?.value
  return v === undefined ? undefined : Number(v)
}

describe('free-space metrics', function () {
  this.timeout(20_000)

  it("report the server's answer, then the last one while the server does not answer", async () => {
    const m = new AgentMetrics({ fsid: '1', rid: '1' })
    let asked = 0
    let serving = true
    registerFreeSpaceMetrics(m, () => {
      asked++
      return serving ? Promise.resolve(answer(10 + asked)) : new Promise<ServerStatfs>(() => undefined)
    })
    assert.equal(await freeData(m), 11 * 4096)
    assert.equal(await freeData(m), 11 * 4096, 'asked again within the second: the same answer')
    assert.equal(asked, 1)
    serving = false
    await new Promise((r) => setTimeout(r, 1100))
    // the question goes unanswered: the scrape still completes, with the last answer
    assert.equal(await freeData(m), 11 * 4096)
    assert.equal(asked, 2)
    assert.equal(await freeData(m), 11 * 4096)
    assert.equal(asked, 2, 'no second question while one is unanswered')
  })
})
