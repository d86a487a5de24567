/*
 * The python worker of the filesystem benchmark (bench/fs.ts) that does the timed I/O: every
 * timed operation runs in a child process, never in a process serving a FUSE mount.
 */

/* ---- the python worker that does the timed I/O -------------------------------------------- */

export const WORKER_PY = String.raw`
import os, sys, json, time, struct, random
MiB = 1 << 20
def out(**k):
    sys.stdout.write(json.dumps(k) + '\n'); sys.stdout.flush()
class Progress:
    def __init__(self):
        self.t0 = time.perf_counter(); self.last = self.t0
    def tick(self, done):
        now = time.perf_counter()
        if now - self.last >= 2:
            self.last = now; out(progress=done, secs=now - self.t0)
def pattern():
    return random.Random(0x5c0f75).randbytes(MiB)
def fail(op, path, e, done, retry=None):
    # an I/O error: say which op on which path, what exists right after, and whether a retry works
    after = {}
    for name, p in (('path', path), ('parent', os.path.dirname(path))):
        try:
            os.stat(p); after[name] = 'exists'
        except OSError as e2:
            after[name] = e2.strerror
    if retry:
        try:
            retry(); after['retry'] = 'ok'
        except OSError as e3:
            after['retry'] = e3.strerror
    out(error='%s %s: %s after %d done; then %s' % (op, path, e.strerror, done, json.dumps(after)), done=done, after=after)
    sys.exit(1)
cmd, a = sys.argv[1], sys.argv[2:]
if cmd == 'create':
    d, n, size = a[0], int(a[1]), int(a[2])
    data = b'\xa5' * size
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    p = Progress(); t0 = time.perf_counter()
    for i in range(n):
        path = '%s/f%07d' % (d, i)
        try:
            fd = os.open(path, flags, 0o644)
            try:
                if size and os.write(fd, data) != size: raise SystemExit('short write')
            finally:
                os.close(fd)
        except OSError as e:
            fail('create', path, e, i)
        if i & 63 == 0: p.tick(i)
    out(ops=n, secs=time.perf_counter() - t0)
elif cmd == 'stat':
    d, n, size = a[0], int(a[1]), int(a[2])
    bad = 0; p = Progress(); t0 = time.perf_counter()
    for i in range(n):
        path = '%s/f%07d' % (d, i)
        try:
            if os.stat(path).st_size != size: bad += 1
        except OSError as e:
            fail('stat', path, e, i)
        if i & 63 == 0: p.tick(i)
    out(ops=n, secs=time.perf_counter() - t0, bad=bad)
elif cmd == 'readdir':
    d, n, rep = a[0], int(a[1]), int(a[2])
    t0 = time.perf_counter(); got = []
    for _ in range(rep):
        got.append(len(os.listdir(d)))
    secs = time.perf_counter() - t0
    out(ops=sum(got), secs=secs, entries=got, bad=sum(1 for g in got if g != n))
elif cmd == 'seqwrite':
    path, mb = a[0], int(a[1])
    buf = bytearray(pattern())
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    p = Progress(); t0 = time.perf_counter()
    for i in range(mb):
        struct.pack_into('<Q', buf, 0, i)
        mv = memoryview(buf); done = 0
        while done < MiB:
            done += os.write(fd, mv[done:])
        p.tick(i)
    t1 = time.perf_counter(); os.fsync(fd); t2 = time.perf_counter(); os.close(fd); t3 = time.perf_counter()
    out(bytes=mb * MiB, write_secs=(t1 - t0) + (t3 - t2), fsync_secs=t2 - t1)
elif cmd == 'seqread':
    path, mb = a[0], int(a[1])
    pat = pattern(); head, tail = pat[8:4096], pat[-4096:]
    buf = bytearray(MiB); mv = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    total = 0; bad = 0; i = 0; p = Progress(); t0 = time.perf_counter()
    while True:
        got = 0
        while got < MiB:
            n = os.readv(fd, [mv[got:]])
            if n == 0: break
            got += n
        if got == 0: break
        total += got
        if got != MiB or struct.unpack_from('<Q', buf, 0)[0] != i or buf[8:4096] != head or buf[-4096:] != tail: bad += 1
        i += 1
        p.tick(i)
    secs = time.perf_counter() - t0
    os.close(fd)
    out(bytes=total, secs=secs, bad=bad + (0 if total == mb * MiB else 1))
elif cmd == 'mknod':
    # walk setup: directories [d0, d1) of up to per files each, the files numbered globally < total
    base, d0, d1, per, total = a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4])
    n = 0; p = Progress(); t0 = time.perf_counter()
    for d in range(d0, d1):
        dp = '%s/d%05d' % (base, d)
        try:
            os.mkdir(dp)
        except OSError as e:
            fail('mkdir', dp, e, n)
        for j in range(per):
            if d * per + j >= total: break
            path = '%s/f%05d' % (dp, j)
            try:
                os.mknod(path, 0o644 | 0o100000)
            except OSError as e:
                fail('mknod', path, e, n, lambda: os.mknod(path, 0o644 | 0o100000))
            n += 1
            if n & 63 == 0: p.tick(n)
    out(ops=n, secs=time.perf_counter() - t0)
elif cmd == 'touch':
    base, per, total, count = a[0], int(a[1]), int(a[2]), int(a[3])
    paths = []; inos = []
    for k in range(count):
        g = k * total // count
        path = '%s/d%05d/f%05d' % (base, g // per, g % per)
        os.utime(path)
        paths.append(path); inos.append(os.stat(path).st_ino)
    out(paths=paths, inos=inos)
else:
    raise SystemExit('unknown worker command ' + cmd)
`
