/* Stream connections: a nonblocking TCP socket pinned to one loop, with
 * optional TLS (direct, or upgraded in place for STARTTLS), a bounded output
 * queue flushed once per loop pass (writes coalesce), read pausing
 * (backpressure while a job runs, token-bucket rate limiting) and orderly
 * close. Everything runs on the owning loop's thread; no function may be
 * called from another thread.
 *
 * Memory: reads go through one buffer per loop, handed to the data callback
 * and reused, so an idle connection holds no read buffer; the output queue
 * is released when it empties; OpenSSL buffers are released when idle
 * (SSL_MODE_RELEASE_BUFFERS in tls.c).
 *
 * Lifetime: the connection is freed by the core after the closed callback
 * returns. That callback never runs inside another callback or inside a
 * kt_conn_* call: it is posted to the loop, so a handler may call
 * kt_conn_close()/kt_conn_abort() and keep using its own state until it
 * returns. After close/abort no data callback follows. */
#ifndef KONTALK_CONN_H
#define KONTALK_CONN_H

#include "base.h"
#include <openssl/ssl.h>

struct kt_loop;
struct kt_conn;

struct kt_conn_limits {
    size_t max_output;          /* queued output bytes; beyond: closed with KT_CONN_OVERFLOW
                                 * (0 = no limit) */
    long long rate_bytes;       /* read rate limit in bytes/s (burst = one second); 0 = none */
    unsigned close_timeout_ms;  /* kt_conn_close: give up flushing after this (0 = 5000) */
};

enum kt_conn_end {
    KT_CONN_CLOSED,   /* kt_conn_close finished (output flushed) or kt_conn_abort */
    KT_CONN_EOF,      /* the peer closed the connection */
    KT_CONN_IO_ERROR, /* socket error or reset */
    KT_CONN_TLS_ERROR,/* TLS handshake or record error */
    KT_CONN_OVERFLOW, /* the peer does not read: output queue above max_output */
};

struct kt_conn_callbacks {
    /* Plaintext bytes received (decrypted when TLS is on). buf is only valid
     * during the call. May call any kt_conn_* function on c. */
    void (*data)(struct kt_conn *c, const char *buf, size_t len, void *ud);
    /* The TLS handshake completed (direct TLS or after kt_conn_start_tls). */
    void (*tls_ready)(struct kt_conn *c, void *ud);
    /* The connection is gone; c is freed when this returns. */
    void (*closed)(struct kt_conn *c, enum kt_conn_end why, void *ud);
};

/* Takes ownership of fd (made nonblocking, TCP_NODELAY). ssl: NULL for
 * plaintext, or a server SSL for direct TLS (owned; the handshake starts at
 * once). limits: NULL for none. Call on loop's thread (or before it runs).
 * Never NULL: a connection that cannot be set up (bad fd) gets a posted
 * closed(KT_CONN_IO_ERROR). */
KT_API struct kt_conn *kt_conn_new(struct kt_loop *loop, int fd, SSL *ssl,
                                   const struct kt_conn_limits *limits,
                                   const struct kt_conn_callbacks *cb, void *ud);

/* STARTTLS: output already queued (the <proceed/>) is written in plaintext
 * first, then the server handshake starts on ssl (owned). Input bytes that
 * arrive before the handshake are TLS records, never passed as plaintext. */
KT_API void kt_conn_start_tls(struct kt_conn *c, SSL *ssl);

/* Queues bytes (copied). Exceeding max_output closes with KT_CONN_OVERFLOW. */
KT_API void kt_conn_write(struct kt_conn *c, const void *buf, size_t len);
/* Stops (true) or resumes (false) delivering data callbacks. Bytes already
 * read or buffered in TLS are delivered after resuming. */
KT_API void kt_conn_pause(struct kt_conn *c, bool paused);
/* Stops reading, flushes output (bounded by close_timeout_ms), sends TLS
 * close_notify, closes; then closed(KT_CONN_CLOSED). Idempotent. */
KT_API void kt_conn_close(struct kt_conn *c);
/* Closes now, dropping queued output; then closed(KT_CONN_CLOSED). */
KT_API void kt_conn_abort(struct kt_conn *c);

KT_API SSL *kt_conn_ssl(const struct kt_conn *c);    /* NULL without TLS */
KT_API bool kt_conn_tls_ready(const struct kt_conn *c);
KT_API size_t kt_conn_pending_output(const struct kt_conn *c);
KT_API unsigned long long kt_conn_id(const struct kt_conn *c); /* unique, for log prefixes */
/* "127.0.0.1:40112" or "[::1]:40112". */
KT_API const char *kt_conn_peer(const struct kt_conn *c);
/* The peer's address only (for per-IP limits): "127.0.0.1", "::1". */
KT_API const char *kt_conn_peer_ip(const struct kt_conn *c);
KT_API struct kt_loop *kt_conn_loop(const struct kt_conn *c);

/* A listening TCP socket (nonblocking, SO_REUSEADDR, close-on-exec).
 * address: "127.0.0.1", "::1", "::" (dual stack) or "0.0.0.0". Returns the fd,
 * or -1 with a message in err. port 0 picks a free port (see kt_listen_port). */
KT_API int kt_listen_tcp(const char *address, int port, int backlog, char *err, size_t errlen);
KT_API int kt_listen_port(int fd);

#endif
