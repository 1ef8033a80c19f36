/* scenario.c: what each scenario does with its clients, what it counts, and its report.
 *
 * Clients come in pairs (2p, 2p+1) on thread p % threads, so both ends of a message flow live
 * on the same loop and the in-flight window needs no cross-thread signalling.
 *   login     [unmeasured pass + logout, to fill the SCRAM key cache], then N logins at a rate
 *             or concurrency: logins/s and connect-to-bound latency.
 *   message   N pairs online; each client sends M messages to its partner keeping W in flight.
 *             The body carries "kb <sender> <seq> <send time ns>" plus padding; the receiver
 *             checks sender, loss, duplicates and order per flow and records end-to-end latency.
 *   idle      N sessions held for T seconds; the server's RSS before and after.
 *   presence  [setup: everybody subscribes to a ring of R contacts], then all log in with
 *             presence and we count presences from contacts until every user has seen all of
 *             its R contacts online.
 * Each scenario ends with a clean logout.  Exit status 1 on any failure, loss, duplicate or
 * reordering; 2 on a usage or setup error.
 */
#include "config.h"

#include "bench.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MSG_PREFIX "kb "

static const char *fmt_prefix; /* user_fmt around its %d, to map a JID back to a client */
static size_t fmt_prefix_len;
static const char *fmt_suffix;
static bool measuring;

static void user_jid(int user, char *buf, size_t size)
{
    snprintf(buf, size, "%.*s%d%s@%s", (int)fmt_prefix_len, fmt_prefix, user, fmt_suffix,
             opt.domain);
}

/* Client index of a JID's localpart, or -1 if it is not one of ours. */
static int jid_client(const char *jid)
{
    if (strncmp(jid, fmt_prefix, fmt_prefix_len) != 0)
        return -1;
    char *end;
    long u = strtol(jid + fmt_prefix_len, &end, 10);
    size_t sl = strlen(fmt_suffix);
    if (end == jid + fmt_prefix_len || strncmp(end, fmt_suffix, sl) != 0 || end[sl] != '@')
        return -1;
    long i = u - opt.user_base;
    return i >= 0 && i < nclients_total ? (int)i : -1;
}

/* Presence ring: slot of contact j in i's roster (0..R-1), or -1. */
static int contact_slot(int i, int j)
{
    int n = nclients_total, half = opt.roster / 2;
    int d = ((j - i) % n + n) % n;
    if (d >= 1 && d <= half)
        return d - 1;
    if (d >= n - half && d <= n - 1)
        return half + (n - d) - 1;
    return -1;
}

static int contact_of(int i, int slot)
{
    int n = nclients_total, half = opt.roster / 2;
    return slot < half ? (i + slot + 1) % n : ((i - (slot - half + 1)) % n + n) % n;
}

static bool bit_test_set(unsigned char *bits, int k)
{
    bool was = bits[k / 8] & (1u << (k % 8));
    bits[k / 8] |= (unsigned char)(1u << (k % 8));
    return was;
}

/* ---- message flows ---- */

/* Paced mode (--rate R with the message scenario): every flow sends at R / flows per second,
 * open loop, the flows' schedules spread evenly over one interval.  The body carries the
 * scheduled time, not the actual one, so a message held back by the window or by a slow loop
 * counts its wait as latency (no coordinated omission). */
static uint64_t pace_interval_ns(void)
{
    return (uint64_t)(2.0 * opt.clients / opt.rate * 1e9);
}

static uint64_t pace_due(const struct client *c, int k)
{
    uint64_t iv = pace_interval_ns();
    return c->w->phase_start + iv * (uint64_t)c->idx / (2u * (uint64_t)opt.clients) +
           iv * (uint64_t)k;
}

static void send_next(struct client *from, uint64_t stamp)
{
    struct client *to = &clients[from->partner];
    char jid[160];
    user_jid(to->user, jid, sizeof(jid));
    char head[96];
    int hl = snprintf(head, sizeof(head), MSG_PREFIX "%d %d %" PRIu64 " ", from->idx, from->sent,
                      stamp);
    int pad = opt.msg_size > hl ? opt.msg_size - hl : 0;
    char *body = bench_malloc((size_t)hl + (size_t)pad + 1);
    memcpy(body, head, (size_t)hl);
    memset(body + hl, 'x', (size_t)pad);
    body[hl + pad] = 0;
    client_send(from, "<message to='%s' type='chat' id='m%d'><body>%s</body></message>", jid,
                from->sent, body);
    free(body);
    from->sent++;
    from->w->msgs_sent++;
}

static void flow_dead(struct client *receiver)
{
    if (!receiver->in_done) {
        receiver->in_done = true;
        worker_done_one(receiver->w);
    }
}

static void on_message(struct client *c, const struct xdoc *d)
{
    struct worker *w = c->w;
    char type[16];
    if (xml_attr(d, 0, "type", type, sizeof(type)) == 0 && strcmp(type, "error") == 0) {
        w->errors++;
        return;
    }
    char body[128];
    int b = xml_child(d, 0, "body");
    if (b < 0)
        return; /* chat states, receipts: not ours */
    if (xml_text(d, b, body, sizeof(body)) < 0 && d->n[b].text_len < sizeof(body))
        return;
    if (d->n[b].text_len >= sizeof(body)) {
        /* only the head matters; copy it raw (digits and spaces need no unescaping) */
        memcpy(body, d->n[b].text, sizeof(body) - 1);
        body[sizeof(body) - 1] = 0;
    }
    int flow, seq;
    uint64_t t;
    if (strncmp(body, MSG_PREFIX, 3) != 0 ||
        sscanf(body + 3, "%d %d %" SCNu64, &flow, &seq, &t) != 3 || flow != c->partner ||
        seq < 0 || seq >= opt.messages || c->seen == NULL) {
        c->bad++;
        return;
    }
    uint64_t now = bench_now_ns();
    if (bit_test_set(c->seen, seq)) {
        c->dup++;
        return;
    }
    if (seq < c->max_seq_seen)
        c->reorder++;
    else
        c->max_seq_seen = seq;
    c->received++;
    w->msgs_recv++;
    w->last_delivery = now;
    samples_add(&w->lat, now - t);
    worker_progress(w);
    struct client *sender = &clients[c->partner];
    if (opt.rate <= 0 && sender->sent < opt.messages && sender->state == CS_ONLINE) {
        send_next(sender, bench_now_ns());
        client_flush(sender);
    }
    if (c->received == opt.messages)
        flow_dead(c);
}

/* ---- presence ---- */

/* Setup: the subscription to contact `slot` is in place. */
static void setup_done(struct client *c, int slot)
{
    if (!bit_test_set(c->pseen, slot) && ++c->subscribed == opt.roster && !c->phase_done &&
        c->w->phase == PH_SETUP) {
        c->phase_done = true;
        worker_done_one(c->w);
    }
}

/* The roster result: contacts we are already subscribed to (from an earlier run) need no
 * 'subscribed' (RFC 6121 §3.1.3 answers a repeated request without telling us). */
static void on_roster(struct client *c, const struct xdoc *d)
{
    int q = xml_child(d, 0, "query");
    if (q < 0 || !c->rseen)
        return;
    for (int it = d->n[q].child; it >= 0; it = d->n[it].next) {
        char jid[256], sub[16];
        if (!xml_is(d, it, "item") || xml_attr(d, it, "jid", jid, sizeof(jid)) < 0 ||
            xml_attr(d, it, "subscription", sub, sizeof(sub)) < 0 ||
            (strcmp(sub, "to") != 0 && strcmp(sub, "both") != 0))
            continue;
        int j = jid_client(jid), slot = j >= 0 ? contact_slot(c->idx, j) : -1;
        if (slot < 0)
            continue;
        bit_test_set(c->rseen, slot);
        if (c->w->phase == PH_SETUP)
            setup_done(c, slot);
    }
}

static void on_presence(struct client *c, const struct xdoc *d)
{
    struct worker *w = c->w;
    char type[24], from[256];
    if (xml_attr(d, 0, "from", from, sizeof(from)) < 0)
        return;
    if (xml_attr(d, 0, "type", type, sizeof(type)) < 0)
        type[0] = 0;
    if (strcmp(type, "subscribe") == 0) {
        if (!strchr(from, '\''))
            client_send(c, "<presence type='subscribed' to='%s'/>", from);
        return;
    }
    int j = jid_client(from);
    if (j < 0 || j == c->idx || !c->pseen || opt.roster <= 0)
        return;
    int slot = contact_slot(c->idx, j);
    if (slot < 0)
        return;
    if (w->phase == PH_SETUP) {
        /* Done with a contact on its 'subscribed', or on its presence, which only comes once
         * we are subscribed (some servers send 'subscribed' only to roster-interested
         * resources). */
        if (strcmp(type, "subscribed") == 0 || type[0] == 0)
            setup_done(c, slot);
        return;
    }
    if (type[0] || !measuring)
        return;
    w->presences++;
    w->last_delivery = bench_now_ns();
    worker_progress(w);
    if (!bit_test_set(c->pseen, slot) && ++c->presences == opt.roster && w->phase == PH_RUN &&
        !c->phase_done) {
        c->phase_done = true;
        worker_done_one(w);
    }
}

/* ---- callbacks from the client ---- */

void scenario_online(struct client *c)
{
    struct worker *w = c->w;
    client_flush(c);
    if (w->phase != PH_LOGIN || c->phase_done)
        return;
    c->phase_done = true;
    w->inflight--;
    w->ok++;
    w->last_delivery = c->t_online;
    if (measuring)
        samples_add(&w->lat, c->t_online - c->t_start);
    worker_done_one(w);
}

void scenario_stanza(struct client *c, const struct xdoc *d, const char *raw, size_t len)
{
    (void)raw;
    (void)len;
    char type[16], id[16];
    if (xml_is(d, 0, "message"))
        on_message(c, d);
    else if (xml_is(d, 0, "presence"))
        on_presence(c, d);
    else if (opt.scenario == SC_PRESENCE && xml_is(d, 0, "iq") &&
             xml_attr(d, 0, "type", type, sizeof(type)) == 0 && strcmp(type, "result") == 0 &&
             xml_attr(d, 0, "id", id, sizeof(id)) == 0 && strcmp(id, "roster") == 0)
        on_roster(c, d);
}

void scenario_closed(struct client *c)
{
    struct worker *w = c->w;
    switch (w->phase) {
    case PH_LOGIN:
        if (!c->phase_done) {
            c->phase_done = true;
            w->inflight--;
            w->failed++;
            if (!w->timing_out) /* a phase's end is its last answer, not our give-up time */
                w->last_delivery = bench_now_ns();
            worker_done_one(w);
        } else if (c->state == CS_FAILED) {
            w->errors++;
        }
        break;
    case PH_LOGOUT:
        if (!c->phase_done) {
            c->phase_done = true;
            worker_done_one(w);
        }
        break;
    case PH_RUN:
    case PH_HOLD:
    case PH_SETUP:
        if (c->state == CS_FAILED)
            w->errors++;
        if (opt.scenario == SC_MESSAGE && w->phase == PH_RUN) {
            flow_dead(c);
            flow_dead(&clients[c->partner]);
        } else if (w->phase != PH_HOLD && !c->phase_done) {
            c->phase_done = true;
            worker_done_one(w);
        }
        break;
    }
}

/* ---- phases (on the worker's thread) ---- */

void scenario_phase_begin(struct worker *w)
{
    w->pending = 0;
    w->timing_out = false;
    for (int k = 0; k < w->nclients; k++)
        w->clients[k]->phase_done = false;
    switch (w->phase) {
    case PH_LOGIN:
        w->next_start = 0;
        w->inflight = 0;
        w->pending = w->nclients;
        for (int k = 0; k < w->nclients; k++) {
            struct client *c = w->clients[k];
            client_reset(c);
            c->state = CS_IDLE;
            c->send_presence = !opt.no_presence;
            if (c->pseen)
                memset(c->pseen, 0, (size_t)(opt.roster + 7) / 8);
            c->presences = 0;
        }
        break;
    case PH_LOGOUT:
        for (int k = 0; k < w->nclients; k++) {
            struct client *c = w->clients[k];
            if (c->fd >= 0 && c->state != CS_FAILED) {
                w->pending++;
                client_close(c);
            }
        }
        break;
    case PH_RUN:
        if (opt.scenario == SC_MESSAGE) {
            for (int k = 0; k < w->nclients; k++) {
                struct client *c = w->clients[k];
                struct client *p = &clients[c->partner];
                c->in_done = c->state != CS_ONLINE || p->state != CS_ONLINE;
                if (!c->in_done)
                    w->pending++;
            }
            for (int k = 0; k < w->nclients && opt.rate <= 0; k++) {
                struct client *c = w->clients[k];
                if (c->state != CS_ONLINE || clients[c->partner].in_done)
                    continue;
                for (int m = 0; m < opt.window && c->sent < opt.messages; m++)
                    send_next(c, bench_now_ns());
                client_flush(c);
            }
        } else {
            /* presence: wait for the contacts not seen during login */
            for (int k = 0; k < w->nclients; k++) {
                struct client *c = w->clients[k];
                if (c->state == CS_ONLINE && c->presences < opt.roster) {
                    w->pending++;
                } else {
                    c->phase_done = true;
                }
            }
        }
        break;
    case PH_HOLD:
        w->pending = 1;
        w->hold_until = bench_now_ns() + (uint64_t)(opt.duration * 1e9);
        break;
    case PH_SETUP:
        for (int k = 0; k < w->nclients; k++) {
            struct client *c = w->clients[k];
            c->subscribed = 0;
            memcpy(c->pseen, c->rseen, (size_t)(opt.roster + 7) / 8);
            for (int s = 0; s < opt.roster; s++)
                c->subscribed += (c->pseen[s / 8] >> (s % 8)) & 1;
            if (c->state != CS_ONLINE || c->subscribed == opt.roster)
                continue;
            w->pending++;
            char jid[160];
            for (int s = 0; s < opt.roster; s++) {
                if (c->pseen[s / 8] & (1u << (s % 8)))
                    continue;
                user_jid(clients[contact_of(c->idx, s)].user, jid, sizeof(jid));
                client_send(c, "<presence type='subscribe' to='%s'/>", jid);
            }
            client_flush(c);
        }
        break;
    }
}

/* Paced message flows: send what is due (within the window); ms until the next is due. */
static int pace_tick(struct worker *w, uint64_t now)
{
    uint64_t next = UINT64_MAX;
    for (int k = 0; k < w->nclients; k++) {
        struct client *c = w->clients[k];
        struct client *p = &clients[c->partner];
        if (c->state != CS_ONLINE || p->in_done)
            continue;
        bool any = false;
        while (c->sent < opt.messages && c->sent - p->received < opt.window) {
            uint64_t due = pace_due(c, c->sent);
            if (due > now) {
                if (due < next)
                    next = due;
                break;
            }
            send_next(c, due);
            any = true;
        }
        if (any) {
            client_flush(c);
            worker_progress(w);
        }
    }
    if (next == UINT64_MAX)
        return 100;
    /* Waiting for the schedule is not a stall: --timeout counts from the next due message
     * (a window held by missing deliveries does not get here and still times out). */
    worker_progress(w);
    uint64_t ms = (next - now + 999999) / 1000000;
    return ms > 100 ? 100 : (int)ms;
}

int scenario_tick(struct worker *w, uint64_t now)
{
    if (w->phase == PH_RUN && opt.scenario == SC_MESSAGE && opt.rate > 0)
        return pace_tick(w, now);
    if (w->phase == PH_HOLD) {
        worker_progress(w);
        if (now >= w->hold_until) {
            w->pending = 0;
            return 0;
        }
        uint64_t left = (w->hold_until - now) / 1000000 + 1;
        return left > 100 ? 100 : (int)left;
    }
    if (w->phase != PH_LOGIN)
        return 100;
    int wait = 100;
    while (w->next_start < w->nclients && (w->conc == 0 || w->inflight < w->conc)) {
        if (w->rate > 0) {
            double due = (double)w->next_start / w->rate * 1e9;
            double elapsed = (double)(now - w->phase_start);
            if (elapsed < due) {
                wait = (int)((due - elapsed) / 1e6) + 1;
                break;
            }
        }
        struct client *c = w->clients[w->next_start++];
        w->inflight++;
        client_start(c);
        worker_progress(w);
    }
    return wait < 100 ? wait : 100;
}

void scenario_phase_timeout(struct worker *w)
{
    w->timing_out = true;
    for (int k = 0; k < w->nclients; k++) {
        struct client *c = w->clients[k];
        if (w->phase == PH_LOGIN && !c->phase_done && c->state != CS_IDLE)
            client_fail(c, "timed out in state %d", (int)c->state);
        else if (w->phase == PH_LOGIN && !c->phase_done)
            c->phase_done = true, w->failed++, snprintf(c->fail, sizeof(c->fail), "never started");
        else if (w->phase == PH_LOGOUT && !c->phase_done && c->fd >= 0)
            client_reset(c);
    }
}

/* ---- the run (main thread) ---- */

struct result {
    const char *scenario;
    long clients;
    double wall, cpu;
    double scpu; /* server CPU s over the measured part (--server-pid), -1 if unknown */
    long ops;    /* what scpu is divided by: logins, deliveries, presences, sessions */
    long ok, failed, errors;
    double rate;
    const char *rate_name;
    struct samples lat;
    char extra_json[512];
    char extra_human[768];
    const char *first_error;
};

static const char *first_error(void)
{
    for (int i = 0; i < nclients_total; i++)
        if (clients[i].fail[0])
            return clients[i].fail;
    return NULL;
}

/* Wall time of a login phase: from its start to the last login answered (success or
 * failure), so that clients given up after --timeout do not stretch it. */
static double login_wall(uint64_t t0)
{
    uint64_t last = t0;
    for (int t = 0; t < opt.threads; t++)
        if (workers[t].last_delivery > last)
            last = workers[t].last_delivery;
    return (double)(last - t0) / 1e9;
}

static void collect(struct result *r)
{
    for (int t = 0; t < opt.threads; t++) {
        struct worker *w = &workers[t];
        r->ok += w->ok;
        r->failed += w->failed;
        r->errors += w->errors;
        samples_merge(&r->lat, &w->lat);
    }
}

static void reset_counters(void)
{
    for (int t = 0; t < opt.threads; t++) {
        struct worker *w = &workers[t];
        w->ok = w->failed = w->errors = w->msgs_sent = w->msgs_recv = w->presences = 0;
        w->last_delivery = 0;
        w->lat.n = 0;
    }
}

static void json_str(char *out, size_t size, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 7 < size; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            o += (size_t)snprintf(out + o, size - o, "\\%c", ch);
        else if (ch < 0x20)
            o += (size_t)snprintf(out + o, size - o, "\\u%04x", ch);
        else
            out[o++] = (char)ch;
    }
    out[o] = 0;
}

static double nan0(double v)
{
    return isnan(v) ? -1 : v;
}

static void report(struct result *r)
{
    double p50 = samples_pct_ms(&r->lat, 50), p99 = samples_pct_ms(&r->lat, 99);
    double mx = samples_max_ms(&r->lat);
    double cpu_pct = r->wall > 0 ? 100.0 * r->cpu / r->wall : 0;
    double per_op = r->scpu >= 0 && r->ops > 0 ? r->scpu * 1e6 / (double)r->ops : -1;
    char err[200];
    json_str(err, sizeof(err), r->first_error ? r->first_error : "");
    if (!opt.json_only) {
        printf("== %s: %s (%s:%d, %s, %s, %d threads)\n", r->scenario, opt.label, opt.host,
               opt.port, opt.tls == TLS_DIRECT ? "direct TLS" : "STARTTLS", mech_name(opt.mech),
               opt.threads);
        printf("  %-22s %ld\n", "clients", r->clients);
        printf("  %-22s %ld / %ld\n", "logged in / failed", r->ok, r->failed);
        printf("  %-22s %.3f s\n", "measured wall time", r->wall);
        if (r->rate_name)
            printf("  %-22s %.1f\n", r->rate_name, r->rate);
        if (r->lat.n)
            printf("  %-22s %.2f / %.2f / %.2f ms\n", "latency p50/p99/max", p50, p99, mx);
        fputs(r->extra_human, stdout);
        if (r->errors)
            printf("  %-22s %ld\n", "errors after login", r->errors);
        printf("  %-22s %.2f s (%.0f%% of one core; %d threads)\n", "bench CPU", r->cpu, cpu_pct,
               opt.threads);
        if (r->scpu >= 0)
            printf("  %-22s %.2f s (%.0f%% of one core), %.1f us per %s\n", "server CPU", r->scpu,
                   r->wall > 0 ? 100.0 * r->scpu / r->wall : 0, per_op, r->scenario[0] == 'l'
                   ? "login" : r->scenario[0] == 'm' ? "message" : r->scenario[0] == 'p'
                   ? "presence" : "session");
        if (r->first_error)
            printf("  %-22s %s\n", "first failure", r->first_error);
    }
    printf("{\"scenario\":\"%s\",\"server\":\"%s\",\"clients\":%ld,\"ok\":%ld,\"failed\":%ld,"
           "\"errors\":%ld,\"wall_s\":%.4f,\"rate\":%.2f,\"p50_ms\":%.3f,\"p99_ms\":%.3f,"
           "\"max_ms\":%.3f,\"bench_cpu_s\":%.3f,\"bench_cpu_pct\":%.1f,\"threads\":%d,"
           "\"server_cpu_s\":%.3f,\"server_cpu_us_per_op\":%.1f%s%s,\"first_error\":\"%s\"}\n",
           r->scenario, opt.label, r->clients, r->ok, r->failed, r->errors, r->wall, r->rate,
           nan0(p50), nan0(p99), nan0(mx), r->cpu, cpu_pct, opt.threads, r->scpu, per_op,
           r->extra_json[0] ? "," : "", r->extra_json, err);
    fflush(stdout);
}

static double secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

static void login_all(void)
{
    workers_run_phase(PH_LOGIN);
}

static int run_login(struct result *r)
{
    if (opt.warmup) {
        measuring = false;
        login_all();
        workers_run_phase(PH_LOGOUT);
        reset_counters();
        for (int i = 0; i < nclients_total; i++)
            clients[i].fail[0] = 0;
    }
    measuring = true;
    double c0 = cpu_seconds(), s0 = server_cpu_s();
    uint64_t t0 = bench_now_ns();
    workers_run_phase(PH_LOGIN);
    r->wall = login_wall(t0);
    r->cpu = cpu_seconds() - c0;
    r->scpu = s0 >= 0 ? server_cpu_s() - s0 : -1;
    collect(r);
    r->ops = r->ok;
    r->rate_name = "logins/s";
    r->rate = r->wall > 0 ? r->ok / r->wall : 0;
    r->first_error = first_error();
    workers_run_phase(PH_LOGOUT);
    return r->failed || r->errors ? 1 : 0;
}

static int run_message(struct result *r)
{
    measuring = false;
    login_all();
    collect(r);
    r->lat.n = 0;
    reset_counters();
    measuring = true;
    double c0 = cpu_seconds(), s0 = server_cpu_s();
    uint64_t t0 = bench_now_ns();
    workers_run_phase(PH_RUN);
    r->cpu = cpu_seconds() - c0;
    r->scpu = s0 >= 0 ? server_cpu_s() - s0 : -1;
    long sent = 0, recv = 0, lost = 0, unsent = 0, dup = 0, reorder = 0, bad = 0, errors = 0;
    uint64_t last = t0;
    for (int t = 0; t < opt.threads; t++) {
        struct worker *w = &workers[t];
        sent += w->msgs_sent;
        recv += w->msgs_recv;
        errors += w->errors;
        samples_merge(&r->lat, &w->lat);
        if (w->last_delivery > last)
            last = w->last_delivery;
    }
    for (int i = 0; i < nclients_total; i++) {
        struct client *c = &clients[i];
        lost += clients[c->partner].sent - c->received;
        unsent += opt.messages - c->sent;
        dup += c->dup;
        reorder += c->reorder;
        bad += c->bad;
    }
    r->errors = errors;
    r->wall = secs(last - t0); /* up to the last delivery, not the loss timeout */
    r->rate_name = "delivered msgs/s";
    r->ops = recv;
    r->rate = r->wall > 0 ? recv / r->wall : 0;
    r->first_error = first_error();
    snprintf(r->extra_json, sizeof(r->extra_json),
             "\"pairs\":%d,\"messages_per_direction\":%d,\"size\":%d,\"window\":%d,"
             "\"target_rate\":%.1f,\"sent\":%ld,\"delivered\":%ld,\"lost\":%ld,\"unsent\":%ld,"
             "\"duplicates\":%ld,\"reordered\":%ld,\"foreign\":%ld",
             opt.clients, opt.messages, opt.msg_size, opt.window, opt.rate, sent, recv, lost,
             unsent, dup, reorder, bad);
    char paced[96] = "";
    if (opt.rate > 0)
        snprintf(paced, sizeof(paced), "  %-22s %.0f msgs/s (latency from scheduled send)\n",
                 "paced at", opt.rate);
    snprintf(r->extra_human, sizeof(r->extra_human),
             "  %-22s %d pairs x 2 directions x %d msgs, %d bytes, window %d\n%s"
             "  %-22s %ld / %ld\n"
             "  %-22s %ld lost, %ld unsent, %ld duplicated, %ld reordered, %ld foreign\n",
             "messages", opt.clients, opt.messages, opt.msg_size, opt.window, paced,
             "sent / delivered", sent, recv, "check", lost, unsent, dup, reorder, bad);
    workers_run_phase(PH_LOGOUT);
    return r->failed || lost || unsent || dup || reorder || bad || errors ? 1 : 0;
}

static int run_idle(struct result *r)
{
    long before = opt.server_pid ? proc_rss_kb(opt.server_pid) : -1;
    measuring = true;
    double c0 = cpu_seconds(), s0 = server_cpu_s();
    r->wall = secs(workers_run_phase(PH_LOGIN));
    long after_login = opt.server_pid ? proc_rss_kb(opt.server_pid) : -1;
    r->wall += secs(workers_run_phase(PH_HOLD));
    long after = opt.server_pid ? proc_rss_kb(opt.server_pid) : -1;
    r->cpu = cpu_seconds() - c0;
    r->scpu = s0 >= 0 ? server_cpu_s() - s0 : -1;
    collect(r);
    long alive = 0;
    for (int i = 0; i < nclients_total; i++)
        alive += clients[i].state == CS_ONLINE;
    r->ops = alive;
    double per = before >= 0 && after >= 0 && alive > 0 ? (after - before) * 1024.0 / alive : -1;
    r->first_error = first_error();
    snprintf(r->extra_json, sizeof(r->extra_json),
             "\"hold_s\":%.1f,\"alive\":%ld,\"rss_before_kb\":%ld,\"rss_after_login_kb\":%ld,"
             "\"rss_after_kb\":%ld,\"bytes_per_session\":%.0f",
             opt.duration, alive, before, after_login, after, per);
    if (before >= 0)
        snprintf(r->extra_human, sizeof(r->extra_human),
                 "  %-22s %ld after %.0f s\n  %-22s %ld -> %ld -> %ld KB (before, logged in, "
                 "held)\n  %-22s %.0f bytes\n",
                 "sessions alive", alive, opt.duration, "server RSS", before, after_login, after,
                 "RSS per session", per);
    else
        snprintf(r->extra_human, sizeof(r->extra_human),
                 "  %-22s %ld after %.0f s (no --server-pid: no RSS)\n", "sessions alive", alive,
                 opt.duration);
    workers_run_phase(PH_LOGOUT);
    return r->failed || alive < r->ok ? 1 : 0;
}

/* --verbose: which contacts each incomplete user is missing (the first few users). */
static void list_missing(const char *what)
{
    int shown = 0;
    for (int i = 0; i < nclients_total && shown < 20; i++) {
        struct client *c = &clients[i];
        char line[512];
        size_t o = 0;
        for (int s = 0; s < opt.roster && o + 16 < sizeof(line); s++)
            if (!(c->pseen[s / 8] & (1u << (s % 8))))
                o += (size_t)snprintf(line + o, sizeof(line) - o, " %d",
                                      clients[contact_of(i, s)].user);
        if (o > 0) {
            fprintf(stderr, "%s: user %d is missing contacts%s\n", what, c->user, line);
            shown++;
        }
    }
}

static int run_presence(struct result *r)
{
    measuring = false;
    if (!opt.skip_setup) {
        login_all();
        uint64_t t = workers_run_phase(PH_SETUP);
        long done = 0;
        for (int i = 0; i < nclients_total; i++)
            done += clients[i].subscribed == opt.roster;
        if (!opt.json_only)
            printf("presence setup: %ld/%d users subscribed to all %d contacts in %.1f s\n", done,
                   nclients_total, opt.roster, secs(t));
        /* Not fatal by itself: some servers skip 'subscribed' echoes for subscriptions that
         * already exist; the measured phase checks every contact anyway. */
        if (done < nclients_total) {
            bench_warn("presence setup incomplete: %ld of %d users", done, nclients_total);
            if (opt.verbose)
                list_missing("setup");
        }
        workers_run_phase(PH_LOGOUT);
        reset_counters();
        for (int i = 0; i < nclients_total; i++)
            clients[i].fail[0] = 0;
    }
    measuring = true;
    double c0 = cpu_seconds(), s0 = server_cpu_s();
    uint64_t t0 = bench_now_ns();
    workers_run_phase(PH_LOGIN);
    workers_run_phase(PH_RUN);
    r->cpu = cpu_seconds() - c0;
    r->scpu = s0 >= 0 ? server_cpu_s() - s0 : -1;
    collect(r);
    long pres = 0, edges = 0;
    uint64_t last = t0;
    for (int t = 0; t < opt.threads; t++) {
        pres += workers[t].presences;
        if (workers[t].last_delivery > last)
            last = workers[t].last_delivery;
    }
    for (int i = 0; i < nclients_total; i++)
        edges += clients[i].presences;
    r->wall = secs(last - t0);
    r->rate_name = "presences/s";
    r->ops = pres;
    r->rate = r->wall > 0 ? pres / r->wall : 0;
    r->lat.n = 0; /* login latencies are not this scenario's point */
    r->first_error = first_error();
    long want = (long)nclients_total * opt.roster;
    if (edges < want && opt.verbose)
        list_missing("presence");
    snprintf(r->extra_json, sizeof(r->extra_json),
             "\"roster\":%d,\"presences\":%ld,\"contacts_seen\":%ld,\"contacts_expected\":%ld",
             opt.roster, pres, edges, want);
    snprintf(r->extra_human, sizeof(r->extra_human),
             "  %-22s %d contacts each\n  %-22s %ld\n  %-22s %ld / %ld\n", "roster", opt.roster,
             "presences received", pres, "contacts seen online", edges, want);
    workers_run_phase(PH_LOGOUT);
    return r->failed || edges < want ? 1 : 0;
}

int scenario_run(void)
{
    const char *pc = strstr(opt.user_fmt, "%d");
    fmt_prefix = opt.user_fmt;
    fmt_prefix_len = (size_t)(pc - opt.user_fmt);
    fmt_suffix = pc + 2;

    int n = opt.scenario == SC_MESSAGE ? 2 * opt.clients : opt.clients;
    nclients_total = n;
    clients = bench_calloc((size_t)n, sizeof(*clients));
    workers = bench_calloc((size_t)opt.threads, sizeof(*workers));
    for (int t = 0; t < opt.threads; t++) {
        workers[t].clients = bench_calloc((size_t)n / (size_t)opt.threads + 2, sizeof(void *));
        /* --rate paces logins, except in the message scenario, where it paces messages */
        workers[t].rate = opt.scenario == SC_MESSAGE ? 0 : opt.rate / opt.threads;
        workers[t].conc = opt.concurrency ? (opt.concurrency + opt.threads - 1) / opt.threads : 0;
    }
    for (int i = 0; i < n; i++) {
        struct worker *w = &workers[(i / 2) % opt.threads];
        struct client *c = &clients[i];
        client_init(c, i, opt.user_base + i, w);
        w->clients[w->nclients++] = c;
        if (opt.scenario == SC_MESSAGE) {
            c->partner = i ^ 1;
            c->seen = bench_calloc((size_t)(opt.messages + 7) / 8, 1);
            c->max_seq_seen = -1;
        }
        if (opt.scenario == SC_PRESENCE) {
            c->pseen = bench_calloc((size_t)(opt.roster + 7) / 8, 1);
            c->rseen = bench_calloc((size_t)(opt.roster + 7) / 8, 1);
        }
    }
    workers_start();
    struct result r = {.clients = opt.scenario == SC_MESSAGE ? 2L * opt.clients : opt.clients,
                       .scpu = -1};
    int rc = 0;
    switch (opt.scenario) {
    case SC_LOGIN:
        r.scenario = "login";
        rc = run_login(&r);
        break;
    case SC_MESSAGE:
        r.scenario = "message";
        rc = run_message(&r);
        break;
    case SC_IDLE:
        r.scenario = "idle";
        rc = run_idle(&r);
        break;
    case SC_PRESENCE:
        r.scenario = "presence";
        rc = run_presence(&r);
        break;
    }
    report(&r);
    workers_stop();
    for (int i = 0; i < n; i++)
        client_free(&clients[i]);
    for (int t = 0; t < opt.threads; t++) {
        samples_free(&workers[t].lat);
        free(workers[t].clients);
    }
    samples_free(&r.lat);
    free(workers);
    free(clients);
    return rc;
}
