/*
 * POSIX semantics of a real mount (a `scoutfs mount --foreground` agent serving FUSE), checked
 * from python (exact errno names) and from this process: name lengths, non-UTF-8 names,
 * directory nlink, large directories, and inode numbers against `scoutfs walk-inodes`.
 *
 * One agent serves the whole describe block (test/helpers/posix-mount.ts); every test works in
 * a directory of its own.
 */
import assert from 'node:assert/strict'
import { join } from 'node:path'
import { scoutfs, type Agent } from '../helpers/agent.js'
import { bash } from '../helpers/fuse-harness.js'
import { errorLines, runPy, walkInodes } from '../helpers/mount-tests.js'
import { knownLimit, posixMount } from '../helpers/posix-mount.js'

describe('mount: POSIX semantics: names and directories', function () {
  this.timeout(180_000)
  let agent: Agent
  let M: string
  /** a fresh directory on the mount for one test */
  const fresh = posixMount((d, a) => {
    agent = a
    M = a.mnt
  })

  it('names of 255 bytes work and 256 bytes give ENAMETOOLONG everywhere', async () => {
    const r = await runPy(
      fresh('names'),
      String.raw`
      r = {}
      n255, n256 = 'a' * 255, 'b' * 256
      u255 = '\u20ac' * 85  # 255 bytes of UTF-8
      u256 = '\u20ac' * 85 + 'x'
      r['create'] = [E(os.open, p(n255), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
                     E(os.open, p(n256), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
                     E(os.open, p(u255), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644),
                     E(os.open, p(u256), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)]
      r['mkdir'] = [E(os.mkdir, p('d' * 255)), E(os.mkdir, p('d' * 256))]
      r['lookup'] = [E(os.stat, p(n255)), E(os.stat, p(n256)), E(os.stat, p(u255)), E(os.stat, p(u256)),
                     E(os.stat, p('d' * 256))]
      r['listed'] = sorted(os.listdir(D)) == sorted([n255, u255, 'd' * 255])
      r['nested'] = E(os.open, p('d' * 255, 'e' * 255), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      wfile(p('src'), b'S')
      r['rename'] = [E(os.rename, p('src'), p('r' * 256)), E(os.rename, p('src'), p('r' * 255)),
                     E(os.rename, p('s' * 256), p('t')), rfile(p('r' * 255)).decode()]
      r['link'] = [E(os.link, p('r' * 255), p('l' * 256)), E(os.link, p('r' * 255), p('l' * 255))]
      r['symlink'] = [E(os.symlink, 'target', p('y' * 256)), E(os.symlink, 'target', p('y' * 255)),
                      os.readlink(p('y' * 255))]
      r['remove'] = [E(os.unlink, p(n256)), E(os.rmdir, p('d' * 256)), E(os.unlink, p(n255)),
                     E(os.unlink, p(u255)), E(os.unlink, p('d' * 255, 'e' * 255)), E(os.rmdir, p('d' * 255))]
      r['final'] = sorted(os.listdir(D)) == sorted(['r' * 255, 'l' * 255, 'y' * 255])
      out(r)
      `,
    )
    assert.deepEqual(r.create, ['OK', 'ENAMETOOLONG', 'OK', 'ENAMETOOLONG'])
    assert.deepEqual(r.mkdir, ['OK', 'ENAMETOOLONG'])
    assert.deepEqual(r.lookup, ['OK', 'ENAMETOOLONG', 'OK', 'ENAMETOOLONG', 'ENAMETOOLONG'])
    assert.equal(r.listed, true)
    assert.equal(r.nested, 'OK')
    assert.deepEqual(r.rename, ['ENAMETOOLONG', 'OK', 'ENAMETOOLONG', 'S'])
    assert.deepEqual(r.link, ['ENAMETOOLONG', 'OK'])
    assert.deepEqual(r.symlink, ['ENAMETOOLONG', 'OK', 'target'])
    assert.deepEqual(r.remove, ['ENAMETOOLONG', 'ENAMETOOLONG', 'OK', 'OK', 'OK', 'OK'])
    assert.equal(r.final, true)
  })

  it('names are bytes: names that are not UTF-8 are kept apart and listed as created', async function () {
    knownLimit(this, 'paths reach JavaScript as UTF-8 strings, so invalid bytes become U+FFFD')
    const r = await runPy(
      fresh('bytes'),
      String.raw`
      B = os.fsencode(D)
      names = [b'\xff', b'\xfe', b'caf\xe9', b'\xc3\x28', b'ok-\xe2\x82']
      res = [E(os.open, os.path.join(B, n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644) for n in names]
      listed = sorted(n.hex() for n in os.listdir(B))
      out({'create': res, 'listed': listed, 'want': sorted(n.hex() for n in names),
           'stat': [E(os.stat, os.path.join(B, n)) for n in names]})
      `,
    )
    assert.deepEqual(r.create, ['OK', 'OK', 'OK', 'OK', 'OK'], 'distinct byte names are distinct files')
    assert.deepEqual(r.listed, r.want, 'readdir returns the bytes that were created')
    assert.deepEqual(r.stat, ['OK', 'OK', 'OK', 'OK', 'OK'])
  })

  it('directory nlink is 2 + its subdirectories', async () => {
    const d = fresh('nlink')
    const r = await runPy(
      d,
      String.raw`
      r = {}
      os.mkdir(p('d'))
      for i in range(7):
          os.mkdir(p('d', 's%d' % i))
      for i in range(5):
          wfile(p('d', 'f%d' % i), b'')
      os.symlink('s0', p('d', 'l'))
      nl = lambda *x: os.stat(p(*x)).st_nlink
      r['n'] = [nl('d'), nl('d', 's0')]
      os.rmdir(p('d', 's6'))
      r['rmdir'] = nl('d')
      os.mkdir(p('e'))
      os.rename(p('d', 's5'), p('e', 's5'))
      r['move_dir'] = [nl('d'), nl('e')]
      os.rename(p('d', 'f0'), p('e', 'f0'))
      r['move_file'] = [nl('d'), nl('e')]
      os.rename(p('d', 's4'), p('d', 's4b'))
      r['rename_in_place'] = nl('d')
      os.rename(p('d', 's3'), p('e', 's5'))
      r['replace_empty'] = [nl('d'), nl('e')]
      os.unlink(p('d', 'f1'))
      os.link(p('d', 'f2'), p('d', 'f2b'))
      r['files'] = nl('d')
      subdirs = lambda dp: sum(1 for e in os.scandir(dp) if e.is_dir(follow_symlinks=False))
      r['all_match'] = all(os.stat(dp).st_nlink == 2 + subdirs(dp) for dp, _, _ in os.walk(D))
      out(r)
      `,
    )
    assert.deepEqual(r.n, [9, 2])
    assert.equal(r.rmdir, 8)
    assert.deepEqual(r.move_dir, [7, 3])
    assert.deepEqual(r.move_file, [7, 3])
    assert.equal(r.rename_in_place, 7)
    assert.deepEqual(r.replace_empty, [6, 3])
    assert.equal(r.files, 6)
    assert.equal(r.all_match, true)
    const root = await runPy(
      M,
      String.raw`
      out([os.stat(D).st_nlink, sum(1 for e in os.scandir(D) if e.is_dir(follow_symlinks=False))])
      `,
    )
    assert.equal(root[0], 2 + root[1], 'the root too')
  })

  it('readdir of 5,000 entries is complete, has no duplicates and keeps creation order', async () => {
    const d = fresh('readdir')
    const r = await runPy(
      d,
      String.raw`
      r = {}
      N = 5000
      names = ['%s-%d' % (hashlib.sha1(str(i).encode()).hexdigest()[:12], i) for i in range(N)]
      for n in names:
          os.close(os.open(p(n), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
      got = [e.name for e in os.scandir(D)]
      r['count'] = [len(got), len(set(got))]
      r['complete'] = set(got) == set(names)
      r['creation_order'] = got == names
      r['sorted_differs'] = sorted(names) != names
      inos = {e.name: e.inode() for e in os.scandir(D)}
      r['d_ino_mismatch'] = sum(1 for n in names if os.stat(p(n)).st_ino != inos.get(n))
      r['distinct_inos'] = len(set(inos.values()))
      r['nlink'] = os.stat(D).st_nlink
      for n in names[::3]:
          os.unlink(p(n))
      new = ['new-%d' % i for i in range(10)]
      for n in new:
          wfile(p(n), b'')
      got2 = [e.name for e in os.scandir(D)]
      r['after'] = got2 == [n for i, n in enumerate(names) if i % 3] + new
      r['count2'] = len(got2)
      out(r)
      `,
    )
    assert.deepEqual(r.count, [5000, 5000], 'every entry once')
    assert.equal(r.complete, true)
    assert.equal(r.sorted_differs, true)
    assert.equal(r.creation_order, true, 'readdir returns entries in creation order')
    assert.equal(r.d_ino_mismatch, 0, 'd_ino equals st_ino')
    assert.equal(r.distinct_inos, 5000)
    assert.equal(r.nlink, 2)
    assert.equal(r.count2, 5000 - 1667 + 10)
    assert.equal(r.after, true, 'removals leave the order; new entries come last')
    const ls = await bash(`ls -fa -- ${JSON.stringify(d)} | wc -l`)
    assert.equal(Number(ls.stdout.trim()), 5000 - 1667 + 10 + 2, 'getdents through ls: the same count with . and ..')
  })

  it('inode numbers from stat and readdir equal what scoutfs walk-inodes reports', async () => {
    const d = fresh('inodes')
    await runPy(
      d,
      String.raw`
      os.makedirs(p('a', 'b', 'c'))
      for i in range(20):
          wfile(p('a', 'f%d' % i), b'x' * i)
      wfile(p('a', 'b', 'g'), b'g')
      os.link(p('a', 'b', 'g'), p('a', 'c-link'))
      os.symlink('f1', p('a', 'sym'))
      wfile(p('empty'), b'')
      out(0)
      `,
    )
    // the whole tree: every inode reachable from the root, with its type
    const tree = await runPy<{ all: Array<[number, string]>; dino_bad: number; root: number }>(
      M,
      String.raw`
      seen = {}
      bad = 0
      seen[os.lstat(D).st_ino] = 'dir'
      for dp, dirs, files in os.walk(D):
          for e in os.scandir(dp):
              st = os.lstat(e.path)
              if e.inode() != st.st_ino:
                  bad += 1
              seen[st.st_ino] = 'dir' if stat.S_ISDIR(st.st_mode) else 'reg' if stat.S_ISREG(st.st_mode) else 'other'
      out({'all': sorted(seen.items()), 'dino_bad': bad, 'root': os.stat(D).st_ino})
      `,
    )
    assert.equal(tree.root, 1, 'the root is inode 1')
    assert.equal(tree.dino_bad, 0, 'readdir d_ino equals lstat st_ino everywhere')
    const meta = await walkInodes(M, 'meta_seq')
    const data = await walkInodes(M, 'data_seq')
    const metaInos = meta.map((e) => e.ino)
    assert.equal(new Set(metaInos).size, metaInos.length, 'each inode once in meta_seq')
    assert.deepEqual(
      [...metaInos].sort((x, y) => x - y),
      tree.all.map(([ino]) => Number(ino)).sort((x, y) => x - y),
      'meta_seq lists exactly the inodes in the tree',
    )
    assert.deepEqual(
      data.map((e) => e.ino).sort((x, y) => x - y),
      tree.all
        .filter(([, t]) => t === 'reg')
        .map(([ino]) => Number(ino))
        .sort((x, y) => x - y),
      'data_seq lists exactly the regular files',
    )
    for (const name of ['a/f3', 'a/b/g', 'empty']) {
      const s = await scoutfs('stat', '-s', 'meta_seq', join(d, name))
      assert.equal(s.code, 0, s.stderr)
      const ino = await runPy<number>(d, `out(os.stat(p(ARGS[0])).st_ino)`, name)
      assert.equal(meta.find((e) => e.ino === ino)?.seq, Number(s.stdout), `${name}: walk-inodes seq = stat meta_seq`)
    }
  })

  it('the agent logged no errors', () => {
    const errs = errorLines(agent.log())
    assert.deepEqual(errs, [], 'error-level lines in the agent log')
  })
})
