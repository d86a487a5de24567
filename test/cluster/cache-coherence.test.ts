/*
 * The low-level frontend lets the kernel cache attributes, entries and file pages, and keeps
 * those caches coherent across mounts with notify-invalidations when a cluster lock is lost
 * (fs/lock-invalidation.ts -> the frontend's KernelCache).  Checked on a real 2-mount cluster
 * with metrics: warm stats on one mount do not reach its agent (the cache is on), and a change
 * made on the other mount is seen at once all the same: size, mode, data, a removed name, a
 * renamed one, a directory renamed while a process here has its cwd in it; and a shared
 * writable mmap works and is seen by the other mount.
 *
 * Skipped, loudly, when the tests run on fuse-native (every kernel cache is off there).
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { Cluster } from '../helpers/cluster.js'
import { clusterPerSuite, freshClusterDirs, onMount } from '../helpers/cluster-tests.js'
import { startPy } from '../helpers/fuse-harness.js'
import { testFrontend } from '../helpers/frontend.js'
import { dedent } from '../helpers/mount-tests.js'
import { metric } from '../helpers/scrape.js'

const A = 0
const B = 1
const STATS = 2000

describe('cluster: kernel caches on and coherent across mounts (lowlevel frontend)', function () {
  this.timeout(300_000)
  let c: Cluster
  const fresh = freshClusterDirs(() => c)
  clusterPerSuite(2, { metrics: true }, (cl) => (c = cl))

  beforeEach(function () {
    if (testFrontend() === 'fuse-native') {
      console.log('      KNOWN LIMIT (fuse-native): no kernel caches (timeouts 0, direct_io), nothing to keep coherent')
      this.skip()
    }
  })

  const getattrs = (i: number): Promise<number> =>
    metric(c.agents[i]!.metricsAddr!, 'scoutfs_fs_ops_total', /op="(getattr|lookup)"/)

  it(`${STATS} warm stats on one mount reach its agent only a few times; the other mount's changes are seen at once`, async () => {
    const rel = fresh('warm')
    await onMount(c, A, rel, `wfile(p('f'), b'one'); wfile(p('g'), b'gone'); wfile(p('h'), b'moved'); out(None)`)
    // B looks once (cold), then STATS times (warm)
    const first = await onMount(c, B, rel, `out([st(p('f')), rfile(p('f')).decode()])`)
    assert.equal(first[0].size, 3)
    const before = await getattrs(B)
    const warm = await onMount(
      c,
      B,
      rel,
      `r = [os.stat(p('f')).st_size for _ in range(${STATS})]; out([min(r), max(r), rfile(p('f')).decode()])`,
    )
    const after = await getattrs(B)
    assert.deepEqual(warm, [3, 3, 'one'])
    assert.ok(after - before < STATS / 10, `warm stats reached the agent ${after - before} times for ${STATS} stats`)

    // A changes what B caches: data and size, mode, a name removed, a name renamed
    await onMount(
      c,
      A,
      rel,
      `wfile(p('f'), b'two, longer'); os.chmod(p('f'), 0o600); os.unlink(p('g')); os.rename(p('h'), p('h2')); out(None)`,
    )
    const seen = await onMount(
      c,
      B,
      rel,
      `s = os.stat(p('f')); out([s.st_size, oct(s.st_mode & 0o7777), rfile(p('f')).decode(), st(p('g')), st(p('h')), rfile(p('h2')).decode()])`,
    )
    assert.deepEqual(seen, [11, '0o600', 'two, longer', 'ENOENT', 'ENOENT', 'moved'])
  })

  it("a directory's attributes the binding answers from (after creates in it) give way to the other mount's changes at once", async () => {
    const rel = fresh('dirattrs')
    const cached = (i: number): Promise<number> =>
      metric(c.agents[i]!.metricsAddr!, 'scoutfs_fuse_cached_getattrs_total')
    const before = await cached(A)
    // a process on A holds d open and creates in it: the GETATTRs of d that follow each create
    // are answered by A's binding; its fstat after B's changes asks for d by inode (no lookup
    // of its name, which B's changes also invalidate, would bring fresh attributes with it)
    await onMount(c, A, rel, `os.mkdir(p('d')); out(None)`)
    const holder = startPy(
      dedent(String.raw`
      d = sys.argv[1]
      fd = os.open(d, os.O_RDONLY)
      for i in range(10):
          with open(os.path.join(d, 'f%d' % i), 'w') as f: f.write('x')
      def dir():
          s = os.fstat(fd); return [s.st_nlink, s.st_mtime_ns, oct(s.st_mode & 0o7777)]
      ready(dir())
      wait()
      ready(dir())
      `),
      [join(c.agents[A]!.mnt, rel, 'd')],
    )
    try {
      const a0 = (await holder.next()) as [number, number, string]
      assert.ok((await cached(A)) - before >= 9, "A's binding answered the GETATTRs of d after its creates")
      // B makes a directory in d and changes d's mode: A sees both at once
      await onMount(c, B, rel, `os.mkdir(p('d', 'sub')); os.chmod(p('d'), 0o750); out(None)`)
      holder.send('go')
      const a1 = (await holder.next()) as [number, number, string]
      assert.equal(a1[0], a0[0] + 1, "A sees the directory B made in d (d's link count)")
      assert.ok(a1[1] >= a0[1], "d's mtime is B's mkdir's")
      assert.equal(a1[2], '0o750')
    } finally {
      holder.kill()
    }
  })

  it("pages cached on one mount (file kept open) are replaced by the other mount's overwrite at once", async () => {
    const rel = fresh('pages')
    await onMount(c, A, rel, `wfile(p('f'), b'a' * 100000); out(None)`)
    const holder = startPy(
      dedent(String.raw`
      fd = os.open(sys.argv[1], os.O_RDONLY)
      one = os.pread(fd, 100000, 0)
      ready([len(one), one == os.pread(fd, 100000, 0)])
      wait()
      three = os.pread(fd, 100000, 0)
      os.close(fd)
      ready([three[:10].decode(), three[10:] == b'a' * 99990])
      `),
      [join(c.agents[B]!.mnt, rel, 'f')],
    )
    try {
      assert.deepEqual(await holder.next(), [100000, true])
      await onMount(
        c,
        A,
        rel,
        `fd = os.open(p('f'), os.O_WRONLY); os.pwrite(fd, b'0123456789', 0); os.close(fd); out(None)`,
      )
      holder.send('go')
      assert.deepEqual(await holder.next(), ['0123456789', true])
    } finally {
      holder.kill()
    }
  })

  it("a directory the other mount renames while a process here has its cwd in it: the new name is found, the kernel moves the process's cwd, and renames go on", async () => {
    const rel = fresh('moved')
    await onMount(
      c,
      A,
      rel,
      `os.makedirs(p('a/x')); os.mkdir(p('b')); os.mkdir(p('c')); wfile(p('a/x/f'), b'in x'); out(None)`,
    )
    // B caches a/x, and a process keeps it (its cwd): the kernel's dentry for a/x stays
    const holder = startPy(
      dedent(String.raw`
      os.chdir(sys.argv[1])
      ready(open('f').read())
      wait()
      ready([os.getcwd(), open('f').read()])
      `),
      [join(c.agents[B]!.mnt, rel, 'a', 'x')],
    )
    try {
      assert.equal(await holder.next(), 'in x')
      const moved = (): Promise<number> =>
        metric(c.agents[B]!.metricsAddr!, 'scoutfs_fuse_moved_directories_total', /./)
      const before = await moved()
      await onMount(c, A, rel, `os.rename(p('a/x'), p('b/x')); out(None)`)
      const seen = await onMount(c, B, rel, `out([st(p('a/x')), rfile(p('b/x/f')).decode()])`)
      assert.deepEqual(seen, ['ENOENT', 'in x'])
      assert.equal((await moved()) - before, 1, 'the lookup of b/x found x cached as a/x and dropped that first')
      holder.send('go')
      assert.deepEqual(await holder.next(), [join(c.agents[B]!.mnt, rel, 'b', 'x'), 'in x'])
      // and B renames it on (the lookup under the rename lock finds no other name now)
      const again = await onMount(c, B, rel, `os.rename(p('b/x'), p('c/x')); out(sorted(os.listdir(p('c/x'))))`)
      assert.deepEqual(again, ['f'])
    } finally {
      holder.kill()
    }
  })

  it('file capabilities: a write drops them on whichever mount set them, though writes ask for them without the agent', async () => {
    const rel = fresh('caps')
    // a v2 capability (cap_net_bind_service, effective): the kernel checks the format
    const CAP = `struct.pack('<IIIII', 0x02000001, 1 << 10, 0, 0, 0)`
    const asked = (i: number): Promise<number> =>
      metric(c.agents[i]!.metricsAddr!, 'scoutfs_fuse_nocaps_answers_total', /./)
    const w = `fd = os.open(p('f'), os.O_WRONLY); os.write(fd, b'x'); os.close(fd)`
    await onMount(c, A, rel, `wfile(p('f'), b'data'); ${w}; out(None)`)
    const before = await asked(A)
    await onMount(c, A, rel, `${w}; ${w}; out(None)`)
    assert.ok((await asked(A)) >= before + 2, "A's writes found no capability without asking its agent")
    // B gives the file a capability while A holds it open (so A's kernel keeps the inode):
    // A sees it, and A's next write through the descriptor it held drops it
    const holder = startPy(
      dedent(String.raw`
      fd = os.open(sys.argv[1], os.O_WRONLY)
      os.write(fd, b'y')
      ready(None)
      wait()
      a = err(lambda: len(os.getxattr(fd, 'security.capability')))
      os.pwrite(fd, b'z', 0)
      ready([a, err(lambda: len(os.getxattr(fd, 'security.capability')))])
      `),
      [join(c.agents[A]!.mnt, rel, 'f')],
    )
    try {
      await holder.next()
      const r = await onMount(
        c,
        B,
        rel,
        `import struct; os.setxattr(p('f'), 'security.capability', ${CAP}); out(len(os.getxattr(p('f'), 'security.capability')))`,
      )
      assert.equal(r, 20)
      holder.send('go')
      assert.deepEqual(await holder.next(), [20, 'ENODATA'])
    } finally {
      holder.kill()
    }
    assert.equal(await onMount(c, B, rel, `out(err(os.getxattr, p('f'), 'security.capability'))`), 'ENODATA')
    // and on one mount: set, write, gone
    const local = await onMount(
      c,
      A,
      rel,
      `import struct; ${w}; os.setxattr(p('f'), 'security.capability', ${CAP}); ${w}; out(err(os.getxattr, p('f'), 'security.capability'))`,
    )
    assert.equal(local, 'ENODATA')
  })

  it('a shared writable mmap on one mount writes what the other mount reads', async () => {
    const rel = fresh('mmap')
    const w = await onMount(
      c,
      B,
      rel,
      String.raw`
      import mmap
      wfile(p('m'), bytes(8192))
      fd = os.open(p('m'), os.O_RDWR)
      m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
      m[4096:4101] = b'hello'
      m.flush()
      m.close()
      os.fsync(fd)
      os.close(fd)
      out(rfile(p('m'))[4096:4101].decode())
      `,
    )
    assert.equal(w, 'hello')
    const r = await onMount(
      c,
      A,
      rel,
      `d = rfile(p('m')); out([len(d), d[4096:4101].decode(), d[:4096] == bytes(4096)])`,
    )
    assert.deepEqual(r, [8192, 'hello', true])
  })

  it('pages written through a shared mmap and closed without msync or fsync are what the other mount reads next', async () => {
    // the agent serves no FLUSH (the kernel stops sending it after the first ENOSYS), and
    // nothing here syncs: the dirty pages must still reach the agent before the other mount
    // reads (the kernel writes them back at close, and a lost lock launders what is left)
    const rel = fresh('mmap-close')
    const w = await onMount(
      c,
      B,
      rel,
      String.raw`
      import mmap
      res = []
      for name in ['m1', 'm2']:
          wfile(p(name), bytes(8192))
          fd = os.open(p(name), os.O_RDWR)
          m = mmap.mmap(fd, 8192, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
          m[4096:4101] = name.encode() + b'-ok'
          m.close()
          os.close(fd)
          res.append(name)
      out(res)
      `,
    )
    assert.deepEqual(w, ['m1', 'm2'])
    const r = await onMount(c, A, rel, `out([rfile(p(n))[4096:4101].decode() for n in ['m1', 'm2']])`)
    assert.deepEqual(r, ['m1-ok', 'm2-ok'])
  })
})
