/* _h2: pdp's native gRPC transport (`pdp serve --transport native`, experimental), on Debian's
 * libnghttp2. HTTP/2 and gRPC framing in C; the decision stays pdp's Python.
 *
 * Two sides, one queue each way:
 *
 *   - the I/O thread (a pthread that never touches Python, so never holds the GIL) runs one
 *     epoll loop: accepts on the listening sockets it is given (TCP and Unix), feeds each
 *     connection's bytes to its nghttp2 server session, judges each completed request's
 *     framing, and queues the
 *     good ones; it writes the replies handed back, a pass's frames gathered into one send()
 *     per connection (frame by frame, a reply went out as three TCP segments, each waking the
 *     client: bench/RESULTS.md).
 *   - the decision threads (Python, pdp.server.native.server; several may take() at once,
 *     each batch its thread's own) call take() - a blocking call that releases the GIL - for a
 *     batch of requests, decide each, and hand the batch's replies to answer(), which queues
 *     them and wakes the I/O thread through an eventfd. A call decided before the batch ends
 *     can be handed back alone (reply(i, ...)): queued without a wake-up, the I/O thread takes
 *     it with its batch's answer() or at most REPLY_DELAY_NS later (a timer: reply_timer), so a
 *     slow call no longer holds the replies of the calls decided before it in its batch, and
 *     the first reply of a long batch does not wait for the last. answer() still ends the
 *     batch (the calls not replied to, then one wake-up); the batch stays its thread's until
 *     then.
 *
 * With TLS (use_tls(); _tls.c, on OpenSSL) a connection's bytes go through SSL instead of
 * recv()/send(), after a handshake the same loop drives, non-blocking; its auth context goes
 * to Python with each call (one object per connection).
 *
 * Refused in C, before Python sees them (trailers-only replies with their grpc-status): a path
 * other than the served ones (g_paths, given to start()) or a non-POST (UNIMPLEMENTED), a content-type not application/grpc
 * (UNIMPLEMENTED), a grpc-encoding other than identity, gzip and deflate, a compressed flag
 * without one, a flag byte other than 0 and 1, or a message that does not inflate (INTERNAL),
 * anything but exactly one message (INTERNAL), a message decompressing past max_message
 * (RESOURCE_EXHAUSTED; gzip and deflate are inflated here, in _h2_stream.c), a message over max_message bytes, more calls
 * queued or deciding than max_calls, or more request bytes held than the server's budget
 * (RESOURCE_EXHAUSTED), a malformed grpc-timeout (INTERNAL), a call whose deadline passed
 * before it was taken (DEADLINE_EXCEEDED), a Check or Plan arriving once drain() was called
 * (UNAVAILABLE). Header blocks over MAX_HEADER_BYTES reset the stream.
 *
 * Bounds: connections (max_conns; more are closed at accept), streams per connection
 * (SETTINGS_MAX_CONCURRENT_STREAMS, enforced by nghttp2), header bytes per request, bytes of
 * one message, request bytes held by the whole server (g_budget), calls outstanding
 * (max_calls), stream resets per connection (nghttp2's rate limit), control frames queued
 * for a peer that does not read (nghttp2's max outbound ack), and an idle timeout for
 * connections with nothing deciding (which also bounds an unfinished handshake).
 *
 * The call's metadata (request headers but pseudo-headers, content-type, te and grpc-*) goes
 * to Python with each call as "name\0value\0..." bytes, copied within the header bound and
 * counted in g_budget (a -bin value must be base64, as grpc decodes it); Python makes grpcio's
 * invocation_metadata() of it when something reads it.
 *
 * Streaming calls (health Watch, reflection: the paths given to serve_streams()) and the
 * ping policy are _h2_stream.c's, included below: their events reach Python through a
 * queue of their own, never the decision thread's.
 *
 * One server per process (start() refuses a second): plain globals.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "_tls.h"

#define MAX_HEADER_BYTES 16384     /* per request, as HPACK decoded (+32 per field, RFC 7541) */
#define MIN_BUDGET (64u << 20)     /* request bytes held at once, all connections together */
#define READ_CHUNK 65536
#define OUT_CHUNK 65536            /* bytes of frames gathered for one send() */
#define MAX_GRPC_MESSAGE 4096      /* longest grpc-message sent, before percent-encoding */
#define MAX_DETAILS 65536          /* longest grpc-status-details-bin sent (base64) */
#define MAX_BATCH 256
#define PEER_LEN 128          /* "unix:" and a path of up to 108 bytes fit */
#define MAX_LISTENERS 32
#define HANDSHAKE_MAX_S 120.0      /* a TLS handshake's bound without an idle timeout (grpc's) */

enum {
    OK = 0, DEADLINE_EXCEEDED = 4, RESOURCE_EXHAUSTED = 8, UNIMPLEMENTED = 12, INTERNAL = 13,
    UNAVAILABLE = 14
};
enum { M_UNKNOWN = -1, N_DEFAULT_PATHS = 4, MAX_PATHS = 64, MAX_PATH_LEN = 256 };
/* Streaming methods are numbered from STREAM_BASE (_h2_stream.c); grpc-encoding's values. */
enum { STREAM_BASE = MAX_PATHS, ENC_UNKNOWN = 3 };

typedef struct conn conn_t;
typedef struct stream stream_t;
struct scall;

/* A request handed to Python, and later its reply. `st` is the I/O thread's only: NULL once
 * the stream is gone (reset by the client, its connection closed), so the reply is dropped.
 * Everything else is written before the call crosses a queue and read after. */
typedef struct call {
    struct call *next;
    stream_t *st;
    int cancelled; /* atomic: the stream is gone; take() skips the call, nobody waits for it */
    unsigned long long seq; /* names the call to Python (call_id(), a cancelled call's event) */
    int method;
    uint8_t *body; /* the message, without the 5-byte prefix; freed by take() */
    size_t body_len, body_cap;
    double deadline; /* CLOCK_MONOTONIC seconds; <0: none */
    char peer[PEER_LEN];
    uint8_t *md;   /* the call's metadata: "name\0value\0" per header; freed by take() */
    size_t md_len, md_cap;
    tls_auth_t *auth;  /* its connection's TLS auth context (held), or NULL: plaintext */
    int status;        /* the reply: OK with out, or a gRPC error code */
    char *message;     /* grpc-message, percent-encoded */
    char *details;     /* grpc-status-details-bin, base64, or NULL */
    uint8_t *out;      /* the framed reply message */
    size_t out_len;
} call_t;

struct stream {
    conn_t *conn;
    stream_t *prev, *next; /* the connection's streams, freed with it */
    int32_t id;
    int post, method, ctype_ok, encoded, bad_timeout, done;
    double deadline;
    size_t header_bytes;
    uint8_t *md; /* the metadata grpcio hands the servicer, as in call_t; with the budget */
    size_t md_len, md_cap;
    uint8_t *in;
    size_t in_len, in_cap;
    int status; /* -1: fine so far; else the gRPC status to answer */
    const char *why;
    call_t *call;  /* with Python, or answered and being sent */
    uint8_t *out;  /* the framed reply being sent */
    size_t out_len, out_sent;
    struct scall *sc; /* a streaming call's state (_h2_stream.c), or NULL */
    stream_t *hold_prev, *hold_next; /* g_hold: holding request bytes (budget_claim) */
    int holding;
    int fields_seen; /* on a Unix socket: relaxed_order_ok's */
};

struct conn {
    conn_t *prev, *next; /* every connection, for the drain and idle sweeps */
    int fd, dead, dirty, want_out, noticed;
    nghttp2_session *session;
    uint8_t *obuf; /* frames to send: one send() per pass, not one per frame */
    size_t olen, ooff, ocap;
    stream_t *streams;
    int deciding; /* its calls with Python */
    double last_active;
    double last_ping; /* the client's last PING, and the strikes it earned (on_ping) */
    int ping_strikes;
    double last_read; /* when bytes last came in */
    double ping_sent; /* our keepalive PING, unanswered since then (0: none out) */
    char peer[PEER_LEN];
    tls_t *tls;        /* NULL: plaintext */
    tls_auth_t *auth;  /* once the handshake is done */
    int handshaking, tls_wr; /* tls_wr: SSL waits for the socket to be writable */
};

/* Settings (written by start() before the thread runs, read-only after). */
/* The served paths, as start() is given them (the module's PATHS when it is not); a call's
 * method is its index here, which take() hands Python. A path whose g_drain_refused is set is
 * refused UNAVAILABLE once drain() is called (decisions; health and server info still answer). */
static const char *g_default_paths[N_DEFAULT_PATHS] = {
    "/pdp.v1.DecisionService/Check", "/grpc.health.v1.Health/Check",
    "/pdp.v1.DecisionService/Plan", "/pdp.v1.DecisionService/ServerInfo"};
static const int g_default_drain_refused[N_DEFAULT_PATHS] = {1, 0, 1, 0};
static char g_paths[MAX_PATHS][MAX_PATH_LEN + 1];
static int g_drain_refused[MAX_PATHS];
static int g_npaths;
static size_t g_max_message, g_budget;
static int g_max_conns, g_max_calls;
static double g_idle_s;
static double g_keepalive_s, g_keepalive_timeout_s; /* keepalive(): 0 = no PINGs */
static int g_epoll = -1, g_evfd = -1, g_running;
/* The listening sockets (TCP and Unix, several at once); epoll data points at an entry. */
static int g_lfds[MAX_LISTENERS], g_nlfds;
static pthread_t g_thread;
static nghttp2_session_callbacks *g_cbs;
static nghttp2_option *g_opt, *g_opt_unix; /* g_opt_unix: see relaxed_header_ok */
static nghttp2_settings_entry g_settings[3];

/* The I/O thread's own. */
static conn_t *g_conns_list;
static int g_conns;
static conn_t **g_dirty;
static int g_ndirty;
static int g_drain_seen;
static unsigned long long g_call_seq; /* calls queued so far: each one's seq */

/* Shared: under g_mu, or atomics. */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_cv;
static call_t *g_req_head, *g_req_tail, *g_rep_head, *g_rep_tail;
static int g_draining, g_stopping; /* atomics */
static size_t g_buffered;          /* atomic: request bytes held */
static int g_outstanding;          /* atomic: calls queued, with Python, or replies queued */
/* Each decision thread's own batch (several threads may take() at once: --threads). */
static __thread call_t *g_batch[MAX_BATCH];
static __thread int g_nbatch, g_batch_out, g_taking;
static int g_out_batches; /* atomic: batches taken and not yet answered, all threads */
/* Replies handed back one by one (reply()): see reply_timer. */
#define REPLY_DELAY_NS 1000000
static int g_tfd = -1;  /* the timer, a timerfd in the epoll set: made and closed by io_main */
static int g_rep_armed; /* atomic: it is armed */
static char T_TAG;      /* its epoll data */
/* Under g_mu: batches out with a decision thread (not empty ones), and when the latest was
 * taken: see standby_until. */
static int g_deciding;
static double g_last_taken;
static pthread_cond_t g_standby_cv; /* where a thread standing by waits: not woken per request */
static pthread_once_t g_standby_once = PTHREAD_ONCE_INIT;
#define STANDBY_S 0.02
static unsigned long long g_batches, g_requests; /* atomics: for the bench */

static char E_TAG; /* epoll data for the eventfd (a listener's is its g_lfds entry) */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int budget_take(size_t n) {
    size_t cur = __atomic_load_n(&g_buffered, __ATOMIC_RELAXED);
    do {
        if (cur + n > g_budget || cur + n < cur) return 0;
    } while (!__atomic_compare_exchange_n(&g_buffered, &cur, cur + n, 1, __ATOMIC_RELAXED,
                                          __ATOMIC_RELAXED));
    return 1;
}

static void budget_give(size_t n) { __atomic_sub_fetch(&g_buffered, n, __ATOMIC_RELAXED); }

static void wake_io(void) {
    uint64_t one = 1;
    ssize_t r = write(g_evfd, &one, sizeof one); /* EAGAIN: already signalled */
    (void)r;
}

static void call_free(call_t *c) {
    if (!c) return;
    if (c->body) budget_give(c->body_cap);
    free(c->body);
    if (c->md) budget_give(c->md_cap);
    free(c->md);
    free(c->message);
    free(c->details);
    free(c->out);
    if (c->auth) tls_auth_drop(c->auth);
    free(c);
}

/* _h2_stream.c's, included below: streaming calls and compressed messages. */
static int stream_path(const uint8_t *value, size_t n);
static int stream_on_data(stream_t *st, const uint8_t *data, size_t len);
static int stream_on_frame(stream_t *st, const nghttp2_frame *f);
static void stream_gone(stream_t *st);
static void stream_ops(void);
static void streams_clear(void);
static void call_cancelled(const call_t *c);
static int unary_decompress(stream_t *st);
static int on_ping(conn_t *c, const nghttp2_frame *f);
static int encoding_of(const uint8_t *v, size_t n);
/* Below: request bytes taken back from the requests holding them longest. */
static int budget_claim(size_t n, const stream_t *self);
static void hold_begin(stream_t *st);
static void hold_end(stream_t *st);

static void set_status(stream_t *st, int code, const char *why) {
    if (st->status > 0) return; /* the first reason stays */
    st->status = code;
    st->why = why;
}

static void drop_input(stream_t *st) {
    if (st->in) budget_give(st->in_cap);
    free(st->in);
    st->in = NULL;
    st->in_len = st->in_cap = 0;
}

static void drop_metadata(stream_t *st) {
    if (st->md) budget_give(st->md_cap);
    free(st->md);
    st->md = NULL;
    st->md_len = st->md_cap = 0;
}

static void stream_free(stream_t *st) {
    hold_end(st);
    if (st->conn) {
        if (st->prev) st->prev->next = st->next;
        else st->conn->streams = st->next;
        if (st->next) st->next->prev = st->prev;
    }
    if (st->call) { /* still with Python: its reply will find no stream */
        call_cancelled(st->call);
        st->call->st = NULL;
        __atomic_store_n(&st->call->cancelled, 1, __ATOMIC_RELEASE);
        if (st->conn) st->conn->deciding--;
    }
    if (st->sc) stream_gone(st);
    drop_input(st);
    drop_metadata(st);
    free(st->out);
    free(st);
}

static void mark_dirty(conn_t *c) {
    if (!c->dirty) {
        c->dirty = 1;
        g_dirty[g_ndirty++] = c;
    }
}

/* ---- nghttp2 callbacks (I/O thread) --------------------------------------------------------- */

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f, void *u) {
    conn_t *c = u;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    stream_t *st = calloc(1, sizeof *st);
    if (!st) return NGHTTP2_ERR_CALLBACK_FAILURE;
    st->conn = c;
    st->id = f->hd.stream_id;
    st->status = -1;
    st->method = M_UNKNOWN;
    st->deadline = -1;
    st->next = c->streams;
    if (c->streams) c->streams->prev = st;
    c->streams = st;
    nghttp2_session_set_stream_user_data(s, st->id, st);
    return 0;
}

static int is(const uint8_t *v, size_t n, const char *want) {
    return n == strlen(want) && memcmp(v, want, n) == 0;
}

/* grpc-timeout: 1 to 8 ASCII digits and a unit (H M S m u n); seconds, or -1 if malformed. */
static double parse_timeout(const uint8_t *v, size_t n) {
    if (n < 2 || n > 9) return -1;
    double x = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (v[i] < '0' || v[i] > '9') return -1;
        x = x * 10 + (v[i] - '0');
    }
    switch (v[n - 1]) {
    case 'H': return x * 3600;
    case 'M': return x * 60;
    case 'S': return x;
    case 'm': return x / 1e3;
    case 'u': return x / 1e6;
    case 'n': return x / 1e9;
    default: return -1;
    }
}

/* Whether grpcio hands this request header to the servicer (invocation_metadata()): not the
 * pseudo-headers, nor what gRPC itself reads (content-type, te, grpc-*). user-agent is kept,
 * as grpcio does. */
static int is_metadata(const uint8_t *name, size_t n) {
    if (n == 0 || name[0] == ':') return 0;
    if (n >= 5 && memcmp(name, "grpc-", 5) == 0) return 0;
    return !is(name, n, "content-type") && !is(name, n, "te");
}

/* A -bin value grpc can decode: base64 (standard alphabet), padded or not. */
static int is_base64(const uint8_t *v, size_t n) {
    size_t pad = 0;
    while (pad < 2 && pad < n && v[n - 1 - pad] == '=') pad++;
    if (pad && n % 4) return 0;
    if (!pad && n % 4 == 1) return 0;
    for (size_t i = 0; i < n - pad; i++) {
        uint8_t ch = v[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return 0;
    }
    return 1;
}

static void reverse(uint8_t *p, size_t n) {
    for (size_t i = 0; i < n / 2; i++) {
        uint8_t t = p[i];
        p[i] = p[n - 1 - i];
        p[n - 1 - i] = t;
    }
}

/* p[from:to] moved in front of p[0:from], in place. */
static void rotate_last_first(uint8_t *p, size_t from, size_t to) {
    reverse(p, from);
    reverse(p + from, to - from);
    reverse(p, to);
}

/* Appends "name\0value\0" to the stream's metadata. Bounded by MAX_HEADER_BYTES (checked
 * before this is called: each field counts its length + 32) and by the server's budget.
 * nghttp2 refuses NUL in names and values; a NUL here anyway fails the call, never splits a
 * field in two. */
static void keep_metadata(stream_t *st, const uint8_t *name, size_t namelen,
                          const uint8_t *value, size_t valuelen) {
    if (st->status >= 0) return;
    if (memchr(name, 0, namelen) || memchr(value, 0, valuelen)) {
        set_status(st, INTERNAL, "malformed request header");
        return drop_metadata(st);
    }
    if (namelen > 4 && memcmp(name + namelen - 4, "-bin", 4) == 0 && !is_base64(value, valuelen)) {
        set_status(st, INTERNAL, "malformed base64 in a -bin metadata value");
        return drop_metadata(st);
    }
    size_t need = st->md_len + namelen + valuelen + 2;
    if (need > st->md_cap) {
        size_t cap = st->md_cap ? st->md_cap : 256;
        while (cap < need) cap *= 2;
        size_t extra = cap - st->md_cap;
        if (!budget_claim(extra, st)) {
            set_status(st, RESOURCE_EXHAUSTED, "server busy: too many request bytes held");
            return drop_metadata(st);
        }
        uint8_t *md = realloc(st->md, cap);
        if (!md) {
            budget_give(extra);
            set_status(st, RESOURCE_EXHAUSTED, "server out of memory");
            return drop_metadata(st);
        }
        st->md = md;
        st->md_cap = cap;
        hold_begin(st);
    }
    memcpy(st->md + st->md_len, name, namelen);
    st->md[st->md_len + namelen] = 0;
    memcpy(st->md + st->md_len + namelen + 1, value, valuelen);
    st->md[st->md_len + namelen + 1 + valuelen] = 0;
    if (is(name, namelen, "user-agent")) /* first, wherever it was sent: as grpcio */
        rotate_last_first(st->md, st->md_len, need);
    st->md_len = need;
}

/* ---- Unix sockets: the :authority grpc-go sends there ---------------------------------------- */

/* grpc-go before 1.52 (grpcurl 1.8 among its clients) sends a Unix socket's path as :authority,
 * which nghttp2's HTTP messaging checks refuse ('/' is no authority character): the stream was
 * reset PROTOCOL_ERROR where grpcio answers. So sessions on Unix sockets (g_opt_unix) run
 * without those checks, and this makes them here for every field but that: pseudo-headers
 * named by RFC 9113 only, field names and values as nghttp2 checks them (lowercase names, no
 * control characters), no connection-specific fields, `te: trailers` only. Missing
 * pseudo-headers: complete() refuses a call without POST and a served :path. */
static int is_unix_conn(const conn_t *c) { return memcmp(c->peer, "unix:", 5) == 0; }

static int relaxed_header_ok(const uint8_t *name, size_t namelen, const uint8_t *value,
                             size_t valuelen) {
    if (!nghttp2_check_header_value(value, valuelen)) return 0;
    if (namelen && name[0] == ':')
        return is(name, namelen, ":method") || is(name, namelen, ":path") ||
               is(name, namelen, ":scheme") || is(name, namelen, ":authority");
    if (!nghttp2_check_header_name(name, namelen)) return 0;
    for (size_t i = 0; i < namelen; i++)
        if (name[i] >= 'A' && name[i] <= 'Z') return 0;
    if (is(name, namelen, "te")) return is(value, valuelen, "trailers");
    return !is(name, namelen, "connection") && !is(name, namelen, "keep-alive") &&
           !is(name, namelen, "proxy-connection") && !is(name, namelen, "transfer-encoding") &&
           !is(name, namelen, "upgrade");
}

/* What nghttp2's checks also refuse on TCP, which relaxed_header_ok cannot see field by
 * field: a pseudo-header twice, after a regular field, or in trailers (RFC 9113 8.3). Without
 * this, on a Unix socket the last of two :path (or :method) was the call's: a :path of
 * Health, then one of Check, was decided as a Check, while whatever read the first saw a
 * health check. */
static int relaxed_order_ok(stream_t *st, const nghttp2_frame *f, const uint8_t *name,
                            size_t namelen) {
    static const char *const pseudo[] = {":method", ":path", ":scheme", ":authority"};
    enum { REGULAR = 1 << 4 };
    if (!namelen || name[0] != ':') {
        st->fields_seen |= REGULAR;
        return 1;
    }
    if (f->headers.cat != NGHTTP2_HCAT_REQUEST || st->fields_seen & REGULAR) return 0;
    for (int i = 0; i < 4; i++) {
        if (!is(name, namelen, pseudo[i])) continue;
        if (st->fields_seen & 1 << i) return 0;
        st->fields_seen |= 1 << i;
    }
    return 1;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *u) {
    (void)flags;
    stream_t *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st) return 0;
    if (is_unix_conn(u) && (!relaxed_header_ok(name, namelen, value, valuelen) ||
                            !relaxed_order_ok(st, f, name, namelen)))
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* the stream is reset, as nghttp2 would */
    st->header_bytes += namelen + valuelen + 32;
    if (st->header_bytes > MAX_HEADER_BYTES) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (f->headers.cat != NGHTTP2_HCAT_REQUEST) return 0; /* trailers: counted, not read */
    if (is(name, namelen, ":method")) st->post = is(value, valuelen, "POST");
    else if (is(name, namelen, ":path")) {
        st->method = M_UNKNOWN;
        for (int i = 0; i < g_npaths; i++)
            if (is(value, valuelen, g_paths[i])) st->method = i;
        if (st->method == M_UNKNOWN) st->method = stream_path(value, valuelen);
    } else if (is(name, namelen, "content-type"))
        st->ctype_ok = is(value, valuelen, "application/grpc") ||
                       (valuelen > 16 && memcmp(value, "application/grpc", 16) == 0 &&
                        (value[16] == '+' || value[16] == ';'));
    else if (is(name, namelen, "grpc-encoding"))
        st->encoded = encoding_of(value, valuelen);
    else if (is(name, namelen, "grpc-timeout")) {
        double t = parse_timeout(value, valuelen);
        if (t < 0) st->bad_timeout = 1;
        else st->deadline = now_s() + t;
    } else if (is_metadata(name, namelen))
        keep_metadata(st, name, namelen, value, valuelen);
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                   size_t len, void *u) {
    (void)flags; (void)u;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (st && st->sc) return stream_on_data(st, data, len);
    if (!st || st->status >= 0 || st->done) return 0; /* refused already: discarded */
    if (len > 5 + g_max_message - st->in_len) {
        set_status(st, RESOURCE_EXHAUSTED, "request message larger than the server accepts "
                                           "(--max-message-bytes)");
        drop_input(st);
        return 0;
    }
    if (st->in_len + len > st->in_cap) {
        size_t cap = st->in_cap ? st->in_cap : 256;
        while (cap < st->in_len + len) cap *= 2;
        if (cap > 5 + g_max_message) cap = 5 + g_max_message;
        size_t extra = cap - st->in_cap;
        if (!budget_claim(extra, st)) {
            set_status(st, RESOURCE_EXHAUSTED, "server busy: too many request bytes held");
            drop_input(st);
            return 0;
        }
        uint8_t *in = realloc(st->in, cap);
        if (!in) {
            budget_give(extra);
            set_status(st, RESOURCE_EXHAUSTED, "server out of memory");
            drop_input(st);
            return 0;
        }
        st->in = in;
        st->in_cap = cap;
        hold_begin(st);
    }
    memcpy(st->in + st->in_len, data, len);
    st->in_len += len;
    if (st->in_len >= 5) { /* the declared length, refused as soon as it is known */
        size_t n = (size_t)st->in[1] << 24 | (size_t)st->in[2] << 16 | (size_t)st->in[3] << 8 |
                   st->in[4];
        if (n > g_max_message) {
            set_status(st, RESOURCE_EXHAUSTED, "request message larger than the server "
                                               "accepts (--max-message-bytes)");
            drop_input(st);
        }
    }
    return 0;
}

static void answer_error(stream_t *st, int code, const char *why);

/* The request is complete: judge it, then answer it at once or queue it for Python. */
static void complete(stream_t *st) {
    st->done = 1;
    if (!st->post || st->method == M_UNKNOWN) set_status(st, UNIMPLEMENTED, "unknown method");
    else if (!st->ctype_ok)
        set_status(st, UNIMPLEMENTED, "content-type must be application/grpc");
    else if (st->bad_timeout) set_status(st, INTERNAL, "malformed grpc-timeout");
    else if (st->status < 0) {
        size_t n = st->in_len < 5 ? 0
                   : (size_t)st->in[1] << 24 | (size_t)st->in[2] << 16 |
                         (size_t)st->in[3] << 8 | st->in[4];
        if (st->in_len < 5 || st->in_len != 5 + n)
            set_status(st, INTERNAL, "expected exactly one request message");
        else unary_decompress(st); /* grpc-encoding gzip, deflate; as grpcio */
    }
    if (st->status < 0 && g_drain_refused[st->method] &&
        __atomic_load_n(&g_draining, __ATOMIC_ACQUIRE))
        set_status(st, UNAVAILABLE, "server is shutting down: not taking new calls");
    if (st->status < 0 && st->deadline >= 0 && now_s() >= st->deadline)
        set_status(st, DEADLINE_EXCEEDED, "deadline exceeded before the decision was complete");
    if (st->status < 0 && g_max_calls > 0 &&
        __atomic_load_n(&g_outstanding, __ATOMIC_RELAXED) >= g_max_calls)
        set_status(st, RESOURCE_EXHAUSTED,
                   "server busy: too many calls in progress (--max-concurrent-rpcs)");
    call_t *c = NULL;
    if (st->status < 0 && !(c = calloc(1, sizeof *c)))
        set_status(st, RESOURCE_EXHAUSTED, "server out of memory");
    if (st->status >= 0) {
        drop_input(st);
        drop_metadata(st);
        answer_error(st, st->status, st->why);
        return;
    }
    /* The input buffer moves to the call (its budget with it): the prefix stays in front. */
    c->st = st;
    c->seq = ++g_call_seq;
    c->method = st->method;
    c->body = st->in;
    c->body_len = st->in_len;
    c->body_cap = st->in_cap;
    c->deadline = st->deadline;
    memcpy(c->peer, st->conn->peer, PEER_LEN);
    if ((c->auth = st->conn->auth)) tls_auth_hold(c->auth);
    c->md = st->md; /* the metadata too, its budget with it */
    c->md_len = st->md_len;
    c->md_cap = st->md_cap;
    st->md = NULL;
    st->md_len = st->md_cap = 0;
    st->in = NULL;
    st->in_len = st->in_cap = 0;
    st->call = c;
    st->conn->deciding++;
    __atomic_add_fetch(&g_outstanding, 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&g_mu);
    if (g_req_tail) g_req_tail->next = c;
    else g_req_head = c;
    g_req_tail = c;
    pthread_cond_signal(&g_cv);
    pthread_mutex_unlock(&g_mu);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *u) {
    if (f->hd.type == NGHTTP2_PING) return on_ping(u, f);
    if (f->hd.type != NGHTTP2_DATA && f->hd.type != NGHTTP2_HEADERS) return 0;
    stream_t *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (st && st->method >= STREAM_BASE) return stream_on_frame(st, f);
    if (!(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    if (st && !st->done) complete(st);
    return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *u) {
    (void)error_code; (void)u;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    stream_free(st);
    return 0;
}

/* ---- answers (I/O thread) ------------------------------------------------------------------ */

#define NV(n, v, vlen) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, (vlen), NGHTTP2_NV_FLAG_NONE}

static ssize_t read_reply(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                          uint32_t *flags, nghttp2_data_source *src, void *u) {
    (void)src; (void)u;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st || !st->out) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
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

/* grpc-message is percent-encoded: bytes outside printable ASCII, and '%'. Malloc'd. */
static char *percent_encode(const char *in) {
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strnlen(in, MAX_GRPC_MESSAGE);
    char *out = malloc(3 * n + 1);
    if (!out) return NULL;
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; p < (const unsigned char *)in + n;
         p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') out[o++] = (char)*p;
        else {
            out[o++] = '%';
            out[o++] = hex[*p >> 4];
            out[o++] = hex[*p & 15];
        }
    }
    out[o] = 0;
    return out;
}

static void reset(stream_t *st) {
    nghttp2_submit_rst_stream(st->conn->session, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_INTERNAL_ERROR);
    mark_dirty(st->conn);
}

/* A trailers-only error reply. `details`: base64 grpc-status-details-bin, or NULL. nghttp2
 * copies the header values, so they may be freed when this returns. */
static void answer_status(stream_t *st, int code, const char *encoded, const char *details) {
    st->conn->ping_strikes = 0; /* headers sent: pings are welcome again (grpcio's policy) */
    char num[8];
    int clen = snprintf(num, sizeof num, "%d", code);
    nghttp2_nv hdrs[5] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16),
                          NV("grpc-status", num, (size_t)clen),
                          NV("grpc-message", encoded, strlen(encoded)),
                          NV("grpc-status-details-bin", details ? details : "",
                             details ? strlen(details) : 0)};
    if (nghttp2_submit_response(st->conn->session, st->id, hdrs, details ? 5 : 4, NULL) != 0)
        reset(st);
    mark_dirty(st->conn);
}

static void answer_error(stream_t *st, int code, const char *why) {
    char *encoded = percent_encode(why ? why : "");
    if (!encoded) return reset(st);
    answer_status(st, code, encoded, NULL);
    free(encoded);
}

#include "_h2_stream.c"

/* ---- request bytes taken back from slow requests (I/O thread) -------------------------------- */

/* The request-byte budget (g_budget) is the whole server's. A client sending requests' first
 * bytes and never their last held all of it from one connection (16 streams of 2 MiB declared
 * 4 MiB: 32 MiB sent), and every other client's call was refused RESOURCE_EXHAUSTED "server
 * busy" for as long as it kept the connection alive (a byte within the idle timeout), where
 * grpcio serves on. So a request that cannot get its bytes takes them back from the requests
 * that have held theirs longest without completing, oldest first (grpc's own transport
 * likewise cancels streams to reclaim memory under pressure): each is reset
 * ENHANCE_YOUR_CALM (a grpc client sees RESOURCE_EXHAUSTED) and its bytes given back. Calls
 * complete and queued or deciding are never taken back (--max-concurrent-rpcs bounds them).
 * g_hold: streams holding a request's bytes (a unary request or a streaming call's message
 * not yet whole, header metadata), oldest first; a stream whose bytes moved on leaves it when
 * it is freed or met here. */
static stream_t *g_hold_head, *g_hold_tail;

static void hold_begin(stream_t *st) {
    if (st->holding) return;
    st->holding = 1;
    st->hold_next = NULL;
    st->hold_prev = g_hold_tail;
    if (g_hold_tail) g_hold_tail->hold_next = st;
    else g_hold_head = st;
    g_hold_tail = st;
}

static void hold_end(stream_t *st) {
    if (!st->holding) return;
    st->holding = 0;
    if (st->hold_prev) st->hold_prev->hold_next = st->hold_next;
    else g_hold_head = st->hold_next;
    if (st->hold_next) st->hold_next->hold_prev = st->hold_prev;
    else g_hold_tail = st->hold_prev;
    st->hold_prev = st->hold_next = NULL;
}

/* The stream's request bytes given back, the stream reset. */
static void reclaim(stream_t *st) {
    drop_input(st);
    drop_metadata(st);
    scall_t *sc = st->sc;
    if (sc && sc->in) {
        budget_give(sc->in_cap);
        free(sc->in);
        sc->in = NULL;
        sc->in_len = sc->in_cap = 0;
    }
    if (sc && !sc->finished) {
        sc->finished = 1;
        post_simple(sc->id, EV_GONE);
    }
    if (!sc) {
        st->done = 1; /* complete() never runs for it: nothing is answered but the reset */
        set_status(st, RESOURCE_EXHAUSTED, "request bytes reclaimed");
    }
    nghttp2_submit_rst_stream(st->conn->session, NGHTTP2_FLAG_NONE, st->id,
                              NGHTTP2_ENHANCE_YOUR_CALM);
    mark_dirty(st->conn);
}

/* budget_take(n) for `self`'s request, taking the bytes back from the oldest other holders
 * while the budget is short; 0 when none is left to take from. */
static int budget_claim(size_t n, const stream_t *self) {
    while (!budget_take(n)) {
        stream_t *st = g_hold_head;
        if (st == self) st = st->hold_next;
        if (!st) return 0;
        hold_end(st);
        if (st->in || st->md || (st->sc && st->sc->in)) reclaim(st);
    }
    return 1;
}

/* Python's reply to `c` reaches its stream (if still there). */
static void deliver(call_t *c) {
    stream_t *st = c->st;
    __atomic_sub_fetch(&g_outstanding, 1, __ATOMIC_RELAXED);
    if (!st) return call_free(c);
    st->call = NULL;
    st->conn->deciding--;
    st->conn->last_active = now_s();
    st->conn->ping_strikes = 0;
    if (c->status == OK && c->out) {
        st->out = c->out; /* the stream owns it now */
        st->out_len = c->out_len;
        c->out = NULL;
        nghttp2_nv hdrs[] = {NV(":status", "200", 3), NV("content-type", "application/grpc", 16),
                             NV("grpc-accept-encoding", ACCEPT_ENCODING, sizeof ACCEPT_ENCODING - 1)};
        nghttp2_data_provider prd = {.read_callback = read_reply};
        if (nghttp2_submit_response(st->conn->session, st->id, hdrs, 3, &prd) != 0) reset(st);
        mark_dirty(st->conn);
    } else if (c->message) {
        answer_status(st, c->status, c->message, c->details);
    } else {
        answer_error(st, INTERNAL, "the server failed to answer");
    }
    call_free(c);
}

/* ---- connections and the loop (I/O thread) ------------------------------------------------- */

static void conn_free(conn_t *c) {
    for (stream_t *st = c->streams, *next; st; st = next) {
        next = st->next;
        if (st->call) {
            call_cancelled(st->call);
            st->call->st = NULL;
            __atomic_store_n(&st->call->cancelled, 1, __ATOMIC_RELEASE);
        }
        st->call = NULL;
        st->conn = NULL;
        stream_free(st);
    }
    nghttp2_session_del(c->session);
    /* Out of the epoll set first: close() alone leaves it there while another descriptor
     * shares the socket (a dup, or a fork's copy before its exec: git at start-up, a worker
     * dealing connections), and epoll would then report events for this freed conn. */
    epoll_ctl(g_epoll, EPOLL_CTL_DEL, c->fd, NULL);
    tls_free(c->tls); /* before the close: its close_notify */
    if (c->auth) tls_auth_drop(c->auth);
    close(c->fd);
    free(c->obuf);
    if (c->prev) c->prev->next = c->next;
    else g_conns_list = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c);
    g_conns--;
}

static void format_peer(const struct sockaddr_storage *sa, socklen_t salen, char *out) {
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(out, PEER_LEN, "ipv4:%s:%u", host, ntohs(a->sin_port));
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(out, PEER_LEN, "ipv6:[%s]:%u", host, ntohs(a->sin6_port));
    } else if (sa->ss_family == AF_UNIX) {
        /* As grpc: "unix:" and the client's bound path, empty for an unnamed client socket */
        const struct sockaddr_un *a = (const struct sockaddr_un *)sa;
        size_t n = salen > offsetof(struct sockaddr_un, sun_path)
                       ? salen - offsetof(struct sockaddr_un, sun_path) : 0;
        n = strnlen(a->sun_path, n < sizeof a->sun_path ? n : sizeof a->sun_path);
        snprintf(out, PEER_LEN, "unix:%.*s", (int)n, a->sun_path);
    } else {
        snprintf(out, PEER_LEN, "unknown");
    }
}

static void notice_drain(conn_t *c) {
    if (c->noticed) return;
    c->noticed = 1;
    nghttp2_submit_shutdown_notice(c->session); /* GOAWAY: open no new streams here */
    mark_dirty(c);
}

static void accept_all(int lfd) {
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        int fd = accept4(lfd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) return; /* EAGAIN, or a transient error (EMFILE...): the next event retries */
        if (g_ndirty >= g_max_conns) { /* the dirty list has room for max_conns */
            close(fd);
            continue;
        }
        conn_t *c = g_conns < g_max_conns ? calloc(1, sizeof *c) : NULL;
        if (!c) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* a Unix socket: EOPNOTSUPP */
        c->fd = fd;
        c->last_active = c->last_read = now_s();
        format_peer(&sa, salen, c->peer);
        if (nghttp2_session_server_new2(&c->session, g_cbs, c,
                                        sa.ss_family == AF_UNIX ? g_opt_unix : g_opt) != 0) {
            close(fd);
            free(c);
            continue;
        }
        g_conns++;
        c->next = g_conns_list;
        if (g_conns_list) g_conns_list->prev = c;
        g_conns_list = c;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if ((tls_enabled() && !(c->handshaking = !!(c->tls = tls_new(fd)))) ||
            epoll_ctl(g_epoll, EPOLL_CTL_ADD, fd, &ev) < 0 ||
            nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, g_settings, 3) != 0)
            c->dead = 1;
        /* Accepted while draining: no GOAWAY, so a health check still hears NOT_SERVING (a
         * Check is refused UNAVAILABLE), as on the grpcio transport until the final stop. */
        mark_dirty(c);
    }
}

static void read_conn(conn_t *c) {
    static uint8_t buf[READ_CHUNK];
    for (int i = 0; i < 4 && !c->dead; i++) { /* then others' turn; epoll is level-triggered */
        ssize_t n = c->tls ? tls_recv(c->tls, buf, sizeof buf, &c->tls_wr)
                           : recv(c->fd, buf, sizeof buf, 0);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) break;
        if (n <= 0 || nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0) c->dead = 1;
        else c->last_active = c->last_read = now_s();
        if (n < (ssize_t)sizeof buf && !c->tls) break; /* TLS: a record (16 KiB) at a time */
    }
    mark_dirty(c);
}

/* Sends what nghttp2 has queued, gathered into one buffer per send(). 0, or -1 when the
 * connection is gone; leaves unsent bytes in obuf when the socket is full. */
static int conn_write(conn_t *c) {
    if (c->handshaking) return 0; /* nothing goes out before the TLS handshake is done */
    for (;;) {
        if (c->ooff < c->olen) {
            ssize_t n = c->tls ? tls_send(c->tls, c->obuf + c->ooff, c->olen - c->ooff)
                               : send(c->fd, c->obuf + c->ooff, c->olen - c->ooff, MSG_NOSIGNAL);
            if (n < 0) return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -1;
            if ((c->ooff += (size_t)n) < c->olen) return 0;
        }
        c->olen = c->ooff = 0;
        while (c->olen < OUT_CHUNK) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->session, &data);
            if (n < 0) return -1;
            if (n == 0) break;
            if (c->olen + (size_t)n > c->ocap) {
                size_t want = c->olen + (size_t)n;
                size_t cap = c->ocap * 2 > want ? c->ocap * 2 : want;
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
        int wr = !c->dead && (c->ooff < c->olen || c->tls_wr);
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

/* ---- TLS (I/O thread; _tls.c) -------------------------------------------------------------- */

/* A handshake must end within the idle timeout (or grpc's 120 s without one), counted from the
 * accept whatever arrives meanwhile: a client dripping its ClientHello is closed too. */
static double tls_handshake_limit(void) {
    return g_idle_s > 0 && g_idle_s < HANDSHAKE_MAX_S ? g_idle_s : HANDSHAKE_MAX_S;
}

/* An event on a TLS connection still handshaking, or whose last read waited for the socket to
 * be writable. Once the handshake is done (ALPN h2), the connection's auth context is made and
 * the SETTINGS nghttp2 queued at the accept go out; a failed handshake, or one without h2,
 * closes the connection before any HTTP/2 byte. */
static void tls_event(conn_t *c) {
    c->tls_wr = 0;
    if (!c->handshaking) return read_conn(c);
    switch (tls_handshake(c->tls)) {
    case TLS_WANT_READ: break;
    case TLS_WANT_WRITE: c->tls_wr = 1; break;
    case TLS_DONE:
        c->handshaking = 0;
        c->last_active = now_s();
        if (!(c->auth = tls_auth_new(c->tls))) c->dead = 1;
        break;
    default: c->dead = 1;
    }
    mark_dirty(c);
}

/* GOAWAY (NO_ERROR, `why` as its debug data), one try to send it, and the connection closes. */
static void goaway_close(conn_t *c, const char *why) {
    nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->session), NGHTTP2_NO_ERROR,
                          (const uint8_t *)why, strlen(why));
    conn_write(c);
    c->dead = 1;
    mark_dirty(c);
}

/* The server's own keepalive PINGs, grpcio's (GRPC_ARG_KEEPALIVE_TIME_MS and _TIMEOUT_MS, 2
 * hours and 20 s by default): a connection nothing has been read from for g_keepalive_s is
 * sent a PING, and closed (GOAWAY first) if its ACK has not come g_keepalive_timeout_s later.
 * The idle timeout spares a connection with a call open, so without these a client gone
 * without a FIN (its host powered off, a NAT that forgot it) would keep its connection, and
 * its call, for ever: a health Watch above all, which a grpc client doing client-side health
 * checks holds open for its connection's life, and which takes one of the Watch slots.
 * Called by the idle sweep, every half second; on_ping (_h2_stream.c) takes the ACK. */
static void keepalive(conn_t *c, double now) {
    if (g_keepalive_s <= 0 || c->dead || c->handshaking) return;
    if (c->ping_sent > 0) {
        if (now - c->ping_sent >= g_keepalive_timeout_s) goaway_close(c, "keepalive_timeout");
    } else if (now - c->last_read >= g_keepalive_s &&
               nghttp2_submit_ping(c->session, NGHTTP2_FLAG_NONE, KEEPALIVE_OPAQUE) == 0) {
        c->ping_sent = now;
        mark_dirty(c);
    }
}

/* Connections with nothing deciding and no bytes received for the idle timeout are closed
 * (GOAWAY first): a client that never completes its handshake or a call, or went away. Those
 * with a call open are checked by keepalive() instead. */
static void sweep_idle(double now) {
    for (conn_t *c = g_conns_list; c; c = c->next) {
        keepalive(c, now);
        double limit = c->handshaking ? tls_handshake_limit() : g_idle_s;
        if (c->dead || c->deciding || limit <= 0 || now - c->last_active < limit) continue;
        goaway_close(c, "");
    }
}

/* A reply handed back alone (reply()) is taken when its batch is answered (answer() wakes the
 * loop) or when this timer fires, armed by the first such reply since the loop last took
 * replies, REPLY_DELAY_NS after it: a batch decided within that costs two timerfd_settime()
 * calls and no wake-up more than before, a longer one (a slow store, 20x3 calls) a wake-up
 * per REPLY_DELAY_NS at most. Taking replies on every pass, with the loop passing at least
 * every millisecond while calls were with Python, cost ~20% server CPU per call at one call
 * in flight on this VM (bench/RESULTS.md "Session 23"). Disarmed (flag cleared first) before
 * the replies are taken: a reply queued after the take re-arms it after the disarm. */
static void reply_timer(long ns) {
    struct itimerspec t = {.it_value = {.tv_sec = 0, .tv_nsec = ns}};
    timerfd_settime(g_tfd, 0, &t, NULL);
}

static void reply_timer_open(void) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &T_TAG};
    g_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (g_tfd >= 0 && epoll_ctl(g_epoll, EPOLL_CTL_ADD, g_tfd, &ev) < 0) {
        close(g_tfd);
        g_tfd = -1; /* reply() then wakes the loop for each reply */
    }
}

static void take_replies(void) {
    if (__atomic_exchange_n(&g_rep_armed, 0, __ATOMIC_SEQ_CST)) reply_timer(0);
    pthread_mutex_lock(&g_mu);
    call_t *c = g_rep_head;
    g_rep_head = g_rep_tail = NULL;
    pthread_mutex_unlock(&g_mu);
    while (c) {
        call_t *next = c->next;
        c->next = NULL;
        deliver(c);
        c = next;
    }
}

static void read_wake(int fd) {
    uint64_t v;
    ssize_t r = read(fd, &v, sizeof v);
    (void)r;
}

static void *io_main(void *arg) {
    (void)arg;
    struct epoll_event evs[64];
    double last_sweep = now_s();
    reply_timer_open();
    while (!__atomic_load_n(&g_stopping, __ATOMIC_ACQUIRE)) {
        int n = epoll_wait(g_epoll, evs, 64, 250);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p >= (void *)g_lfds && p < (void *)(g_lfds + g_nlfds)) accept_all(*(int *)p);
            else if (p == &E_TAG) {
                read_wake(g_evfd);
                take_replies();
                stream_ops();
            } else if (p == &T_TAG) {
                read_wake(g_tfd);
                take_replies();
            }
            else {
                conn_t *c = p;
                if (!c->dead && (c->handshaking || (c->tls_wr && evs[i].events & EPOLLOUT)))
                    tls_event(c);
                else if (!c->dead && evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) read_conn(c);
                else mark_dirty(c); /* writable again */
            }
        }
        if (!g_drain_seen && __atomic_load_n(&g_draining, __ATOMIC_ACQUIRE)) {
            g_drain_seen = 1;
            for (conn_t *c = g_conns_list; c; c = c->next) notice_drain(c);
        }
        double now = now_s();
        if ((g_idle_s > 0 || g_keepalive_s > 0 || tls_enabled()) && now - last_sweep >= 0.5) {
            last_sweep = now;
            sweep_idle(now);
        }
        flush_dirty();
    }
    /* Stopping: the last replies (and streams' trailers), a final GOAWAY to everyone, one try
     * to send, then close. */
    take_replies();
    stream_ops();
    if (g_tfd >= 0) close(g_tfd);
    g_tfd = -1;
    for (conn_t *c = g_conns_list; c; c = c->next) {
        nghttp2_submit_goaway(c->session, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->session),
                              NGHTTP2_NO_ERROR, NULL, 0);
        conn_write(c);
    }
    while (g_conns_list) conn_free(g_conns_list);
    return NULL;
}

/* ---- the Python side ------------------------------------------------------------------------ */

/* paths: ((path, refused_when_draining), ...), or NULL/None for the module's PATHS (Check and
 * Plan refused when draining). */
static int set_paths(PyObject *paths) {
    if (!paths || paths == Py_None) {
        for (int i = 0; i < N_DEFAULT_PATHS; i++) {
            strcpy(g_paths[i], g_default_paths[i]);
            g_drain_refused[i] = g_default_drain_refused[i];
        }
        g_npaths = N_DEFAULT_PATHS;
        return 0;
    }
    PyObject *seq = PySequence_Fast(paths, "paths must be a sequence of (path, bool)");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > MAX_PATHS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "paths: between 1 and %d of them", MAX_PATHS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *path;
        Py_ssize_t len;
        int refused;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "s#p", &path, &len, &refused)) {
            Py_DECREF(seq);
            return -1;
        }
        if (len < 2 || len > MAX_PATH_LEN || path[0] != '/') {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "paths: %R is not a gRPC path", PySequence_Fast_GET_ITEM(seq, i));
            return -1;
        }
        memcpy(g_paths[i], path, (size_t)len);
        g_paths[i][len] = 0;
        g_drain_refused[i] = refused;
    }
    g_npaths = (int)n;
    Py_DECREF(seq);
    return 0;
}

/* listen_fd: one listening socket's fd, or a sequence of them (TCP and Unix alike). */
static int set_listeners(PyObject *fds) {
    PyObject *seq = PyLong_Check(fds) ? PyTuple_Pack(1, fds)
                                      : PySequence_Tuple(fds);
    if (!seq) return -1;
    Py_ssize_t n = PyTuple_GET_SIZE(seq);
    if (n < 1 || n > MAX_LISTENERS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "listen_fd: between 1 and %d sockets", MAX_LISTENERS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long fd = PyLong_AsLong(PyTuple_GET_ITEM(seq, i));
        if (fd == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (fd < 0 || fd > INT32_MAX) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "listen_fd: %ld is no descriptor", fd);
            return -1;
        }
        g_lfds[i] = (int)fd;
    }
    g_nlfds = (int)n;
    Py_DECREF(seq);
    return 0;
}

static PyObject *py_start(PyObject *self, PyObject *args, PyObject *kw) {
    (void)self;
    static char *names[] = {"listen_fd", "max_message", "max_streams", "max_conns", "max_calls",
                            "idle_timeout", "paths", "keepalive_time", "keepalive_timeout",
                            NULL};
    int max_streams = 100, max_conns = 10000, max_calls = 1000;
    PyObject *lfds;
    Py_ssize_t max_message = 4 << 20;
    double idle = 300, keepalive_time = 7200, keepalive_timeout = 20; /* grpcio's defaults */
    PyObject *paths = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|niiidOdd", names, &lfds, &max_message,
                                     &max_streams, &max_conns, &max_calls, &idle, &paths,
                                     &keepalive_time, &keepalive_timeout))
        return NULL;
    if (g_running) return PyErr_Format(PyExc_RuntimeError, "a native server is already running");
    if (set_paths(paths) < 0 || set_listeners(lfds) < 0) return NULL;
    if (max_message < 0 || max_message > (1 << 30) || max_streams < 1 || max_conns < 0 ||
        max_calls < 0 || !(idle >= 0) || !(keepalive_time >= 0) || !(keepalive_timeout > 0))
        return PyErr_Format(PyExc_ValueError, "a limit out of range");
    g_max_message = (size_t)max_message;
    g_budget = 4 * (g_max_message + 5) > MIN_BUDGET ? 4 * (g_max_message + 5) : MIN_BUDGET;
    g_max_conns = max_conns ? max_conns : 1000000;
    g_max_calls = max_calls;
    g_idle_s = idle;
    g_keepalive_s = keepalive_time;
    g_keepalive_timeout_s = keepalive_timeout;
    free(g_dirty);
    g_dirty = calloc((size_t)g_max_conns + 1, sizeof *g_dirty);
    if (!g_dirty) return PyErr_NoMemory();
    g_settings[0] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
                                             (uint32_t)max_streams};
    g_settings[1] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
                                             MAX_HEADER_BYTES};
    g_settings[2] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20};
    if (!g_cbs) {
        nghttp2_session_callbacks_new(&g_cbs);
        nghttp2_session_callbacks_set_on_begin_headers_callback(g_cbs, on_begin_headers);
        nghttp2_session_callbacks_set_on_header_callback(g_cbs, on_header);
        nghttp2_session_callbacks_set_on_data_chunk_recv_callback(g_cbs, on_data);
        nghttp2_session_callbacks_set_on_frame_recv_callback(g_cbs, on_frame_recv);
        nghttp2_session_callbacks_set_on_stream_close_callback(g_cbs, on_close);
        nghttp2_option_new(&g_opt);
        nghttp2_option_set_max_settings(g_opt, 32);          /* SETTINGS entries per frame */
        nghttp2_option_set_max_outbound_ack(g_opt, 1000);     /* PING/SETTINGS floods */
        nghttp2_option_set_stream_reset_rate_limit(g_opt, 1000, 33); /* rapid reset */
        nghttp2_option_new(&g_opt_unix);
        if (g_opt_unix) {
            nghttp2_option_set_max_settings(g_opt_unix, 32);
            nghttp2_option_set_max_outbound_ack(g_opt_unix, 1000);
            nghttp2_option_set_stream_reset_rate_limit(g_opt_unix, 1000, 33);
            nghttp2_option_set_no_http_messaging(g_opt_unix, 1); /* relaxed_header_ok instead */
        }
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&g_cv, &ca);
        pthread_condattr_destroy(&ca);
    }
    if (!g_cbs || !g_opt || !g_opt_unix) return PyErr_NoMemory();
    g_draining = g_stopping = 0;
    g_drain_seen = 0;
    g_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    g_epoll = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event eev = {.events = EPOLLIN, .data.ptr = &E_TAG};
    int added = g_evfd >= 0 && g_epoll >= 0;
    for (int i = 0; added && i < g_nlfds; i++) {
        struct epoll_event lev = {.events = EPOLLIN, .data.ptr = &g_lfds[i]};
        added = epoll_ctl(g_epoll, EPOLL_CTL_ADD, g_lfds[i], &lev) == 0;
    }
    if (!added || epoll_ctl(g_epoll, EPOLL_CTL_ADD, g_evfd, &eev) < 0 ||
        pthread_create(&g_thread, NULL, io_main, NULL) != 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        if (g_evfd >= 0) close(g_evfd);
        if (g_epoll >= 0) close(g_epoll);
        g_evfd = g_epoll = -1;
        return NULL;
    }
    g_running = 1;
    Py_RETURN_NONE;
}

static void to_timespec(double t, struct timespec *ts) {
    ts->tv_sec = (time_t)t;
    ts->tv_nsec = (long)((t - (double)ts->tv_sec) * 1e9);
}

/* With several decision threads (under g_mu): when a thread finding requests queued should
 * leave them to the one that took a batch less than STANDBY_S ago (0: take them now). One
 * batch decided at a time costs the least CPU per call, the GIL being one: a thread waking
 * for each request to take a share spent ~14% more (bench/RESULTS.md, "Decision threads").
 * A batch out longer than that is waiting outside the GIL (a slow rate-limit store): the
 * requests behind it are taken by a thread standing by, at most STANDBY_S later. */
static double standby_until(void) {
    return g_deciding > 0 ? g_last_taken + STANDBY_S : 0;
}

static void standby_init(void) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&g_standby_cv, &ca);
    pthread_condattr_destroy(&ca);
}

/* take(timeout) -> list of (method, body, deadline | None, peer, metadata, auth | None): the
 * requests queued now (auth: the TLS connection's one-item list, tls_auth_py), or
 * the first to come within `timeout` seconds; [] on time-out or once the server stops. */
static PyObject *py_take(PyObject *self, PyObject *arg) {
    (void)self;
    double timeout = PyFloat_AsDouble(arg);
    if (timeout == -1 && PyErr_Occurred()) return NULL;
    if (!g_running) return PyErr_Format(PyExc_RuntimeError, "the native server is not running");
    if (g_batch_out || g_taking) /* this thread's g_batch is still out */
        return PyErr_Format(PyExc_RuntimeError, "answer() the last batch before taking another");
    int n = 0;
    g_taking = 1;
    __atomic_add_fetch(&g_out_batches, 1, __ATOMIC_ACQ_REL); /* stop() waits for it */
    Py_BEGIN_ALLOW_THREADS
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    if (timeout > 0 && timeout < 3600) {
        double s = (double)until.tv_sec + (double)until.tv_nsec / 1e9 + timeout;
        until.tv_sec = (time_t)s;
        until.tv_nsec = (long)((s - (double)until.tv_sec) * 1e9);
    }
    call_t *gone = NULL, *gone_tail = NULL; /* cancelled while queued: back to the I/O thread */
    pthread_once(&g_standby_once, standby_init);
    pthread_mutex_lock(&g_mu);
    while (!__atomic_load_n(&g_stopping, __ATOMIC_ACQUIRE) && timeout > 0) {
        if (g_req_head) {
            /* Standing by on its own condition: complete() signals g_cv for each request,
             * and waking a thread per request only to wait again cost as much as taking. */
            double standby = standby_until();
            if (now_s() >= standby) break;
            struct timespec ts;
            to_timespec(standby, &ts);
            pthread_cond_timedwait(&g_standby_cv, &g_mu, &ts);
        } else if (pthread_cond_timedwait(&g_cv, &g_mu, &until) == ETIMEDOUT && !g_req_head) {
            break;
        }
    }
    while (g_req_head && n < MAX_BATCH) {
        call_t *c = g_req_head;
        g_req_head = c->next;
        if (!g_req_head) g_req_tail = NULL;
        c->next = NULL;
        if (__atomic_load_n(&c->cancelled, __ATOMIC_ACQUIRE)) {
            if (gone_tail) gone_tail->next = c;
            else gone = c;
            gone_tail = c;
        } else {
            g_batch[n++] = c;
        }
    }
    if (gone) { /* freed by the I/O thread (deliver), which counts it answered */
        if (g_rep_tail) g_rep_tail->next = gone;
        else g_rep_head = gone;
        g_rep_tail = gone_tail;
    }
    if (n) {
        g_deciding++;
        g_last_taken = now_s();
    }
    pthread_mutex_unlock(&g_mu);
    if (gone) wake_io();
    Py_END_ALLOW_THREADS
    g_taking = 0;
    tls_release();
    g_nbatch = n;
    g_batch_out = n > 0;
    if (!n) __atomic_sub_fetch(&g_out_batches, 1, __ATOMIC_ACQ_REL);
    if (n) {
        __atomic_add_fetch(&g_batches, 1, __ATOMIC_RELAXED);
        __atomic_add_fetch(&g_requests, (unsigned long long)n, __ATOMIC_RELAXED);
    }
    PyObject *list = PyList_New(n);
    for (int i = 0; i < n && list; i++) {
        call_t *c = g_batch[i];
        PyObject *body = PyBytes_FromStringAndSize((char *)c->body + 5, (Py_ssize_t)c->body_len - 5);
        budget_give(c->body_cap);
        free(c->body);
        c->body = NULL;
        /* metadata: b"name\0value\0..." (b"" when none), split by the caller if it reads it */
        PyObject *md = PyBytes_FromStringAndSize((char *)c->md, (Py_ssize_t)c->md_len);
        if (c->md) budget_give(c->md_cap);
        free(c->md);
        c->md = NULL;
        PyObject *item = NULL;
        PyObject *auth = c->auth ? tls_auth_py(c->auth) : Py_NewRef(Py_None);
        if (body && md && auth) {
            if (c->deadline >= 0)
                item = Py_BuildValue("(iNdsNN)", c->method, body, c->deadline, c->peer, md, auth);
            else item = Py_BuildValue("(iNOsNN)", c->method, body, Py_None, c->peer, md, auth);
        } else {
            Py_XDECREF(body);
            Py_XDECREF(md);
            Py_XDECREF(auth);
        }
        if (!item) Py_CLEAR(list);
        else PyList_SET_ITEM(list, i, item);
    }
    return list; /* NULL on a memory error: the batch is still out, answer() fails it */
}

/* Python's reply for one call: bytes (the message), or (code, message, details | None). */
static void set_reply(call_t *c, PyObject *item) {
    if (PyBytes_Check(item)) {
        Py_ssize_t n = PyBytes_GET_SIZE(item);
        if ((uint64_t)n > 0xffffffffu || !(c->out = malloc(5 + (size_t)n))) {
            c->status = INTERNAL;
            c->message = percent_encode("the reply could not be framed");
            return;
        }
        c->out[0] = 0;
        c->out[1] = (uint8_t)(n >> 24); c->out[2] = (uint8_t)(n >> 16);
        c->out[3] = (uint8_t)(n >> 8);  c->out[4] = (uint8_t)n;
        memcpy(c->out + 5, PyBytes_AS_STRING(item), (size_t)n);
        c->out_len = 5 + (size_t)n;
        c->status = OK;
        return;
    }
    long code = -1;
    const char *msg = NULL, *details = NULL;
    if (PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 3) {
        code = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        msg = PyUnicode_AsUTF8(PyTuple_GET_ITEM(item, 1));
        PyObject *d = PyTuple_GET_ITEM(item, 2);
        if (d != Py_None) details = PyUnicode_AsUTF8(d);
        PyErr_Clear();
    }
    if (code < 1 || code > 16 || !msg) {
        code = INTERNAL;
        msg = "the server failed to answer";
        details = NULL;
    }
    c->status = (int)code;
    c->message = percent_encode(msg);
    /* base64 only (the caller's): anything else, or too long, is left out */
    if (details && strlen(details) <= MAX_DETAILS &&
        strspn(details, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") ==
            strlen(details))
        c->details = strdup(details);
}

/* reply(i, reply): call i of the batch taken is decided; its reply goes to the I/O thread now,
 * which sends it with the batch's answer() or REPLY_DELAY_NS later at most (see reply_timer),
 * not only when the whole batch is answered. The call is no longer the batch's: answer()
 * skips it, active(i) is False, call_id(i) raises. */
static PyObject *py_reply(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    (void)self;
    if (nargs != 2) return PyErr_Format(PyExc_TypeError, "reply(i, reply) takes 2 arguments");
    long i = PyLong_AsLong(args[0]);
    if (i == -1 && PyErr_Occurred()) return NULL;
    if (!g_batch_out || i < 0 || i >= g_nbatch || !g_batch[i])
        return PyErr_Format(PyExc_IndexError, "no call %ld left to answer in the batch", i);
    call_t *c = g_batch[i];
    g_batch[i] = NULL;
    set_reply(c, args[1]);
    pthread_mutex_lock(&g_mu);
    if (g_rep_tail) g_rep_tail->next = c;
    else g_rep_head = c;
    g_rep_tail = c;
    pthread_mutex_unlock(&g_mu);
    if (g_tfd < 0) wake_io();
    else if (!__atomic_exchange_n(&g_rep_armed, 1, __ATOMIC_SEQ_CST)) reply_timer(REPLY_DELAY_NS);
    Py_RETURN_NONE;
}

/* answer(replies): one item per request of the last take(), in order (the items of calls
 * already handed back by reply() are ignored). Any other list fails every call of the batch
 * still here (INTERNAL) and raises. Ends the batch and wakes the I/O thread. */
static PyObject *py_answer(PyObject *self, PyObject *arg) {
    (void)self;
    if (!g_batch_out) return PyErr_Format(PyExc_RuntimeError, "no batch to answer");
    int ok = PyList_Check(arg) && PyList_GET_SIZE(arg) == g_nbatch;
    for (int i = 0; i < g_nbatch; i++)
        if (g_batch[i]) set_reply(g_batch[i], ok ? PyList_GET_ITEM(arg, i) : Py_None);
    pthread_mutex_lock(&g_mu);
    for (int i = 0; i < g_nbatch; i++) {
        if (!g_batch[i]) continue;
        if (g_rep_tail) g_rep_tail->next = g_batch[i];
        else g_rep_head = g_batch[i];
        g_rep_tail = g_batch[i];
    }
    g_deciding--;
    pthread_mutex_unlock(&g_mu);
    g_nbatch = g_batch_out = 0;
    __atomic_sub_fetch(&g_out_batches, 1, __ATOMIC_ACQ_REL);
    wake_io();
    if (!ok) return PyErr_Format(PyExc_ValueError, "answer() needs one reply per request taken");
    Py_RETURN_NONE;
}

static PyObject *py_drain(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    if (g_running) {
        __atomic_store_n(&g_draining, 1, __ATOMIC_RELEASE);
        wake_io();
    }
    Py_RETURN_NONE;
}

static PyObject *py_outstanding(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return PyLong_FromLong(__atomic_load_n(&g_outstanding, __ATOMIC_RELAXED));
}

static PyObject *py_stats(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    return Py_BuildValue("(KK)", __atomic_load_n(&g_batches, __ATOMIC_RELAXED),
                         __atomic_load_n(&g_requests, __ATOMIC_RELAXED));
}

/* stop(): the I/O thread sends a final GOAWAY, closes every connection and ends; requests
 * not yet taken are dropped (their clients see the connection close). The listening socket
 * is the caller's to close. */
static PyObject *py_stop(PyObject *self, PyObject *unused) {
    (void)self; (void)unused;
    if (!g_running) Py_RETURN_NONE;
    if (__atomic_load_n(&g_out_batches, __ATOMIC_ACQUIRE))
        return PyErr_Format(PyExc_RuntimeError, "a batch is still being decided");
    Py_BEGIN_ALLOW_THREADS
    pthread_mutex_lock(&g_mu);
    __atomic_store_n(&g_stopping, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&g_cv);
    pthread_mutex_unlock(&g_mu);
    wake_io();
    pthread_join(g_thread, NULL);
    Py_END_ALLOW_THREADS
    pthread_mutex_lock(&g_mu);
    call_t *c = g_req_head;
    g_req_head = g_req_tail = NULL;
    pthread_mutex_unlock(&g_mu);
    while (c) {
        call_t *next = c->next;
        call_free(c);
        __atomic_sub_fetch(&g_outstanding, 1, __ATOMIC_RELAXED);
        c = next;
    }
    streams_clear();
    close(g_epoll);
    close(g_evfd);
    g_epoll = g_evfd = -1;
    g_running = 0;
    tls_release();
    Py_RETURN_NONE;
}

/* use_tls(cert_pem, key_pem, client_ca_pem | None), or use_tls(None): what the next start()
 * serves, TLS (mTLS with client CAs) or plaintext. */
static PyObject *py_use_tls(PyObject *self, PyObject *args) {
    (void)self;
    const char *cert = NULL, *key = NULL, *ca = NULL;
    Py_ssize_t cert_len = 0, key_len = 0, ca_len = 0;
    if (!PyArg_ParseTuple(args, "z#|y#z#", &cert, &cert_len, &key, &key_len, &ca, &ca_len))
        return NULL;
    if (g_running) return PyErr_Format(PyExc_RuntimeError, "the native server is running");
    if (cert && !key) return PyErr_Format(PyExc_ValueError, "use_tls: a key goes with the certificate");
    if (tls_configure(cert, cert_len, key, key_len, ca, ca_len) < 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"start", (PyCFunction)(void (*)(void))py_start, METH_VARARGS | METH_KEYWORDS,
     "start(listen_fd | (fd, ...), max_message, max_streams, max_conns, max_calls, idle_timeout, paths): run "
     "the I/O thread on the listening (non-blocking) socket, serving paths "
     "((path, refused_when_draining), ...; PATHS by default)"},
    {"take", py_take, METH_O,
     "take(timeout) -> [(method, body, deadline | None, peer, metadata, auth | None)]: the next batch "
     "(GIL released)"},
    {"answer", py_answer, METH_O,
     "answer([bytes | (code, message, details_b64 | None)]): the last batch's replies"},
    {"reply", (PyCFunction)(void (*)(void))py_reply, METH_FASTCALL,
     "reply(i, bytes | (code, message, details_b64 | None)): call i's reply, sent before the "
     "batch is answered"},
    {"drain", py_drain, METH_NOARGS, "drain(): GOAWAY to every connection, new Checks refused"},
    {"outstanding", py_outstanding, METH_NOARGS, "calls taken from the network, not yet answered"},
    {"stats", py_stats, METH_NOARGS, "(batches, requests) taken so far"},
    {"stop", py_stop, METH_NOARGS, "stop(): close every connection, end the I/O thread"},
    {"use_tls", py_use_tls, METH_VARARGS,
     "use_tls(cert_pem, key_pem, client_ca_pem | None) or use_tls(None): TLS (mTLS) or plaintext "
     "for the next start()"},
    {"serve_streams", py_serve_streams, METH_VARARGS,
     "serve_streams(paths, max_open, out_cap): the streaming paths (before start())"},
    {"stream_take", py_stream_take, METH_O,
     "stream_take(timeout) -> [(id, kind, ...)]: streaming calls' events (GIL released)"},
    {"stream_send", py_stream_send, METH_VARARGS, "stream_send(id, message) -> queued"},
    {"stream_finish", py_stream_finish, METH_VARARGS, "stream_finish(id, code, message)"},
    {"active", py_active, METH_O, "active(i): call i of the batch taken is still wanted"},
    {"call_id", py_call_id, METH_O, "call_id(i): call i's id, as a cancelled call's event names it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_h2", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__h2(void) {
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    PyObject *paths = PyTuple_New(N_DEFAULT_PATHS);
    for (int i = 0; paths && i < N_DEFAULT_PATHS; i++) {
        PyObject *p = PyUnicode_FromString(g_default_paths[i]);
        if (!p) Py_CLEAR(paths);
        else PyTuple_SET_ITEM(paths, i, p);
    }
    if (!paths || PyModule_AddObject(m, "PATHS", paths) < 0) {
        Py_XDECREF(paths);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
