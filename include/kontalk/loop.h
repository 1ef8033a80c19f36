/* Event loops: one per I/O thread, each with epoll, a timer heap and an
 * eventfd inbox that other threads post closures to. A connection (fd)
 * belongs to one loop for its whole life. Except kt_loop_post() (any
 * thread), every function must be called on the loop's own thread. */
#ifndef KONTALK_LOOP_H
#define KONTALK_LOOP_H

#include "base.h"
#include <stdint.h>

enum kt_io_events {
    KT_IO_READ = 1u << 0,
    KT_IO_WRITE = 1u << 1,
    KT_IO_HUP = 1u << 2, /* hang-up or error; reported, never requested */
};

struct kt_loop;
struct kt_io;
struct kt_timer;

typedef void (*kt_io_fn)(struct kt_loop *loop, int fd, unsigned events, void *data);
typedef void (*kt_timer_fn)(struct kt_loop *loop, void *data);
typedef void (*kt_post_fn)(struct kt_loop *loop, void *data);

KT_API struct kt_loop *kt_loop_new(unsigned index);
KT_API void kt_loop_free(struct kt_loop **loop);
/* Runs until kt_loop_stop(); call on the owning thread. */
KT_API void kt_loop_run(struct kt_loop *loop);
/* Any thread: makes kt_loop_run return after the current pass. */
KT_API void kt_loop_stop(struct kt_loop *loop);
KT_API unsigned kt_loop_index(const struct kt_loop *loop);
/* The loop running on this thread, or NULL (workers, main thread). */
KT_API struct kt_loop *kt_loop_current(void);

KT_API struct kt_io *kt_io_add(struct kt_loop *loop, int fd, unsigned events, kt_io_fn fn,
                               void *data);
KT_API void kt_io_set_events(struct kt_io *io, unsigned events);
/* Stops watching (does not close fd); sets *io to NULL. Safe inside the io's callback. */
KT_API void kt_io_del(struct kt_io **io);

/* One-shot timer, ms from now. */
KT_API struct kt_timer *kt_timer_add(struct kt_loop *loop, uint64_t ms, kt_timer_fn fn,
                                     void *data);
/* Cancels a pending timer; sets *t to NULL. Do not call on a timer that already fired. */
KT_API void kt_timer_cancel(struct kt_timer **t);

/* Any thread: runs fn(loop, data) on loop's thread, in posting order. */
KT_API void kt_loop_post(struct kt_loop *loop, kt_post_fn fn, void *data);
/* Called once per loop pass after events are handled (flush pending output). */
KT_API void kt_loop_set_before_sleep(struct kt_loop *loop, kt_post_fn fn, void *data);

/* Monotonic milliseconds. */
KT_API uint64_t kt_now_ms(void);

#endif
