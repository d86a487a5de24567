/*
 * Quorum election, failover and fencing on real clusters (issue 11, DESIGN §11): three
 * agents mounted as quorum members (slots 0-2 on loopback ports), sometimes a plain client,
 * each a `scoutfs mount` process with its own FUSE mount.  The leader is found and watched
 * through the agents' admin sockets (GET /quorum); failures are real kill -9s; the fence
 * agent is `local` (the new leader SIGKILLs what it fences, if it still runs) unless a test
 * gives a fence command.
 */
import assert from 'node:assert/strict'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { adminCall } from '../../node-agent/src/agent/admin.js'
import type { QuorumView } from '../../node-agent/src/agent/admin-api.js'
import { scoutfs, startAgent, stopAllAgents, type Agent } from '../helpers/agent.js'
import { makeClusterDevices, startCluster, type Cluster } from '../helpers/cluster.js'
import { PY_DEFS, alive, assertCleanStops, onMount, servingAgent, stopCluster } from '../helpers/cluster-tests.js'
import { fuseMountsUnder, startPy } from '../helpers/fuse-harness.js'
import { testRng } from '../helpers/rng.js'
import { makeNetns, netnsUnavailable, type Netns } from '../helpers/netns.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function quorum(a: Agent): Promise<QuorumView | undefined> {
  return Promise.race([adminCall(a.mnt, 'GET /quorum').catch(() => undefined), sleep(2000).then(() => undefined)])
}

/** Poll until `f` gives a value (not undefined), or fail after `ms`. */
async function waitFor<T>(what: string, ms: number, f: () => Promise<T | undefined>, everyMs = 50): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await f()
    if (v !== undefined) return v
    if (Date.now() > end) throw new Error(`${what}: not within ${ms} ms`)
    await sleep(everyMs)
  }
}

/** The index of the agent serving now, among the live members. */
async function leaderIndex(c: Cluster, members: number): Promise<number | undefined> {
  for (let i = 0; i < members; i++) {
    const a = c.agents[i]!
    if (!alive(a)) continue
    if ((await quorum(a))?.serving) return i
  }
  return undefined
}

/** python: create `path` with `text`, fsync it, and say how long that took (s). */
function fsyncScript(path: string, text: string): string {
  return [
    'import time',
    't = time.time()',
    `f = open(${JSON.stringify(path)}, 'w')`,
    `f.write(${JSON.stringify(text)})`,
    'f.flush()',
    'os.fsync(f.fileno())',
    'f.close()',
    'ready(time.time() - t)',
  ].join('\n')
}

/** A create on mount `i` (a python one-liner): its wall time. */
async function createOn(c: Cluster, i: number, name: string): Promise<number> {
  const t0 = Date.now()
  await onMount(c, i, '', `wfile(p(ARGS[0]), b'x'); out(None)`, name)
  return Date.now() - t0
}

async function teardown(c: Cluster | undefined, devDir: string | undefined, clean = true): Promise<void> {
  let stops: Awaited<ReturnType<typeof stopCluster>> = []
  try {
    if (c) stops = await stopCluster(c)
  } finally {
    await stopAllAgents()
  }
  if (devDir) assert.deepEqual(await fuseMountsUnder(devDir), [], 'no mount left behind')
  if (clean) assertCleanStops(stops)
}

describe('cluster: quorum election and failover', function () {
  this.timeout(600_000)
  let c: Cluster | undefined
  let devDir: string | undefined
  afterEach(async function () {
    this.timeout(180_000)
    if (this.currentTest?.state === 'failed' && c)
      for (const [i, a] of c.agents.entries()) console.log(`      agent ${i} log tail:\n${a.log().slice(-3000)}`)
    const cl = c
    c = undefined
    await teardown(cl, devDir, this.currentTest?.state !== 'failed')
  })

  for (const T of [2000, 3000, 10000]) {
    it(`kill -9 of the leader: a new leader, not before the heartbeat timeout T = ${T / 1000} s (less a second), and a survivor creates right after`, async () => {
      const dev = await makeClusterDevices({ members: 3, metaBytes: 256 << 20, dataBytes: 512 << 20 })
      devDir = dev.dir
      c = await startCluster(3, { dev, members: 3, options: `quorum_heartbeat_timeout_ms=${T}` })
      const li = await waitFor('a leader', 30_000, () => leaderIndex(c!, 3))
      const before = (await quorum(c.agents[li]!))!
      assert.equal(before.heartbeatTimeoutMs, T)
      // every member agrees on the leader before the kill
      for (let i = 0; i < 3; i++)
        await waitFor(`member ${i} follows ${li}`, 5000, async () =>
          (await quorum(c!.agents[i]!))?.leaderSlot === li ? true : undefined,
        )
      const t0 = Date.now()
      await c.agents[li]!.kill9()
      const survivors = [0, 1, 2].filter((i) => i !== li)
      const next = await waitFor('a new leader', T + 10_000, async () => {
        for (const i of survivors) if ((await quorum(c!.agents[i]!))?.serving) return i
        return undefined
      })
      const elapsed = Date.now() - t0
      console.log(`      T=${T} ms: slot ${next} serves ${elapsed} ms after the kill`)
      // the followers wait out the heartbeat timeout before standing (load only delays them;
      // how soon after it they serve is measured by bench/failover.ts, not asserted here)
      assert.ok(elapsed >= T - 1000, `new leader after ${elapsed} ms: before the heartbeat timeout ${T} ms`)
      const q = (await quorum(c.agents[next]!))!
      assert.ok(q.term > before.term, `term ${q.term} after ${before.term}`)
      assert.ok(q.fencesConfirmed >= 1, 'the new leader fenced its predecessor')
      const other = survivors.find((i) => i !== next)!
      const ms = await createOn(c, other, `after-${T}`)
      console.log(`      create on the other survivor took ${ms} ms`)
      assert.deepEqual(await onMount(c, next, '', `out(st(p('after-${T}'))['size'])`), 1)
    })
  }

  it('scoutfs quorum -t changes the heartbeat timeout at run time (a failover then follows the new one); statfs shows the quorum; bad values are refused', async () => {
    const dev = await makeClusterDevices({ members: 3, metaBytes: 256 << 20, dataBytes: 512 << 20 })
    devDir = dev.dir
    c = await startCluster(4, { dev, members: 3, options: 'quorum_heartbeat_timeout_ms=20000' })
    const li = await waitFor('a leader', 30_000, () => leaderIndex(c!, 3))
    for (const i of [0, 1, 2]) {
      const r = await scoutfs('quorum', '-t', '2000', c.agents[i]!.mnt)
      assert.equal(r.code, 0, r.stderr)
      assert.match(r.stdout, /heartbeat_timeout_ms\s+2000/)
    }
    const bad = await scoutfs('quorum', '-t', '1500', c.agents[0]!.mnt)
    assert.notEqual(bad.code, 0)
    assert.match(bad.stderr, /2000\.\.60000/)
    const plain = await scoutfs('quorum', '-t', '3000', c.agents[3]!.mnt)
    assert.notEqual(plain.code, 0)
    assert.match(plain.stderr, /not a quorum member/)
    const st = await scoutfs('statfs', c.agents[3]!.mnt)
    assert.match(st.stdout, /quorum_slot_nr\s+-1/)
    assert.match(st.stdout, new RegExp(`quorum_leader_slot\\s+${li}`))
    const stl = await scoutfs('statfs', '-s', 'quorum_slot_nr', c.agents[li]!.mnt)
    assert.equal(stl.stdout.trim(), String(li))
    const t0 = Date.now()
    await c.agents[li]!.kill9()
    // a leader well before the mount's 20 s timeout could have run out: the 2 s one applied
    await waitFor('a new leader before the old 20 s timeout', 15_000, async () => {
      for (const i of [0, 1, 2].filter((x) => x !== li)) if ((await quorum(c!.agents[i]!))?.serving) return i
      return undefined
    })
    console.log(`      with the timeout lowered from 20 s to 2 s at run time: a new leader after ${Date.now() - t0} ms`)
  })

  it('3 members + 1 plain client under create/write/fsync: kill -9 of the server loses nothing fsynced; check is clean', async () => {
    const rng = testRng('quorum-failover-workload')
    const dev = await makeClusterDevices({ members: 3, metaBytes: 512 << 20, dataBytes: 1 << 30 })
    devDir = dev.dir
    c = await startCluster(4, { dev, members: 3, options: 'quorum_heartbeat_timeout_ms=2000' })
    const li = await waitFor('a leader', 30_000, () => leaderIndex(c!, 3))
    // writers on every mount but the server's: files fsynced one after another for 8 s
    const writers = [0, 1, 2, 3].filter((i) => i !== li)
    const script = String.raw`
import time
d, seed, secs = ARGS[0], int(ARGS[1]), float(ARGS[2])
os.makedirs(d, exist_ok=True)
rnd = random.Random(seed)
done, errors = {}, []
end = time.time() + secs
i = 0
while time.time() < end:
    name = os.path.join(d, 'f%d' % i)
    data = gen(rnd.getrandbits(32), rnd.choice([1, 4096, 70000, 300000]))
    try:
        fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
        write_all(fd, data)
        os.fsync(fd)
        os.close(fd)
        done['f%d' % i] = sha(data)
    except OSError as e:
        errors.append('%s: %s' % (name, errno.errorcode.get(e.errno, e.errno)))
    i += 1
ready({'done': done, 'errors': errors})
`
    const procs = writers.map((w) =>
      startPy(
        'import random, hashlib\nARGS = sys.argv[1:]\n' +
          PY_DEFS +
          '\ndef write_all(fd, b):\n    while b:\n        b = b[os.write(fd, b):]\n' +
          script,
        [join(c!.agents[w]!.mnt, `w${w}`), String(rng.u32()), '8'],
      ),
    )
    try {
      await sleep(2500)
      await c.agents[li]!.kill9()
      const results = await Promise.all(
        procs.map((p) => p.next<{ done: Record<string, string>; errors: string[] }>(120_000)),
      )
      const survivors = [0, 1, 2, 3].filter((i) => i !== li)
      let files = 0
      for (const [k, w] of writers.entries()) {
        const r = results[k]!
        assert.deepEqual(r.errors, [], `writer on mount ${w}: every operation completes across the failover`)
        files += Object.keys(r.done).length
        for (const m of survivors) {
          const got: Record<string, string> = await onMount(
            c,
            m,
            '',
            `out({f: fsha(p(ARGS[0], f)) for f in json.loads(ARGS[1])})`,
            `w${w}`,
            JSON.stringify(Object.keys(r.done)),
          )
          assert.deepEqual(got, r.done, `mount ${m} reads every file mount ${w} fsynced`)
        }
      }
      console.log(`      ${files} files fsynced across the failover, all present on ${survivors.length} survivors`)
      assert.ok(files > writers.length, 'the writers got work done')
    } finally {
      for (const p of procs) p.kill()
    }
    const stops = await stopCluster(c)
    assertCleanStops(stops)
    const chk = await scoutfs('check', dev.meta, dev.data)
    assert.equal(chk.code, 0, `check after the failover:\n${chk.stdout}${chk.stderr}`)
  })

  it('kill -9 of a plain client holding write locks: the server fences it, the others get its locks, its committed work survives', async () => {
    const dev = await makeClusterDevices({ members: 3, metaBytes: 256 << 20, dataBytes: 512 << 20 })
    devDir = dev.dir
    c = await startCluster(4, { dev, members: 3, options: 'quorum_heartbeat_timeout_ms=2000,mount_timeout_ms=3000' })
    const li = await waitFor('a leader', 30_000, () => leaderIndex(c!, 3))
    const V = 3
    // the client writes and fsyncs (it keeps the write lock), then dies
    await onMount(
      c,
      V,
      '',
      `fd = os.open(p('held'), os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b'committed'); os.fsync(fd); os.close(fd); out(None)`,
    )
    const before = (await quorum(c.agents[li]!))!
    await c.agents[V]!.kill9()
    const other = [0, 1, 2].find((i) => i !== li)!
    const t0 = Date.now()
    assert.equal(await onMount(c, other, '', `out(open(p('held'), 'rb').read().decode())`), 'committed')
    await onMount(c, other, '', `wfile(p('held'), b'taken over'); out(None)`)
    console.log(`      the others read and rewrote the dead client's file ${Date.now() - t0} ms after its death`)
    const after = (await quorum(c.agents[li]!))!
    assert.ok(
      after.fencesConfirmed > before.fencesConfirmed,
      `the server fenced the dead client (${before.fencesConfirmed} -> ${after.fencesConfirmed})`,
    )
    assert.match(c.agents[li]!.log(), /"reason":"client_timeout"/, 'the fence names its reason')
    for (const i of [0, 1, 2])
      assert.equal(await onMount(c, i, '', `out(open(p('held'), 'rb').read().decode())`), 'taken over')
  })

  it('2 of 3 members down: no server and no split brain; one back and service resumes', async () => {
    const dev = await makeClusterDevices({ members: 3, metaBytes: 256 << 20, dataBytes: 512 << 20 })
    devDir = dev.dir
    c = await startCluster(3, { dev, members: 3, options: 'quorum_heartbeat_timeout_ms=2000' })
    const li = await waitFor('a leader', 30_000, () => leaderIndex(c!, 3))
    await createOn(c, li, 'before')
    const [a, b] = [0, 1, 2].filter((i) => i !== li)
    await c.agents[a!]!.kill9()
    await c.agents[b!]!.kill9()
    // the leader hears no majority: it steps down within a heartbeat timeout and nobody serves
    const down = await waitFor('the lone leader steps down', 8000, async () => {
      const q = await quorum(c!.agents[li]!)
      return q && !q.serving && q.role !== 'leader' ? q : undefined
    })
    assert.equal(down.leaderSlot, -1)
    // a commit needs the server: an fsync waits for a quorum (a write alone may not: the mount
    // keeps its cached locks and dirty items)
    const stuck = startPy(fsyncScript(join(c.agents[li]!.mnt, 'during'), 'y'))
    try {
      await sleep(5000)
      const q = (await quorum(c.agents[li]!))!
      assert.ok(!q.serving && q.role !== 'leader', `a lone member never leads: ${JSON.stringify(q)}`)
      // one member back: a majority again
      const t0 = Date.now()
      c.agents[a!] = await startAgent(dev, c.agents[a!]!.mnt, {
        options: `quorum_slot_nr=${a},quorum_heartbeat_timeout_ms=2000`,
      })
      const took = await stuck.next<number>(60_000)
      console.log(
        `      the blocked create finished ${Date.now() - t0} ms after a member came back (it waited ${took.toFixed(1)} s)`,
      )
      assert.ok(took > 4, `the create waited while there was no quorum (it took ${took} s)`)
    } finally {
      stuck.kill()
    }
    assert.equal(await onMount(c, li, '', `out(open(p('during')).read())`), 'y')
    const serving = await servingAgent(c)
    assert.ok(serving && (await quorum(serving))?.serving, 'one member serves')
    let leaders = 0
    for (const i of [li, a!]) if ((await quorum(c.agents[i]!))?.role === 'leader') leaders++
    assert.equal(leaders, 1, 'exactly one leader')
  })

  it('members unmount one after another: the second waits for the last, so the leader keeps a majority and a plain client its server', async () => {
    const T = 2000
    const dev = await makeClusterDevices({ members: 3, metaBytes: 256 << 20, dataBytes: 512 << 20 })
    devDir = dev.dir
    c = await startCluster(4, { dev, members: 3, options: `quorum_heartbeat_timeout_ms=${T}` })
    const li = await waitFor('a leader', 30_000, () => leaderIndex(c!, 3))
    const [a, b] = [0, 1, 2].filter((i) => i !== li) as [number, number]
    const held = async (): Promise<string[] | undefined> =>
      (await adminCall(c!.agents[li]!.mnt, 'GET /status').catch(() => undefined))?.serverState?.farewellsHeld
    // the first member leaves at once: two of three stay, a majority
    assert.equal(await c.agents[a]!.stop(), 0)
    // the second would leave the leader alone: its farewell waits
    const bStopped = c.agents[b]!.stop()
    await waitFor('the server holds the second farewell', 30_000, async () =>
      (await held())?.length === 1 ? true : undefined,
    )
    await sleep(2 * T)
    assert.ok(alive(c.agents[b]!), 'the member whose farewell waits still runs')
    assert.deepEqual((await held())?.length, 1)
    const q = (await quorum(c.agents[li]!))!
    assert.ok(
      q.serving && q.role === 'leader',
      `the leader still serves two heartbeat timeouts later: ${JSON.stringify(q)}`,
    )
    assert.match(c.agents[b]!.log(), /"msg":"farewell waits: the server lets a quorum member go/)
    // the plain client still commits through it
    const fsynced = startPy(fsyncScript(join(c.agents[3]!.mnt, 'client-after'), 'z'))
    try {
      await fsynced.next<number>(30_000)
    } finally {
      fsynced.kill()
    }
    assert.equal(await c.agents[3]!.stop(), 0)
    assert.ok(alive(c.agents[b]!), 'it waits for the leader, the last member mounted')
    // the leader's own farewell: every mount left is a leaving member, so both go together
    assert.equal(await c.agents[li]!.stop(), 0)
    assert.equal(await bStopped, 0, c.agents[b]!.log())
    assert.match(c.agents[li]!.log(), /"msg":"farewell let go"/)
    const chk = await scoutfs('check', dev.meta, dev.data)
    assert.equal(chk.code, 0, `check:\n${chk.stdout}${chk.stderr}`)
    // what the client fsynced is on the devices: a lone mount reads it
    const back = await Promise.all(
      [0, 1].map((i) => startAgent(dev, c!.agents[i]!.mnt, { options: `quorum_slot_nr=${i}` })),
    )
    back.forEach((ag, i) => (c!.agents[i] = ag))
    assert.equal(await onMount(c, 0, '', `out(open(p('client-after')).read())`), 'z')
  })

  it('a fence command that fails, then hangs: the new leader waits, reports it, and serves only once the fence succeeds', async () => {
    const tools = mkdtempSync(join(tmpdir(), 'scoutfs-fence-'))
    try {
      const script = join(tools, 'fence.sh')
      const mode = join(tools, 'mode')
      const calls = join(tools, 'calls')
      writeFileSync(
        script,
        `#!/bin/sh\necho "$SCOUTFS_FENCED_REQ_RID $SCOUTFS_FENCED_REQ_REASON" >> ${calls}\ncase "$(cat ${mode})" in\n ok) exit 0;;\n hang) sleep 600;;\n *) echo "fence refused by test" >&2; exit 3;;\nesac\n`,
      )
      chmodSync(script, 0o755)
      writeFileSync(mode, 'fail')
      const dev = await makeClusterDevices({ members: 3, metaBytes: 256 << 20, dataBytes: 512 << 20 })
      devDir = dev.dir
      c = await startCluster(3, {
        dev,
        members: 3,
        options: `quorum_heartbeat_timeout_ms=2000,fence=command,fence_command=${script},fence_timeout_ms=500,fence_retries=0`,
      })
      const li = await waitFor('a leader', 30_000, () => leaderIndex(c!, 3))
      await c.agents[li]!.kill9()
      const survivors = [0, 1, 2].filter((i) => i !== li)
      // a new leader is elected and fences, but the command fails: it reports and never serves
      const waiting = await waitFor('a leader waiting on its fence', 15_000, async () => {
        for (const i of survivors) {
          const q = await quorum(c!.agents[i]!)
          if (q?.fencing?.error) return { i, q }
        }
        return undefined
      })
      assert.match(waiting.q.fencing!.error!, /fence refused by test/)
      const blocked = startPy(fsyncScript(join(c.agents[survivors[0]!]!.mnt, 'blocked'), 'z'))
      try {
        writeFileSync(mode, 'hang')
        await sleep(4000)
        for (const i of survivors)
          assert.equal((await quorum(c.agents[i]!))?.serving, false, `member ${i} must not serve unfenced`)
        const q = (await quorum(c.agents[waiting.i]!))!
        assert.ok(q.fenceErrors >= 2, `failures and timeouts counted: ${q.fenceErrors}`)
        assert.match(q.fencing?.error ?? '', /timed out|ETIMEDOUT|fence refused/i)
        assert.match(c.agents[waiting.i]!.log(), /fence NOT confirmed/)
        writeFileSync(mode, 'ok')
        const took = await blocked.next<number>(60_000)
        console.log(`      the create waited ${took.toFixed(1)} s for the fence`)
      } finally {
        blocked.kill()
      }
      const serving = await waitFor('a server', 15_000, async () => {
        for (const i of survivors) if ((await quorum(c!.agents[i]!))?.serving) return i
        return undefined
      })
      assert.equal(await onMount(c, serving, '', `out(open(p('blocked')).read())`), 'z')
      const lines = readFileSync(calls, 'utf8').trim().split('\n')
      assert.ok(lines.length >= 3 && lines.every((l) => / quorum_block_leader$/.test(l)), lines.join('\n'))
    } finally {
      if (existsSync(tools)) rmSync(tools, { recursive: true, force: true })
    }
  })
})

describe('cluster: quorum members partitioned by network namespaces', function () {
  this.timeout(600_000)
  const T = 2000
  let ns: Netns | undefined
  let c: Cluster | undefined
  let devDir: string | undefined
  let skipWhy: string | undefined

  before(function () {
    skipWhy = netnsUnavailable()
    if (skipWhy) {
      console.log(`      SKIPPED: network namespaces are not usable here (${skipWhy})`)
      this.skip()
    }
  })
  beforeEach(async function () {
    this.timeout(120_000)
    ns = makeNetns(3)
    // members 0-2 each in a namespace of its own on a bridge; the plain client (3) on this host
    const dev = await makeClusterDevices({
      members: 3,
      memberHosts: ns.addrs,
      metaBytes: 256 << 20,
      dataBytes: 512 << 20,
    })
    devDir = dev.dir
    c = await startCluster(4, {
      dev,
      members: 3,
      // a test named for a fence command that stops nothing gets one (fence_command=true)
      options: `quorum_heartbeat_timeout_ms=${T}${
        /fence that stops nothing/.test(this.currentTest?.title ?? '')
          ? ',mount_timeout_ms=3000,fence=command,fence_command=true'
          : ''
      }`,
      netns: [...ns.names, undefined],
    })
  })
  afterEach(async function () {
    this.timeout(180_000)
    if (this.currentTest?.state === 'failed' && c)
      for (const [i, a] of c.agents.entries()) console.log(`      agent ${i} log tail:\n${a.log().slice(-3000)}`)
    for (let i = 0; i < 3; i++) ns?.heal(i)
    const cl = c
    c = undefined
    try {
      await teardown(cl, devDir, false)
    } finally {
      ns?.destroy()
      ns = undefined
    }
  })

  it('a partitioned follower changes nothing: the leader keeps its term and serves; healed, it follows again', async () => {
    const cl = c!
    const li = await waitFor('a leader', 30_000, () => leaderIndex(cl, 3))
    const f = [0, 1, 2].find((i) => i !== li)!
    const before = (await quorum(cl.agents[li]!))!
    ns!.partition(f)
    await sleep(3 * T)
    const during = (await quorum(cl.agents[li]!))!
    assert.ok(
      during.serving && during.term === before.term,
      `the leader serves on in term ${before.term}: ${JSON.stringify(during)}`,
    )
    const took = await startPy(fsyncScript(join(cl.agents[3]!.mnt, 'during-follower-cut'), 'a')).next<number>(30_000)
    console.log(`      create+fsync on the plain client while a follower was cut off: ${(took * 1000).toFixed(0)} ms`)
    ns!.heal(f)
    const back = await waitFor('the follower follows again', 10_000, async () => {
      const q = await quorum(cl.agents[f]!)
      return q?.leaderSlot === li && q.role === 'follower' ? q : undefined
    })
    const after = (await quorum(cl.agents[li]!))!
    assert.ok(after.serving, 'the leader still serves')
    assert.equal(after.term, before.term, 'the healed follower did not depose the leader (PreVote)')
    assert.equal(back.term, before.term)
  })

  it('a partitioned leader steps down; the majority elects, fences it (local: its process is killed) and serves; it rejoins when started again', async () => {
    const cl = c!
    const li = await waitFor('a leader', 30_000, () => leaderIndex(cl, 3))
    const before = (await quorum(cl.agents[li]!))!
    const t0 = Date.now()
    ns!.partition(li)
    const others = [0, 1, 2].filter((i) => i !== li)
    const next = await waitFor('a new leader', T + 15_000, async () => {
      for (const i of others) if ((await quorum(cl.agents[i]!))?.serving) return i
      return undefined
    })
    console.log(`      slot ${next} serves ${Date.now() - t0} ms after slot ${li} was cut off`)
    // the new leader fences the old one: as a leader that never stopped (quorum_block_leader),
    // or, when it stepped down and wrote STOP first, as a mount that did not reconnect within
    // recovery_ms (recovery_timeout).  With the local agent its process is killed.
    const code = await Promise.race([cl.agents[li]!.exited, sleep(30_000).then(() => 'alive')])
    assert.notEqual(code, 'alive', 'the cut-off leader was fenced (killed)')
    assert.equal(cl.agents[li]!.proc.signalCode, 'SIGKILL')
    const q = await waitFor('the fence confirmed', 10_000, async () => {
      const v = await quorum(cl.agents[next]!)
      return v && v.fencesConfirmed >= 1 ? v : undefined
    })
    assert.ok(q.term > before.term, JSON.stringify(q))
    assert.match(cl.agents[next]!.log(), /"msg":"fence confirmed"/)
    // the plain client goes on with the new server
    const took = await startPy(fsyncScript(join(cl.agents[3]!.mnt, 'after-leader-cut'), 'b')).next<number>(60_000)
    console.log(`      create+fsync on the plain client after the failover: ${(took * 1000).toFixed(0)} ms`)
    // healed and started again on its slot: it follows, and one leader remains
    ns!.heal(li)
    await cl.agents[li]!.kill9() // forces its dead mount away
    cl.agents[li] = await startAgent(cl.dev, cl.agents[li]!.mnt, {
      options: `quorum_slot_nr=${li},quorum_heartbeat_timeout_ms=${T}`,
      netns: ns!.names[li],
    })
    const rejoined = await waitFor('the old leader follows', 15_000, async () => {
      const r = await quorum(cl.agents[li]!)
      return r?.role === 'follower' && r.leaderSlot === next ? r : undefined
    })
    assert.equal(rejoined.term, q.term)
    assert.equal(await onMount(cl, li, '', `out(open(p('after-leader-cut')).read())`), 'b')
    let leaders = 0
    for (const i of [0, 1, 2]) if ((await quorum(cl.agents[i]!))?.role === 'leader') leaders++
    assert.equal(leaders, 1)
    const stops = await stopCluster(cl)
    assertCleanStops(stops)
    const chk = await scoutfs('check', cl.dev.meta, cl.dev.data)
    assert.equal(chk.code, 0, `check:\n${chk.stdout}${chk.stderr}`)
  })

  it('a member cut off, "fenced" by a fence that stops nothing and reclaimed, is refused when it comes back (ESTALE), never writes, and remounts cleanly', async () => {
    const cl = c!
    const li = await waitFor('a leader', 30_000, () => leaderIndex(cl, 3))
    const f = [0, 1, 2].find((i) => i !== li)!
    // its mount holds a write lock and fsynced work before it is cut off
    await onMount(
      cl,
      f,
      '',
      `fd = os.open(p('mine'), os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b'before'); os.fsync(fd); os.close(fd); out(None)`,
    )
    const before = (await quorum(cl.agents[li]!))!
    ns!.partition(f)
    // the server notices its mount is gone, "fences" it (the command exits 0) and reclaims it
    await waitFor('the server fenced the cut-off mount', 30_000, async () => {
      const q = await quorum(cl.agents[li]!)
      return q && q.fencesConfirmed > before.fencesConfirmed ? q : undefined
    })
    await waitFor('the server reclaimed it', 10_000, async () =>
      /"msg":"reclaimed mount"/.test(cl.agents[li]!.log()) ? true : undefined,
    )
    // the others take over what it held
    await onMount(cl, 3, '', `wfile(p('mine'), b'taken over'); out(None)`)
    ns!.heal(f)
    // what it tries now is refused with an errno: it was reclaimed, it must not write
    const r = await onMount<string>(
      cl,
      f,
      '',
      `
try:
    fd = os.open(p('late'), os.O_CREAT | os.O_WRONLY, 0o644)
    os.write(fd, b'late')
    os.fsync(fd)
    os.close(fd)
    out('ok')
except OSError as e:
    out(errno.errorcode.get(e.errno, str(e.errno)))
`,
    )
    console.log(`      the fenced mount's create+fsync after healing: ${r}`)
    assert.notEqual(r, 'ok', 'a reclaimed mount must not commit')
    const flog = cl.agents[f]!.log()
    assert.match(
      flog,
      /"errno":"ESTALE","details":"mount [0-9a-f]+ was reclaimed by the server[^"]*","role":"client","msg":"the server refused this mount"/,
      `the agent says why:\n${flog
        .split('\n')
        .filter((l) => /"level":[4-6]0/.test(l))
        .slice(-5)
        .join('\n')}`,
    )
    for (const i of [li, 3]) {
      assert.equal(await onMount(cl, i, '', `out(open(p('mine')).read())`), 'taken over')
      assert.equal(await onMount(cl, i, '', `out(os.path.exists(p('late')))`), false)
    }
    // unmounted and mounted again, it re-joins cleanly and sees the others' work
    await cl.agents[f]!.kill9()
    cl.agents[f] = await startAgent(cl.dev, cl.agents[f]!.mnt, {
      options: `quorum_slot_nr=${f},quorum_heartbeat_timeout_ms=${T},mount_timeout_ms=3000,fence=command,fence_command=true`,
      netns: ns!.names[f],
    })
    assert.equal(await onMount(cl, f, '', `out(open(p('mine')).read())`), 'taken over')
    const stops = await stopCluster(cl)
    assertCleanStops(stops)
    const chk = await scoutfs('check', cl.dev.meta, cl.dev.data)
    assert.equal(chk.code, 0, `check:\n${chk.stdout}${chk.stderr}`)
  })
})
