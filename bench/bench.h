/* kontalk-bench: shared types of the benchmark client.
 *
 * The tool is a standalone XMPP client load generator: it does not link libktcore, so it can
 * measure any server.  One process, --threads N loops, each owning a fixed slice of the clients
 * (client i belongs to thread i % N) and its own epoll instance; threads share nothing but the
 * read-only options, a few atomic counters and the phase barrier.  The files split by concern:
 *   xml.c      a minimal XML stream scanner and element reader (enough for server stanzas)
 *   scram.c    SCRAM-SHA-1/SCRAM-SHA-256 client side (RFC 5802/7677), base64
 *   client.c   one XMPP client connection: TCP, TLS (STARTTLS or direct), SASL, bind, presence
 *   worker.c   the per-thread epoll loop and phase driver
 *   scenario.c what each scenario does with its clients and what it counts
 *   stats.c    latency samples, percentiles, CPU time and RSS
 *   main.c     options, threads, report (human table and one JSON line per scenario)
 */
#ifndef KONTALK_BENCH_H
#define KONTALK_BENCH_H

#include <netinet/in.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define BENCH_MAX_THREADS 64
#define BENCH_MAX_ADDRS 256

/* ---- small helpers (abort on OOM: a benchmark has nothing better to do) ---- */
void *bench_malloc(size_t n);
void *bench_calloc(size_t n, size_t size);
void *bench_realloc(void *p, size_t n);
char *bench_strdup(const char *s);
uint64_t bench_now_ns(void); /* CLOCK_MONOTONIC: shared by all threads */
void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void bench_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A growable byte buffer: [off, len) holds pending bytes. */
struct bbuf {
    char *data;
    size_t off, len, cap;
};
void bbuf_add(struct bbuf *b, const void *p, size_t n);
void bbuf_printf(struct bbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void bbuf_consume(struct bbuf *b, size_t n);
void bbuf_free(struct bbuf *b);

/* ---- xml.c ---- */
enum xml_event { XML_NEED_MORE, XML_STREAM_OPEN, XML_ELEMENT, XML_STREAM_CLOSE, XML_ERROR };

/* Finds the stream header and complete depth-2 elements in a byte stream; keeps no copies. */
struct xml_scan {
    int depth;
    size_t pos;        /* scanned up to here (relative to the buffer start) */
    size_t elem_start; /* where the current depth-2 element starts */
};
void xml_scan_reset(struct xml_scan *x);
/* Next event in buf[0..len); start_r and end_r delimit the element or header. */
enum xml_event xml_scan_next(struct xml_scan *x, const char *buf, size_t len, size_t *start_r,
                             size_t *end_r);
/* The buffer lost its first n bytes (all before any pending element). */
void xml_scan_shift(struct xml_scan *x, size_t n);
/* Bytes at the start of the buffer no longer needed. */
size_t xml_scan_consumable(const struct xml_scan *x);

struct xnode {
    const char *name; /* local name (prefix stripped) */
    size_t name_len;
    const char *attrs; /* raw attribute text */
    size_t attrs_len;
    const char *text; /* first text run */
    size_t text_len;
    int child, next; /* indices, -1 for none */
};
#define XDOC_MAX_NODES 128
struct xdoc {
    struct xnode n[XDOC_MAX_NODES];
    int count;
};
/* Parses one complete element; 0 or -1 (malformed or too many nodes). Node 0 is the root. */
int xml_parse(struct xdoc *d, const char *s, size_t len);
int xml_child(const struct xdoc *d, int node, const char *name); /* -1 if none */
bool xml_is(const struct xdoc *d, int node, const char *name);
/* Attribute value, unescaped and NUL-terminated into buf; -1 if absent or too long. */
int xml_attr(const struct xdoc *d, int node, const char *name, char *buf, size_t size);
/* Text, unescaped; returns its length or -1 if it does not fit. */
int xml_text(const struct xdoc *d, int node, char *buf, size_t size);
bool xml_has_ns(const struct xdoc *d, int node, const char *ns);

/* ---- scram.c ---- */
enum mech { MECH_PLAIN, MECH_SCRAM_SHA1, MECH_SCRAM_SHA256 };
const char *mech_name(enum mech m);
int mech_parse(const char *s, enum mech *m_r);

/* Keys derived from a password, cached per user across logins (what real clients do). */
struct scram_keys {
    bool valid;
    enum mech mech;
    unsigned iter;
    char salt[64];
    unsigned char client_key[64], server_key[64];
};

struct scram {
    enum mech mech;
    char cnonce[33];
    char *client_first_bare;
    unsigned char server_sig[64];
};
/* client-first-message into out (no base64). */
void scram_start(struct scram *s, enum mech m, const char *user, struct bbuf *out);
/* server-first in, client-final out; -1 on a malformed or hostile challenge. */
int scram_step(struct scram *s, const char *server_first, const char *password,
               struct scram_keys *cache, struct bbuf *out);
/* server-final: 0 if the server proved it knows the keys. */
int scram_verify(struct scram *s, const char *server_final);
void scram_free(struct scram *s);

int b64_encode(const void *in, size_t n, struct bbuf *out);
int b64_decode(const char *in, size_t n, unsigned char *out, size_t size); /* -1 bad/too long */

/* ---- options (main.c) ---- */
enum tls_mode { TLS_STARTTLS, TLS_DIRECT };
enum scenario { SC_LOGIN, SC_MESSAGE, SC_IDLE, SC_PRESENCE };

struct options {
    enum scenario scenario;
    const char *label; /* server name in the report */
    const char *host;  /* address to connect to */
    int port;
    const char *domain; /* JID domain and stream 'to' */
    enum tls_mode tls;
    const char *tls_min; /* "1.2" or "1.3" */
    enum mech mech;
    const char *user_fmt; /* printf with one %d: user index from user_base */
    int user_base;
    const char *password;
    int threads;
    int clients;        /* login/idle/presence: N users; message: N pairs */
    int concurrency;    /* logins in flight at once (0: all) */
    double rate;        /* logins/s (0: as fast as possible) */
    bool warmup;        /* login: one unmeasured pass first (fills the SCRAM key cache) */
    int messages;       /* per direction of each pair */
    int msg_size;       /* body bytes */
    int window;         /* messages in flight per direction */
    double duration;    /* idle: seconds to hold */
    int server_pid;     /* RSS (idle) and CPU source */
    int cpu_pids[8];    /* more processes whose CPU counts as the server's (its database) */
    int ncpu_pids;
    int roster;         /* presence: contacts per user (even) */
    bool skip_setup;    /* presence: rosters already exist */
    double timeout;     /* seconds without progress before a phase gives up */
    struct in_addr src[BENCH_MAX_ADDRS];
    int nsrc;
    bool no_presence;   /* do not send initial presence */
    bool json_only;
    bool verbose;
    int trace[16]; /* user numbers whose stanzas go to stderr (--trace) */
    int ntrace;
};
extern struct options opt;
extern SSL_CTX *bench_ssl_ctx;
extern struct sockaddr_in bench_server;

/* ---- client.c ---- */
enum cstate {
    CS_IDLE,
    CS_CONNECTING,
    CS_TLS,
    CS_FEATURES,  /* waiting for stream features (which ones: see c->stage) */
    CS_PROCEED,   /* starttls sent */
    CS_AUTH,      /* auth sent, waiting for challenge/success */
    CS_BIND,      /* bind iq sent */
    CS_SESSION,   /* legacy session iq sent */
    CS_ONLINE,    /* bound, initial presence sent if asked */
    CS_CLOSING,   /* </stream:stream> sent */
    CS_DONE,      /* closed cleanly */
    CS_FAILED
};

struct worker;
struct client {
    int idx;     /* global client index */
    int user;    /* user number (for the name) */
    int partner; /* message: partner client index; -1 otherwise */
    struct worker *w;
    int fd;
    SSL *ssl;
    enum cstate state;
    int stage; /* 0: pre-TLS features, 1: SASL features, 2: bind features */
    bool want_write, tls_want_write;
    bool send_presence;
    struct bbuf in, out;
    struct xml_scan xs;
    struct scram scram;
    struct scram_keys keys;
    uint64_t t_start, t_online;
    char jid[128];
    char fail[96]; /* first failure reason */
    bool phase_done; /* already counted in this phase's pending */
    /* message scenario: this client's outgoing flow (to its partner) and incoming one */
    bool in_done; /* the incoming flow is complete or dead */
    int sent;
    int received;      /* distinct */
    int dup, reorder, bad;
    int max_seq_seen;
    unsigned char *seen; /* bitmap of received sequence numbers */
    /* presence scenario */
    int subscribed; /* setup: 'subscribed' received */
    int presences;  /* available presences from contacts */
    unsigned char *pseen; /* bitmap over contacts */
    unsigned char *rseen; /* contacts the roster already shows us subscribed to (to/both) */
};

void client_init(struct client *c, int idx, int user, struct worker *w);
void client_start(struct client *c); /* connect; progress comes through client_event */
void client_event(struct client *c, uint32_t events);
void client_send(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void client_flush(struct client *c);
void client_close(struct client *c); /* send </stream:stream>, then shutdown */
void client_fail(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void client_reset(struct client *c); /* close the socket, back to CS_IDLE */
void client_free(struct client *c);
bool client_traced(const struct client *c);

/* ---- scenario.c: callbacks from the client ---- */
void scenario_online(struct client *c);
void scenario_stanza(struct client *c, const struct xdoc *d, const char *raw, size_t len);
void scenario_closed(struct client *c);

/* ---- stats.c ---- */
struct samples {
    uint32_t *v; /* microseconds */
    size_t n, cap;
};
void samples_add(struct samples *s, uint64_t ns);
void samples_merge(struct samples *into, const struct samples *from);
double samples_pct_ms(struct samples *s, double pct); /* sorts; NaN if empty */
double samples_max_ms(const struct samples *s);
void samples_free(struct samples *s);
double cpu_seconds(void); /* user+system of this process */
long proc_rss_kb(int pid);  /* VmRSS of a process and its children if any; -1 on error */
double proc_cpu_s(int pid); /* user+system s of a process and its children; -1 on error */
/* CPU s of --server-pid (and children) plus every --cpu-pid; -1 without --server-pid */
double server_cpu_s(void);

/* ---- worker.c ---- */
enum phase { PH_LOGIN, PH_SETUP, PH_RUN, PH_HOLD, PH_LOGOUT };

struct worker {
    int id;
    pthread_t thread;
    int epfd;
    struct client **clients; /* this thread's slice */
    int nclients;
    /* phase state */
    enum phase phase;
    int next_start; /* login: next client of the slice to start */
    int inflight;
    int pending;        /* clients (or flows) the phase still waits for */
    uint64_t last_progress;
    uint64_t phase_start;
    double rate;     /* this thread's share of the login rate */
    int conc;        /* this thread's share of the login concurrency (0: unlimited) */
    uint64_t hold_until;
    bool timing_out;
    uint64_t last_delivery; /* newest message/presence delivery (throughput end) */
    struct xdoc doc; /* scratch for the element being handled */
    /* results */
    struct samples lat;
    long ok, failed;
    long msgs_sent, msgs_recv;
    long presences;
    long errors; /* error stanzas and clients lost after login */
};

extern struct worker *workers;
extern struct client *clients;
extern int nclients_total;

/* Adds the client's socket to its loop (add) or updates its events (EPOLLOUT if want_write). */
void worker_watch(struct client *c, bool add);
void worker_progress(struct worker *w);
void worker_done_one(struct worker *w);
void workers_start(void);
/* Runs one phase on every thread and waits for all of them; returns elapsed ns. */
uint64_t workers_run_phase(enum phase ph);
void workers_stop(void);

/* ---- scenario.c: the phase hooks (on the worker's thread) and the run (main thread) ---- */
void scenario_phase_begin(struct worker *w);
int scenario_tick(struct worker *w, uint64_t now); /* ms the loop may sleep */
void scenario_phase_timeout(struct worker *w);
int scenario_run(void); /* exit status */

#endif
