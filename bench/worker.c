/* worker.c: the per-thread epoll loops and the phase barrier.
 *
 * Each worker thread owns a slice of the clients and one epoll instance; nothing but the
 * scenario's read-only options is shared, so a worker needs no locks.  The main thread drives
 * the run as a sequence of phases (log in, exchange, hold, log out): for each one it releases
 * all workers through a barrier and waits on a second barrier until every worker has finished
 * its slice.  A worker finishes when the scenario says nothing is pending on its slice, or when
 * nothing has progressed for --timeout seconds (then whatever is missing counts as lost).
 */
#include "config.h"

#include "bench.h"

#include <errno.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

struct worker *workers;
struct client *clients;
int nclients_total;

static pthread_barrier_t start_bar, end_bar;
static enum phase current_phase;
static bool quitting;

void worker_watch(struct client *c, bool add)
{
    struct epoll_event ev = {.events = EPOLLIN | (c->want_write ? EPOLLOUT : 0u),
                             .data.ptr = c};
    if (c->fd < 0)
        return;
    if (epoll_ctl(c->w->epfd, add ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, c->fd, &ev) < 0)
        client_fail(c, "epoll_ctl: %s", strerror(errno));
}

void worker_progress(struct worker *w)
{
    w->last_progress = bench_now_ns();
}

void worker_done_one(struct worker *w)
{
    w->pending--;
    worker_progress(w);
}

static void run_phase(struct worker *w)
{
    struct epoll_event evs[256];
    uint64_t now = bench_now_ns();
    w->phase = current_phase;
    w->phase_start = now;
    w->last_progress = now;
    scenario_phase_begin(w);
    while (w->pending > 0) {
        now = bench_now_ns();
        int wait_ms = scenario_tick(w, now);
        if (w->pending <= 0)
            break;
        if ((double)((int64_t)now - (int64_t)w->last_progress) > opt.timeout * 1e9) {
            scenario_phase_timeout(w);
            break;
        }
        int n = epoll_wait(w->epfd, evs, 256, wait_ms);
        if (n < 0 && errno != EINTR)
            bench_die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++)
            client_event(evs[i].data.ptr, evs[i].events);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (;;) {
        pthread_barrier_wait(&start_bar);
        if (quitting)
            break;
        run_phase(w);
        pthread_barrier_wait(&end_bar);
    }
    return NULL;
}

void workers_start(void)
{
    pthread_barrier_init(&start_bar, NULL, (unsigned)opt.threads + 1);
    pthread_barrier_init(&end_bar, NULL, (unsigned)opt.threads + 1);
    for (int t = 0; t < opt.threads; t++) {
        struct worker *w = &workers[t];
        w->id = t;
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (w->epfd < 0)
            bench_die("epoll_create1: %s", strerror(errno));
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0)
            bench_die("pthread_create failed");
    }
}

uint64_t workers_run_phase(enum phase ph)
{
    uint64_t t0 = bench_now_ns();
    current_phase = ph;
    pthread_barrier_wait(&start_bar);
    pthread_barrier_wait(&end_bar);
    return bench_now_ns() - t0;
}

void workers_stop(void)
{
    quitting = true;
    pthread_barrier_wait(&start_bar);
    for (int t = 0; t < opt.threads; t++) {
        pthread_join(workers[t].thread, NULL);
        close(workers[t].epfd);
    }
    pthread_barrier_destroy(&start_bar);
    pthread_barrier_destroy(&end_bar);
}
