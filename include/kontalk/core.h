/* The core as modules see it: data first (names, config), then services
 * (router, workers, loops, TLS). Fields are set before any module's init
 * and are read-only for modules. */
#ifndef KONTALK_CORE_H
#define KONTALK_CORE_H

#include "base.h"
#include "buf.h"
#include <libconfig.h>

struct kt_router;
struct kt_workers;
struct kt_loop;
struct kt_tls;

struct kt_core {
    const char *host;    /* this node's host name, e.g. "beta.kontalk.net" */
    const char *network; /* the network domain, e.g. "kontalk.net" */
    const config_t *config;
    struct kt_router *router;
    struct kt_workers *workers;
    struct kt_tls *tls; /* NULL when no certificate is configured */
    unsigned nloops;
    struct kt_loop **loops;
};

/* Round-robin choice of the loop a new connection is pinned to. Any thread. */
KT_API struct kt_loop *kt_core_next_loop(struct kt_core *core);

/* Connection gauge shown by `kontalkctl status`. Any thread. */
KT_API void kt_core_conn_opened(struct kt_core *core);
KT_API void kt_core_conn_closed(struct kt_core *core);

/* A module adds "key: value" lines to the status report. fn runs on an
 * I/O thread; it must not block. Register during init. */
typedef void (*kt_status_fn)(struct kt_buf *out, void *data);
KT_API void kt_core_status_add(struct kt_core *core, kt_status_fn fn, void *data);

#endif
