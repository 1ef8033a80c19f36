/* client.c: one XMPP client connection, as a non-blocking state machine.
 *
 * TCP connect (optionally bound to one of the --source-addrs first, so that many loopback
 * addresses multiply the ephemeral ports), then TLS (direct, or STARTTLS after the first
 * features), SASL (PLAIN, SCRAM-SHA-1, SCRAM-SHA-256), stream restart, resource binding, the
 * legacy session iq only if the server says it is not optional, and initial presence if the
 * scenario wants it.  Once online, pings are answered and every other stanza goes to the
 * scenario.  A client is driven by its worker's epoll loop only (never touched by another
 * thread).  Any failure records its first reason, closes the socket and tells the scenario.
 */
#include "config.h"

#include "bench.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define NS_TLS "urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL "urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND "urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION "urn:ietf:params:xml:ns:xmpp-session"

void client_init(struct client *c, int idx, int user, struct worker *w)
{
    memset(c, 0, sizeof(*c));
    c->idx = idx;
    c->user = user;
    c->partner = -1;
    c->w = w;
    c->fd = -1;
    c->state = CS_IDLE;
}

bool client_traced(const struct client *c)
{
    for (int k = 0; k < opt.ntrace; k++)
        if (opt.trace[k] == c->user)
            return true;
    return false;
}

/* --trace: one line per stanza, in or out, to stderr (for reports of what a server sent). */
static void trace(const struct client *c, const char *dir, const char *p, size_t n)
{
    if (opt.ntrace == 0 || !client_traced(c))
        return;
    fprintf(stderr, "trace %.6f user %d %s %.*s\n", (double)bench_now_ns() / 1e9, c->user, dir,
            (int)n, p);
}

static void username(const struct client *c, char *buf, size_t size)
{
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
    snprintf(buf, size, opt.user_fmt, c->user);
#pragma GCC diagnostic pop
}

static void update_watch(struct client *c)
{
    bool want = c->out.len > 0 || c->tls_want_write || c->state == CS_CONNECTING;
    if (want != c->want_write) {
        c->want_write = want;
        worker_watch(c, false); /* modify */
    }
}

static void stream_open(struct client *c)
{
    xml_scan_reset(&c->xs);
    c->in.off = c->in.len = 0;
    client_send(c,
                "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                "xmlns:stream='http://etherx.jabber.org/streams' to='%s' version='1.0'>",
                opt.domain);
}

void client_start(struct client *c)
{
    c->t_start = bench_now_ns();
    c->fail[0] = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        client_fail(c, "socket: %s", strerror(errno));
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (opt.nsrc > 0) {
        /* Let connect() pick the port per (source, destination): 64k ports per address. */
        setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr = opt.src[c->idx % opt.nsrc]};
        if (bind(c->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            client_fail(c, "bind: %s", strerror(errno));
            return;
        }
    }
    c->state = CS_CONNECTING;
    c->want_write = true;
    if (connect(c->fd, (struct sockaddr *)&bench_server, sizeof(bench_server)) < 0 &&
        errno != EINPROGRESS) {
        client_fail(c, "connect: %s", strerror(errno));
        return;
    }
    worker_watch(c, true);
}

void client_send(struct client *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char tmp[1024];
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(tmp)) {
        trace(c, "<<", tmp, (size_t)n);
        bbuf_add(&c->out, tmp, (size_t)n);
    } else {
        char *big = bench_malloc((size_t)n + 1);
        va_start(ap, fmt);
        vsnprintf(big, (size_t)n + 1, fmt, ap);
        va_end(ap);
        trace(c, "<<", big, (size_t)n);
        bbuf_add(&c->out, big, (size_t)n);
        free(big);
    }
}

static const char *ssl_err(void)
{
    static __thread char buf[160];
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (!e)
        return errno ? strerror(errno) : "EOF";
    ERR_error_string_n(e, buf, sizeof(buf));
    return buf;
}

void client_flush(struct client *c)
{
    if (c->fd < 0 || c->state == CS_CONNECTING || c->state == CS_TLS)
        return;
    c->tls_want_write = false;
    while (c->out.len > 0) {
        const char *p = c->out.data + c->out.off;
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_write(c->ssl, p, (int)(c->out.len > (1 << 20) ? (1 << 20) : c->out.len));
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_WRITE) {
                    c->tls_want_write = true;
                    break;
                }
                if (e == SSL_ERROR_WANT_READ)
                    break;
                client_fail(c, "TLS write: %s", ssl_err());
                return;
            }
            n = r;
        } else {
            n = send(c->fd, p, c->out.len, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    break;
                client_fail(c, "write: %s", strerror(errno));
                return;
            }
        }
        bbuf_consume(&c->out, (size_t)n);
    }
    update_watch(c);
}

void client_reset(struct client *c)
{
    /* Closing the descriptor also takes it out of the epoll set. */
    if (c->ssl)
        SSL_free(c->ssl);
    if (c->fd >= 0)
        close(c->fd);
    c->ssl = NULL;
    c->fd = -1;
    c->want_write = c->tls_want_write = false;
    c->in.off = c->in.len = 0;
    c->out.off = c->out.len = 0;
    scram_free(&c->scram);
    if (c->state != CS_FAILED)
        c->state = CS_IDLE;
}

void client_fail(struct client *c, const char *fmt, ...)
{
    if (c->state == CS_FAILED || c->state == CS_DONE)
        return;
    if (!c->fail[0]) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->fail, sizeof(c->fail), fmt, ap);
        va_end(ap);
    }
    if (opt.verbose)
        bench_warn("client %d: %s", c->idx, c->fail);
    c->state = CS_FAILED;
    client_reset(c);
    scenario_closed(c);
}

void client_close(struct client *c)
{
    if (c->state == CS_FAILED || c->state == CS_DONE || c->fd < 0)
        return;
    client_send(c, "</stream:stream>");
    c->state = CS_CLOSING;
    client_flush(c);
}

static void finish_close(struct client *c)
{
    if (c->ssl)
        SSL_shutdown(c->ssl);
    client_reset(c);
    c->state = CS_DONE;
    scenario_closed(c);
}

static void tls_start(struct client *c)
{
    c->ssl = SSL_new(bench_ssl_ctx);
    if (!c->ssl || SSL_set_fd(c->ssl, c->fd) != 1) {
        client_fail(c, "SSL_new: %s", ssl_err());
        return;
    }
    SSL_set_tlsext_host_name(c->ssl, opt.domain);
    SSL_set_connect_state(c->ssl);
    c->state = CS_TLS;
}

static void tls_handshake(struct client *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->state = CS_FEATURES;
        c->stage = 1;
        c->tls_want_write = false;
        stream_open(c);
        client_flush(c);
        return;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        c->tls_want_write = e == SSL_ERROR_WANT_WRITE;
        update_watch(c);
        return;
    }
    client_fail(c, "TLS handshake: %s", ssl_err());
}

static void go_online(struct client *c)
{
    /* As real clients do, fetch the roster before presence when contacts matter (servers
     * send subscription changes to "interested" resources only). */
    if (opt.scenario == SC_PRESENCE)
        client_send(c, "<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>");
    if (c->send_presence)
        client_send(c, "<presence/>");
    c->state = CS_ONLINE;
    c->t_online = bench_now_ns();
    scenario_online(c);
}

static void send_auth(struct client *c)
{
    char user[128];
    username(c, user, sizeof(user));
    struct bbuf raw = {0}, b64 = {0};
    if (opt.mech == MECH_PLAIN) {
        bbuf_add(&raw, "", 1);
        bbuf_add(&raw, user, strlen(user));
        bbuf_add(&raw, "", 1);
        bbuf_add(&raw, opt.password, strlen(opt.password));
    } else {
        scram_start(&c->scram, opt.mech, user, &raw);
    }
    b64_encode(raw.data + raw.off, raw.len, &b64);
    client_send(c, "<auth xmlns='" NS_SASL "' mechanism='%s'>%.*s</auth>", mech_name(opt.mech),
                (int)b64.len, b64.data + b64.off);
    bbuf_free(&raw);
    bbuf_free(&b64);
    c->state = CS_AUTH;
}

/* Decodes the base64 text of a SASL element into buf (NUL-terminated). */
static int sasl_data(const struct xdoc *d, char *buf, size_t size)
{
    char b64[1024];
    int l = xml_text(d, 0, b64, sizeof(b64));
    if (l < 0)
        return -1;
    if (l == 1 && b64[0] == '=')
        l = 0;
    int n = b64_decode(b64, (size_t)l, (unsigned char *)buf, size - 1);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return n;
}

static void on_features(struct client *c, const struct xdoc *d)
{
    if (c->stage == 0) {
        if (xml_child(d, 0, "starttls") < 0) {
            client_fail(c, "no STARTTLS offered");
            return;
        }
        client_send(c, "<starttls xmlns='" NS_TLS "'/>");
        c->state = CS_PROCEED;
        return;
    }
    if (c->stage == 1) {
        int mechs = xml_child(d, 0, "mechanisms");
        bool found = false;
        char name[64];
        for (int m = mechs >= 0 ? d->n[mechs].child : -1; m >= 0; m = d->n[m].next)
            if (xml_text(d, m, name, sizeof(name)) > 0 && strcmp(name, mech_name(opt.mech)) == 0)
                found = true;
        if (!found) {
            client_fail(c, "%s not offered", mech_name(opt.mech));
            return;
        }
        send_auth(c);
        return;
    }
    int sess = xml_child(d, 0, "session");
    c->stage = (sess >= 0 && xml_child(d, sess, "optional") < 0) ? 3 : 2;
    if (xml_child(d, 0, "bind") < 0) {
        client_fail(c, "no bind offered");
        return;
    }
    client_send(c,
                "<iq type='set' id='bind'><bind xmlns='" NS_BIND
                "'><resource>bench</resource></bind></iq>");
    c->state = CS_BIND;
}

static void on_auth(struct client *c, const struct xdoc *d)
{
    char data[1024];
    if (xml_is(d, 0, "failure")) {
        int f = d->n[0].child;
        client_fail(c, "SASL failure: %.*s", f >= 0 ? (int)d->n[f].name_len : 1,
                    f >= 0 ? d->n[f].name : "?");
        return;
    }
    if (xml_is(d, 0, "challenge")) {
        if (opt.mech == MECH_PLAIN || sasl_data(d, data, sizeof(data)) < 0) {
            client_fail(c, "bad SASL challenge");
            return;
        }
        if (strncmp(data, "v=", 2) == 0 || strncmp(data, "e=", 2) == 0) {
            /* server-final sent as a challenge: verify, then an empty response */
            if (scram_verify(&c->scram, data) < 0) {
                client_fail(c, "SCRAM server signature mismatch");
                return;
            }
            c->scram.mech = (enum mech)-1; /* verified */
            client_send(c, "<response xmlns='" NS_SASL "'/>");
            return;
        }
        struct bbuf fin = {0}, b64 = {0};
        if (scram_step(&c->scram, data, opt.password, &c->keys, &fin) < 0) {
            bbuf_free(&fin);
            client_fail(c, "bad SCRAM server-first");
            return;
        }
        b64_encode(fin.data + fin.off, fin.len, &b64);
        client_send(c, "<response xmlns='" NS_SASL "'>%.*s</response>", (int)b64.len,
                    b64.data + b64.off);
        bbuf_free(&fin);
        bbuf_free(&b64);
        return;
    }
    if (xml_is(d, 0, "success")) {
        if (opt.mech != MECH_PLAIN && c->scram.mech != (enum mech)-1) {
            int n = sasl_data(d, data, sizeof(data));
            if (n <= 0 || scram_verify(&c->scram, data) < 0) {
                client_fail(c, "SCRAM server signature missing or wrong");
                return;
            }
        }
        c->stage = 2;
        c->state = CS_FEATURES;
        stream_open(c);
        return;
    }
    client_fail(c, "unexpected <%.*s> during SASL", (int)d->n[0].name_len, d->n[0].name);
}

static void on_iq_result(struct client *c, const struct xdoc *d)
{
    char type[16], id[32];
    if (xml_attr(d, 0, "type", type, sizeof(type)) < 0 || xml_attr(d, 0, "id", id, sizeof(id)) < 0)
        return;
    if (c->state == CS_BIND && strcmp(id, "bind") == 0) {
        if (strcmp(type, "result") != 0) {
            client_fail(c, "bind refused");
            return;
        }
        int jid = xml_child(d, xml_child(d, 0, "bind"), "jid");
        if (jid >= 0)
            xml_text(d, jid, c->jid, sizeof(c->jid));
        if (c->stage == 3) {
            client_send(c, "<iq type='set' id='sess'><session xmlns='" NS_SESSION "'/></iq>");
            c->state = CS_SESSION;
            return;
        }
        go_online(c);
    } else if (c->state == CS_SESSION && strcmp(id, "sess") == 0) {
        if (strcmp(type, "result") != 0) {
            client_fail(c, "session refused");
            return;
        }
        go_online(c);
    }
}

static void on_element(struct client *c, const char *raw, size_t len)
{
    struct xdoc *d = &c->w->doc;
    if (xml_parse(d, raw, len) < 0) {
        client_fail(c, "cannot parse: %.60s", raw);
        return;
    }
    if (xml_is(d, 0, "error")) {
        /* A top-level <error/> is a stream error (stanza errors are children). */
        int f = d->n[0].child;
        client_fail(c, "stream error: %.*s", f >= 0 ? (int)d->n[f].name_len : 1,
                    f >= 0 ? d->n[f].name : "?");
        return;
    }
    switch (c->state) {
    case CS_FEATURES:
        if (!xml_is(d, 0, "features")) {
            client_fail(c, "expected features, got <%.*s>", (int)d->n[0].name_len, d->n[0].name);
            return;
        }
        on_features(c, d);
        break;
    case CS_PROCEED:
        if (!xml_is(d, 0, "proceed")) {
            client_fail(c, "STARTTLS refused");
            return;
        }
        tls_start(c);
        break;
    case CS_AUTH:
        on_auth(c, d);
        break;
    case CS_BIND:
    case CS_SESSION:
        if (xml_is(d, 0, "iq"))
            on_iq_result(c, d);
        break;
    case CS_ONLINE:
    case CS_CLOSING:
        if (xml_is(d, 0, "iq")) {
            char type[16], id[64], from[256];
            if (xml_attr(d, 0, "type", type, sizeof(type)) == 0 &&
                (strcmp(type, "get") == 0 || strcmp(type, "set") == 0) &&
                xml_attr(d, 0, "id", id, sizeof(id)) == 0) {
                if (xml_attr(d, 0, "from", from, sizeof(from)) < 0)
                    from[0] = 0;
                int ch = d->n[0].child;
                /* pings and roster pushes get a result, anything else an error */
                bool ping = ch >= 0 && (xml_is(d, ch, "ping") ||
                                        (strcmp(type, "set") == 0 && xml_is(d, ch, "query") &&
                                         xml_has_ns(d, ch, "jabber:iq:roster")));
                /* ids come back verbatim: only answer ids without quotes */
                if (!strchr(id, '\'') && !strchr(from, '\'')) {
                    if (ping)
                        client_send(c, "<iq type='result' id='%s'%s%s%s/>", id,
                                    from[0] ? " to='" : "", from, from[0] ? "'" : "");
                    else
                        client_send(c,
                                    "<iq type='error' id='%s'%s%s%s><error type='cancel'>"
                                    "<service-unavailable xmlns='urn:ietf:params:xml:ns:"
                                    "xmpp-stanzas'/></error></iq>",
                                    id, from[0] ? " to='" : "", from, from[0] ? "'" : "");
                }
                break;
            }
        }
        scenario_stanza(c, d, raw, len);
        break;
    default:
        break;
    }
}

static void process_input(struct client *c)
{
    for (;;) {
        size_t s, e;
        enum xml_event ev = xml_scan_next(&c->xs, c->in.data + c->in.off, c->in.len, &s, &e);
        if (ev == XML_NEED_MORE)
            break;
        if (ev == XML_ERROR) {
            client_fail(c, "malformed XML from server");
            return;
        }
        if (ev == XML_STREAM_CLOSE) {
            if (c->state == CS_CLOSING)
                finish_close(c);
            else
                client_fail(c, "server closed the stream");
            return;
        }
        if (ev == XML_STREAM_OPEN)
            continue;
        enum cstate before = c->state;
        trace(c, ">>", c->in.data + c->in.off + s, e - s);
        on_element(c, c->in.data + c->in.off + s, e - s);
        if (c->state == CS_FAILED || c->state == CS_DONE || c->fd < 0)
            return;
        if (c->state == CS_TLS) {
            /* After <proceed/>: the plaintext stream is over. */
            c->in.off = c->in.len = 0;
            tls_handshake(c);
            return;
        }
        if (before == CS_AUTH && c->state == CS_FEATURES) {
            client_flush(c);
            continue; /* stream restarted: buffer and scanner were reset */
        }
    }
    size_t k = xml_scan_consumable(&c->xs);
    if (k > 0) {
        bbuf_consume(&c->in, k);
        xml_scan_shift(&c->xs, k);
    }
}

static void client_read(struct client *c)
{
    for (;;) {
        if (c->in.cap - (c->in.off + c->in.len) < 4096) {
            if (c->in.off > 0) {
                memmove(c->in.data, c->in.data + c->in.off, c->in.len);
                c->in.off = 0;
            }
            if (c->in.cap - c->in.len < 4096) {
                c->in.cap = c->in.cap ? c->in.cap * 2 : 16384;
                c->in.data = bench_realloc(c->in.data, c->in.cap);
            }
        }
        char *p = c->in.data + c->in.off + c->in.len;
        size_t room = c->in.cap - (c->in.off + c->in.len);
        ssize_t n;
        if (c->ssl) {
            ERR_clear_error();
            int r = SSL_read(c->ssl, p, (int)room);
            if (r <= 0) {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ)
                    return;
                if (e == SSL_ERROR_WANT_WRITE) {
                    c->tls_want_write = true;
                    update_watch(c);
                    return;
                }
                if (c->state == CS_CLOSING && (e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL))
                    finish_close(c);
                else if (e == SSL_ERROR_ZERO_RETURN)
                    client_fail(c, "server closed the connection");
                else
                    client_fail(c, "TLS read: %s", ssl_err());
                return;
            }
            n = r;
        } else {
            n = recv(c->fd, p, room, 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR)
                    return;
                client_fail(c, "read: %s", strerror(errno));
                return;
            }
            if (n == 0) {
                if (c->state == CS_CLOSING)
                    finish_close(c);
                else
                    client_fail(c, "server closed the connection");
                return;
            }
        }
        c->in.len += (size_t)n;
        process_input(c);
        if (c->fd < 0 || c->state == CS_TLS)
            return;
    }
}

void client_event(struct client *c, uint32_t events)
{
    if (c->fd < 0)
        return;
    if (c->state == CS_CONNECTING) {
        int err = 0;
        socklen_t l = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
        if (err) {
            client_fail(c, "connect: %s", strerror(err));
            return;
        }
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return;
        if (opt.tls == TLS_DIRECT) {
            tls_start(c);
        } else {
            c->state = CS_FEATURES;
            c->stage = 0;
            stream_open(c);
        }
        update_watch(c);
    }
    if (c->state == CS_TLS) {
        tls_handshake(c);
        if (c->state == CS_TLS || c->fd < 0)
            return;
    }
    client_read(c);
    if (c->fd >= 0 && c->state != CS_TLS)
        client_flush(c);
}

void client_free(struct client *c)
{
    client_reset(c);
    bbuf_free(&c->in);
    bbuf_free(&c->out);
    scram_free(&c->scram);
    free(c->seen);
    free(c->pseen);
    free(c->rseen);
}
