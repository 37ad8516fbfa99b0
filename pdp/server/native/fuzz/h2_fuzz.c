/* A fuzz harness for the native transport's C (../_h2.c, ../_h2_stream.c): arbitrary bytes as
 * one client connection's input, through the very nghttp2 session callbacks and request
 * judging the server runs, and the Python side played through the module's own functions
 * (take, reply, answer, active, call_id, drain, outstanding; stream_take, stream_send,
 * stream_finish),
 * without the threads or sockets. libFuzzer's main (`make fuzz-native`, clang) or replay.c's
 * (the tests, gcc) drives LLVMFuzzerTestOneInput.
 *
 * An input is the bytes a client sends after connecting, cut into rounds by the marker
 * "|pdp-next|" (and "|pdp-drain|", which also begins the drain, as SIGTERM does; and
 * "|pdp-close|", after which the client is gone: the connection is freed at once, with its
 * calls still deciding or queued, and the rest of the input is not read). Each round
 * plays the Python side and the I/O thread's wake-ups once, in the server's order: the batch
 * taken last round is answered (so a client's RST_STREAM or GOAWAY in between finds its calls
 * still deciding), the replies are picked up, the stream pump takes its events (a message is
 * sent back as it came, a half-close finishes the call OK), the streaming ops are picked up,
 * the calls queued since are taken (cancelled ones handed back), and what nghttp2 has to send
 * is sent (read_reply, stream_read, trailers).
 *
 * "|pdp-py|" and a length byte N make the next N bytes a script of the Python side's calls
 * and the I/O thread's pick-ups, in the order the input chooses; the client's bytes go on
 * after it, so its frames (RST_STREAM, GOAWAY, WINDOW_UPDATE, SETTINGS) fall between any two
 * of them. Each op is a byte (its value modulo FN_OPS) and its argument bytes (0 once the
 * script is used up):
 *
 *   TAKE                take(0) a batch (the batch still out answered first)
 *   REPLY i kind ...    reply(i, r): call i's reply sent early (i past the batch: IndexError);
 *                       r echoes the request, is bytes of a chosen size, an error (code,
 *                       message, details) with a chosen code, None, or malformed
 *   ANSWER bad          answer() the batch (bad & 1: not a list, every call still here INTERNAL)
 *   ASK i               active(i), call_id(i)
 *   PICKUP              the I/O thread takes the replies (reply()'s timer or answer()'s wake-up)
 *   SEND                the I/O thread sends what nghttp2 has (the client reads it)
 *   STAKE               stream_take(0): the streaming calls' events (opened calls remembered)
 *   SSEND k hi lo       stream_send(call k, a message of (hi << 8 | lo) & 0x3fff bytes)
 *   SFINISH k code n .. stream_finish(call k, code (signed), a message of the next n & 15 bytes)
 *   SOPS                the I/O thread picks up the sends and finishes (its eventfd)
 *   SWEEP t             the idle sweep and the keepalive PINGs, as if run t * 10 s from now
 *                       (idle timeout 300 s; a PING after 60 s with nothing read, GOAWAY
 *                       20 s later without its ACK)
 *
 * Call k is the k-th streaming call opened in this input (modulo their number; 255, or none
 * yet: an id no call has), gone or not: Python may send to a call the client has reset.
 *
 * At the end the connection is freed as the I/O thread frees it, and every byte and call it
 * held must be given back: the request-byte budget, the count of calls outstanding and the
 * streaming calls open return to zero, no batch is out and no event or op is left queued
 * (else abort), and LeakSanitizer sees the rest (Python runs on malloc, so a Python object
 * the module leaks is seen too).
 *
 * Only the session callbacks, the queues and the connection's fields are used; what start()
 * sets up is repeated in setup() (tests/security/test_native_sanitized.py checks that the
 * callbacks and options registered are the same, and that every function the Python side
 * calls is played here).
 */
#include "../_h2.c"

#define NEXT "|pdp-next|"
#define DRAIN "|pdp-drain|"
#define CLOSE "|pdp-close|"
#define UNIX "|pdp-unix|" /* first in the input: a Unix socket's session (relaxed_header_ok) */
#define PY "|pdp-py|"     /* then a length byte and a script of that many bytes */

/* The streaming paths and bounds: the server's paths (server.py's STREAMED), small bounds so
 * that inputs reach them (calls open at once; bytes queued for a client that does not read). */
#define H2_FUZZ_STREAMED "/grpc.health.v1.Health/Watch", \
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
#define H2_FUZZ_MAX_OPEN 4
#define H2_FUZZ_OUT_CAP 8192

enum { FOP_TAKE, FOP_REPLY, FOP_ANSWER, FOP_ASK, FOP_PICKUP, FOP_SEND, FOP_STAKE, FOP_SSEND,
       FOP_SFINISH, FOP_SOPS, FOP_SWEEP, FN_OPS };

static conn_t *g_conn;        /* the connection; NULL once freed */
static PyObject *g_taken;     /* the batch out: take()'s list, until answer() */
static PyObject *g_zero;      /* 0.0: take()'s and stream_take()'s timeout */
static uint32_t g_ids[32];    /* the streaming calls opened in this input, in order */
static int g_nids;
static int g_trace = -1;      /* H2_FUZZ_TRACE=1: what each round took and sent, on stderr */

/* Python on malloc (LeakSanitizer sees its objects, and so a reference the module leaks), no
 * site, no signal handlers (libFuzzer's stay). */
static void python_init(void) {
    PyPreConfig pre;
    PyPreConfig_InitIsolatedConfig(&pre);
    pre.allocator = PYMEM_ALLOCATOR_MALLOC;
    PyStatus status = Py_PreInitialize(&pre);
    if (PyStatus_Exception(status)) Py_ExitStatusException(status);
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.install_signal_handlers = 0;
    config.write_bytecode = 0;
#ifdef H2_FUZZ_PYTHON_HOME
    status = PyConfig_SetBytesString(&config, &config.home, H2_FUZZ_PYTHON_HOME);
    if (PyStatus_Exception(status)) Py_ExitStatusException(status);
#endif
    status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status)) Py_ExitStatusException(status);
}

static void setup(void) {
    if (g_trace < 0) g_trace = getenv("H2_FUZZ_TRACE") != NULL;
    if (g_cbs) return;
    python_init();
    set_paths(NULL);
    PyObject *sargs = Py_BuildValue("((ss)ii)", H2_FUZZ_STREAMED, H2_FUZZ_MAX_OPEN, H2_FUZZ_OUT_CAP);
    PyObject *done = sargs ? py_serve_streams(NULL, sargs) : NULL;
    if (!done) abort();
    Py_DECREF(done);
    Py_DECREF(sargs);
    /* Small limits, so that inputs reach them: the message and the request-byte budget (as
     * start() would size it without its 64 MiB floor), and the calls outstanding. */
    g_max_message = 16384;
    g_budget = 4 * (g_max_message + 5);
    g_max_conns = 1;
    g_max_calls = 8;
    g_idle_s = 300; /* the sweep's, reached by SWEEP only */
    g_keepalive_s = 60;
    g_keepalive_timeout_s = 20;
    g_dirty = calloc(2, sizeof *g_dirty);
    pthread_cond_init(&g_cv, NULL);
    g_settings[0] = (nghttp2_settings_entry){NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100};
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
    nghttp2_option_set_max_settings(g_opt, 32);
    nghttp2_option_set_max_outbound_ack(g_opt, 1000);
    nghttp2_option_set_stream_reset_rate_limit(g_opt, 1000, 33);
    nghttp2_option_new(&g_opt_unix);
    nghttp2_option_set_max_settings(g_opt_unix, 32);
    nghttp2_option_set_max_outbound_ack(g_opt_unix, 1000);
    nghttp2_option_set_stream_reset_rate_limit(g_opt_unix, 1000, 33);
    nghttp2_option_set_no_http_messaging(g_opt_unix, 1);
    /* The wake-ups are real (the eventfd answer() and stream_send() write, reply()'s timer),
     * read by nobody but the harness: its rounds and ops are the I/O thread's passes. */
    g_evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    g_tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    g_zero = PyFloat_FromDouble(0);
    if (!g_cbs || !g_opt || !g_opt_unix || !g_dirty || g_evfd < 0 || g_tfd < 0 || !g_zero)
        abort();
    g_running = 1; /* what take(), reply() and stream_send() check; no I/O thread runs */
}

static void clear_error(void) {
    if (PyErr_Occurred()) PyErr_Clear(); /* IndexError, ValueError...: the module's to raise */
}

/* ---- the decision thread ------------------------------------------------------------------- */

/* The decision thread's reply, chosen by the request: its message echoed, an error with a
 * message of the request's own bytes and details, or no reply at all (INTERNAL). */
static PyObject *decide(PyObject *item) {
    PyObject *body = PyTuple_GET_ITEM(item, 1);
    Py_ssize_t n = PyBytes_GET_SIZE(body);
    PyObject *out = NULL;
    switch (n % 4) {
    case 0:
    case 1:
        out = Py_NewRef(body);
        break;
    case 2:
        out = Py_BuildValue("(iNs)", 3, PyUnicode_DecodeLatin1(PyBytes_AS_STRING(body), n, NULL),
                            "CAMSBWJhZCE=");
        break;
    }
    clear_error();
    return out ? out : Py_NewRef(Py_None);
}

/* answer(): every call of the batch decided (the items of calls reply() answered are
 * ignored), or (bad) not a list. */
static void answer(int bad) {
    if (!g_taken) return;
    Py_ssize_t n = PyList_GET_SIZE(g_taken);
    PyObject *replies = bad ? Py_NewRef(Py_None) : PyList_New(n);
    for (Py_ssize_t i = 0; !bad && replies && i < n; i++)
        PyList_SET_ITEM(replies, i, decide(PyList_GET_ITEM(g_taken, i)));
    if (!replies) abort();
    PyObject *r = py_answer(NULL, replies);
    if (g_trace) fprintf(stderr, "  answered %zd%s\n", n, bad ? " (not a list)" : "");
    Py_XDECREF(r);
    clear_error();
    Py_DECREF(replies);
    Py_CLEAR(g_taken);
}

/* take(0): a batch, as the decision loop takes it (the one still out answered first). */
static void take(void) {
    answer(0);
    PyObject *batch = py_take(NULL, g_zero);
    if (!batch) abort(); /* only on a memory error */
    Py_ssize_t n = PyList_GET_SIZE(batch);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(batch, i);
        long method = PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
        if (method < 0 || method >= g_npaths ||
            (size_t)PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1)) > g_max_message)
            abort(); /* a call the C side should have refused */
        if (g_trace)
            fprintf(stderr, "  took method %ld, %zd bytes\n", method,
                    PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1)));
    }
    if (n) g_taken = batch;
    else Py_DECREF(batch);
}

static unsigned next_byte(const uint8_t **p, const uint8_t *end) {
    return *p < end ? *(*p)++ : 0;
}

/* reply(i, r), r chosen by the script. */
static void reply_early(const uint8_t **p, const uint8_t *end) {
    Py_ssize_t n = g_taken ? PyList_GET_SIZE(g_taken) : 0;
    unsigned i = next_byte(p, end) % (unsigned)(n + 1); /* n: no such call */
    unsigned kind = next_byte(p, end);
    PyObject *body = i < n ? PyTuple_GET_ITEM(PyList_GET_ITEM(g_taken, i), 1) : NULL;
    PyObject *r = NULL;
    switch (kind % 5) {
    case 0: /* its request echoed */
        r = body ? Py_NewRef(body) : PyBytes_FromString("");
        break;
    case 1: { /* bytes of a chosen size: past a frame, past the client's window */
        unsigned size = next_byte(p, end) << 8;
        size = (size | next_byte(p, end)) * 2;
        r = PyBytes_FromStringAndSize(NULL, size);
        if (r) memset(PyBytes_AS_STRING(r), 'r', size);
        break;
    }
    case 2: { /* an error: any code (1-16 sent, else INTERNAL), details good or not */
        int code = (int8_t)next_byte(p, end);
        PyObject *msg = body ? PyUnicode_DecodeLatin1(PyBytes_AS_STRING(body),
                                                      PyBytes_GET_SIZE(body), NULL)
                             : PyUnicode_FromString("denied \xc3\xa9 100%");
        r = Py_BuildValue("(iNs)", code, msg, kind & 8 ? "not base64!" : "CAMSBWJhZCE=");
        break;
    }
    case 3:
        r = Py_NewRef(Py_None);
        break;
    default: /* malformed: a message that is no str, details that are no str */
        r = kind & 8 ? Py_BuildValue("(iiO)", 7, 5, Py_None) : Py_BuildValue("(isi)", 7, "m", 5);
    }
    if (!r) abort();
    PyObject *args[2] = {PyLong_FromUnsignedLong(i), r};
    if (!args[0]) abort();
    PyObject *done = py_reply(NULL, args, 2);
    if (g_trace) fprintf(stderr, "  reply(%u) kind %u: %s\n", i, kind % 5, done ? "ok" : "raised");
    Py_XDECREF(done);
    clear_error();
    Py_DECREF(args[0]);
    Py_DECREF(r);
}

/* active(i) and call_id(i); i past the batch too. */
static void ask(unsigned i) {
    PyObject *index = PyLong_FromUnsignedLong(i % 9);
    if (!index) abort();
    PyObject *a = py_active(NULL, index), *id = py_call_id(NULL, index);
    if (a == Py_True && !id) abort(); /* a call still wanted has an id */
    Py_XDECREF(a);
    Py_XDECREF(id);
    clear_error();
    Py_DECREF(index);
}

/* ---- the I/O thread ----------------------------------------------------------------------- */

static void read_wakeups(void) {
    read_wake(g_evfd);
    read_wake(g_tfd);
}

/* What the I/O thread's conn_write and flush_dirty do, without the socket: every frame
 * nghttp2 has, then the connection freed if it is dead or done. */
static void send_all(void) {
    conn_t *c = g_conn;
    size_t sent = 0;
    for (int i = 0; c && !c->dead && i < 100000; i++) {
        const uint8_t *out;
        ssize_t n = nghttp2_session_mem_send(c->session, &out);
        if (n < 0) c->dead = 1;
        if (n <= 0) break;
        sent += (size_t)n;
    }
    for (int i = 0; i < g_ndirty; i++) g_dirty[i]->dirty = 0;
    g_ndirty = 0;
    if (!c) return;
    if (g_trace) fprintf(stderr, "  sent %zu bytes%s\n", sent, c->dead ? ", connection dead" : "");
    if (c->dead || (!nghttp2_session_want_read(c->session) &&
                    !nghttp2_session_want_write(c->session))) {
        conn_free(c); /* as flush_dirty: its calls cancelled, its streams gone */
        g_conn = NULL;
    }
}

static void pickup(void) {
    read_wakeups();
    take_replies();
}

static void ops_pickup(void) {
    read_wakeups();
    stream_ops();
}

/* ---- the stream pump ------------------------------------------------------------------------ */

static uint32_t call_of(unsigned k) {
    if (!g_nids || k == 255) return 0xffff0000u | k; /* no such call */
    return g_ids[k % (unsigned)g_nids];
}

static void stream_send_bytes(uint32_t id, PyObject *message) {
    PyObject *args = Py_BuildValue("(IO)", id, message);
    PyObject *r = args ? py_stream_send(NULL, args) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(args);
    clear_error();
}

static void stream_finish(uint32_t id, int code, PyObject *message) {
    PyObject *args = Py_BuildValue("(IiO)", id, code, message);
    PyObject *r = args ? py_stream_finish(NULL, args) : NULL;
    Py_XDECREF(r);
    Py_XDECREF(args);
    clear_error();
}

/* stream_take(0): the events, checked; opened calls remembered. `play`: as a pump whose
 * handlers echo each message and finish OK at the half-close. */
static void stream_take(int play) {
    PyObject *events = py_stream_take(NULL, g_zero);
    if (!events) abort();
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(events); i++) {
        PyObject *e = PyList_GET_ITEM(events, i);
        if (!PyTuple_Check(e) || PyTuple_GET_SIZE(e) != 7) abort();
        long kind = PyLong_AsLong(PyTuple_GET_ITEM(e, 1));
        uint32_t id = (uint32_t)PyLong_AsUnsignedLongMask(PyTuple_GET_ITEM(e, 0));
        PyObject *a = PyTuple_GET_ITEM(e, 2);
        if (g_trace) fprintf(stderr, "  stream event %ld on %#x\n", kind, id);
        switch (kind) {
        case EV_OPEN: {
            long method = PyLong_AsLong(a);
            if (method < 0 || method >= g_nspaths) abort();
            if (g_nids < (int)(sizeof g_ids / sizeof *g_ids)) g_ids[g_nids++] = id;
            break;
        }
        case EV_MSG:
            if (!PyBytes_Check(a) || (size_t)PyBytes_GET_SIZE(a) > g_max_message) abort();
            if (play) stream_send_bytes(id, a);
            break;
        case EV_HALF:
            if (play) {
                PyObject *empty = PyUnicode_FromString("");
                if (!empty) abort();
                stream_finish(id, 0, empty);
                Py_DECREF(empty);
            }
            break;
        case EV_GONE:
        case EV_CANCEL:
            break;
        default:
            abort();
        }
    }
    clear_error();
    Py_DECREF(events);
}

/* ---- rounds and scripts ---------------------------------------------------------------------- */

static void round_trip(void) {
    answer(0);
    pickup();
    stream_take(1);
    ops_pickup();
    take();
    pickup(); /* the calls take() found cancelled */
    send_all();
}

static void script(const uint8_t *p, const uint8_t *end) {
    while (p < end) {
        unsigned op = *p++ % FN_OPS;
        switch (op) {
        case FOP_TAKE:
            take();
            break;
        case FOP_REPLY:
            reply_early(&p, end);
            break;
        case FOP_ANSWER:
            answer(next_byte(&p, end) & 1);
            break;
        case FOP_ASK:
            ask(next_byte(&p, end));
            break;
        case FOP_PICKUP:
            pickup();
            break;
        case FOP_SEND:
            send_all();
            break;
        case FOP_STAKE:
            stream_take(0);
            break;
        case FOP_SSEND: {
            uint32_t id = call_of(next_byte(&p, end));
            unsigned size = next_byte(&p, end) << 8;
            size = (size | next_byte(&p, end)) & 0x3fff;
            PyObject *m = PyBytes_FromStringAndSize(NULL, size);
            if (!m) abort();
            memset(PyBytes_AS_STRING(m), 's', size);
            if (g_trace) fprintf(stderr, "  stream_send(%#x, %u bytes)\n", id, size);
            stream_send_bytes(id, m);
            Py_DECREF(m);
            break;
        }
        case FOP_SFINISH: {
            uint32_t id = call_of(next_byte(&p, end));
            int code = (int8_t)next_byte(&p, end);
            size_t n = next_byte(&p, end) & 15;
            if (n > (size_t)(end - p)) n = (size_t)(end - p);
            PyObject *m = PyUnicode_DecodeLatin1((const char *)p, (Py_ssize_t)n, NULL);
            if (!m) abort();
            p += n;
            if (g_trace) fprintf(stderr, "  stream_finish(%#x, %d)\n", id, code);
            stream_finish(id, code, m); /* a NUL in it: ValueError, nothing queued */
            Py_DECREF(m);
            break;
        }
        case FOP_SOPS:
            ops_pickup();
            break;
        case FOP_SWEEP: /* conn_write() in it fails on fd -1: what it had is dropped */
            sweep_idle(now_s() + 10.0 * next_byte(&p, end));
            break;
        }
    }
}

static void recv_bytes(const uint8_t *p, size_t len) {
    conn_t *c = g_conn;
    if (!len || !c || c->dead) return;
    if (nghttp2_session_mem_recv(c->session, p, len) < 0) c->dead = 1;
    else c->last_active = c->last_read = now_s(); /* as read_conn */
}

/* After the connection is gone: Python answers what it holds, takes what is left (all of it
 * cancelled) and the last events; the I/O thread picks up the replies and ops. */
static void python_settles(void) {
    for (int i = 0; i < 3; i++) {
        answer(0);
        pickup();
        stream_take(0);
        ops_pickup();
        take();
        pickup();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    g_draining = 0; /* a new server: not draining */
    g_drain_seen = 0;
    g_nids = 0;
    conn_t *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->fd = -1;
    c->last_active = c->last_read = now_s();
    int unix_socket = size >= sizeof UNIX - 1 && memcmp(data, UNIX, sizeof UNIX - 1) == 0;
    if (unix_socket) {
        data += sizeof UNIX - 1;
        size -= sizeof UNIX - 1;
    }
    snprintf(c->peer, PEER_LEN, unix_socket ? "unix:" : "ipv4:127.0.0.1:40000");
    if (nghttp2_session_server_new2(&c->session, g_cbs, c, unix_socket ? g_opt_unix : g_opt))
        abort();
    g_conns++;
    g_conns_list = c;
    g_conn = c;
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, g_settings, 3) != 0) abort();
    mark_dirty(c);
    send_all(); /* the server's SETTINGS, before it reads (accept_all, then flush_dirty) */
    const uint8_t *p = data, *end = data + size;
    /* Where the client vanishes: its bytes up to there are read, and one more round. */
    const uint8_t *close_at = memmem(data, size, CLOSE, sizeof CLOSE - 1);
    if (close_at) end = close_at;
    for (;;) {
        static const char *const markers[] = {NEXT, DRAIN, PY};
        enum { M_NEXT, M_DRAIN, M_PY };
        const uint8_t *cut = NULL;
        int marker = -1;
        for (int i = 0; i < 3; i++) {
            const uint8_t *at = memmem(p, (size_t)(end - p), markers[i], strlen(markers[i]));
            if (at && (!cut || at < cut)) cut = at, marker = i;
        }
        recv_bytes(p, (size_t)((cut ? cut : end) - p));
        if (marker == M_PY) {
            p = cut + sizeof PY - 1;
            size_t n = next_byte(&p, end);
            if (n > (size_t)(end - p)) n = (size_t)(end - p);
            script(p, p + n);
            p += n;
            continue;
        }
        round_trip();
        if (!cut) break;
        p = cut + strlen(markers[marker]);
        if (marker == M_DRAIN) {
            PyObject *drained = py_drain(NULL, NULL); /* SIGTERM: the flag, a wake-up */
            Py_XDECREF(drained);
            read_wakeups();
            if (g_conn && !g_conn->dead) notice_drain(g_conn);
        }
    }
    if (!close_at) {
        round_trip(); /* the last calls answered, their replies sent */
        round_trip();
    }
    if (g_conn) conn_free(g_conn); /* as the I/O thread: calls deciding or queued cancelled */
    g_conn = NULL;
    python_settles();
    g_ndirty = 0;
    if (g_conns || g_conns_list || g_req_head || g_rep_head || g_taken || g_batch_out) abort();
    if (g_ev_head || g_op_head || g_nscalls || g_out_batches || g_deciding) {
        fprintf(stderr, "h2_fuzz: left: events %p, ops %p, %d streaming calls, %d batches\n",
                (void *)g_ev_head, (void *)g_op_head, g_nscalls, g_out_batches);
        abort();
    }
    PyObject *outstanding = py_outstanding(NULL, NULL); /* what the drain waits on */
    if (!outstanding || PyLong_AsLong(outstanding) != 0) {
        fprintf(stderr, "h2_fuzz: %d calls still counted outstanding\n", g_outstanding);
        abort();
    }
    Py_DECREF(outstanding);
    if (__atomic_load_n(&g_buffered, __ATOMIC_RELAXED) != 0) {
        fprintf(stderr, "h2_fuzz: %zu request bytes still counted held\n", g_buffered);
        abort();
    }
    return 0;
}
