/*
 * Directory quotas across a real two-agent cluster (fs/quota.ts): a tree's byte and inode
 * limits hold on every mount, usage is one cluster-wide number whichever mount wrote, statfs
 * inside the tree reports the limit (what `df` shows in a pod), limits change online, and
 * moves across a tree's edge are refused.  Expected usage is what stat reports of the files
 * (their allocated blocks), never what the test asked to write.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { Cluster } from '../helpers/cluster.js'
import { clusterPerSuite, freshClusterDirs, onMount } from '../helpers/cluster-tests.js'
import { startPy } from '../helpers/fuse-harness.js'
import { dedent } from '../helpers/mount-tests.js'
import { scoutfs } from '../helpers/agent.js'
import type { QuotaInfo } from '../../node-agent/src/agent/admin-api.js'

const MiB = 1 << 20

async function quotaSet(dir: string, bytes: string, inodes?: number): Promise<QuotaInfo> {
  const args = ['quota', 'set', '-j', '-b', bytes, dir]
  if (inodes !== undefined) args.push('-i', String(inodes))
  const r = await scoutfs(...args)
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout) as QuotaInfo
}

async function quotaShow(path: string): Promise<QuotaInfo | null> {
  const r = await scoutfs('quota', 'show', '-j', path)
  assert.equal(r.code, 0, r.stderr)
  return JSON.parse(r.stdout) as QuotaInfo | null
}

describe('cluster: directory quotas across 2 mounts', function () {
  this.timeout(240_000)
  let c: Cluster
  const fresh = freshClusterDirs(() => c)
  clusterPerSuite(2, {}, (cl) => (c = cl))
  const on = (i: number, rel: string): string => join(c.agents[i]!.mnt, rel)

  it('bytes written on either mount count in one usage; past the limit both get EDQUOT', async () => {
    const rel = fresh('bytes')
    const set = await quotaSet(on(0, rel), '4M')
    assert.equal(set.limit_bytes, 4 * MiB)
    // 1 MiB files alternately from each mount until one is refused
    const results: string[] = []
    for (let k = 0; k < 6; k++) {
      const r = await onMount<string>(
        c,
        k % 2,
        rel,
        `
        try:
            wfile(p('f%s' % ARGS[0]), gen(int(ARGS[0]), 1 << 20), 0o644)
            out('ok')
        except OSError as e:
            out(errno.errorcode[e.errno])
        `,
        String(k),
      )
      results.push(r)
    }
    assert.deepEqual(results.slice(0, 3), ['ok', 'ok', 'ok'], `results ${results}`)
    assert.ok(results.slice(3).every((r) => r === 'EDQUOT' || r === 'ok'))
    assert.ok(results.includes('EDQUOT'), `no write was refused: ${results}`)
    // usage as seen from the other mount equals the blocks the files hold
    for (const m of [0, 1]) {
      const blocks = await onMount<number>(c, m, rel, `out(sum(os.lstat(p(n)).st_blocks * 512 for n in os.listdir(D)))`)
      const q = await quotaShow(on(m, rel))
      assert.ok(q)
      assert.equal(q.used_bytes, blocks, `mount ${m}: quota usage vs the files' blocks`)
      assert.ok(q.used_bytes <= q.limit_bytes)
      assert.equal(q.used_inodes, 1 + (await onMount<number>(c, m, rel, `out(len(os.listdir(D)))`)))
    }
  })

  it('statfs inside the tree reports the limit and usage (df), outside the filesystem', async () => {
    const rel = fresh('df')
    await quotaSet(on(0, rel), '64M', 1000)
    await onMount(c, 1, rel, `wfile(p('a'), gen(1, 3 << 20), 0o644); out(0)`)
    const q = await quotaShow(on(0, rel))
    assert.ok(q)
    for (const m of [0, 1]) {
      const s = await onMount(
        c,
        m,
        rel,
        `
        v = os.statvfs(D); r = os.statvfs(os.path.dirname(D))
        out({'total': v.f_blocks * v.f_frsize, 'used': (v.f_blocks - v.f_bfree) * v.f_frsize,
             'files': v.f_files, 'ffree': v.f_ffree, 'rootTotal': r.f_blocks * r.f_frsize})
        `,
      )
      assert.equal(s.total, q.limit_bytes, `mount ${m} df size`)
      assert.equal(s.used, q.used_bytes, `mount ${m} df used`)
      assert.equal(s.files, 1000)
      assert.equal(s.ffree, 1000 - q.used_inodes)
      assert.notEqual(s.rootTotal, s.total, 'outside the tree statfs is the filesystem')
    }
    const df = await onMount<string>(
      c,
      1,
      rel,
      `import subprocess; out(subprocess.run(['df', '-B1', D], capture_output=True, text=True).stdout)`,
    )
    assert.match(df, new RegExp(`\\s${64 * MiB}\\s+${q.used_bytes}\\s`), df)
  })

  it('a limit raised online on one mount lets the other write; deletes give the space back', async () => {
    const rel = fresh('raise')
    await quotaSet(on(0, rel), '1M')
    const write2M = `
      try:
          wfile(p(ARGS[0]), gen(2, 2 << 20), 0o644); out('ok')
      except OSError as e:
          out(errno.errorcode[e.errno])
      `
    assert.equal(await onMount(c, 1, rel, write2M, 'big'), 'EDQUOT')
    const before = await quotaShow(on(1, rel))
    const raised = await quotaSet(on(1, rel), '8M')
    assert.equal(raised.limit_bytes, 8 * MiB)
    assert.equal(raised.used_bytes, before!.used_bytes, 'raising keeps the usage')
    assert.equal(await onMount(c, 0, rel, write2M, 'big2'), 'ok')
    const full = await quotaShow(on(1, rel))
    assert.ok(full!.used_bytes >= 2 * MiB)
    await onMount(c, 1, rel, `os.unlink(p('big2')); [os.unlink(p(n)) for n in os.listdir(D)]; out(0)`)
    const after = await quotaShow(on(0, rel))
    assert.equal(after!.used_bytes, 0)
    assert.equal(after!.used_inodes, 1)
  })

  it("release gives a file's blocks back to the tree; stage on the other mount charges them again", async () => {
    const rel = fresh('archive')
    await quotaSet(on(0, rel), '8M')
    await onMount(c, 0, rel, `wfile(p('f'), gen(7, 3 << 20), 0o644); out(0)`)
    const written = await quotaShow(on(1, rel))
    const vers = (await scoutfs('stat', '-s', 'data_version', on(0, join(rel, 'f')))).stdout.trim()
    assert.match(vers, /^\d+$/)
    const copy = join(c.dev.dir, 'quota-archive-copy')
    await onMount(c, 0, rel, `open(ARGS[0], 'wb').write(rfile(p('f'))); out(0)`, copy)
    const rel1 = await scoutfs('release', on(0, join(rel, 'f')), '-V', vers)
    assert.equal(rel1.code, 0, rel1.stderr)
    const released = await quotaShow(on(1, rel))
    assert.equal(released!.used_bytes, written!.used_bytes - 3 * MiB, 'the released blocks no longer count')
    const stg = await scoutfs('stage', copy, on(1, join(rel, 'f')), '-V', vers)
    assert.equal(stg.code, 0, stg.stderr)
    const staged = await quotaShow(on(0, rel))
    assert.equal(staged!.used_bytes, written!.used_bytes, 'staged blocks count again')
    const blocks = await onMount<number>(c, 1, rel, `out(os.lstat(p('f')).st_blocks * 512)`)
    assert.equal(staged!.used_bytes, blocks, "usage equals the file's blocks")
  })

  it('the inode limit refuses creates on every mount; moves across the edge are EXDEV', async () => {
    const rel = fresh('inodes')
    const out = fresh('outside')
    await quotaSet(on(0, rel), '1M', 4)
    const r = await onMount(
      c,
      1,
      rel,
      `
      res = []
      for n in ['a', 'b', 'c', 'd']:
          try:
              os.mkdir(p(n)) if n == 'b' else wfile(p(n), b'x', 0o644); res.append('ok')
          except OSError as e:
              res.append(errno.errorcode[e.errno])
      out(res)
      `,
    )
    assert.deepEqual(r, ['ok', 'ok', 'ok', 'EDQUOT'])
    const moves = await onMount(
      c,
      0,
      rel,
      `
      res = []
      for src, dst in [(p('a'), os.path.join(ARGS[0], 'a')), (os.path.join(ARGS[0], 'x'), p('x'))]:
          if src.startswith(ARGS[0]): wfile(src, b'y', 0o644)
          try:
              os.rename(src, dst); res.append('ok')
          except OSError as e:
              res.append(errno.errorcode[e.errno])
      out(res)
      `,
      on(0, out),
    )
    assert.deepEqual(moves, ['EXDEV', 'EXDEV'])
    // a quota goes on empty directories only, and does not nest
    const notEmpty = await scoutfs('quota', 'set', '-b', '1M', on(0, out))
    assert.equal(notEmpty.code, 1)
    assert.match(notEmpty.stderr, /ENOTEMPTY/)
    const nested = await scoutfs('quota', 'set', '-b', '1M', on(1, join(rel, 'b')))
    assert.equal(nested.code, 1)
    assert.match(nested.stderr, /EINVAL.*do not nest/)
    assert.equal(await quotaShow(on(1, out)), null)
  })

  it('a file unlinked on one mount while open on the other keeps its usage until the last close', async () => {
    const rel = fresh('orphan')
    await quotaSet(on(0, rel), '16M')
    await onMount(c, 1, rel, `wfile(p('held'), gen(3, 2 << 20), 0o644); out(0)`)
    const full = (await quotaShow(on(0, rel)))!
    const holder = startPy(
      dedent(`
      fd = os.open(sys.argv[1], os.O_RDONLY)
      ready(len(os.pread(fd, 1 << 22, 0)))
      wait()
      ready(len(os.pread(fd, 1 << 22, 0)))
      os.close(fd)
      ready(0)
      `),
      [join(on(0, rel), 'held')],
    )
    assert.equal(await holder.next(), 2 << 20)
    await onMount(c, 1, rel, `os.unlink(p('held')); out(0)`)
    const orphaned = (await quotaShow(on(1, rel)))!
    assert.equal(orphaned.used_bytes, full.used_bytes, 'an open orphan still holds its blocks')
    assert.equal(orphaned.used_inodes, full.used_inodes)
    holder.send('')
    assert.equal(await holder.next(), 2 << 20, 'the open descriptor still reads the file')
    assert.equal(await holder.next(), 0)
    // the kernel sends FUSE's release after close(2) returns: wait for the deletion it makes
    let freed = (await quotaShow(on(1, rel)))!
    for (let i = 0; freed.used_bytes !== 0 && i < 600; i++) {
      await new Promise((r) => setTimeout(r, 100))
      freed = (await quotaShow(on(1, rel)))!
    }
    assert.equal(freed.used_bytes, 0)
    assert.equal(freed.used_inodes, 1)
  })
})
