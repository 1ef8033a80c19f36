/* Unit tests for the worker pool: done() on the submitting loop's thread,
 * done() on the worker without a loop, jobq order and mutual exclusion
 * under contention, kt_workers_pending, draining on kt_workers_free and
 * kt_jobq_free with jobs still pending. No database is involved. */
#include "config.h"
#include <kontalk/job.h>
#include <kontalk/loop.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "tap.h"

int main(void);

static pthread_t main_thread;

static void watchdog(struct kt_loop *loop, void *data)
{
    (void)data;
    diag("watchdog fired");
    ok(0, "watchdog: test did not finish in time");
    kt_loop_stop(loop);
}

/* ---- 1000 jobs, done on the submitting loop ---- */

#define NJOBS 1000

static struct {
    struct kt_loop *loop;
    struct kt_workers *w;
    atomic_int ran;
    atomic_int run_on_main, run_with_loop, db_not_null;
    int done, done_wrong_thread, done_wrong_loop, done_before_run;
} pl;

static void plain_run(struct kt_db *db, void *data)
{
    int *flag = data;
    if (pthread_equal(pthread_self(), main_thread))
        atomic_fetch_add(&pl.run_on_main, 1);
    if (kt_loop_current())
        atomic_fetch_add(&pl.run_with_loop, 1);
    if (db)
        atomic_fetch_add(&pl.db_not_null, 1);
    *flag = 1;
    atomic_fetch_add(&pl.ran, 1);
}

static void plain_done(void *data)
{
    int *flag = data;
    if (!pthread_equal(pthread_self(), main_thread))
        pl.done_wrong_thread++;
    if (kt_loop_current() != pl.loop)
        pl.done_wrong_loop++;
    if (*flag != 1)
        pl.done_before_run++;
    free(flag);
    if (++pl.done == NJOBS)
        kt_loop_stop(pl.loop);
}

static void submit_plain(struct kt_loop *loop, void *data)
{
    (void)data;
    (void)loop;
    for (int i = 0; i < NJOBS; i++)
        kt_job_submit(pl.w, NULL, plain_run, plain_done, kt_calloc(1, sizeof(int)));
}

static void test_plain(void)
{
    struct kt_timer *wd;

    pl.loop = kt_loop_new(0);
    pl.w = kt_workers_new(3, NULL);
    ok(pl.w != NULL, "pool of 3 workers");
    kt_loop_post(pl.loop, submit_plain, NULL);
    wd = kt_timer_add(pl.loop, 20000, watchdog, NULL);
    kt_loop_run(pl.loop);
    kt_timer_cancel(&wd);
    is_int(atomic_load(&pl.ran), NJOBS, "every job ran");
    is_int(pl.done, NJOBS, "every done ran");
    is_int(atomic_load(&pl.run_on_main), 0, "run() never on the submitting thread");
    is_int(atomic_load(&pl.run_with_loop), 0, "workers have no current loop");
    is_int(atomic_load(&pl.db_not_null), 0, "db is NULL without a db conf");
    is_int(pl.done_wrong_thread, 0, "done() on the submitting loop's thread");
    is_int(pl.done_wrong_loop, 0, "done() with kt_loop_current() == submitting loop");
    is_int(pl.done_before_run, 0, "done() after its run()");
    is_int(kt_workers_pending(pl.w), 0, "nothing pending");
    kt_workers_free(&pl.w);
    ok(pl.w == NULL, "kt_workers_free clears the pointer");
    kt_loop_free(&pl.loop);
}

/* ---- no loop: done() on the worker ---- */

static atomic_int noloop_done_on_worker, noloop_done;

static void noloop_run(struct kt_db *db, void *data)
{
    (void)db;
    *(pthread_t *)data = pthread_self();
}

static void noloop_done_fn(void *data)
{
    if (pthread_equal(*(pthread_t *)data, pthread_self()) && !kt_loop_current())
        atomic_fetch_add(&noloop_done_on_worker, 1);
    atomic_fetch_add(&noloop_done, 1);
    free(data);
}

static void test_no_loop(void)
{
    struct kt_workers *w = kt_workers_new(2, NULL);

    for (int i = 0; i < 100; i++)
        kt_job_submit(w, NULL, noloop_run, noloop_done_fn, kt_malloc(sizeof(pthread_t)));
    /* done == NULL is allowed. */
    kt_job_submit(w, NULL, noloop_run, NULL, &(pthread_t){0});
    kt_workers_free(&w);
    is_int(atomic_load(&noloop_done), 100, "all done() ran before kt_workers_free returned");
    is_int(atomic_load(&noloop_done_on_worker), 100, "without a loop, done() runs on the worker");
}

/* ---- jobq order and exclusion under contention ---- */

#define NQUEUES 6
#define PERQ 200

static struct {
    struct kt_loop *loop;
    struct kt_workers *w;
    struct kt_jobq *q[NQUEUES];
    atomic_int in_flight[NQUEUES];
    atomic_int overlap;
    int seq[NQUEUES][PERQ]; /* only touched by the queue's one running job */
    int nseq[NQUEUES];
    int done_seq[NQUEUES]; /* done() order, on the loop thread */
    int done_bad;
    int ndone;
} qs;

struct qjob {
    int q, i;
};

static void q_run(struct kt_db *db, void *data)
{
    struct qjob *j = data;
    (void)db;
    if (atomic_fetch_add(&qs.in_flight[j->q], 1) != 0)
        atomic_fetch_add(&qs.overlap, 1);
    /* Widen the window a little so overlaps would show up. */
    if (j->i % 16 == 0)
        usleep(200);
    qs.seq[j->q][qs.nseq[j->q]++] = j->i;
    atomic_fetch_sub(&qs.in_flight[j->q], 1);
}

static void q_done(void *data)
{
    struct qjob *j = data;
    if (j->i != qs.done_seq[j->q])
        qs.done_bad++;
    qs.done_seq[j->q] = j->i + 1;
    free(j);
    if (++qs.ndone == NQUEUES * PERQ)
        kt_loop_stop(qs.loop);
}

static void q_submit(struct kt_loop *loop, void *data)
{
    (void)loop;
    (void)data;
    /* Interleaved: q0 #0, q1 #0, ..., q0 #1, ... plus unordered jobs. */
    for (int i = 0; i < PERQ; i++)
        for (int q = 0; q < NQUEUES; q++) {
            struct qjob *j = kt_new(struct qjob);
            j->q = q;
            j->i = i;
            kt_job_submit(qs.w, qs.q[q], q_run, q_done, j);
        }
}

static void test_jobq(void)
{
    struct kt_timer *wd;
    int bad = 0;

    qs.loop = kt_loop_new(0);
    qs.w = kt_workers_new(4, NULL);
    for (int q = 0; q < NQUEUES; q++)
        qs.q[q] = kt_jobq_new(qs.w);
    kt_loop_post(qs.loop, q_submit, NULL);
    wd = kt_timer_add(qs.loop, 30000, watchdog, NULL);
    kt_loop_run(qs.loop);
    kt_timer_cancel(&wd);
    is_int(qs.ndone, NQUEUES * PERQ, "all jobq jobs done");
    is_int(atomic_load(&qs.overlap), 0, "at most one job of a queue runs at a time");
    for (int q = 0; q < NQUEUES; q++) {
        if (qs.nseq[q] != PERQ)
            bad++;
        for (int i = 0; i < qs.nseq[q]; i++)
            if (qs.seq[q][i] != i)
                bad++;
    }
    is_int(bad, 0, "each queue ran its jobs in submission order");
    is_int(qs.done_bad, 0, "done() of a queue arrive in order too");
    for (int q = 0; q < NQUEUES; q++)
        kt_jobq_free(&qs.q[q]);
    ok(qs.q[0] == NULL, "kt_jobq_free clears the pointer");
    kt_workers_free(&qs.w);
    kt_loop_free(&qs.loop);
}

/* ---- pending count, drain on free, jobq freed with jobs pending ---- */

static pthread_mutex_t gate_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cond = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static atomic_int gated_ran, chain_ran, chain_bad;
static int chain_next;

static void gated_run(struct kt_db *db, void *data)
{
    (void)db;
    (void)data;
    pthread_mutex_lock(&gate_lock);
    while (!gate_open)
        pthread_cond_wait(&gate_cond, &gate_lock);
    pthread_mutex_unlock(&gate_lock);
    atomic_fetch_add(&gated_ran, 1);
}

static void chain_run(struct kt_db *db, void *data)
{
    int i = (int)(intptr_t)data;
    (void)db;
    if (i != chain_next)
        atomic_fetch_add(&chain_bad, 1);
    chain_next = i + 1;
    atomic_fetch_add(&chain_ran, 1);
}

static void test_drain(void)
{
    struct kt_workers *w = kt_workers_new(2, NULL);
    struct kt_jobq *q = kt_jobq_new(w), *idle = kt_jobq_new(w);

    /* Both workers block; everything else piles up behind them. */
    kt_job_submit(w, NULL, gated_run, NULL, NULL);
    kt_job_submit(w, NULL, gated_run, NULL, NULL);
    for (int i = 0; i < 300; i++)
        kt_job_submit(w, q, chain_run, NULL, (void *)(intptr_t)i);
    for (int i = 0; i < 10; i++)
        kt_job_submit(w, NULL, gated_run, NULL, NULL);
    is_int(kt_workers_pending(w), 312, "pending counts queued, running and jobq-waiting jobs");

    /* Released while 300 of its jobs are pending: freed by the worker. */
    kt_jobq_free(&q);
    ok(q == NULL, "kt_jobq_free with pending jobs clears the pointer");
    kt_jobq_free(&idle);
    kt_jobq_free(&idle);
    ok(idle == NULL, "kt_jobq_free of an idle queue, and of NULL");

    pthread_mutex_lock(&gate_lock);
    gate_open = true;
    pthread_cond_broadcast(&gate_cond);
    pthread_mutex_unlock(&gate_lock);
    kt_workers_free(&w);
    is_int(atomic_load(&gated_ran), 12, "kt_workers_free ran every queued job");
    is_int(atomic_load(&chain_ran), 300, "and the whole jobq chain");
    is_int(atomic_load(&chain_bad), 0, "chain kept its order");
}

int main(void)
{
    main_thread = pthread_self();
    test_plain();
    test_no_loop();
    test_jobq();
    test_drain();
    return done_testing();
}
