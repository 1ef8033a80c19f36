/* The worker pool: n threads taking jobs from one mutex+condvar FIFO. Each
 * worker owns a kt_db (no connection is shared between threads) and passes
 * it to run(). done() is posted back to the loop that submitted the job
 * (kt_loop_current() at submit time), or called on the worker right after
 * run() when the submitter had no loop.
 *
 * A kt_jobq serialises its jobs: at most one of them is in the pool
 * (queued or running) at any time; the others wait in the jobq's own FIFO
 * and the next one enters the pool as soon as the previous run() returns
 * and its done() is posted (not run), so done() calls of one jobq arrive in
 * order too; without a loop, done() runs on the worker before the next job
 * is released. One mutex guards the pool and every
 * jobq, so a job's hand-over to its successor is a single critical section.
 *
 * kt_workers_free() lets the workers drain everything, jobq chains
 * included, before joining them: a worker only exits when the pool is empty,
 * and only running workers push chained jobs, so the last one running picks
 * up whatever it pushed. No job may be submitted once kt_workers_free() has
 * started, and loops that will receive done() posts must outlive it. */
#include "config.h"
#include <kontalk/job.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct job {
    kt_job_run_fn run;
    kt_job_done_fn done;
    void *data;
    struct kt_loop *loop; /* where done() goes; NULL: run it on the worker */
    struct kt_jobq *q;
    struct kt_workers *w;
    struct job *next;
};

struct kt_jobq {
    struct kt_workers *w;
    struct job *head, *tail; /* waiting for the active job to finish */
    bool active;             /* one of its jobs is in the pool */
    bool released;           /* kt_jobq_free() was called: free once idle */
};

struct worker {
    struct kt_workers *w;
    pthread_t thread;
    struct kt_db *db;
};

struct kt_workers {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct job *head, *tail;
    bool stopping;
    bool joined; /* kt_workers_stop() ran: threads gone, struct still valid */
    atomic_uint pending; /* submitted and whose run() has not returned */
    /* Submitted and whose done() has not returned: kt_workers_stop waits for
     * zero, because a done() may submit the next job of a chain. */
    unsigned unfinished; /* under lock */
    pthread_cond_t idle;
    unsigned n;
    struct worker *workers;
};

/* Call with w->lock held. */
static void pool_push(struct kt_workers *w, struct job *j)
{
    j->next = NULL;
    if (w->tail)
        w->tail->next = j;
    else
        w->head = j;
    w->tail = j;
    pthread_cond_signal(&w->cond);
}

static void job_finished(struct kt_workers *w)
{
    pthread_mutex_lock(&w->lock);
    if (--w->unfinished == 0)
        pthread_cond_broadcast(&w->idle);
    pthread_mutex_unlock(&w->lock);
}

static void job_post_done(struct kt_loop *loop, void *data)
{
    struct job *j = data;
    struct kt_workers *w = j->w;
    (void)loop;
    j->done(j->data);
    free(j);
    job_finished(w);
}

/* Called with w->lock held after j's run(): hands its jobq over to the next
 * job, or marks it idle (and frees it when it was released). */
static void jobq_next(struct kt_workers *w, struct kt_jobq *q)
{
    struct job *next = q->head;

    if (next) {
        q->head = next->next;
        if (!q->head)
            q->tail = NULL;
        pool_push(w, next);
        return;
    }
    q->active = false;
    if (q->released)
        free(q);
}

static void *worker_main(void *arg)
{
    struct worker *self = arg;
    struct kt_workers *w = self->w;

    pthread_mutex_lock(&w->lock);
    for (;;) {
        struct job *j;
        struct kt_jobq *q;

        while (!w->head && !w->stopping)
            pthread_cond_wait(&w->cond, &w->lock);
        j = w->head;
        if (!j)
            break; /* stopping and drained */
        w->head = j->next;
        if (!w->head)
            w->tail = NULL;
        pthread_mutex_unlock(&w->lock);

        j->run(self->db, j->data);
        /* Before done() is posted: whoever sees the last done() sees 0. */
        atomic_fetch_sub(&w->pending, 1);

        /* done() is posted (or run) before the jobq's next job enters the
         * pool, so the done() calls of a jobq happen in order as well. */
        q = j->q;
        if (!j->done) {
            free(j);
            job_finished(w);
        } else if (j->loop) {
            kt_loop_post(j->loop, job_post_done, j);
        } else {
            j->done(j->data);
            free(j);
            job_finished(w);
        }

        pthread_mutex_lock(&w->lock);
        if (q)
            jobq_next(w, q);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

struct kt_workers *kt_workers_new(unsigned n, const struct kt_db_conf *db_conf)
{
    struct kt_workers *w = kt_new(struct kt_workers);

    kt_assert(n > 0);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    pthread_cond_init(&w->idle, NULL);
    atomic_init(&w->pending, 0);
    w->workers = kt_calloc(n, sizeof(*w->workers));
    for (unsigned i = 0; i < n; i++) {
        struct worker *wk = &w->workers[i];
        int rc;

        wk->w = w;
        wk->db = db_conf ? kt_db_new(db_conf) : NULL;
        rc = pthread_create(&wk->thread, NULL, worker_main, wk);
        if (rc != 0) {
            kt_log(KT_LOG_ERROR, "cannot start worker thread %u: %s", i, strerror(rc));
            kt_db_free(&wk->db);
            goto fail;
        }
        w->n++;
    }
    return w;

fail:
    kt_workers_free(&w);
    return NULL;
}

void kt_workers_stop(struct kt_workers *w)
{
    if (!w || w->joined)
        return;
    pthread_mutex_lock(&w->lock);
    /* Wait for every chain of jobs to end (done() callbacks run on loops,
     * which are still running), bounded in case a loop is stuck. */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    while (w->unfinished > 0)
        if (pthread_cond_timedwait(&w->idle, &w->lock, &deadline) != 0) {
            kt_log(KT_LOG_WARN, "workers: %u jobs still unfinished at shutdown", w->unfinished);
            break;
        }
    w->stopping = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    for (unsigned i = 0; i < w->n; i++) {
        pthread_join(w->workers[i].thread, NULL);
        kt_db_free(&w->workers[i].db);
    }
    kt_assert(w->head == NULL);
    w->joined = true;
}

void kt_workers_free(struct kt_workers **wp)
{
    struct kt_workers *w = *wp;

    if (!w)
        return;
    kt_workers_stop(w);
    pthread_cond_destroy(&w->cond);
    pthread_cond_destroy(&w->idle);
    pthread_mutex_destroy(&w->lock);
    free(w->workers);
    free(w);
    *wp = NULL;
}

unsigned kt_workers_pending(const struct kt_workers *w)
{
    return atomic_load(&w->pending);
}

void kt_job_submit(struct kt_workers *w, struct kt_jobq *q, kt_job_run_fn run,
                   kt_job_done_fn done, void *data)
{
    struct job *j = kt_new(struct job);

    kt_assert(run != NULL);
    j->run = run;
    j->done = done;
    j->data = data;
    j->loop = kt_loop_current();
    j->q = q;
    j->w = w;

    pthread_mutex_lock(&w->lock);
    kt_assert(!w->stopping);
    w->unfinished++;
    atomic_fetch_add(&w->pending, 1);
    if (q) {
        kt_assert(q->w == w && !q->released);
        if (q->active) {
            if (q->tail)
                q->tail->next = j;
            else
                q->head = j;
            q->tail = j;
            pthread_mutex_unlock(&w->lock);
            return;
        }
        q->active = true;
    }
    pool_push(w, j);
    pthread_mutex_unlock(&w->lock);
}

struct kt_jobq *kt_jobq_new(struct kt_workers *w)
{
    struct kt_jobq *q = kt_new(struct kt_jobq);
    q->w = w;
    return q;
}

void kt_jobq_free(struct kt_jobq **qp)
{
    struct kt_jobq *q = *qp;
    struct kt_workers *w;

    if (!q)
        return;
    *qp = NULL;
    w = q->w;
    pthread_mutex_lock(&w->lock);
    if (q->active)
        q->released = true; /* the worker finishing its last job frees it */
    else
        free(q);
    pthread_mutex_unlock(&w->lock);
}
