/* _tls.h: TLS and mTLS for the native transport (_tls.c, on OpenSSL), the few calls _h2.c
 * makes. A connection's bytes go through SSL when the server has TLS, through recv()/send()
 * otherwise; _h2.c never sees OpenSSL's types. */
#ifndef PDP_NATIVE_TLS_H
#define PDP_NATIVE_TLS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <sys/types.h>

typedef struct tls tls_t;           /* one connection's TLS state (the I/O thread's) */
typedef struct tls_auth tls_auth_t; /* one connection's auth context, shared by its calls */

/* Under the GIL, no server running: the TLS the next start() serves with (PEM: certificate
 * chain, key, client CAs or NULL for no client certificates), or plaintext (cert NULL). 0, or
 * -1 with a Python exception set. */
int tls_configure(const char *cert, Py_ssize_t cert_len, const char *key, Py_ssize_t key_len,
                  const char *ca, Py_ssize_t ca_len);
int tls_enabled(void);

/* I/O thread. */
enum { TLS_DONE, TLS_WANT_READ, TLS_WANT_WRITE, TLS_FAILED, TLS_NO_H2 };
tls_t *tls_new(int fd);                   /* NULL: out of memory */
int tls_handshake(tls_t *t);              /* one step: TLS_DONE once finished with ALPN h2 */
/* As recv()/send(): -1 with errno EAGAIN when the socket is not ready (*want_write set when
 * a read must wait for the socket to be writable), another errno when the connection broke;
 * 0 from tls_recv when the peer closed. */
ssize_t tls_recv(tls_t *t, void *buf, size_t len, int *want_write);
ssize_t tls_send(tls_t *t, const void *buf, size_t len);
void tls_free(tls_t *t);
tls_auth_t *tls_auth_new(tls_t *t); /* once the handshake is done; NULL: close the connection */

/* Any thread: a call or a connection holding the auth context. */
void tls_auth_hold(tls_auth_t *a);
void tls_auth_drop(tls_auth_t *a);

/* Under the GIL. tls_auth_py: a new reference to the connection's one-item list, [packed
 * properties as bytes] until Python replaces the item with what it built of them. tls_release:
 * frees the auth contexts dropped meanwhile with their Python objects. */
PyObject *tls_auth_py(tls_auth_t *a);
void tls_release(void);

#endif
