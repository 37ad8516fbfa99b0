/* _h2_stream.c: the native transport's streaming calls and compressed messages. Included by
 * _h2.c (it shares that file's statics), kept apart so the unary path stays as it was.
 *
 * Streaming calls (grpc.health.v1.Health/Watch, server reflection): the paths given to
 * serve_streams() before start(). Unlike a unary call, which reaches Python whole, a
 * streaming call is a conversation between the I/O thread and Python's stream pump
 * (pdp.server.native.streams), through two queues:
 *
 *   - events, I/O thread -> Python (stream_take(), GIL released while it waits): the call
 *     opened (its path, deadline, peer, metadata), a message arrived (decompressed, without
 *     its prefix), the client half-closed, the stream is gone (reset, connection closed,
 *     a bound crossed). Each call is named by an id (slot | generation << 16) that Python
 *     gives back.
 *   - ops, Python -> I/O thread (stream_send(), stream_finish(); an eventfd wake-up): a
 *     message to send, or the trailers that end the call.
 *
 * Bounds: calls open at once (max_open: more are RESOURCE_EXHAUSTED at open), the bytes of
 * one message (max_message, after decompression too), inbound bytes waiting for Python (in
 * the server's request budget g_budget), and outbound bytes a client has not read (out_cap
 * per call: past it the stream is reset and the call gone, so a client that never reads
 * cannot make the server buffer without bound; flow control keeps nghttp2's own share small).
 */
#include <zlib.h>

#define MAX_SCALLS 4096
#define MAX_EVENTS 512 /* handed to Python per stream_take() */

enum { EV_OPEN = 1, EV_MSG = 2, EV_HALF = 3, EV_GONE = 4, EV_CANCEL = 5 };
enum { OP_SEND = 1, OP_FINISH = 2 };

typedef struct omsg {
    struct omsg *next;
    size_t len, off;
    uint8_t data[]; /* framed: the 5-byte prefix, then the message */
} omsg_t;

/* One open streaming call: the I/O thread's only. */
typedef struct scall {
    stream_t *st; /* NULL once the stream is gone */
    uint32_t id;
    int method;          /* index in g_spaths */
    int half, finished, answered; /* client half-closed; trailers queued; headers sent */
    int dead;            /* gone: told to Python, waiting for nothing */
    uint8_t *in;         /* the message being received, with its prefix */
    size_t in_len, in_cap;
    omsg_t *out_head, *out_tail;
    size_t out_bytes;
    int status;
    char *message; /* percent-encoded, for the trailers */
} scall_t;

typedef struct sevent {
    struct sevent *next;
    uint32_t id;
    unsigned long long seq; /* EV_CANCEL: the unary call's */
    int kind, method;
    double deadline;
    char peer[PEER_LEN];
    uint8_t *data; /* a message (EV_MSG) or the metadata (EV_OPEN); budget counted */
    size_t len, cap;
    tls_auth_t *auth; /* EV_OPEN on a TLS connection: its auth context, held */
} sevent_t;

typedef struct sop {
    struct sop *next;
    uint32_t id;
    int kind, status;
    char *message;
    size_t len;
    uint8_t data[];
} sop_t;

static char g_spaths[MAX_PATHS][MAX_PATH_LEN + 1];
static int g_nspaths, g_max_scalls;
static size_t g_out_cap = 4u << 20; /* bytes queued for one streaming call's client, unread */
static scall_t *g_scalls[MAX_SCALLS]; /* the I/O thread's */
static uint16_t g_sgen[MAX_SCALLS];
static int g_nscalls;
static pthread_mutex_t g_smu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_scv = PTHREAD_COND_INITIALIZER; /* realtime clock: see stream_take */
static sevent_t *g_ev_head, *g_ev_tail;
static sop_t *g_op_head, *g_op_tail;

static const char ACCEPT_ENCODING[] = "identity, deflate, gzip"; /* as grpcio's */

/* ---- compressed messages (grpc-encoding gzip, deflate) ------------------------------------- */

/* grpc-encoding as grpcio takes it: 0 identity, 1 gzip, 2 deflate, ENC_UNKNOWN otherwise. */
static int encoding_of(const uint8_t *v, size_t n) {
    if (is(v, n, "identity")) return 0;
    if (is(v, n, "gzip")) return 1;
    if (is(v, n, "deflate")) return 2;
    return ENC_UNKNOWN;
}

/* The message `src` (n bytes, no prefix) of a call with encoding `enc` and prefix flag `flag`,
 * as grpcio reads it: *out is a new framed buffer (flag 0, the decompressed length) of *cap
 * bytes taken from the budget, or NULL when the message was not compressed. -1, or a gRPC
 * status with *why (grpcio's words) when it cannot be read. The decompressed size is bounded
 * by max_message: a decompression bomb stops there. */
static int inflate_message(const stream_t *self, int enc, uint8_t flag, const uint8_t *src,
                           size_t n, uint8_t **out, size_t *out_len, size_t *out_cap,
                           const char **why) {
    *out = NULL;
    if (enc == ENC_UNKNOWN) {
        *why = "Error parsing 'grpc-encoding' metadata";
        return INTERNAL;
    }
    /* grpcio answers OK to a flag other than 0 and 1 and hands its servicer something; a
     * malformed message is refused here instead (fail closed). */
    if (flag > 1) {
        *why = "malformed message: the flag byte is neither 0 nor 1";
        return INTERNAL;
    }
    if (flag == 0) return -1;
    if (enc == 0) {
        *why = "Compression bit set but no encoding configured";
        return INTERNAL;
    }
    if (n == 0) return -1; /* nothing compressed is an empty message, as grpcio reads it */
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, enc == 1 ? 15 + 16 : 15) != Z_OK) {
        *why = "server out of memory";
        return RESOURCE_EXHAUSTED;
    }
    size_t limit = 5 + g_max_message, cap = 5 + (n < 1024 ? 4096 : 4 * n), used = 5;
    if (cap > limit) cap = limit;
    uint8_t *buf = NULL;
    int code = -1, zr = Z_OK;
    size_t held = 0; /* bytes of buf taken from the budget */
    z.next_in = (Bytef *)src;
    z.avail_in = (uInt)n;
    for (;;) {
        if (cap > held) {
            if (!budget_claim(cap - held, self)) {
                code = RESOURCE_EXHAUSTED;
                *why = "server busy: too many request bytes held";
                break;
            }
            uint8_t *grown = realloc(buf, cap);
            if (!grown) {
                budget_give(cap - held);
                code = RESOURCE_EXHAUSTED;
                *why = "server out of memory";
                break;
            }
            buf = grown;
            held = cap;
        }
        z.next_out = buf + used;
        z.avail_out = (uInt)(cap - used);
        zr = inflate(&z, Z_NO_FLUSH);
        used = cap - z.avail_out;
        if (zr == Z_STREAM_END) break;
        if (zr == Z_OK && z.avail_out == 0) {
            if (cap == limit) {
                code = RESOURCE_EXHAUSTED;
                *why = "Decompressed message larger than max (--max-message-bytes)";
                break;
            }
            cap = cap * 2 < limit ? cap * 2 : limit;
            continue;
        }
        if (zr == Z_OK && z.avail_in == 0) zr = Z_BUF_ERROR; /* cut short */
        code = INTERNAL;
        *why = zr == Z_DATA_ERROR || zr == Z_BUF_ERROR ? "Decompression failed due to data error"
                                                       : "Decompression failed due to zlib error";
        break;
    }
    inflateEnd(&z);
    if (code >= 0) {
        budget_give(held);
        free(buf);
        return code;
    }
    size_t m = used - 5;
    buf[0] = 0;
    buf[1] = (uint8_t)(m >> 24); buf[2] = (uint8_t)(m >> 16);
    buf[3] = (uint8_t)(m >> 8);  buf[4] = (uint8_t)m;
    *out = buf;
    *out_len = used;
    *out_cap = held;
    return -1;
}

/* A complete unary request (st->in, one framed message) with its encoding applied: -1 when
 * it can be decided, else the status set on the stream. */
static int unary_decompress(stream_t *st) {
    if (st->status >= 0 || (st->encoded == 0 && (st->in_len < 5 || st->in[0] == 0))) return -1;
    if (st->in_len < 5) { /* no message: judged by complete() */
        if (st->encoded == ENC_UNKNOWN) set_status(st, INTERNAL, "Error parsing 'grpc-encoding' metadata");
        return st->status;
    }
    uint8_t *out;
    size_t len, cap;
    const char *why = NULL;
    int code = inflate_message(st, st->encoded, st->in[0], st->in + 5, st->in_len - 5, &out,
                               &len, &cap, &why);
    if (code >= 0) {
        set_status(st, code, why);
        return code;
    }
    if (out) {
        drop_input(st);
        st->in = out;
        st->in_len = len;
        st->in_cap = cap;
    }
    return -1;
}

/* ---- paths, ids and events ------------------------------------------------------------------ */

/* The streaming path `value` names, as a method number (STREAM_BASE + its index), or
 * M_UNKNOWN. */
static int stream_path(const uint8_t *value, size_t n) {
    for (int i = 0; i < g_nspaths; i++)
        if (is(value, n, g_spaths[i])) return STREAM_BASE + i;
    return M_UNKNOWN;
}

static scall_t *scall_of(uint32_t id) {
    uint32_t slot = id & 0xffff;
    if (slot >= MAX_SCALLS || !g_scalls[slot] || g_sgen[slot] != (id >> 16)) return NULL;
    return g_scalls[slot];
}

static void event_free(sevent_t *e) {
    if (e->data) budget_give(e->cap);
    free(e->data);
    if (e->auth) tls_auth_drop(e->auth);
    free(e);
}

static void post_event(sevent_t *e) {
    pthread_mutex_lock(&g_smu);
    if (g_ev_tail) g_ev_tail->next = e;
    else g_ev_head = e;
    g_ev_tail = e;
    pthread_cond_signal(&g_scv);
    pthread_mutex_unlock(&g_smu);
}

static int post_simple(uint32_t id, int kind) {
    sevent_t *e = calloc(1, sizeof *e);
    if (!e) return -1;
    e->id = id;
    e->kind = kind;
    post_event(e);
    return 0;
}

static void scall_free(scall_t *sc) {
    uint32_t slot = sc->id & 0xffff;
    g_scalls[slot] = NULL;
    g_sgen[slot]++;
    g_nscalls--;
    if (sc->in) budget_give(sc->in_cap);
    free(sc->in);
    for (omsg_t *m = sc->out_head, *next; m; m = next) {
        next = m->next;
        free(m);
    }
    free(sc->message);
    free(sc);
}

/* The stream is gone (reset, its connection closed, or done): Python is told, unless the
 * call had already ended there. */
static void stream_gone(stream_t *st) {
    scall_t *sc = st->sc;
    st->sc = NULL;
    if (st->conn) st->conn->deciding--;
    if (!sc->finished) post_simple(sc->id, EV_GONE);
    scall_free(sc);
}

/* A bound crossed or a framing error: trailers with `code` (if nothing has gone wrong with
 * the stream itself), Python told the call is gone. */
static void stream_fail(scall_t *sc, int code, const char *why) {
    if (sc->finished) return;
    sc->finished = 1;
    post_simple(sc->id, EV_GONE);
    stream_t *st = sc->st;
    if (!sc->answered) {
        sc->answered = 1;
        answer_error(st, code, why);
        return;
    }
    sc->status = code;
    free(sc->message);
    sc->message = percent_encode(why);
    nghttp2_session_resume_data(st->conn->session, st->id);
    mark_dirty(st->conn);
}

/* A unary call taken by Python is gone (reset, its connection closed): the pump runs the
 * add_callback callbacks its servicer registered, now rather than when its decision ends,
 * as grpcio does. Only while a pump takes events (serve_streams() was called). */
static void call_cancelled(const call_t *c) {
    if (!g_max_scalls || __atomic_load_n(&c->cancelled, __ATOMIC_ACQUIRE)) return;
    sevent_t *e = calloc(1, sizeof *e);
    if (!e) return; /* the callbacks then run when the decision ends */
    e->kind = EV_CANCEL;
    e->seq = c->seq;
    post_event(e);
}

/* ---- the I/O thread's side ----------------------------------------------------------------- */

/* The request headers of a streaming call are complete: refused as a unary call would be, or
 * opened and Python told. */
static void stream_open(stream_t *st) {
    if (!st->post) set_status(st, UNIMPLEMENTED, "unknown method");
    else if (!st->ctype_ok) set_status(st, UNIMPLEMENTED, "content-type must be application/grpc");
    else if (st->encoded == ENC_UNKNOWN)
        set_status(st, INTERNAL, "Error parsing 'grpc-encoding' metadata");
    else if (st->bad_timeout) set_status(st, INTERNAL, "malformed grpc-timeout");
    else if (g_nscalls >= g_max_scalls)
        set_status(st, RESOURCE_EXHAUSTED, "server busy: too many streaming calls open");
    int slot = -1;
    for (int i = 0; st->status < 0 && i < MAX_SCALLS; i++)
        if (!g_scalls[i]) {
            slot = i;
            break;
        }
    scall_t *sc = slot >= 0 ? calloc(1, sizeof *sc) : NULL;
    sevent_t *e = sc ? calloc(1, sizeof *e) : NULL;
    if (st->status < 0 && !e) set_status(st, RESOURCE_EXHAUSTED, "server out of memory");
    if (st->status >= 0) {
        free(sc);
        st->done = 1;
        drop_metadata(st);
        answer_error(st, st->status, st->why);
        return;
    }
    sc->st = st;
    sc->id = (uint32_t)slot | (uint32_t)g_sgen[slot] << 16;
    sc->method = st->method - STREAM_BASE;
    g_scalls[slot] = sc;
    g_nscalls++;
    st->sc = sc;
    st->conn->deciding++; /* an open call: the connection is not idle (as grpcio's) */
    e->id = sc->id;
    e->kind = EV_OPEN;
    e->method = sc->method;
    e->deadline = st->deadline;
    memcpy(e->peer, st->conn->peer, PEER_LEN);
    if ((e->auth = st->conn->auth)) tls_auth_hold(e->auth); /* the allow-list reads it */
    e->data = st->md; /* the metadata moves to the event, its budget with it */
    e->len = st->md_len;
    e->cap = st->md_cap;
    st->md = NULL;
    st->md_len = st->md_cap = 0;
    post_event(e);
}

/* Messages of an open streaming call, as they arrive: each complete one goes to Python. */
static int stream_on_data(stream_t *st, const uint8_t *data, size_t len) {
    scall_t *sc = st->sc;
    if (sc->finished) return 0; /* ended: the rest is discarded */
    while (len > 0) {
        size_t want = sc->in_len < 5 ? 5 - sc->in_len : 0;
        if (sc->in_len >= 5) {
            size_t n = (size_t)sc->in[1] << 24 | (size_t)sc->in[2] << 16 |
                       (size_t)sc->in[3] << 8 | sc->in[4];
            want = 5 + n - sc->in_len;
        }
        size_t take = len < want ? len : want;
        if (sc->in_len + take > sc->in_cap) {
            size_t cap = sc->in_cap ? sc->in_cap * 2 : 256;
            while (cap < sc->in_len + take) cap *= 2;
            if (cap > 5 + g_max_message) cap = 5 + g_max_message;
            if (!budget_claim(cap - sc->in_cap, st)) {
                stream_fail(sc, RESOURCE_EXHAUSTED, "server busy: too many request bytes held");
                return 0;
            }
            uint8_t *in = realloc(sc->in, cap);
            if (!in) {
                budget_give(cap - sc->in_cap);
                stream_fail(sc, RESOURCE_EXHAUSTED, "server out of memory");
                return 0;
            }
            sc->in = in;
            sc->in_cap = cap;
            hold_begin(st);
        }
        memcpy(sc->in + sc->in_len, data, take);
        sc->in_len += take;
        data += take;
        len -= take;
        if (sc->in_len == 5) {
            size_t n = (size_t)sc->in[1] << 24 | (size_t)sc->in[2] << 16 |
                       (size_t)sc->in[3] << 8 | sc->in[4];
            if (n > g_max_message) {
                stream_fail(sc, RESOURCE_EXHAUSTED, "request message larger than the server "
                                                    "accepts (--max-message-bytes)");
                return 0;
            }
        }
        size_t n = sc->in_len < 5 ? SIZE_MAX
                                  : ((size_t)sc->in[1] << 24 | (size_t)sc->in[2] << 16 |
                                     (size_t)sc->in[3] << 8 | sc->in[4]);
        if (sc->in_len < 5 || sc->in_len < 5 + n) continue;
        /* One whole message: to Python, decompressed as grpcio would. */
        uint8_t *out;
        size_t olen, ocap;
        const char *why = NULL;
        int code =
            inflate_message(st, st->encoded, sc->in[0], sc->in + 5, n, &out, &olen, &ocap, &why);
        sevent_t *e = code < 0 ? calloc(1, sizeof *e) : NULL;
        if (code < 0 && !e) {
            code = RESOURCE_EXHAUSTED;
            why = "server out of memory";
        }
        if (code >= 0) {
            if (out) {
                budget_give(ocap);
                free(out);
            }
            stream_fail(sc, code, why);
            return 0;
        }
        e->id = sc->id;
        e->kind = EV_MSG;
        if (out) {
            e->data = out;
            e->len = olen;
            e->cap = ocap;
            if (sc->in) budget_give(sc->in_cap);
            free(sc->in);
        } else {
            e->data = sc->in;
            e->len = sc->in_len;
            e->cap = sc->in_cap;
        }
        sc->in = NULL;
        sc->in_len = sc->in_cap = 0;
        hold_end(st); /* the next message holds from when it begins */
        post_event(e);
    }
    return 0;
}

/* The client half-closed: a message cut short is an error, as on a unary call. */
static void stream_half_close(stream_t *st) {
    scall_t *sc = st->sc;
    if (sc->half || sc->finished) return;
    sc->half = 1;
    if (sc->in_len) return stream_fail(sc, INTERNAL, "a request message was cut short");
    post_simple(sc->id, EV_HALF);
}

/* nghttp2's frames for a streaming method: HEADERS end -> open; END_STREAM -> half-close. */
static int stream_on_frame(stream_t *st, const nghttp2_frame *f) {
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST && !st->sc &&
        !st->done) /* the whole header block: nghttp2 calls this once it has it */
        stream_open(st);
    if ((f->hd.type == NGHTTP2_DATA || f->hd.type == NGHTTP2_HEADERS) &&
        (f->hd.flags & NGHTTP2_FLAG_END_STREAM) && st->sc)
        stream_half_close(st);
    return 0;
}

static ssize_t stream_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *src, void *u) {
    (void)src; (void)u;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st || !st->sc) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    scall_t *sc = st->sc;
    size_t n = 0;
    while (sc->out_head && n < length) {
        omsg_t *m = sc->out_head;
        size_t k = m->len - m->off;
        if (k > length - n) k = length - n;
        memcpy(buf + n, m->data + m->off, k);
        m->off += k;
        n += k;
        if (m->off == m->len) {
            sc->out_bytes -= m->len;
            sc->out_head = m->next;
            if (!sc->out_head) sc->out_tail = NULL;
            free(m);
        }
    }
    if (sc->out_head || !sc->finished) return n ? (ssize_t)n : NGHTTP2_ERR_DEFERRED;
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    char num[8];
    int clen = snprintf(num, sizeof num, "%d", sc->status);
    const char *msg = sc->message ? sc->message : "";
    nghttp2_nv trailers[] = {NV("grpc-status", num, (size_t)clen),
                             NV("grpc-message", msg, strlen(msg))};
    if (nghttp2_submit_trailer(s, id, trailers, 2) != 0) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    return (ssize_t)n;
}

/* Response headers (once), then the data provider that sends what Python queues. */
static void stream_answer(scall_t *sc) {
    if (sc->answered) {
        nghttp2_session_resume_data(sc->st->conn->session, sc->st->id);
        return;
    }
    sc->answered = 1;
    nghttp2_nv hdrs[] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16),
                         NV("grpc-accept-encoding", ACCEPT_ENCODING, sizeof ACCEPT_ENCODING - 1)};
    nghttp2_data_provider prd = {.read_callback = stream_read};
    if (nghttp2_submit_response(sc->st->conn->session, sc->st->id, hdrs, 3, &prd) != 0)
        reset(sc->st);
}

static void do_op(sop_t *op) {
    scall_t *sc = scall_of(op->id);
    if (!sc || sc->finished || !sc->st) return;
    stream_t *st = sc->st;
    if (op->kind == OP_SEND) {
        if (sc->out_bytes + op->len + 5 > g_out_cap) {
            /* The client reads nothing: reset, not buffered without bound. */
            sc->finished = 1;
            post_simple(sc->id, EV_GONE);
            nghttp2_submit_rst_stream(st->conn->session, NGHTTP2_FLAG_NONE, st->id,
                                      NGHTTP2_ENHANCE_YOUR_CALM);
            mark_dirty(st->conn);
            return;
        }
        omsg_t *m = malloc(sizeof *m + 5 + op->len);
        if (!m) return stream_fail(sc, RESOURCE_EXHAUSTED, "server out of memory");
        m->next = NULL;
        m->len = 5 + op->len;
        m->off = 0;
        m->data[0] = 0;
        m->data[1] = (uint8_t)(op->len >> 24); m->data[2] = (uint8_t)(op->len >> 16);
        m->data[3] = (uint8_t)(op->len >> 8);  m->data[4] = (uint8_t)op->len;
        memcpy(m->data + 5, op->data, op->len);
        if (sc->out_tail) sc->out_tail->next = m;
        else sc->out_head = m;
        sc->out_tail = m;
        sc->out_bytes += m->len;
        st->conn->ping_strikes = 0; /* data sent: as grpcio */
        stream_answer(sc);
    } else {
        sc->finished = 1;
        if (!sc->answered) { /* nothing sent: trailers-only, as grpcio */
            sc->answered = 1;
            answer_status(st, op->status, op->message ? op->message : "", NULL);
            return;
        }
        sc->status = op->status;
        sc->message = op->message;
        op->message = NULL;
        stream_answer(sc);
    }
    mark_dirty(st->conn);
}

/* Python's sends and finishes, in order (the I/O thread, on its eventfd). */
static void stream_ops(void) {
    pthread_mutex_lock(&g_smu);
    sop_t *op = g_op_head;
    g_op_head = g_op_tail = NULL;
    pthread_mutex_unlock(&g_smu);
    while (op) {
        sop_t *next = op->next;
        do_op(op);
        free(op->message);
        free(op);
        op = next;
    }
}

/* ---- keepalive: grpcio's ping abuse policy --------------------------------------------------- */

/* grpcio's server defaults (chttp2 ping_abuse_policy): a client PING sooner than 5 minutes
 * after its last one while a call is open (2 hours while none is, as it does not permit
 * pings without calls) is a strike, unless the server has sent headers or data since; past
 * 2 strikes the connection gets GOAWAY ENHANCE_YOUR_CALM "too_many_pings" and is closed
 * (grpcio acks that last PING first; nghttp2 acks none once the session is closing). */
#define PING_INTERVAL_CALLS_S 300.0
#define PING_INTERVAL_IDLE_S 7200.0
#define MAX_PING_STRIKES 2

static const uint8_t KEEPALIVE_OPAQUE[8] = {'p', 'd', 'p', '-', 'k', 'a', 'l', 'v'};

static int on_ping(conn_t *c, const nghttp2_frame *f) {
    if (f->hd.flags & NGHTTP2_FLAG_ACK) {
        if (!memcmp(f->ping.opaque_data, KEEPALIVE_OPAQUE, sizeof KEEPALIVE_OPAQUE))
            c->ping_sent = 0; /* our keepalive PING answered */
        return 0;
    }
    double now = now_s();
    double interval = c->deciding ? PING_INTERVAL_CALLS_S : PING_INTERVAL_IDLE_S;
    if (c->last_ping > 0 && now < c->last_ping + interval) c->ping_strikes++;
    c->last_ping = now;
    if (c->ping_strikes > MAX_PING_STRIKES && !c->dead) {
        static const char why[] = "too_many_pings";
        nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->session),
                              NGHTTP2_ENHANCE_YOUR_CALM, (const uint8_t *)why, sizeof why - 1);
        nghttp2_session_terminate_session(c->session, NGHTTP2_ENHANCE_YOUR_CALM); /* then close */
        mark_dirty(c);
    }
    return 0;
}

/* ---- the Python side ------------------------------------------------------------------------ */

/* serve_streams(paths, max_open, out_cap): the streaming paths (before start()), how many
 * streaming calls may be open at once, and how many bytes one call may have queued for a
 * client that does not read them (then it is reset). */
static PyObject *py_serve_streams(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *paths;
    int max_open;
    Py_ssize_t out_cap = 4 << 20;
    if (!PyArg_ParseTuple(args, "Oi|n", &paths, &max_open, &out_cap)) return NULL;
    if (out_cap < 1024 || out_cap > (1 << 30))
        return PyErr_Format(PyExc_ValueError, "out_cap: between 1 KiB and 1 GiB");
    if (g_running) return PyErr_Format(PyExc_RuntimeError, "serve_streams() before start()");
    if (max_open < 0 || max_open > MAX_SCALLS)
        return PyErr_Format(PyExc_ValueError, "max_open: between 0 and %d", MAX_SCALLS);
    PyObject *seq = PySequence_Fast(paths, "paths must be a sequence of str");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MAX_PATHS) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "paths: at most %d of them", MAX_PATHS);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t len;
        const char *p = PyUnicode_AsUTF8AndSize(PySequence_Fast_GET_ITEM(seq, i), &len);
        if (!p || len < 2 || len > MAX_PATH_LEN || p[0] != '/') {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "paths: not a gRPC path");
            return NULL;
        }
        memcpy(g_spaths[i], p, (size_t)len);
        g_spaths[i][len] = 0;
    }
    g_nspaths = (int)n;
    g_max_scalls = max_open;
    g_out_cap = (size_t)out_cap;
    Py_DECREF(seq);
    Py_RETURN_NONE;
}

/* stream_take(timeout) -> [(id, kind, a, b, c, d, e)]: the events queued now, or the first to come
 * within `timeout` seconds ([] on time-out). OPEN: (id, 1, method, deadline | None, peer,
 * metadata, auth | None: the TLS connection's, as take() gives it); MSG: (id, 2, message, ...);
 * HALF: (id, 3, ...); GONE: (id, 4, ...). */
static PyObject *py_stream_take(PyObject *self, PyObject *arg) {
    (void)self;
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1 && PyErr_Occurred()) return NULL;
    sevent_t *got = NULL;
    Py_BEGIN_ALLOW_THREADS
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    if (timeout > 0 && timeout < 3600) {
        double s = (double)until.tv_sec + (double)until.tv_nsec / 1e9 + timeout;
        until.tv_sec = (time_t)s;
        until.tv_nsec = (long)((s - (double)until.tv_sec) * 1e9);
    }
    pthread_mutex_lock(&g_smu);
    while (!g_ev_head && timeout > 0 && !__atomic_load_n(&g_stopping, __ATOMIC_ACQUIRE))
        if (pthread_cond_timedwait(&g_scv, &g_smu, &until) == ETIMEDOUT) break;
    sevent_t **tail = &got;
    for (int n = 0; g_ev_head && n < MAX_EVENTS; n++) {
        *tail = g_ev_head;
        g_ev_head = g_ev_head->next;
        tail = &(*tail)->next;
        *tail = NULL;
    }
    if (!g_ev_head) g_ev_tail = NULL;
    pthread_mutex_unlock(&g_smu);
    Py_END_ALLOW_THREADS
    PyObject *list = PyList_New(0);
    for (sevent_t *e = got, *next; e; e = next) {
        next = e->next;
        PyObject *item = NULL;
        if (list && e->kind == EV_OPEN) {
            PyObject *dl = e->deadline >= 0 ? PyFloat_FromDouble(e->deadline) : Py_NewRef(Py_None);
            PyObject *auth = e->auth ? tls_auth_py(e->auth) : Py_NewRef(Py_None);
            if (dl && auth)
                item = Py_BuildValue("(IiiNsy#N)", e->id, e->kind, e->method, dl, e->peer,
                                     (const char *)(e->data ? (char *)e->data : ""),
                                     (Py_ssize_t)e->len, auth);
            else {
                Py_XDECREF(dl);
                Py_XDECREF(auth);
            }
        } else if (list && e->kind == EV_MSG) {
            item = Py_BuildValue("(Iiy#OOOO)", e->id, e->kind, (const char *)e->data + 5,
                                 (Py_ssize_t)e->len - 5, Py_None, Py_None, Py_None, Py_None);
        } else if (list && e->kind == EV_CANCEL) {
            item = Py_BuildValue("(KiOOOOO)", e->seq, e->kind, Py_None, Py_None, Py_None, Py_None,
                                 Py_None);
        } else if (list) {
            item = Py_BuildValue("(IiOOOOO)", e->id, e->kind, Py_None, Py_None, Py_None, Py_None,
                                 Py_None);
        }
        if (!item || PyList_Append(list, item) < 0) Py_CLEAR(list);
        Py_XDECREF(item);
        event_free(e);
    }
    tls_release(); /* the auth contexts dropped meanwhile, with their Python objects */
    return list;
}

static PyObject *post_op(uint32_t id, int kind, int status, const char *msg, const char *data,
                         Py_ssize_t len) {
    if (!g_running) Py_RETURN_FALSE;
    sop_t *op = calloc(1, sizeof *op + (size_t)len);
    if (!op) return PyErr_NoMemory();
    op->id = id;
    op->kind = kind;
    op->status = status;
    op->len = (size_t)len;
    if (len) memcpy(op->data, data, (size_t)len);
    if (msg && !(op->message = percent_encode(msg))) {
        free(op);
        return PyErr_NoMemory();
    }
    pthread_mutex_lock(&g_smu);
    if (g_op_tail) g_op_tail->next = op;
    else g_op_head = op;
    g_op_tail = op;
    pthread_mutex_unlock(&g_smu);
    wake_io();
    Py_RETURN_TRUE;
}

/* stream_send(id, message): queued for the call's client (dropped if the call is gone). */
static PyObject *py_stream_send(PyObject *self, PyObject *args) {
    (void)self;
    unsigned int id;
    const char *data;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "Iy#", &id, &data, &len)) return NULL;
    if ((uint64_t)len > g_max_message && (uint64_t)len > 0xffffffffu - 5)
        return PyErr_Format(PyExc_ValueError, "message too long");
    return post_op(id, OP_SEND, 0, NULL, data, len);
}

/* stream_finish(id, code, message): the trailers that end the call. */
static PyObject *py_stream_finish(PyObject *self, PyObject *args) {
    (void)self;
    unsigned int id;
    int code;
    const char *msg;
    if (!PyArg_ParseTuple(args, "Iis", &id, &code, &msg)) return NULL;
    if (code < 0 || code > 16) code = INTERNAL;
    return post_op(id, OP_FINISH, code, msg, NULL, 0);
}

/* active(i): whether call i of the batch taken is still wanted (its client has not reset it
 * nor closed its connection): grpcio's context.is_active(). */
static PyObject *py_active(PyObject *self, PyObject *arg) {
    (void)self;
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (!g_batch_out || i < 0 || i >= g_nbatch || !g_batch[i]) Py_RETURN_FALSE; /* or replied */
    return PyBool_FromLong(!__atomic_load_n(&g_batch[i]->cancelled, __ATOMIC_ACQUIRE));
}

/* call_id(i): the seq of call i of the batch taken (what a cancelled call's event names). */
static PyObject *py_call_id(PyObject *self, PyObject *arg) {
    (void)self;
    long i = PyLong_AsLong(arg);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (!g_batch_out || i < 0 || i >= g_nbatch || !g_batch[i])
        return PyErr_Format(PyExc_IndexError, "no such call");
    return PyLong_FromUnsignedLongLong(g_batch[i]->seq);
}

/* At stop(): whatever Python did not take or send is dropped. */
static void streams_clear(void) {
    pthread_mutex_lock(&g_smu);
    sevent_t *e = g_ev_head;
    sop_t *op = g_op_head;
    g_ev_head = g_ev_tail = NULL;
    g_op_head = g_op_tail = NULL;
    pthread_mutex_unlock(&g_smu);
    for (sevent_t *next; e; e = next) {
        next = e->next;
        event_free(e);
    }
    for (sop_t *next; op; op = next) {
        next = op->next;
        free(op->message);
        free(op);
    }
}
