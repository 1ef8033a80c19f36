/* The HTTP push provider ("fcm"): one POST to sm.push.url per wake-up, in
 * the shape of the FCM HTTP v1 API, with `Authorization: <sm.push.auth>`:
 *   {"message":{"token":"REGID","data":{"action":"org.kontalk.CHECK_MESSAGES"},
 *    "android":{"priority":"high","collapse_key":"new"}}}
 * The device learns only that it should connect: no content, no sender.
 *
 * It runs on a worker (push.c's queue) with a blocking design: a
 * non-blocking socket waited on with poll(), so that the whole request
 * (connect, TLS handshake, write, answer) takes at most sm.push.timeout
 * seconds and stops early at shutdown. Name resolution (getaddrinfo) is
 * not bounded by the timeout. http:// and https:// are supported; https
 * verifies the server's certificate and name against sm.push.ca_file or
 * the system's CAs (OpenSSL, TLS 1.2+).
 *
 * Answers: 2xx is sent; 429, 5xx and transport failures are tried again,
 * sm.push.retries times, waiting 0.5 s, 1 s, 2 s... between attempts; 404
 * whose body says UNREGISTERED (FCM's word for a token that no longer
 * exists) reports the registration gone; any other status is a failure
 * that a retry would not fix (a wrong url or credential), logged. */
#include "config.h"
#include "modules/sm/sm.h"

#include <kontalk/buf.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>

#include <errno.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define ANSWER_MAX 16384 /* bytes of an answer we look at */
#define SLICE_MS 200     /* how often a wait looks at the stop flag */
#define BACKOFF_MS 500   /* first wait before a retry; doubles */

struct http {
    const struct sm_push_conf *conf;
    const atomic_bool *stopping;
    bool tls;
    char *host;     /* for the connection and the certificate check */
    char *port;
    char *hostport; /* the Host header */
    char *path;
    SSL_CTX *ctx;   /* https */
};

struct link {
    const struct http *h;
    int fd;
    SSL *ssl;
    uint64_t deadline;
};

/* --- the url --- */

static int parse_url(struct http *h, const char *url)
{
    const char *rest;
    if (strncmp(url, "http://", 7) == 0) {
        rest = url + 7;
    } else if (strncmp(url, "https://", 8) == 0) {
        h->tls = true;
        rest = url + 8;
    } else {
        kt_log(KT_LOG_ERROR, "sm.push.url: only http:// and https:// urls are supported");
        return -1;
    }
    size_t alen = strcspn(rest, "/?#");
    const char *path = rest + alen;
    if (alen == 0 || memchr(rest, '@', alen)) {
        kt_log(KT_LOG_ERROR, "sm.push.url: a host (and no user name) is required");
        return -1;
    }
    const char *hend, *port = NULL;
    if (rest[0] == '[') { /* [IPv6]:port */
        hend = memchr(rest, ']', alen);
        if (!hend) {
            kt_log(KT_LOG_ERROR, "sm.push.url: unterminated [address]");
            return -1;
        }
        h->host = kt_strndup(rest + 1, (size_t)(hend - rest - 1));
        hend++;
        if (hend < rest + alen && *hend != ':') {
            kt_log(KT_LOG_ERROR, "sm.push.url: junk after [address]");
            return -1;
        }
    } else {
        hend = memchr(rest, ':', alen);
        if (!hend)
            hend = rest + alen;
        h->host = kt_strndup(rest, (size_t)(hend - rest));
    }
    if (hend < rest + alen)
        port = hend + 1;
    if (port) {
        size_t plen = (size_t)(rest + alen - port);
        long n = 0;
        for (size_t i = 0; i < plen; i++)
            n = port[i] >= '0' && port[i] <= '9' && n < 100000 ? n * 10 + (port[i] - '0') : -1;
        if (plen == 0 || n < 1 || n > 65535) {
            kt_log(KT_LOG_ERROR, "sm.push.url: bad port");
            return -1;
        }
        h->port = kt_strndup(port, plen);
    } else {
        h->port = kt_strdup(h->tls ? "443" : "80");
    }
    if (!*h->host) {
        kt_log(KT_LOG_ERROR, "sm.push.url: empty host");
        return -1;
    }
    h->hostport = kt_strndup(rest, alen);
    /* The path and query, without a fragment; "/" when there is none. */
    size_t plen = strcspn(path, "#");
    h->path = kt_malloc(plen + 2);
    snprintf(h->path, plen + 2, "%s%.*s", *path == '/' ? "" : "/", (int)plen, path);
    for (const char *p = h->path; *p; p++) {
        if ((unsigned char)*p <= 0x20 || *p == 0x7f) {
            kt_log(KT_LOG_ERROR, "sm.push.url: spaces or control characters in the path");
            return -1;
        }
    }
    return 0;
}

/* --- waiting, with the deadline and the stop flag --- */

static int wait_fd(struct link *l, short events)
{
    for (;;) {
        if (atomic_load(l->h->stopping)) {
            errno = ECANCELED;
            return -1;
        }
        uint64_t now = kt_now_ms();
        if (now >= l->deadline) {
            errno = ETIMEDOUT;
            return -1;
        }
        uint64_t left = l->deadline - now;
        struct pollfd pfd = {.fd = l->fd, .events = events};
        int r = poll(&pfd, 1, (int)(left < SLICE_MS ? left : SLICE_MS));
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

/* Sleeps ms (or less at shutdown). */
static void pause_ms(const struct http *h, uint64_t ms)
{
    uint64_t end = kt_now_ms() + ms;
    while (!atomic_load(h->stopping)) {
        uint64_t now = kt_now_ms();
        if (now >= end)
            return;
        uint64_t left = end - now;
        poll(NULL, 0, (int)(left < SLICE_MS ? left : SLICE_MS));
    }
}

/* --- transport --- */

static int dial(struct link *l, char *why, size_t len)
{
    const struct http *h = l->h;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *ai = NULL;
    int rc = getaddrinfo(h->host, h->port, &hints, &ai);
    if (rc != 0) {
        snprintf(why, len, "cannot resolve %s: %s", h->host, gai_strerror(rc));
        return -1;
    }
    snprintf(why, len, "no address");
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        a->ai_protocol);
        if (fd < 0)
            continue;
        l->fd = fd;
        int err = 0;
        socklen_t elen = sizeof(err);
        if (connect(fd, a->ai_addr, a->ai_addrlen) == 0 ||
            (errno == EINPROGRESS && wait_fd(l, POLLOUT) == 0 &&
             getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && err == 0)) {
            freeaddrinfo(ai);
            return 0;
        }
        int e = err ? err : errno;
        snprintf(why, len, "cannot connect: %s", strerror(e));
        close(fd);
        l->fd = -1;
        if (e == ETIMEDOUT || e == ECANCELED)
            break;
    }
    freeaddrinfo(ai);
    return -1;
}

/* Drives an SSL call that may want to read or write first. */
static int ssl_wait(struct link *l, int ret)
{
    int e = SSL_get_error(l->ssl, ret);
    if (e == SSL_ERROR_WANT_READ)
        return wait_fd(l, POLLIN);
    if (e == SSL_ERROR_WANT_WRITE)
        return wait_fd(l, POLLOUT);
    return -1;
}

static int handshake(struct link *l, char *why, size_t len)
{
    const struct http *h = l->h;
    l->ssl = SSL_new(h->ctx);
    SSL_set_fd(l->ssl, l->fd);
    X509_VERIFY_PARAM *vp = SSL_get0_param(l->ssl);
    if (X509_VERIFY_PARAM_set1_ip_asc(vp, h->host) != 1) { /* not an address: a name */
        SSL_set_tlsext_host_name(l->ssl, h->host);
        SSL_set1_host(l->ssl, h->host);
    }
    for (;;) {
        ERR_clear_error();
        int r = SSL_connect(l->ssl);
        if (r == 1)
            return 0;
        if (ssl_wait(l, r) < 0) {
            long v = SSL_get_verify_result(l->ssl);
            if (v != X509_V_OK)
                snprintf(why, len, "TLS: certificate not accepted: %s",
                         X509_verify_cert_error_string(v));
            else
                snprintf(why, len, "TLS handshake failed");
            return -1;
        }
    }
}

static int send_all(struct link *l, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w;
        if (l->ssl) {
            ERR_clear_error();
            int r = SSL_write(l->ssl, p, (int)n);
            if (r <= 0) {
                if (ssl_wait(l, r) < 0)
                    return -1;
                continue;
            }
            w = r;
        } else {
            w = send(l->fd, p, n, MSG_NOSIGNAL);
            if (w < 0) {
                if ((errno != EAGAIN && errno != EINTR) || wait_fd(l, POLLOUT) < 0)
                    return -1;
                continue;
            }
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Bytes read (0 at the end of the answer), or -1. */
static ssize_t recv_some(struct link *l, char *p, size_t n)
{
    for (;;) {
        if (l->ssl) {
            ERR_clear_error();
            int r = SSL_read(l->ssl, p, (int)n);
            if (r > 0)
                return r;
            int e = SSL_get_error(l->ssl, r);
            if (e == SSL_ERROR_ZERO_RETURN)
                return 0;
            if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0)
                return 0; /* closed without close_notify: Content-Length tells */
            if (ssl_wait(l, r) < 0)
                return -1;
        } else {
            ssize_t r = recv(l->fd, p, n, 0);
            if (r >= 0)
                return r;
            if ((errno != EAGAIN && errno != EINTR) || wait_fd(l, POLLIN) < 0)
                return -1;
        }
    }
}

static void link_close(struct link *l)
{
    if (l->ssl) {
        SSL_free(l->ssl);
        l->ssl = NULL;
    }
    if (l->fd >= 0) {
        close(l->fd);
        l->fd = -1;
    }
}

/* --- one request --- */

/* Whether buf (len bytes, NUL-terminated) holds the whole answer: headers
 * and, when they give one, Content-Length bytes of body. */
static bool answer_complete(const char *buf, size_t len)
{
    const char *end = strstr(buf, "\r\n\r\n");
    if (!end)
        return false;
    for (const char *line = strstr(buf, "\r\n"); line && line < end;
         line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "content-length:", 15) == 0) {
            unsigned long long cl = strtoull(line + 17, NULL, 10);
            return len - (size_t)(end + 4 - buf) >= cl;
        }
    }
    return false; /* no length: the body ends with the connection */
}

/* The HTTP status (0 when there is none), the answer in buf. */
static int request(const struct http *h, const char *body, size_t blen, char *buf, size_t bsize,
                   char *why, size_t wlen)
{
    struct link l = {.h = h,
                     .fd = -1,
                     .deadline = kt_now_ms() + (uint64_t)h->conf->timeout * 1000};
    struct kt_buf req = {0};
    int status = 0;
    size_t got = 0;
    buf[0] = '\0';
    if (dial(&l, why, wlen) < 0 || (h->tls && handshake(&l, why, wlen) < 0))
        goto out;
    kt_buf_printf(&req, "POST %s HTTP/1.1\r\nHost: %s\r\n", h->path, h->hostport);
    if (*h->conf->auth)
        kt_buf_printf(&req, "Authorization: %s\r\n", h->conf->auth);
    kt_buf_printf(&req,
                  "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                  "User-Agent: kontalkd/" PACKAGE_VERSION "\r\nConnection: close\r\n\r\n",
                  blen);
    kt_buf_append(&req, body, blen);
    if (send_all(&l, req.data, req.len) < 0) {
        snprintf(why, wlen, "cannot send the request: %s", strerror(errno));
        goto out;
    }
    while (got + 1 < bsize) {
        ssize_t r = recv_some(&l, buf + got, bsize - 1 - got);
        if (r < 0) {
            snprintf(why, wlen, "no answer: %s", strerror(errno));
            goto out;
        }
        got += (size_t)r;
        buf[got] = '\0';
        if (r == 0 || answer_complete(buf, got))
            break;
    }
    int major, minor;
    if (sscanf(buf, "HTTP/%d.%d %3d", &major, &minor, &status) != 3 || status < 100) {
        snprintf(why, wlen, "not an HTTP answer");
        status = 0;
    }
out:
    kt_buf_free(&req);
    link_close(&l);
    return status;
}

static enum sm_push_result http_wake(void *state, const char *reg_id)
{
    const struct http *h = state;
    struct kt_buf body = {0};
    kt_buf_puts(&body, "{\"message\":{\"token\":\"");
    for (const char *p = reg_id; *p; p++) { /* visible ASCII (push.c checks) */
        if (*p == '"' || *p == '\\')
            kt_buf_append(&body, "\\", 1);
        kt_buf_append(&body, p, 1);
    }
    kt_buf_puts(&body, "\",\"data\":{\"action\":\"org.kontalk.CHECK_MESSAGES\"},"
                       "\"android\":{\"priority\":\"high\",\"collapse_key\":\"new\"}}}");
    char *answer = kt_malloc(ANSWER_MAX);
    char why[256];
    enum sm_push_result result = SM_PUSH_FAILED;
    for (long long attempt = 0; attempt <= h->conf->retries && !atomic_load(h->stopping);
         attempt++) {
        if (attempt > 0)
            pause_ms(h, (uint64_t)BACKOFF_MS << (attempt - 1 < 6 ? attempt - 1 : 6));
        why[0] = '\0';
        int status = request(h, body.data, body.len, answer, ANSWER_MAX, why, sizeof(why));
        if (status >= 200 && status < 300) {
            result = SM_PUSH_SENT;
            break;
        }
        if (status == 404 && strstr(answer, "UNREGISTERED")) {
            result = SM_PUSH_GONE;
            break;
        }
        if (status && status != 429 && status < 500) {
            kt_log(KT_LOG_WARN, "sm: push to %s refused with HTTP %d: not tried again", h->host,
                   status);
            break;
        }
        if (status)
            snprintf(why, sizeof(why), "HTTP %d", status);
        kt_log(KT_LOG_WARN, "sm: push to %s failed (attempt %lld of %lld): %s", h->host,
               attempt + 1, h->conf->retries + 1, why);
    }
    free(answer);
    kt_buf_free(&body);
    return result;
}

static void http_free(void *state)
{
    struct http *h = state;
    if (!h)
        return;
    SSL_CTX_free(h->ctx);
    free(h->host);
    free(h->port);
    free(h->hostport);
    free(h->path);
    free(h);
}

int sm_push_http_new(struct sm *sm, const atomic_bool *stopping, struct sm_push_provider *p_r)
{
    const struct sm_push_conf *conf = &sm->conf->push;
    struct http *h = kt_new(struct http);
    h->conf = conf;
    h->stopping = stopping;
    if (parse_url(h, conf->url) < 0)
        goto fail;
    if (strpbrk(conf->auth, "\r\n")) {
        kt_log(KT_LOG_ERROR, "sm.push.auth: line breaks are not allowed in a header");
        goto fail;
    }
    if (h->tls) {
        h->ctx = SSL_CTX_new(TLS_client_method());
        if (!h->ctx || SSL_CTX_set_min_proto_version(h->ctx, TLS1_2_VERSION) != 1)
            goto tls_fail;
        SSL_CTX_set_verify(h->ctx, SSL_VERIFY_PEER, NULL);
        if (*conf->ca_file ? SSL_CTX_load_verify_locations(h->ctx, conf->ca_file, NULL) != 1
                           : SSL_CTX_set_default_verify_paths(h->ctx) != 1)
            goto tls_fail;
    }
    *p_r = (struct sm_push_provider){
        .name = "fcm",
        .label = "Firebase Cloud Messaging push notifications",
        .wake = http_wake,
        .free = http_free,
        .state = h,
    };
    return 0;
tls_fail:
    kt_log(KT_LOG_ERROR, "sm.push: cannot set up TLS for %s%s%s", conf->url,
           *conf->ca_file ? " with the CA file " : "", conf->ca_file);
fail:
    http_free(h);
    return -1;
}
