/* Unit tests for the event loop: io callbacks on socketpairs, deleting ios
 * from callbacks (own and another of the same batch), timer order and
 * cancel, posts from several threads, stop from another thread and the
 * before-sleep hook. */
#include "config.h"
#include <kontalk/loop.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tap.h"

int main(void);

/* A watchdog so a broken loop fails the test instead of hanging it. */
static void watchdog(struct kt_loop *loop, void *data)
{
    (void)data;
    diag("watchdog fired: loop did not stop in time");
    ok(0, "watchdog");
    kt_loop_stop(loop);
}

/* ---- io ---- */

struct io_state {
    struct kt_io *io;
    int reads;
    unsigned last_events;
    char buf[16];
    bool del_self;
};

static void on_read(struct kt_loop *loop, int fd, unsigned events, void *data)
{
    struct io_state *s = data;
    ssize_t n;

    s->last_events = events;
    if (events & KT_IO_READ) {
        n = read(fd, s->buf, sizeof(s->buf) - 1);
        if (n > 0)
            s->buf[n] = '\0';
    }
    s->reads++;
    if (s->del_self) {
        kt_io_del(&s->io);
        ok(s->io == NULL, "kt_io_del sets the handle to NULL inside the callback");
    }
    kt_loop_stop(loop);
}

static void test_io_basic(void)
{
    struct kt_loop *loop = kt_loop_new(3);
    struct io_state s = {0};
    struct kt_timer *wd;
    int sv[2];

    ok(loop != NULL, "loop created");
    is_int(kt_loop_index(loop), 3, "loop index");
    ok(kt_loop_current() == NULL, "no current loop outside run");
    ok(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0, "socketpair");

    s.io = kt_io_add(loop, sv[0], KT_IO_READ, on_read, &s);
    ok(s.io != NULL, "io added");
    ok(kt_io_add(loop, -1, KT_IO_READ, on_read, &s) == NULL, "bad fd refused");
    ok(write(sv[1], "hello", 5) == 5, "write");
    wd = kt_timer_add(loop, 5000, watchdog, NULL);
    kt_loop_run(loop);
    is_int(s.reads, 1, "read callback ran once");
    is_str(s.buf, "hello", "callback read the data");
    is_int(s.last_events, KT_IO_READ, "only READ reported");

    /* Write readiness: a fresh socket is writable at once. */
    kt_io_set_events(s.io, KT_IO_WRITE);
    kt_loop_run(loop);
    is_int(s.reads, 2, "write callback ran");
    is_int(s.last_events, KT_IO_WRITE, "WRITE reported, READ not requested");

    /* Peer closes: reported as HUP (with READ, because EOF is readable). */
    kt_io_set_events(s.io, KT_IO_READ);
    close(sv[1]);
    s.del_self = true;
    kt_loop_run(loop);
    is_int(s.reads, 3, "hang-up callback ran");
    ok(s.last_events & KT_IO_HUP, "HUP reported on peer close");

    kt_timer_cancel(&wd);
    ok(wd == NULL, "cancel sets the handle to NULL");
    close(sv[0]);
    kt_loop_free(&loop);
    ok(loop == NULL, "kt_loop_free sets the pointer to NULL");
}

/* Two ios ready in the same batch: whichever runs first deletes both. The
 * other must not be called (it would read a freed io under ASan). */
struct pair_state {
    struct kt_io *io[2];
    int calls[2];
};

static void on_pair(struct kt_loop *loop, int fd, unsigned events, void *data);

static struct pair_state pair;

static void on_pair(struct kt_loop *loop, int fd, unsigned events, void *data)
{
    int i = (int)(intptr_t)data;
    (void)fd;
    (void)events;
    pair.calls[i]++;
    kt_io_del(&pair.io[0]);
    kt_io_del(&pair.io[1]);
    kt_loop_stop(loop);
}

static void test_io_del_batch(void)
{
    struct kt_loop *loop = kt_loop_new(0);
    int a[2], b[2];
    struct kt_timer *wd;

    ok(socketpair(AF_UNIX, SOCK_STREAM, 0, a) == 0 && socketpair(AF_UNIX, SOCK_STREAM, 0, b) == 0,
       "socketpairs");
    pair.io[0] = kt_io_add(loop, a[0], KT_IO_READ, on_pair, (void *)(intptr_t)0);
    pair.io[1] = kt_io_add(loop, b[0], KT_IO_READ, on_pair, (void *)(intptr_t)1);
    ok(write(a[1], "x", 1) == 1 && write(b[1], "y", 1) == 1, "both readable");
    wd = kt_timer_add(loop, 5000, watchdog, NULL);
    kt_loop_run(loop);
    is_int(pair.calls[0] + pair.calls[1], 1, "a deleted io of the same batch is not called");
    ok(pair.io[0] == NULL && pair.io[1] == NULL, "both handles cleared");

    /* Outside any callback, deletion frees at once; NULL is a no-op. */
    struct kt_io *io = kt_io_add(loop, a[0], KT_IO_READ, on_pair, NULL);
    kt_io_del(&io);
    kt_io_del(&io);
    ok(io == NULL, "del outside a batch, twice is harmless");

    /* An io left registered is freed by kt_loop_free (valgrind checks). */
    io = kt_io_add(loop, b[0], 0, on_pair, NULL);
    ok(io != NULL, "io with no events");
    kt_timer_cancel(&wd);
    kt_loop_free(&loop);
    close(a[0]);
    close(a[1]);
    close(b[0]);
    close(b[1]);
}

/* ---- timers ---- */

struct timer_log {
    int order[64];
    int n;
};
static struct timer_log tlog;

static void on_timer(struct kt_loop *loop, void *data)
{
    (void)loop;
    tlog.order[tlog.n++] = (int)(intptr_t)data;
}

static void on_timer_stop(struct kt_loop *loop, void *data)
{
    on_timer(loop, data);
    kt_loop_stop(loop);
}

static void test_timers(void)
{
    struct kt_loop *loop = kt_loop_new(0);
    struct kt_timer *t[16];
    uint64_t start;

    /* Deadlines 30, 10, 20, 10, 10, 0 ms; cancel the 20 and one 10. The
     * clock is read before the timers are added: their deadlines count from
     * then (under valgrind, adding them takes milliseconds). */
    start = kt_now_ms();
    t[0] = kt_timer_add(loop, 30, on_timer, (void *)1);
    t[1] = kt_timer_add(loop, 10, on_timer, (void *)2);
    t[2] = kt_timer_add(loop, 20, on_timer, (void *)3);
    t[3] = kt_timer_add(loop, 10, on_timer, (void *)4);
    t[4] = kt_timer_add(loop, 10, on_timer, (void *)5);
    t[5] = kt_timer_add(loop, 0, on_timer, (void *)6);
    t[6] = kt_timer_add(loop, 40, on_timer_stop, (void *)7);
    kt_timer_cancel(&t[2]);
    kt_timer_cancel(&t[3]);
    ok(t[2] == NULL && t[3] == NULL, "cancelled handles cleared");
    kt_loop_run(loop);
    ok(kt_now_ms() - start >= 40, "the 40 ms timer did not fire early (%llu ms)",
       (unsigned long long)(kt_now_ms() - start));
    is_int(tlog.n, 5, "five timers fired");
    is_int(tlog.order[0], 6, "0 ms first");
    is_int(tlog.order[1], 2, "equal deadlines: first added first");
    is_int(tlog.order[2], 5, "equal deadlines: then the next (4 cancelled)");
    is_int(tlog.order[3], 1, "30 ms");
    is_int(tlog.order[4], 7, "40 ms last");

    /* Many timers with random-ish deadlines and cancels keep heap order. */
    tlog.n = 0;
    unsigned seed = 12345;
    struct kt_timer *many[40];
    int deadline[40];
    uint64_t added_from = kt_now_ms();
    for (int i = 0; i < 40; i++) {
        seed = seed * 1103515245u + 12345u;
        deadline[i] = (int)((seed >> 16) % 5);
        many[i] = kt_timer_add(loop, (uint64_t)deadline[i], on_timer, (void *)(intptr_t)i);
    }
    /* If the clock ticked while adding, relative deadlines no longer give
     * the exact order, so only the strict check is skipped. */
    bool same_ms = kt_now_ms() == added_from;
    for (int i = 0; i < 40; i += 3)
        kt_timer_cancel(&many[i]);
    kt_timer_add(loop, 10, on_timer_stop, (void *)(intptr_t)99);
    kt_loop_run(loop);
    int expected = 40 - 14 + 1, sorted = 1;
    is_int(tlog.n, expected, "all uncancelled timers fired");
    for (int i = 0; i + 1 < tlog.n - 1; i++) {
        int a = tlog.order[i], b = tlog.order[i + 1];
        if (a % 3 == 0)
            sorted = 0;
        if (same_ms && (deadline[a] > deadline[b] || (deadline[a] == deadline[b] && a > b)))
            sorted = 0;
    }
    ok(sorted, "fired in (deadline, insertion) order, none cancelled");

    /* Timers still pending at free are released (valgrind checks). */
    kt_timer_add(loop, 100000, on_timer, NULL);
    kt_loop_free(&loop);
}

/* ---- posts from other threads, stop from another thread ---- */

#define NPOSTERS 4
#define NPOSTS 5000

struct post_state {
    struct kt_loop *loop;
    int next[NPOSTERS];
    int bad_order;
    int total;
    int wrong_thread;
    int before_sleep;
    int posts_seen_at_sleep;
};
static struct post_state ps;

struct post_msg {
    int thread, seq;
};

static void on_post(struct kt_loop *loop, void *data)
{
    struct post_msg *m = data;
    if (kt_loop_current() != loop)
        ps.wrong_thread++;
    if (m->seq != ps.next[m->thread])
        ps.bad_order++;
    ps.next[m->thread] = m->seq + 1;
    ps.total++;
    free(m);
    if (ps.total == NPOSTERS * NPOSTS)
        kt_loop_stop(loop);
}

static void *poster(void *arg)
{
    int id = (int)(intptr_t)arg;
    for (int i = 0; i < NPOSTS; i++) {
        struct post_msg *m = malloc(sizeof(*m));
        m->thread = id;
        m->seq = i;
        kt_loop_post(ps.loop, on_post, m);
    }
    return NULL;
}

static void on_before_sleep(struct kt_loop *loop, void *data)
{
    (void)loop;
    if (data == &ps)
        ps.before_sleep++;
}

static void test_posts(void)
{
    pthread_t th[NPOSTERS];
    struct kt_timer *wd;

    ps.loop = kt_loop_new(1);
    kt_loop_set_before_sleep(ps.loop, on_before_sleep, &ps);
    for (int i = 0; i < NPOSTERS; i++)
        pthread_create(&th[i], NULL, poster, (void *)(intptr_t)i);
    wd = kt_timer_add(ps.loop, 10000, watchdog, NULL);
    kt_loop_run(ps.loop);
    for (int i = 0; i < NPOSTERS; i++)
        pthread_join(th[i], NULL);
    is_int(ps.total, NPOSTERS * NPOSTS, "every post arrived");
    is_int(ps.bad_order, 0, "per-thread posting order kept");
    is_int(ps.wrong_thread, 0, "posts ran with kt_loop_current() == loop");
    ok(ps.before_sleep >= 1, "before_sleep called (%d passes)", ps.before_sleep);
    kt_timer_cancel(&wd);

    /* Posts never run by a freed loop are dropped without leaking nodes. */
    kt_loop_post(ps.loop, on_post, NULL);
    kt_loop_free(&ps.loop);
}

static atomic_int stopper_go;

static void *stopper(void *arg)
{
    struct kt_loop *loop = arg;
    while (!atomic_load(&stopper_go))
        usleep(1000);
    usleep(20000);
    kt_loop_stop(loop);
    return NULL;
}

static void on_started(struct kt_loop *loop, void *data)
{
    int *passes = data;
    (void)loop;
    atomic_store(&stopper_go, 1);
    (*passes)++;
}

static void count_pass(struct kt_loop *loop, void *data)
{
    (void)loop;
    (*(int *)data)++;
}

static void test_stop_other_thread(void)
{
    struct kt_loop *loop = kt_loop_new(2);
    pthread_t th;
    int started = 0, passes = 0;
    struct kt_timer *wd;
    uint64_t t0;

    kt_loop_set_before_sleep(loop, count_pass, &passes);
    pthread_create(&th, NULL, stopper, loop);
    kt_loop_post(loop, on_started, &started);
    wd = kt_timer_add(loop, 10000, watchdog, NULL);
    t0 = kt_now_ms();
    kt_loop_run(loop);
    pthread_join(th, NULL);
    is_int(started, 1, "post ran before stop");
    ok(kt_now_ms() - t0 < 5000, "stop from another thread woke the idle loop");
    ok(passes >= 2 && passes < 100, "loop slept while idle (%d passes)", passes);
    ok(kt_loop_current() == NULL, "current loop reset after run");
    kt_timer_cancel(&wd);
    kt_loop_free(&loop);
}

int main(void)
{
    uint64_t a = kt_now_ms();
    usleep(2000);
    ok(kt_now_ms() >= a + 1, "kt_now_ms advances");

    test_io_basic();
    test_io_del_batch();
    test_timers();
    test_posts();
    test_stop_other_thread();
    return done_testing();
}
