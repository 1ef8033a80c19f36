/* Stream connections (contract in include/kontalk/conn.h): a nonblocking
 * socket watched by its loop, a TLS state machine (none, STARTTLS pending,
 * handshaking, ready), an output queue and a handful of flags. Everything
 * runs on the owning loop's thread.
 *
 * Reading: one 16 KiB buffer per loop is handed to the data callback. A
 * readable event reads at most READ_MAX_CALLS times or READ_BUDGET bytes,
 * then leaves the other connections their turn; epoll is level-triggered,
 * so unread socket bytes come back on the next pass. Bytes OpenSSL already
 * holds do not wake epoll: when a pass stops with TLS data buffered (budget
 * spent, or a resume) a 0 ms timer retries. The read rate limit is a token
 * bucket (burst: one second) that caps each read; when it is empty the
 * socket leaves the epoll set and a timer refills it.
 *
 * Writing: kt_conn_write only appends, so the writes of one loop pass
 * coalesce; the bytes go out in the loop's before-sleep pass. conn.c keeps
 * a small registry (struct conn_loop, one per loop with connections: the
 * list of connections with output to flush and the read buffer) and owns
 * the before-sleep hook of such loops; the registry entry is created with
 * the loop's first connection and dropped, hook included, with its last.
 * A write that would block waits for writability; an empty queue gives its
 * memory back.
 *
 * Ending: every end goes through conn_finish(), which stops watching,
 * closes the socket and posts the closed callback; the connection is freed
 * after that callback returns. kt_conn_close() flushes first (bounded by
 * close_timeout_ms), then sends one TLS close_notify without waiting for the
 * peer's. A peer EOF ends the connection at once (queued output dropped).
 *
 * SIGPIPE: plaintext writes use MSG_NOSIGNAL, but OpenSSL writes with
 * write(), so the process must block or ignore SIGPIPE (kontalkd does). */
#include "config.h"
#include <kontalk/conn.h>
#include <kontalk/buf.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define READ_BUF_SIZE 16384       /* one TLS record */
#define READ_MAX_CALLS 4          /* reads per readable event... */
#define READ_BUDGET (64 * 1024)   /* ...or bytes, whichever comes first */
#define RATE_MIN_CHUNK 4096       /* a rate-blocked conn waits for this many tokens */
#define RATE_MAX (1LL << 40)      /* bytes/s; keeps milli-byte arithmetic in range */
#define SSL_WRITE_MAX (1 << 20)   /* bytes per SSL_write call (its length is an int) */
#define WRITE_BUDGET (256 * 1024) /* bytes per flush before the others get their turn */
#define DRAIN_MAX (64 * 1024)     /* unread input discarded before a graceful close */
#define CLOSE_TIMEOUT_DEFAULT 5000

enum conn_tls {
    TLS_NONE,      /* plaintext */
    TLS_STARTING,  /* kt_conn_start_tls: the plaintext part of the queue is going out */
    TLS_HANDSHAKE, /* SSL_accept in progress */
    TLS_READY,
};

/* Per-loop state shared by the loop's connections (see the file comment). */
struct conn_loop {
    struct kt_loop *loop;
    unsigned nconns;
    struct kt_conn *flush_head; /* connections with output to write this pass */
    struct conn_loop *next;
    char rbuf[READ_BUF_SIZE];
};

struct kt_conn {
    struct kt_loop *loop;
    struct conn_loop *cl;
    struct kt_io *io;
    SSL *ssl;
    struct kt_conn_callbacks cb;
    void *ud;
    unsigned long long id;

    struct kt_buf out; /* queued output; the bytes before out_pos are sent */
    size_t out_pos;
    size_t plain_left; /* TLS_STARTING: queued bytes still to send in plaintext */
    struct kt_conn *flush_prev, *flush_next;
    size_t max_output; /* 0: unlimited */

    long long rate;               /* read limit in bytes/s, 0: none */
    long long tokens_m;           /* token bucket, in milli-bytes (exact integer refill) */
    uint64_t refill_ms;           /* last refill */
    struct kt_timer *read_timer;  /* rate refill, or a retry for buffered TLS data */
    struct kt_timer *close_timer; /* kt_conn_close gives up flushing */

    int fd;
    int ssl_wlen; /* length of an SSL_write to repeat after WANT_*, 0: none */
    unsigned close_timeout_ms;
    unsigned char tls;      /* enum conn_tls */
    unsigned char why;      /* enum kt_conn_end, once dead */
    unsigned char ev;       /* KT_IO_* interest currently set */
    unsigned char peer_off; /* names + peer_off: the "ip:port" string */
    bool dead : 1;          /* finished: closed callback posted, only the struct is left */
    bool closing : 1;       /* kt_conn_close: flushing */
    bool paused : 1;
    bool rate_blocked : 1;
    bool in_flush : 1;         /* on cl->flush_head */
    bool write_blocked : 1;    /* a write returned EAGAIN/WANT_WRITE: wait for writable */
    bool write_wants_read : 1; /* SSL_write returned WANT_READ */
    bool read_wants_write : 1; /* SSL_read returned WANT_WRITE */
    bool hs_want_write : 1;    /* the handshake waits for writable (else readable) */
    bool notify_sent : 1;      /* the TLS close_notify went out */
    char names[];              /* "ip\0ip:port\0", sized at creation */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct conn_loop *registry;
static atomic_ullong conn_next_id = 1;

static void conn_flush_all(struct kt_loop *loop, void *data);
static void conn_finish(struct kt_conn *c, enum kt_conn_end why, bool graceful);

/* ---- the per-loop registry ---- */

static struct conn_loop *conn_loop_get(struct kt_loop *loop)
{
    struct conn_loop *cl;

    pthread_mutex_lock(&registry_lock);
    for (cl = registry; cl; cl = cl->next)
        if (cl->loop == loop)
            break;
    if (!cl) {
        cl = kt_new(struct conn_loop);
        cl->loop = loop;
        cl->next = registry;
        registry = cl;
        kt_loop_set_before_sleep(loop, conn_flush_all, cl);
    }
    cl->nconns++;
    pthread_mutex_unlock(&registry_lock);
    return cl;
}

/* Drops the entry with the loop's last connection, so a loop freed later
 * (and maybe another allocated at the same address) leaves nothing stale. */
static void conn_loop_put(struct conn_loop *cl)
{
    pthread_mutex_lock(&registry_lock);
    kt_assert(cl->nconns > 0);
    if (--cl->nconns == 0) {
        struct conn_loop **pp = &registry;
        while (*pp != cl)
            pp = &(*pp)->next;
        *pp = cl->next;
        kt_assert(cl->flush_head == NULL);
        kt_loop_set_before_sleep(cl->loop, NULL, NULL);
        free(cl);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* ---- small helpers ---- */

static size_t conn_pending(const struct kt_conn *c)
{
    return c->out.len - c->out_pos;
}

static bool conn_can_read(const struct kt_conn *c)
{
    return !c->dead && !c->closing && !c->paused && !c->rate_blocked && !c->read_wants_write &&
           (c->tls == TLS_NONE || c->tls == TLS_READY);
}

static void conn_update_events(struct kt_conn *c)
{
    unsigned ev = 0;

    if (c->dead || !c->io)
        return;
    if (c->tls == TLS_HANDSHAKE) {
        ev = c->hs_want_write ? KT_IO_WRITE : KT_IO_READ;
    } else {
        if (conn_can_read(c) || c->write_wants_read)
            ev |= KT_IO_READ;
        if (c->write_blocked || c->read_wants_write)
            ev |= KT_IO_WRITE;
    }
    if (ev != c->ev) {
        kt_io_set_events(c->io, ev);
        c->ev = (unsigned char)ev;
    }
}

static void flush_unlink(struct kt_conn *c)
{
    if (!c->in_flush)
        return;
    if (c->flush_prev)
        c->flush_prev->flush_next = c->flush_next;
    else
        c->cl->flush_head = c->flush_next;
    if (c->flush_next)
        c->flush_next->flush_prev = c->flush_prev;
    c->flush_prev = c->flush_next = NULL;
    c->in_flush = false;
}

/* Puts c on its loop's before-sleep list if it has output that can go now. */
static void conn_schedule_flush(struct kt_conn *c)
{
    if (c->dead || c->in_flush || c->write_blocked || c->write_wants_read ||
        c->tls == TLS_HANDSHAKE || conn_pending(c) == 0)
        return;
    c->flush_prev = NULL;
    c->flush_next = c->cl->flush_head;
    if (c->flush_next)
        c->flush_next->flush_prev = c;
    c->cl->flush_head = c;
    c->in_flush = true;
}

static void conn_fail_errno(struct kt_conn *c, const char *op, int err)
{
    kt_log(KT_LOG_DEBUG, "conn %llu (%s): %s: %s", c->id, kt_conn_peer(c), op, strerror(err));
    conn_finish(c, KT_CONN_IO_ERROR, false);
}

/* Ends c after an SSL_* call failed with err (from SSL_get_error), saved_errno
 * being errno right after the call. A peer that drops TCP without
 * close_notify is an EOF, not a TLS error: most clients do so. */
static void conn_fail_tls(struct kt_conn *c, const char *op, int err, int saved_errno)
{
    enum kt_conn_end why = KT_CONN_TLS_ERROR;
    unsigned long e = ERR_peek_error();
    char msg[256];

    if (err == SSL_ERROR_ZERO_RETURN) {
        why = KT_CONN_EOF;
        snprintf(msg, sizeof(msg), "close_notify");
    } else if (err == SSL_ERROR_SYSCALL && e == 0) {
        why = saved_errno ? KT_CONN_IO_ERROR : KT_CONN_EOF;
        snprintf(msg, sizeof(msg), "%s", saved_errno ? strerror(saved_errno) : "EOF");
    } else if (e && ERR_GET_LIB(e) == ERR_LIB_SSL &&
               ERR_GET_REASON(e) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        why = KT_CONN_EOF;
        snprintf(msg, sizeof(msg), "EOF without close_notify");
    } else if (e && ERR_SYSTEM_ERROR(e)) {
        why = KT_CONN_IO_ERROR;
        snprintf(msg, sizeof(msg), "%s", strerror(ERR_GET_REASON(e)));
    } else if (e) {
        ERR_error_string_n(e, msg, sizeof(msg));
    } else {
        snprintf(msg, sizeof(msg), "error %d", err);
    }
    ERR_clear_error();
    kt_log(KT_LOG_DEBUG, "conn %llu (%s): %s: %s", c->id, kt_conn_peer(c), op, msg);
    conn_finish(c, why, false);
}

/* ---- ending ---- */

static void conn_closed_post(struct kt_loop *loop, void *data)
{
    struct kt_conn *c = data;

    (void)loop;
    if (c->cb.closed)
        c->cb.closed(c, (enum kt_conn_end)c->why, c->ud);
    SSL_free(c->ssl);
    conn_loop_put(c->cl);
    free(c);
}

/* Reads and discards what the peer sent and nobody will read: closing a
 * socket with unread input makes the kernel send a reset, which may destroy
 * the output just flushed before the peer reads it. */
static void conn_drain(int fd)
{
    char buf[4096];
    size_t total = 0;
    ssize_t n;

    while (total < DRAIN_MAX) {
        n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        total += (size_t)n;
    }
}

/* The one way out: stops watching, closes the socket, drops the output and
 * posts the closed callback (so it never runs inside a kt_conn_* call or
 * another callback). graceful: the output is flushed; say goodbye. */
static void conn_finish(struct kt_conn *c, enum kt_conn_end why, bool graceful)
{
    if (c->dead)
        return;
    c->dead = true;
    c->why = (unsigned char)why;
    flush_unlink(c);
    kt_io_del(&c->io);
    kt_timer_cancel(&c->read_timer);
    kt_timer_cancel(&c->close_timer);
    if (c->fd >= 0) {
        if (graceful) {
            /* One close_notify (if not sent yet), without waiting for the peer's. */
            if (c->tls == TLS_READY && !c->notify_sent) {
                ERR_clear_error();
                SSL_shutdown(c->ssl);
                ERR_clear_error();
            }
            shutdown(c->fd, SHUT_WR);
            conn_drain(c->fd);
        }
        close(c->fd);
        c->fd = -1;
    }
    kt_buf_free(&c->out);
    c->out_pos = c->plain_left = 0;
    kt_loop_post(c->loop, conn_closed_post, c);
}

/* The end of a graceful close once the output is out: the TLS close_notify
 * must fit in the socket too. When the socket is full (a slow reader of a
 * big queue), it waits for writability, still bounded by the close timer;
 * sending it from conn_finish regardless would lose it. */
static void conn_close_complete(struct kt_conn *c)
{
    if (c->tls == TLS_READY && !c->notify_sent) {
        ERR_clear_error();
        int r = SSL_shutdown(c->ssl);
        int err = r < 0 ? SSL_get_error(c->ssl, r) : SSL_ERROR_NONE;
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_WRITE) {
            c->write_blocked = true;
            conn_update_events(c);
            return;
        }
        c->notify_sent = true;
    }
    conn_finish(c, KT_CONN_CLOSED, true);
}

static void conn_close_timeout(struct kt_loop *loop, void *data)
{
    struct kt_conn *c = data;

    (void)loop;
    c->close_timer = NULL;
    kt_log(KT_LOG_DEBUG, "conn %llu (%s): close timed out with %zu bytes unsent", c->id,
           kt_conn_peer(c), conn_pending(c));
    conn_finish(c, KT_CONN_CLOSED, false);
}

/* ---- TLS handshake ---- */

static void conn_read(struct kt_conn *c);

static void conn_start_handshake(struct kt_conn *c)
{
    if (!SSL_set_fd(c->ssl, c->fd)) {
        conn_fail_tls(c, "SSL_set_fd", SSL_ERROR_SSL, 0);
        return;
    }
    SSL_set_accept_state(c->ssl);
    c->tls = TLS_HANDSHAKE;
    /* A server speaks second: wait for the ClientHello. */
    c->hs_want_write = false;
    conn_update_events(c);
}

static void conn_handshake(struct kt_conn *c)
{
    int r, err, saved_errno;

    ERR_clear_error();
    errno = 0; /* SSL_ERROR_SYSCALL without a failed call must not see a stale one */
    r = SSL_accept(c->ssl);
    if (r == 1) {
        c->tls = TLS_READY;
        c->hs_want_write = false;
        if (c->cb.tls_ready)
            c->cb.tls_ready(c, c->ud);
        if (c->dead)
            return;
        conn_schedule_flush(c);
        /* Application data may have come with the client's Finished and
         * sit in OpenSSL already, where epoll would not see it. */
        conn_read(c);
        return;
    }
    saved_errno = errno;
    err = SSL_get_error(c->ssl, r);
    if (err == SSL_ERROR_WANT_READ) {
        c->hs_want_write = false;
    } else if (err == SSL_ERROR_WANT_WRITE) {
        c->hs_want_write = true;
    } else {
        conn_fail_tls(c, "TLS handshake", err, saved_errno);
        return;
    }
    conn_update_events(c);
}

/* ---- writing ---- */

/* Returns the bytes written, 0 if the write must wait (flag set), -1 if c
 * was finished. */
static ssize_t conn_write_plain(struct kt_conn *c, size_t len)
{
    for (;;) {
        ssize_t n = send(c->fd, c->out.data + c->out_pos, len, MSG_NOSIGNAL);
        if (n > 0)
            return n;
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0 || errno == EAGAIN || errno == EWOULDBLOCK) {
            c->write_blocked = true;
            return 0;
        }
        conn_fail_errno(c, "send", errno);
        return -1;
    }
}

/* Same results as conn_write_plain. After WANT_*, OpenSSL has already
 * encrypted (part of) the bytes and must be called again with at least the
 * same length; the queue only grows or moves meanwhile (the content is
 * unchanged, and SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER allows the move). */
static ssize_t conn_write_tls(struct kt_conn *c, size_t len)
{
    int wlen, n, err, saved_errno;

    if (c->ssl_wlen) {
        kt_assert((size_t)c->ssl_wlen <= len);
        wlen = c->ssl_wlen;
    } else {
        wlen = len > SSL_WRITE_MAX ? SSL_WRITE_MAX : (int)len;
    }
    ERR_clear_error();
    errno = 0;
    n = SSL_write(c->ssl, c->out.data + c->out_pos, wlen);
    if (n > 0) {
        c->ssl_wlen = 0;
        return n;
    }
    saved_errno = errno;
    err = SSL_get_error(c->ssl, n);
    if (err == SSL_ERROR_WANT_WRITE) {
        c->ssl_wlen = wlen;
        c->write_blocked = true;
        return 0;
    }
    if (err == SSL_ERROR_WANT_READ) {
        c->ssl_wlen = wlen;
        c->write_wants_read = true;
        return 0;
    }
    conn_fail_tls(c, "SSL_write", err, saved_errno);
    return -1;
}

/* Writes what can go now: until the queue is empty or a write must wait,
 * or WRITE_BUDGET bytes went out (then it waits for writability, which
 * level-triggered epoll reports at once, so a fast reader of a big queue
 * does not hold the loop). Then moves on: the STARTTLS handshake once the
 * plaintext part is out, or the end of a kt_conn_close once everything is. */
static void conn_flush(struct kt_conn *c)
{
    size_t written = 0;

    while (!c->dead && c->tls != TLS_HANDSHAKE && !c->write_blocked && !c->write_wants_read) {
        size_t len = conn_pending(c);
        ssize_t n;

        if (c->tls == TLS_STARTING) {
            if (c->plain_left == 0) {
                if (c->closing) {
                    /* Closing before the handshake: the rest of the queue
                     * was meant to be encrypted, and never will be. */
                    conn_finish(c, KT_CONN_CLOSED, true);
                    return;
                }
                conn_start_handshake(c);
                break;
            }
            if (len > c->plain_left)
                len = c->plain_left;
        }
        if (len == 0)
            break;
        if (written >= WRITE_BUDGET) {
            c->write_blocked = true;
            break;
        }
        n = c->tls == TLS_READY ? conn_write_tls(c, len) : conn_write_plain(c, len);
        if (n <= 0)
            break;
        c->out_pos += (size_t)n;
        written += (size_t)n;
        if (c->tls == TLS_STARTING)
            c->plain_left -= (size_t)n;
    }
    if (c->dead)
        return;
    if (conn_pending(c) == 0 && c->out.data) {
        kt_buf_free(&c->out);
        c->out_pos = 0;
    }
    if (c->closing && conn_pending(c) == 0 && c->tls != TLS_HANDSHAKE) {
        conn_close_complete(c);
        return;
    }
    conn_update_events(c);
}

/* The before-sleep hook of every loop with connections. */
static void conn_flush_all(struct kt_loop *loop, void *data)
{
    struct conn_loop *cl = data;
    struct kt_conn *c;

    (void)loop;
    while ((c = cl->flush_head) != NULL) {
        flush_unlink(c);
        conn_flush(c);
    }
}

/* ---- reading ---- */

static void conn_read_timer(struct kt_loop *loop, void *data)
{
    struct kt_conn *c = data;

    (void)loop;
    c->read_timer = NULL;
    c->rate_blocked = false;
    conn_read(c);
}

/* Another read attempt soon, for bytes that epoll cannot announce. */
static void conn_retry_read(struct kt_conn *c)
{
    if (!c->read_timer)
        c->read_timer = kt_timer_add(c->loop, 0, conn_read_timer, c);
}

static void conn_refill(struct kt_conn *c)
{
    uint64_t now = kt_now_ms();
    long long cap = c->rate * 1000;

    if (now <= c->refill_ms)
        return;
    if (now - c->refill_ms >= 1000)
        c->tokens_m = cap;
    else
        c->tokens_m += (long long)(now - c->refill_ms) * c->rate;
    if (c->tokens_m > cap)
        c->tokens_m = cap;
    c->refill_ms = now;
}

/* The bucket is empty: stop reading until it holds a useful amount. */
static void conn_rate_block(struct kt_conn *c)
{
    long long want = (c->rate < RATE_MIN_CHUNK ? c->rate : RATE_MIN_CHUNK) * 1000;
    long long ms = (want - c->tokens_m + c->rate - 1) / c->rate;

    c->rate_blocked = true;
    kt_timer_cancel(&c->read_timer);
    c->read_timer = kt_timer_add(c->loop, ms > 0 ? (uint64_t)ms : 1, conn_read_timer, c);
}

/* Returns the bytes read into the loop buffer, 0 if nothing is available
 * now, -1 if c was finished. */
static ssize_t conn_read_plain(struct kt_conn *c, size_t want)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->cl->rbuf, want, 0);
        if (n > 0)
            return n;
        if (n == 0) {
            conn_finish(c, KT_CONN_EOF, false);
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        conn_fail_errno(c, "recv", errno);
        return -1;
    }
}

static ssize_t conn_read_tls(struct kt_conn *c, size_t want)
{
    int n, err, saved_errno;

    ERR_clear_error();
    errno = 0;
    n = SSL_read(c->ssl, c->cl->rbuf, (int)want);
    if (n > 0)
        return n;
    saved_errno = errno;
    err = SSL_get_error(c->ssl, n);
    if (err == SSL_ERROR_WANT_READ)
        return 0;
    if (err == SSL_ERROR_WANT_WRITE) {
        c->read_wants_write = true;
        return 0;
    }
    conn_fail_tls(c, "SSL_read", err, saved_errno);
    return -1;
}

/* One bounded read pass; each chunk goes to the data callback, which may
 * pause, close, start TLS: the loop condition sees all of that. */
static void conn_read(struct kt_conn *c)
{
    size_t total = 0;

    for (int calls = 0; conn_can_read(c); calls++) {
        size_t want = READ_BUF_SIZE;
        ssize_t n;

        if (calls == READ_MAX_CALLS || total >= READ_BUDGET) {
            if (c->tls == TLS_READY && SSL_has_pending(c->ssl))
                conn_retry_read(c);
            break;
        }
        if (c->rate > 0) {
            long long avail;
            conn_refill(c);
            avail = c->tokens_m / 1000;
            if (avail <= 0) {
                conn_rate_block(c);
                break;
            }
            if ((long long)want > avail)
                want = (size_t)avail;
        }
        n = c->tls == TLS_READY ? conn_read_tls(c, want) : conn_read_plain(c, want);
        if (n <= 0)
            break;
        total += (size_t)n;
        if (c->rate > 0)
            c->tokens_m -= (long long)n * 1000;
        if (c->cb.data)
            c->cb.data(c, c->cl->rbuf, (size_t)n, c->ud);
    }
    conn_update_events(c);
}

/* A hang-up or error while c is not reading (epoll reports those whatever
 * the interest). An error ends c now; an EOF too, unless input is still
 * waiting to be delivered (paused): the reads after resuming will see it. */
static void conn_hangup(struct kt_conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    char b;

    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err) {
        conn_fail_errno(c, "socket", err);
        return;
    }
    if (c->closing || (c->ssl && c->tls == TLS_READY && SSL_has_pending(c->ssl)))
        return;
    if (recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0)
        conn_finish(c, KT_CONN_EOF, false);
}

static void conn_io(struct kt_loop *loop, int fd, unsigned events, void *data)
{
    struct kt_conn *c = data;

    (void)loop, (void)fd;
    if ((events & KT_IO_HUP) && !(c->ev & KT_IO_READ)) {
        conn_hangup(c);
        if (c->dead)
            return;
    }
    if (events & KT_IO_WRITE) {
        if (c->tls == TLS_HANDSHAKE) {
            conn_handshake(c);
        } else {
            if (c->write_blocked) {
                c->write_blocked = false;
                conn_flush(c);
            }
            if (!c->dead && c->read_wants_write) {
                c->read_wants_write = false;
                conn_read(c);
            }
        }
    }
    if (c->dead)
        return;
    if ((events & (KT_IO_READ | KT_IO_HUP)) && (c->ev & KT_IO_READ)) {
        if (c->tls == TLS_HANDSHAKE) {
            conn_handshake(c);
        } else {
            if (c->write_wants_read) {
                c->write_wants_read = false;
                conn_flush(c);
            }
            if (!c->dead)
                conn_read(c);
        }
    }
    conn_update_events(c);
}

/* ---- public API ---- */

/* "1.2.3.4" / "1.2.3.4:5" or "::1" / "[::1]:5"; v4-mapped v6 shown as v4. */
static void conn_format_peer(int fd, char *ip, size_t iplen, char *peer, size_t peerlen)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&ss;
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&ss;

    snprintf(ip, iplen, "unknown");
    snprintf(peer, peerlen, "unknown");
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        if (inet_ntop(AF_INET, &sin->sin_addr, ip, (socklen_t)iplen))
            snprintf(peer, peerlen, "%s:%u", ip, ntohs(sin->sin_port));
    } else if (ss.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&sin6->sin6_addr)) {
        if (inet_ntop(AF_INET, &sin6->sin6_addr.s6_addr[12], ip, (socklen_t)iplen))
            snprintf(peer, peerlen, "%s:%u", ip, ntohs(sin6->sin6_port));
    } else if (ss.ss_family == AF_INET6) {
        if (inet_ntop(AF_INET6, &sin6->sin6_addr, ip, (socklen_t)iplen))
            snprintf(peer, peerlen, "[%s]:%u", ip, ntohs(sin6->sin6_port));
    } else if (ss.ss_family == AF_UNIX) {
        snprintf(ip, iplen, "unix");
        snprintf(peer, peerlen, "unix");
    }
}

struct kt_conn *kt_conn_new(struct kt_loop *loop, int fd, SSL *ssl,
                            const struct kt_conn_limits *limits, const struct kt_conn_callbacks *cb,
                            void *ud)
{
    char ip[INET6_ADDRSTRLEN], peer[INET6_ADDRSTRLEN + 16];
    struct kt_conn *c;
    size_t iplen, peerlen;
    int flags, one = 1;

    kt_assert(loop != NULL);
    conn_format_peer(fd, ip, sizeof(ip), peer, sizeof(peer));
    iplen = strlen(ip);
    peerlen = strlen(peer);
    c = kt_calloc(1, sizeof(*c) + iplen + 1 + peerlen + 1);
    memcpy(c->names, ip, iplen + 1);
    memcpy(c->names + iplen + 1, peer, peerlen + 1);
    c->peer_off = (unsigned char)(iplen + 1);

    c->loop = loop;
    c->cl = conn_loop_get(loop);
    c->fd = fd;
    c->ssl = ssl;
    if (cb)
        c->cb = *cb;
    c->ud = ud;
    c->id = atomic_fetch_add(&conn_next_id, 1);
    c->close_timeout_ms = CLOSE_TIMEOUT_DEFAULT;
    if (limits) {
        c->max_output = limits->max_output;
        c->rate = limits->rate_bytes < 0 ? 0 : limits->rate_bytes;
        if (c->rate > RATE_MAX)
            c->rate = RATE_MAX;
        if (limits->close_timeout_ms)
            c->close_timeout_ms = limits->close_timeout_ms;
    }
    c->tokens_m = c->rate * 1000;
    c->refill_ms = kt_now_ms();

    flags = fd >= 0 ? fcntl(fd, F_GETFL) : -1;
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
        conn_fail_errno(c, "fcntl", fd < 0 ? EBADF : errno);
        return c;
    }
    /* Stanzas are written whole per pass: no reason to wait for more. Fails
     * harmlessly on non-TCP sockets. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->io = kt_io_add(loop, fd, 0, conn_io, c);
    if (!c->io) {
        conn_finish(c, KT_CONN_IO_ERROR, false);
        return c;
    }
    if (ssl)
        conn_start_handshake(c);
    else
        conn_update_events(c);
    return c;
}

void kt_conn_start_tls(struct kt_conn *c, SSL *ssl)
{
    kt_assert(ssl != NULL);
    if (c->dead || c->closing) {
        SSL_free(ssl);
        return;
    }
    kt_assert(c->ssl == NULL);
    c->ssl = ssl;
    c->tls = TLS_STARTING;
    c->plain_left = conn_pending(c);
    if (c->plain_left == 0)
        conn_start_handshake(c);
    else
        conn_schedule_flush(c);
    conn_update_events(c);
}

void kt_conn_write(struct kt_conn *c, const void *buf, size_t len)
{
    if (c->dead || c->closing || len == 0)
        return;
    if (c->max_output && (len > c->max_output || conn_pending(c) > c->max_output - len)) {
        kt_log(KT_LOG_DEBUG, "conn %llu (%s): output queue above %zu bytes", c->id, kt_conn_peer(c),
               c->max_output);
        conn_finish(c, KT_CONN_OVERFLOW, false);
        return;
    }
    /* Compact when the sent part is at least as big as what would move, so
     * each byte moves O(1) times on average. */
    if (c->out_pos > 0 && c->out_pos >= conn_pending(c)) {
        kt_buf_consume(&c->out, c->out_pos);
        c->out_pos = 0;
    }
    kt_buf_append(&c->out, buf, len);
    conn_schedule_flush(c);
}

void kt_conn_pause(struct kt_conn *c, bool paused)
{
    if (c->dead || c->paused == paused)
        return;
    c->paused = paused;
    if (!paused && c->tls == TLS_READY && SSL_has_pending(c->ssl))
        conn_retry_read(c);
    conn_update_events(c);
}

void kt_conn_close(struct kt_conn *c)
{
    if (c->dead || c->closing)
        return;
    c->closing = true;
    if (c->tls == TLS_HANDSHAKE) {
        /* Nothing can be flushed before the handshake ends. */
        conn_finish(c, KT_CONN_CLOSED, false);
        return;
    }
    c->close_timer = kt_timer_add(c->loop, c->close_timeout_ms, conn_close_timeout, c);
    if (conn_pending(c) == 0) {
        conn_close_complete(c);
        return;
    }
    conn_schedule_flush(c);
    conn_update_events(c);
}

void kt_conn_abort(struct kt_conn *c)
{
    conn_finish(c, KT_CONN_CLOSED, false);
}

SSL *kt_conn_ssl(const struct kt_conn *c)
{
    return c->ssl;
}

bool kt_conn_tls_ready(const struct kt_conn *c)
{
    return c->tls == TLS_READY;
}

size_t kt_conn_pending_output(const struct kt_conn *c)
{
    return conn_pending(c);
}

unsigned long long kt_conn_id(const struct kt_conn *c)
{
    return c->id;
}

const char *kt_conn_peer(const struct kt_conn *c)
{
    return c->names + c->peer_off;
}

const char *kt_conn_peer_ip(const struct kt_conn *c)
{
    return c->names;
}

struct kt_loop *kt_conn_loop(const struct kt_conn *c)
{
    return c->loop;
}

/* ---- listening ---- */

int kt_listen_tcp(const char *address, int port, int backlog, char *err, size_t errlen)
{
    union {
        struct sockaddr sa;
        struct sockaddr_in sin;
        struct sockaddr_in6 sin6;
    } u;
    socklen_t salen;
    const char *what;
    int fd = -1, one = 1, e;

    memset(&u, 0, sizeof(u));
    if (!address || port < 0 || port > 65535) {
        if (err && errlen)
            snprintf(err, errlen, "invalid listen address or port %d", port);
        return -1;
    }
    if (inet_pton(AF_INET, address, &u.sin.sin_addr) == 1) {
        u.sin.sin_family = AF_INET;
        u.sin.sin_port = htons((uint16_t)port);
        salen = sizeof(u.sin);
    } else if (inet_pton(AF_INET6, address, &u.sin6.sin6_addr) == 1) {
        u.sin6.sin6_family = AF_INET6;
        u.sin6.sin6_port = htons((uint16_t)port);
        salen = sizeof(u.sin6);
    } else {
        if (err && errlen)
            snprintf(err, errlen, "invalid listen address '%s' (an IPv4 or IPv6 literal)", address);
        return -1;
    }

    what = "create a socket for";
    fd = socket(u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    what = "set SO_REUSEADDR on";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
        goto fail;
    if (u.sa.sa_family == AF_INET6) {
        /* "::" is dual stack whatever the system default; a specific v6
         * address is v6 only anyway. */
        int v6only = !IN6_IS_ADDR_UNSPECIFIED(&u.sin6.sin6_addr);
        what = "set IPV6_V6ONLY on";
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof(v6only)) < 0)
            goto fail;
    }
    what = "bind";
    if (bind(fd, &u.sa, salen) < 0)
        goto fail;
    what = "listen on";
    if (listen(fd, backlog > 0 ? backlog : SOMAXCONN) < 0)
        goto fail;
    return fd;

fail:
    e = errno;
    if (err && errlen)
        snprintf(err, errlen, "cannot %s %s%s%s port %d: %s", what,
                 u.sa.sa_family == AF_INET6 ? "[" : "", address,
                 u.sa.sa_family == AF_INET6 ? "]" : "", port, strerror(e));
    if (fd >= 0)
        close(fd);
    return -1;
}

int kt_listen_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return -1;
    if (ss.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&ss)->sin_port);
    if (ss.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&ss)->sin6_port);
    return -1;
}
