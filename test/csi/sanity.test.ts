/*
 * csi-sanity (kubernetes-csi/csi-test v5, built into .cache/test-components) against the
 * driver over its real unix socket, serving from a real agent mount: every spec it runs must
 * pass.  The specs it skips are those of capabilities the driver does not advertise (see
 * docs/csi.md, "csi-sanity"); the test prints the skip reasons it saw and fails on a skip
 * reason outside that list, so a capability that starts being skipped is noticed.
 */
import assert from 'node:assert/strict'
import { existsSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { makeDevices, startAgent, stopAllAgents, type Agent, type Devices } from '../helpers/agent.js'
import { sh } from '../helpers/fuse-harness.js'
import { startDriver, stopAllDrivers, type Driver } from '../helpers/csi.js'

const SANITY = join(__dirname, '..', '..', '..', '.cache', 'test-components', 'bin', 'csi-sanity')

/** the skip reasons docs/csi.md lists (capabilities not advertised) */
const EXPECTED_SKIPS = [
  /ControllerPublishVolume|Controller Publish|ControllerUnpublishVolume/,
  /Snapshot/,
  /GroupControllerService/,
  /ModifyVolume|Modify [Vv]olume/,
  /NodeExpandVolume/,
  /Volume Cloning/,
  /VolumeHealth|StorageHealth/,
  /single node multi writer/,
]

describe('csi: csi-sanity against the driver on a real agent mount', function () {
  this.timeout(600_000)
  let dev: Devices
  let agent: Agent
  let driver: Driver
  before(async function () {
    if (!existsSync(SANITY)) throw new Error(`${SANITY} is missing: run scripts/build-test-components.sh`)
    dev = await makeDevices()
    agent = await startAgent(dev)
    driver = await startDriver(agent.mnt, join(dev.dir, 'csi.sock'))
  })
  after(async () => {
    await stopAllDrivers()
    await stopAllAgents()
    dev?.remove()
  })

  it('creates its socket 0600', () => {
    assert.equal(statSync(driver.socket).mode & 0o777, 0o600)
  })

  it('passes every spec csi-sanity runs', async () => {
    const report = join(dev.dir, 'sanity.json')
    const r = await sh(
      SANITY,
      [
        '--csi.endpoint',
        driver.socket,
        '--csi.mountdir',
        join(dev.dir, 'target'),
        '--csi.stagingdir',
        join(dev.dir, 'staging'),
        '--csi.testvolumeexpandsize',
        String(2 << 30),
        '--ginkgo.no-color',
        `--ginkgo.json-report=${report}`,
      ],
      { timeoutMs: 540_000 },
    )
    const summary = /Ran \d+ of \d+ Specs[\s\S]*$/.exec(r.stdout)?.[0] ?? r.stdout.slice(-3000)
    console.log(`      ${summary.trim().split('\n').join('\n      ')}`)
    assert.equal(
      r.code,
      0,
      `csi-sanity failed:\n${r.stdout.slice(-6000)}\n${r.stderr}\ndriver log:\n${driver.log().slice(-4000)}`,
    )
    const specs = (
      JSON.parse(readFileSync(report, 'utf8')) as Array<{ SpecReports: Array<Record<string, unknown>> }>
    ).flatMap((s) => s.SpecReports)
    const passed = specs.filter((s) => s.State === 'passed').length
    const skipReasons = new Set(
      specs
        .filter((s) => s.State === 'skipped')
        .map((s) => String((s.Failure as { Message?: string } | undefined)?.Message ?? '').split('\n')[0]!),
    )
    console.log(`      ${passed} passed; skipped for: ${[...skipReasons].join('; ')}`)
    assert.ok(passed >= 40, `only ${passed} specs passed`)
    for (const why of skipReasons)
      assert.ok(
        EXPECTED_SKIPS.some((re) => re.test(why)),
        `a spec was skipped for a reason docs/csi.md does not list: ${why}`,
      )
  })
})
