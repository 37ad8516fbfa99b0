/* _tls: TLS and mTLS for pdp's native transport, on OpenSSL (Debian's libssl3).
 *
 * What grpcio's server does with `grpc.ssl_server_credentials` (pdp.server.server), checked
 * against a real one in tests/server/test_native_tls.py:
 *
 *   - TLS 1.2 minimum (1.3 preferred); for 1.2 only the ECDHE AES-GCM suites grpc offers;
 *     session tickets (resumption), no renegotiation, no compression.
 *   - ALPN: `h2` is selected when offered; a client that offers no `h2` completes the
 *     handshake without a protocol and is closed before any HTTP/2 byte, as grpc does.
 *   - with client CAs (`--client-ca`): a client certificate is required and verified against
 *     them (the CA names are sent in the CertificateRequest), each a trust anchor (an
 *     intermediate without its root too); no certificate, one from another CA or one out of
 *     its validity period fails the handshake.
 *   - the auth context grpc's calls get (`auth_context()`), built once per connection with the
 *     OpenSSL calls grpc's tsi uses (subject RFC 2253, CN, PEM, SANs in certificate order,
 *     the peer's chain without the leaf) and handed to Python packed: "key\0" + 4-byte
 *     big-endian length + value, per property. Python (server.py) makes the dict of it once.
 *
 * The handshake runs in the I/O thread's epoll loop, non-blocking: tls_handshake() is called
 * on each readable (or, when it asked, writable) event. _h2.c bounds it by the idle timeout.
 */
#include "_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>

/* grpc's TLS 1.2 suites (its default GRPC_SSL_CIPHER_SUITES); TLS 1.3's are OpenSSL's. */
#define TLS12_CIPHERS                                                                        \
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:" \
    "ECDHE-RSA-AES256-GCM-SHA384"

struct tls {
    SSL *ssl;
    int broken; /* a fatal error: no close_notify */
};

struct tls_auth {
    int refs;         /* atomic */
    PyObject *py;     /* the list Python reads, made by the first tls_auth_py() */
    tls_auth_t *next; /* on the release list */
    size_t len;
    uint8_t data[];
};

static SSL_CTX *g_ctx;
static pthread_mutex_t g_release_mu = PTHREAD_MUTEX_INITIALIZER;
static tls_auth_t *g_release;

/* ---- configuration (GIL held) --------------------------------------------------------------- */

static int fail(const char *what) {
    unsigned long e = ERR_get_error();
    char why[256] = "";
    if (e) ERR_error_string_n(e, why, sizeof why);
    ERR_clear_error();
    PyErr_Format(PyExc_ValueError, "TLS: %s%s%s", what, *why ? ": " : "", why);
    return -1;
}

static int alpn_h2(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg) {
    (void)ssl; (void)arg;
    for (unsigned int i = 0; i < inlen;) {
        unsigned int n = in[i];
        if (i + 1 + n > inlen) break;
        if (n == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
            *out = in + i + 1;
            *outlen = 2;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK; /* as grpc: the handshake ends, then the connection closes */
}

static int use_chain(SSL_CTX *ctx, const char *pem, Py_ssize_t len) {
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *leaf = bio ? PEM_read_bio_X509_AUX(bio, NULL, NULL, NULL) : NULL;
    int ok = leaf && SSL_CTX_use_certificate(ctx, leaf);
    X509_free(leaf);
    X509 *ca;
    while (ok && (ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)))
        if (!SSL_CTX_add_extra_chain_cert(ctx, ca)) { /* owned by ctx on success */
            X509_free(ca);
            ok = 0;
        }
    if (ok) ERR_clear_error(); /* the end of the PEM reads as an error */
    BIO_free(bio);
    return ok ? 0 : fail("the certificate chain (--tls-cert)");
}

static int use_key(SSL_CTX *ctx, const char *pem, Py_ssize_t len) {
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    int ok = key && SSL_CTX_use_PrivateKey(ctx, key) && SSL_CTX_check_private_key(ctx);
    EVP_PKEY_free(key);
    BIO_free(bio);
    return ok ? 0 : fail("the private key (--tls-key)");
}

/* As grpc's tsi (X509_V_FLAG_PARTIAL_CHAIN): every --client-ca certificate is a trust anchor,
 * an intermediate CA too, not only a self-signed root, so a --client-ca file holding only an
 * intermediate accepts the clients it issued, as on grpcio (tls_files has refused non-CAs). */
static void trust_partial_chains(X509_STORE *store) {
    X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
}

static int use_client_cas(SSL_CTX *ctx, const char *pem, Py_ssize_t len) {
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    int n = 0, ok = bio && names && store;
    X509 *ca;
    while (ok && (ca = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        X509_NAME *name = X509_NAME_dup(X509_get_subject_name(ca));
        ok = name && sk_X509_NAME_push(names, name) && X509_STORE_add_cert(store, ca);
        X509_free(ca);
        n++;
    }
    ERR_clear_error();
    BIO_free(bio);
    if (!ok || !n) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        return fail("the client CAs (--client-ca)");
    }
    trust_partial_chains(store);
    SSL_CTX_set_client_CA_list(ctx, names); /* owned by ctx */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    return 0;
}

int tls_configure(const char *cert, Py_ssize_t cert_len, const char *key, Py_ssize_t key_len,
                  const char *ca, Py_ssize_t ca_len) {
    SSL_CTX_free(g_ctx); /* connections of a past server held their own references */
    g_ctx = NULL;
    if (!cert) return 0;
    if (cert_len > INT_MAX || key_len > INT_MAX || ca_len > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "TLS: a PEM file too large");
        return -1;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) return fail("cannot make an SSL context");
    if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        !SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS)) {
        SSL_CTX_free(ctx);
        return fail("cannot set the protocol versions and ciphers");
    }
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    /* Buffers freed while a connection idles (up to --max-connections of them); a retried
     * write may come from a buffer that moved. */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    /* Resumption by tickets only (as grpc's server offers), no server-side session cache to
     * grow; the id context lets a verified client's session resume. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"pdp", 3);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_h2, NULL);
    if (use_chain(ctx, cert, cert_len) < 0 || use_key(ctx, key, key_len) < 0 ||
        (ca && use_client_cas(ctx, ca, ca_len) < 0)) {
        SSL_CTX_free(ctx);
        return -1;
    }
    g_ctx = ctx;
    return 0;
}

int tls_enabled(void) { return g_ctx != NULL; }

/* ---- connections (I/O thread) --------------------------------------------------------------- */

tls_t *tls_new(int fd) {
    /* OpenSSL writes to the socket with write(): a peer gone would raise SIGPIPE, which the
     * plaintext path avoids with MSG_NOSIGNAL. Blocked in this (the I/O) thread, write() says
     * EPIPE instead, whatever the process's disposition. */
    static __thread int sigpipe_blocked;
    if (!sigpipe_blocked) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        pthread_sigmask(SIG_BLOCK, &set, NULL);
        sigpipe_blocked = 1;
    }
    tls_t *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    if (!(t->ssl = SSL_new(g_ctx)) || !SSL_set_fd(t->ssl, fd)) {
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_accept_state(t->ssl);
    return t;
}

int tls_handshake(tls_t *t) {
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1) {
        const unsigned char *p = NULL;
        unsigned int n = 0;
        SSL_get0_alpn_selected(t->ssl, &p, &n);
        return n == 2 && memcmp(p, "h2", 2) == 0 ? TLS_DONE : TLS_NO_H2;
    }
    switch (SSL_get_error(t->ssl, r)) {
    case SSL_ERROR_WANT_READ: return TLS_WANT_READ;
    case SSL_ERROR_WANT_WRITE: return TLS_WANT_WRITE;
    default:
        t->broken = 1;
        ERR_clear_error();
        return TLS_FAILED;
    }
}

ssize_t tls_recv(tls_t *t, void *buf, size_t len, int *want_write) {
    ERR_clear_error();
    int n = SSL_read(t->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0) return n;
    switch (SSL_get_error(t->ssl, n)) {
    case SSL_ERROR_WANT_WRITE: *want_write = 1; /* fall through */
    case SSL_ERROR_WANT_READ: errno = EAGAIN; return -1;
    case SSL_ERROR_ZERO_RETURN: return 0; /* close_notify */
    default:
        t->broken = 1;
        ERR_clear_error();
        errno = ECONNRESET;
        return -1;
    }
}

ssize_t tls_send(tls_t *t, const void *buf, size_t len) {
    ERR_clear_error();
    /* Not a partial write: on EAGAIN the caller retries with the same bytes, as SSL wants. */
    int n = SSL_write(t->ssl, buf, len > INT_MAX ? INT_MAX : (int)len);
    if (n > 0) return n;
    switch (SSL_get_error(t->ssl, n)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE: errno = EAGAIN; return -1;
    default:
        t->broken = 1;
        ERR_clear_error();
        errno = EPIPE;
        return -1;
    }
}

void tls_free(tls_t *t) {
    if (!t) return;
    if (!t->broken && SSL_is_init_finished(t->ssl)) SSL_shutdown(t->ssl); /* one try */
    ERR_clear_error();
    SSL_free(t->ssl);
    free(t);
}

/* ---- the auth context (I/O thread) ---------------------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    int bad;
} packed_t;

static void put(packed_t *b, const char *key, const void *value, size_t n) {
    size_t klen = strlen(key) + 1;
    if (b->bad || n > 0xffffffffu) {
        b->bad = 1;
        return;
    }
    if (b->len + klen + 4 + n > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + klen + 4 + n) cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->bad = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, key, klen);
    uint8_t *at = b->p + b->len + klen;
    at[0] = (uint8_t)(n >> 24); at[1] = (uint8_t)(n >> 16);
    at[2] = (uint8_t)(n >> 8);  at[3] = (uint8_t)n;
    if (n) memcpy(at + 4, value, n);
    b->len += klen + 4 + n;
}

static void put_str(packed_t *b, const char *key, const char *value) {
    put(b, key, value, strlen(value));
}

/* The memory BIO's bytes as one property (grpc: an empty PEM fails the peer). */
static void put_bio(packed_t *b, const char *key, BIO *bio, int empty_ok) {
    char *p = NULL;
    long n = bio ? BIO_get_mem_data(bio, &p) : -1;
    if (n < 0 || (n == 0 && !empty_ok)) b->bad = 1;
    else put(b, key, p, (size_t)n);
    BIO_free(bio);
}

static void put_san(packed_t *b, const char *typed, ASN1_STRING *s) {
    unsigned char *u = NULL;
    int n = ASN1_STRING_to_UTF8(&u, s);
    if (n < 0) b->bad = 1;
    else {
        put(b, "x509_subject_alternative_name", u, (size_t)n);
        put(b, typed, u, (size_t)n);
    }
    OPENSSL_free(u);
}

/* grpc's peer_from_x509: subject, common name, PEM, then each SAN (all of them under
 * x509_subject_alternative_name, DNS/email/URI/IP also under their own key). */
static void put_certificate(packed_t *b, X509 *cert) {
    X509_NAME *subject = X509_get_subject_name(cert);
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio && subject) X509_NAME_print_ex(bio, subject, 0, XN_FLAG_RFC2253);
    put_bio(b, "x509_subject", subject ? bio : NULL, 1);
    int at = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
    if (at < 0) put_str(b, "x509_common_name", "");
    else {
        unsigned char *u = NULL;
        int n = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, at)));
        if (n < 0) b->bad = 1;
        else put(b, "x509_common_name", u, (size_t)n);
        OPENSSL_free(u);
    }
    bio = BIO_new(BIO_s_mem());
    if (bio && !PEM_write_bio_X509(bio, cert)) {
        BIO_free(bio);
        bio = NULL;
    }
    put_bio(b, "x509_pem_cert", bio, 0);
    GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_DNS) put_san(b, "peer_dns", g->d.dNSName);
        else if (g->type == GEN_EMAIL) put_san(b, "peer_email", g->d.rfc822Name);
        else if (g->type == GEN_URI) put_san(b, "peer_uri", g->d.uniformResourceIdentifier);
        else if (g->type == GEN_IPADD) {
            char ip[INET6_ADDRSTRLEN];
            int len = g->d.iPAddress->length;
            if ((len != 4 && len != 16) ||
                !inet_ntop(len == 4 ? AF_INET : AF_INET6, g->d.iPAddress->data, ip, sizeof ip))
                b->bad = 1; /* grpc fails the handshake on such an address */
            else {
                put_str(b, "x509_subject_alternative_name", ip);
                put_str(b, "peer_ip", ip);
            }
        } else put_str(b, "x509_subject_alternative_name", "other types of SAN");
    }
    GENERAL_NAMES_free(sans);
}

/* BoringSSL's names for the groups (grpcio's), where OpenSSL's differ. */
static const char *group_name(int nid) {
    switch (nid) {
    case NID_X25519: return "X25519";
    case NID_X9_62_prime256v1: return "P-256";
    case NID_secp384r1: return "P-384";
    case NID_secp521r1: return "P-521";
    default: return OBJ_nid2sn(nid);
    }
}

tls_auth_t *tls_auth_new(tls_t *t) {
    packed_t b = {0};
    put_str(&b, "transport_security_type", "ssl");
    X509 *cert = SSL_get1_peer_certificate(t->ssl);
    if (cert) put_certificate(&b, cert);
    X509_free(cert);
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(t->ssl); /* server side: without the leaf */
    if (chain && sk_X509_num(chain) > 0) {
        BIO *bio = BIO_new(BIO_s_mem());
        for (int i = 0; bio && i < sk_X509_num(chain); i++)
            if (!PEM_write_bio_X509(bio, sk_X509_value(chain, i))) {
                BIO_free(bio);
                bio = NULL;
            }
        put_bio(&b, "x509_pem_cert_chain", bio, 0);
    }
    put_str(&b, "security_level", "TSI_PRIVACY_AND_INTEGRITY");
    put_str(&b, "ssl_session_reused", SSL_session_reused(t->ssl) ? "true" : "false");
    put_str(&b, "ssl_tls_version", SSL_get_version(t->ssl));
    int group = SSL_get_negotiated_group(t->ssl);
    const char *gname = group > 0 ? group_name(group) : NULL;
    if (gname) put_str(&b, "ssl_negotiated_key_exchange_group", gname);
    const char *sni = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
    if (sni) put_str(&b, "ssl_requested_server_name", sni);
    ERR_clear_error();
    tls_auth_t *a = b.bad ? NULL : malloc(sizeof *a + b.len);
    if (a) {
        a->refs = 1; /* the connection's */
        a->py = NULL;
        a->next = NULL;
        a->len = b.len;
        memcpy(a->data, b.p, b.len);
    }
    free(b.p);
    return a;
}

void tls_auth_hold(tls_auth_t *a) { __atomic_add_fetch(&a->refs, 1, __ATOMIC_RELAXED); }

void tls_auth_drop(tls_auth_t *a) {
    if (__atomic_sub_fetch(&a->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    if (!__atomic_load_n(&a->py, __ATOMIC_ACQUIRE)) return free(a);
    pthread_mutex_lock(&g_release_mu); /* its Python object goes under the GIL */
    a->next = g_release;
    __atomic_store_n(&g_release, a, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&g_release_mu);
}

/* ---- the auth context (GIL held) ------------------------------------------------------------ */

PyObject *tls_auth_py(tls_auth_t *a) {
    PyObject *py = __atomic_load_n(&a->py, __ATOMIC_ACQUIRE);
    if (!py) {
        PyObject *packed = PyBytes_FromStringAndSize((const char *)a->data, (Py_ssize_t)a->len);
        if (!packed) return NULL;
        py = PyList_New(1);
        if (!py) {
            Py_DECREF(packed);
            return NULL;
        }
        PyList_SET_ITEM(py, 0, packed);
        __atomic_store_n(&a->py, py, __ATOMIC_RELEASE);
    }
    Py_INCREF(py);
    return py;
}

void tls_release(void) {
    if (!__atomic_load_n(&g_release, __ATOMIC_RELAXED)) return; /* plaintext: always */
    pthread_mutex_lock(&g_release_mu);
    tls_auth_t *a = g_release;
    g_release = NULL;
    pthread_mutex_unlock(&g_release_mu);
    while (a) {
        tls_auth_t *next = a->next;
        Py_DECREF(a->py);
        free(a);
        a = next;
    }
}
