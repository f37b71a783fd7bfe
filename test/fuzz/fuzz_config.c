/* libFuzzer target: the config loader (config_load on inih) on arbitrary INI text.
 * `make fuzz` runs it on test/fuzz/corpus/config/ (seeds: etc/sluice.ini and variants).
 *
 * Each input is written to a temporary file (in /dev/shm when it exists, else $TMPDIR or
 * /tmp; named after the process, removed after each input) and loaded twice:
 *   1. with a 1 KiB error buffer: either a config and the error buffer untouched, or NULL and
 *      "PATH:LINE: message", LINE a number no larger than the file's line count (never
 *      both, never neither);
 *   2. with a small exact-size error buffer (1..64 bytes, from the input): the same outcome,
 *      the message NUL-terminated inside the buffer (ASan flags any byte written past it).
 * An accepted config is checked against what config.h promises (at least one listener and
 * one backend, each backend with a valid name and host:port, a `default` tenant, values in
 * their documented ranges, finite numbers), then the admission tables the runtime builds
 * from it (admit_init, admit_routes_init) are built and freed, then config_free. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sluice/admit.h>
#include <sluice/config.h>

#include "fuzz_common.h"

static char path[256];

static void make_path(void)
{
    if (path[0])
        return;
    const char *dir = "/dev/shm";
    if (access(dir, W_OK) != 0) {
        dir = getenv("TMPDIR");
        if (!dir || !*dir)
            dir = "/tmp";
    }
    snprintf(path, sizeof path, "%s/sluice-fuzz-config-%ld.ini", dir, (long)getpid());
}

static void write_file(const uint8_t *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    FUZZ_CHECK(fd >= 0, "cannot create %s: %s", path, strerror(errno));
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        FUZZ_CHECK(w > 0, "write %s: %s", path, strerror(errno));
        off += (size_t)w;
    }
    close(fd);
}

/* Lines as the loader counts them (one per fgets up to a newline). */
static long count_lines(const uint8_t *d, size_t n)
{
    long lines = 0;
    for (size_t i = 0; i < n; i++)
        lines += d[i] == '\n';
    return lines + (n && d[n - 1] != '\n');
}

static int valid_name(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63)
        return 0;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '-' || *s == '_' || *s == '.'))
            return 0;
    return 1;
}

static void check_error(const char *err, const uint8_t *data, size_t len)
{
    size_t pl = strlen(path);
    FUZZ_CHECK(strncmp(err, path, pl) == 0 && err[pl] == ':',
               "error does not start with the path: \"%s\"", err);
    const char *p = err + pl + 1;
    long line = 0;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
        line = line * 10 + (*p++ - '0');
        if (++digits > 9)
            break;
    }
    FUZZ_CHECK(digits > 0 && digits <= 9 && p[0] == ':' && p[1] == ' ' && p[2] != '\0',
               "error is not PATH:LINE: message: \"%s\"", err);
    if (!memchr(data, 0, len)) /* a NUL byte cuts a line short for fgets+strlen */
        FUZZ_CHECK(line <= count_lines(data, len), "error names line %ld of a %ld-line file: %s",
                   line, count_lines(data, len), err);
}

static int in(long long v, long long lo, long long hi)
{
    return v >= lo && v <= hi;
}

static int fin(double v, double lo, double hi)
{
    return isfinite(v) && v >= lo && v <= hi;
}

static void check_config(const struct config *c)
{
    FUZZ_CHECK(c->path && strcmp(c->path, path) == 0, "config path");
    const struct proxy_conf *p = &c->proxy;
    FUZZ_CHECK(p->listen.n + p->tls_listen.n >= 1, "no listener accepted");
    FUZZ_CHECK(p->listen.n <= CONFIG_MAX_LIST && p->tls_listen.n <= CONFIG_MAX_LIST &&
                   p->tls_cert.n <= CONFIG_MAX_LIST && p->tls_key.n <= CONFIG_MAX_LIST,
               "list over CONFIG_MAX_LIST");
    for (size_t i = 0; i < p->listen.n; i++)
        FUZZ_CHECK(p->listen.v[i] && *p->listen.v[i], "empty listen");
    FUZZ_CHECK(p->tls_cert.n == p->tls_key.n, "tls_cert/tls_key unpaired");
    FUZZ_CHECK(in(p->threads, 0, 256), "threads %d", p->threads);
    FUZZ_CHECK(p->max_header_size >= 1024 && p->max_header_size <= 1 << 20 &&
                   p->max_line_size >= 256 && p->max_line_size <= 1 << 20 &&
                   in(p->max_headers, 1, 1000),
               "head limits out of range");
    FUZZ_CHECK(in(p->retries, 0, 5) && in(p->log_level, 0, 3), "retries/log_level");
    FUZZ_CHECK(c->nbackends >= 1 && c->backends, "no backend accepted");
    for (size_t i = 0; i < c->nbackends; i++) {
        const struct backend_conf *b = &c->backends[i];
        FUZZ_CHECK(valid_name(b->name), "backend name \"%s\"", b->name ? b->name : "(null)");
        FUZZ_CHECK(b->address && strrchr(b->address, ':'), "backend %s address", b->name);
        FUZZ_CHECK(in(b->weight, 1, 1000) && in(b->workers, -1, 100000) &&
                       in(b->workers_min, 1, 100000) && in(b->workers_max, 1, 100000) &&
                       b->workers_min <= b->workers_max && in(b->max_fails, 0, 1000) &&
                       in(b->keepalive, -1, 10000) && in(b->rise, 1, 100) && in(b->fall, 1, 100) &&
                       in(b->health_status, 100, 599),
                   "backend %s: a value out of range", b->name);
        FUZZ_CHECK(!b->health_check || b->health_check[0] == '/', "health_check");
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(c->backends[j].name, b->name) != 0, "backend %s twice", b->name);
    }
    int has_default = 0;
    for (size_t i = 0; i < c->ntenants; i++) {
        const struct tenant_conf *t = &c->tenant[i];
        FUZZ_CHECK(valid_name(t->name), "tenant name");
        has_default |= strcmp(t->name, "default") == 0;
        FUZZ_CHECK(fin(t->rate, 0, 1000000), "[tenant %s] rate = %g accepted", t->name, t->rate);
        FUZZ_CHECK(in(t->burst, 1, 1000000) && in(t->weight, 1, 1000) &&
                       in(t->max_inflight, 0, 1000000) && in(t->max_queue, 0, 1000000),
                   "tenant %s: a value out of range", t->name);
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(c->tenant[j].name, t->name) != 0, "tenant %s twice", t->name);
    }
    FUZZ_CHECK(has_default, "no default tenant");
    for (size_t i = 0; i < c->nroutes; i++)
        FUZZ_CHECK(valid_name(c->routes[i].name) && c->routes[i].prefix &&
                       c->routes[i].prefix[0] == '/',
                   "route");
    FUZZ_CHECK(in(c->tenants.max_tracked, 0, 1000000), "max_tracked");
    FUZZ_CHECK(!c->tenants.hmac_key || strlen(c->tenants.hmac_key) >= 16, "hmac_key");
    FUZZ_CHECK(in(c->queue_max, 0, 1000000), "queue max");
    const struct scale_conf *s = &c->scale.c;
    FUZZ_CHECK(fin(s->margin, 1, 3) && fin(s->quantile, 0, 1) && fin(s->epsilon, 0, 1) &&
                   fin(s->step, 0, 1) && fin(s->down_utilisation, 0, 1) &&
                   fin(s->db_share, 0, 1),
               "a [scale] number out of range or not finite");
    if (c->redis.url)
        FUZZ_CHECK(c->redis.host && in(c->redis.port, 1, 65535), "redis url fields");
    if (c->admin.listen && c->admin.token)
        FUZZ_CHECK(strlen(c->admin.token) >= 16, "short admin token accepted");
}

/* The admission tables runtime_load builds from a config (no sockets, no DNS). */
static void build_admission(const struct config *c)
{
    struct tenants_conf tc = c->tenants;
    if (tc.max_tracked > 1000)
        tc.max_tracked = 1000; /* the table's size is not what is tested here */
    struct admit a;
    memset(&a, 0, sizeof a);
    if (admit_init(&a, &tc, c->tenant, (int)c->ntenants, NULL) == 0) {
        if (admit_routes_init(&a, c->routes, (int)c->nroutes, NULL) == 0)
            FUZZ_CHECK(a.nr == (int)c->nroutes, "route states");
        admit_free(&a);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    if (len > 16384)
        return 0; /* configs are small; keep it fast */
    make_path();
    write_file(data, len);

    char err[1024];
    memset(err, 0, sizeof err);
    struct config *cfg = config_load(path, err, sizeof err);
    FUZZ_CHECK(memchr(err, 0, sizeof err), "error not NUL-terminated");
    if (cfg) {
        FUZZ_CHECK(err[0] == '\0', "a config and an error message: \"%s\"", err);
        check_config(cfg);
        build_admission(cfg);
    } else {
        FUZZ_CHECK(err[0] != '\0', "neither a config nor an error message");
        check_error(err, data, len);
    }

    /* the same file with a tiny error buffer: same outcome, no overflow */
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ data[i]) * 16777619u;
    size_t small = 1 + h % 64;
    char *e2 = malloc(small);
    FUZZ_CHECK(e2 != NULL, "oom");
    memset(e2, 0, small);
    struct config *cfg2 = config_load(path, e2, small);
    FUZZ_CHECK(!cfg == !cfg2, "loading the same file twice: %s then %s", cfg ? "ok" : "error",
               cfg2 ? "ok" : "error");
    FUZZ_CHECK(memchr(e2, 0, small), "small error buffer not NUL-terminated");
    if (!cfg2 && !cfg) {
        const char *colon = strchr(err + strlen(path) + 1, ':'); /* PATH:LINE: */
        size_t pre = colon ? (size_t)(colon - err) + 2 : 0;
        if (pre && pre < small) /* room for the prefix: a truncation of the same message */
            FUZZ_CHECK(strncmp(e2, err, small - 1) == 0,
                       "small-buffer message \"%s\" is not a prefix of \"%s\"", e2, err);
    }
    free(e2);
    config_free(cfg2);
    config_free(cfg);
    unlink(path); /* libFuzzer may leave with _exit: no file stays behind */
    return 0;
}
