/* grpcload: a unary gRPC load driver that rotates through many distinct request bodies.
 *
 * h2load posts one body over and over, so a server with a decision cache answers every call
 * after the first from it. This driver reads a file of pre-framed gRPC messages (each a 0
 * byte, the message length as 4 big-endian bytes, the message: what Python writes from the
 * workload generator) and sends them in turn, the next body to whichever stream frees up, over
 * C cleartext HTTP/2 connections with M calls in flight each. One thread, poll(), libnghttp2.
 *
 *   grpcload --port P --path /pkg.Service/Method --bodies FILE [-c 4] [-m 8]
 *            [-n COUNT | -D SECONDS] [--start K] [--host 127.0.0.1]
 *
 * Prints one JSON object: requests (completed), successes (HTTP 200 and grpc-status 0),
 * errors by grpc-status (or "http_<status>", "no_status", "reset", "connection"), duration_s,
 * rps, and p50/p90/p99 latency in µs from every call's own start-to-close time.
 * Exit status: 0 when the run completed (errors are reported, not fatal), 2 on bad arguments
 * or an unreadable body file, 3 when a connection could not be made or was lost mid-run.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONN 256
#define N_STATUS 17 /* grpc-status codes 0..16 */

typedef struct {
    const uint8_t *data;
    size_t len;
} body_t;

typedef struct {
    const body_t *body;
    size_t sent;
    double start;
    int http_status;
    int grpc_status; /* -1: none seen */
} stream_t;

typedef struct {
    int fd;
    nghttp2_session *session;
    int inflight;
    int dead;
} conn_t;

/* Run-wide state: one thread, so plain globals. */
static body_t *bodies;
static size_t n_bodies, next_body;
static long long submitted, completed, successes, limit = -1;
static long long by_status[N_STATUS], http_bad, no_status, resets, conn_lost;
static int lost_midrun; /* a connection lost while the run still had calls to make */
static double deadline = -1, t_begin, t_last;
static int streams_per_conn = 8;
static uint32_t *lat;
static size_t lat_len, lat_cap;
static char authority[300];
static const char *path;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(int code, const char *msg) {
    fprintf(stderr, "grpcload: %s\n", msg);
    exit(code);
}

static int may_submit(void) {
    if (limit >= 0) return submitted < limit;
    return now() < deadline;
}

static void load_bodies(const char *file) {
    FILE *f = fopen(file, "rb");
    if (!f) die(2, "cannot open the body file");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(size > 0 ? size : 1);
    if (!buf || fread(buf, 1, size, f) != (size_t)size) die(2, "cannot read the body file");
    fclose(f);
    size_t cap = 1024;
    bodies = malloc(cap * sizeof *bodies);
    for (long off = 0; off < size;) {
        if (size - off < 5 || buf[off] != 0) die(2, "body file: not a sequence of gRPC frames");
        size_t len = 5 + ((size_t)buf[off + 1] << 24 | (size_t)buf[off + 2] << 16 |
                          (size_t)buf[off + 3] << 8 | buf[off + 4]);
        if (len > (size_t)(size - off)) die(2, "body file: a frame runs past the end");
        if (n_bodies == cap) bodies = realloc(bodies, (cap *= 2) * sizeof *bodies);
        bodies[n_bodies++] = (body_t){buf + off, len};
        off += len;
    }
    if (n_bodies == 0) die(2, "body file: no frames");
}

static ssize_t read_body(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                         uint32_t *flags, nghttp2_data_source *src, void *user) {
    (void)s; (void)id; (void)src; (void)user;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    size_t n = st->body->len - st->sent;
    if (n > length) n = length;
    memcpy(buf, st->body->data + st->sent, n);
    st->sent += n;
    if (st->sent == st->body->len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int submit(conn_t *c) {
    stream_t *st = calloc(1, sizeof *st);
    st->body = &bodies[next_body++ % n_bodies];
    st->grpc_status = -1;
    st->start = now();
#define HDR(n, v) {(uint8_t *)n, (uint8_t *)v, sizeof n - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv hdrs[] = {
        HDR(":method", "POST"),      HDR(":scheme", "http"),
        HDR(":authority", authority), HDR(":path", path),
        HDR("content-type", "application/grpc"), HDR("te", "trailers"),
    };
    nghttp2_data_provider prd = {.read_callback = read_body};
    int32_t id = nghttp2_submit_request(c->session, NULL, hdrs, 6, &prd, st);
    if (id < 0) {
        free(st);
        return -1;
    }
    submitted++;
    c->inflight++;
    return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
    (void)flags; (void)user;
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    stream_t *st = nghttp2_session_get_stream_user_data(s, frame->hd.stream_id);
    if (!st) return 0;
    char v[16];
    size_t n = valuelen < sizeof v - 1 ? valuelen : sizeof v - 1;
    memcpy(v, value, n);
    v[n] = 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) st->http_status = atoi(v);
    if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) st->grpc_status = atoi(v);
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                   size_t len, void *user) {
    (void)s; (void)flags; (void)id; (void)data; (void)len; (void)user;
    return 0; /* replies are judged by their status; their bytes are not kept */
}

static void record(double start, double end) {
    if (lat_len == lat_cap) {
        lat_cap = lat_cap ? lat_cap * 2 : 65536;
        lat = realloc(lat, lat_cap * sizeof *lat);
    }
    lat[lat_len++] = (uint32_t)((end - start) * 1e6 + 0.5);
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t error_code, void *user) {
    conn_t *c = user;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    double t = now();
    completed++;
    t_last = t;
    record(st->start, t);
    if (error_code != NGHTTP2_NO_ERROR) resets++;
    else if (st->http_status != 200) http_bad++;
    else if (st->grpc_status < 0) no_status++;
    else if (st->grpc_status >= N_STATUS) no_status++;
    else {
        by_status[st->grpc_status]++;
        if (st->grpc_status == 0) successes++;
    }
    c->inflight--;
    free(st);
    return 0;
}

static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags,
                       void *user) {
    (void)s; (void)flags;
    conn_t *c = user;
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n < 0) return (errno == EAGAIN || errno == EWOULDBLOCK) ? NGHTTP2_ERR_WOULDBLOCK
                                                                 : NGHTTP2_ERR_CALLBACK_FAILURE;
    return n;
}

static void connect_one(conn_t *c, const char *host, int port, nghttp2_session_callbacks *cbs) {
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die(2, "--host: not an IPv4 address");
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        fprintf(stderr, "grpcload: cannot connect to %s:%d: %s\n", host, port, strerror(errno));
        exit(3);
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    nghttp2_session_client_new(&c->session, cbs, c);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, iv, 1);
    nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 1 << 24);
}

static void lose(conn_t *c, const char *why) {
    if (c->dead) return;
    fprintf(stderr, "grpcload: connection lost (%s) with %d calls in flight\n", why, c->inflight);
    conn_lost += c->inflight;
    if (c->inflight || may_submit()) lost_midrun = 1;
    completed += c->inflight;
    c->inflight = 0;
    c->dead = 1;
    close(c->fd);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static double pct(double p) {
    if (!lat_len) return 0;
    size_t i = (size_t)(p * lat_len);
    return lat[i < lat_len ? i : lat_len - 1];
}

int main(int argc, char **argv) {
    const char *host = "127.0.0.1", *file = NULL;
    int port = 0, n_conn = 4;
    long long start_at = 0;
    static struct option opts[] = {
        {"host", required_argument, 0, 'h'},   {"port", required_argument, 0, 'p'},
        {"path", required_argument, 0, 'P'},   {"bodies", required_argument, 0, 'b'},
        {"connections", required_argument, 0, 'c'}, {"streams", required_argument, 0, 'm'},
        {"requests", required_argument, 0, 'n'}, {"duration", required_argument, 0, 'D'},
        {"start", required_argument, 0, 's'},  {0, 0, 0, 0},
    };
    for (int o; (o = getopt_long(argc, argv, "c:m:n:D:", opts, NULL)) != -1;) {
        switch (o) {
        case 'h': host = optarg; break;
        case 'p': port = atoi(optarg); break;
        case 'P': path = optarg; break;
        case 'b': file = optarg; break;
        case 'c': n_conn = atoi(optarg); break;
        case 'm': streams_per_conn = atoi(optarg); break;
        case 'n': limit = atoll(optarg); break;
        case 'D': deadline = atof(optarg); break;
        case 's': start_at = atoll(optarg); break;
        default: die(2, "usage: grpcload --port P --path /svc/Method --bodies FILE "
                        "[-c N] [-m N] [-n COUNT | -D SECONDS] [--start K] [--host IP]");
        }
    }
    if (!port || !path || !file) die(2, "--port, --path and --bodies are required");
    if (n_conn < 1 || n_conn > MAX_CONN || streams_per_conn < 1) die(2, "bad -c or -m");
    if ((limit < 0) == (deadline < 0)) die(2, "give exactly one of -n COUNT and -D SECONDS");
    snprintf(authority, sizeof authority, "%s:%d", host, port);
    load_bodies(file);
    next_body = (size_t)(start_at % (long long)n_bodies);

    nghttp2_session_callbacks *cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_send_callback(cbs, send_cb);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);

    static conn_t conns[MAX_CONN];
    for (int i = 0; i < n_conn; i++) connect_one(&conns[i], host, port, cbs);
    t_begin = t_last = now();
    if (deadline >= 0) deadline += t_begin;

    struct pollfd pfd[MAX_CONN];
    static uint8_t buf[1 << 16];
    for (;;) {
        int live = 0, busy = 0;
        for (int i = 0; i < n_conn; i++) {
            conn_t *c = &conns[i];
            if (c->dead) continue;
            while (c->inflight < streams_per_conn && may_submit())
                if (submit(c) < 0) break;
            if (nghttp2_session_send(c->session) != 0) lose(c, "send failed");
            live += !c->dead;
            busy += !c->dead && c->inflight > 0;
        }
        if (!busy && (!may_submit() || !live)) break;
        int k = 0;
        for (int i = 0; i < n_conn; i++) {
            conn_t *c = &conns[i];
            if (c->dead) continue;
            pfd[k].fd = c->fd;
            pfd[k].events = POLLIN | (nghttp2_session_want_write(c->session) ? POLLOUT : 0);
            pfd[k].revents = 0;
            k++;
        }
        if (poll(pfd, k, 100) < 0 && errno != EINTR) die(3, "poll failed");
        k = 0;
        for (int i = 0; i < n_conn; i++) {
            conn_t *c = &conns[i];
            if (c->dead) continue;
            short rev = pfd[k++].revents;
            if (rev & (POLLIN | POLLHUP | POLLERR)) {
                for (;;) {
                    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
                    if (n > 0) {
                        if (nghttp2_session_mem_recv(c->session, buf, n) < 0) {
                            lose(c, "protocol error");
                            break;
                        }
                        continue;
                    }
                    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                    lose(c, n == 0 ? "closed by the server" : strerror(errno));
                    break;
                }
            }
            if (!c->dead && !nghttp2_session_want_read(c->session) &&
                !nghttp2_session_want_write(c->session))
                lose(c, "session ended (GOAWAY)");
        }
    }

    double secs = t_last - t_begin;
    qsort(lat, lat_len, sizeof *lat, cmp_u32);
    printf("{\"requests\": %lld, \"successes\": %lld, \"errors\": {", completed, successes);
    const char *sep = "";
    for (int s = 1; s < N_STATUS; s++)
        if (by_status[s]) {
            printf("%s\"%d\": %lld", sep, s, by_status[s]);
            sep = ", ";
        }
    if (http_bad) { printf("%s\"http_not_200\": %lld", sep, http_bad); sep = ", "; }
    if (no_status) { printf("%s\"no_status\": %lld", sep, no_status); sep = ", "; }
    if (resets) { printf("%s\"reset\": %lld", sep, resets); sep = ", "; }
    if (conn_lost) { printf("%s\"connection\": %lld", sep, conn_lost); }
    printf("}, \"bodies\": %zu, \"connections\": %d, \"streams\": %d, \"duration_s\": %.6f, "
           "\"rps\": %.1f, \"p50_us\": %.0f, \"p90_us\": %.0f, \"p99_us\": %.0f}\n",
           n_bodies, n_conn, streams_per_conn, secs, secs > 0 ? completed / secs : 0.0,
           pct(0.50), pct(0.90), pct(0.99));
    return conn_lost || lost_midrun ? 3 : 0;
}
