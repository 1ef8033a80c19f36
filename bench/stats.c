/* stats.c: latency samples and percentiles, the bench's own CPU time, a server's RSS.
 *
 * Latencies are kept as exact microsecond samples (4 bytes each: a million messages cost 4 MB),
 * one array per thread merged at the end, so percentiles are exact rather than bucketed.
 * Percentiles use the nearest-rank method.  RSS comes from /proc/PID/status (VmRSS) summed over
 * the process and its descendants, because some servers (ejabberd) run helper processes.
 */
#include "config.h"

#include "bench.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>

void samples_add(struct samples *s, uint64_t ns)
{
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 4096;
        s->v = bench_realloc(s->v, s->cap * sizeof(*s->v));
    }
    uint64_t us = ns / 1000;
    s->v[s->n++] = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
}

void samples_merge(struct samples *into, const struct samples *from)
{
    for (size_t i = 0; i < from->n; i++) {
        if (into->n == into->cap) {
            into->cap = into->cap ? into->cap * 2 : 4096;
            into->v = bench_realloc(into->v, into->cap * sizeof(*into->v));
        }
        into->v[into->n++] = from->v[i];
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

double samples_pct_ms(struct samples *s, double pct)
{
    if (s->n == 0)
        return NAN;
    qsort(s->v, s->n, sizeof(*s->v), cmp_u32);
    size_t rank = (size_t)ceil(pct / 100.0 * (double)s->n);
    if (rank < 1)
        rank = 1;
    if (rank > s->n)
        rank = s->n;
    return s->v[rank - 1] / 1000.0;
}

double samples_max_ms(const struct samples *s)
{
    uint32_t m = 0;
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i] > m)
            m = s->v[i];
    return s->n ? m / 1000.0 : NAN;
}

void samples_free(struct samples *s)
{
    free(s->v);
    memset(s, 0, sizeof(*s));
}

double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

static long rss_one(int pid, int *ppid_r)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = 0;
    *ppid_r = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strncmp(line, "VmRSS:", 6) == 0)
            kb = strtol(line + 6, NULL, 10);
        else if (strncmp(line, "PPid:", 5) == 0)
            *ppid_r = (int)strtol(line + 5, NULL, 10);
    }
    fclose(f);
    return kb;
}

/* user+system seconds of one process (all its threads), from /proc/PID/stat; -1 if gone. */
static double cpu_one(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    /* the command name may hold spaces and parentheses: fields start after the last ')' */
    char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (!p || sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double cpu_tree(const int *set, int n)
{
    double total = 0;
    for (int i = 0; i < n; i++) {
        double s = cpu_one(set[i]);
        if (s > 0)
            total += s;
    }
    return total;
}

/* VmRSS of pid plus every descendant (one pass over /proc per generation); with cpu_r, also
 * their CPU seconds (a process that ended before the call is not counted). */
static long proc_tree(int pid, double *cpu_r)
{
    int ppid;
    long total = rss_one(pid, &ppid);
    if (total < 0)
        return -1;
    int set[256], n = 1;
    set[0] = pid;
    for (int gen = 0; gen < 4; gen++) {
        DIR *dir = opendir("/proc");
        if (!dir)
            break;
        int added = 0;
        struct dirent *de;
        while ((de = readdir(dir)) && n < 256) {
            int p = atoi(de->d_name);
            if (p <= 0)
                continue;
            bool known = false;
            for (int i = 0; i < n; i++)
                known |= set[i] == p;
            if (known)
                continue;
            long kb = rss_one(p, &ppid);
            bool child = false;
            for (int i = 0; i < n; i++)
                child |= set[i] == ppid;
            if (kb >= 0 && child) {
                set[n++] = p;
                total += kb;
                added++;
            }
        }
        closedir(dir);
        if (!added)
            break;
    }
    if (cpu_r)
        *cpu_r = cpu_tree(set, n);
    return total;
}

long proc_rss_kb(int pid)
{
    return proc_tree(pid, NULL);
}

double proc_cpu_s(int pid)
{
    double cpu = -1;
    return proc_tree(pid, &cpu) < 0 ? -1 : cpu;
}

double server_cpu_s(void)
{
    if (!opt.server_pid)
        return -1;
    double total = proc_cpu_s(opt.server_pid);
    if (total < 0)
        return -1;
    for (int i = 0; i < opt.ncpu_pids; i++) {
        double s = proc_cpu_s(opt.cpu_pids[i]);
        if (s > 0)
            total += s;
    }
    return total;
}
