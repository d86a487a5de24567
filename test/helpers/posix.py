"""
Helpers for the python snippets of test/mount/posix-*.test.ts and test/mount/xattr-data.test.ts.

Loaded with exec() (a module named `posix` would lose to python's built-in one), after the
PY_PRELUDE of fuse-harness.ts (os, sys, json, errno, stat, ctypes; err, out).
"""
import errno
import os


def E(f, *a, **k):
    """'OK' if f(*a, **k) succeeds (an fd from os.open is closed), else the errno's name.

    errno 95 is reported as EOPNOTSUPP (python's errorcode table calls it ENOTSUP; on Linux
    they are one number)."""
    try:
        r = f(*a, **k)
    except OSError as e:
        if e.errno == errno.EOPNOTSUPP:
            return 'EOPNOTSUPP'
        return errno.errorcode.get(e.errno, str(e.errno))
    if f is os.open:
        os.close(r)
    return 'OK'


def write_all(fd, data, offset=None):
    """write every byte of data (at offset with pwrite, else at the file position)"""
    view = memoryview(data)
    while view:
        n = os.write(fd, view) if offset is None else os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, 'short write')
        view = view[n:]
        if offset is not None:
            offset += n


def wfile(path, data=b'', mode=0o644):
    """create or truncate path and write data"""
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
    try:
        write_all(fd, data)
    finally:
        os.close(fd)


def rfile(path):
    with open(path, 'rb') as f:
        return f.read()


_libc = None


def libc():
    """libc through ctypes, with getxattr/lgetxattr/fgetxattr/listxattr typed"""
    global _libc
    if _libc is None:
        import ctypes
        c = ctypes.CDLL(None, use_errno=True)
        for name in ('getxattr', 'lgetxattr'):
            fn = getattr(c, name)
            fn.restype = ctypes.c_ssize_t
            fn.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
        c.fgetxattr.restype = ctypes.c_ssize_t
        c.fgetxattr.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
        c.listxattr.restype = ctypes.c_ssize_t
        c.listxattr.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t]
        _libc = c
    return _libc


def c_result(r):
    """a ctypes call's result: its value, or the errno name when it returned -1"""
    import ctypes
    if r < 0:
        return errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))
    return r
