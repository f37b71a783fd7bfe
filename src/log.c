/* log: error and access logs. Lines are written with one write(2) each on O_APPEND
 * descriptors, so threads never interleave; reopen swaps the file under the same
 * descriptor number with dup2(), which is atomic for concurrent writers. */
#include <sluice/log.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[] = {"error", "warn", "info", "debug"};

struct logfile {
    char *path; /* owned; NULL = the fd is a standard stream */
    int fd;     /* -1 = closed */
};

static struct logfile err_log = {NULL, 2};
static struct logfile acc_log = {NULL, -1};
static int log_level = LOG_INFO;

static int open_path(const char *path)
{
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static int logfile_set(struct logfile *lf, const char *path, int std_fd)
{
    if (!path) {
        lf->fd = std_fd;
        return 0;
    }
    if (strcmp(path, "-") == 0 || strcmp(path, "stdout") == 0) {
        lf->fd = 1;
        return 0;
    }
    if (strcmp(path, "stderr") == 0) {
        lf->fd = 2;
        return 0;
    }
    int fd = open_path(path);
    if (fd < 0) {
        fprintf(stderr, "error log: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    free(lf->path);
    lf->path = strdup(path);
    lf->fd = fd;
    return 0;
}

int log_open(const char *error_log, const char *access_log, int level)
{
    log_level = level;
    if (logfile_set(&err_log, error_log, 2) < 0)
        return -1;
    return logfile_set(&acc_log, access_log, -1);
}

static int logfile_reopen(struct logfile *lf)
{
    if (!lf->path)
        return 0;
    int fd = open_path(lf->path);
    if (fd < 0)
        return -1;
    int rc = dup2(fd, lf->fd) < 0 ? -1 : 0;
    close(fd);
    return rc;
}

int log_reopen(void)
{
    int rc = logfile_reopen(&err_log);
    if (logfile_reopen(&acc_log) < 0)
        rc = -1;
    return rc;
}

static void logfile_close(struct logfile *lf)
{
    if (lf->path && lf->fd > 2)
        close(lf->fd);
    free(lf->path);
    lf->path = NULL;
}

void log_close(void)
{
    logfile_close(&acc_log);
    acc_log.fd = -1;
    logfile_close(&err_log);
    err_log.fd = 2;
}

size_t log_time(char *buf, size_t len)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%dT%H:%M:%S", &tm);
    n += (size_t)snprintf(buf + n, len - n, ".%03ldZ", ts.tv_nsec / 1000000);
    return n < len ? n : len - 1;
}

/* 0, or the errno of a failed write (the rest of buf is dropped: a full disk must not stop
 * the proxy). */
static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t w = write(fd, buf, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return w < 0 ? errno : EIO;
        buf += w;
        len -= (size_t)w;
    }
    return 0;
}

static atomic_uint_fast64_t access_lost;   /* access-log lines that could not be written */
static atomic_uint_fast64_t access_warned; /* the second when that was last reported */

/* A lost access-log line: said in the error log at most once a minute, with the count. */
static void access_failed(int e)
{
    uint64_t lost = atomic_fetch_add(&access_lost, 1) + 1;
    uint64_t now = (uint64_t)time(NULL), last = atomic_load(&access_warned);
    if ((last && now < last + 60) || !atomic_compare_exchange_strong(&access_warned, &last, now))
        return;
    log_msg(LOG_ERROR, "log", "access_log %s: write failed: %s (%llu lines lost so far; "
            "requests are served, the log is not)", acc_log.path ? acc_log.path : "-",
            strerror(e), (unsigned long long)lost);
}

uint64_t log_access_lost(void)
{
    return atomic_load(&access_lost);
}

void log_msg(int level, const char *module, const char *fmt, ...)
{
    if (level > log_level || err_log.fd < 0)
        return;
    char line[2048];
    size_t n = log_time(line, sizeof line);
    n += (size_t)snprintf(line + n, sizeof line - n, " %s %s: ", level_names[level], module);
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (m < 0)
        m = 0;
    n += (size_t)m;
    if (n > sizeof line - 2)
        n = sizeof line - 2;
    line[n++] = '\n';
    write_all(err_log.fd, line, n);
}

int log_access_enabled(void)
{
    return acc_log.fd >= 0;
}

void log_access(const char *line, size_t len)
{
    int e = acc_log.fd >= 0 ? write_all(acc_log.fd, line, len) : 0;
    if (e)
        access_failed(e);
}
