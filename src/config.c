/* config: INI (inih) into an immutable struct config. Every key is declared once in the
 * tables below with its type, default and bounds; errors name file:line, key and value.
 * It does not resolve addresses (upstream.c does) nor open sockets. */
#include <sluice/config.h>
#include <sluice/uri.h>

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <ini.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum key_type { K_STR, K_INT, K_DURATION, K_SIZE, K_THREADS, K_LEVEL, K_LIST, K_BOOL, K_DOUBLE,
                K_FAILURE, K_WORKERS, K_SCALE_MODE, K_RATE, K_AUTO_DURATION, K_KEEPALIVE };

struct key_def {
    const char *name;
    enum key_type type;
    size_t off;        /* offset in the section's struct */
    const char *dflt;  /* default as it would be written in the file; NULL = none */
    long long min, max;
};

#define P(f) offsetof(struct proxy_conf, f)
#define B(f) offsetof(struct backend_conf, f)

static const struct key_def proxy_keys[] = {
    {"listen", K_LIST, P(listen), NULL, 0, 0},
    {"tls_listen", K_LIST, P(tls_listen), NULL, 0, 0},
    {"tls_cert", K_LIST, P(tls_cert), NULL, 0, 0},
    {"tls_key", K_LIST, P(tls_key), NULL, 0, 0},
    {"tls_ciphers", K_STR, P(tls_ciphers),
     "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
     "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305",
     0, 0},
    {"redirect_http", K_BOOL, P(redirect_http), "no", 0, 1},
    {"http2", K_BOOL, P(http2), "yes", 0, 1},
    {"h2c", K_BOOL, P(h2c), "no", 0, 1},
    {"http2_max_streams", K_INT, P(http2_max_streams), "100", 1, 1000},
    {"threads", K_THREADS, P(threads), "auto", 1, 256},
    {"access_log", K_STR, P(access_log), NULL, 0, 0},
    {"error_log", K_STR, P(error_log), NULL, 0, 0},
    {"pid_file", K_STR, P(pid_file), NULL, 0, 0},
    {"client_header_timeout", K_DURATION, P(client_header_timeout_ms), "10s", 1, 3600000},
    {"client_body_timeout", K_DURATION, P(client_body_timeout_ms), "60s", 1, 3600000},
    {"keepalive_timeout", K_DURATION, P(keepalive_timeout_ms), "75s", 0, 3600000},
    {"send_timeout", K_DURATION, P(send_timeout_ms), "60s", 1, 3600000},
    {"shutdown_grace", K_DURATION, P(shutdown_grace_ms), "30s", 0, 3600000},
    {"max_header_size", K_SIZE, P(max_header_size), "16k", 1024, 1 << 20},
    {"max_line_size", K_SIZE, P(max_line_size), "8k", 256, 1 << 20},
    {"max_headers", K_INT, P(max_headers), "100", 1, 1000},
    {"max_body_size", K_SIZE, P(max_body_size), "1g", 0, 1LL << 50},
    {"request_buffer", K_SIZE, P(request_buffer), "1m", 0, 1LL << 30},
    {"buffer_memory", K_SIZE, P(buffer_memory), "128m", 1LL << 20, 1LL << 40},
    {"retries", K_INT, P(retries), "1", 0, 5},
    {"log_level", K_LEVEL, P(log_level), "info", 0, 3},
};

static const struct key_def backend_keys[] = {
    {"address", K_STR, B(address), NULL, 0, 0},
    {"weight", K_INT, B(weight), "1", 1, 1000},
    {"workers", K_WORKERS, B(workers), "0", 0, 100000},
    {"workers_min", K_INT, B(workers_min), "1", 1, 100000},
    {"workers_max", K_INT, B(workers_max), "64", 1, 100000},
    {"max_fails", K_INT, B(max_fails), "1", 0, 1000},
    {"fail_timeout", K_DURATION, B(fail_timeout_ms), "10s", 0, 3600000},
    {"connect_timeout", K_DURATION, B(connect_timeout_ms), "5s", 1, 600000},
    {"read_timeout", K_DURATION, B(read_timeout_ms), "60s", 1, 3600000},
    {"keepalive", K_KEEPALIVE, B(keepalive), "auto", 0, 10000},
    {"idle_timeout", K_DURATION, B(idle_timeout_ms), "1s", 1, 3600000},
    {"health_check", K_STR, B(health_check), NULL, 0, 0},
    {"health_interval", K_DURATION, B(health_interval_ms), "5s", 100, 3600000},
    {"health_timeout", K_DURATION, B(health_timeout_ms), "2s", 10, 600000},
    {"rise", K_INT, B(rise), "2", 1, 100},
    {"fall", K_INT, B(fall), "3", 1, 100},
    {"health_status", K_INT, B(health_status), "200", 100, 599},
    {"slow_start", K_DURATION, B(slow_start_ms), "0", 0, 3600000},
    {"drain", K_BOOL, B(drain), "no", 0, 1},
    {"tls", K_BOOL, B(tls), "no", 0, 1},
    {"tls_verify", K_BOOL, B(tls_verify), "yes", 0, 1},
    {"tls_ca", K_STR, B(tls_ca), NULL, 0, 0},
    {"tls_name", K_STR, B(tls_name), NULL, 0, 0},
};

#define NKEYS(t) (sizeof(t) / sizeof((t)[0]))

/* Parsing state passed to inih. */
struct parse {
    struct config *cfg;
    const char *file;
    int line;            /* current line, counted by our reader */
    int long_line;       /* line number of a line over inih's limit, 0 if none */
    char *err;
    size_t errlen;
    int failed;
    char last_section[128];
    char *cur;               /* the [backend NAME] or [tenant NAME] entry being read */
    FILE *fp;
};

int config_parse_duration(const char *s, uint32_t *ms)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned long long mult;
    if (errno)
        return -1;
    if (*end == '\0' || strcmp(end, "s") == 0)
        mult = 1000;
    else if (strcmp(end, "ms") == 0)
        mult = 1;
    else if (strcmp(end, "m") == 0)
        mult = 60000;
    else if (strcmp(end, "h") == 0)
        mult = 3600000;
    else
        return -1;
    if (v > UINT32_MAX / mult)
        return -1;
    *ms = (uint32_t)(v * mult);
    return 0;
}

int config_parse_size(const char *s, uint64_t *bytes)
{
    char *end;
    errno = 0;
    if (!isdigit((unsigned char)*s))
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    unsigned shift = 0;
    if (errno)
        return -1;
    switch (tolower((unsigned char)*end)) {
    case '\0': break;
    case 'k': shift = 10; break;
    case 'm': shift = 20; break;
    case 'g': shift = 30; break;
    default: return -1;
    }
    if (*end && end[1] != '\0' && !(tolower((unsigned char)end[1]) == 'b' && end[2] == '\0'))
        return -1;
    if (shift && v > (UINT64_MAX >> shift))
        return -1;
    *bytes = (uint64_t)v << shift;
    return 0;
}

static int fail(struct parse *p, int line, const char *fmt, const char *a, const char *b)
{
    if (!p->failed) {
        int n = snprintf(p->err, p->errlen, "%s:%d: ", p->file, line);
        if (n < 0 || (size_t)n >= p->errlen)
            n = 0;
        snprintf(p->err + n, p->errlen - (size_t)n, fmt, a, b);
        p->failed = 1;
    }
    return 0;
}

/* A route's prefix is matched against normalized paths (uri.h): it is normalized the same
 * way here, without a trailing "/" ("/static/" is "/static"; "/" stays). */
static int check_route_prefix(struct parse *p, struct route_conf *r)
{
    if (!r->prefix || r->prefix[0] != '/' || strpbrk(r->prefix, "?#"))
        return fail(p, r->line, "[route %s]: prefix = /path is required (no ? or #)%s",
                    r->name, ""), -1;
    size_t n = strlen(r->prefix);
    long len = uri_normalize_path(r->prefix, n, r->prefix); /* never longer: in place */
    if (len < 0)
        return fail(p, r->line, "[route %s]: prefix has %s", r->name, uri_strerror(len)), -1;
    while (len > 1 && r->prefix[len - 1] == '/')
        len--;
    r->prefix[len] = '\0';
    return 0;
}

static int parse_int_range(const char *v, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end || x < min || x > max)
        return -1;
    *out = x;
    return 0;
}

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const char *const failure_names[] = {"local", "open", "closed", NULL}; /* redis_failure */

/* Store one value into the struct at base according to def; -1 with *why on error. */
static int store(const struct key_def *d, char *base, const char *v, const char **why,
                 int line)
{
    long long n;
    uint32_t ms;
    uint64_t sz;
    switch (d->type) {
    case K_STR: {
        char **slot = (char **)(base + d->off);
        free(*slot);
        *slot = *v ? strdup(v) : NULL;
        return 0;
    }
    case K_INT:
        *why = "expected a whole number in range";
        if (parse_int_range(v, d->min, d->max, &n) < 0)
            return -1;
        *(int *)(base + d->off) = (int)n;
        return 0;
    case K_SCALE_MODE: {
        enum scale_mode m;
        *why = "expected model, erlang or little";
        if (scale_mode_parse(v, &m) < 0)
            return -1;
        *(enum scale_mode *)(base + d->off) = m;
        return 0;
    }
    case K_FAILURE:
        for (int i = 0; failure_names[i]; i++)
            if (strcmp(v, failure_names[i]) == 0) {
                *(int *)(base + d->off) = i;
                return 0;
            }
        *why = "expected local, open or closed";
        return -1;
    case K_THREADS:
    case K_WORKERS: /* auto: 0 threads = one per core; -1 workers = learned from latency */
        if (strcmp(v, "auto") == 0) {
            *(int *)(base + d->off) = d->type == K_THREADS ? 0 : -1;
            return 0;
        }
        *why = d->type == K_THREADS ? "expected 'auto' or 1..256"
                                    : "expected 'auto' or a whole number 0..100000";
        if (parse_int_range(v, d->min, d->max, &n) < 0)
            return -1;
        *(int *)(base + d->off) = (int)n;
        return 0;
    case K_KEEPALIVE: /* auto: -1, at least KEEPALIVE_AUTO_MIN, more while more are in use */
        if (strcmp(v, "auto") == 0) {
            *(int *)(base + d->off) = -1;
            return 0;
        }
        *why = "expected 'auto' or a whole number 0..10000";
        if (parse_int_range(v, d->min, d->max, &n) < 0)
            return -1;
        *(int *)(base + d->off) = (int)n;
        return 0;
    case K_AUTO_DURATION: /* auto: from the measured cost (queue.h); off: 0 */
        if (strcmp(v, "auto") == 0 || (d->min == 0 && strcmp(v, "off") == 0)) {
            *(uint32_t *)(base + d->off) = v[0] == 'a' ? UINT32_MAX : 0;
            return 0;
        }
        if (config_parse_duration(v, &ms) < 0 || ms < (uint64_t)d->min || ms > (uint64_t)d->max) {
            *why = d->min == 0 ? "expected auto, off or a duration such as 250ms, 10s"
                               : "expected auto or a duration such as 250ms, 10s";
            return -1;
        }
        *(uint32_t *)(base + d->off) = ms;
        return 0;
    case K_DURATION:
        *why = "expected a duration such as 250ms, 10s, 2m";
        if (config_parse_duration(v, &ms) < 0 || ms < (uint64_t)d->min || ms > (uint64_t)d->max)
            return -1;
        *(uint32_t *)(base + d->off) = ms;
        return 0;
    case K_SIZE:
        *why = "expected a size such as 512, 16k, 64m, 1g (within the key's bounds)";
        if (config_parse_size(v, &sz) < 0 || sz < (uint64_t)d->min || sz > (uint64_t)d->max)
            return -1;
        if (d->off == P(max_body_size))
            *(uint64_t *)(base + d->off) = sz;
        else
            *(size_t *)(base + d->off) = (size_t)sz;
        return 0;
    case K_LEVEL:
        for (int i = 0; i < 4; i++)
            if (strcmp(v, level_names[i]) == 0) {
                *(int *)(base + d->off) = i;
                return 0;
            }
        *why = "expected error, warn, info or debug";
        return -1;
    case K_LIST: {
        struct strlist *l = (struct strlist *)(base + d->off);
        *why = "repeated more than 16 times";
        if (l->n >= CONFIG_MAX_LIST)
            return -1;
        *why = "empty value";
        if (!*v)
            return -1;
        l->line[l->n] = line;
        l->v[l->n++] = strdup(v);
        return 0;
    }
    case K_RATE: /* a double where 0 means none and anything else is at least 0.001 */
    case K_DOUBLE: {
        char *end;
        *why = "expected a number in range";
        errno = 0;
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || x < (double)d->min ||
            x > (double)d->max)
            return -1;
        if (d->type == K_RATE && x > 0 && x < 0.001) {
            *why = "expected 0 (no limit) or at least 0.001 requests per second";
            return -1;
        }
        *(double *)(base + d->off) = x;
        return 0;
    }
    case K_BOOL:
        *why = "expected yes or no";
        if (strcmp(v, "yes") == 0 || strcmp(v, "on") == 0 || strcmp(v, "true") == 0)
            *(int *)(base + d->off) = 1;
        else if (strcmp(v, "no") == 0 || strcmp(v, "off") == 0 || strcmp(v, "false") == 0)
            *(int *)(base + d->off) = 0;
        else
            return -1;
        return 0;
    }
    return -1;
}

static int apply(struct parse *p, const struct key_def *defs, size_t n, char *base,
                 const char *section, const char *name, const char *value, int line)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(defs[i].name, name) != 0)
            continue;
        const char *why = "bad value";
        if (store(&defs[i], base, value, &why, line) < 0) {
            char key[256];
            snprintf(key, sizeof key, "[%s] %s = %s", section, name, value);
            return fail(p, line, "%s: %s", key, why);
        }
        return 1;
    }
    char key[256];
    snprintf(key, sizeof key, "[%s]", section);
    return fail(p, line, "%s: unknown key '%s'", key, name);
}

static void set_defaults(const struct key_def *defs, size_t n, char *base)
{
    for (size_t i = 0; i < n; i++) {
        const char *why;
        if (defs[i].dflt)
            store(&defs[i], base, defs[i].dflt, &why, 0);
    }
}

/* A repeatable [KIND NAME] section: an array of structs whose first field is the name. */
struct section_kind {
    const char *kind;          /* "backend", "tenant" */
    size_t size;               /* element size */
    size_t line_off;           /* offset of its `int line` */
    const struct key_def *keys;
    size_t nkeys;
    size_t arr_off, n_off;     /* where struct config keeps the array and its count */
};

#define T(f) offsetof(struct tenant_conf, f)

static const struct key_def tenant_keys[] = {
    {"rate", K_RATE, T(rate), "0", 0, 1000000},
    {"burst", K_INT, T(burst), "1", 1, 1000000},
    {"weight", K_INT, T(weight), "1", 1, 1000},
    {"max_inflight", K_INT, T(max_inflight), "0", 0, 1000000},
    {"max_queue", K_INT, T(max_queue), "0", 0, 1000000},
};

#define R(f) offsetof(struct route_conf, f)

static const struct key_def route_keys[] = {
    {"prefix", K_STR, R(prefix), NULL, 0, 0},
    {"bypass", K_BOOL, R(bypass), "no", 0, 1},
    {"max_inflight", K_INT, R(max_inflight), "0", 0, 1000000},
};

#define C(f) offsetof(struct config, f)

static const struct key_def queue_keys[] = {
    {"max", K_INT, C(queue_max), "1000", 0, 1000000},
    {"timeout", K_DURATION, C(queue_timeout_ms), "10s", 1, 3600000},
    {"target", K_AUTO_DURATION, C(queue_target_ms), "auto", 0, 600000},
    {"interval", K_AUTO_DURATION, C(queue_interval_ms), "auto", 10, 600000},
};

#define AD(f) offsetof(struct admin_conf, f)

static const struct key_def admin_keys[] = {
    {"listen", K_STR, AD(listen), NULL, 0, 0},
    {"token", K_STR, AD(token), NULL, 0, 0},
    {"hosts", K_STR, AD(hosts), NULL, 0, 0},
};

#define SC(f) offsetof(struct scale_section, c.f)
#define SS(f) offsetof(struct scale_section, f)

/* Bounds here are coarse; scale_conf_check() judges the values together after parsing. */
static const struct key_def scale_keys[] = {
    {"mode", K_SCALE_MODE, SC(mode), "model", 0, 0},
    {"margin", K_DOUBLE, SC(margin), "1.3", 1, 3},
    {"quantile", K_DOUBLE, SC(quantile), "0.95", 0, 1},
    {"target_wait", K_DURATION, SC(target_wait_ms), "500ms", 1, 600000},
    {"epsilon", K_DOUBLE, SC(epsilon), "0.05", 0, 1},
    /* the SLO as users say it: slo_quantile of requests wait at most slo_wait (the same
     * as target_wait and 1 - epsilon) */
    {"slo_wait", K_DURATION, SC(target_wait_ms), NULL, 1, 600000},
    {"slo_quantile", K_DOUBLE, SC(slo_quantile), NULL, 0, 1},
    {"step", K_DOUBLE, SC(step), "0.25", 0, 1},
    {"up_for", K_DURATION, SC(up_for_ms), "30s", 0, 86400000},
    {"down_for", K_DURATION, SC(down_for_ms), "5m", 0, 86400000},
    {"cooldown", K_DURATION, SC(cooldown_ms), "60s", 0, 86400000},
    {"min_workers", K_INT, SC(min_workers), "1", 1, 100000},
    {"max_workers", K_INT, SC(max_workers), "64", 1, 100000},
    {"queue_threshold", K_INT, SC(queue_threshold), "5", 1, 100000},
    {"down_utilisation", K_DOUBLE, SC(down_utilisation), "0.30", 0, 1},
    {"db_max_connections", K_INT, SC(db_max_connections), "0", 0, 1000000},
    {"db_share", K_DOUBLE, SC(db_share), "0.65", 0, 1},
    {"pool_size", K_INT, SC(pool_size), "0", 0, 100000},
    {"window", K_DURATION, SS(window_ms), "1m", 10000, 300000},
    {"on_scale", K_STR, SS(on_scale), NULL, 0, 0},
    {"on_scale_timeout", K_DURATION, SS(on_scale_timeout_ms), "30s", 100, 3600000},
    {"webhook", K_STR, SS(webhook), NULL, 0, 0},
    {"webhook_timeout", K_DURATION, SS(webhook_timeout_ms), "5s", 100, 600000},
    {"gunicorn_pidfile", K_STR, SS(gunicorn_pidfile), NULL, 0, 0},
    {"gunicorn_backend", K_STR, SS(gunicorn_backend), NULL, 0, 0},
    {"redis_publish", K_BOOL, SS(redis_publish), "no", 0, 1},
    {"shared_backends", K_BOOL, SS(shared_backends), "yes", 0, 1},
};

#define RD(f) offsetof(struct redis_conf, f)

static const struct key_def redis_keys[] = {
    {"url", K_STR, RD(url), NULL, 0, 0},
    {"timeout", K_DURATION, RD(timeout_ms), "50ms", 1, 60000},
    {"on_failure", K_FAILURE, RD(on_failure), "local", 0, 0},
    {"prefix", K_STR, RD(prefix), "sluice:", 0, 0},
};

static const struct section_kind kinds[] = {
    {"backend", sizeof(struct backend_conf), B(line), backend_keys, NKEYS(backend_keys),
     offsetof(struct config, backends), offsetof(struct config, nbackends)},
    {"tenant", sizeof(struct tenant_conf), T(line), tenant_keys, NKEYS(tenant_keys),
     offsetof(struct config, tenant), offsetof(struct config, ntenants)},
    {"route", sizeof(struct route_conf), R(line), route_keys, NKEYS(route_keys),
     offsetof(struct config, routes), offsetof(struct config, nroutes)},
};

/* Append a zeroed entry with defaults to the kind's array; NULL when out of memory. */
static char *named_entry(struct config *c, const struct section_kind *k, const char *name,
                         int line)
{
    char **arr = (char **)((char *)c + k->arr_off);
    size_t *n = (size_t *)((char *)c + k->n_off);
    char *na = realloc(*arr, (*n + 1) * k->size);
    if (!na)
        return NULL;
    *arr = na;
    char *e = na + (*n)++ * k->size;
    memset(e, 0, k->size);
    *(char **)e = strdup(name);
    *(int *)(e + k->line_off) = line;
    set_defaults(k->keys, k->nkeys, e);
    return e;
}

static int named_exists(const struct config *c, const struct section_kind *k, const char *name)
{
    char *arr = *(char **)((const char *)c + k->arr_off);
    size_t n = *(const size_t *)((const char *)c + k->n_off);
    for (size_t i = 0; i < n; i++)
        if (strcmp(*(char **)(arr + i * k->size), name) == 0)
            return 1;
    return 0;
}

/* [tenants] key = header:NAME | host | cookie:NAME | ip | path_prefix:N */
static int tenant_key(struct tenants_conf *t, const char *v)
{
    char *end;
    free(t->key_name);
    t->key_name = NULL;
    if (strncmp(v, "header:", 7) == 0 && v[7]) {
        t->key = TK_HEADER;
        t->key_name = strdup(v + 7);
    } else if (strncmp(v, "cookie:", 7) == 0 && v[7]) {
        t->key = TK_COOKIE;
        t->key_name = strdup(v + 7);
    } else if (strcmp(v, "host") == 0) {
        t->key = TK_HOST;
    } else if (strcmp(v, "ip") == 0) {
        t->key = TK_IP;
    } else if (strncmp(v, "path_prefix:", 12) == 0) {
        long n = strtol(v + 12, &end, 10);
        if (*end || n < 1 || n > 16)
            return -1;
        t->key = TK_PATH_PREFIX;
        t->prefix_segments = (int)n;
    } else {
        return -1;
    }
    return 0;
}

static int valid_name(const char *s)
{
    if (!*s || strlen(s) > 63)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '-' && *s != '_' && *s != '.')
            return 0;
    return 1;
}

static const char *const fixed_sections[] = {"proxy", "queue", "tenants", "redis", "admin",
                                              "scale"};

/* The repeatable kind of "[KIND NAME]", or NULL. */
static const struct section_kind *kind_of(const char *section)
{
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        size_t kl = strlen(kinds[k].kind);
        if (strncmp(section, kinds[k].kind, kl) == 0 && section[kl] == ' ')
            return &kinds[k];
    }
    return NULL;
}

static int unknown_section(struct parse *p, const char *section, int line)
{
    return fail(p, line, "unknown section [%s] (expected [proxy], [backend NAME], [queue], "
                "[tenants], [tenant NAME], [route NAME], [redis], [admin] or [scale])%s",
                section, "");
}

/* A [KIND NAME] header: its entry exists from here on, keys or not (an empty
 * [tenant solo] is a tenant with the defaults). 0, or -1 after fail(). */
static int enter_section(struct parse *p, const char *section, int line)
{
    const struct section_kind *k = kind_of(section);
    const char *sname = section + strlen(k->kind) + 1;
    snprintf(p->last_section, sizeof p->last_section, "%s", section);
    p->cur = NULL; /* nothing of an earlier section may take this one's keys */
    if (!valid_name(sname)) {
        fail(p, line, "[%s]: the name must be 1-63 of A-Z a-z 0-9 - _ .%s", section, "");
        return -1;
    }
    if (named_exists(p->cfg, k, sname)) {
        fail(p, line, "[%s]: duplicate section%s", section, "");
        return -1;
    }
    p->cur = named_entry(p->cfg, k, sname, line);
    return 0;
}

/* Called by the reader for every "[...]" line, before inih reports its keys (inih says
 * nothing about a section without keys). */
static void on_header(struct parse *p, const char *line)
{
    while (*line == ' ' || *line == '\t')
        line++;
    const char *end = *line == '[' ? strchr(line, ']') : NULL;
    char section[128];
    if (!end || (size_t)(end - line - 1) >= sizeof section)
        return;
    memcpy(section, line + 1, (size_t)(end - line - 1));
    section[end - line - 1] = '\0';
    if (kind_of(section)) {
        enter_section(p, section, p->line);
        return;
    }
    if (strcmp(section, "scale") == 0)
        p->cfg->scale.line = p->line;
    for (size_t i = 0; i < sizeof fixed_sections / sizeof fixed_sections[0]; i++)
        if (strcmp(section, fixed_sections[i]) == 0)
            return;
    unknown_section(p, section, p->line);
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct parse *p = user;
    if (p->failed)
        return 0; /* the first error stands; nothing after it is stored */
    int line = p->line;
    int new_section = strcmp(section, p->last_section) != 0;
    size_t sl = strlen(section);
    if (sl >= sizeof p->last_section)
        sl = sizeof p->last_section - 1;
    memcpy(p->last_section, section, sl);
    p->last_section[sl] = '\0';
    if (strcmp(section, "proxy") == 0)
        return apply(p, proxy_keys, NKEYS(proxy_keys), (char *)&p->cfg->proxy, section, name,
                     value, line);
    if (strcmp(section, "queue") == 0)
        return apply(p, queue_keys, NKEYS(queue_keys), (char *)p->cfg, section, name, value,
                     line);
    if (strcmp(section, "scale") == 0) {
        for (size_t i = 0; i < NKEYS(scale_keys) && i < 32; i++)
            if (strcmp(scale_keys[i].name, name) == 0)
                p->cfg->scale.key_line[i] = line;
        return apply(p, scale_keys, NKEYS(scale_keys), (char *)&p->cfg->scale, section, name,
                     value, line);
    }
    if (strcmp(section, "admin") == 0) {
        if (strcmp(name, "listen") == 0)
            p->cfg->admin.line = line;
        return apply(p, admin_keys, NKEYS(admin_keys), (char *)&p->cfg->admin, section, name,
                     value, line);
    }
    if (strcmp(section, "redis") == 0) {
        if (strcmp(name, "url") == 0)
            p->cfg->redis.url_line = line;
        return apply(p, redis_keys, NKEYS(redis_keys), (char *)&p->cfg->redis, section, name,
                     value, line);
    }
    if (strcmp(section, "tenants") == 0) {
        if (strcmp(name, "hmac_key") == 0) {
            if (strlen(value) < 16)
                return fail(p, line, "[tenants] hmac_key: at least 16 characters are needed%s%s",
                            "", "");
            free(p->cfg->tenants.hmac_key);
            p->cfg->tenants.hmac_key = strdup(value);
            p->cfg->tenants.hmac_line = line;
            return 1;
        }
        if (strcmp(name, "max_tracked") == 0) {
            char *end;
            long v = strtol(value, &end, 10);
            if (*end || end == value || v < 0 || v > 1000000)
                return fail(p, line, "[tenants] max_tracked = %s: expected 0..1000000%s",
                            value, "");
            p->cfg->tenants.max_tracked = (int)v;
            return 1;
        }
        if (strcmp(name, "key") != 0)
            return fail(p, line, "[tenants]: unknown key '%s' (expected key, max_tracked or hmac_key)%s",
                        name, "");
        if (tenant_key(&p->cfg->tenants, value) < 0)
            return fail(p, line, "[tenants] key = %s: expected header:NAME, host, cookie:NAME, "
                        "ip or path_prefix:N%s", value, "");
        return 1;
    }
    const struct section_kind *k = kind_of(section);
    if (k) {
        if (new_section && enter_section(p, section, line) < 0)
            return 0;
        if (!p->cur)
            return fail(p, line, "[%s]: out of memory%s", section, "");
        return apply(p, k->keys, k->nkeys, p->cur, section, name, value, line);
    }
    return unknown_section(p, section, line);
}

/* inih reader: like fgets, but counts lines and flags lines longer than inih's buffer. */
static void on_header(struct parse *p, const char *line);

static char *read_line(char *str, int num, void *stream)
{
    struct parse *p = stream;
    if (!fgets(str, num, p->fp))
        return NULL;
    p->line++;
    size_t n = strlen(str);
    if (n == (size_t)num - 1 && str[n - 1] != '\n') {
        int ch;
        while ((ch = fgetc(p->fp)) != EOF && ch != '\n')
            ;
        if (!p->long_line)
            p->long_line = p->line;
    }
    on_header(p, str);
    return str;
}

static int split_hostport(const char *s)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s || !colon[1])
        return -1;
    char *end;
    long port = strtol(colon + 1, &end, 10);
    return (*end || port < 1 || port > 65535) ? -1 : 0;
}

static int check_listen(struct parse *p, const struct strlist *l, const char *key)
{
    for (size_t i = 0; i < l->n; i++) {
        char *end;
        long port = strtol(l->v[i], &end, 10);
        if (!(*end == '\0' && port > 0 && port < 65536) && split_hostport(l->v[i]) < 0) {
            fail(p, l->line[i], "[proxy] %s = %s: expected host:port or port", key, l->v[i]);
            return -1;
        }
    }
    return 0;
}

/* Split [redis] url = redis://[:PASSWORD@]HOST:PORT[/DB] into its fields. 0 or -1. */
static int redis_url(struct redis_conf *r)
{
    const char *s = r->url;
    if (strncmp(s, "redis://", 8) != 0)
        return -1;
    s += 8;
    const char *at = strrchr(s, '@');
    if (at) {
        if (*s != ':' || at == s + 1)
            return -1;
        r->password = strndup(s + 1, (size_t)(at - s - 1));
        s = at + 1;
    }
    const char *slash = strchr(s, '/');
    size_t hp = slash ? (size_t)(slash - s) : strlen(s);
    char buf[300];
    if (hp == 0 || hp >= sizeof buf)
        return -1;
    memcpy(buf, s, hp);
    buf[hp] = '\0';
    char *colon = strrchr(buf, ':');
    long port = 6379, db = 0;
    char *end;
    if (colon) {
        *colon = '\0';
        port = strtol(colon + 1, &end, 10);
        if (*end || end == colon + 1 || port < 1 || port > 65535)
            return -1;
    }
    if (slash && slash[1]) {
        db = strtol(slash + 1, &end, 10);
        if (*end || db < 0 || db > 1000)
            return -1;
    }
    if (!buf[0] || strpbrk(buf, " \t[]"))
        return -1;
    r->host = strdup(buf);
    r->port = (int)port;
    r->db = (int)db;
    return r->host ? 0 : -1;
}

/* The line where [scale] key `name` was set, else the section's. */
static int scale_line(const struct parse *p, const struct scale_section *s, const char *name)
{
    for (size_t i = 0; i < NKEYS(scale_keys) && i < 32; i++)
        if (strcmp(scale_keys[i].name, name) == 0 && s->key_line[i])
            return s->key_line[i];
    return s->line ? s->line : p->line;
}

/* [scale]: the rules together (scale_conf_check), the window, the sinks' shapes. */
static int check_scale(struct parse *p, const struct config *c)
{
    const struct scale_section *s = &c->scale;
    char why[200];
    int line = s->line ? s->line : p->line;
    if (scale_conf_check(&s->c, why, sizeof why) < 0) {
        fail(p, line, "[scale]: %s%s", why, "");
        return -1;
    }
    if (s->window_ms != 10000 && s->window_ms != 60000 && s->window_ms != 300000) {
        fail(p, scale_line(p, s, "window"), "[scale] window: expected 10s, 1m or 5m%s%s", "", "");
        return -1;
    }
    if (s->webhook && strncmp(s->webhook, "http://", 7) != 0) {
        fail(p, scale_line(p, s, "webhook"), "[scale] webhook = %s: expected http://host:port/path%s", s->webhook, "");
        return -1;
    }
    if (s->on_scale && s->on_scale[0] != '/') {
        fail(p, scale_line(p, s, "on_scale"), "[scale] on_scale = %s: expected an absolute path%s", s->on_scale, "");
        return -1;
    }
    int found = !s->gunicorn_backend;
    for (size_t i = 0; !found && i < c->nbackends; i++)
        found = strcmp(c->backends[i].name, s->gunicorn_backend) == 0;
    if (!found) {
        fail(p, scale_line(p, s, "gunicorn_backend"), "[scale] gunicorn_backend = %s: no [backend %s]", s->gunicorn_backend,
             s->gunicorn_backend);
        return -1;
    }
    if (s->gunicorn_backend && !s->gunicorn_pidfile) {
        fail(p, scale_line(p, s, "gunicorn_backend"), "[scale] gunicorn_backend needs gunicorn_pidfile%s%s", "", "");
        return -1;
    }
    if (s->redis_publish && !c->redis.url) {
        fail(p, scale_line(p, s, "redis_publish"), "[scale] redis_publish = yes needs [redis] url%s%s", "", "");
        return -1;
    }
    return 0;
}

/* [admin] listen = port | host:port; anything but loopback needs a token. */
static int check_admin(struct parse *p, const struct admin_conf *a)
{
    char *end;
    long port = strtol(a->listen, &end, 10);
    int bare = *end == '\0' && port > 0 && port < 65536;
    if (!bare && split_hostport(a->listen) < 0) {
        fail(p, a->line, "[admin] listen = %s: expected port or host:port%s", a->listen, "");
        return -1;
    }
    int loopback = bare || strncmp(a->listen, "127.", 4) == 0 ||
                   strncmp(a->listen, "localhost:", 10) == 0 || strncmp(a->listen, "[::1]:", 6) == 0;
    if (!loopback && (!a->token || strlen(a->token) < 16)) {
        fail(p, a->line, "[admin] listen = %s: a non-loopback address needs a token of 16 "
             "characters or more%s", a->listen, "");
        return -1;
    }
    if (a->token && strlen(a->token) < 16) {
        fail(p, a->line, "[admin] token: at least 16 characters are needed%s%s", "", "");
        return -1;
    }
    return 0;
}

static int validate(struct parse *p)
{
    struct config *c = p->cfg;
    if (!named_exists(c, &kinds[1], "default") && !named_entry(c, &kinds[1], "default", 0))
        return fail(p, p->line, "out of memory%s%s", "", "");
    const struct proxy_conf *pc = &c->proxy;
    if (pc->listen.n + pc->tls_listen.n == 0)
        return fail(p, p->line, "[proxy] listen: at least one listen address is required%s%s",
                    "", "");
    if (check_listen(p, &pc->listen, "listen") < 0 ||
        check_listen(p, &pc->tls_listen, "tls_listen") < 0)
        return 0;
    if (pc->tls_listen.n && pc->tls_cert.n == 0)
        return fail(p, pc->tls_listen.line[0], "[proxy] tls_listen = %s: tls_cert and tls_key "
                    "are required%s", pc->tls_listen.v[0], "");
    if (pc->tls_cert.n != pc->tls_key.n)
        return fail(p, pc->tls_cert.n ? pc->tls_cert.line[pc->tls_cert.n - 1] : p->line,
                    "[proxy] tls_cert/tls_key: each tls_cert needs one tls_key, in the same "
                    "order%s%s", "", "");
    if (pc->redirect_http && pc->tls_listen.n == 0)
        return fail(p, p->line, "[proxy] redirect_http = yes needs a tls_listen%s%s", "", "");
    for (size_t i = 0; i < c->nroutes; i++)
        if (check_route_prefix(p, &c->routes[i]) < 0)
            return 0;
    if (c->tenants.hmac_key && c->tenants.key != TK_HEADER && c->tenants.key != TK_COOKIE)
        return fail(p, c->tenants.hmac_line, "[tenants] hmac_key: signed keys need key = "
                    "header:NAME or cookie:NAME%s%s", "", "");
    if (c->admin.listen && check_admin(p, &c->admin) < 0)
        return 0;
    if (check_scale(p, c) < 0)
        return 0;
    if (c->redis.url && redis_url(&c->redis) < 0)
        return fail(p, c->redis.url_line, "[redis] url = %s: expected "
                    "redis://[:PASSWORD@]HOST:PORT[/DB]%s", c->redis.url, "");
    if (c->nbackends == 0)
        return fail(p, p->line, "no [backend NAME] section: at least one backend is required%s%s",
                    "", "");
    for (size_t i = 0; i < c->nbackends; i++) {
        struct backend_conf *b = &c->backends[i];
        if (!b->address)
            return fail(p, b->line, "[backend %s]: address is required%s", b->name, "");
        if (split_hostport(b->address) < 0)
            return fail(p, b->line, "[backend %s] address = %s: expected host:port", b->name,
                        b->address);
        if (b->workers_min > b->workers_max)
            return fail(p, b->line, "[backend %s]: workers_min is above workers_max%s", b->name,
                        "");
        if (b->health_check && (b->health_check[0] != '/' || strpbrk(b->health_check, " \t")))
            return fail(p, b->line, "[backend %s] health_check = %s: expected a path such as "
                        "/health", b->name, b->health_check);
    }
    return 1;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
    struct config *cfg = calloc(1, sizeof *cfg);
    struct parse p = {.cfg = cfg, .file = path, .err = err, .errlen = errlen};
    if (!cfg) {
        snprintf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    cfg->path = strdup(path);
    set_defaults(proxy_keys, NKEYS(proxy_keys), (char *)&cfg->proxy);
    set_defaults(queue_keys, NKEYS(queue_keys), (char *)cfg);
    set_defaults(redis_keys, NKEYS(redis_keys), (char *)&cfg->redis);
    set_defaults(scale_keys, NKEYS(scale_keys), (char *)&cfg->scale);
    cfg->tenants.max_tracked = 10000;
    p.fp = fopen(path, "r");
    if (!p.fp) {
        snprintf(err, errlen, "%s:0: cannot open: %s", path, strerror(errno));
        config_free(cfg);
        return NULL;
    }
    int rc = ini_parse_stream(read_line, &p, on_key, &p);
    fclose(p.fp);
    if (!p.failed && p.long_line)
        fail(&p, p.long_line, "line too long (the limit is 198 characters)%s%s", "", "");
    if (!p.failed && rc > 0)
        fail(&p, rc, "syntax error: expected [section], key = value or a ; comment%s%s", "", "");
    if (!p.failed)
        validate(&p);
    if (p.failed) {
        config_free(cfg);
        return NULL;
    }
    return cfg;
}

void config_free(struct config *cfg)
{
    if (!cfg)
        return;
    struct strlist *lists[] = {&cfg->proxy.listen, &cfg->proxy.tls_listen, &cfg->proxy.tls_cert,
                               &cfg->proxy.tls_key};
    for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++)
        for (size_t i = 0; i < lists[k]->n; i++)
            free(lists[k]->v[i]);
    free(cfg->proxy.tls_ciphers);
    free(cfg->proxy.access_log);
    free(cfg->proxy.error_log);
    free(cfg->proxy.pid_file);
    for (size_t i = 0; i < cfg->nbackends; i++) {
        free(cfg->backends[i].name);
        free(cfg->backends[i].address);
        free(cfg->backends[i].health_check);
        free(cfg->backends[i].tls_ca);
        free(cfg->backends[i].tls_name);
    }
    free(cfg->backends);
    for (size_t i = 0; i < cfg->ntenants; i++)
        free(cfg->tenant[i].name);
    free(cfg->tenant);
    for (size_t i = 0; i < cfg->nroutes; i++) {
        free(cfg->routes[i].name);
        free(cfg->routes[i].prefix);
    }
    free(cfg->routes);
    free(cfg->tenants.key_name);
    free(cfg->tenants.hmac_key);
    free(cfg->scale.on_scale);
    free(cfg->scale.webhook);
    free(cfg->scale.gunicorn_pidfile);
    free(cfg->scale.gunicorn_backend);
    free(cfg->admin.listen);
    free(cfg->admin.token);
    free(cfg->admin.hosts);
    free(cfg->redis.url);
    free(cfg->redis.host);
    free(cfg->redis.password);
    free(cfg->redis.prefix);
    free(cfg->path);
    free(cfg);
}
