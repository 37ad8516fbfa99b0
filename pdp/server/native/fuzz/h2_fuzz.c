/* A fuzz harness for the native transport's C (../_h2.c): arbitrary bytes as one client
 * connection's input, through the very nghttp2 session callbacks and request judging the
 * server runs, without its threads or sockets. libFuzzer's main (`make fuzz-native`, clang)
 * or replay.c's (the tests, gcc) drives LLVMFuzzerTestOneInput.
 *
 * An input is the bytes a client sends after connecting, cut into rounds by the marker
 * "|pdp-next|" (and "|pdp-drain|", which also begins the drain, as SIGTERM does; and
 * "|pdp-close|", after which the client is gone: the connection is freed at once, with its
 * calls still deciding or queued, and the rest of the input is not read). Each round
 * plays the decision thread once: the calls it took last round are answered (so a client's
 * RST_STREAM or GOAWAY in between finds its call still deciding), the calls queued since are
 * taken (as take() does: cancelled ones handed back), and what nghttp2 has to send is sent
 * (read_reply, trailers). At the end the connection is freed as the I/O thread frees it, and
 * every byte and call it held must be given back: the request-byte budget and the count of
 * calls outstanding return to zero (else abort), and LeakSanitizer sees the rest.
 *
 * Only the session callbacks, the call queue (g_req_head, deliver) and the connection's
 * fields are used; what start() sets up is repeated in setup() (tests/security/
 * test_native_sanitized.py checks that the callbacks and options registered are the same).
 */
#include "../_h2.c"

#define NEXT "|pdp-next|"
#define DRAIN "|pdp-drain|"
#define CLOSE "|pdp-close|"
#define UNIX "|pdp-unix|" /* first in the input: a Unix socket's session (relaxed_header_ok) */

static call_t *g_fuzz_deciding; /* taken last round, answered next round */
static int g_trace = -1;   /* H2_FUZZ_TRACE=1: what each round took and sent, on stderr */

static void setup(void) {
    if (g_trace < 0) g_trace = getenv("H2_FUZZ_TRACE") != NULL;
    if (g_cbs) return;
    set_paths(NULL);
    /* Small limits, so that inputs reach them: the message and the request-byte budget (as
     * start() would size it without its 64 MiB floor), and the calls outstanding. */
    g_max_message = 16384;
    g_budget = 4 * (g_max_message + 5);
    g_max_conns = 1;
    g_max_calls = 8;
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
    if (!g_cbs || !g_opt || !g_opt_unix || !g_dirty) abort();
}

/* The decision thread's reply, chosen by the request: its message echoed, an error with a
 * message of the request's own bytes and details, or no reply at all (INTERNAL). */
static void decide(call_t *c) {
    size_t n = c->body_len - 5;
    switch (c->body_len % 4) {
    case 0:
    case 1:
        if (!(c->out = malloc(c->body_len))) abort();
        memcpy(c->out, c->body, c->body_len);
        c->out_len = c->body_len;
        c->status = OK;
        break;
    case 2: {
        char *text = malloc(n + 1);
        if (!text) abort();
        memcpy(text, c->body + 5, n);
        text[n] = 0;
        c->status = 3;
        c->message = percent_encode(text);
        c->details = strdup("CAMSBWJhZCE=");
        free(text);
        break;
    }
    default:
        c->status = INTERNAL;
    }
}

/* The queued calls, as take() takes them: cancelled ones back to the I/O thread (deliver
 * frees them), the others decided; their bodies and metadata freed, as take() frees them. */
static void take_all(void) {
    pthread_mutex_lock(&g_mu);
    call_t *c = g_req_head;
    g_req_head = g_req_tail = NULL;
    pthread_mutex_unlock(&g_mu);
    while (c) {
        call_t *next = c->next;
        c->next = NULL;
        if (__atomic_load_n(&c->cancelled, __ATOMIC_ACQUIRE)) {
            deliver(c);
        } else {
            if (g_trace) fprintf(stderr, "  took method %d, %zu bytes\n", c->method, c->body_len);
            decide(c);
            budget_give(c->body_cap);
            free(c->body);
            c->body = NULL;
            if (c->md) budget_give(c->md_cap);
            free(c->md);
            c->md = NULL;
            c->next = g_fuzz_deciding;
            g_fuzz_deciding = c;
        }
        c = next;
    }
}

static void answer_all(void) {
    call_t *c = g_fuzz_deciding;
    g_fuzz_deciding = NULL;
    while (c) {
        call_t *next = c->next;
        c->next = NULL;
        deliver(c);
        c = next;
    }
}

/* What the I/O thread's conn_write does, without the socket: every frame nghttp2 has. */
static void send_all(conn_t *c) {
    size_t sent = 0;
    for (int i = 0; !c->dead && i < 100000; i++) {
        const uint8_t *out;
        ssize_t n = nghttp2_session_mem_send(c->session, &out);
        if (n < 0) c->dead = 1;
        if (n <= 0) break;
        sent += (size_t)n;
    }
    if (g_trace) fprintf(stderr, "  sent %zu bytes%s\n", sent, c->dead ? ", connection dead" : "");
    if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session))
        c->dead = 1; /* flush_dirty would free it now */
    for (int i = 0; i < g_ndirty; i++) g_dirty[i]->dirty = 0;
    g_ndirty = 0;
}

static void round_trip(conn_t *c) {
    answer_all();
    take_all();
    send_all(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup();
    g_draining = 0;
    g_drain_seen = 0;
    conn_t *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->fd = -1;
    c->last_active = now_s();
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
    if (nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, g_settings, 3) != 0) abort();
    mark_dirty(c);
    send_all(c); /* the server's SETTINGS, before it reads (accept_all, then flush_dirty) */
    const uint8_t *p = data, *end = data + size;
    /* Where the client vanishes: its bytes up to there are read, and one more round. */
    const uint8_t *close_at = memmem(data, size, CLOSE, sizeof CLOSE - 1);
    if (close_at) end = close_at;
    for (;;) {
        const uint8_t *next = memmem(p, (size_t)(end - p), NEXT, sizeof NEXT - 1);
        const uint8_t *drain = memmem(p, (size_t)(end - p), DRAIN, sizeof DRAIN - 1);
        const uint8_t *cut = next && (!drain || next < drain) ? next : drain;
        size_t len = (size_t)((cut ? cut : end) - p);
        if (len && !c->dead && nghttp2_session_mem_recv(c->session, p, len) < 0) c->dead = 1;
        round_trip(c);
        if (!cut) break;
        if (cut == drain) {
            __atomic_store_n(&g_draining, 1, __ATOMIC_RELEASE);
            if (!c->dead) notice_drain(c);
            p = cut + sizeof DRAIN - 1;
        } else {
            p = cut + sizeof NEXT - 1;
        }
    }
    if (!close_at) {
        round_trip(c); /* the last calls answered, their replies sent */
        round_trip(c);
    }
    conn_free(c); /* as the I/O thread: calls still deciding or queued are cancelled */
    answer_all();
    take_all();
    g_ndirty = 0;
    if (g_conns || g_conns_list || g_req_head || g_fuzz_deciding) abort();
    if (__atomic_load_n(&g_outstanding, __ATOMIC_RELAXED) != 0) {
        fprintf(stderr, "h2_fuzz: %d calls still counted outstanding\n", g_outstanding);
        abort();
    }
    if (__atomic_load_n(&g_buffered, __ATOMIC_RELAXED) != 0) {
        fprintf(stderr, "h2_fuzz: %zu request bytes still counted held\n", g_buffered);
        abort();
    }
    return 0;
}
