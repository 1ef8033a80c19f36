/* Admin socket. Requests are tiny and local, so each client gets a short
 * line-based exchange: read one command line (at most ADMIN_LINE_MAX bytes),
 * answer, close. "dbping" goes through the worker pool like any other
 * database work, so it waits while MariaDB is away and answers after the
 * reconnect: it tests the server's own database path. The socket file is
 * created 0600: status is for the operator only. */
#include "config.h"
#include "core/admin.h"

#include <kontalk/job.h>
#include <kontalk/log.h>
#include <kontalk/loop.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define ADMIN_LINE_MAX 256

struct kt_admin {
    struct kt_server *srv;
    char *path;
    int fd;
    struct kt_loop *loop;
    struct kt_io *io;
};

struct admin_client {
    struct kt_admin *admin;
    int fd;
    struct kt_io *io;
    char line[ADMIN_LINE_MAX];
    size_t len;
    int rc;             /* dbping result */
    uint64_t started_ms;
};

static int make_addr(const char *path, struct sockaddr_un *sa)
{
    memset(sa, 0, sizeof(*sa));
    sa->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof(sa->sun_path))
        return -1;
    strcpy(sa->sun_path, path);
    return 0;
}

struct kt_admin *kt_admin_new(struct kt_server *srv, const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sa;
    if (make_addr(path, &sa) < 0) {
        snprintf(err, errlen, "admin socket path too long: %s", path);
        return NULL;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "admin socket: %s", strerror(errno));
        return NULL;
    }
    /* Replace a stale socket file, but never steal one a live server answers on. */
    int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
        close(probe);
        close(fd);
        snprintf(err, errlen, "admin socket %s: another kontalkd is running", path);
        return NULL;
    }
    if (probe >= 0)
        close(probe);
    unlink(path);
    mode_t old = umask(077);
    int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
    umask(old);
    if (rc < 0 || listen(fd, 16) < 0) {
        snprintf(err, errlen, "admin socket %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    struct kt_admin *admin = kt_new(struct kt_admin);
    admin->srv = srv;
    admin->path = kt_strdup(path);
    admin->fd = fd;
    return admin;
}

static void client_close(struct admin_client *c)
{
    kt_io_del(&c->io);
    close(c->fd);
    free(c);
}

/* Replies are a few hundred bytes: one blocking write with a send timeout
 * is simpler than output buffering and cannot stall the loop for long. */
static void client_reply(struct admin_client *c, const char *text, size_t len)
{
    struct timeval tv = {.tv_sec = 1};
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    int fl = fcntl(c->fd, F_GETFL);
    fcntl(c->fd, F_SETFL, fl & ~O_NONBLOCK);
    while (len > 0) {
        ssize_t n = write(c->fd, text, len);
        if (n <= 0)
            break;
        text += n;
        len -= (size_t)n;
    }
}

static void dbping_run(struct kt_db *db, void *data)
{
    struct admin_client *c = data;
    c->rc = kt_db_exec_text(db, "SELECT 1");
}

static void dbping_done(void *data)
{
    struct admin_client *c = data;
    char msg[128];
    int n = snprintf(msg, sizeof(msg), c->rc == 0 ? "database ok (%llu ms)\n" : "database error\n",
                     (unsigned long long)(kt_now_ms() - c->started_ms));
    client_reply(c, msg, (size_t)n);
    client_close(c);
}

static void client_command(struct admin_client *c)
{
    struct kt_buf out = {0};
    if (strcmp(c->line, "status") == 0) {
        kt_server_status(c->admin->srv, &out);
    } else if (strcmp(c->line, "dbping") == 0) {
        /* The client waits; its fd is not watched meanwhile. */
        kt_io_del(&c->io);
        c->started_ms = kt_now_ms();
        kt_job_submit(c->admin->srv->core.workers, NULL, dbping_run, dbping_done, c);
        return;
    } else {
        kt_buf_printf(&out, "error: unknown command (try: status, dbping)\n");
    }
    client_reply(c, out.data, out.len);
    kt_buf_free(&out);
    client_close(c);
}

static void client_readable(struct kt_loop *loop, int fd, unsigned events, void *data)
{
    (void)loop;
    struct admin_client *c = data;
    ssize_t n = read(fd, c->line + c->len, sizeof(c->line) - 1 - c->len);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    (void)events;
    if (n <= 0) {
        client_close(c);
        return;
    }
    c->len += (size_t)n;
    c->line[c->len] = '\0';
    char *nl = strchr(c->line, '\n');
    if (!nl) {
        if (c->len == sizeof(c->line) - 1) {
            static const char msg[] = "error: line too long\n";
            client_reply(c, msg, sizeof(msg) - 1);
            client_close(c);
        }
        return;
    }
    *nl = '\0';
    if (nl > c->line && nl[-1] == '\r')
        nl[-1] = '\0';
    client_command(c);
}

static void admin_accept(struct kt_loop *loop, int fd, unsigned events, void *data)
{
    (void)events;
    struct kt_admin *admin = data;
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (cfd < 0)
            return;
        struct admin_client *c = kt_new(struct admin_client);
        c->admin = admin;
        c->fd = cfd;
        c->io = kt_io_add(loop, cfd, KT_IO_READ, client_readable, c);
    }
}

static void admin_start_on_loop(struct kt_loop *loop, void *data)
{
    struct kt_admin *admin = data;
    admin->io = kt_io_add(loop, admin->fd, KT_IO_READ, admin_accept, admin);
}

void kt_admin_start(struct kt_admin *admin, struct kt_loop *loop)
{
    admin->loop = loop;
    kt_loop_post(loop, admin_start_on_loop, admin);
}

void kt_admin_free(struct kt_admin **adminp)
{
    struct kt_admin *admin = *adminp;
    if (!admin)
        return;
    kt_io_del(&admin->io);
    close(admin->fd);
    unlink(admin->path);
    free(admin->path);
    free(admin);
    *adminp = NULL;
}
