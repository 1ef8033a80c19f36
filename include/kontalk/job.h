/* The worker pool, for blocking work (MariaDB, PBKDF2, signature checks).
 * A job's run() executes on a worker with that worker's database handle;
 * its done() is then posted back to the loop that submitted the job (or
 * runs on the worker when submitted from a thread that has no loop).
 * A kt_jobq serialises jobs: at most one of its jobs runs at a time, in
 * submission order (one per session keeps stanza order). */
#ifndef KONTALK_JOB_H
#define KONTALK_JOB_H

#include "base.h"
#include "db.h"

struct kt_loop;
struct kt_workers;
struct kt_jobq;

typedef void (*kt_job_run_fn)(struct kt_db *db, void *data);
typedef void (*kt_job_done_fn)(void *data);

/* n threads, each with its own kt_db built from db_conf (NULL: no database). */
KT_API struct kt_workers *kt_workers_new(unsigned n, const struct kt_db_conf *db_conf);
/* Finishes queued jobs (job queues included), then joins the threads. The
 * object stays valid, so job queues can still be freed afterwards; no job
 * may be submitted any more. */
KT_API void kt_workers_stop(struct kt_workers *w);
/* Stops (if not yet stopped) and frees. Free every kt_jobq first. */
KT_API void kt_workers_free(struct kt_workers **w);
KT_API unsigned kt_workers_pending(const struct kt_workers *w);

/* Any thread. q may be NULL (no ordering). done may be NULL. */
KT_API void kt_job_submit(struct kt_workers *w, struct kt_jobq *q, kt_job_run_fn run,
                          kt_job_done_fn done, void *data);

KT_API struct kt_jobq *kt_jobq_new(struct kt_workers *w);
/* Frees the queue once its pending jobs have run; sets *q to NULL. */
KT_API void kt_jobq_free(struct kt_jobq **q);

#endif
