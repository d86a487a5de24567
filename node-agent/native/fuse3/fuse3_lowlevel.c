/*
 * scoutfs' libfuse 3 low-level binding (N-API, C).
 *
 * Owns: one FUSE session per mount, the reading of its requests, its notify thread, and the
 * way requests travel to JavaScript and replies travel back.
 *
 *  - The JavaScript thread reads /dev/fuse itself: the device is non-blocking and polled by
 *    the event loop (uv_poll).  When it is readable, on_readable reads up to READ_BATCH
 *    requests (fuse_session_receive_buf / fuse_session_process_buf); each handler copies what
 *    it needs out of the read buffer (names, write data, xattr values: bytes, never strings)
 *    into a `struct sreq` (write data into one of the buffers JavaScript lent at mount when
 *    one is free: it is free again once the request is answered, and JavaScript never keeps
 *    the data past its answer) and appends it to the session's queue; then the whole batch is
 *    handed to the dispatch function, in one callback scope (promise jobs run after it).
 *    A request costs the caller two thread wake-ups, as with a C filesystem: the JavaScript
 *    thread's, and the caller's when it is answered.  Request threads handing requests over
 *    through a threadsafe function cost a third (a trip through JavaScript took 86 us against
 *    15 us for one answered in C; docs/fuse.md).
 *  - JavaScript answers each request exactly once through a reply* function, which calls
 *    fuse_reply_* at once.  A request is a napi external: a second reply throws instead of
 *    touching a freed fuse_req; the struct is freed when the external is collected.
 *  - Kernel cache invalidations (notifyInvalInode / notifyInvalEntry) go to a queue served by
 *    a thread of their own: a notify can block in the kernel until a request of the same
 *    inode is answered, so it must never run on the thread that answers requests.
 *  - stop(): no more reading, exit flag, lazy unmount, the notify thread ends; destroy()
 *    after JavaScript has answered what it still held closes /dev/fuse.
 *
 * Only RELEASEDIR, INIT and security.capability questions already answered (below) are
 * answered here without JavaScript; FORGET is passed on with no reply expected.  There is no
 * flush op: writes reach the agent as they happen (no writeback cache), so a close has nothing
 * to flush, and libfuse's ENOSYS answer to the first FLUSH makes the kernel send no more (it
 * still writes back a closed file's dirty mmap pages itself: fuse_flush).
 */
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE
#include <fuse_lowlevel.h>
#include <node_api.h>
#include <uv.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* what libfuse reads /dev/fuse into (its se->bufsize): FUSE_MAX_MAX_PAGES pages and
 * FUSE_BUFFER_HEADER_SIZE; a lent buffer at least this large can be read into */
#define READ_BUF_SIZE ((size_t)256 * (size_t)sysconf(_SC_PAGESIZE) + 4096)
/* requests read per wake-up of the event loop before they are handed to JavaScript */
#define READ_BATCH 64
#define MAX_WRITE (1024 * 1024)

enum op {
  OP_LOOKUP = 1, OP_FORGET, OP_GETATTR, OP_SETATTR, OP_READLINK, OP_MKNOD, OP_MKDIR, OP_UNLINK,
  OP_RMDIR, OP_SYMLINK, OP_RENAME, OP_LINK, OP_OPEN, OP_READ, OP_WRITE, OP_RELEASE, OP_FSYNC,
  OP_OPENDIR, OP_READDIR, OP_FSYNCDIR, OP_STATFS, OP_SETXATTR, OP_GETXATTR, OP_LISTXATTR,
  OP_REMOVEXATTR, OP_ACCESS, OP_CREATE, OP_FALLOCATE, OP_READDIRPLUS
};

#define NUMS 9
/* write buffers JavaScript lends at mount (a request's data is copied into a free one, so
 * writes make no garbage for the JavaScript heap); one bit per slot in a 32-bit mask */
#define WBUF_SLOTS 32
/* directory attributes the addon answers GETATTR with (direct-mapped by inode number) */
#define ACACHE_SLOTS 4096
#define ATTR_LEN 12
/* inodes known to have no security.capability xattr (direct-mapped by inode number) */
#define NOCAPS_SLOTS 65536
static const char CAPS_NAME[] = "security.capability";

struct session;

struct sreq {
  struct sreq *next;
  struct session *s;
  fuse_req_t req; /* NULL once answered (or for FORGET) */
  int op;
  uint32_t uid, gid, pid, umask;
  double n[NUMS];  /* op arguments, see enqueue sites */
  char *b[3];      /* byte arguments (names, data, values), malloc'd */
  size_t blen[3];
  int wslot;       /* write buffer slot + 1 holding this WRITE's data; 0: none */
  uint64_t capsgen; /* GETXATTR of security.capability, CREATE: nocaps_gen when it arrived, + 1 */
  /* the directory attribute cache (struct aslot): the inodes whose attributes this request
   * may change (changing) or asks for (GETATTR), their slots' gen when it was read, the
   * cache's epoch then; all: a RENAME or RMDIR (may change any directory's) */
  int nain, changing, all;
  uint64_t aino[2], agen[2], aepoch;
};

/*
 * A directory's attributes as JavaScript last gave them, valid while ino matches and epoch is
 * the cache's.  gen counts the requests read or answered that may change this slot's inode:
 * attributes read before such a one are not kept.  busy: such requests read and not answered.
 */
struct aslot {
  uint64_t ino, gen, epoch;
  uint32_t busy;
  double a[ATTR_LEN];
};

struct notify {
  struct notify *next;
  uint64_t ino; /* inode, or parent of an entry */
  char *name;   /* NULL: invalidate the inode */
  size_t namelen;
};

struct session {
  struct fuse_session *se;
  char *mountpoint;
  napi_env env;
  napi_ref dispatch; /* the JavaScript dispatch function */
  napi_async_context actx;
  uv_poll_t poll; /* /dev/fuse readable */
  int polling;
  uv_idle_t idle; /* active: the event loop polls without sleeping (spin) */
  int spinning, idle_open;
  uint64_t spin_ns, spin_until; /* spin this long after a request; until then (uv_hrtime) */
  uint64_t spin_wakes; /* reads of requests that found the loop asleep (not spinning) */
  uint64_t last_answer, gap; /* when a request was last answered; the average wait for the next (ns) */
  struct fuse_buf buf; /* what fuse_session_receive_buf reads into: mem is a free lent buffer or own */
  char *own;           /* read buffer used when no lent buffer is free (rbuf_size) */
  size_t rbuf_size;    /* READ_BUF_SIZE */
  int rslot;           /* the lent buffer buf.mem is (a WRITE read into it keeps it), -1: own */
  /* Shared with the notify thread: the notify queue, notify_stop and the notify counters.
   * The write buffers, nocaps and pending are the JavaScript thread's alone since it reads
   * /dev/fuse itself; they are still taken under the lock (uncontended, and kept so the
   * request path may move to other threads again). */
  pthread_mutex_t lock;
  struct sreq *head, *tail; /* read and not handed to JavaScript yet (JavaScript thread) */
  int64_t pending; /* requests enqueued and not answered */
  pthread_t notifier;
  int notifier_running;
  pthread_cond_t notify_cond;
  struct notify *nhead, *ntail;
  int notify_stop;
  int stopped, destroyed;
  double attr_timeout, entry_timeout;
  uint64_t notifies_sent, notifies_failed;
  char *wbuf[WBUF_SLOTS]; /* the lent write buffers, each wbuf_size bytes */
  napi_ref wbuf_ref[WBUF_SLOTS];
  int nwbuf;
  size_t wbuf_size;
  uint32_t wbuf_free; /* bit i: slot i is free (under lock) */
  /* The kernel asks for security.capability before every write (file_remove_privs: a FUSE
   * mount has no SB_NOSEC), a JavaScript round trip each.  An ENODATA answer for an inode is
   * kept here and given by the addon itself until anything may have changed the inode's
   * xattrs: a setxattr or removexattr through this mount, an invalidation of the inode (a lost
   * lock: another mount may change it), a forget.  nocaps_gen counts those: an answer whose
   * request arrived before one of them is not kept.  A file this mount just made (CREATE, not
   * an existing name opened) has no xattrs: it starts known. */
  uint64_t nocaps[NOCAPS_SLOTS]; /* under lock */
  uint64_t nocaps_gen;
  uint64_t nocaps_hits;
  /*
   * The kernel drops a directory's attributes after every create, unlink, mkdir... in it, and
   * its next permission check there asks for them again: a GETATTR per file created.  After
   * such an operation JavaScript gives the directory's new attributes (cacheAttr), kept here,
   * and that GETATTR is answered from them without JavaScript.  Everything here runs on the
   * JavaScript thread (request handlers, replies, notifies are queued from it).  A slot is
   * forgotten when a request that may change its inode is read (SETATTR, namespace operations
   * in it, xattr changes), on an invalidation of the inode (a lost lock) and on a forget;
   * RENAME and RMDIR (which change directories they do not name: the one moved or removed)
   * forget every slot (the epoch) when they are read and when they are answered, and nothing
   * is kept while one runs.  Attributes are kept only when no other request that may change
   * the inode was read or answered since this one was read (gen) and none runs (busy).
   */
  struct aslot acache[ACACHE_SLOTS];
  uint64_t aepoch;
  uint32_t abusy_all;
  uint64_t acache_hits;
};

/* ---- request handlers (on the JavaScript thread, inside on_readable) ---------------- */

static struct sreq *new_req(fuse_req_t req, int op) {
  struct sreq *r = calloc(1, sizeof(*r));
  if (!r) return NULL;
  const struct fuse_ctx *ctx = fuse_req_ctx(req);
  r->s = fuse_req_userdata(req);
  r->req = req;
  r->op = op;
  r->uid = ctx->uid;
  r->gid = ctx->gid;
  r->pid = ctx->pid;
  r->umask = ctx->umask;
  return r;
}

static int set_bytes(struct sreq *r, int i, const void *p, size_t len) {
  r->b[i] = malloc(len ? len : 1);
  if (!r->b[i]) return -1;
  if (len) memcpy(r->b[i], p, len);
  r->blen[i] = len;
  return 0;
}

/* give a WRITE's buffer slot back (under the session lock) */
static void put_wslot_locked(struct sreq *r) {
  if (!r->wslot) return;
  r->s->wbuf_free |= 1u << (r->wslot - 1);
  r->wslot = 0;
}

/* ---- the no-capability cache (under the session lock) --------------------------------- */

static void nocaps_forget_locked(struct session *s, uint64_t ino) {
  s->nocaps_gen++;
  if (s->nocaps[ino % NOCAPS_SLOTS] == ino) s->nocaps[ino % NOCAPS_SLOTS] = 0;
}

static void nocaps_forget(struct session *s, uint64_t ino) {
  pthread_mutex_lock(&s->lock);
  nocaps_forget_locked(s, ino);
  pthread_mutex_unlock(&s->lock);
}

/* ---- the directory attribute cache (JavaScript thread) --------------------------------- */

static struct aslot *aslot_of(struct session *s, uint64_t ino) { return &s->acache[ino % ACACHE_SLOTS]; }

static void acache_forget(struct session *s, uint64_t ino) {
  struct aslot *a = aslot_of(s, ino);
  a->gen++;
  if (a->ino == ino) a->ino = 0;
}

/* the request may change ino's attributes: forget them, and keep none until it is answered */
static void attr_changing(struct sreq *r, uint64_t ino) {
  struct aslot *a = aslot_of(r->s, ino);
  acache_forget(r->s, ino);
  a->busy++;
  r->changing = 1;
  r->aino[r->nain] = ino;
  r->agen[r->nain++] = a->gen;
  r->aepoch = r->s->aepoch;
}

/* a RENAME or RMDIR: forget every directory's attributes, keep none until it is answered */
static void attr_changing_all(struct sreq *r) {
  r->s->aepoch++;
  r->s->abusy_all++;
  r->all = 1;
}

/* a GETATTR of ino to JavaScript: its answer is kept if nothing changed ino meanwhile */
static void attr_asking(struct sreq *r, uint64_t ino) {
  r->aino[0] = ino;
  r->agen[0] = aslot_of(r->s, ino)->gen;
  r->nain = 1;
  r->aepoch = r->s->aepoch;
}

/* the request is answered (or failed): what it changed is done */
static void attr_answered(struct sreq *r) {
  struct session *s = r->s;
  if (r->changing)
    for (int i = 0; i < r->nain; i++) {
      struct aslot *a = aslot_of(s, r->aino[i]);
      a->busy--;
      a->gen++;
    }
  if (r->all) {
    s->abusy_all--;
    s->aepoch++;
  }
  r->changing = r->all = r->nain = 0;
}

/* keep directory attributes `a` for request r, if nothing may have changed them since r was
 * read but r itself */
static void attr_keep(struct sreq *r, const double *a) {
  struct session *s = r->s;
  uint64_t ino = (uint64_t)a[0];
  if (!S_ISDIR((mode_t)a[1]) || s->abusy_all || r->aepoch != s->aepoch) return;
  for (int i = 0; i < r->nain; i++) {
    if (r->aino[i] != ino) continue;
    struct aslot *sl = aslot_of(s, ino);
    if (sl->gen != r->agen[i] || sl->busy != (uint32_t)r->changing) return;
    sl->ino = ino;
    sl->epoch = s->aepoch;
    memcpy(sl->a, a, sizeof(sl->a));
    return;
  }
}

static void fill_stat(const double *a, struct stat *st);

static void free_req(struct sreq *r) {
  if (r->wslot) {
    pthread_mutex_lock(&r->s->lock);
    put_wslot_locked(r);
    pthread_mutex_unlock(&r->s->lock);
  }
  for (int i = 0; i < 3; i++) free(r->b[i]);
  free(r);
}

/* queue a request for JavaScript (on_readable hands the batch over once it is read) */
static void enqueue(struct sreq *r) {
  struct session *s = r->s;
  if (s->tail) s->tail->next = r;
  else s->head = r;
  s->tail = r;
  if (r->req) {
    pthread_mutex_lock(&s->lock);
    s->pending++;
    pthread_mutex_unlock(&s->lock);
  }
}

#define NEW_OR_FAIL(req, op)               \
  struct sreq *r = new_req(req, op);       \
  if (!r) {                                \
    fuse_reply_err(req, ENOMEM);           \
    return;                                \
  }
#define BYTES_OR_FAIL(i, p, len)           \
  if (set_bytes(r, i, p, len) < 0) {       \
    fuse_reply_err(r->req, ENOMEM);        \
    free_req(r);                           \
    return;                                \
  }

static void ll_init(void *userdata, struct fuse_conn_info *conn) {
  (void)userdata;
  conn->max_write = MAX_WRITE;
  conn->max_readahead = MAX_WRITE;
  /* the kernel applies the umask; a killpriv write is a SETATTR of the mode; O_TRUNC is a
   * SETATTR of the size before OPEN */
  conn->want &= ~(FUSE_CAP_HANDLE_KILLPRIV | FUSE_CAP_WRITEBACK_CACHE | FUSE_CAP_POSIX_ACL | FUSE_CAP_ATOMIC_O_TRUNC);
  if (conn->capable & FUSE_CAP_EXPORT_SUPPORT) conn->want |= FUSE_CAP_EXPORT_SUPPORT;
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW_OR_FAIL(req, OP_LOOKUP);
  r->n[0] = (double)parent;
  BYTES_OR_FAIL(0, name, strlen(name));
  enqueue(r);
}

static void forget_one(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  struct sreq *r = new_req(req, OP_FORGET);
  if (!r) return;
  r->req = NULL;
  r->n[0] = (double)ino;
  r->n[1] = (double)nlookup;
  enqueue(r);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup) {
  nocaps_forget(fuse_req_userdata(req), ino);
  acache_forget(fuse_req_userdata(req), ino);
  forget_one(req, ino, nlookup);
  fuse_reply_none(req);
}

static void ll_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets) {
  for (size_t i = 0; i < count; i++) {
    nocaps_forget(fuse_req_userdata(req), forgets[i].ino);
    acache_forget(fuse_req_userdata(req), forgets[i].ino);
    forget_one(req, forgets[i].ino, forgets[i].nlookup);
  }
  fuse_reply_none(req);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  struct session *s = fuse_req_userdata(req);
  struct aslot *a = aslot_of(s, ino);
  if (a->ino == ino && a->epoch == s->aepoch) {
    struct stat st;
    fill_stat(a->a, &st);
    s->acache_hits++;
    fuse_reply_attr(req, &st, s->attr_timeout);
    return;
  }
  NEW_OR_FAIL(req, OP_GETATTR);
  r->n[0] = (double)ino;
  r->n[1] = fi ? (double)fi->fh : 0;
  attr_asking(r, ino);
  enqueue(r);
}

static double ts_ms(const struct timespec *t) { return (double)t->tv_sec * 1000.0 + (double)t->tv_nsec / 1e6; }

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi) {
  NEW_OR_FAIL(req, OP_SETATTR);
  r->n[0] = (double)ino;
  r->n[1] = (double)to_set;
  r->n[2] = (double)attr->st_mode;
  r->n[3] = (double)attr->st_uid;
  r->n[4] = (double)attr->st_gid;
  r->n[5] = (double)attr->st_size;
  r->n[6] = ts_ms(&attr->st_atim);
  r->n[7] = ts_ms(&attr->st_mtim);
  r->n[8] = fi ? (double)fi->fh : 0;
  attr_changing(r, ino);
  enqueue(r);
}

static void ll_readlink(fuse_req_t req, fuse_ino_t ino) {
  NEW_OR_FAIL(req, OP_READLINK);
  r->n[0] = (double)ino;
  enqueue(r);
}

static void ll_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) {
  NEW_OR_FAIL(req, OP_MKNOD);
  r->n[0] = (double)parent;
  r->n[1] = (double)mode;
  r->n[2] = (double)rdev;
  BYTES_OR_FAIL(0, name, strlen(name));
  attr_changing(r, parent);
  enqueue(r);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) {
  NEW_OR_FAIL(req, OP_MKDIR);
  r->n[0] = (double)parent;
  r->n[1] = (double)mode;
  BYTES_OR_FAIL(0, name, strlen(name));
  attr_changing(r, parent);
  enqueue(r);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW_OR_FAIL(req, OP_UNLINK);
  r->n[0] = (double)parent;
  BYTES_OR_FAIL(0, name, strlen(name));
  attr_changing(r, parent);
  enqueue(r);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) {
  NEW_OR_FAIL(req, OP_RMDIR);
  r->n[0] = (double)parent;
  BYTES_OR_FAIL(0, name, strlen(name));
  attr_changing(r, parent);
  attr_changing_all(r);
  enqueue(r);
}

static void ll_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) {
  NEW_OR_FAIL(req, OP_SYMLINK);
  r->n[0] = (double)parent;
  BYTES_OR_FAIL(0, name, strlen(name));
  BYTES_OR_FAIL(1, link, strlen(link));
  attr_changing(r, parent);
  enqueue(r);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent, const char *newname,
                      unsigned int flags) {
  NEW_OR_FAIL(req, OP_RENAME);
  r->n[0] = (double)parent;
  r->n[1] = (double)newparent;
  r->n[2] = (double)flags;
  BYTES_OR_FAIL(0, name, strlen(name));
  BYTES_OR_FAIL(1, newname, strlen(newname));
  attr_changing(r, parent);
  if (newparent != parent) attr_changing(r, newparent);
  attr_changing_all(r);
  enqueue(r);
}

static void ll_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) {
  NEW_OR_FAIL(req, OP_LINK);
  r->n[0] = (double)ino;
  r->n[1] = (double)newparent;
  BYTES_OR_FAIL(0, newname, strlen(newname));
  attr_changing(r, ino);
  attr_changing(r, newparent);
  enqueue(r);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW_OR_FAIL(req, OP_OPEN);
  r->n[0] = (double)ino;
  r->n[1] = (double)fi->flags;
  enqueue(r);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  NEW_OR_FAIL(req, OP_READ);
  r->n[0] = (double)ino;
  r->n[1] = (double)fi->fh;
  r->n[2] = (double)size;
  r->n[3] = (double)off;
  enqueue(r);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi) {
  NEW_OR_FAIL(req, OP_WRITE);
  struct session *s = r->s;
  r->n[0] = (double)ino;
  r->n[1] = (double)fi->fh;
  r->n[2] = (double)off;
  r->n[4] = (double)size;
  /* the data is in the buffer the request was read into: when that is a lent buffer it is
   * this WRITE's until answered (n3 = its slot, n5 = where the data starts); else it is
   * copied into a free lent buffer (n5 = 0), or a malloc'd one (n3 = -1, b0) */
  int rs = s->rslot;
  if (rs >= 0 && buf >= s->wbuf[rs] && buf + size <= s->wbuf[rs] + s->wbuf_size) {
    pthread_mutex_lock(&s->lock);
    s->wbuf_free &= ~(1u << rs);
    pthread_mutex_unlock(&s->lock);
    s->rslot = -1;
    r->wslot = rs + 1;
    r->n[3] = rs;
    r->n[5] = (double)(buf - s->wbuf[rs]);
    enqueue(r);
    return;
  }
  int slot = -1;
  if (size <= s->wbuf_size) {
    pthread_mutex_lock(&s->lock);
    if (s->wbuf_free) {
      slot = __builtin_ctz(s->wbuf_free);
      s->wbuf_free &= ~(1u << slot);
    }
    pthread_mutex_unlock(&s->lock);
  }
  if (slot >= 0) {
    memcpy(s->wbuf[slot], buf, size);
    r->wslot = slot + 1;
    r->n[3] = slot;
    r->n[5] = 0;
  } else {
    r->n[3] = -1;
    BYTES_OR_FAIL(0, buf, size);
  }
  enqueue(r);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW_OR_FAIL(req, OP_RELEASE);
  r->n[0] = (double)ino;
  r->n[1] = (double)fi->fh;
  enqueue(r);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  NEW_OR_FAIL(req, OP_FSYNC);
  r->n[0] = (double)ino;
  r->n[1] = (double)fi->fh;
  r->n[2] = (double)datasync;
  enqueue(r);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  NEW_OR_FAIL(req, OP_OPENDIR);
  r->n[0] = (double)ino;
  r->n[1] = (double)fi->flags;
  enqueue(r);
}

static void readdir_common(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi,
                           int op) {
  NEW_OR_FAIL(req, op);
  r->n[0] = (double)ino;
  r->n[1] = (double)fi->fh;
  r->n[2] = (double)size;
  r->n[3] = (double)off;
  enqueue(r);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  readdir_common(req, ino, size, off, fi, OP_READDIR);
}

static void ll_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi) {
  readdir_common(req, ino, size, off, fi, OP_READDIRPLUS);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi) {
  (void)ino;
  (void)fi;
  fuse_reply_err(req, 0);
}

static void ll_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi) {
  (void)fi;
  NEW_OR_FAIL(req, OP_FSYNCDIR);
  r->n[0] = (double)ino;
  r->n[1] = (double)datasync;
  enqueue(r);
}

static void ll_statfs(fuse_req_t req, fuse_ino_t ino) {
  NEW_OR_FAIL(req, OP_STATFS);
  r->n[0] = (double)ino;
  enqueue(r);
}

static void ll_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size, int flags) {
  NEW_OR_FAIL(req, OP_SETXATTR);
  nocaps_forget(r->s, ino);
  r->n[0] = (double)ino;
  r->n[1] = (double)flags;
  BYTES_OR_FAIL(0, name, strlen(name));
  BYTES_OR_FAIL(1, value, size);
  attr_changing(r, ino);
  enqueue(r);
}

static void ll_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) {
  struct session *s = fuse_req_userdata(req);
  uint64_t gen = 0;
  if (strcmp(name, CAPS_NAME) == 0) {
    pthread_mutex_lock(&s->lock);
    int known = s->nocaps[ino % NOCAPS_SLOTS] == ino;
    if (known) s->nocaps_hits++;
    gen = s->nocaps_gen + 1;
    pthread_mutex_unlock(&s->lock);
    if (known) {
      fuse_reply_err(req, ENODATA);
      return;
    }
  }
  NEW_OR_FAIL(req, OP_GETXATTR);
  r->capsgen = gen;
  r->n[0] = (double)ino;
  r->n[1] = (double)size;
  BYTES_OR_FAIL(0, name, strlen(name));
  enqueue(r);
}

static void ll_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  NEW_OR_FAIL(req, OP_LISTXATTR);
  r->n[0] = (double)ino;
  r->n[1] = (double)size;
  enqueue(r);
}

static void ll_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) {
  NEW_OR_FAIL(req, OP_REMOVEXATTR);
  nocaps_forget(r->s, ino);
  r->n[0] = (double)ino;
  BYTES_OR_FAIL(0, name, strlen(name));
  attr_changing(r, ino);
  enqueue(r);
}

static void ll_access(fuse_req_t req, fuse_ino_t ino, int mask) {
  NEW_OR_FAIL(req, OP_ACCESS);
  r->n[0] = (double)ino;
  r->n[1] = (double)mask;
  enqueue(r);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi) {
  NEW_OR_FAIL(req, OP_CREATE);
  pthread_mutex_lock(&r->s->lock);
  r->capsgen = r->s->nocaps_gen + 1;
  pthread_mutex_unlock(&r->s->lock);
  r->n[0] = (double)parent;
  r->n[1] = (double)mode;
  r->n[2] = (double)fi->flags;
  BYTES_OR_FAIL(0, name, strlen(name));
  attr_changing(r, parent);
  enqueue(r);
}

static void ll_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                         struct fuse_file_info *fi) {
  NEW_OR_FAIL(req, OP_FALLOCATE);
  r->n[0] = (double)ino;
  r->n[1] = (double)fi->fh;
  r->n[2] = (double)mode;
  r->n[3] = (double)offset;
  r->n[4] = (double)length;
  enqueue(r);
}

static const struct fuse_lowlevel_ops ll_ops = {
  .init = ll_init,
  .lookup = ll_lookup,
  .forget = ll_forget,
  .forget_multi = ll_forget_multi,
  .getattr = ll_getattr,
  .setattr = ll_setattr,
  .readlink = ll_readlink,
  .mknod = ll_mknod,
  .mkdir = ll_mkdir,
  .unlink = ll_unlink,
  .rmdir = ll_rmdir,
  .symlink = ll_symlink,
  .rename = ll_rename,
  .link = ll_link,
  .open = ll_open,
  .read = ll_read,
  .write = ll_write,
  .release = ll_release,
  .fsync = ll_fsync,
  .opendir = ll_opendir,
  .readdir = ll_readdir,
  .readdirplus = ll_readdirplus,
  .releasedir = ll_releasedir,
  .fsyncdir = ll_fsyncdir,
  .statfs = ll_statfs,
  .setxattr = ll_setxattr,
  .getxattr = ll_getxattr,
  .listxattr = ll_listxattr,
  .removexattr = ll_removexattr,
  .access = ll_access,
  .create = ll_create,
  .fallocate = ll_fallocate,
};

/* ---- notify thread ------------------------------------------------------------------- */

static void *notify_thread(void *arg) {
  struct session *s = arg;
  pthread_mutex_lock(&s->lock);
  for (;;) {
    while (!s->nhead && !s->notify_stop) pthread_cond_wait(&s->notify_cond, &s->lock);
    if (!s->nhead) break;
    struct notify *n = s->nhead;
    s->nhead = n->next;
    if (!s->nhead) s->ntail = NULL;
    pthread_mutex_unlock(&s->lock);
    int res = n->name ? fuse_lowlevel_notify_inval_entry(s->se, n->ino, n->name, n->namelen)
                      : fuse_lowlevel_notify_inval_inode(s->se, n->ino, 0, 0);
    free(n->name);
    free(n);
    pthread_mutex_lock(&s->lock);
    /* ENOENT: the kernel does not hold that inode or entry any more, nothing to drop */
    if (res == 0 || res == -ENOENT) s->notifies_sent++;
    else s->notifies_failed++;
  }
  pthread_mutex_unlock(&s->lock);
  return NULL;
}

/* ---- N-API helpers ------------------------------------------------------------------- */

#define CALL(env, call)                                          \
  do {                                                           \
    if ((call) != napi_ok) {                                     \
      const napi_extended_error_info *ei;                        \
      napi_get_last_error_info((env), &ei);                      \
      bool pending;                                              \
      napi_is_exception_pending((env), &pending);                \
      if (!pending)                                              \
        napi_throw_error((env), NULL, ei && ei->error_message ? ei->error_message : "napi call failed"); \
      return NULL;                                               \
    }                                                            \
  } while (0)

static napi_value throw_err(napi_env env, const char *code, const char *msg) {
  napi_throw_error(env, code, msg);
  return NULL;
}

static napi_value undefined(napi_env env) {
  napi_value u;
  napi_get_undefined(env, &u);
  return u;
}

static napi_value num(napi_env env, double d) {
  napi_value v;
  napi_create_double(env, d, &v);
  return v;
}

static void free_bytes(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  free(data);
}

/* a byte argument handed to JavaScript without a copy (the Buffer owns it from now on) */
static napi_value take_bytes(napi_env env, struct sreq *r, int i) {
  napi_value v;
  if (!r->b[i]) return undefined(env);
  if (napi_create_external_buffer(env, r->blen[i], r->b[i], free_bytes, NULL, &v) != napi_ok) {
    /* runtimes without external buffers: copy */
    napi_create_buffer_copy(env, r->blen[i], r->b[i], NULL, &v);
    return v;
  }
  r->b[i] = NULL;
  return v;
}

static void finalize_req(napi_env env, void *data, void *hint) {
  (void)env;
  (void)hint;
  struct sreq *r = data;
  if (r->req) {
    /* collected without an answer: never leave the kernel waiting */
    if (!r->s->destroyed) fuse_reply_err(r->req, EIO);
    attr_answered(r);
    pthread_mutex_lock(&r->s->lock);
    r->s->pending--;
    pthread_mutex_unlock(&r->s->lock);
  }
  free_req(r);
}

/* dispatch(req, op, uid, gid, pid, umask, n0..n8, b0, b1) for every queued request, in one
 * callback scope: promise jobs and nextTicks run once the batch is handed over */
static void deliver(struct session *s) {
  struct sreq *r = s->head;
  s->head = s->tail = NULL;
  if (!r) return;
  napi_env env = s->env;
  napi_handle_scope hs;
  if (napi_open_handle_scope(env, &hs) != napi_ok) return;
  napi_value resource, js_cb, global;
  napi_callback_scope cs;
  napi_create_object(env, &resource);
  napi_get_reference_value(env, s->dispatch, &js_cb);
  napi_get_global(env, &global);
  napi_open_callback_scope(env, resource, s->actx, &cs);
  while (r) {
    struct sreq *next = r->next;
    r->next = NULL;
    napi_handle_scope rs;
    napi_open_handle_scope(env, &rs);
    napi_value argv[17];
    if (r->req) {
      napi_create_external(env, r, finalize_req, NULL, &argv[0]);
    } else {
      napi_get_null(env, &argv[0]);
    }
    argv[1] = num(env, r->op);
    argv[2] = num(env, r->uid);
    argv[3] = num(env, r->gid);
    argv[4] = num(env, r->pid);
    argv[5] = num(env, r->umask);
    for (int i = 0; i < NUMS; i++) argv[6 + i] = num(env, r->n[i]);
    argv[15] = take_bytes(env, r, 0);
    argv[16] = take_bytes(env, r, 1);
    napi_value result;
    napi_status st = napi_call_function(env, global, js_cb, 17, argv, &result);
    if (st == napi_pending_exception) {
      napi_value ex;
      napi_get_and_clear_last_exception(env, &ex);
      /* the dispatcher never throws; if it did the external's finalizer answers EIO */
    }
    if (!r->req && r->op == OP_FORGET) free_req(r);
    napi_close_handle_scope(env, rs);
    r = next;
  }
  napi_close_callback_scope(env, cs);
  napi_close_handle_scope(env, hs);
}

static void stop_polling(struct session *s) {
  if (s->idle_open) {
    s->idle_open = s->spinning = 0;
    uv_idle_stop(&s->idle);
    uv_close((uv_handle_t *)&s->idle, NULL);
  }
  if (!s->polling) return;
  s->polling = 0;
  uv_poll_stop(&s->poll);
  uv_close((uv_handle_t *)&s->poll, NULL);
}

/* the spin window ended with no request: let the loop sleep in epoll again */
static void on_idle(uv_idle_t *h) {
  struct session *s = h->data;
  if (uv_hrtime() < s->spin_until) {
    /* a spin gives way to whatever else wants this CPU (the caller, other agents) */
    sched_yield();
    return;
  }
  s->spinning = 0;
  uv_idle_stop(h);
}

/*
 * A request came: keep the event loop from sleeping for spin_ns more.  Waking a sleeping
 * thread on another CPU is what a request costs most (on a VM: 45 us of a 70 us trip); a
 * caller that makes one request after another (creates, small reads and writes) finds this
 * thread awake.  The loop polls with a zero timeout while it spins, so timers, sockets and
 * the thread pool are served as usual.
 *
 * Spinning pays only when the next request comes soon after an answer: a caller that works
 * longer between requests (a sequential writer copies 1 MiB into the page cache between two
 * WRITEs, 400 us) would have the spin take that CPU from it, and from anything else when the
 * machine is busy (1 GiB written with two busy loops running: 290-343 MB/s spinning, 400 not).
 * So the loop spins only while the gaps between an answer and the next request average (gap,
 * in 1/8 steps) under SPIN_GAP_MAX_NS.
 */
#define SPIN_GAP_MAX_NS 150000
static void spin_on(struct session *s, uint64_t now) {
  if (!s->spinning) s->spin_wakes++;
  if (s->last_answer && now > s->last_answer) {
    uint64_t gap = now - s->last_answer;
    s->gap = s->gap - s->gap / 8 + gap / 8;
  }
  if (!s->idle_open || !s->spin_ns || s->gap > SPIN_GAP_MAX_NS) return;
  s->spin_until = uv_hrtime() + s->spin_ns;
  if (s->spinning) return;
  s->spinning = 1;
  uv_idle_start(&s->idle, on_idle);
}

/* /dev/fuse is readable: read what is there (at most READ_BATCH requests), then hand it over */
static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  struct session *s = h->data;
  int got = 0;
  if (status < 0) {
    /* the device cannot be polled any more (it went away): nothing more will come */
    stop_polling(s);
    return;
  }
  for (int i = 0; i < READ_BATCH && !s->stopped; i++) {
    /* read into a free lent buffer when there is one (a WRITE's data then needs no copy) */
    s->rslot = -1;
    s->buf.mem = s->own;
    if (s->wbuf_size >= s->rbuf_size) {
      pthread_mutex_lock(&s->lock);
      if (s->wbuf_free) s->rslot = __builtin_ctz(s->wbuf_free);
      pthread_mutex_unlock(&s->lock);
      if (s->rslot >= 0) s->buf.mem = s->wbuf[s->rslot];
    }
    int res = fuse_session_receive_buf(s->se, &s->buf);
    if (res == -EINTR) continue;
    if (res == -EAGAIN) break;
    if (res <= 0 || fuse_session_exited(s->se)) {
      /* unmounted (ENODEV) or the connection aborted: nothing more will come */
      stop_polling(s);
      break;
    }
    got++;
    fuse_session_process_buf(s->se, &s->buf);
  }
  s->rslot = -1;
  if (got) {
    uint64_t now = uv_hrtime();
    spin_on(s, now);
    /* what was answered here (a known capability or directory attributes) was answered now */
    s->last_answer = now;
  }
  deliver(s);
}

static struct session *get_session(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "not a fuse3 session");
    return NULL;
  }
  return p;
}

/* the request of a reply: NULL (with an exception) if it was answered already */
static struct sreq *take_req(napi_env env, napi_value v) {
  void *p = NULL;
  if (napi_get_value_external(env, v, &p) != napi_ok || !p) {
    napi_throw_type_error(env, NULL, "not a fuse3 request");
    return NULL;
  }
  struct sreq *r = p;
  if (!r->req) {
    napi_throw_error(env, "EALREADY", "this FUSE request was answered already");
    return NULL;
  }
  return r;
}

static void answered(struct sreq *r) {
  r->req = NULL;
  r->s->last_answer = uv_hrtime();
  attr_answered(r);
  for (int i = 0; i < 3; i++) {
    free(r->b[i]);
    r->b[i] = NULL;
  }
  pthread_mutex_lock(&r->s->lock);
  r->s->pending--;
  /* answered: JavaScript is done with the data (it never keeps it past its answer) */
  put_wslot_locked(r);
  pthread_mutex_unlock(&r->s->lock);
}

static int get_f64(napi_env env, napi_value v, double **out, size_t need) {
  napi_typedarray_type t;
  size_t len;
  void *data;
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &t, &len, &data, &ab, &off) != napi_ok || t != napi_float64_array ||
      len < need) {
    napi_throw_type_error(env, NULL, "expected a Float64Array of attributes");
    return -1;
  }
  *out = data;
  return 0;
}

static void ms_ts(double ms, struct timespec *t) {
  double sec = floor(ms / 1000.0);
  t->tv_sec = (time_t)sec;
  t->tv_nsec = (long)llround((ms - sec * 1000.0) * 1e6);
  if (t->tv_nsec >= 1000000000L) {
    t->tv_sec++;
    t->tv_nsec -= 1000000000L;
  }
}

/* attribute layout (ATTR_* in fuse3-lowlevel.ts): ino mode nlink uid gid rdev size blocks atime mtime ctime blksize */
static void fill_stat(const double *a, struct stat *st) {
  memset(st, 0, sizeof(*st));
  st->st_ino = (ino_t)a[0];
  st->st_mode = (mode_t)a[1];
  st->st_nlink = (nlink_t)a[2];
  st->st_uid = (uid_t)a[3];
  st->st_gid = (gid_t)a[4];
  st->st_rdev = (dev_t)a[5];
  st->st_size = (off_t)a[6];
  st->st_blocks = (blkcnt_t)a[7];
  ms_ts(a[8], &st->st_atim);
  ms_ts(a[9], &st->st_mtim);
  ms_ts(a[10], &st->st_ctim);
  st->st_blksize = (blksize_t)a[11];
}

static void fill_entry(struct session *s, const double *a, struct fuse_entry_param *e) {
  memset(e, 0, sizeof(*e));
  e->ino = (fuse_ino_t)a[0];
  /* inode numbers are never reused (the server hands out ever larger ones): generation 0 */
  e->generation = 0;
  fill_stat(a, &e->attr);
  e->attr_timeout = s->attr_timeout;
  e->entry_timeout = s->entry_timeout;
}

#define ARGS(n)                                             \
  size_t argc = n;                                          \
  napi_value argv[n];                                       \
  CALL(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL)); \
  if (argc < n) return throw_err(env, "EINVAL", "too few arguments");

static double get_num(napi_env env, napi_value v) {
  double d = 0;
  napi_get_value_double(env, v, &d);
  return d;
}

static int get_buf(napi_env env, napi_value v, char **data, size_t *len) {
  bool is;
  napi_is_buffer(env, v, &is);
  if (!is) {
    napi_throw_type_error(env, NULL, "expected a Buffer");
    return -1;
  }
  napi_get_buffer_info(env, v, (void **)data, len);
  return 0;
}

/*
 * A reply after destroy() (the agent stopped without waiting for a request that hangs, e.g.
 * on a server that is gone) goes nowhere: /dev/fuse is closed and the kernel has failed the
 * request already; the fuse_req is left alone (libfuse freed the session it points to).
 */
#define SEND(r, call) ((r)->s->destroyed ? -ENOTCONN : (call))

static napi_value reply_result(napi_env env, struct sreq *r, int res) {
  answered(r);
  return num(env, res);
}

/* replyErr(req, errno) */
static napi_value reply_err(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct sreq *r = take_req(env, argv[0]);
  if (!r) return NULL;
  int err = (int)get_num(env, argv[1]);
  if (r->op == OP_GETXATTR && r->capsgen && err == ENODATA) {
    /* no security.capability: kept unless the xattrs may have changed since it was asked */
    struct session *s = r->s;
    uint64_t ino = (uint64_t)r->n[0];
    pthread_mutex_lock(&s->lock);
    if (r->capsgen == s->nocaps_gen + 1) s->nocaps[ino % NOCAPS_SLOTS] = ino;
    pthread_mutex_unlock(&s->lock);
  }
  int res = SEND(r, fuse_reply_err(r->req, err));
  return reply_result(env, r, res);
}

/* replyEntry(req, attr) */
static napi_value reply_entry(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct sreq *r = take_req(env, argv[0]);
  double *a;
  if (!r || get_f64(env, argv[1], &a, ATTR_LEN) < 0) return NULL;
  struct fuse_entry_param e;
  fill_entry(r->s, a, &e);
  int res = SEND(r, fuse_reply_entry(r->req, &e));
  return reply_result(env, r, res);
}

/* replyCreate(req, attr, fh, directIo, keepCache, made): made = the file is new */
static napi_value reply_create(napi_env env, napi_callback_info info) {
  ARGS(6);
  struct sreq *r = take_req(env, argv[0]);
  double *a;
  if (!r || get_f64(env, argv[1], &a, ATTR_LEN) < 0) return NULL;
  struct fuse_entry_param e;
  fill_entry(r->s, a, &e);
  if (get_num(env, argv[5]) != 0) {
    /* a new file has no xattrs: its first write need not ask the agent for a capability */
    pthread_mutex_lock(&r->s->lock);
    if (r->capsgen == r->s->nocaps_gen + 1) r->s->nocaps[e.ino % NOCAPS_SLOTS] = e.ino;
    pthread_mutex_unlock(&r->s->lock);
  }
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof(fi));
  fi.fh = (uint64_t)get_num(env, argv[2]);
  fi.direct_io = get_num(env, argv[3]) != 0;
  fi.keep_cache = get_num(env, argv[4]) != 0;
  int res = SEND(r, fuse_reply_create(r->req, &e, &fi));
  return reply_result(env, r, res);
}

/* replyAttr(req, attr) */
static napi_value reply_attr(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct sreq *r = take_req(env, argv[0]);
  double *a;
  if (!r || get_f64(env, argv[1], &a, ATTR_LEN) < 0) return NULL;
  struct stat st;
  fill_stat(a, &st);
  attr_keep(r, a);
  int res = SEND(r, fuse_reply_attr(r->req, &st, r->s->attr_timeout));
  return reply_result(env, r, res);
}

/* cacheAttr(req, attr): before its answer, a request that changed directory attr.ino gives its
 * attributes now; GETATTRs are answered from them until anything may change them again */
static napi_value cache_attr(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct sreq *r = take_req(env, argv[0]);
  double *a;
  if (!r || get_f64(env, argv[1], &a, ATTR_LEN) < 0) return NULL;
  attr_keep(r, a);
  return undefined(env);
}

/* replyOpen(req, fh, directIo, keepCache) */
static napi_value reply_open(napi_env env, napi_callback_info info) {
  ARGS(4);
  struct sreq *r = take_req(env, argv[0]);
  if (!r) return NULL;
  struct fuse_file_info fi;
  memset(&fi, 0, sizeof(fi));
  fi.fh = (uint64_t)get_num(env, argv[1]);
  fi.direct_io = get_num(env, argv[2]) != 0;
  fi.keep_cache = get_num(env, argv[3]) != 0;
  int res = SEND(r, fuse_reply_open(r->req, &fi));
  return reply_result(env, r, res);
}

/* replyWrite(req, count) */
static napi_value reply_write(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct sreq *r = take_req(env, argv[0]);
  if (!r) return NULL;
  int res = SEND(r, fuse_reply_write(r->req, (size_t)get_num(env, argv[1])));
  return reply_result(env, r, res);
}

/* replyBuf(req, buffer): read data, readlink target, xattr value or list (kernel copies it now) */
static napi_value reply_buf(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct sreq *r = take_req(env, argv[0]);
  char *data;
  size_t len;
  if (!r || get_buf(env, argv[1], &data, &len) < 0) return NULL;
  int res;
  if (r->op == OP_READLINK) {
    char *t = malloc(len + 1);
    if (!t) {
      res = SEND(r, fuse_reply_err(r->req, ENOMEM));
    } else {
      memcpy(t, data, len);
      t[len] = 0;
      res = SEND(r, fuse_reply_readlink(r->req, t));
      free(t);
    }
  } else {
    res = SEND(r, fuse_reply_buf(r->req, data, len));
  }
  return reply_result(env, r, res);
}

/* replyXattrSize(req, size) */
static napi_value reply_xattr_size(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct sreq *r = take_req(env, argv[0]);
  if (!r) return NULL;
  int res = SEND(r, fuse_reply_xattr(r->req, (size_t)get_num(env, argv[1])));
  return reply_result(env, r, res);
}

/* replyStatfs(req, [bsize, frsize, blocks, bfree, bavail, files, ffree, namemax]) */
static napi_value reply_statfs(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct sreq *r = take_req(env, argv[0]);
  double *a;
  if (!r || get_f64(env, argv[1], &a, 8) < 0) return NULL;
  struct statvfs sv;
  memset(&sv, 0, sizeof(sv));
  sv.f_bsize = (unsigned long)a[0];
  sv.f_frsize = (unsigned long)a[1];
  sv.f_blocks = (fsblkcnt_t)a[2];
  sv.f_bfree = (fsblkcnt_t)a[3];
  sv.f_bavail = (fsblkcnt_t)a[4];
  sv.f_files = (fsfilcnt_t)a[5];
  sv.f_ffree = (fsfilcnt_t)a[6];
  sv.f_favail = (fsfilcnt_t)a[6];
  sv.f_namemax = (unsigned long)a[7];
  int res = SEND(r, fuse_reply_statfs(r->req, &sv));
  return reply_result(env, r, res);
}

/*
 * replyDirents(req, names: Buffer[], attrs: Float64Array (ATTR_LEN per entry; for plain
 * readdir only ino and mode are used), offs: Float64Array, plus) -> entries that fitted.
 * For readdirplus each fitted entry other than "." and ".." counts one kernel lookup.
 */
static napi_value reply_dirents(napi_env env, napi_callback_info info) {
  ARGS(5);
  struct sreq *r = take_req(env, argv[0]);
  if (!r) return NULL;
  uint32_t count;
  CALL(env, napi_get_array_length(env, argv[1], &count));
  double *attrs, *offs;
  if (get_f64(env, argv[2], &attrs, (size_t)count * ATTR_LEN) < 0) return NULL;
  if (get_f64(env, argv[3], &offs, count) < 0) return NULL;
  int plus = get_num(env, argv[4]) != 0;
  size_t size = (size_t)r->n[2];
  char *buf = malloc(size ? size : 1);
  if (!buf) return reply_result(env, r, SEND(r, fuse_reply_err(r->req, ENOMEM)));
  size_t used = 0;
  uint32_t fitted = 0;
  char name[256 + 1];
  for (uint32_t i = 0; i < count; i++) {
    napi_value nv;
    CALL(env, napi_get_element(env, argv[1], i, &nv));
    char *nb;
    size_t nl;
    if (get_buf(env, nv, &nb, &nl) < 0) {
      free(buf);
      return NULL;
    }
    if (nl > 256) nl = 256;
    memcpy(name, nb, nl);
    name[nl] = 0;
    size_t need;
    if (plus) {
      struct fuse_entry_param e;
      fill_entry(r->s, attrs + (size_t)i * ATTR_LEN, &e);
      need = fuse_add_direntry_plus(r->req, buf + used, size - used, name, &e, (off_t)offs[i]);
    } else {
      struct stat st;
      memset(&st, 0, sizeof(st));
      st.st_ino = (ino_t)attrs[(size_t)i * ATTR_LEN];
      st.st_mode = (mode_t)attrs[(size_t)i * ATTR_LEN + 1];
      need = fuse_add_direntry(r->req, buf + used, size - used, name, &st, (off_t)offs[i]);
    }
    if (need > size - used) break;
    used += need;
    fitted++;
  }
  SEND(r, fuse_reply_buf(r->req, buf, used));
  free(buf);
  answered(r);
  return num(env, fitted);
}

/* ---- session lifecycle ---------------------------------------------------------------- */

static void session_free(struct session *s) {
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->notify_cond);
  free(s->own);
  free(s->mountpoint);
  free(s);
}

/* lend the write buffers (an array of equal Buffers of at least MAX_WRITE bytes) */
static int lend_wbufs(napi_env env, struct session *s, napi_value arr) {
  uint32_t n = 0;
  bool is_array = false;
  if (napi_is_array(env, arr, &is_array) != napi_ok || !is_array || napi_get_array_length(env, arr, &n) != napi_ok)
    return -1;
  if (n > WBUF_SLOTS) n = WBUF_SLOTS;
  for (uint32_t i = 0; i < n; i++) {
    napi_value b;
    void *data;
    size_t len;
    if (napi_get_element(env, arr, i, &b) != napi_ok || napi_get_buffer_info(env, b, &data, &len) != napi_ok ||
        len < MAX_WRITE || (s->nwbuf && len != s->wbuf_size))
      return -1;
    if (napi_create_reference(env, b, 1, &s->wbuf_ref[i]) != napi_ok) return -1;
    s->wbuf[i] = data;
    s->wbuf_size = len;
    s->nwbuf = (int)i + 1;
    s->wbuf_free |= 1u << i;
  }
  return 0;
}

static void drop_wbufs(napi_env env, struct session *s) {
  for (int i = 0; i < s->nwbuf; i++) napi_delete_reference(env, s->wbuf_ref[i]);
  s->nwbuf = 0;
  s->wbuf_size = 0;
  s->wbuf_free = 0;
}

/* mount(mountpoint, options, dispatch, attrTimeoutS, entryTimeoutS, debug, writeBuffers, spinUs) -> session */
static napi_value js_mount(napi_env env, napi_callback_info info) {
  ARGS(8);
  size_t len;
  char mnt[4096], opts[4096];
  CALL(env, napi_get_value_string_utf8(env, argv[0], mnt, sizeof(mnt), &len));
  if (len >= sizeof(mnt) - 1) return throw_err(env, "ENAMETOOLONG", "mountpoint path too long");
  CALL(env, napi_get_value_string_utf8(env, argv[1], opts, sizeof(opts), &len));
  if (len >= sizeof(opts) - 1) return throw_err(env, "EINVAL", "mount option string too long");
  bool debug = false;
  napi_get_value_bool(env, argv[5], &debug);

  struct session *s = calloc(1, sizeof(*s));
  if (!s) return throw_err(env, "ENOMEM", "out of memory");
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->notify_cond, NULL);
  s->mountpoint = strdup(mnt);
  s->attr_timeout = get_num(env, argv[3]);
  s->entry_timeout = get_num(env, argv[4]);
  s->rslot = -1;
  s->rbuf_size = READ_BUF_SIZE;
  s->own = malloc(s->rbuf_size);
  if (!s->own) {
    session_free(s);
    return throw_err(env, "ENOMEM", "out of memory");
  }
  double spin_us = get_num(env, argv[7]);
  s->spin_ns = spin_us > 0 ? (uint64_t)(spin_us * 1000.0) : 0;
  if (lend_wbufs(env, s, argv[6]) < 0) {
    drop_wbufs(env, s);
    session_free(s);
    return throw_err(env, "EINVAL", "write buffers: an array of equal Buffers of at least 1 MiB");
  }

  char *fargv[5];
  int fargc = 0;
  fargv[fargc++] = "scoutfs";
  fargv[fargc++] = "-o";
  fargv[fargc++] = opts;
  if (debug) fargv[fargc++] = "-d";
  fargv[fargc] = NULL;
  struct fuse_args args = FUSE_ARGS_INIT(fargc, fargv);
  s->se = fuse_session_new(&args, &ll_ops, sizeof(ll_ops), s);
  if (!s->se) {
    drop_wbufs(env, s);
    session_free(s);
    return throw_err(env, "EINVAL", "fuse_session_new failed (bad mount options?)");
  }
  napi_value name;
  napi_create_string_utf8(env, "scoutfs-fuse3", NAPI_AUTO_LENGTH, &name);
  uv_loop_t *loop = NULL;
  s->env = env;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || napi_create_reference(env, argv[2], 1, &s->dispatch) != napi_ok ||
      napi_async_init(env, NULL, name, &s->actx) != napi_ok) {
    fuse_session_destroy(s->se);
    drop_wbufs(env, s);
    session_free(s);
    return throw_err(env, "EIO", "cannot set up the dispatch function");
  }
  if (fuse_session_mount(s->se, mnt) != 0) {
    napi_async_destroy(env, s->actx);
    napi_delete_reference(env, s->dispatch);
    fuse_session_destroy(s->se);
    drop_wbufs(env, s);
    session_free(s);
    return throw_err(env, "EIO", "fuse_session_mount failed (see stderr; is /dev/fuse there?)");
  }
  int fd = fuse_session_fd(s->se);
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0 && fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0 && uv_poll_init(loop, &s->poll, fd) == 0) {
    s->poll.data = s;
    s->polling = uv_poll_start(&s->poll, UV_READABLE, on_readable) == 0;
    if (!s->polling) uv_close((uv_handle_t *)&s->poll, NULL);
  }
  if (s->polling && uv_idle_init(loop, &s->idle) == 0) {
    s->idle.data = s;
    s->idle_open = 1;
  }
  if (s->polling && pthread_create(&s->notifier, NULL, notify_thread, s) == 0) s->notifier_running = 1;
  if (!s->polling || !s->notifier_running) {
    stop_polling(s);
    fuse_session_exit(s->se);
    fuse_session_unmount(s->se);
    return throw_err(env, "EAGAIN", "cannot poll /dev/fuse or start the notify thread");
  }
  napi_value ext;
  CALL(env, napi_create_external(env, s, NULL, NULL, &ext));
  return ext;
}

/* stop(session): no more reading, unmount (lazily), end the notify thread; idempotent */
static napi_value js_stop(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct session *s = get_session(env, argv[0]);
  if (!s) return NULL;
  if (s->stopped) return undefined(env);
  s->stopped = 1;
  stop_polling(s);
  fuse_session_exit(s->se);
  fuse_session_unmount(s->se);
  pthread_mutex_lock(&s->lock);
  s->notify_stop = 1;
  pthread_cond_signal(&s->notify_cond);
  pthread_mutex_unlock(&s->lock);
  if (s->notifier_running) pthread_join(s->notifier, NULL);
  s->notifier_running = 0;
  while (s->nhead) {
    struct notify *n = s->nhead;
    s->nhead = n->next;
    free(n->name);
    free(n);
  }
  return undefined(env);
}

/* pending(session): requests handed to JavaScript (or queued) and not answered yet */
static napi_value js_pending(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct session *s = get_session(env, argv[0]);
  if (!s) return NULL;
  pthread_mutex_lock(&s->lock);
  int64_t p = s->pending;
  pthread_mutex_unlock(&s->lock);
  return num(env, (double)p);
}

/* destroy(session): after stop(), once nothing is pending or the wait for that gave up:
 * close /dev/fuse; later replies go nowhere (SEND) */
static napi_value js_destroy(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct session *s = get_session(env, argv[0]);
  if (!s) return NULL;
  if (!s->stopped) return throw_err(env, "EBUSY", "stop the session before destroying it");
  if (s->destroyed) return undefined(env);
  s->destroyed = 1;
  napi_async_destroy(env, s->actx);
  napi_delete_reference(env, s->dispatch);
  fuse_session_destroy(s->se);
  free(s->own);
  s->own = s->buf.mem = NULL;
  drop_wbufs(env, s);
  /* the session struct is kept (a few hundred bytes per mount): the JavaScript session
   * object may still be passed to stop/pending/destroy, which then do nothing */
  return undefined(env);
}

static napi_value queue_notify(napi_env env, struct session *s, uint64_t ino, const char *name, size_t len) {
  if (s->stopped) return num(env, 0);
  struct notify *n = calloc(1, sizeof(*n));
  if (!n) return throw_err(env, "ENOMEM", "out of memory");
  n->ino = ino;
  /* an inode invalidated (another mount may change it) forgets it has no capability, and its
   * attributes */
  if (!name) {
    nocaps_forget(s, ino);
    acache_forget(s, ino);
  }
  if (name) {
    n->name = malloc(len + 1);
    if (!n->name) {
      free(n);
      return throw_err(env, "ENOMEM", "out of memory");
    }
    memcpy(n->name, name, len);
    n->name[len] = 0;
    n->namelen = len;
  }
  pthread_mutex_lock(&s->lock);
  if (s->ntail) s->ntail->next = n;
  else s->nhead = n;
  s->ntail = n;
  pthread_cond_signal(&s->notify_cond);
  pthread_mutex_unlock(&s->lock);
  return num(env, 1);
}

/* notifyInvalInode(session, ino): drop the kernel's attributes and page cache of ino */
static napi_value js_notify_inode(napi_env env, napi_callback_info info) {
  ARGS(2);
  struct session *s = get_session(env, argv[0]);
  if (!s) return NULL;
  return queue_notify(env, s, (uint64_t)get_num(env, argv[1]), NULL, 0);
}

/* notifyInvalEntry(session, parent, name: Buffer): drop the kernel's dentry parent/name */
static napi_value js_notify_entry(napi_env env, napi_callback_info info) {
  ARGS(3);
  struct session *s = get_session(env, argv[0]);
  char *name;
  size_t len;
  if (!s || get_buf(env, argv[2], &name, &len) < 0) return NULL;
  return queue_notify(env, s, (uint64_t)get_num(env, argv[1]), name, len);
}

/* notifyCounters(session) -> [notifies sent, notifies failed, security.capability answered here,
 * requests that found the event loop asleep, directory GETATTRs answered here] */
static napi_value js_notify_counters(napi_env env, napi_callback_info info) {
  ARGS(1);
  struct session *s = get_session(env, argv[0]);
  if (!s) return NULL;
  pthread_mutex_lock(&s->lock);
  double sent = (double)s->notifies_sent, failed = (double)s->notifies_failed, hits = (double)s->nocaps_hits;
  pthread_mutex_unlock(&s->lock);
  napi_value arr;
  napi_create_array_with_length(env, 5, &arr);
  napi_set_element(env, arr, 0, num(env, sent));
  napi_set_element(env, arr, 1, num(env, failed));
  napi_set_element(env, arr, 2, num(env, hits));
  napi_set_element(env, arr, 3, num(env, (double)s->spin_wakes));
  napi_set_element(env, arr, 4, num(env, (double)s->acache_hits));
  return arr;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
    {"mount", NULL, js_mount, NULL, NULL, NULL, napi_default, NULL},
    {"stop", NULL, js_stop, NULL, NULL, NULL, napi_default, NULL},
    {"pending", NULL, js_pending, NULL, NULL, NULL, napi_default, NULL},
    {"destroy", NULL, js_destroy, NULL, NULL, NULL, napi_default, NULL},
    {"notifyInvalInode", NULL, js_notify_inode, NULL, NULL, NULL, napi_default, NULL},
    {"notifyInvalEntry", NULL, js_notify_entry, NULL, NULL, NULL, napi_default, NULL},
    {"notifyCounters", NULL, js_notify_counters, NULL, NULL, NULL, napi_default, NULL},
    {"replyErr", NULL, reply_err, NULL, NULL, NULL, napi_default, NULL},
    {"replyEntry", NULL, reply_entry, NULL, NULL, NULL, napi_default, NULL},
    {"replyCreate", NULL, reply_create, NULL, NULL, NULL, napi_default, NULL},
    {"replyAttr", NULL, reply_attr, NULL, NULL, NULL, napi_default, NULL},
    {"cacheAttr", NULL, cache_attr, NULL, NULL, NULL, napi_default, NULL},
    {"replyOpen", NULL, reply_open, NULL, NULL, NULL, napi_default, NULL},
    {"replyWrite", NULL, reply_write, NULL, NULL, NULL, napi_default, NULL},
    {"replyBuf", NULL, reply_buf, NULL, NULL, NULL, napi_default, NULL},
    {"replyXattrSize", NULL, reply_xattr_size, NULL, NULL, NULL, napi_default, NULL},
    {"replyStatfs", NULL, reply_statfs, NULL, NULL, NULL, napi_default, NULL},
    {"replyDirents", NULL, reply_dirents, NULL, NULL, NULL, napi_default, NULL},
  };
  if (napi_define_properties(env, exports, sizeof(props) / sizeof(props[0]), props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
