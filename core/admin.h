/* The local admin socket kontalkctl talks to: one line in, a text reply,
 * then close. Commands: "status", "dbping". Runs on one I/O thread. */
#ifndef KT_CORE_ADMIN_H
#define KT_CORE_ADMIN_H

#include "core/core_conf.h"

struct kt_admin;

/* Binds the socket now (main thread) so errors are reported at start-up;
 * a stale socket file nobody answers on is replaced. */
struct kt_admin *kt_admin_new(struct kt_server *srv, const char *path, char *err, size_t errlen);
/* Starts accepting on loop (call on the main thread; posts to the loop). */
void kt_admin_start(struct kt_admin *admin, struct kt_loop *loop);
/* After the loops have stopped: closes everything and removes the socket file. */
void kt_admin_free(struct kt_admin **admin);

#endif
