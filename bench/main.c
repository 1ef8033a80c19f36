/* main.c: kontalk-bench's command line, TLS context, and the run.
 *
 * usage: kontalk-bench [options] login|message|idle|presence
 * The scenario runs once and prints a human table (unless --json) and one JSON line on stdout;
 * diagnostics go to stderr.  Exit status: 0 all good, 1 failures or message loss, 2 usage or
 * setup error.  See bench/README.md for what each scenario measures.
 */
#include "config.h"

#include "bench.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netdb.h>
#include <openssl/err.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

struct options opt = {
    .label = "server",
    .host = "127.0.0.1",
    .port = 5222,
    .domain = "localhost",
    .tls = TLS_STARTTLS,
    .tls_min = "1.2",
    .mech = MECH_SCRAM_SHA256,
    .user_fmt = "bench%d",
    .user_base = 1,
    .password = "bench",
    .threads = 2,
    .clients = 100,
    .concurrency = 100,
    .warmup = true,
    .messages = 100,
    .msg_size = 100,
    .window = 10,
    .duration = 10,
    .roster = 10,
    .timeout = 10,
};
SSL_CTX *bench_ssl_ctx;
struct sockaddr_in bench_server;

static void usage(int status)
{
    fputs("usage: kontalk-bench [options] login|message|idle|presence\n"
          "server:\n"
          "  --label NAME          server name in the report (default: server)\n"
          "  --host ADDR           address to connect to (default 127.0.0.1)\n"
          "  --port N              (default 5222)\n"
          "  --domain D            JID domain and stream 'to' (default localhost)\n"
          "  --tls starttls|direct (default starttls)\n"
          "  --tls-min 1.2|1.3     lowest TLS version offered (default 1.2)\n"
          "  --mech M              SCRAM-SHA-256 (default), SCRAM-SHA-1 or PLAIN\n"
          "  --users FMT           user names, printf with one %d (default bench%d)\n"
          "  --user-base N         first user number (default 1)\n"
          "  --password P          every user's password (default bench)\n"
          "load:\n"
          "  --threads N           event loops (default 2)\n"
          "  --clients N           users (message: pairs) (default 100)\n"
          "  --concurrency N       logins in flight at once, 0 = all (default 100)\n"
          "  --rate R              logins started per second; message: messages sent per\n"
          "                        second in all, paced (open loop); 0 = as fast as possible\n"
          "  --no-warmup           login: skip the unmeasured first pass\n"
          "  --no-presence         do not send initial presence after binding\n"
          "  --messages M          message: per direction of each pair (default 100)\n"
          "  --size B              message: body bytes (default 100)\n"
          "  --window W            message: in flight per direction (default 10)\n"
          "  --duration T          idle: seconds to hold the sessions (default 10)\n"
          "  --server-pid PID      the server's CPU time per operation and (idle) its RSS,\n"
          "                        with its child processes\n"
          "  --cpu-pid PID         count this process's CPU as the server's too (its database;\n"
          "                        repeatable)\n"
          "  --roster R            presence: contacts per user, even (default 10)\n"
          "  --skip-setup          presence: the rosters already exist\n"
          "  --timeout S           give up a phase after S s without progress (default 10)\n"
          "  --source-addrs LIST   bind clients to these addresses, e.g. 127.0.0.1-127.0.0.50\n"
          "                        or 127.0.0.2,127.0.0.3 (round robin)\n"
          "output:\n"
          "  --json                only the JSON line\n"
          "  --verbose             print every client failure (presence: missing contacts)\n"
          "  --trace N[,N...]      print every stanza of these user numbers to stderr\n",
          status ? stderr : stdout);
    exit(status);
}

static double num(const char *name, const char *s, double lo, double hi)
{
    char *end;
    double v = strtod(s, &end);
    if (*s == 0 || *end || v < lo || v > hi)
        bench_die("%s: expected a number in [%g, %g], got '%s'", name, lo, hi, s);
    return v;
}

static void parse_addrs(const char *spec)
{
    char *copy = bench_strdup(spec), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *dash = strchr(tok, '-');
        struct in_addr a, b;
        if (dash)
            *dash = 0;
        if (inet_pton(AF_INET, tok, &a) != 1 || (dash && inet_pton(AF_INET, dash + 1, &b) != 1))
            bench_die("--source-addrs: bad address in '%s'", spec);
        uint32_t lo = ntohl(a.s_addr), hi = dash ? ntohl(b.s_addr) : lo;
        if (hi < lo)
            bench_die("--source-addrs: empty range in '%s'", spec);
        for (uint64_t x = lo; x <= hi; x++) {
            if (opt.nsrc >= BENCH_MAX_ADDRS)
                bench_die("--source-addrs: at most %d addresses", BENCH_MAX_ADDRS);
            opt.src[opt.nsrc++].s_addr = htonl((uint32_t)x);
        }
    }
    free(copy);
}

static void parse_trace(const char *spec)
{
    char *copy = bench_strdup(spec), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (opt.ntrace >= (int)(sizeof(opt.trace) / sizeof(opt.trace[0])))
            bench_die("--trace: at most %zu users", sizeof(opt.trace) / sizeof(opt.trace[0]));
        opt.trace[opt.ntrace++] = (int)num("--trace", tok, 0, 1e9);
    }
    free(copy);
}

static void resolve(void)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *res;
    int e = getaddrinfo(opt.host, NULL, &hints, &res);
    if (e)
        bench_die("%s: %s", opt.host, gai_strerror(e));
    memcpy(&bench_server, res->ai_addr, sizeof(bench_server));
    bench_server.sin_port = htons((uint16_t)opt.port);
    freeaddrinfo(res);
}

static void tls_init(void)
{
    bench_ssl_ctx = SSL_CTX_new(TLS_client_method());
    if (!bench_ssl_ctx)
        bench_die("SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(bench_ssl_ctx, strcmp(opt.tls_min, "1.3") == 0
                                                     ? TLS1_3_VERSION
                                                     : TLS1_2_VERSION);
    /* Servers under test use self-signed certificates on loopback: no verification. Every
     * login is a full handshake (no resumption), as for a client that starts cold. */
    SSL_CTX_set_verify(bench_ssl_ctx, SSL_VERIFY_NONE, NULL);
    SSL_CTX_set_session_cache_mode(bench_ssl_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(bench_ssl_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                                        SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                        SSL_MODE_RELEASE_BUFFERS);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    long need = (opt.scenario == SC_MESSAGE ? 2L : 1L) * opt.clients + 64;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && (rlim_t)need > rl.rlim_cur)
        bench_die("%ld connections need more than the %lu file descriptors allowed (ulimit -n)",
                  need, (unsigned long)rl.rlim_cur);
}

int main(int argc, char **argv)
{
    enum {
        O_LABEL = 256, O_HOST, O_PORT, O_DOMAIN, O_TLS, O_TLSMIN, O_MECH, O_USERS, O_BASE,
        O_PASSWORD, O_THREADS, O_CLIENTS, O_CONC, O_RATE, O_NOWARM, O_NOPRES, O_MESSAGES,
        O_SIZE, O_WINDOW, O_DURATION, O_PID, O_ROSTER, O_SKIP, O_TIMEOUT, O_SRC, O_JSON,
        O_VERBOSE, O_TRACE, O_CPUPID, O_HELP
    };
    static const struct option longopts[] = {
        {"label", 1, 0, O_LABEL},         {"host", 1, 0, O_HOST},
        {"port", 1, 0, O_PORT},           {"domain", 1, 0, O_DOMAIN},
        {"tls", 1, 0, O_TLS},             {"tls-min", 1, 0, O_TLSMIN},
        {"mech", 1, 0, O_MECH},           {"users", 1, 0, O_USERS},
        {"user-base", 1, 0, O_BASE},      {"password", 1, 0, O_PASSWORD},
        {"threads", 1, 0, O_THREADS},     {"clients", 1, 0, O_CLIENTS},
        {"concurrency", 1, 0, O_CONC},    {"rate", 1, 0, O_RATE},
        {"no-warmup", 0, 0, O_NOWARM},    {"no-presence", 0, 0, O_NOPRES},
        {"messages", 1, 0, O_MESSAGES},   {"size", 1, 0, O_SIZE},
        {"window", 1, 0, O_WINDOW},       {"duration", 1, 0, O_DURATION},
        {"server-pid", 1, 0, O_PID},      {"roster", 1, 0, O_ROSTER},
        {"skip-setup", 0, 0, O_SKIP},     {"timeout", 1, 0, O_TIMEOUT},
        {"source-addrs", 1, 0, O_SRC},    {"json", 0, 0, O_JSON},
        {"verbose", 0, 0, O_VERBOSE},     {"help", 0, 0, O_HELP},
        {"trace", 1, 0, O_TRACE},         {"cpu-pid", 1, 0, O_CPUPID},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (ch) {
        case O_LABEL: opt.label = optarg; break;
        case O_HOST: opt.host = optarg; break;
        case O_PORT: opt.port = (int)num("--port", optarg, 1, 65535); break;
        case O_DOMAIN: opt.domain = optarg; break;
        case O_TLS:
            if (strcmp(optarg, "starttls") == 0)
                opt.tls = TLS_STARTTLS;
            else if (strcmp(optarg, "direct") == 0)
                opt.tls = TLS_DIRECT;
            else
                bench_die("--tls: starttls or direct");
            break;
        case O_TLSMIN:
            if (strcmp(optarg, "1.2") != 0 && strcmp(optarg, "1.3") != 0)
                bench_die("--tls-min: 1.2 or 1.3");
            opt.tls_min = optarg;
            break;
        case O_MECH:
            if (mech_parse(optarg, &opt.mech) < 0)
                bench_die("--mech: PLAIN, SCRAM-SHA-1 or SCRAM-SHA-256");
            break;
        case O_USERS: opt.user_fmt = optarg; break;
        case O_BASE: opt.user_base = (int)num("--user-base", optarg, 0, 1e9); break;
        case O_PASSWORD: opt.password = optarg; break;
        case O_THREADS: opt.threads = (int)num("--threads", optarg, 1, BENCH_MAX_THREADS); break;
        case O_CLIENTS: opt.clients = (int)num("--clients", optarg, 1, 1e7); break;
        case O_CONC: opt.concurrency = (int)num("--concurrency", optarg, 0, 1e7); break;
        case O_RATE: opt.rate = num("--rate", optarg, 0, 1e9); break;
        case O_NOWARM: opt.warmup = false; break;
        case O_NOPRES: opt.no_presence = true; break;
        case O_MESSAGES: opt.messages = (int)num("--messages", optarg, 1, 1e8); break;
        case O_SIZE: opt.msg_size = (int)num("--size", optarg, 0, 1 << 20); break;
        case O_WINDOW: opt.window = (int)num("--window", optarg, 1, 1e6); break;
        case O_DURATION: opt.duration = num("--duration", optarg, 0, 1e6); break;
        case O_PID: opt.server_pid = (int)num("--server-pid", optarg, 1, 1e9); break;
        case O_ROSTER: opt.roster = (int)num("--roster", optarg, 0, 1e6); break;
        case O_SKIP: opt.skip_setup = true; break;
        case O_TIMEOUT: opt.timeout = num("--timeout", optarg, 0.1, 1e6); break;
        case O_SRC: parse_addrs(optarg); break;
        case O_JSON: opt.json_only = true; break;
        case O_VERBOSE: opt.verbose = true; break;
        case O_TRACE: parse_trace(optarg); break;
        case O_CPUPID:
            if (opt.ncpu_pids >= (int)(sizeof(opt.cpu_pids) / sizeof(opt.cpu_pids[0])))
                bench_die("--cpu-pid: at most %zu", sizeof(opt.cpu_pids) / sizeof(opt.cpu_pids[0]));
            opt.cpu_pids[opt.ncpu_pids++] = (int)num("--cpu-pid", optarg, 1, 1e9);
            break;
        case O_HELP:
        case 'h': usage(0); break;
        default: usage(2);
        }
    }
    if (optind != argc - 1)
        usage(2);
    const char *sc = argv[optind];
    if (strcmp(sc, "login") == 0)
        opt.scenario = SC_LOGIN;
    else if (strcmp(sc, "message") == 0)
        opt.scenario = SC_MESSAGE;
    else if (strcmp(sc, "idle") == 0)
        opt.scenario = SC_IDLE;
    else if (strcmp(sc, "presence") == 0)
        opt.scenario = SC_PRESENCE;
    else
        usage(2);
    const char *pc = strstr(opt.user_fmt, "%d");
    if (!pc || strchr(pc + 2, '%') || strchr(opt.user_fmt, '%') != pc)
        bench_die("--users: needs exactly one %%d and no other %%");
    if (opt.scenario == SC_PRESENCE && (opt.roster % 2 || opt.roster >= opt.clients))
        bench_die("--roster: an even number below --clients");
    if (opt.mech == MECH_PLAIN || opt.scenario != SC_LOGIN)
        opt.warmup = opt.warmup && opt.mech != MECH_PLAIN && opt.scenario == SC_LOGIN;

    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    resolve();
    tls_init();
    int rc = scenario_run();
    SSL_CTX_free(bench_ssl_ctx);
    return rc;
}
