/* The per-thread event loop: epoll (level-triggered) for file descriptors, a
 * binary min-heap of one-shot timers, and an inbox of closures that any
 * thread may post to, woken through an eventfd.
 *
 * One pass of kt_loop_run() waits in epoll_wait (with the nearest timer as
 * timeout), dispatches the ready descriptors, runs the expired timers, runs
 * the posted closures, then calls the before-sleep hook. Everything except
 * kt_loop_post() and kt_loop_stop() must be called on the loop's own thread.
 *
 * An io deleted while a batch of epoll events is being dispatched is only
 * marked dead and freed after the batch, so a later event of the same batch
 * never reaches a freed (or reused) io. */
#include "config.h"
#include <kontalk/loop.h>
#include <kontalk/log.h>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define LOOP_MAX_EVENTS 64

struct kt_io {
    struct kt_loop *loop;
    int fd;
    unsigned events; /* KT_IO_READ | KT_IO_WRITE as requested */
    kt_io_fn fn;
    void *data;
    bool dead;
    /* Live ios form a doubly-linked list (freed by kt_loop_free); dead ones
     * waiting for the end of a batch reuse next as a singly-linked list. */
    struct kt_io *prev, *next;
};

struct kt_timer {
    uint64_t deadline;
    uint64_t seq; /* breaks ties: equal deadlines fire in the order added */
    size_t idx;   /* position in the heap, for O(log n) cancel */
    kt_timer_fn fn;
    void *data;
    struct kt_loop *loop;
};

struct post {
    kt_post_fn fn;
    void *data;
    struct post *next;
};

struct kt_loop {
    unsigned index;
    int epfd;
    int evfd;

    struct kt_io *ios;       /* live */
    struct kt_io *dead;      /* deleted during the current batch */
    bool dispatching;

    struct kt_timer **heap;
    size_t nheap, heap_cap;
    uint64_t timer_seq;

    /* The inbox. A mutex is enough: posts are short, and the eventfd write
     * happens only on the empty -> non-empty transition. */
    pthread_mutex_t inbox_lock;
    struct post *inbox_head, *inbox_tail;

    atomic_bool stop;
    kt_post_fn before_sleep;
    void *before_sleep_data;
};

static _Thread_local struct kt_loop *current_loop;

uint64_t kt_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct kt_loop *kt_loop_current(void)
{
    return current_loop;
}

unsigned kt_loop_index(const struct kt_loop *loop)
{
    return loop->index;
}

static void loop_wake(struct kt_loop *loop)
{
    uint64_t one = 1;
    ssize_t n;
    /* EAGAIN means the counter is already non-zero: the loop will wake. */
    do
        n = write(loop->evfd, &one, sizeof(one));
    while (n < 0 && errno == EINTR);
}

struct kt_loop *kt_loop_new(unsigned index)
{
    struct kt_loop *loop = kt_new(struct kt_loop);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};

    loop->index = index;
    loop->evfd = -1;
    loop->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (loop->epfd < 0) {
        kt_log(KT_LOG_ERROR, "loop %u: epoll_create1: %s", index, strerror(errno));
        goto fail;
    }
    loop->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->evfd < 0) {
        kt_log(KT_LOG_ERROR, "loop %u: eventfd: %s", index, strerror(errno));
        goto fail;
    }
    /* data.ptr NULL marks the inbox eventfd among the ready events. */
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, loop->evfd, &ev) < 0) {
        kt_log(KT_LOG_ERROR, "loop %u: epoll_ctl: %s", index, strerror(errno));
        goto fail;
    }
    pthread_mutex_init(&loop->inbox_lock, NULL);
    atomic_init(&loop->stop, false);
    return loop;

fail:
    if (loop->evfd >= 0)
        close(loop->evfd);
    if (loop->epfd >= 0)
        close(loop->epfd);
    free(loop);
    return NULL;
}

/* Pending posts are not run: their closures are dropped (whatever data they
 * own is the poster's to reclaim). Remaining ios and timers are freed, so
 * handles to them become invalid; descriptors are not closed. */
void kt_loop_free(struct kt_loop **loopp)
{
    struct kt_loop *loop = *loopp;
    if (!loop)
        return;
    kt_assert(current_loop != loop);

    for (struct kt_io *io = loop->ios, *next; io; io = next) {
        next = io->next;
        free(io);
    }
    for (struct kt_io *io = loop->dead, *next; io; io = next) {
        next = io->next;
        free(io);
    }
    for (size_t i = 0; i < loop->nheap; i++)
        free(loop->heap[i]);
    free(loop->heap);
    for (struct post *p = loop->inbox_head, *next; p; p = next) {
        next = p->next;
        free(p);
    }
    pthread_mutex_destroy(&loop->inbox_lock);
    close(loop->evfd);
    close(loop->epfd);
    free(loop);
    *loopp = NULL;
}

/* ---- ios ---- */

static uint32_t io_epoll_mask(unsigned events)
{
    uint32_t m = 0;
    /* RDHUP only with READ: level-triggered, an unread half-close would
     * otherwise wake the loop forever while the owner is not reading. */
    if (events & KT_IO_READ)
        m |= EPOLLIN | EPOLLRDHUP;
    if (events & KT_IO_WRITE)
        m |= EPOLLOUT;
    return m;
}

struct kt_io *kt_io_add(struct kt_loop *loop, int fd, unsigned events, kt_io_fn fn, void *data)
{
    struct kt_io *io;
    struct epoll_event ev;

    kt_assert(fn != NULL);
    io = kt_new(struct kt_io);
    io->loop = loop;
    io->fd = fd;
    io->events = events & (KT_IO_READ | KT_IO_WRITE);
    io->fn = fn;
    io->data = data;
    ev.events = io_epoll_mask(io->events);
    ev.data.ptr = io;
    if (epoll_ctl(loop->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
        kt_log(KT_LOG_ERROR, "loop %u: cannot watch fd %d: %s", loop->index, fd, strerror(errno));
        free(io);
        return NULL;
    }
    io->next = loop->ios;
    if (loop->ios)
        loop->ios->prev = io;
    loop->ios = io;
    return io;
}

void kt_io_set_events(struct kt_io *io, unsigned events)
{
    struct epoll_event ev;

    events &= KT_IO_READ | KT_IO_WRITE;
    kt_assert(!io->dead);
    if (events == io->events)
        return;
    ev.events = io_epoll_mask(events);
    ev.data.ptr = io;
    if (epoll_ctl(io->loop->epfd, EPOLL_CTL_MOD, io->fd, &ev) < 0)
        kt_log(KT_LOG_ERROR, "loop %u: cannot modify fd %d: %s", io->loop->index, io->fd,
               strerror(errno));
    io->events = events;
}

void kt_io_del(struct kt_io **iop)
{
    struct kt_io *io = *iop;
    struct kt_loop *loop;

    if (!io)
        return;
    *iop = NULL;
    kt_assert(!io->dead);
    loop = io->loop;
    /* The fd may already be closed by the owner: ENOENT/EBADF are harmless
     * because closing the last reference removed it from the epoll set. */
    epoll_ctl(loop->epfd, EPOLL_CTL_DEL, io->fd, NULL);

    if (io->prev)
        io->prev->next = io->next;
    else
        loop->ios = io->next;
    if (io->next)
        io->next->prev = io->prev;

    if (loop->dispatching) {
        io->dead = true;
        io->prev = NULL;
        io->next = loop->dead;
        loop->dead = io;
    } else {
        free(io);
    }
}

/* ---- timers: a binary min-heap ordered by (deadline, seq) ---- */

static bool timer_before(const struct kt_timer *a, const struct kt_timer *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static void heap_set(struct kt_loop *loop, size_t i, struct kt_timer *t)
{
    loop->heap[i] = t;
    t->idx = i;
}

static void heap_up(struct kt_loop *loop, size_t i)
{
    struct kt_timer *t = loop->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, loop->heap[parent]))
            break;
        heap_set(loop, i, loop->heap[parent]);
        i = parent;
    }
    heap_set(loop, i, t);
}

static void heap_down(struct kt_loop *loop, size_t i)
{
    struct kt_timer *t = loop->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, min = l;
        if (l >= loop->nheap)
            break;
        if (r < loop->nheap && timer_before(loop->heap[r], loop->heap[l]))
            min = r;
        if (!timer_before(loop->heap[min], t))
            break;
        heap_set(loop, i, loop->heap[min]);
        i = min;
    }
    heap_set(loop, i, t);
}

static void heap_remove(struct kt_loop *loop, size_t i)
{
    struct kt_timer *last = loop->heap[--loop->nheap];
    if (i == loop->nheap)
        return;
    heap_set(loop, i, last);
    /* The moved element may belong above or below its new position. */
    if (i > 0 && timer_before(last, loop->heap[(i - 1) / 2]))
        heap_up(loop, i);
    else
        heap_down(loop, i);
}

struct kt_timer *kt_timer_add(struct kt_loop *loop, uint64_t ms, kt_timer_fn fn, void *data)
{
    struct kt_timer *t = kt_new(struct kt_timer);

    kt_assert(fn != NULL);
    t->deadline = kt_now_ms() + ms;
    t->seq = loop->timer_seq++;
    t->fn = fn;
    t->data = data;
    t->loop = loop;
    if (loop->nheap == loop->heap_cap) {
        loop->heap_cap = loop->heap_cap ? loop->heap_cap * 2 : 16;
        loop->heap = kt_realloc(loop->heap, loop->heap_cap * sizeof(*loop->heap));
    }
    loop->nheap++;
    heap_set(loop, loop->nheap - 1, t);
    heap_up(loop, loop->nheap - 1);
    return t;
}

void kt_timer_cancel(struct kt_timer **tp)
{
    struct kt_timer *t = *tp;
    if (!t)
        return;
    *tp = NULL;
    kt_assert(t->idx < t->loop->nheap && t->loop->heap[t->idx] == t);
    heap_remove(t->loop, t->idx);
    free(t);
}

/* Runs the timers due at now. Timers added by a callback carry a later seq
 * and are left for the next pass, so a callback re-arming a 0 ms timer
 * cannot keep this pass from ending. */
static void loop_run_timers(struct kt_loop *loop, uint64_t now)
{
    uint64_t seq_limit = loop->timer_seq;

    while (loop->nheap > 0) {
        struct kt_timer *t = loop->heap[0];
        if (t->deadline > now || t->seq >= seq_limit)
            break;
        heap_remove(loop, 0);
        t->fn(loop, t->data);
        free(t);
    }
}

static int loop_timeout(const struct kt_loop *loop)
{
    uint64_t now, deadline;

    if (loop->nheap == 0)
        return -1;
    deadline = loop->heap[0]->deadline;
    now = kt_now_ms();
    if (deadline <= now)
        return 0;
    return deadline - now > INT_MAX ? INT_MAX : (int)(deadline - now);
}

/* ---- inbox ---- */

void kt_loop_post(struct kt_loop *loop, kt_post_fn fn, void *data)
{
    struct post *p = kt_new(struct post);
    bool was_empty;

    kt_assert(fn != NULL);
    p->fn = fn;
    p->data = data;
    pthread_mutex_lock(&loop->inbox_lock);
    was_empty = loop->inbox_head == NULL;
    if (loop->inbox_tail)
        loop->inbox_tail->next = p;
    else
        loop->inbox_head = p;
    loop->inbox_tail = p;
    pthread_mutex_unlock(&loop->inbox_lock);
    if (was_empty)
        loop_wake(loop);
}

/* Takes the whole inbox at once and runs it. Closures posted meanwhile
 * (also by these closures) find the inbox empty, write the eventfd again
 * and run in the next pass, so order is kept and none is missed. */
static void loop_run_posts(struct kt_loop *loop)
{
    struct post *p, *next;

    pthread_mutex_lock(&loop->inbox_lock);
    p = loop->inbox_head;
    loop->inbox_head = loop->inbox_tail = NULL;
    pthread_mutex_unlock(&loop->inbox_lock);
    for (; p; p = next) {
        next = p->next;
        p->fn(loop, p->data);
        free(p);
    }
}

static void loop_drain_eventfd(struct kt_loop *loop)
{
    uint64_t v;
    ssize_t n;
    do
        n = read(loop->evfd, &v, sizeof(v));
    while (n < 0 && errno == EINTR);
}

/* ---- running ---- */

void kt_loop_set_before_sleep(struct kt_loop *loop, kt_post_fn fn, void *data)
{
    loop->before_sleep = fn;
    loop->before_sleep_data = data;
}

void kt_loop_stop(struct kt_loop *loop)
{
    atomic_store(&loop->stop, true);
    loop_wake(loop);
}

static void loop_dispatch(struct kt_loop *loop, struct epoll_event *evs, int n)
{
    loop->dispatching = true;
    for (int i = 0; i < n; i++) {
        struct kt_io *io = evs[i].data.ptr;
        unsigned events = 0;

        if (!io) {
            /* The eventfd is drained before the inbox is taken (later in
             * this pass): a post arriving in between writes it again. */
            loop_drain_eventfd(loop);
            continue;
        }
        if (io->dead)
            continue;
        if (evs[i].events & EPOLLIN)
            events |= KT_IO_READ;
        if (evs[i].events & EPOLLOUT)
            events |= KT_IO_WRITE;
        if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            events |= KT_IO_HUP;
        /* Report only what is still requested (a previous callback of the
         * batch may have changed it), and hang-ups always. */
        events &= io->events | KT_IO_HUP;
        if (events)
            io->fn(loop, io->fd, events, io->data);
    }
    loop->dispatching = false;
    for (struct kt_io *io = loop->dead, *next; io; io = next) {
        next = io->next;
        free(io);
    }
    loop->dead = NULL;
}

static void loop_pass(struct kt_loop *loop)
{
    struct epoll_event evs[LOOP_MAX_EVENTS];
    int n;

    n = epoll_wait(loop->epfd, evs, LOOP_MAX_EVENTS, loop_timeout(loop));
    if (n < 0) {
        if (errno != EINTR)
            kt_log(KT_LOG_ERROR, "loop %u: epoll_wait: %s", loop->index, strerror(errno));
        n = 0;
    }
    loop_dispatch(loop, evs, n);
    loop_run_timers(loop, kt_now_ms());
    loop_run_posts(loop);
    if (loop->before_sleep)
        loop->before_sleep(loop, loop->before_sleep_data);
}

void kt_loop_run(struct kt_loop *loop)
{
    struct kt_loop *prev = current_loop;

    current_loop = loop;
    do
        loop_pass(loop);
    while (!atomic_load(&loop->stop));
    /* Cleared so the loop can be run again (tests, shutdown drains). */
    atomic_store(&loop->stop, false);
    current_loop = prev;
}
