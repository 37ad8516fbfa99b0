/* h2front: a cleartext HTTP/2 gRPC server for one unary method, in C on libnghttp2, that hands
 * whole requests to Python in batches. A bench prototype (issue 21), not a pdp transport.
 *
 *   import h2front
 *   h2front.serve(listen_fd, "/pkg.Service/Method", handle, max_message=4 << 20, max_streams=100)
 *
 * serve() runs in the calling thread with the GIL released: one epoll loop accepts on the
 * (listening, non-blocking) socket, feeds each connection's bytes to its nghttp2 server
 * session and collects the requests that completed. Then, once per loop iteration, it takes
 * the GIL and calls handle(list[bytes]) -> list with the message of every request completed in
 * that iteration (no gRPC frame header), releases the GIL, and answers each call: an item that
 * is bytes is sent as the reply (headers, one framed message, trailers with grpc-status 0); a
 * tuple (code, message) is sent as that gRPC status; anything else, a wrong-length list or an
 * exception from handle is INTERNAL. Calls the server refuses before Python sees them: another
 * path or a non-POST (UNIMPLEMENTED), a content-type not application/grpc (UNIMPLEMENTED), a
 * compressed message or grpc-encoding (UNIMPLEMENTED), anything but exactly one message
 * (INTERNAL), a message over max_message bytes or a server over MAX_BUFFERED bytes of requests
 * (RESOURCE_EXHAUSTED). Streams per connection are capped by SETTINGS_MAX_CONCURRENT_STREAMS
 * (nghttp2 refuses more), header bytes per request and connections per server by the limits
 * below. Returns only when a Python signal handler raises (the exception propagates).
 *
 * Not here (what a transport needs): TLS, deadlines (grpc-timeout is ignored), idle and
 * handshake timeouts, keepalive, drain/GOAWAY on shutdown, metadata to the handler, health and
 * reflection services, more than one method.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 1024            /* open connections; more are closed on accept */
#define MAX_HEADER_BYTES 16384    /* per request, as HPACK decoded (+32 per field, RFC 7541) */
#define MAX_BUFFERED (64u << 20)  /* request bytes held at once, all connections together */
#define READ_CHUNK 65536
#define OUT_CHUNK 65536           /* bytes of frames gathered for one send() */

enum { OK = 0, INTERNAL = 13, UNIMPLEMENTED = 12, RESOURCE_EXHAUSTED = 8 };

typedef struct conn conn_t;

typedef struct stream {
    conn_t *conn;
    struct stream *prev, *next; /* the connection's streams, freed with it */
    int32_t id;
    int post, path_ok, ctype_ok, encoded, pending, closed;
    size_t header_bytes;
    uint8_t *in;
    size_t in_len, in_cap;
    int status;          /* -1: for the handler; else the gRPC status to answer */
    char *message;       /* grpc-message of an error status */
    uint8_t *out;        /* the framed reply */
    size_t out_len, out_sent;
} stream_t;

struct conn {
    int fd, dead, dirty, want_out;
    nghttp2_session *session;
    uint8_t *obuf; /* frames to send: one send() per pass, not one per frame */
    size_t olen, ooff, ocap;
    stream_t *streams;
};

/* One server per process (serve() refuses a second at once): plain globals. */
static const char *g_path;
static size_t g_path_len, g_max_message, g_buffered;
static int g_epoll = -1, g_conns;
static conn_t *g_dirty[MAX_CONNS];
static int g_ndirty;
static stream_t **g_pending;
static size_t g_npending, g_pending_cap;
static nghttp2_session_callbacks *g_cbs;
static nghttp2_option *g_opt;
static nghttp2_settings_entry g_settings[3];

static void set_status(stream_t *st, int code, const char *why) {
    if (st->status > 0) return; /* the first reason stays */
    st->status = code;
    free(st->message);
    st->message = strdup(why);
}

static void drop_input(stream_t *st) {
    g_buffered -= st->in_cap;
    free(st->in);
    st->in = NULL;
    st->in_len = st->in_cap = 0;
}

static void stream_free(stream_t *st) {
    if (st->conn) {
        if (st->prev) st->prev->next = st->next;
        else st->conn->streams = st->next;
        if (st->next) st->next->prev = st->prev;
    }
    drop_input(st);
    free(st->out);
    free(st->message);
    free(st);
}

static void mark_dirty(conn_t *c) {
    if (!c->dirty) {
        c->dirty = 1;
        g_dirty[g_ndirty++] = c;
    }
}

/* ---- nghttp2 callbacks --------------------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *u) {
    conn_t *c = u;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    stream_t *st = calloc(1, sizeof *st);
    if (!st) return NGHTTP2_ERR_CALLBACK_FAILURE;
    st->conn = c;
    st->id = f->hd.stream_id;
    st->status = -1;
    st->next = c->streams;
    if (c->streams) c->streams->prev = st;
    c->streams = st;
    nghttp2_session_set_stream_user_data(s, st->id, st);
    return 0;
}

static int is(const uint8_t *v, size_t n, const char *want) {
    return n == strlen(want) && memcmp(v, want, n) == 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *u) {
    (void)flags; (void)u;
    stream_t *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st) return 0;
    st->header_bytes += namelen + valuelen + 32;
    if (st->header_bytes > MAX_HEADER_BYTES) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0; /* trailers: counted, not read */
    if (is(name, namelen, ":method")) st->post = is(value, valuelen, "POST");
    else if (is(name, namelen, ":path"))
        st->path_ok = valuelen == g_path_len && memcmp(value, g_path, valuelen) == 0;
    else if (is(name, namelen, "content-type"))
        st->ctype_ok = is(value, valuelen, "application/grpc") ||
                       (valuelen > 16 && memcmp(value, "application/grpc", 16) == 0 &&
                        (value[16] == '+' || value[16] == ';'));
    else if (is(name, namelen, "grpc-encoding"))
        st->encoded = !is(value, valuelen, "identity");
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                   size_t len, void *u) {
    (void)flags; (void)u;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st || st->status >= 0) return 0; /* refused already: the rest is discarded */
    if (st->in_len + len > 5 + g_max_message) {
        set_status(st, RESOURCE_EXHAUSTED, "request message larger than the server accepts");
        drop_input(st);
        return 0;
    }
    if (st->in_len + len > st->in_cap) {
        size_t cap = st->in_cap ? st->in_cap : 256;
        while (cap < st->in_len + len) cap *= 2;
        if (cap > 5 + g_max_message) cap = 5 + g_max_message;
        uint8_t *in = g_buffered + cap - st->in_cap <= MAX_BUFFERED ? realloc(st->in, cap) : NULL;
        if (!in) {
            set_status(st, RESOURCE_EXHAUSTED, "server busy: too many request bytes held");
            drop_input(st);
            return 0;
        }
        g_buffered += cap - st->in_cap;
        st->in = in;
        st->in_cap = cap;
    }
    memcpy(st->in + st->in_len, data, len);
    st->in_len += len;
    return 0;
}

/* The request is complete: judge its framing, then queue it for this iteration's batch. */
static void complete(stream_t *st) {
    if (!st->post || !st->path_ok) set_status(st, UNIMPLEMENTED, "unknown method");
    else if (!st->ctype_ok) set_status(st, UNIMPLEMENTED, "content-type must be application/grpc");
    else if (st->encoded) set_status(st, UNIMPLEMENTED, "compressed requests are not accepted");
    else if (st->status < 0) {
        size_t n = st->in_len < 5 ? 0
                   : (size_t)st->in[1] << 24 | (size_t)st->in[2] << 16 |
                         (size_t)st->in[3] << 8 | st->in[4];
        if (st->in_len >= 5 && st->in[0] != 0)
            set_status(st, UNIMPLEMENTED, "compressed requests are not accepted");
        else if (st->in_len < 5 || st->in_len != 5 + n)
            set_status(st, INTERNAL, "expected exactly one request message");
    }
    if (g_npending == g_pending_cap) {
        size_t cap = g_pending_cap ? g_pending_cap * 2 : 256;
        stream_t **p = realloc(g_pending, cap * sizeof *p);
        if (!p) { /* left unanswered: the client's deadline ends it */
            set_status(st, INTERNAL, "out of memory");
            return;
        }
        g_pending = p;
        g_pending_cap = cap;
    }
    st->pending = 1;
    g_pending[g_npending++] = st;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *u) {
    (void)u;
    if ((f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) ||
        !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    stream_t *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st && !st->pending) complete(st);
    return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *u) {
    (void)error_code; (void)u;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    if (st->pending) st->closed = 1; /* reset by the client: freed after the batch */
    else stream_free(st);
    return 0;
}

#define NV(n, v, vlen) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE}

static ssize_t read_reply(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                          uint32_t *flags, nghttp2_data_source *src, void *u) {
    (void)src; (void)u;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    size_t n = st->out_len - st->out_sent;
    if (n > length) n = length;
    memcpy(buf, st->out + st->out_sent, n);
    st->out_sent += n;
    if (st->out_sent == st->out_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        nghttp2_nv trailers[] = {NV("grpc-status", "0", 1)};
        if (nghttp2_submit_trailer(s, id, trailers, 1) != 0)
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    return (ssize_t)n;
}

/* grpc-message is percent-encoded: bytes outside printable ASCII, and '%'. */
static size_t percent_encode(const char *in, char *out, size_t cap) {
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 3 < cap; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') out[o++] = (char)*p;
        else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = 0;
    return o;
}

/* Submit the stream's answer: a reply with trailers, or a trailers-only error. */
static void answer(stream_t *st) {
    conn_t *c = st->conn;
    int rv;
    if (st->status <= 0) {
        nghttp2_nv hdrs[] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16)};
        nghttp2_data_provider prd = {.read_callback = read_reply};
        rv = nghttp2_submit_response(c->session, st->id, hdrs, 2, &prd);
    } else {
        char code[8], msg[1024];
        int clen = snprintf(code, sizeof code, "%d", st->status);
        size_t mlen = percent_encode(st->message ? st->message : "", msg, sizeof msg);
        nghttp2_nv hdrs[] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16),
                             NV("grpc-status", code, (size_t)clen), NV("grpc-message", msg, mlen)};
        rv = nghttp2_submit_response(c->session, st->id, hdrs, 4, NULL);
    }
    if (rv != 0) nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id,
                                           NGHTTP2_INTERNAL_ERROR);
    mark_dirty(c);
}

/* ---- the batch: the one place that holds the GIL ---------------------------------------- */

static int set_reply(stream_t *st, PyObject *item) {
    if (PyBytes_Check(item)) {
        Py_ssize_t n = PyBytes_GET_SIZE(item);
        st->out = malloc(5 + (size_t)n);
        if (!st->out) return set_status(st, INTERNAL, "out of memory"), 0;
        st->out[0] = 0;
        st->out[1] = (uint8_t)(n >> 24); st->out[2] = (uint8_t)(n >> 16);
        st->out[3] = (uint8_t)(n >> 8);  st->out[4] = (uint8_t)n;
        memcpy(st->out + 5, PyBytes_AS_STRING(item), (size_t)n);
        st->out_len = 5 + (size_t)n;
        st->status = OK;
        return 0;
    }
    long code = -1;
    const char *msg = NULL;
    if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2) {
        code = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        msg = PyUnicode_AsUTF8(PyTuple_GET_ITEM(item, 1));
        PyErr_Clear();
    }
    if (code >= 1 && code <= 16 && msg) set_status(st, (int)code, msg);
    else set_status(st, INTERNAL, "the handler returned neither bytes nor (code, message)");
    return 0;
}

/* Calls handle with the batch's requests (GIL held); -1 when a signal handler raised. */
static int call_handler(PyObject *handle) {
    if (PyErr_CheckSignals() < 0) return -1;
    Py_ssize_t k = 0;
    for (size_t i = 0; i < g_npending; i++) k += g_pending[i]->status < 0 && !g_pending[i]->closed;
    if (k == 0) return 0;
    PyObject *list = PyList_New(k), *res = NULL;
    if (list) {
        Py_ssize_t j = 0;
        for (size_t i = 0; i < g_npending && list; i++) {
            stream_t *st = g_pending[i];
            if (st->status >= 0 || st->closed) continue;
            PyObject *b = PyBytes_FromStringAndSize((char *)st->in + 5, (Py_ssize_t)st->in_len - 5);
            if (!b) Py_CLEAR(list);
            else PyList_SET_ITEM(list, j++, b);
        }
    }
    if (list) res = PyObject_CallOneArg(handle, list);
    Py_XDECREF(list);
    int ok = res && PyList_Check(res) && PyList_GET_SIZE(res) == k;
    if (!res && !PyErr_ExceptionMatches(PyExc_Exception)) return -1; /* KeyboardInterrupt... */
    if (!res) PyErr_Print(); /* a bench server: say why on stderr, answer INTERNAL */
    Py_ssize_t j = 0;
    for (size_t i = 0; i < g_npending; i++) {
        stream_t *st = g_pending[i];
        if (st->status >= 0 || st->closed) continue;
        if (ok) set_reply(st, PyList_GET_ITEM(res, j++));
        else set_status(st, INTERNAL, "the handler failed");
    }
    Py_XDECREF(res);
    return 0;
}

/* ---- connections and the loop ------------------------------------------------------------ */

static void conn_free(conn_t *c) {
    for (stream_t *st = c->streams, *next; st; st = next) {
        next = st->next;
        st->conn = NULL;
        stream_free(st);
    }
    nghttp2_session_del(c->session);
    close(c->fd); /* also leaves the epoll set */
    free(c->obuf);
    free(c);
    g_conns--;
}

static void accept_all(int lfd) {
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or a transient error: the next event retries */
        conn_t *c = g_conns < MAX_CONNS ? calloc(1, sizeof *c) : NULL;
        if (!c) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (nghttp2_session_server_new2(&c->session, g_cbs, c, g_opt) != 0) {
            close(fd);
            free(c);
            continue;
        }
        g_conns++;
        if (epoll_ctl(g_epoll, EPOLL_CTL_ADD, fd, &ev) < 0 ||
            nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, g_settings, 3) != 0)
            c->dead = 1;
        mark_dirty(c);
    }
}

static void read_conn(conn_t *c) {
    static uint8_t buf[READ_CHUNK];
    for (int i = 0; i < 4 && !c->dead; i++) { /* then others' turn; epoll is level-triggered */
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (n <= 0 || nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0) c->dead = 1;
        if (n < (ssize_t)sizeof buf) break;
    }
    mark_dirty(c);
}

/* Sends what nghttp2 has queued, gathered into one buffer per send() (frame by frame, a reply
 * went out as three TCP segments, each waking the client). 0, or -1 when the connection is
 * gone; leaves unsent bytes in obuf when the socket is full. */
static int conn_write(conn_t *c) {
    for (;;) {
        if (c->ooff < c->olen) {
            ssize_t n = send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
            if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
            if ((c->ooff += (size_t)n) < c->olen) return 0;
        }
        c->olen = c->ooff = 0;
        while (c->olen < OUT_CHUNK) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->session, &data);
            if (n < 0) return -1;
            if (n == 0) break;
            if (c->olen + (size_t)n > c->ocap) {
                size_t cap = c->ocap * 2 > c->olen + (size_t)n ? c->ocap * 2 : c->olen + (size_t)n;
                uint8_t *grown = realloc(c->obuf, cap);
                if (!grown) return -1;
                c->obuf = grown;
                c->ocap = cap;
            }
            memcpy(c->obuf + c->olen, data, (size_t)n);
            c->olen += (size_t)n;
        }
        if (c->olen == 0) return 0;
    }
}

static void flush_dirty(void) {
    for (int i = 0; i < g_ndirty; i++) {
        conn_t *c = g_dirty[i];
        c->dirty = 0;
        if (!c->dead && conn_write(c) != 0) c->dead = 1;
        int wr = !c->dead && c->ooff < c->olen;
        if (c->dead || (!wr && !nghttp2_session_want_read(c->session) &&
                        !nghttp2_session_want_write(c->session))) {
            conn_free(c);
            continue;
        }
        if (wr != c->want_out) {
            struct epoll_event ev = {.events = EPOLLIN | (wr ? EPOLLOUT : 0), .data.ptr = c};
            epoll_ctl(g_epoll, EPOLL_CTL_MOD, c->fd, &ev);
            c->want_out = wr;
        }
    }
    g_ndirty = 0;
}

static PyObject *serve(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *names[] = {"listen_fd", "path", "handle", "max_message", "max_streams", NULL};
    int lfd, max_streams = 100;
    Py_ssize_t max_message = 4 << 20;
    const char *path;
    PyObject *handle;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "isO|ni", names, &lfd, &path, &handle,
                                     &max_message, &max_streams))
        return NULL;
    if (g_epoll >= 0) return PyErr_Format(PyExc_RuntimeError, "a server is already running");
    if (!PyCallable_Check(handle) || max_message < 0 || max_streams < 1)
        return PyErr_Format(PyExc_ValueError, "handle must be callable, the limits positive");
    g_path = path;
    g_path_len = strlen(path);
    g_max_message = (size_t)max_message;
    g_settings[0] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                             (uint32_t)max_streams};
    g_settings[1] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                                             MAX_HEADER_BYTES};
    g_settings[2] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20};
    nghttp2_session_callbacks_new(&g_cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(g_cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(g_cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_cbs, on_data);
    nghttp2_session_callbacks_set_on_frame_recv_callback(g_cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(g_cbs, on_close);
    nghttp2_option_new(&g_opt);
    nghttp2_option_set_max_settings(g_opt, 32); /* SETTINGS entries per frame */
    g_epoll = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (g_epoll < 0 || epoll_ctl(g_epoll, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        if (g_epoll >= 0) close(g_epoll);
        g_epoll = -1;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    int failed = 0;
    struct epoll_event evs[64];
    PyThreadState *ts = PyEval_SaveThread();
    while (!failed) {
        int n = epoll_wait(g_epoll, evs, 64, 200);
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (!c) accept_all(lfd);
            else if (!c->dead && evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_conn(c);
            else mark_dirty(c); /* writable again */
        }
        if (g_npending || n == 0) { /* idle: still look at signals every 200 ms */
            PyEval_RestoreThread(ts);
            failed = call_handler(handle) < 0;
            ts = PyEval_SaveThread();
        }
        for (size_t i = 0; i < g_npending; i++) {
            stream_t *st = g_pending[i];
            st->pending = 0;
            drop_input(st);
            if (st->closed) stream_free(st);
            else if (!st->conn->dead && !failed) answer(st);
        }
        g_npending = 0;
        flush_dirty();
    }
    PyEval_RestoreThread(ts);
    /* Stopped by an exception from a signal handler (or a BaseException from handle): it
     * propagates; open connections are left to the process's exit (a bench server). */
    close(g_epoll);
    g_epoll = -1;
    nghttp2_option_del(g_opt);
    nghttp2_session_callbacks_del(g_cbs);
    return NULL;
}

static PyMethodDef methods[] = {
    {"serve", (PyCFunction)(void (*)(void))serve, METH_VARARGS | METH_KEYWORDS,
     "serve(listen_fd, path, handle, max_message=4 MiB, max_streams=100): run until a signal "
     "handler raises; handle(list[bytes]) -> list[bytes | (code, message)]"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "h2front", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit_h2front(void) { return PyModule_Create(&module); }
