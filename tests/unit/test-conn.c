/* Unit tests for stream connections: a kt_loop runs in its own thread and
 * accepts on a real 127.0.0.1 socket; the test thread is the client, with
 * blocking sockets and an OpenSSL client. A throwaway self-signed
 * certificate is generated at start into a temporary directory.
 *
 * Covered: listening (v4, v6, dual stack, bad input), plaintext echo, peer
 * strings and ids, EOF and reset, multi-megabyte writes with partial writes
 * (plaintext and TLS), output overflow, close flushing (and its timeout),
 * abort dropping output, direct TLS, STARTTLS, garbage instead of TLS,
 * pause/resume (plaintext and TLS), rate limiting (plaintext and TLS, where
 * data waits inside OpenSSL), close from the data callback, bad fds, and
 * that the closed callback runs once and never inside a kt_conn_* call. */
#include "config.h"
#include <kontalk/buf.h>
#include <kontalk/conn.h>
#include <kontalk/loop.h>
#include <kontalk/log.h>
#include <kontalk/tls.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

int main(void);

#define WAIT_MS 10000

/* ---- the server side, on the loop thread ---- */

struct server {
    struct kt_loop *loop;
    pthread_t thread;
    int lfd, port;
    struct kt_io *lio;
    struct kt_tls *tls;

    pthread_mutex_t mu;
    pthread_cond_t cv;

    /* Behaviour of the next accepted connection (set by the test thread). */
    struct kt_conn_limits limits;
    bool direct_tls, echo, starttls, pause_at_start, pause_in_data, close_in_data;
    int sndbuf;

    /* What happened (written on the loop thread, under mu). */
    struct kt_conn *conn;
    int accepted;
    struct kt_buf rx;
    int data_calls;
    int data_while_paused;
    bool paused;
    int tls_ready_calls;
    int closed_calls;
    enum kt_conn_end why;
    bool closed_inside_call;
    bool in_call; /* a kt_conn_* call made by a test closure is running */
    uint64_t first_data_ms, last_data_ms;
    char peer[80], peer_ip[64];
    unsigned long long id;

    int extra_fds[4]; /* more listeners, closed at the end */
    int nextra;
};

static struct server S;

static void srv_lock(void)
{
    pthread_mutex_lock(&S.mu);
}

static void srv_unlock(void)
{
    pthread_cond_broadcast(&S.cv);
    pthread_mutex_unlock(&S.mu);
}

/* Waits with S.mu held until cond holds or WAIT_MS pass; res gets cond. */
#define WAIT_FOR(res, cond)                                                                        \
    do {                                                                                           \
        struct timespec ts_;                                                                       \
        clock_gettime(CLOCK_REALTIME, &ts_);                                                       \
        ts_.tv_sec += WAIT_MS / 1000;                                                              \
        pthread_mutex_lock(&S.mu);                                                                 \
        while (!(cond) && pthread_cond_timedwait(&S.cv, &S.mu, &ts_) == 0)                         \
            ;                                                                                      \
        (res) = (cond);                                                                            \
        pthread_mutex_unlock(&S.mu);                                                               \
    } while (0)

static void srv_data(struct kt_conn *c, const char *buf, size_t len, void *ud)
{
    bool echo, starttls, pause, close;

    (void)ud;
    srv_lock();
    S.data_calls++;
    if (S.paused)
        S.data_while_paused++;
    kt_buf_append(&S.rx, buf, len);
    S.last_data_ms = kt_now_ms();
    if (!S.first_data_ms)
        S.first_data_ms = S.last_data_ms;
    echo = S.echo && (!S.starttls || kt_conn_tls_ready(c));
    starttls = S.starttls && !kt_conn_ssl(c) && strstr(S.rx.data, "<starttls/>");
    pause = S.pause_in_data && S.data_calls == 1;
    if (pause)
        S.paused = true;
    close = S.close_in_data;
    srv_unlock();

    if (echo)
        kt_conn_write(c, buf, len);
    if (starttls) {
        kt_conn_write(c, "<proceed/>", 10);
        kt_conn_start_tls(c, kt_tls_new_ssl(S.tls));
        /* Queued after the switch: must go out encrypted. */
        kt_conn_write(c, "after", 5);
    }
    if (pause)
        kt_conn_pause(c, true);
    if (close)
        kt_conn_close(c);
}

static void srv_tls_ready(struct kt_conn *c, void *ud)
{
    (void)ud;
    srv_lock();
    if (kt_conn_tls_ready(c) && kt_conn_ssl(c))
        S.tls_ready_calls++;
    srv_unlock();
}

static void srv_closed(struct kt_conn *c, enum kt_conn_end why, void *ud)
{
    (void)ud;
    srv_lock();
    S.closed_calls++;
    S.why = why;
    if (S.in_call)
        S.closed_inside_call = true;
    if (S.conn == c)
        S.conn = NULL;
    srv_unlock();
}

static const struct kt_conn_callbacks srv_cb = {
    .data = srv_data,
    .tls_ready = srv_tls_ready,
    .closed = srv_closed,
};

static void srv_accept(struct kt_loop *loop, int lfd, unsigned events, void *data)
{
    struct kt_conn_limits limits;
    struct kt_conn *c;
    SSL *ssl = NULL;
    int fd;

    (void)events, (void)data;
    fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return;
    srv_lock();
    limits = S.limits;
    if (S.sndbuf)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &S.sndbuf, sizeof(S.sndbuf));
    if (S.direct_tls)
        ssl = kt_tls_new_ssl(S.tls);
    c = kt_conn_new(loop, fd, ssl, &limits, &srv_cb, NULL);
    S.conn = c;
    S.accepted++;
    snprintf(S.peer, sizeof(S.peer), "%s", kt_conn_peer(c));
    snprintf(S.peer_ip, sizeof(S.peer_ip), "%s", kt_conn_peer_ip(c));
    S.id = kt_conn_id(c);
    if (S.pause_at_start) {
        S.paused = true;
        kt_conn_pause(c, true);
    }
    srv_unlock();
}

static void *loop_thread(void *arg)
{
    (void)arg;
    kt_loop_run(S.loop);
    return NULL;
}

/* Runs fn(arg) on the loop thread and waits for it. */
struct call {
    void (*fn)(void *arg);
    void *arg;
    bool done;
};

static void call_post(struct kt_loop *loop, void *data)
{
    struct call *cl = data;

    (void)loop;
    cl->fn(cl->arg);
    srv_lock();
    cl->done = true;
    srv_unlock();
}

static void on_loop(void (*fn)(void *arg), void *arg)
{
    struct call cl = {fn, arg, false};
    bool done;

    kt_loop_post(S.loop, call_post, &cl);
    WAIT_FOR(done, cl.done);
    kt_assert(done);
}

/* Forgets the previous connection and sets defaults. */
static void srv_reset(void)
{
    srv_lock();
    kt_assert(S.conn == NULL);
    memset(&S.limits, 0, sizeof(S.limits));
    S.direct_tls = S.echo = S.starttls = S.pause_at_start = S.pause_in_data = false;
    S.close_in_data = false;
    S.sndbuf = 0;
    S.accepted = 0;
    kt_buf_free(&S.rx);
    kt_buf_reserve(&S.rx, 0);
    S.data_calls = S.data_while_paused = S.tls_ready_calls = S.closed_calls = 0;
    S.paused = S.closed_inside_call = S.in_call = false;
    S.first_data_ms = S.last_data_ms = 0;
    S.peer[0] = S.peer_ip[0] = '\0';
    S.id = 0;
    srv_unlock();
}

static bool wait_accepted(void)
{
    bool r;
    WAIT_FOR(r, S.accepted == 1);
    return r;
}

static bool wait_closed(void)
{
    bool r;
    WAIT_FOR(r, S.closed_calls > 0);
    return r;
}

/* ---- closures run on the loop ---- */

static unsigned char pattern(size_t i)
{
    return (unsigned char)((i ^ (i >> 9) ^ (i >> 17)) * 31u + 7u);
}

struct bulk {
    size_t size;
    bool close, abort;
    size_t pending_after; /* pending output after the close call */
};

static void do_bulk(void *arg)
{
    struct bulk *b = arg;
    unsigned char chunk[65536];

    srv_lock();
    struct kt_conn *c = S.conn;
    S.in_call = true;
    srv_unlock();
    kt_assert(c != NULL);
    for (size_t off = 0; off < b->size; off += sizeof(chunk)) {
        size_t n = b->size - off < sizeof(chunk) ? b->size - off : sizeof(chunk);
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern(off + i);
        kt_conn_write(c, chunk, n);
    }
    if (b->close) {
        kt_conn_close(c);
        b->pending_after = kt_conn_pending_output(c);
        kt_conn_write(c, "ignored", 7);
        if (kt_conn_pending_output(c) != b->pending_after)
            b->pending_after = (size_t)-1;
        kt_conn_close(c); /* idempotent */
    }
    if (b->abort)
        kt_conn_abort(c); /* after a close too: one closed callback only */
    srv_lock();
    S.in_call = false;
    srv_unlock();
}

static void do_pending(void *arg)
{
    size_t *r = arg;
    srv_lock();
    *r = S.conn ? kt_conn_pending_output(S.conn) : (size_t)-1;
    srv_unlock();
}

static void do_resume(void *arg)
{
    (void)arg;
    srv_lock();
    S.paused = false;
    kt_conn_pause(S.conn, false);
    srv_unlock();
}

struct conn_info {
    bool tls_ready;
    bool has_ssl;
    struct kt_loop *loop;
};

static void do_info(void *arg)
{
    struct conn_info *ci = arg;
    srv_lock();
    ci->tls_ready = kt_conn_tls_ready(S.conn);
    ci->has_ssl = kt_conn_ssl(S.conn) != NULL;
    ci->loop = kt_conn_loop(S.conn);
    srv_unlock();
}

static void do_close(void *arg)
{
    (void)arg;
    srv_lock();
    S.in_call = true;
    kt_conn_close(S.conn);
    S.in_call = false;
    srv_unlock();
}

/* Writes 64 KiB every millisecond until the connection is gone (the id,
 * not the pointer: a later connection may reuse the address). */
static unsigned long long flood_id;

static void flood_tick(struct kt_loop *loop, void *data)
{
    static char junk[65536];
    bool alive;

    (void)data;
    srv_lock();
    alive = S.conn != NULL && kt_conn_id(S.conn) == flood_id;
    if (alive) {
        S.in_call = true;
        kt_conn_write(S.conn, junk, sizeof(junk));
        S.in_call = false;
    }
    srv_unlock();
    if (alive)
        kt_timer_add(loop, 1, flood_tick, NULL);
}

static void do_flood(void *arg)
{
    (void)arg;
    srv_lock();
    flood_id = kt_conn_id(S.conn);
    srv_unlock();
    kt_timer_add(S.loop, 0, flood_tick, NULL);
}

static void do_big_write(void *arg)
{
    static char big[8192];
    (void)arg;
    srv_lock();
    S.in_call = true;
    kt_conn_write(S.conn, big, sizeof(big));
    S.in_call = false;
    srv_unlock();
}

/* ---- the client side ---- */

static SSL_CTX *cctx;

static void set_timeouts(int fd)
{
    struct timeval tv = {WAIT_MS / 1000, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int client_connect_to(int family, const char *addr, int port, int rcvbuf)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    memset(&ss, 0, sizeof(ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        inet_pton(AF_INET, addr, &sin->sin_addr);
        len = sizeof(*sin);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        inet_pton(AF_INET6, addr, &sin6->sin6_addr);
        len = sizeof(*sin6);
    }
    if (rcvbuf)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    set_timeouts(fd);
    if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int client_connect(int rcvbuf)
{
    return client_connect_to(AF_INET, "127.0.0.1", S.port, rcvbuf);
}

static bool write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

static bool read_exact(int fd, char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n <= 0)
            return false;
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

/* Reads until EOF or error; returns the byte count, checking the pattern. */
static size_t read_pattern_until_eof(int fd, SSL *ssl, bool *intact_r, bool *clean_eof_r)
{
    static char buf[65536];
    size_t total = 0;
    bool intact = true;

    *clean_eof_r = false;
    for (;;) {
        int n;
        if (ssl) {
            n = SSL_read(ssl, buf, sizeof(buf));
            if (n <= 0) {
                *clean_eof_r = SSL_get_error(ssl, n) == SSL_ERROR_ZERO_RETURN;
                break;
            }
        } else {
            n = (int)recv(fd, buf, sizeof(buf), 0);
            if (n <= 0) {
                *clean_eof_r = n == 0;
                break;
            }
        }
        for (int i = 0; i < n && intact; i++)
            if ((unsigned char)buf[i] != pattern(total + (size_t)i))
                intact = false;
        total += (size_t)n;
    }
    ERR_clear_error();
    *intact_r = intact;
    return total;
}

static SSL *client_tls(int fd)
{
    SSL *ssl = SSL_new(cctx);
    if (!ssl)
        return NULL;
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        ERR_clear_error();
        SSL_free(ssl);
        return NULL;
    }
    return ssl;
}

static bool ssl_read_exact(SSL *ssl, char *buf, size_t len)
{
    while (len > 0) {
        int n = SSL_read(ssl, buf, (int)len);
        if (n <= 0) {
            char e[256];
            ERR_error_string_n(ERR_peek_error(), e, sizeof(e));
            diag("client SSL_read: error %d (%s), errno %d", SSL_get_error(ssl, n), e, errno);
            ERR_clear_error();
            return false;
        }
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int local_port(int fd)
{
    return kt_listen_port(fd);
}

/* ---- certificates ---- */

static char tmpdir[64], cert_path[128], key_path[128];

static bool make_cert(void)
{
    EVP_PKEY *pkey = NULL;
    X509 *x = NULL;
    FILE *f;
    bool ok_ = false;

    snprintf(tmpdir, sizeof(tmpdir), "/tmp/kt-test-conn-XXXXXX");
    if (!mkdtemp(tmpdir))
        return false;
    snprintf(cert_path, sizeof(cert_path), "%s/cert.pem", tmpdir);
    snprintf(key_path, sizeof(key_path), "%s/key.pem", tmpdir);

    pkey = EVP_EC_gen("P-256");
    x = X509_new();
    if (!pkey || !x)
        goto out;
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, pkey);
    X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC,
                               (const unsigned char *)"localhost", -1, -1, 0);
    X509_set_issuer_name(x, X509_get_subject_name(x));
    if (!X509_sign(x, pkey, EVP_sha256()))
        goto out;
    f = fopen(cert_path, "w");
    if (!f)
        goto out;
    ok_ = PEM_write_X509(f, x) == 1;
    fclose(f);
    f = fopen(key_path, "w");
    if (!f)
        goto out;
    ok_ = ok_ && PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL) == 1;
    fclose(f);
out:
    X509_free(x);
    EVP_PKEY_free(pkey);
    return ok_;
}

/* ---- tests ---- */

static void test_listen(void)
{
    char err[256];
    int fd;

    err[0] = '\0';
    is_int(kt_listen_tcp("localhost", 0, 16, err, sizeof(err)), -1, "host names are refused");
    ok(strstr(err, "invalid listen address") != NULL, "with a message: %s", err);
    is_int(kt_listen_tcp("127.0.0.1", 70000, 16, err, sizeof(err)), -1, "port out of range");
    is_int(kt_listen_tcp("127.0.0.1", -1, 16, NULL, 0), -1, "negative port, no err buffer");
    is_int(kt_listen_tcp(NULL, 0, 16, err, sizeof(err)), -1, "NULL address");
    is_int(kt_listen_port(-1), -1, "kt_listen_port on a bad fd");

    S.lfd = kt_listen_tcp("127.0.0.1", 0, 16, err, sizeof(err));
    ok(S.lfd >= 0, "listening on 127.0.0.1 port 0");
    S.port = kt_listen_port(S.lfd);
    ok(S.port > 0 && S.port < 65536, "kt_listen_port gives the chosen port (%d)", S.port);

    err[0] = '\0';
    fd = kt_listen_tcp("127.0.0.1", S.port, 16, err, sizeof(err));
    is_int(fd, -1, "the same port twice is refused");
    ok(strstr(err, "bind") && strstr(err, "in use"), "with a message: %s", err);
    if (fd >= 0)
        close(fd);
}

static void test_echo(void)
{
    char buf[64], want[80];
    unsigned long long first_id;
    struct conn_info ci;
    int fd;
    bool r;

    srv_reset();
    S.echo = true;
    fd = client_connect(0);
    ok(fd >= 0, "echo: connected");
    ok(wait_accepted(), "echo: accepted");
    snprintf(want, sizeof(want), "127.0.0.1:%d", local_port(fd));
    is_str(S.peer, want, "kt_conn_peer is ip:port");
    is_str(S.peer_ip, "127.0.0.1", "kt_conn_peer_ip");
    ok(S.id > 0, "kt_conn_id is set");
    first_id = S.id;
    on_loop(do_info, &ci);
    ok(!ci.tls_ready && !ci.has_ssl, "plaintext: no TLS");
    ok(ci.loop == S.loop, "kt_conn_loop");

    ok(write_all(fd, "hello", 5), "echo: sent");
    memset(buf, 0, sizeof(buf));
    ok(read_exact(fd, buf, 5) && memcmp(buf, "hello", 5) == 0, "echo: hello came back");
    ok(write_all(fd, "world!", 6) && read_exact(fd, buf, 6) && memcmp(buf, "world!", 6) == 0,
       "echo: again");
    close(fd);
    ok(wait_closed(), "echo: closed after the client's EOF");
    is_int(S.why, KT_CONN_EOF, "peer close is KT_CONN_EOF");
    WAIT_FOR(r, S.rx.len == 11);
    ok(r && strcmp(S.rx.data, "helloworld!") == 0, "server received everything");

    /* A second connection gets another id. */
    srv_reset();
    fd = client_connect(0);
    ok(wait_accepted() && S.id != first_id, "ids are unique");
    close(fd);
    ok(wait_closed(), "second connection closed");
    sleep_ms(50);
    is_int(S.closed_calls, 1, "closed ran exactly once");
}

static void test_reset(void)
{
    struct linger lg = {1, 0};
    int fd;

    srv_reset();
    S.echo = true;
    fd = client_connect(0);
    ok(wait_accepted(), "reset: accepted");
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd); /* RST */
    ok(wait_closed(), "reset: closed");
    is_int(S.why, KT_CONN_IO_ERROR, "a reset is KT_CONN_IO_ERROR");
}

static void test_bulk(bool tls)
{
    const char *what = tls ? "TLS bulk" : "bulk";
    struct bulk b = {.size = 8u << 20};
    size_t pending = 0, got;
    bool intact, clean;
    SSL *ssl = NULL;
    int fd;

    srv_reset();
    S.direct_tls = tls;
    S.sndbuf = 32768;
    fd = client_connect(32768);
    ok(fd >= 0 && wait_accepted(), "%s: accepted", what);
    if (tls) {
        ssl = client_tls(fd);
        ok(ssl != NULL, "%s: handshake", what);
        bool r;
        WAIT_FOR(r, S.tls_ready_calls == 1);
        ok(r, "%s: tls_ready", what);
    }
    on_loop(do_bulk, &b);
    on_loop(do_pending, &pending); /* a later pass: after the first flush */
    ok(pending > 0 && pending < b.size, "%s: partial write, %zu bytes still queued", what, pending);
    sleep_ms(100);
    on_loop(do_pending, &pending);
    ok(pending > 0, "%s: still queued while the client does not read", what);

    /* Queue the close behind the rest: it must flush everything. */
    struct bulk c = {.size = 0, .close = true};
    on_loop(do_bulk, &c);
    got = read_pattern_until_eof(fd, ssl, &intact, &clean);
    is_int(got, b.size, "all bytes arrived");
    ok(intact, "%s: intact and in order", what);
    ok(clean, "%s: clean EOF%s", what, tls ? " (close_notify)" : "");
    ok(c.pending_after != (size_t)-1, "%s: writes after close are ignored", what);
    ok(wait_closed(), "%s: closed", what);
    is_int(S.why, KT_CONN_CLOSED, "close ends with KT_CONN_CLOSED");
    ok(!S.closed_inside_call, "closed did not run inside kt_conn_close/abort");
    sleep_ms(50);
    is_int(S.closed_calls, 1, "close + close: one closed callback");
    SSL_free(ssl);
    close(fd);
}

static void test_close_flush(void)
{
    struct bulk b = {.size = 2u << 20, .close = true};
    bool intact, clean;
    size_t got;
    int fd;

    srv_reset();
    S.sndbuf = 32768;
    fd = client_connect(32768);
    ok(wait_accepted(), "close flush: accepted");
    on_loop(do_bulk, &b);
    ok(b.pending_after == b.size, "close: output still queued after kt_conn_close (%zu)",
       b.pending_after);
    sleep_ms(200);
    is_int(S.closed_calls, 0, "not closed while the output waits");
    got = read_pattern_until_eof(fd, NULL, &intact, &clean);
    is_int(got, b.size, "close: everything queued was delivered");
    ok(intact && clean, "close: intact, then EOF");
    ok(wait_closed(), "close: closed");
    is_int(S.why, KT_CONN_CLOSED, "close: KT_CONN_CLOSED");
    ok(!S.closed_inside_call, "close: closed callback posted");
    close(fd);
}

static void test_close_timeout(void)
{
    struct bulk b = {.size = 4u << 20, .close = true};
    uint64_t t0;
    int fd;

    srv_reset();
    S.sndbuf = 16384;
    S.limits.close_timeout_ms = 300;
    fd = client_connect(16384);
    ok(wait_accepted(), "close timeout: accepted");
    t0 = kt_now_ms();
    on_loop(do_bulk, &b);
    ok(wait_closed(), "close timeout: closed although the client never reads");
    ok(kt_now_ms() - t0 >= 250, "close timeout: after the timeout (%llu ms)",
       (unsigned long long)(kt_now_ms() - t0));
    is_int(S.why, KT_CONN_CLOSED, "close timeout: KT_CONN_CLOSED");
    close(fd);
}

static void test_abort(void)
{
    struct bulk b = {.size = 1u << 20, .abort = true};
    struct bulk b2 = {.size = 1u << 20, .close = true, .abort = true};
    bool intact, clean;
    int fd;

    /* Abort while a close is flushing: drops the rest, one callback. */
    srv_reset();
    S.sndbuf = 16384;
    fd = client_connect(16384);
    ok(wait_accepted(), "close then abort: accepted");
    on_loop(do_bulk, &b2);
    ok(wait_closed(), "close then abort: closed");
    ok(read_pattern_until_eof(fd, NULL, &intact, &clean) < b2.size, "close then abort: dropped");
    sleep_ms(50);
    is_int(S.closed_calls, 1, "close + close + abort: one closed callback");
    is_int(S.why, KT_CONN_CLOSED, "close then abort: KT_CONN_CLOSED");
    close(fd);

    srv_reset();
    fd = client_connect(0);
    ok(wait_accepted(), "abort: accepted");
    on_loop(do_bulk, &b);
    is_int(read_pattern_until_eof(fd, NULL, &intact, &clean), 0, "abort: queued output dropped");
    ok(wait_closed(), "abort: closed");
    is_int(S.why, KT_CONN_CLOSED, "abort: KT_CONN_CLOSED");
    ok(!S.closed_inside_call, "abort: closed callback posted, not called inside");
    close(fd);
}

static void test_overflow(void)
{
    int fd;

    srv_reset();
    S.sndbuf = 16384;
    S.limits.max_output = 256 * 1024;
    fd = client_connect(16384);
    ok(wait_accepted(), "overflow: accepted");
    on_loop(do_flood, NULL);
    ok(wait_closed(), "overflow: closed while the client does not read");
    is_int(S.why, KT_CONN_OVERFLOW, "overflow: KT_CONN_OVERFLOW");
    ok(!S.closed_inside_call, "overflow: closed callback not inside kt_conn_write");
    close(fd);

    /* One write above the limit at once. */
    srv_reset();
    S.limits.max_output = 4096;
    fd = client_connect(0);
    ok(wait_accepted(), "overflow 2: accepted");
    on_loop(do_big_write, NULL);
    ok(wait_closed(), "overflow 2: closed");
    is_int(S.why, KT_CONN_OVERFLOW, "a single write above max_output overflows");
    close(fd);
}

static void test_direct_tls(void)
{
    struct conn_info ci;
    char buf[32];
    SSL *ssl;
    bool r;
    int fd;

    srv_reset();
    S.direct_tls = true;
    S.echo = true;
    fd = client_connect(0);
    ok(wait_accepted(), "TLS: accepted");
    ssl = client_tls(fd);
    ok(ssl != NULL, "TLS: client handshake succeeded");
    WAIT_FOR(r, S.tls_ready_calls == 1);
    ok(r, "TLS: tls_ready called");
    on_loop(do_info, &ci);
    ok(ci.tls_ready && ci.has_ssl, "TLS: kt_conn_tls_ready and kt_conn_ssl");
    ok(ssl && SSL_write(ssl, "hello tls", 9) == 9, "TLS: sent");
    memset(buf, 0, sizeof(buf));
    ok(ssl && ssl_read_exact(ssl, buf, 9) && strcmp(buf, "hello tls") == 0, "TLS: echoed");
    if (ssl)
        SSL_shutdown(ssl);
    close(fd);
    ok(wait_closed(), "TLS: closed");
    is_int(S.why, KT_CONN_EOF, "TLS: client close is KT_CONN_EOF");
    is_int(S.tls_ready_calls, 1, "TLS: tls_ready ran once");
    is_str(S.rx.data, "hello tls", "TLS: data callback saw plaintext only");
    SSL_free(ssl);
}

static void test_tls_garbage(void)
{
    int fd;

    srv_reset();
    S.direct_tls = true;
    fd = client_connect(0);
    ok(wait_accepted(), "TLS garbage: accepted");
    ok(write_all(fd, "GET / HTTP/1.0\r\n\r\n", 18), "TLS garbage: sent HTTP");
    ok(wait_closed(), "TLS garbage: closed");
    is_int(S.why, KT_CONN_TLS_ERROR, "garbage is KT_CONN_TLS_ERROR");
    is_int(S.data_calls, 0, "no data callback");
    is_int(S.tls_ready_calls, 0, "no tls_ready");
    close(fd);
}

static void test_starttls(void)
{
    char buf[32];
    SSL *ssl = NULL;
    bool r;
    int fd;

    srv_reset();
    S.starttls = true;
    S.echo = true;
    fd = client_connect(0);
    ok(wait_accepted(), "STARTTLS: accepted");
    ok(write_all(fd, "<starttls/>", 11), "STARTTLS: asked");
    memset(buf, 0, sizeof(buf));
    ok(read_exact(fd, buf, 10) && strcmp(buf, "<proceed/>") == 0, "STARTTLS: proceed in plaintext");
    ssl = client_tls(fd);
    ok(ssl != NULL, "STARTTLS: handshake on the same socket");
    WAIT_FOR(r, S.tls_ready_calls == 1);
    ok(r, "STARTTLS: tls_ready");
    memset(buf, 0, sizeof(buf));
    ok(ssl && ssl_read_exact(ssl, buf, 5) && strcmp(buf, "after") == 0,
       "STARTTLS: output queued after start_tls went out encrypted");
    memset(buf, 0, sizeof(buf));
    ok(ssl && SSL_write(ssl, "ping", 4) == 4 && ssl_read_exact(ssl, buf, 4) &&
           strcmp(buf, "ping") == 0,
       "STARTTLS: TLS echo");
    on_loop(do_close, NULL);
    ok(ssl && SSL_read(ssl, buf, sizeof(buf)) == 0 &&
           SSL_get_error(ssl, 0) == SSL_ERROR_ZERO_RETURN,
       "STARTTLS: close sends close_notify");
    ERR_clear_error();
    ok(wait_closed(), "STARTTLS: closed");
    is_int(S.why, KT_CONN_CLOSED, "STARTTLS: KT_CONN_CLOSED");
    ok(!S.closed_inside_call, "STARTTLS: closed not inside kt_conn_close");
    is_str(S.rx.data, "<starttls/>ping", "STARTTLS: TLS records never reached the data callback");
    SSL_free(ssl);
    close(fd);
}

static void test_pause(void)
{
    char buf[32];
    SSL *ssl;
    bool r;
    int fd;

    /* Plaintext, paused from the start. */
    srv_reset();
    S.pause_at_start = true;
    fd = client_connect(0);
    ok(wait_accepted(), "pause: accepted");
    ok(write_all(fd, "abc", 3), "pause: sent while paused");
    sleep_ms(300);
    is_int(S.data_calls, 0, "pause: no data callback while paused");
    on_loop(do_resume, NULL);
    WAIT_FOR(r, S.rx.len == 3);
    ok(r && strcmp(S.rx.data, "abc") == 0, "pause: delivered after resume");
    is_int(S.data_while_paused, 0, "pause: nothing delivered while paused");
    close(fd);
    ok(wait_closed(), "pause: closed");
    is_int(S.why, KT_CONN_EOF, "pause: EOF");

    /* TLS, paused from the data callback between two records. */
    if (!S.tls)
        return;
    srv_reset();
    S.direct_tls = true;
    S.pause_in_data = true;
    fd = client_connect(0);
    ok(wait_accepted(), "TLS pause: accepted");
    ssl = client_tls(fd);
    ok(ssl != NULL, "TLS pause: handshake");
    ok(ssl && SSL_write(ssl, "one", 3) == 3 && SSL_write(ssl, "two", 3) == 3 &&
           SSL_write(ssl, "three", 5) == 5,
       "TLS pause: three records sent");
    WAIT_FOR(r, S.data_calls >= 1);
    ok(r, "TLS pause: first record delivered");
    sleep_ms(300);
    is_int(S.data_calls, 1, "TLS pause: nothing more while paused");
    is_str(S.rx.data, "one", "TLS pause: only the first record");
    on_loop(do_resume, NULL);
    WAIT_FOR(r, S.rx.len == 11);
    ok(r && strcmp(S.rx.data, "onetwothree") == 0, "TLS pause: the rest after resume");
    is_int(S.data_while_paused, 0, "TLS pause: nothing delivered while paused");
    memset(buf, 0, sizeof(buf));
    if (ssl)
        SSL_shutdown(ssl);
    close(fd);
    ok(wait_closed(), "TLS pause: closed");
    SSL_free(ssl);
}

static void test_rate(bool tls)
{
    const char *what = tls ? "TLS rate" : "rate";
    static char data[40000];
    SSL *ssl = NULL;
    uint64_t elapsed;
    bool r;
    int fd;

    srv_reset();
    S.direct_tls = tls;
    S.limits.rate_bytes = 20000;
    fd = client_connect(0);
    ok(wait_accepted(), "%s: accepted", what);
    if (tls) {
        ssl = client_tls(fd);
        ok(ssl != NULL, "%s: handshake", what);
    }
    memset(data, 'r', sizeof(data));
    if (tls)
        ok(ssl && SSL_write(ssl, data, sizeof(data)) == (int)sizeof(data), "%s: sent", what);
    else
        ok(write_all(fd, data, sizeof(data)), "%s: sent", what);
    WAIT_FOR(r, S.rx.len == sizeof(data));
    ok(r, "%s: all %zu bytes delivered", what, S.rx.len);
    elapsed = S.last_data_ms - S.first_data_ms;
    /* 20000 bytes of burst, then 20000 at 20000 bytes/s: about 1 s. */
    ok(elapsed >= 800, "%s: 40000 bytes at 20000 bytes/s took %llu ms", what,
       (unsigned long long)elapsed);
    if (ssl)
        SSL_shutdown(ssl);
    close(fd);
    ok(wait_closed(), "%s: closed", what);
    SSL_free(ssl);
}

static void test_close_in_data(void)
{
    SSL *ssl;
    int fd;

    srv_reset();
    S.direct_tls = true;
    S.close_in_data = true;
    fd = client_connect(0);
    ok(wait_accepted(), "close in data: accepted");
    ssl = client_tls(fd);
    ok(ssl != NULL, "close in data: handshake");
    ok(ssl && SSL_write(ssl, "a", 1) == 1 && SSL_write(ssl, "b", 1) == 1,
       "close in data: two records");
    ok(wait_closed(), "close in data: closed");
    is_int(S.why, KT_CONN_CLOSED, "close in data: KT_CONN_CLOSED");
    is_int(S.data_calls, 1, "close in data: no data callback after close");
    SSL_free(ssl);
    close(fd);
}

struct bad_fd {
    int fd;
    char peer[32];
};

static void do_bad_fd(void *arg)
{
    struct bad_fd *bf = arg;
    struct kt_conn *c = kt_conn_new(S.loop, bf->fd, NULL, NULL, &srv_cb, NULL);
    snprintf(bf->peer, sizeof(bf->peer), "%s", kt_conn_peer(c));
    kt_conn_write(c, "x", 1); /* on a dead connection: ignored */
    kt_conn_pause(c, true);
    kt_conn_close(c);
}

static void test_bad_fd(void)
{
    struct bad_fd bf = {.fd = -1};
    int sv[2];

    srv_reset();
    on_loop(do_bad_fd, &bf);
    ok(wait_closed(), "bad fd: closed callback");
    is_int(S.why, KT_CONN_IO_ERROR, "bad fd: KT_CONN_IO_ERROR");
    is_str(bf.peer, "unknown", "bad fd: peer unknown");

    /* A unix socket works, with a placeholder peer. */
    srv_reset();
    ok(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0, "socketpair");
    bf.fd = sv[0];
    on_loop(do_bad_fd, &bf);
    ok(wait_closed(), "unix: closed");
    is_int(S.why, KT_CONN_CLOSED, "unix: closed by kt_conn_close");
    is_str(bf.peer, "unix", "unix: peer");
    close(sv[1]);
}

static void do_add_listener(void *arg)
{
    int *fd = arg;
    struct kt_io *io = kt_io_add(S.loop, *fd, KT_IO_READ, srv_accept, NULL);
    kt_assert(io != NULL);
    /* The io is freed with the loop; the fd is closed by the test. */
}

static void test_v6(void)
{
    char err[256], want[80];
    int lfd, port, fd;

    lfd = kt_listen_tcp("::1", 0, 16, err, sizeof(err));
    if (lfd < 0) {
        ok(1, "# SKIP ::1 unavailable: %s", err);
        return;
    }
    port = kt_listen_port(lfd);
    ok(port > 0, "listening on [::1] port %d", port);
    on_loop(do_add_listener, &lfd);
    srv_reset();
    fd = client_connect_to(AF_INET6, "::1", port, 0);
    ok(fd >= 0 && wait_accepted(), "v6: accepted");
    snprintf(want, sizeof(want), "[::1]:%d", fd >= 0 ? local_port(fd) : 0);
    is_str(S.peer, want, "v6 peer in brackets");
    is_str(S.peer_ip, "::1", "v6 peer ip");
    if (fd >= 0)
        close(fd);
    ok(wait_closed(), "v6: closed");

    /* Dual stack: "::" also accepts v4, shown as v4. */
    int dfd = kt_listen_tcp("::", 0, 16, err, sizeof(err));
    ok(dfd >= 0, "listening on [::] (dual stack): %s", dfd >= 0 ? "ok" : err);
    if (dfd < 0)
        return;
    on_loop(do_add_listener, &dfd);
    srv_reset();
    fd = client_connect_to(AF_INET, "127.0.0.1", kt_listen_port(dfd), 0);
    ok(fd >= 0 && wait_accepted(), "dual stack: v4 client accepted");
    snprintf(want, sizeof(want), "127.0.0.1:%d", fd >= 0 ? local_port(fd) : 0);
    is_str(S.peer, want, "v4-mapped peer shown as v4");
    is_str(S.peer_ip, "127.0.0.1", "v4-mapped peer ip shown as v4");
    if (fd >= 0)
        close(fd);
    ok(wait_closed(), "dual stack: closed");
    /* Closed after the loop stops (the ios still watch them). */
    S.extra_fds[S.nextra++] = lfd;
    S.extra_fds[S.nextra++] = dfd;
}

int main(void)
{
    static struct kt_tls_conf tconf;
    char err[256];
    bool have_tls;

    signal(SIGPIPE, SIG_IGN);
    if (getenv("KT_TEST_DEBUG")) /* conn.c logs its errors at debug level */
        kt_log_threshold = KT_LOG_DEBUG;
    pthread_mutex_init(&S.mu, NULL);
    pthread_cond_init(&S.cv, NULL);

    have_tls = make_cert();
    ok(have_tls, "self-signed certificate generated");
    tconf.certificate = cert_path;
    tconf.key = key_path;
    S.tls = have_tls ? kt_tls_new(&tconf, err, sizeof(err)) : NULL;
    ok(S.tls != NULL, "server TLS context");
    cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);

    test_listen();
    S.loop = kt_loop_new(0);
    S.lio = kt_io_add(S.loop, S.lfd, KT_IO_READ, srv_accept, NULL);
    ok(S.lio != NULL, "listener watched");
    pthread_create(&S.thread, NULL, loop_thread, NULL);

    test_echo();
    test_reset();
    test_bulk(false);
    test_close_flush();
    test_close_timeout();
    test_abort();
    test_overflow();
    test_bad_fd();
    test_v6();
    if (S.tls) {
        test_direct_tls();
        test_tls_garbage();
        test_bulk(true);
        test_starttls();
        test_close_in_data();
    }
    test_pause();
    test_rate(false);
    if (S.tls)
        test_rate(true);

    kt_loop_stop(S.loop);
    pthread_join(S.thread, NULL);
    kt_io_del(&S.lio);
    close(S.lfd);
    for (int i = 0; i < S.nextra; i++)
        close(S.extra_fds[i]);
    kt_loop_free(&S.loop);
    kt_buf_free(&S.rx);
    kt_tls_free(&S.tls);
    SSL_CTX_free(cctx);
    unlink(cert_path);
    unlink(key_path);
    rmdir(tmpdir);
    pthread_cond_destroy(&S.cv);
    pthread_mutex_destroy(&S.mu);
    return done_testing();
}
