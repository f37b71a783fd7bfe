/* upstream: backend table, least-connections pick and passive health, shared by all
 * worker threads. inflight and down_until are atomics read on every pick; the failure
 * window takes a per-backend lock, touched only when something failed or recovered. */
#include <sluice/upstream.h>
#include <sluice/sock.h>

#include <sluice/adaptive.h>
#include <sluice/log.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>

#include <sluice/adaptive.h>
#include <sluice/atomics.h>
#include <sluice/config.h>
#include <sluice/log.h>
#include <sluice/tls.h>

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>

uint64_t up_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int resolve(struct backend *b, char *err, size_t errlen)
{
    const char *addr = b->conf->address;
    const char *colon = strrchr(addr, ':');
    char host[256];
    if (!colon) {
        snprintf(err, errlen, "backend %s: address %s has no port", b->conf->name, addr);
        return -1;
    }
    size_t hl = (size_t)(colon - addr);
    if (hl >= sizeof host)
        hl = sizeof host - 1;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 1 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    snprintf(b->host, sizeof b->host, "%s", host);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(err, errlen, "backend %s: cannot resolve %s: %s", b->conf->name, addr,
                 gai_strerror(rc));
        return -1;
    }
    memcpy(&b->addr, res->ai_addr, res->ai_addrlen);
    b->addrlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static struct backend_state *state_new(const char *name)
{
    struct backend_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    snprintf(st->name, sizeof st->name, "%s", name);
    pthread_mutex_init(&st->lock, NULL);
    atomic_init(&st->refs, 1);
    return st;
}

static struct backend_state *state_find(const struct upstream *prev, const char *name)
{
    for (int i = 0; prev && i < prev->n; i++)
        if (strcmp(prev->b[i].st->name, name) == 0) {
            atomic_fetch_add(&prev->b[i].st->refs, 1);
            return prev->b[i].st;
        }
    return NULL;
}

/* workers = auto: a controller bounded by workers_min..workers_max. 0 or -1. */
static int adaptive_new(struct backend *b, uint64_t seed)
{
    struct adaptive_conf ac;
    adaptive_conf_defaults(&ac);
    ac.min = b->conf->workers_min;
    ac.max = b->conf->workers_max;
    ac.seed = seed;
    b->ad = malloc(sizeof *b->ad);
    if (!b->ad)
        return -1;
    adaptive_init(b->ad, &ac, up_now_ms());
    return 0;
}

int up_init(struct upstream *u, const struct backend_conf *confs, int n,
            const struct upstream *prev, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    u->b = calloc((size_t)(n > 0 ? n : 1), sizeof *u->b);
    u->n = 0;
    if (!u->b) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct backend *b = &u->b[i];
        b->conf = &confs[i];
        b->index = i;
        b->st = state_find(prev, confs[i].name);
        if (!b->st)
            b->st = state_new(confs[i].name);
        if (!b->st) {
            snprintf(err, errlen, "out of memory");
            up_free(u);
            return -1;
        }
        u->n = i + 1;
        if (confs[i].workers < 0 && adaptive_new(b, (uint64_t)getpid() * 31 + (uint64_t)i) < 0) {
            snprintf(err, errlen, "out of memory");
            up_free(u);
            return -1;
        }
        if (resolve(b, err, errlen) < 0) {
            up_free(u);
            return -1;
        }
        if (confs[i].tls) {
            char why[300];
            b->tls = tls_client_ctx(confs[i].tls_ca, confs[i].tls_verify, why, sizeof why);
            if (!b->tls) {
                snprintf(err, errlen, "backend %s: %s", confs[i].name, why);
                up_free(u);
                return -1;
            }
        }
    }
    return 0;
}

void up_free(struct upstream *u)
{
    for (int i = 0; i < u->n; i++) {
        SSL_CTX_free(u->b[i].tls);
        if (u->b[i].ad) {
            adaptive_destroy(u->b[i].ad);
            free(u->b[i].ad);
        }
        struct backend_state *st = u->b[i].st;
        if (st && atomic_fetch_sub(&st->refs, 1) == 1) {
            pthread_mutex_destroy(&st->lock);
            free(st);
        }
    }
    free(u->b);
    u->b = NULL;
    u->n = 0;
}

int up_draining(const struct backend *b)
{
    int a = atomic_load_explicit(&b->st->admin_drain, memory_order_relaxed);
    return a ? a == 1 : b->conf->drain;
}

int up_is_up(const struct backend *b, uint64_t now_ms)
{
    return !up_draining(b) && !atomic_load_explicit(&b->st->hc_down, memory_order_relaxed) &&
           atomic_load_explicit(&b->st->down_until, memory_order_relaxed) <= now_ms;
}

long up_effective_weight(const struct backend *b, uint64_t now_ms)
{
    long w = (long)b->conf->weight * 1000;
    uint64_t since = atomic_load_explicit(&b->st->up_since, memory_order_relaxed);
    uint32_t ramp = b->conf->slow_start_ms;
    if (!ramp || !since || now_ms >= since + ramp)
        return w;
    long ew = (long)((double)w * (double)(now_ms - since) / (double)ramp);
    return ew < 1 ? 1 : ew;
}

int up_check_result(struct backend *b, int pass, int status, uint64_t now_ms)
{
    struct backend_state *st = b->st;
    atomic_store(&st->hc_last_status, status);
    int down = atomic_load(&st->hc_down);
    if (pass) {
        st->hc_fail = 0;
        if (down && ++st->hc_pass >= b->conf->rise) {
            st->hc_pass = 0;
            atomic_store(&st->up_since, now_ms);
            atomic_store(&st->down_until, 0); /* a passing check also clears passive down */
            atomic_store(&st->hc_down, 0);
            return 1;
        }
        return 0;
    }
    st->hc_pass = 0;
    if (!down && ++st->hc_fail >= b->conf->fall) {
        st->hc_fail = 0;
        atomic_store(&st->hc_down, 1);
        return -1;
    }
    return 0;
}

int up_inflight(const struct backend *b)
{
    return atomic_load_explicit(&b->st->inflight, memory_order_relaxed);
}

/* a/wa < b/wb without division */
static int less_loaded(int a, long wa, int b, long wb)
{
    return (long long)a * wb < (long long)b * wa;
}

static _Thread_local int ignore_caps; /* set by up_pick_bypass for its one call */

int up_capacity(const struct backend *b)
{
    int seen = atomic_load_explicit(&b->st->workers_seen, memory_order_relaxed);
    if (b->conf->workers > 0)
        return seen > 0 ? seen : b->conf->workers;
    return b->ad ? adaptive_limit(b->ad) : 0;
}

static int has_room(const struct backend *b)
{
    int cap = up_capacity(b);
    return ignore_caps || cap <= 0 || up_inflight(b) < cap;
}

/* Take one of b's slots; 0 if it filled up meanwhile (another thread won it). */
static int take_slot(struct backend *b)
{
    return atomic_take_below(&b->st->inflight, ignore_caps ? 0 : up_capacity(b));
}

void up_sample(struct backend *b, uint64_t rtt_us, int inflight_at_send)
{
    if (!b->ad)
        return;
    int before = adaptive_limit(b->ad);
    adaptive_sample(b->ad, rtt_us, inflight_at_send, up_now_ms());
    int after = adaptive_limit(b->ad);
    if (after != before)
        log_info("upstream", "backend %s: learned limit %d -> %d (workers = auto, min_rtt %.1fms%s)",
                 b->conf->name, before, after, (double)adaptive_min_rtt_us(b->ad) / 1000.0,
                 adaptive_probing(b->ad) ? ", measuring" : "");
}

/* One pass of least connections over the backends with room. */
static struct backend *choose(struct upstream *u, const struct backend *avoid, uint64_t now_ms,
                              int *full)
{
    unsigned start = atomic_fetch_add_explicit(&u->rr, 1, memory_order_relaxed);
    struct backend *best = NULL, *fallback = NULL;
    int best_load = 0;
    long best_w = 0;
    for (int k = 0; k < u->n; k++) {
        struct backend *b = &u->b[(start + (unsigned)k) % (unsigned)u->n];
        if (!up_is_up(b, now_ms)) {
            if (!up_draining(b) && has_room(b) &&
                (!fallback || b->st->down_until < fallback->st->down_until))
                fallback = b;
            continue;
        }
        if (!has_room(b)) {
            *full = 1;
            continue;
        }
        if (b == avoid)
            continue;
        int load = up_inflight(b);
        long w = up_effective_weight(b, now_ms);
        if (!best || less_loaded(load, w, best_load, best_w)) {
            best = b;
            best_load = load;
            best_w = w;
        }
    }
    if (!best && avoid && up_is_up(avoid, now_ms) && has_room(avoid))
        best = (struct backend *)avoid;
    if (!best && !*full)
        best = fallback; /* everything is down: try the one that comes back first */
    return best;
}

struct backend *up_pick_slot(struct upstream *u, const struct backend *avoid, uint64_t now_ms,
                             int *full)
{
    *full = 0;
    for (int tries = 0; tries < 16 && u->n > 0; tries++) {
        struct backend *b = choose(u, avoid, now_ms, full);
        if (!b)
            return NULL;
        if (take_slot(b)) {
            *full = 0;
            atomic_fetch_add_explicit(&b->st->requests, 1, memory_order_relaxed);
            return b;
        }
        *full = 1;
    }
    return NULL;
}

struct backend *up_pick(struct upstream *u, const struct backend *avoid, uint64_t now_ms)
{
    int full;
    return up_pick_slot(u, avoid, now_ms, &full);
}

struct backend *up_pick_bypass(struct upstream *u, const struct backend *avoid, uint64_t now_ms)
{
    int full;
    ignore_caps = 1;
    struct backend *b = up_pick_slot(u, avoid, now_ms, &full);
    ignore_caps = 0;
    return b;
}

int up_has_slot(struct upstream *u, uint64_t now_ms)
{
    for (int i = 0; i < u->n; i++)
        if (up_is_up(&u->b[i], now_ms) && has_room(&u->b[i]))
            return 1;
    return 0;
}

void up_release(struct backend *b)
{
    atomic_fetch_sub_explicit(&b->st->inflight, 1, memory_order_relaxed);
}

void up_fail(struct backend *b, uint64_t now_ms)
{
    struct backend_state *st = b->st;
    atomic_fetch_add_explicit(&st->failures, 1, memory_order_relaxed);
    if (b->conf->max_fails == 0)
        return;
    pthread_mutex_lock(&st->lock);
    if (st->fails == 0 || now_ms - st->fail_start > b->conf->fail_timeout_ms) {
        st->fails = 0;
        st->fail_start = now_ms;
    }
    if (++st->fails >= b->conf->max_fails) {
        atomic_store(&st->down_until, now_ms + b->conf->fail_timeout_ms);
        st->fails = 0;
    }
    pthread_mutex_unlock(&st->lock);
}

void up_ok(struct backend *b)
{
    struct backend_state *st = b->st;
    if (atomic_load_explicit(&st->fails, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&st->lock);
    atomic_store_explicit(&st->fails, 0, memory_order_relaxed);
    pthread_mutex_unlock(&st->lock);
}

struct bufferevent *up_bufferevent(struct backend *b, struct event_base *base)
{
    if (!b->tls)
        return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    SSL *ssl = tls_client_ssl(b->tls, b->conf->tls_name ? b->conf->tls_name : b->host);
    struct bufferevent *bev =
        ssl ? bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                             BEV_OPT_CLOSE_ON_FREE)
            : NULL;
    if (ssl && !bev)
        SSL_free(ssl);
    if (bev)
        bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

int up_sock(struct backend *b, struct event_base *base, struct sock *s)
{
    if (sock_plain(s, base, -1) < 0)
        return -1;
    if (!b->tls)
        return 0;
    SSL *ssl = tls_client_ssl(b->tls, b->conf->tls_name ? b->conf->tls_name : b->host);
    if (ssl && sock_tls(s, ssl, 0) == 0)
        return 0;
    if (ssl)
        SSL_free(ssl);
    sock_close(s);
    return -1;
}
