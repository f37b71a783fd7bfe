/* admit: tenant classification and the per-tenant GCRA rate limit. GCRA keeps one number
 * per tenant, the theoretical arrival time (tat): a request at `now` conforms when
 * tat - now <= tau; it then moves tat to max(tat, now) + interval. One compare-and-swap,
 * no lock, exact for any number of threads. */
#include <sluice/admit.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <sluice/atomics.h>
#include <sluice/config.h>
#include <sluice/http1.h>
#include <sluice/uri.h>

uint64_t admit_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct tenant_state *state_for(const struct admit *prev, const char *name)
{
    for (int i = 0; prev && i < prev->n; i++)
        if (strcmp(prev->t[i].st->name, name) == 0) {
            atomic_fetch_add(&prev->t[i].st->refs, 1);
            return prev->t[i].st;
        }
    struct tenant_state *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    snprintf(st->name, sizeof st->name, "%s", name);
    atomic_init(&st->refs, 1);
    return st;
}

static int keytable_init(struct keytable *k, int max)
{
    pthread_mutex_init(&k->lock, NULL);
    k->max = (size_t)max;
    k->cap = (size_t)max * 2;
    k->used = 0;
    k->slots = max ? calloc(k->cap, sizeof *k->slots) : NULL;
    return max && !k->slots ? -1 : 0;
}

int admit_init(struct admit *a, const struct tenants_conf *tc, const struct tenant_conf *confs,
               int n, const struct admit *prev)
{
    memset(a, 0, sizeof *a);
    a->conf = tc;
    a->t = calloc((size_t)(n > 0 ? n : 1), sizeof *a->t);
    if (!a->t)
        return -1;
    for (int i = 0; i < n; i++) {
        struct tenant *t = &a->t[i];
        t->conf = &confs[i];
        t->st = state_for(prev, confs[i].name);
        if (!t->st) {
            admit_free(a);
            return -1;
        }
        a->n = i + 1;
        if (confs[i].rate > 0) {
            t->interval_ns = (uint64_t)(1e9 / confs[i].rate);
            t->tau_ns = (uint64_t)(confs[i].burst - 1) * t->interval_ns;
        }
        if (strcmp(confs[i].name, "default") == 0)
            a->def = i;
    }
    if (keytable_init(&a->keys, tc->key != TK_NONE ? tc->max_tracked : 0) < 0) {
        admit_free(a);
        return -1;
    }
    return 0;
}

int admit_routes_init(struct admit *a, const struct route_conf *routes, int n,
                      const struct admit *prev)
{
    a->rs = calloc((size_t)(n > 0 ? n : 1), sizeof *a->rs);
    if (!a->rs)
        return -1;
    for (int i = 0; i < n; i++) {
        struct route_state *st = NULL;
        for (int k = 0; prev && k < prev->nr && !st; k++)
            if (strcmp(prev->rs[k]->name, routes[i].name) == 0)
                st = prev->rs[k];
        if (st) {
            atomic_fetch_add(&st->refs, 1);
        } else if ((st = calloc(1, sizeof *st))) {
            snprintf(st->name, sizeof st->name, "%s", routes[i].name);
            atomic_init(&st->refs, 1);
        } else {
            return -1;
        }
        a->rs[i] = st;
        a->nr = i + 1;
    }
    return 0;
}

struct route_state *admit_route_state(const struct admit *a, const struct config *cfg,
                                      const struct route_conf *r)
{
    if (!r)
        return NULL;
    long i = r - cfg->routes;
    return i >= 0 && i < a->nr ? a->rs[i] : NULL;
}

void admit_free(struct admit *a)
{
    for (int i = 0; i < a->nr; i++)
        if (atomic_fetch_sub(&a->rs[i]->refs, 1) == 1)
            free(a->rs[i]);
    free(a->rs);
    a->rs = NULL;
    a->nr = 0;
    if (a->keys.cap || a->keys.slots) {
        free(a->keys.slots);
        a->keys.slots = NULL;
        a->keys.cap = 0;
        pthread_mutex_destroy(&a->keys.lock);
    }
    for (int i = 0; i < a->n; i++)
        if (atomic_fetch_sub(&a->t[i].st->refs, 1) == 1)
            free(a->t[i].st);
    free(a->t);
    a->t = NULL;
    a->n = 0;
}

/* Value of cookie `name` in the Cookie fields, or NULL. */
static const char *cookie_value(const struct http1_msg *m, const char *name, size_t *len)
{
    size_t nl = strlen(name);
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (!http1_name_is(h, "cookie"))
            continue;
        const char *p = h->value, *end = h->value + h->value_len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                p++;
            const char *semi = memchr(p, ';', (size_t)(end - p));
            const char *stop = semi ? semi : end;
            if ((size_t)(stop - p) > nl && memcmp(p, name, nl) == 0 && p[nl] == '=') {
                *len = (size_t)(stop - p) - nl - 1;
                return p + nl + 1;
            }
            p = stop;
        }
    }
    return NULL;
}

/* The raw key of a request, as configured; NULL if absent. */
static const char *key_of(const struct tenants_conf *tc, const struct http1_msg *m,
                          const char *peer, size_t *len)
{
    const struct http1_header *h;
    switch (tc->key) {
    case TK_HEADER:
        for (size_t i = 0; i < m->num_headers; i++)
            if (http1_name_is(&m->headers[i], tc->key_name)) {
                *len = m->headers[i].value_len;
                return m->headers[i].value;
            }
        return NULL;
    case TK_HOST:
        if (m->authority) {
            *len = m->authority_len;
            return m->authority;
        }
        if (m->host < 0)
            return NULL;
        h = &m->headers[m->host];
        *len = h->value_len;
        return h->value;
    case TK_COOKIE:
        return cookie_value(m, tc->key_name, len);
    case TK_IP:
        *len = strlen(peer);
        return peer;
    case TK_PATH_PREFIX: {
        const char *p = m->path ? m->path : m->target;
        const char *end = p + (m->path ? m->path_len : m->target_len);
        int seg = 0;
        const char *q = p;
        while (q < end && *q != '?') {
            if (*q == '/' && q != p && ++seg == tc->prefix_segments)
                break;
            q++;
        }
        /* "/a/b/c" with N=1 -> "a": the first N segments without the leading slash */
        *len = q > p ? (size_t)(q - p - 1) : 0;
        return p + 1;
    }
    case TK_NONE:
        break;
    }
    return NULL;
}

static uint64_t fnv1a(const char *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 1099511628211ULL;
    return h;
}

static int reusable(struct tracked *e, uint64_t now)
{
    return atomic_load(&e->active) == 0 && atomic_load(&e->st.inflight) == 0 &&
           e->st.q_head == NULL && atomic_load(&e->st.tat) <= now;
}

static void tracked_set(struct tracked *e, const struct tenant *def, const char *key, size_t n)
{
    memset(&e->st, 0, sizeof e->st);
    atomic_init(&e->st.refs, 1);
    memcpy(e->key, key, n);
    e->key[n] = '\0';
    snprintf(e->st.name, sizeof e->st.name, "%s", e->key);
    for (size_t i = 0; i <= n && i < sizeof e->label; i++) {
        unsigned char c = (unsigned char)e->key[i];
        e->label[i] = c == '\0' || isalnum(c) || strchr("._-:@/+=~", c) ? (char)c : '_';
    }
    e->t = *def;
    e->st.group = def->st; /* one class in the queue with default and its other keys */
    e->t.st = &e->st;
    e->t.tracked = e;
    e->used = 1;
}

#define PROBES 16

/* The entry of an unnamed key, made or reused; NULL when the table cannot take it. */
static struct tenant *track(struct admit *a, const char *key, size_t n)
{
    struct keytable *k = &a->keys;
    if (!k->slots || n >= sizeof k->slots[0].key)
        return NULL;
    uint64_t now = admit_now_ns();
    size_t h = (size_t)fnv1a(key, n);
    struct tracked *empty = NULL, *idle = NULL, *hit = NULL;
    pthread_mutex_lock(&k->lock);
    for (size_t i = 0; i < PROBES && !hit; i++) {
        struct tracked *e = &k->slots[(h + i) % k->cap];
        if (!e->used) {
            empty = empty ? empty : e;
            break; /* keys are never removed, so the chain ends here */
        }
        if (strlen(e->key) == n && memcmp(e->key, key, n) == 0)
            hit = e;
        else if (!idle && reusable(e, now))
            idle = e;
    }
    if (!hit && empty && k->used < k->max) {
        hit = empty;
        k->used++;
        tracked_set(hit, &a->t[a->def], key, n);
    } else if (!hit && idle) {
        hit = idle;
        tracked_set(hit, &a->t[a->def], key, n);
    }
    if (hit)
        atomic_fetch_add(&hit->active, 1);
    pthread_mutex_unlock(&k->lock);
    return hit ? &hit->t : NULL;
}

const char *admit_label(const struct tenant *t)
{
    return t->tracked ? t->tracked->label : t->conf->name;
}

static void view_add(struct tracked_view *sum, const struct tracked_view *v)
{
    sum->requests += v->requests;
    sum->admitted += v->admitted;
    for (int r = 0; r < REJ_MAX; r++)
        sum->rejected[r] += v->rejected[r];
    sum->inflight += v->inflight;
}

int admit_tracked_top(struct admit *a, struct tracked_view *out, int max,
                      struct tracked_view *rest)
{
    struct keytable *k = &a->keys;
    int n = 0;
    memset(rest, 0, sizeof *rest);
    snprintf(rest->label, sizeof rest->label, "(other)"); /* no key's label has "(" */
    if (!k->slots)
        return 0;
    pthread_mutex_lock(&k->lock);
    for (size_t i = 0; i < k->cap; i++) {
        struct tracked *e = &k->slots[i];
        if (!e->used)
            continue;
        struct tracked_view v = {.t = &e->t, .inflight = atomic_load(&e->st.inflight)};
        memcpy(v.label, e->label, sizeof v.label);
        v.admitted = v.requests = atomic_load(&e->st.admitted);
        for (int r = 0; r < REJ_MAX; r++)
            v.requests += v.rejected[r] = atomic_load(&e->st.rejected[r]);
        if (v.requests == 0 && v.inflight == 0)
            continue;
        /* keep the top `max` by requests: insertion into a short sorted array */
        int at = n;
        while (at > 0 && out[at - 1].requests < v.requests)
            at--;
        if (at >= max) {
            view_add(rest, &v);
            continue;
        }
        if (n == max)
            view_add(rest, &out[--n]);
        memmove(&out[at + 1], &out[at], (size_t)(n - at) * sizeof *out);
        out[at] = v;
        n++;
    }
    pthread_mutex_unlock(&k->lock);
    return n;
}

void admit_done(struct tenant *t)
{
    if (t && t->tracked)
        atomic_fetch_sub(&t->tracked->active, 1);
}

/* [tenants] hmac_key: the key is NAME.HEXSIG with HEXSIG = lowercase hex of
 * HMAC-SHA256(hmac_key, NAME); 1 (and *len cut to NAME) when it is, else 0. */
static int signed_key(const char *hmac_key, const char *k, size_t *len)
{
    const char *dot = NULL;
    for (size_t i = *len; i > 0 && !dot; i--)
        if (k[i - 1] == '.')
            dot = k + i - 1;
    if (!dot || (size_t)(k + *len - dot - 1) != 64 || dot == k)
        return 0;
    unsigned char mac[EVP_MAX_MD_SIZE], got[32];
    unsigned ml = 0;
    size_t nl = (size_t)(dot - k);
    if (!HMAC(EVP_sha256(), hmac_key, (int)strlen(hmac_key), (const unsigned char *)k, nl, mac,
              &ml) || ml != 32)
        return 0;
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < 32; i++) {
        const char *hi = memchr(hex, dot[1 + 2 * i], 16), *lo = memchr(hex, dot[2 + 2 * i], 16);
        if (!hi || !lo || !dot[1 + 2 * i] || !dot[2 + 2 * i])
            return 0;
        got[i] = (unsigned char)(((hi - hex) << 4) | (lo - hex));
    }
    if (CRYPTO_memcmp(mac, got, 32) != 0)
        return 0;
    *len = nl;
    return 1;
}

struct tenant *admit_classify(struct admit *a, const struct http1_msg *m, const char *peer)
{
    size_t len = 0;
    const char *k = a->conf ? key_of(a->conf, m, peer, &len) : NULL;
    if (k && len && a->conf->hmac_key && !signed_key(a->conf->hmac_key, k, &len)) {
        atomic_fetch_add_explicit(&a->bad_signatures, 1, memory_order_relaxed);
        k = NULL; /* unsigned or forged: not trusted, the request is `default`'s */
    }
    if (k && len) {
        if (a->conf->key == TK_HOST) { /* the port is not part of the tenant */
            const char *colon = memchr(k, ':', len);
            if (colon && k[0] != '[')
                len = (size_t)(colon - k);
        }
        for (int i = 0; i < a->n; i++) {
            const char *name = a->t[i].conf->name;
            if (strlen(name) == len && strncasecmp(name, k, len) == 0 && i != a->def)
                return &a->t[i];
        }
        struct tenant *t = track(a, k, len);
        if (t)
            return t;
    }
    return &a->t[a->def];
}

uint64_t admit_rate(struct tenant *t, uint64_t now)
{
    return admit_rate_share(t, now, 1);
}

uint64_t admit_rate_share(struct tenant *t, uint64_t now, int share)
{
    if (t->interval_ns == 0) {
        admit_count(t);
        return 0;
    }
    if (share < 1)
        share = 1;
    uint64_t interval = t->interval_ns * (uint64_t)share;
    int burst = t->conf->burst / share > 1 ? t->conf->burst / share : 1;
    uint64_t tau = share == 1 ? t->tau_ns : (uint64_t)(burst - 1) * interval;
    uint64_t tat = atomic_load_explicit(&t->st->tat, memory_order_relaxed);
    for (;;) {
        uint64_t base = tat > now ? tat : now;
        if (base - now > tau)
            return base - now - tau; /* the refusal is counted when it is answered */
        if (atomic_compare_exchange_weak_explicit(&t->st->tat, &tat, base + interval,
                                                  memory_order_relaxed, memory_order_relaxed)) {
            admit_count(t);
            return 0;
        }
    }
}

void admit_count(struct tenant *t)
{
    atomic_fetch_add_explicit(&t->st->admitted, 1, memory_order_relaxed);
}

void admit_rejected(struct tenant *t, enum reject_reason r)
{
    atomic_fetch_add_explicit(&t->st->rejected[r], 1, memory_order_relaxed);
}

static const char *const reason_names[] = {
#define REJ_NAME(id, name, help) name,
    REJECT_REASONS(REJ_NAME)
#undef REJ_NAME
};

const char *admit_reason_name(enum reject_reason r)
{
    return r < REJ_MAX ? reason_names[r] : "?";
}

int admit_reason_of(const char *code)
{
    for (int r = 0; r < REJ_MAX; r++)
        if (strcmp(code, reason_names[r]) == 0)
            return r;
    return -1;
}

int admit_take(struct tenant *t)
{
    return atomic_take_below(&t->st->inflight, t->conf->max_inflight);
}

void admit_give(struct tenant *t)
{
    atomic_fetch_sub_explicit(&t->st->inflight, 1, memory_order_relaxed);
}

const struct route_conf *admit_route(const struct config *cfg, const char *path, size_t len)
{
    const struct route_conf *best = NULL;
    size_t best_len = 0;
    for (size_t i = 0; i < cfg->nroutes; i++) {
        const struct route_conf *r = &cfg->routes[i];
        size_t pl = strlen(r->prefix);
        if (pl >= best_len && uri_prefix_match(path, len, r->prefix, pl)) {
            best = r;
            best_len = pl;
        }
    }
    return best;
}
