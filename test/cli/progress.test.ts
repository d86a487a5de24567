/*
 * Progress where a person waits (issue 14): `scoutfs mkfs --progress` and `scoutfs check
 * --progress` report on stderr, and their stdout is the same with or without it (scripts that
 * parse it are not broken); without the flag and without a terminal nothing is added to
 * stderr.  And the progress line itself: rewritten in place on a terminal, a line per report
 * elsewhere, throttled within a phase but never hiding a new phase.
 */
import assert from 'node:assert/strict'
import { mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { progressLine } from '../../node-agent/src/cli/progress.js'
import { scoutfs } from '../helpers/agent.js'

describe('progress on stderr (mkfs, check)', function () {
  this.timeout(300_000)
  let dir: string
  let meta: string
  let data: string

  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'scoutfs-progress-'))
    meta = join(dir, 'meta.img')
    data = join(dir, 'data.img')
    writeFileSync(meta, '')
    writeFileSync(data, '')
    truncateSync(meta, 256 << 20)
    // 32 GiB of data (sparse): 8 M blocks, enough for the accounting loops to report
    truncateSync(data, 32 * 1024 ** 3)
  })
  after(() => rmSync(dir, { recursive: true, force: true }))

  it('mkfs --progress names its steps on stderr; stdout is what mkfs prints without it', async () => {
    const plain = await scoutfs('mkfs', '-Q', '1', meta, data)
    assert.equal(plain.code, 0, plain.stderr)
    assert.equal(plain.stderr, '', 'no progress without a terminal or --progress')
    const p = await scoutfs('mkfs', '-f', '--progress', '-Q', '1', meta, data)
    assert.equal(p.code, 0, p.stderr)
    assert.deepEqual(p.stderr.trimEnd().split('\n'), [
      'clearing the super blocks and quorum blocks: 0/3 (0%)',
      'writing the allocators of 4096 metadata and 8388608 data blocks: 1/3 (33%)',
      'writing the root directory and the super blocks: 2/3 (66%)',
    ])
    // the same report but for the fsid
    const strip = (s: string): string => s.replace(/filesystem [0-9a-f]{16}/, 'filesystem FSID')
    assert.equal(strip(p.stdout), strip(plain.stdout))
  })

  it('check --progress reports the block accounting on stderr; stdout is what check prints without it', async () => {
    const plain = await scoutfs('check', meta, data)
    assert.equal(plain.code, 0, plain.stdout + plain.stderr)
    assert.equal(plain.stderr, '')
    const p = await scoutfs('check', '--progress', meta, data)
    assert.equal(p.code, 0, p.stdout + p.stderr)
    assert.equal(p.stdout, plain.stdout)
    const lines = p.stderr.trimEnd().split('\n')
    assert.ok(
      lines.some((l) => /^data blocks free in data_alloc: \d+\/\d+ \(\d+%\)$/.test(l)),
      `marking reported:\n${p.stderr}`,
    )
    assert.ok(
      lines.some((l) => /^counting data blocks: \d+\/\d+ \(\d+%\)$/.test(l)),
      p.stderr,
    )
    assert.ok(
      lines.some((l) => /^looking for leaked data blocks: /.test(l)),
      p.stderr,
    )
  })
})

describe('the progress line', () => {
  function sink(isTTY: boolean): { isTTY: boolean; write(s: string): void; text: string } {
    return {
      isTTY,
      text: '',
      write(s: string) {
        this.text += s
      },
    }
  }

  it('shows nothing without a terminal or the flag', () => {
    const s = sink(false)
    const p = progressLine(false, s)
    assert.equal(p.report, undefined)
    p.end()
    assert.equal(s.text, '')
  })

  it('on a terminal rewrites one line and clears it at the end; a new phase always shows', () => {
    const s = sink(true)
    let now = 1000
    const p = progressLine(false, s, () => now)
    p.report!({ phase: 'a', done: 1, total: 4 })
    now += 199
    p.report!({ phase: 'a', done: 2, total: 4 }) // within 200 ms of the first: not shown
    p.report!({ phase: 'b', done: 7 })
    now += 200
    p.report!({ phase: 'b', done: 9 })
    p.end()
    assert.equal(s.text, '\r\x1b[Ka: 1/4 (25%)\r\x1b[Kb: 7\r\x1b[Kb: 9\r\x1b[K')
  })

  it('elsewhere, with --progress, writes whole lines', () => {
    const s = sink(false)
    const p = progressLine(true, s)
    p.report!({ phase: 'x', done: 3, total: 3 })
    p.end()
    assert.equal(s.text, 'x: 3/3 (100%)\n')
  })
})
