/*
 * The python worker of the cluster benchmark (bench/cluster.ts): the program that does every
 * timed I/O (small-file creates, the cross-mount visibility rounds, the fsync probe), written
 * to the benchmark's temp dir and run as a child process, never inside a process serving a mount.
 */
export const WORKER_PY = String.raw`
import os, sys, json, time
def out(**k):
    sys.stdout.write(json.dumps(k) + '\n'); sys.stdout.flush()
def cpu():
    t = os.times(); return t.user + t.system
def die(msg):
    out(error=msg); sys.exit(1)
cmd, a = sys.argv[1], sys.argv[2:]
if cmd == 'create':
    # mkdir DIR (untimed), say ready, wait for "go" on stdin, then create N files of SIZE bytes
    d, n, size = a[0], int(a[1]), int(a[2])
    try:
        os.mkdir(d)
    except OSError as e:
        die('mkdir %s: %s' % (d, e.strerror))
    data = b'\x5c' * size
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY
    out(ready=True)
    if sys.stdin.readline().strip() != 'go': die('no go')
    c0 = cpu(); t0 = time.monotonic(); last = t0
    for i in range(n):
        path = '%s/f%07d' % (d, i)
        try:
            fd = os.open(path, flags, 0o644)
            try:
                if size and os.write(fd, data) != size: die('short write to %s' % path)
            finally:
                os.close(fd)
        except OSError as e:
            die('create %s: %s after %d files' % (path, e.strerror, i))
        if i & 63 == 0:
            now = time.monotonic()
            if now - last >= 2:
                last = now; out(progress=i, secs=now - t0)
    t1 = time.monotonic()
    # time.monotonic() is CLOCK_MONOTONIC: comparable between the parallel writers
    out(ops=n, t0=t0, t1=t1, cpu=cpu() - c0)
elif cmd == 'vis':
    # A and B: the same new directory seen through two mounts
    a_dir, b_dir, k, size, timeout = a[0], a[1], int(a[2]), int(a[3]), float(a[4]) / 1000
    pc = time.perf_counter
    def poll(path, want_size, t0):
        # stat path until it exists (want_size None) or has want_size bytes; (secs from t0, stats)
        n = 0
        while True:
            try:
                st = os.stat(path); n += 1
                if want_size is None or st.st_size == want_size: return pc() - t0, n
            except FileNotFoundError:
                n += 1
            if pc() - t0 > timeout: return None, n
    def settle(path, want_size=None):
        s, _ = poll(path, want_size, pc())
        if s is None: die('%s did not show up within the timeout (setup)' % path)
    def rounds(a_dir, b_dir, tag):
        # k rounds, alternately: create a file on A; append SIZE bytes to a file open on A
        data = b'v' * max(size, 1)
        fd = os.open('%s/%s-append' % (a_dir, tag), os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_APPEND, 0o644)
        settle('%s/%s-append' % (b_dir, tag), 0)
        res = {'create': [], 'append': []}; calls = {'create': [], 'append': []}; stats = []; unseen = 0
        length = 0
        for i in range(k):
            if i % 2 == 0:
                kind = 'create'; name = '%s-c%06d' % (tag, i)
                tc = pc()
                f = os.open('%s/%s' % (a_dir, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                t0 = pc()
                s, n = poll('%s/%s' % (b_dir, name), None, t0)
                os.close(f)
            else:
                kind = 'append'
                tc = pc()
                if os.write(fd, data) != len(data): die('short append')
                t0 = pc()
                length += len(data)
                s, n = poll('%s/%s-append' % (b_dir, tag), length, t0)
            calls[kind].append((t0 - tc) * 1000); stats.append(n)
            if s is None: unseen += 1
            else: res[kind].append(s * 1000)
        os.close(fd)
        return dict(ms=res, call_ms=calls, stats=stats, unseen=unseen)
    os.mkdir(a_dir)
    settle(b_dir)
    still_a, still_b = a_dir + '/unchanged', b_dir + '/unchanged'
    with open(still_a, 'wb') as f: f.write(b'u' * 100)
    settle(still_b, 100)
    c0 = cpu(); w0 = pc()
    # marks around the cross-mount rounds, so that their lock traffic can be read apart
    out(ready=True)
    if sys.stdin.readline().strip() != 'go': die('no go')
    cross = rounds(a_dir, b_dir, 'x')
    out(ready=True)
    if sys.stdin.readline().strip() != 'go': die('no go')
    same = rounds(a_dir, a_dir, 's')
    # the no-invalidation baseline: a plain stat on B of a file nobody changes
    for _ in range(3): os.stat(still_b)
    plain = []
    for _ in range(k):
        t0 = pc(); os.stat(still_b); plain.append((pc() - t0) * 1000)
    out(cross=cross, same=same, plain_ms=plain, secs=pc() - w0, cpu=cpu() - c0)
elif cmd == 'fsync':
    # the floor of a commit: one FILE_SIZE write + fsync of a file on the local disk, k times
    path, k, size = a[0], int(a[1]), int(a[2])
    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644); data = b'f' * max(size, 1); ms = []
    for i in range(k):
        t0 = time.perf_counter(); os.pwrite(fd, data, i * len(data)); os.fsync(fd); ms.append((time.perf_counter() - t0) * 1000)
    os.close(fd); os.unlink(path)
    out(ms=ms)
else:
    die('unknown worker command ' + cmd)
`
