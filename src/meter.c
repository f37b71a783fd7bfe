/* meter: series of latencies and status classes, ticked into windows (see meter.h). */
#include <sluice/meter.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sluice/runtime.h>

static struct series *series_new(struct meter *m, enum series_kind kind, const char *name)
{
    struct series *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->shard = calloc((size_t)m->nthreads, sizeof *s->shard);
    if (!s->shard) {
        free(s);
        return NULL;
    }
    s->kind = kind;
    s->nshards = m->nthreads;
    snprintf(s->name, sizeof s->name, "%s", name);
    hist_window_init(&s->win);
    for (int c = 0; c < METER_CLASSES; c++)
        rate_window_init(&s->st[c]);
    s->next = m->all;
    m->all = s;
    return s;
}

struct meter *meter_new(int nthreads)
{
    struct meter *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->nthreads = nthreads > 0 ? nthreads : 1;
    rate_window_init(&m->admitted);
    m->pool = series_new(m, SER_POOL, "pool");
    m->queue = series_new(m, SER_POOL_QUEUE, "pool-queue");
    m->upstream = series_new(m, SER_POOL_UPSTREAM, "pool-upstream");
    if (!m->pool || !m->queue || !m->upstream) {
        meter_free(m);
        return NULL;
    }
    return m;
}

void meter_free(struct meter *m)
{
    if (!m)
        return;
    for (struct series *s = m->all, *next; s; s = next) {
        next = s->next;
        free(s->shard);
        free(s);
    }
    free(m);
}

static struct series *find(struct meter *m, enum series_kind kind, const char *name)
{
    char as_kept[sizeof m->all->name]; /* names are kept truncated */
    snprintf(as_kept, sizeof as_kept, "%s", name);
    for (struct series *s = m->all; s; s = s->next)
        if (s->kind == kind && strcmp(s->name, as_kept) == 0)
            return s;
    return NULL;
}

/* Give *slot a series if it has none: the one this name already has (a backend, tenant or
 * route removed by a reload and added back by a later one keeps its history, and
 * alternating configurations do not pile up series), else a new one. 0 or -1. */
static int attach(struct meter *m, struct series *_Atomic *slot, enum series_kind kind,
                  const char *name)
{
    if (atomic_load_explicit(slot, memory_order_acquire))
        return 0;
    struct series *s = find(m, kind, name);
    if (!s)
        s = series_new(m, kind, name);
    if (!s)
        return -1;
    atomic_store_explicit(slot, s, memory_order_release);
    return 0;
}

int meter_attach(struct meter *m, const struct runtime *rt)
{
    int rc = 0;
    for (int i = 0; i < rt->up.n; i++)
        rc |= attach(m, &rt->up.b[i].st->ser, SER_BACKEND, rt->up.b[i].st->name);
    for (int i = 0; i < rt->admit.n; i++)
        rc |= attach(m, &rt->admit.t[i].st->ser, SER_TENANT, rt->admit.t[i].st->name);
    for (int i = 0; i < rt->admit.nr; i++)
        rc |= attach(m, &rt->admit.rs[i]->ser, SER_ROUTE, rt->admit.rs[i]->name);
    return rc ? -1 : 0;
}

int meter_series_count(const struct meter *m)
{
    int n = 0;
    for (const struct series *s = m->all; s; s = s->next)
        n++;
    return n;
}

void meter_record(struct series *s, int thread, uint64_t us, int status)
{
    if (!s || thread < 0 || thread >= s->nshards)
        return;
    struct series_shard *sh = &s->shard[thread];
    hist_record(&sh->lat, us);
    int c = status >= 100 && status < 600 ? status / 100 : 0;
    uint64_t v = atomic_load_explicit(&sh->status[c], memory_order_relaxed);
    atomic_store_explicit(&sh->status[c], v + 1, memory_order_relaxed); /* one writer */
}

/* Fold what the shards recorded since the last tick into the windows. */
static void tick_series(struct series *s, uint64_t now_s)
{
    struct hist_snap one, second;
    uint64_t st[METER_CLASSES] = {0};
    hist_reset(&s->cum);
    for (int t = 0; t < s->nshards; t++) {
        hist_snapshot(&one, &s->shard[t].lat);
        hist_merge(&s->cum, &one);
        for (int c = 0; c < METER_CLASSES; c++)
            st[c] += atomic_load_explicit(&s->shard[t].status[c], memory_order_relaxed);
    }
    hist_delta(&second, &s->cum, &s->prev);
    s->prev = s->cum;
    hist_window_tick(&s->win, now_s, &second);
    for (int c = 0; c < METER_CLASSES; c++) {
        rate_window_tick(&s->st[c], now_s, st[c] - s->st_prev[c]);
        s->st_prev[c] = st[c];
    }
}

void meter_tick(struct meter *m, uint64_t now_s, uint64_t admitted)
{
    for (struct series *s = m->all; s; s = s->next)
        tick_series(s, now_s);
    rate_window_tick(&m->admitted, now_s, admitted - m->admitted_prev);
    if (!m->first_s)
        m->first_s = now_s;
    for (uint64_t t = m->last_s; m->last_s && t + 1 < now_s && t + 1 < m->last_s + HIST_WIN_MAX_S;
         t++)
        m->arrivals[t % HIST_WIN_MAX_S] = 0; /* seconds the ticks skipped: none seen */
    if (now_s > m->last_s || !m->last_s)
        m->arrivals[(now_s - 1) % HIST_WIN_MAX_S] = 0;
    m->arrivals[(now_s - 1) % HIST_WIN_MAX_S] += (uint32_t)(admitted - m->admitted_prev);
    m->admitted_prev = admitted;
    if (now_s > m->last_s)
        m->last_s = now_s;
}

int meter_arrivals(const struct meter *m, uint64_t span_s, uint32_t *out)
{
    if (!m->last_s)
        return 0;
    uint64_t n = m->last_s - m->first_s + 1; /* seconds ticked, the first one's included */
    n = n < span_s ? n : span_s;
    n = n < HIST_WIN_MAX_S ? n : HIST_WIN_MAX_S;
    for (uint64_t i = 0; i < n; i++)
        out[i] = m->arrivals[(m->last_s - n + i) % HIST_WIN_MAX_S];
    return (int)n;
}

uint64_t meter_hist(const struct series *s, uint64_t span_s, struct hist_snap *out)
{
    if (!s) {
        hist_reset(out);
        return 0;
    }
    return hist_window_get(&s->win, span_s, out);
}

uint64_t meter_quantile_us(const struct series *s, uint64_t span_s, double q)
{
    if (!s)
        return 0;
    struct hist_snap h; /* 7 KB: main thread only, on its 8 MB stack */
    hist_window_get(&s->win, span_s, &h);
    return hist_quantile_us(&h, q);
}

void meter_window(const struct series *s, uint64_t span_s, struct meter_win *out)
{
    struct hist_snap snap, *h = &snap;
    memset(out, 0, sizeof *out);
    if (!s)
        return;
    out->covered_s = hist_window_get(&s->win, span_s, h);
    out->requests = hist_count(h);
    out->rate = out->covered_s ? (double)out->requests / (double)out->covered_s : 0;
    out->p50_us = hist_quantile_us(h, 0.50);
    out->p95_us = hist_quantile_us(h, 0.95);
    out->p99_us = hist_quantile_us(h, 0.99);
    out->max_us = hist_max_us(h);
    out->mean_us = hist_mean_us(h);
    out->busy_s = (double)h->sum_us / 1e6;
    for (int c = 0; c < METER_CLASSES; c++)
        rate_window_get(&s->st[c], span_s, &out->status[c]);
}

double meter_admitted_rate(const struct meter *m, uint64_t span_s)
{
    return rate_window_per_s(&m->admitted, span_s);
}
