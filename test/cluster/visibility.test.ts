/*
 * What one mount of a cluster sees of another's changes, on real agents and real FUSE mounts
 * sharing one set of devices: creates, renames, unlinks and hard links, file data (odd sizes,
 * overwrites, truncates, sparse files), attributes and times, xattrs, directory listings,
 * removed directories, unlinked open files, and walk-inodes.  The contract: an operation on
 * mount B issued after an operation on mount A completed sees A's result.
 *
 * The suite runs with two and with three mounts; each case writes on one mount (often each in
 * turn) and checks from every other.  Every check compares what the reader observes with what
 * the writer observed or wrote, never with what the test merely asked for.
 *
 * Three cases are known limits of the fuse-native binding (libfuse 2's path-based API), skipped
 * loudly unless SCOUTFS_TEST_KNOWN_LIMITS=1: stat('.') of a cwd another mount removed, and a
 * directory made again under the name of a cwd another mount removed or renamed (the old cwd
 * resolves to it).  A file unlinked on one
 * mount while open on another stays usable there (the open map, DESIGN §7).
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import type { Cluster } from '../helpers/cluster.js'
import { clusterPerSuite, freshClusterDirs, knownLimit, onMount, others } from '../helpers/cluster-tests.js'
import { startPy } from '../helpers/fuse-harness.js'
import { dedent, walkInodes } from '../helpers/mount-tests.js'
import { testRng } from '../helpers/rng.js'

for (const n of [2, 3]) {
  describe(`cluster: visibility across ${n} mounts`, function () {
    this.timeout(180_000)
    let c: Cluster
    const fresh = freshClusterDirs(() => c)
    clusterPerSuite(n, {}, (cl) => (c = cl))

    it('a file, directory and symlink created on one mount are there on every other at once', async () => {
      const rel = fresh('create')
      const rng = testRng(`create-${n}`)
      for (let w = 0; w < n; w++) {
        // every other mount looks first: a negative lookup must not be remembered
        for (const r of others(c, w)) {
          const before = await onMount(c, r, rel, `out([st(p('f${w}')), st(p('d${w}')), st(p('s${w}'))])`)
          assert.deepEqual(before, ['ENOENT', 'ENOENT', 'ENOENT'], `mount ${r} before mount ${w} creates`)
        }
        const size = rng.range(1, 70_000)
        const seed = rng.u32()
        const made = await onMount(
          c,
          w,
          rel,
          String.raw`
          w, size, seed = ARGS[0], int(ARGS[1]), int(ARGS[2])
          data = gen(seed, size)
          wfile(p('f' + w), data, 0o640)
          os.mkdir(p('d' + w), 0o751)
          os.symlink('target-of-' + w, p('s' + w))
          out({'f': st(p('f' + w)), 'd': st(p('d' + w)), 's': st(p('s' + w)), 'sha': sha(data)})
          `,
          String(w),
          String(size),
          String(seed),
        )
        assert.equal(made.f.size, size)
        for (const r of others(c, w)) {
          const seen = await onMount(
            c,
            r,
            rel,
            String.raw`
            w = ARGS[0]
            out({'f': st(p('f' + w)), 'd': st(p('d' + w)), 's': st(p('s' + w)), 'sha': fsha(p('f' + w)),
                 'link': os.readlink(p('s' + w)), 'd_list': os.listdir(p('d' + w))})
            `,
            String(w),
          )
          assert.deepEqual(seen.f, made.f, `mount ${r}: file made on mount ${w}`)
          assert.deepEqual(seen.d, made.d, `mount ${r}: directory made on mount ${w}`)
          assert.deepEqual(seen.s, made.s, `mount ${r}: symlink made on mount ${w}`)
          assert.equal(seen.sha, made.sha, `mount ${r}: content of the file made on mount ${w}`)
          assert.equal(seen.link, `target-of-${w}`)
          assert.deepEqual(seen.d_list, [])
        }
      }
    })

    it('renames, unlinks and hard links on one mount: others see the new names, not the old, and right link counts', async () => {
      const rel = fresh('names')
      const A = 0
      const B = n - 1
      const C = n === 3 ? 1 : 0
      const setup = await onMount(
        c,
        A,
        rel,
        String.raw`
        os.mkdir(p('x')); os.mkdir(p('y'))
        wfile(p('x', 'f1'), b'one'); wfile(p('x', 'f2'), b'two'); wfile(p('y', 'victim'), b'victim')
        wfile(p('x', 'keep'), b'keep')
        out({k: st(p(*k.split('/'))) for k in ['x', 'y', 'x/f1', 'x/f2', 'y/victim', 'x/keep']})
        `,
      )
      // B resolves every name first, so whatever it caches is there to go stale
      const primed = await onMount(
        c,
        B,
        rel,
        String.raw`
        out({k: [st(p(*k.split('/'))), fsha(p(*k.split('/'))) if '/' in k else None]
             for k in ['x', 'y', 'x/f1', 'x/f2', 'y/victim', 'x/keep']})
        `,
      )
      for (const k of Object.keys(setup)) assert.deepEqual(primed[k][0], setup[k], `mount ${B} sees ${k}`)

      await onMount(
        c,
        A,
        rel,
        String.raw`
        os.rename(p('x', 'f1'), p('x', 'g1'))        # same directory
        os.rename(p('x', 'f2'), p('y', 'f2'))        # across directories
        os.rename(p('x', 'g1'), p('y', 'victim'))    # onto an existing file
        out(None)
        `,
      )
      const after = await onMount(
        c,
        B,
        rel,
        String.raw`
        r = {k: st(p(*k.split('/'))) for k in ['x/f1', 'x/g1', 'x/f2', 'y/f2', 'y/victim', 'x/keep']}
        r['victim_data'] = rfile(p('y', 'victim')).decode()
        r['f2_data'] = rfile(p('y', 'f2')).decode()
        r['x'] = sorted(os.listdir(p('x')))
        r['y'] = sorted(os.listdir(p('y')))
        out(r)
        `,
      )
      assert.equal(after['x/f1'], 'ENOENT', 'old name after a same-directory rename')
      assert.equal(after['x/g1'], 'ENOENT', 'intermediate name renamed away again')
      assert.equal(after['x/f2'], 'ENOENT', 'old name after a cross-directory rename')
      assert.equal(after['y/f2'].ino, setup['x/f2'].ino, 'the renamed inode keeps its number')
      assert.equal(after.f2_data, 'two')
      assert.equal(after['y/victim'].ino, setup['x/f1'].ino, 'the replaced name now names the renamed inode')
      assert.equal(after['y/victim'].nlink, 1)
      assert.equal(after.victim_data, 'one')
      assert.deepEqual(after.x, ['keep'])
      assert.deepEqual(after.y, ['f2', 'victim'])

      // a hard link made on B, seen on C (A when there are two mounts)
      await onMount(c, B, rel, `os.link(p('y', 'f2'), p('x', 'h')); out(None)`)
      const linked = await onMount(
        c,
        C,
        rel,
        `out({'f2': st(p('y', 'f2')), 'h': st(p('x', 'h')), 'h_data': rfile(p('x', 'h')).decode(), 'x': sorted(os.listdir(p('x')))})`,
      )
      assert.equal(linked.h.ino, setup['x/f2'].ino)
      assert.equal(linked.f2.ino, setup['x/f2'].ino)
      assert.equal(linked.f2.nlink, 2, `mount ${C}: link count after mount ${B}'s link`)
      assert.equal(linked.h.nlink, 2)
      assert.equal(linked.h_data, 'two')
      assert.deepEqual(linked.x, ['h', 'keep'])

      // one name unlinked on A: B sees one link left; the last unlinked on B: A sees none
      await onMount(c, A, rel, `os.unlink(p('y', 'f2')); out(None)`)
      const one = await onMount(
        c,
        B,
        rel,
        `out({'f2': st(p('y', 'f2')), 'h': st(p('x', 'h')), 'h_data': rfile(p('x', 'h')).decode()})`,
      )
      assert.equal(one.f2, 'ENOENT')
      assert.equal(one.h.nlink, 1, `mount ${B}: link count after mount ${A}'s unlink`)
      assert.equal(one.h_data, 'two')
      await onMount(c, B, rel, `os.unlink(p('x', 'h')); out(None)`)
      for (const r of others(c, B)) {
        const gone = await onMount(c, r, rel, `out({'h': st(p('x', 'h')), 'x': os.listdir(p('x'))})`)
        assert.deepEqual(gone, { h: 'ENOENT', x: ['keep'] }, `mount ${r}`)
      }

      // a directory renamed on A: B's paths below the old name fail, the new ones work
      await onMount(c, A, rel, `os.rename(p('x'), p('z')); out(None)`)
      const moved = await onMount(
        c,
        B,
        rel,
        `out({'x': st(p('x')), 'x_keep': st(p('x', 'keep')), 'z_keep': st(p('z', 'keep')), 'data': rfile(p('z', 'keep')).decode(), 'top': sorted(os.listdir(D))})`,
      )
      assert.equal(moved.x, 'ENOENT')
      assert.equal(moved.x_keep, 'ENOENT', "a path below the directory's old name")
      assert.equal(moved.z_keep.ino, setup['x/keep'].ino)
      assert.equal(moved.data, 'keep')
      assert.deepEqual(moved.top, ['y', 'z'])
    })

    it('data written on one mount reads byte-exact on the others: odd sizes, overwrites, truncates, sparse files', async () => {
      const rel = fresh('data')
      const rng = testRng(`data-${n}`)
      const A = 0
      const B = 1
      const C = n === 3 ? 2 : 0
      const sizes = [0, 1, 4095, 4096, 4097, 65_537, 131_073, 1_000_003]
      const seeds = sizes.map(() => rng.u32())
      const wrote = await onMount(
        c,
        A,
        rel,
        String.raw`
        sizes, seeds = json.loads(ARGS[0]), json.loads(ARGS[1])
        r = {}
        for size, seed in zip(sizes, seeds):
            data = gen(seed, size)
            wfile(p('s%d' % size), data)
            r[str(size)] = [sha(data), os.stat(p('s%d' % size)).st_size]
        out(r)
        `,
        JSON.stringify(sizes),
        JSON.stringify(seeds),
      )
      // B holds the big file open across the later overwrite (direct_io: no stale page cache)
      const holder = startPy(
        dedent(String.raw`
        import hashlib
        fd = os.open(sys.argv[1], os.O_RDONLY)
        ready(hashlib.sha256(os.pread(fd, 2000000, 0)).hexdigest())
        wait()
        ready(hashlib.sha256(os.pread(fd, 2000000, 0)).hexdigest())
        os.close(fd)
        `),
        [join(c.agents[B]!.mnt, rel, 's1000003')],
      )
      for (const r of others(c, A)) {
        const read = await onMount(
          c,
          r,
          rel,
          String.raw`
          out({str(size): [fsha(p('s%d' % size)), os.stat(p('s%d' % size)).st_size] for size in json.loads(ARGS[0])})
          `,
          JSON.stringify(sizes),
        )
        assert.deepEqual(read, wrote, `mount ${r} reads what mount ${A} wrote`)
      }
      assert.equal(await holder.next(), wrote['1000003'][0], 'the open fd on B reads the file')

      // overwrite in the middle, across block boundaries, on B
      const patches = [
        { size: 4097, off: 4000, len: 97 },
        { size: 131_073, off: 4090, len: 8200 },
        { size: 1_000_003, off: 500_001, len: 70_001 },
      ]
      const over = await onMount(
        c,
        B,
        rel,
        String.raw`
        r = {}
        for pt in json.loads(ARGS[0]):
            fd = os.open(p('s%d' % pt['size']), os.O_WRONLY)
            write_all(fd, gen(pt['off'], pt['len']), pt['off'])
            os.close(fd)
            r[str(pt['size'])] = [fsha(p('s%d' % pt['size'])), os.stat(p('s%d' % pt['size'])).st_size]
        out(r)
        `,
        JSON.stringify(patches),
      )
      for (const pt of patches) {
        assert.notEqual(over[String(pt.size)][0], wrote[String(pt.size)][0], 'the overwrite changed the content')
        assert.equal(over[String(pt.size)][1], pt.size, 'an overwrite inside the file keeps its size')
      }
      holder.send('again')
      assert.equal(await holder.next(), over['1000003'][0], "B's fd opened before the overwrite reads the new data")
      assert.equal((await holder.done()).code, 0)
      for (const r of others(c, B)) {
        const read = await onMount(
          c,
          r,
          rel,
          String.raw`
          r = {}
          for pt in json.loads(ARGS[0]):
              data = rfile(p('s%d' % pt['size']))
              r[str(pt['size'])] = [sha(data), len(data)]
          out(r)
          `,
          JSON.stringify(patches),
        )
        for (const pt of patches)
          assert.deepEqual(read[String(pt.size)], over[String(pt.size)], `mount ${r}: ${pt.size}`)
      }

      // truncate shrink to an odd size and grow again on C: the others see the cut and zeros
      const trunc = await onMount(
        c,
        C,
        rel,
        String.raw`
        before = rfile(p('s131073'))
        os.truncate(p('s131073'), 5001)
        os.truncate(p('s131073'), 20011)
        os.truncate(p('s65537'), 4096)
        out({'head': sha(before[:5001]), 'a': [fsha(p('s131073')), os.stat(p('s131073')).st_size],
             'b': [fsha(p('s65537')), os.stat(p('s65537')).st_size]})
        `,
      )
      assert.equal(trunc.a[1], 20011)
      for (const r of others(c, C)) {
        const read = await onMount(
          c,
          r,
          rel,
          String.raw`
          a = rfile(p('s131073')); b = rfile(p('s65537'))
          out({'a': [sha(a), len(a)], 'b': [sha(b), len(b)], 'head': sha(a[:5001]),
               'tail_zero': a[5001:] == bytes(len(a) - 5001), 'a_size': os.stat(p('s131073')).st_size})
          `,
        )
        assert.deepEqual(read.a, trunc.a, `mount ${r}: shrunk and grown file`)
        assert.deepEqual(read.b, trunc.b, `mount ${r}: file shrunk to one block`)
        assert.equal(read.head, trunc.head, 'the kept head is the old content')
        assert.equal(read.tail_zero, true, 'what the grow added reads zeros, not the old bytes')
        assert.equal(read.a_size, 20011)
      }

      // a sparse file: far writes on A, holes read zeros on the others, block counts agree
      const sparse = await onMount(
        c,
        A,
        rel,
        String.raw`
        fd = os.open(p('sparse'), os.O_CREAT | os.O_WRONLY, 0o644)
        write_all(fd, b'mid' * 1000, 3 << 20)
        write_all(fd, b'end!', (10 << 20) + 3)
        os.close(fd)
        s = os.stat(p('sparse'))
        out({'size': s.st_size, 'blocks': s.st_blocks, 'sha': fsha(p('sparse'))})
        `,
      )
      assert.equal(sparse.size, (10 << 20) + 7)
      for (const r of others(c, A)) {
        const read = await onMount(
          c,
          r,
          rel,
          String.raw`
          d = rfile(p('sparse')); s = os.stat(p('sparse'))
          out({'size': s.st_size, 'blocks': s.st_blocks, 'sha': sha(d),
               'hole1': d[:3 << 20] == bytes(3 << 20), 'mid': d[3 << 20:(3 << 20) + 3000] == b'mid' * 1000,
               'hole2': d[(3 << 20) + 3000:(10 << 20) + 3] == bytes((10 << 20) + 3 - (3 << 20) - 3000),
               'end': d[-4:].decode()})
          `,
        )
        assert.deepEqual(
          { size: read.size, blocks: read.blocks, sha: read.sha },
          sparse,
          `mount ${r}: the sparse file's size, blocks and content`,
        )
        assert.ok(read.blocks < 100, `mount ${r}: the holes take no blocks (${read.blocks} blocks)`)
        assert.deepEqual([read.hole1, read.mid, read.hole2, read.end], [true, true, true, 'end!'])
      }
    })

    it("size, times, mode and owner after one mount's changes are what the others stat", async () => {
      const rel = fresh('attrs')
      for (let w = 0; w < n; w++) {
        const mine = await onMount(
          c,
          w,
          rel,
          String.raw`
          w = int(ARGS[0])
          r = {}
          if w == 0:
              wfile(p('f'), b'x' * 5000)
          else:
              fd = os.open(p('f'), os.O_WRONLY | os.O_APPEND)
              write_all(fd, b'y' * (777 * w))
              os.close(fd)
          r['after_write'] = st(p('f'))
          if not os.path.exists(p('g')):
              wfile(p('g'), b'g')
          os.utime(p('g'), ns=(1_000_123_000_000 + w * 1_000_000, 2_000_456_000_000 + w * 1_000_000))  # ms: fuse-native's precision
          r['utime'] = st(p('g'))
          os.chmod(p('g'), 0o600 + w)
          os.chown(p('g'), 1000 + w, 2000 + w)
          r['owner'] = st(p('g'))
          out(r)
          `,
          String(w),
        )
        assert.equal(mine.utime.mtime_ns, 2_000_456_000_000 + w * 1_000_000, 'utime took on the writing mount')
        for (const r of others(c, w)) {
          const seen = await onMount(
            c,
            r,
            rel,
            `out({'f': st(p('f')), 'g': st(p('g')), 'atime': os.stat(p('g')).st_atime_ns})`,
          )
          assert.deepEqual(seen.f, mine.after_write, `mount ${r}: size and times after mount ${w}'s write`)
          assert.deepEqual(seen.g, mine.owner, `mount ${r}: mode, owner, times after mount ${w}'s chmod/chown`)
          assert.equal(seen.atime, 1_000_123_000_000 + w * 1_000_000, `mount ${r}: atime set on mount ${w}`)
        }
      }
    })

    it('xattrs set, replaced and removed on one mount are what the others get and list', async () => {
      const rel = fresh('xattr')
      const A = 0
      const B = n - 1
      await onMount(c, A, rel, `wfile(p('f'), b'data'); out(None)`)
      const set = await onMount(
        c,
        A,
        rel,
        String.raw`
        os.setxattr(p('f'), 'user.small', b'12345')
        os.setxattr(p('f'), 'user.big', gen(7, 3000))
        os.setxattr(p('f'), 'user.empty', b'')
        out({'list': sorted(os.listxattr(p('f'))), 'big': sha(os.getxattr(p('f'), 'user.big'))})
        `,
      )
      for (const r of others(c, A)) {
        const got = await onMount(
          c,
          r,
          rel,
          String.raw`
          out({'list': sorted(os.listxattr(p('f'))), 'small': os.getxattr(p('f'), 'user.small').decode(),
               'big': sha(os.getxattr(p('f'), 'user.big')), 'empty': os.getxattr(p('f'), 'user.empty').hex()})
          `,
        )
        assert.deepEqual(got, { list: set.list, small: '12345', big: set.big, empty: '' }, `mount ${r}`)
      }
      assert.deepEqual(set.list, ['user.big', 'user.empty', 'user.small'])
      await onMount(
        c,
        A,
        rel,
        `os.setxattr(p('f'), 'user.small', b'replaced', os.XATTR_REPLACE); os.removexattr(p('f'), 'user.big'); out(None)`,
      )
      const after = await onMount(
        c,
        B,
        rel,
        String.raw`
        out({'list': sorted(os.listxattr(p('f'))), 'small': os.getxattr(p('f'), 'user.small').decode(),
             'big': E(os.getxattr, p('f'), 'user.big'),
             'create_again': E(os.setxattr, p('f'), 'user.small', b'z', os.XATTR_CREATE)})
        `,
      )
      assert.deepEqual(after, {
        list: ['user.empty', 'user.small'],
        small: 'replaced',
        big: 'ENODATA',
        create_again: 'EEXIST',
      })
      // and back: B sets one, A sees it
      await onMount(c, B, rel, `os.setxattr(p('f'), 'user.fromb', b'b'); out(None)`)
      const back = await onMount(
        c,
        A,
        rel,
        `out({'list': sorted(os.listxattr(p('f'))), 'v': os.getxattr(p('f'), 'user.fromb').decode()})`,
      )
      assert.deepEqual(back, { list: ['user.empty', 'user.fromb', 'user.small'], v: 'b' })
    })

    it('readdir on every mount lists exactly the names after creates and unlinks on the others', async () => {
      const rel = fresh('readdir')
      const rng = testRng(`readdir-${n}`)
      const want = new Map<string, 'f' | 'd' | 'l'>()
      let next = 0
      for (let round = 0; round < 4; round++) {
        const w = round % n
        const creates: Array<[string, 'f' | 'd' | 'l']> = []
        for (let i = 0; i < 150; i++) {
          const long = rng.bool(0.1)
          const name = `r${round}-${next++}` + (long ? '-' + 'L'.repeat(rng.range(50, 230)) : '')
          creates.push([name, rng.pick(['f', 'f', 'f', 'd', 'l'] as const)])
        }
        const existing = [...want.keys()]
        rng.shuffle(existing)
        const unlinks = existing.slice(0, Math.floor(existing.length / 3)).map((name) => [name, want.get(name)!])
        await onMount(
          c,
          w,
          rel,
          String.raw`
          for name, kind in json.loads(ARGS[0]):
              if kind == 'f': wfile(p(name), name.encode())
              elif kind == 'd': os.mkdir(p(name))
              else: os.symlink(name, p(name))
          for name, kind in json.loads(ARGS[1]):
              (os.rmdir if kind == 'd' else os.unlink)(p(name))
          out(None)
          `,
          JSON.stringify(creates),
          JSON.stringify(unlinks),
        )
        for (const [name, kind] of creates) want.set(name, kind)
        for (const [name] of unlinks) want.delete(name)
        for (let r = 0; r < n; r++) {
          const seen = await onMount(
            c,
            r,
            rel,
            String.raw`
            names = os.listdir(D)
            kinds = {e.name: 'd' if e.is_dir(follow_symlinks=False) else 'l' if e.is_symlink() else 'f' for e in os.scandir(D)}
            out({'names': names, 'kinds': kinds, 'nlink': os.stat(D).st_nlink})
            `,
          )
          assert.equal(seen.names.length, new Set(seen.names).size, `mount ${r}: no name listed twice`)
          assert.deepEqual([...seen.names].sort(), [...want.keys()].sort(), `mount ${r} after round ${round} on ${w}`)
          assert.deepEqual(seen.kinds, Object.fromEntries(want), `mount ${r}: d_type of every entry`)
          const subdirs = [...want.values()].filter((k) => k === 'd').length
          assert.equal(seen.nlink, 2 + subdirs, `mount ${r}: directory link count`)
        }
      }
    })

    it('a file unlinked on one mount stays readable through a descriptor open on another', async function () {
      const rel = fresh('open-unlinked')
      const A = 0
      const B = n - 1
      const wrote = await onMount(c, A, rel, `d = gen(11, 300_001); wfile(p('f'), d); out(sha(d))`)
      const holder = startPy(
        String.raw`
import hashlib
fd = os.open(sys.argv[1], os.O_RDWR)
ready(hashlib.sha256(os.pread(fd, 400000, 0)).hexdigest())
wait()
r = {'read': err(lambda: hashlib.sha256(os.pread(fd, 400000, 0)).hexdigest()),
     'fstat_nlink': err(lambda: os.fstat(fd).st_nlink),
     'write': err(os.pwrite, fd, b'more', 300001)}
r['read_after_write'] = err(lambda: len(os.pread(fd, 400000, 0)))
os.close(fd)
ready(r)
`,
        [join(c.agents[B]!.mnt, rel, 'f')],
      )
      assert.equal(await holder.next(), wrote)
      await onMount(c, A, rel, `os.unlink(p('f')); out(None)`)
      holder.send('go')
      const r = await holder.next<Record<string, unknown>>()
      assert.equal((await holder.done()).code, 0)
      assert.deepEqual(
        r,
        { read: wrote, fstat_nlink: 0, write: 4, read_after_write: 300_005 },
        `mount ${B}'s open descriptor after mount ${A} unlinked the file`,
      )
      for (let m = 0; m < n; m++) assert.deepEqual(await onMount(c, m, rel, `out(os.listdir(D))`), [], `mount ${m}`)
    })

    /**
     * A process on mount B sits in directory `gone` (made on A); A removes it, then makes the
     * name again.  The process probes its cwd after each step; the same probe on a local
     * directory removed while it is the cwd is the baseline.
     */
    async function removedCwd(rel: string, A: number, B: number): Promise<Record<string, Record<string, unknown>>> {
      await onMount(c, A, rel, `os.mkdir(p('gone')); out(None)`)
      const proc = startPy(
        dedent(String.raw`
        import tempfile
        def probe():
            r = {'create': err(lambda: os.close(os.open('newfile', os.O_CREAT | os.O_WRONLY, 0o644)) or 'OK'),
                 'mkdir': err(lambda: os.mkdir('newdir') or 'OK'),
                 'listdir': err(os.listdir, '.')}
            s = err(os.stat, '.')
            r['stat'] = s if isinstance(s, str) else {'isdir': stat.S_ISDIR(s.st_mode), 'nlink': s.st_nlink}
            return r
        parent = tempfile.mkdtemp()
        os.mkdir(os.path.join(parent, 'gone'))
        os.chdir(os.path.join(parent, 'gone'))
        os.rmdir(os.path.join(parent, 'gone'))
        local = probe()
        os.chdir('/')
        os.rmdir(parent)
        os.chdir(sys.argv[1])
        ready({'local': local, 'primed': [os.listdir('.'), os.stat('.').st_nlink]})
        wait()
        ready(probe())
        wait()
        ready(probe())
        os.chdir('/')
        `),
        [join(c.agents[B]!.mnt, rel, 'gone')],
      )
      try {
        const first = await proc.next<{ local: Record<string, unknown>; primed: unknown }>()
        assert.deepEqual(first.primed, [[], 2], `mount ${B} sees the directory first`)
        await onMount(c, A, rel, `os.rmdir(p('gone')); out(None)`)
        proc.send('removed')
        const removed = await proc.next<Record<string, unknown>>()
        await onMount(c, A, rel, `os.mkdir(p('gone')); out(None)`)
        proc.send('recreated')
        const recreated = await proc.next<Record<string, unknown>>()
        assert.equal((await proc.done()).code, 0)
        const inNew = await onMount(c, A, rel, `out(sorted(os.listdir(p('gone'))))`)
        console.log(`      local fs, cwd removed:                      ${JSON.stringify(first.local)}`)
        console.log(`      mount ${B}, cwd removed on mount ${A}:           ${JSON.stringify(removed)}`)
        console.log(`      mount ${B}, after mount ${A} made the name again: ${JSON.stringify(recreated)}`)
        return { local: first.local, removed, recreated, inNew: { names: inNew } }
      } finally {
        proc.kill()
      }
    }

    it('a directory removed on one mount while it is the cwd of a process on another: no creates, no names listed', async () => {
      const A = 0
      const B = n - 1
      const r = await removedCwd(fresh('cwd'), A, B)
      // the baseline: Linux refuses creates in a removed directory (ext4 on Linux 6.x lists it
      // as empty; older kernels gave ENOENT)
      assert.equal(r.local!.create, 'ENOENT')
      assert.equal(r.local!.mkdir, 'ENOENT')
      assert.equal(r.removed!.create, 'ENOENT', 'creating a file in the removed cwd')
      assert.equal(r.removed!.mkdir, 'ENOENT', 'making a directory in the removed cwd')
      // an empty listing or ENOENT are both what Linux has given; no name may ever be listed
      // (this FUSE mount gives ENOENT: the directory's path no longer resolves)
      const l = r.removed!.listdir
      assert.ok(l === 'ENOENT' || (Array.isArray(l) && l.length === 0), `listing the removed cwd: ${JSON.stringify(l)}`)
    })

    it("a directory made again under a removed cwd's name is another directory: nothing the cwd's process does lands in it", async function () {
      knownLimit(
        this,
        "libfuse 2 names nodes by path: the other mount's kernel node for the removed directory resolves to the new one",
      )
      const A = 0
      const B = n - 1
      const r = await removedCwd(fresh('cwd-again'), A, B)
      assert.deepEqual(r.inNew!.names, [], "nothing B did in its removed cwd landed in A's new directory")
      assert.equal(r.recreated!.create, 'ENOENT', 'creating in the removed cwd after the name was made again')
      const l2 = r.recreated!.listdir
      assert.ok(l2 === 'ENOENT' || (Array.isArray(l2) && l2.length === 0), `listing it then: ${JSON.stringify(l2)}`)
    })

    it('a directory renamed on one mount while it is the cwd of a process on another, its name made again: creates in the cwd land in it under its new name', async function () {
      knownLimit(this, 'libfuse 2 names nodes by path: the cwd resolves to the directory made under its old name')
      const A = 0
      const B = n - 1
      const rel = fresh('cwd-moved')
      await onMount(c, A, rel, `os.mkdir(p('moving')); out(None)`)
      const proc = startPy(
        dedent(String.raw`
        os.chdir(sys.argv[1])
        ready(os.listdir('.'))
        wait()
        r = {'create': err(lambda: os.close(os.open('f1', os.O_CREAT | os.O_WRONLY, 0o644)) or 'OK'),
             'mkdir': err(lambda: os.mkdir('sub') or 'OK')}
        r['listdir'] = sorted(os.listdir('.'))
        os.chdir('/')
        ready(r)
        `),
        [join(c.agents[B]!.mnt, rel, 'moving')],
      )
      try {
        assert.deepEqual(await proc.next(), [], `mount ${B} sees the directory first`)
        // right after the move, while mount B's kernel may still be dropping its entry
        await onMount(c, A, rel, `os.rename(p('moving'), p('moved')); os.mkdir(p('moving')); out(None)`)
        proc.send('moved')
        const r = await proc.next<Record<string, unknown>>()
        assert.equal((await proc.done()).code, 0)
        assert.deepEqual(
          r,
          { create: 'OK', mkdir: 'OK', listdir: ['f1', 'sub'] },
          `mount ${B}'s process in its moved cwd`,
        )
        for (let m = 0; m < n; m++) {
          const names = await onMount(
            c,
            m,
            rel,
            `out([sorted(os.listdir(p('moved'))), sorted(os.listdir(p('moving')))])`,
          )
          assert.deepEqual(
            names,
            [['f1', 'sub'], []],
            `mount ${m}: the moved directory holds what B made, the new one nothing`,
          )
        }
      } finally {
        proc.kill()
      }
    })

    it("stat('.') of a cwd removed on another mount is a directory with no links, as on a local fs", async function () {
      knownLimit(
        this,
        "libfuse 2's path API has no path for a removed directory, so getattr of the removed cwd answers ENOENT",
      )
      const r = await removedCwd(fresh('cwd-stat'), 0, n - 1)
      assert.deepEqual(r.local!.stat, { isdir: true, nlink: 0 }, 'the local baseline')
      assert.deepEqual(r.removed!.stat, r.local!.stat, "stat('.') after the removal")
      assert.deepEqual(r.recreated!.stat, r.local!.stat, "stat('.') after the name was made again")
    })

    it('walk-inodes on any mount lists the changes made on every mount', async () => {
      const rel = fresh('walk')
      await onMount(c, 0, rel, `wfile(p('untouched'), b'u'); out(None)`)
      const untouched = (await onMount(c, 0, rel, `out(st(p('untouched')))`)).ino as number
      const before = Math.max(...(await walkInodes(c.agents[0]!.mnt, 'meta_seq')).map((e) => e.seq))
      const inos: number[] = []
      for (let m = 0; m < n; m++)
        inos.push((await onMount(c, m, rel, `wfile(p('w${m}'), b'w'); out(st(p('w${m}')))`)).ino)
      for (let m = 0; m < n; m++) {
        const all = await walkInodes(c.agents[m]!.mnt, 'meta_seq')
        const byIno = new Map(all.map((e) => [e.ino, e.seq]))
        assert.equal(byIno.size, all.length, `mount ${m}: each inode listed once`)
        for (let k = 0; k < n; k++) {
          const seq = byIno.get(inos[k]!)
          assert.ok(seq !== undefined, `mount ${m}'s walk lists the file made on mount ${k} (ino ${inos[k]})`)
          assert.ok(seq > before, `mount ${m}: ino ${inos[k]} has meta_seq ${seq} > ${before}`)
        }
        assert.ok(byIno.has(untouched), `mount ${m} lists the older file too`)
        const since = await walkInodes(c.agents[m]!.mnt, 'meta_seq', String(before + 1))
        const sinceInos = since.map((e) => e.ino)
        for (const ino of inos) assert.ok(sinceInos.includes(ino), `mount ${m}: ino ${ino} since seq ${before + 1}`)
        assert.ok(
          !sinceInos.includes(untouched),
          `mount ${m}: the untouched file is not listed since seq ${before + 1}`,
        )
        for (const e of since) assert.ok(e.seq > before, `mount ${m}: entry ${JSON.stringify(e)} since ${before + 1}`)
        for (let i = 1; i < since.length; i++) assert.ok(since[i - 1]!.seq <= since[i]!.seq, 'in seq order')
      }
    })
  })
}
