/* admin: status page, /status.json, /metrics and actions on the main thread (see admin.h).
 * Every number comes from the shared state the workers already keep; nothing here is
 * computed on a worker's behalf. */
#include <sluice/admin.h>
#include <sluice/version.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>

#include <event2/keyvalq_struct.h>
#include <openssl/crypto.h>

#include <sluice/adaptive.h>
#include <sluice/autoscale.h>
#include <sluice/json.h>
#include <sluice/log.h>
#include <sluice/meter.h>
#include <sluice/runtime.h>
#include <sluice/stats.h>
#include <sluice/worker.h>


extern const char status_html[];      /* src/status.html, embedded by the Makefile */
extern const size_t status_html_len;

struct admin {
    struct proxy *px;                 /* borrowed */
    struct evhttp *http;              /* owned */
    char listen[128];                 /* what it is bound to */
    char token[256];                  /* the current generation's; "" = actions refused */
    int reads_need_token;             /* bound beyond loopback: every request needs it */
    char listen_host[80];             /* the host it is bound to, as a Host field names it */
    char hosts[512];                  /* [admin] hosts of the current generation */
    char instance[96];
    uint64_t started;                 /* monotonic s */
};

static uint64_t mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec;
}

static uint64_t total(struct proxy *px, enum stat_id id)
{
    return stats_sum(&px->workers[0].stats, px->nworkers, sizeof(struct worker), id);
}

static const uint64_t spans[] = {10, 60, 300};
static const char *const span_names[] = {"10s", "1m", "5m"};

/* One window W of a series; cap > 0 adds utilisation (mean in flight at backends / cap,
 * from `up` when given); extra: the pool's queueing and upstream series. */
static void json_window(struct evbuffer *o, const struct series *s, uint64_t span, int cap,
                        const struct series *q, const struct series *up)
{
    struct meter_win w;
    meter_window(s, span, &w);
    evbuffer_add_printf(o, "{\"rate\":%.3f,\"requests\":%" PRIu64 ",\"p50_ms\":%.3f,"
                           "\"p95_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,\"mean_ms\":%.3f,",
                        w.rate, w.requests, w.p50_us / 1e3, w.p95_us / 1e3, w.p99_us / 1e3,
                        w.max_us / 1e3, w.mean_us / 1e3);
    evbuffer_add_printf(o, "\"status\":{\"none\":%" PRIu64 ",\"1xx\":%" PRIu64 ",\"2xx\":%" PRIu64
                           ",\"3xx\":%" PRIu64 ",\"4xx\":%" PRIu64 ",\"5xx\":%" PRIu64 "}",
                        w.status[0], w.status[1], w.status[2], w.status[3], w.status[4],
                        w.status[5]);
    if (cap > 0 && w.covered_s) {
        /* busy workers / capacity: the time requests spent at backends (the upstream
         * series when given: the pool's own total time counts their queueing too, which
         * read 45.6 for a pool 99.9 % busy, issue 18) */
        struct meter_win u;
        if (up)
            meter_window(up, span, &u);
        const struct meter_win *b = up ? &u : &w;
        if (b->covered_s)
            evbuffer_add_printf(o, ",\"utilisation\":%.4f",
                                b->busy_s / (double)b->covered_s / cap);
    }
    if (q)
        evbuffer_add_printf(o, ",\"queue_p95_ms\":%.3f",
                            meter_quantile_us(q, span, 0.95) / 1e3);
    if (up)
        evbuffer_add_printf(o, ",\"upstream_p95_ms\":%.3f",
                            meter_quantile_us(up, span, 0.95) / 1e3);
    evbuffer_add_printf(o, "}");
}

static void json_windows(struct evbuffer *o, const struct series *s, int cap,
                         const struct series *q, const struct series *up)
{
    if (!s) {
        evbuffer_add_printf(o, "\"windows\":null");
        return;
    }
    evbuffer_add_printf(o, "\"windows\":{");
    for (int i = 0; i < 3; i++) {
        evbuffer_add_printf(o, "%s\"%s\":", i ? "," : "", span_names[i]);
        json_window(o, s, spans[i], cap, q, up);
    }
    evbuffer_add_printf(o, "}");
}

static const char *backend_state(const struct backend *b, uint64_t now)
{
    if (up_draining(b))
        return "draining";
    if (!up_is_up(b, now))
        return "down";
    if (up_effective_weight(b, now) < (long)b->conf->weight * 1000)
        return "slow-start";
    return "up";
}

static void json_backends(struct evbuffer *o, const struct runtime *rt, uint64_t now)
{
    evbuffer_add_printf(o, "\"backends\":[");
    for (int i = 0; i < rt->up.n; i++) {
        const struct backend *b = &rt->up.b[i];
        const struct backend_state *st = b->st;
        int mode = b->conf->workers;
        evbuffer_add_printf(o, "%s{\"name\":", i ? "," : "");
        json_str(o, b->conf->name);
        evbuffer_add_printf(o, ",\"address\":");
        json_str(o, b->conf->address);
        evbuffer_add_printf(o, ",\"state\":\"%s\",\"weight\":%d,\"capacity\":%d,"
                               "\"capacity_mode\":\"%s\",\"inflight\":%d,\"requests\":%" PRIu64
                               ",\"failures\":%" PRIu64 ",\"health_status\":%d,",
                            backend_state(b, now), b->conf->weight, up_capacity(b),
                            mode > 0 ? "fixed" : mode < 0 ? "auto" : "none", up_inflight(b),
                            (uint64_t)atomic_load(&st->requests),
                            (uint64_t)atomic_load(&st->failures),
                            atomic_load(&st->hc_last_status));
        if (b->ad)
            evbuffer_add_printf(o, "\"learned_min_rtt_ms\":%.3f,",
                                adaptive_min_rtt_us(b->ad) / 1e3);
        json_windows(o, atomic_load(&st->ser), up_capacity(b), NULL, NULL);
        evbuffer_add_printf(o, "}");
    }
    evbuffer_add_printf(o, "]");
}

static void json_rejected(struct evbuffer *o, const struct tenant_state *st)
{
    evbuffer_add_printf(o, "\"rejected\":{");
    for (int r = 0; r < REJ_MAX; r++)
        evbuffer_add_printf(o, "%s\"%s\":%" PRIu64, r ? "," : "", admit_reason_name(r),
                            (uint64_t)atomic_load(&st->rejected[r]));
    evbuffer_add_printf(o, "}");
}

/* One tenant's object: limits from conf, counts from st (or from v for an unnamed key). */
static void json_tenant(struct evbuffer *o, struct proxy *px, const struct tenant *t,
                        const char *name, const struct tracked_view *v)
{
    const struct tenant_conf *tc = t->conf;
    pthread_mutex_lock(&px->queue.lock);
    int queued = t->st->queued, standing = t->st->standing;
    int class_queued = t->st->class_queued, class_standing = t->st->class_standing;
    uint32_t target = queue_target_of(&px->queue, t->st);
    pthread_mutex_unlock(&px->queue.lock);
    evbuffer_add_printf(o, "{\"name\":");
    json_str(o, name);
    evbuffer_add_printf(o, ",\"unnamed\":%s,\"rate\":%g,\"burst\":%d,\"weight\":%d,"
                           "\"max_inflight\":%d,\"max_queue\":%d,\"inflight\":%d,\"queued\":%d,"
                           "\"admitted\":%" PRIu64 ",\"standing\":%s,\"target_ms\":%u,"
                           "\"cost_ms\":%.1f,\"class_queued\":%d,\"class_standing\":%s,",
                        v ? "true" : "false", tc->rate, tc->burst, tc->weight, tc->max_inflight,
                        tc->max_queue, v ? v->inflight : atomic_load(&t->st->inflight), queued,
                        v ? v->admitted : (uint64_t)atomic_load(&t->st->admitted),
                        standing ? "true" : "false", target,
                        (double)atomic_load(&t->st->cost_us) / 1000.0, class_queued,
                        class_standing ? "true" : "false");
    json_rejected(o, t->st);
    evbuffer_add(o, ",", 1);
    json_windows(o, v ? NULL : atomic_load(&t->st->ser), 0, NULL, NULL);
    evbuffer_add_printf(o, "}");
}

#define TOP_UNNAMED_JSON 20    /* unnamed tenant keys in /status.json, busiest first */
#define TOP_UNNAMED_METRICS 10 /* ... in /metrics (the rest summed as tenant="(other)") */

/* The named tenants, then the busiest unnamed keys ([tenants] max_tracked of them are
 * tracked; "unnamed_others" sums the rest). */
static void json_tenants(struct evbuffer *o, struct proxy *px, const struct runtime *rt)
{
    struct admit *a = (struct admit *)&rt->admit;
    evbuffer_add_printf(o, "\"tenants\":[");
    for (int i = 0; i < a->n; i++) {
        evbuffer_add_printf(o, "%s", i ? "," : "");
        json_tenant(o, px, &a->t[i], a->t[i].conf->name, NULL);
    }
    struct tracked_view top[TOP_UNNAMED_JSON], rest;
    int n = admit_tracked_top(a, top, TOP_UNNAMED_JSON, &rest);
    for (int i = 0; i < n; i++) {
        evbuffer_add_printf(o, "%s", a->n + i ? "," : "");
        json_tenant(o, px, top[i].t, top[i].label, &top[i]);
    }
    evbuffer_add_printf(o, "],\"unnamed_others\":{\"requests\":%" PRIu64 ",\"admitted\":%"
                           PRIu64 ",\"inflight\":%d}",
                        rest.requests, rest.admitted, rest.inflight);
}

static void json_routes(struct evbuffer *o, const struct runtime *rt)
{
    const struct config *c = rt->cfg;
    evbuffer_add_printf(o, "\"routes\":[");
    for (size_t i = 0; i < c->nroutes; i++) {
        const struct route_conf *r = &c->routes[i];
        const struct route_state *rs = admit_route_state(&rt->admit, c, r);
        evbuffer_add_printf(o, "%s{\"name\":", i ? "," : "");
        json_str(o, r->name);
        evbuffer_add_printf(o, ",\"prefix\":");
        json_str(o, r->prefix);
        evbuffer_add_printf(o, ",\"bypass\":%s,\"max_inflight\":%d,\"inflight\":%d,",
                            r->bypass ? "true" : "false", r->max_inflight,
                            rs ? atomic_load(&rs->inflight) : 0);
        json_windows(o, rs ? atomic_load(&rs->ser) : NULL, 0, NULL, NULL);
        evbuffer_add_printf(o, "}");
    }
    evbuffer_add_printf(o, "]");
}

static void json_queue(struct evbuffer *o, struct proxy *px, const struct config *c)
{
    struct queue *q = &px->queue;
    char target[16], interval[16]; /* auto: null (decided per tenant, see "tenants") */
    snprintf(target, sizeof target, c->queue_target_ms == QUEUE_AUTO ? "null" : "%u",
             c->queue_target_ms);
    snprintf(interval, sizeof interval, c->queue_interval_ms == QUEUE_AUTO ? "null" : "%u",
             c->queue_interval_ms);
    evbuffer_add_printf(o, "\"queue\":{\"depth\":%d,\"max\":%d,\"timeout_ms\":%u,"
                           "\"target_ms\":%s,\"interval_ms\":%s,\"auto\":%s,\"shed\":%" PRIu64
                           ",\"timeouts\":%" PRIu64 ",\"full\":%" PRIu64 "}",
                        queue_len(q), c->queue_max, c->queue_timeout_ms, target, interval,
                        c->queue_target_ms == QUEUE_AUTO ? "true" : "false",
                        (uint64_t)atomic_load(&q->shed), (uint64_t)atomic_load(&q->timeouts),
                        (uint64_t)atomic_load(&q->full));
}

static void json_buffers(struct evbuffer *o, struct proxy *px, const struct config *c)
{
    evbuffer_add_printf(o, "\"buffers\":{\"used\":%zu,\"limit\":%zu,\"trims\":%zu}",
                        bufmem_used(&px->bufmem), c->proxy.buffer_memory, px->bufmem.trims);
}

static void json_pool(struct evbuffer *o, const struct meter *m, const struct runtime *rt)
{
    int inflight = 0, cap = 0;
    for (int i = 0; i < rt->up.n; i++) {
        inflight += up_inflight(&rt->up.b[i]);
        cap += up_capacity(&rt->up.b[i]);
    }
    evbuffer_add_printf(o, "\"pool\":{\"inflight\":%d,\"capacity\":%d,\"admitted_rate\":{"
                           "\"10s\":%.3f,\"1m\":%.3f,\"5m\":%.3f},",
                        inflight, cap, meter_admitted_rate(m, 10), meter_admitted_rate(m, 60),
                        meter_admitted_rate(m, 300));
    json_windows(o, m->pool, cap, m->queue, m->upstream);
    evbuffer_add_printf(o, "}");
}

static void json_totals(struct evbuffer *o, struct proxy *px)
{
    evbuffer_add_printf(o, "\"totals\":{");
    for (int id = 0; id < STAT_MAX; id++)
        evbuffer_add_printf(o, "%s\"%s\":%" PRIu64, id ? "," : "", stats_name(id),
                            total(px, id));
    evbuffer_add_printf(o, ",\"reloads\":%" PRIu64 ",\"reload_failures\":%" PRIu64 "}",
                        (uint64_t)atomic_load(&px->reloads),
                        (uint64_t)atomic_load(&px->reload_failures));
}

void admin_status_json(struct admin *a, struct evbuffer *o)
{
    struct proxy *px = a->px;
    struct runtime *rt = atomic_load(&px->rt);
    runtime_ref(rt);
    uint64_t now = up_now_ms();
    evbuffer_add_printf(o, "{\"instance\":");
    json_str(o, a->instance);
    evbuffer_add_printf(o, ",\"version\":\"%s\",\"generation\":%u,\"uptime_s\":%" PRIu64
                           ",\"threads\":%d,\"time\":%lld,",
                        SLUICE_VERSION, rt->generation,
                        mono_s() - a->started, px->nworkers,
                        (long long)time(NULL));
    json_queue(o, px, rt->cfg);
    evbuffer_add_printf(o, ",");
    json_buffers(o, px, rt->cfg);
    evbuffer_add(o, ",", 1);
    json_pool(o, px->meter, rt);
    evbuffer_add(o, ",", 1);
    json_backends(o, rt, now);
    evbuffer_add(o, ",", 1);
    json_tenants(o, px, rt);
    evbuffer_add(o, ",", 1);
    json_routes(o, rt);
    evbuffer_add(o, ",", 1);
    json_totals(o, px);
    evbuffer_add_printf(o, ",\"scale\":");
    autoscale_json(px->scaler, o);
    evbuffer_add_printf(o, "}\n");
    runtime_unref(rt);
}

/* ---- Prometheus text format (version 0.0.4) ---- */

static void prom_head(struct evbuffer *o, const char *name, const char *type, const char *help)
{
    evbuffer_add_printf(o, "# HELP sluice_%s %s\n# TYPE sluice_%s %s\n", name, help, name, type);
}

static void prom_backends(struct evbuffer *o, const struct runtime *rt, uint64_t now)
{
    static const struct {
        const char *name, *type, *help;
    } m[] = {{"backend_up", "gauge", "1 if the backend takes requests now"},
             {"backend_inflight", "gauge", "requests in flight to the backend"},
             {"backend_capacity", "gauge", "the backend's concurrency limit (0 = none)"},
             {"backend_requests_total", "counter", "requests sent to the backend"},
             {"backend_failures_total", "counter", "connect and read failures"}};
    for (size_t k = 0; k < sizeof m / sizeof m[0]; k++) {
        prom_head(o, m[k].name, m[k].type, m[k].help);
        for (int i = 0; i < rt->up.n; i++) {
            const struct backend *b = &rt->up.b[i];
            uint64_t v = k == 0   ? (uint64_t)up_is_up(b, now)
                         : k == 1 ? (uint64_t)up_inflight(b)
                         : k == 2 ? (uint64_t)up_capacity(b)
                         : k == 3 ? (uint64_t)atomic_load(&b->st->requests)
                                  : (uint64_t)atomic_load(&b->st->failures);
            evbuffer_add_printf(o, "sluice_%s{backend=\"%s\"} %" PRIu64 "\n", m[k].name,
                                b->conf->name, v);
        }
    }
}

/* One tenant's series: named tenants, the busiest unnamed keys, and tenant="other" for the
 * rest of them (bounded cardinality, whatever keys clients send). */
static void prom_tenants(struct evbuffer *o, struct proxy *px, const struct runtime *rt)
{
    struct admit *a = (struct admit *)&rt->admit;
    struct tracked_view v[TOP_UNNAMED_METRICS + 1];
    int nv = a->n;
    struct tracked_view *all = calloc((size_t)nv + TOP_UNNAMED_METRICS + 1, sizeof *all);
    if (!all)
        return;
    for (int i = 0; i < a->n; i++) {
        struct tenant_state *st = a->t[i].st;
        snprintf(all[i].label, sizeof all[i].label, "%s", st->name);
        all[i].t = &a->t[i];
        all[i].admitted = atomic_load(&st->admitted);
        for (int r = 0; r < REJ_MAX; r++)
            all[i].rejected[r] = atomic_load(&st->rejected[r]);
        all[i].inflight = atomic_load(&st->inflight);
    }
    int n = admit_tracked_top(a, v, TOP_UNNAMED_METRICS, &v[TOP_UNNAMED_METRICS]);
    memcpy(&all[nv], v, (size_t)n * sizeof *v);
    nv += n;
    if (v[TOP_UNNAMED_METRICS].requests || v[TOP_UNNAMED_METRICS].inflight)
        all[nv++] = v[TOP_UNNAMED_METRICS];
    prom_head(o, "tenant_admitted_total", "counter", "requests admitted, by tenant");
    for (int i = 0; i < nv; i++)
        evbuffer_add_printf(o, "sluice_tenant_admitted_total{tenant=\"%s\"} %" PRIu64 "\n",
                            all[i].label, all[i].admitted);
    prom_head(o, "tenant_rejected_total", "counter", "requests refused, by tenant and reason");
    for (int i = 0; i < nv; i++)
        for (int r = 0; r < REJ_MAX; r++)
            evbuffer_add_printf(o, "sluice_tenant_rejected_total{tenant=\"%s\",reason=\"%s\"} %"
                                   PRIu64 "\n",
                                all[i].label, admit_reason_name(r), all[i].rejected[r]);
    prom_head(o, "tenant_inflight", "gauge", "requests of the tenant at backends now");
    for (int i = 0; i < nv; i++)
        evbuffer_add_printf(o, "sluice_tenant_inflight{tenant=\"%s\"} %d\n", all[i].label,
                            all[i].inflight);
    prom_head(o, "tenant_queued", "gauge", "requests of the tenant waiting for a slot now");
    for (int i = 0; i < nv; i++) {
        int queued = 0;
        pthread_mutex_lock(&px->queue.lock);
        if (all[i].t)
            queued = all[i].t->st->queued;
        pthread_mutex_unlock(&px->queue.lock);
        evbuffer_add_printf(o, "sluice_tenant_queued{tenant=\"%s\"} %d\n", all[i].label, queued);
    }
    free(all);
}

/* Latency quantiles over the last minute, as gauges (a summary's quantiles without its
 * _sum/_count, which Prometheus would read as cumulative since start). */
static void prom_quantiles(struct evbuffer *o, const char *metric, const char *label,
                           const char *name, const struct series *s)
{
    static const double qs[] = {0.5, 0.95, 0.99};
    for (size_t i = 0; s && i < 3; i++)
        evbuffer_add_printf(o, "sluice_%s{%s=\"%s\",quantile=\"%g\"} %.6f\n", metric, label,
                            name, qs[i], meter_quantile_us(s, 60, qs[i]) / 1e6);
}

static void prom_latency(struct evbuffer *o, const struct meter *m, const struct runtime *rt)
{
    prom_head(o, "pool_latency_seconds", "gauge",
              "the pool's latency quantiles over the last minute: total, queueing, upstream");
    prom_quantiles(o, "pool_latency_seconds", "part", "total", m->pool);
    prom_quantiles(o, "pool_latency_seconds", "part", "queue", m->queue);
    prom_quantiles(o, "pool_latency_seconds", "part", "upstream", m->upstream);
    prom_head(o, "backend_latency_seconds", "gauge",
              "upstream time quantiles per backend over the last minute");
    for (int i = 0; i < rt->up.n; i++)
        prom_quantiles(o, "backend_latency_seconds", "backend", rt->up.b[i].st->name,
                       atomic_load(&rt->up.b[i].st->ser));
    prom_head(o, "tenant_latency_seconds", "gauge",
              "total time quantiles per tenant over the last minute");
    for (int i = 0; i < rt->admit.n; i++)
        prom_quantiles(o, "tenant_latency_seconds", "tenant", rt->admit.t[i].st->name,
                       atomic_load(&rt->admit.t[i].st->ser));
    prom_head(o, "route_latency_seconds", "gauge",
              "total time quantiles per route over the last minute");
    for (int i = 0; i < rt->admit.nr; i++)
        prom_quantiles(o, "route_latency_seconds", "route", rt->admit.rs[i]->name,
                       atomic_load(&rt->admit.rs[i]->ser));
}

void admin_metrics(struct admin *a, struct evbuffer *o)
{
    struct proxy *px = a->px;
    struct runtime *rt = atomic_load(&px->rt);
    runtime_ref(rt);
    for (int id = 0; id < STAT_MAX; id++) {
        char name[96];
        snprintf(name, sizeof name, "%s_total", stats_name(id));
        prom_head(o, name, "counter", stats_help(id));
        evbuffer_add_printf(o, "sluice_%s %" PRIu64 "\n", name, total(px, id));
    }
    prom_head(o, "queue_depth", "gauge", "requests waiting for a backend slot now");
    evbuffer_add_printf(o, "sluice_queue_depth %d\n", queue_len(&px->queue));
    prom_head(o, "buffer_memory_bytes", "gauge",
              "memory reserved by request bodies buffered before a backend is chosen");
    evbuffer_add_printf(o, "sluice_buffer_memory_bytes %zu\n", bufmem_used(&px->bufmem));
    prom_head(o, "buffer_memory_limit_bytes", "gauge", "[proxy] buffer_memory");
    evbuffer_add_printf(o, "sluice_buffer_memory_limit_bytes %zu\n",
                        rt->cfg->proxy.buffer_memory);
    prom_head(o, "reloads_total", "counter", "successful configuration reloads");
    evbuffer_add_printf(o, "sluice_reloads_total %" PRIu64 "\n",
                        (uint64_t)atomic_load(&px->reloads));
    prom_head(o, "reload_failures_total", "counter", "reloads refused (the old config kept)");
    evbuffer_add_printf(o, "sluice_reload_failures_total %" PRIu64 "\n",
                        (uint64_t)atomic_load(&px->reload_failures));
    prom_head(o, "access_log_lost_total", "counter", "access-log lines lost to failed writes");
    evbuffer_add_printf(o, "sluice_access_log_lost_total %" PRIu64 "\n", log_access_lost());
    prom_head(o, "meter_series", "gauge",
              "latency series kept (one per backend, tenant and route name ever configured)");
    evbuffer_add_printf(o, "sluice_meter_series %d\n", meter_series_count(px->meter));
    prom_backends(o, rt, up_now_ms());
    prom_tenants(o, px, rt);
    prom_latency(o, px->meter, rt);
    autoscale_metrics(px->scaler, o);
    runtime_unref(rt);
}

/* ---- HTTP ---- */

static void reply(struct evhttp_request *req, int code, const char *reason, const char *type,
                  struct evbuffer *body)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", type);
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    evhttp_send_reply(req, code, reason, body);
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
    struct evbuffer *b = evbuffer_new();
    if (b)
        evbuffer_add_printf(b, "%s\n", msg);
    reply(req, code, reason, "text/plain; charset=utf-8", b);
    if (b)
        evbuffer_free(b);
}

/* 1 if word[0..n) is one of the space- or comma-separated names of list (any case). */
static int in_list(const char *list, const char *word, size_t n)
{
    const char *p = list;
    while (*p) {
        p += strspn(p, " ,\t");
        size_t l = strcspn(p, " ,\t");
        if (l == n && l > 0 && strncasecmp(p, word, n) == 0)
            return 1;
        p += l;
    }
    return 0;
}

/* Without the token, only a Host that names this address (its listen host, a loopback name,
 * or one of [admin] hosts) may read: a page in a browser on this machine that reaches a
 * loopback admin port through DNS rebinding sends its own name as Host, and is refused.
 * The port is not compared (port forwarding changes it; rebinding does not need it). */
static int host_allowed(const struct admin *a, struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    if (!h)
        return 1; /* HTTP/1.0 without Host: not a browser */
    size_t n = h[0] == '[' ? strcspn(h, "]") + (strchr(h, ']') != NULL) : strcspn(h, ":");
    return in_list("localhost 127.0.0.1 [::1]", h, n) || in_list(a->listen_host, h, n) ||
           in_list(a->hosts, h, n);
}

/* 1 if the request carries the token (Authorization: Bearer TOKEN), constant time. */
static int authorized(const struct admin *a, struct evhttp_request *req)
{
    const char *h = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    size_t tl = strlen(a->token);
    if (!h || strncmp(h, "Bearer ", 7) != 0 || !tl || strlen(h + 7) != tl)
        return 0;
    return CRYPTO_memcmp(h + 7, a->token, tl) == 0;
}

static struct backend *find_backend(const struct runtime *rt, const char *name)
{
    for (int i = 0; name && i < rt->up.n; i++)
        if (strcmp(rt->up.b[i].conf->name, name) == 0)
            return &rt->up.b[i];
    return NULL;
}

static struct tenant *find_tenant(const struct runtime *rt, const char *name)
{
    for (int i = 0; name && i < rt->admit.n; i++)
        if (strcmp(rt->admit.t[i].conf->name, name) == 0)
            return &rt->admit.t[i];
    return NULL;
}

/* POST /actions/{drain,undrain}?backend=NAME, /actions/reset?tenant=NAME */
static void action(struct admin *a, struct evhttp_request *req, const char *what,
                   const char *query)
{
    if (!a->token[0]) {
        reply_text(req, 403, "Forbidden", "actions need [admin] token to be set");
        return;
    }
    if (!authorized(a, req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        reply_text(req, 401, "Unauthorized", "send Authorization: Bearer <[admin] token>");
        return;
    }
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    evhttp_parse_query_str(query ? query : "", &q);
    struct runtime *rt = atomic_load(&a->px->rt);
    const char *bn = evhttp_find_header(&q, "backend"), *tn = evhttp_find_header(&q, "tenant");
    struct backend *b = find_backend(rt, bn);
    struct tenant *t = find_tenant(rt, tn);
    char msg[200];
    if ((strcmp(what, "drain") == 0 || strcmp(what, "undrain") == 0) && b) {
        atomic_store(&b->st->admin_drain, what[0] == 'd' ? 1 : 2);
        snprintf(msg, sizeof msg, "backend %s: %sed", b->conf->name, what);
    } else if (strcmp(what, "reset") == 0 && t) {
        atomic_store(&t->st->tat, 0);
        snprintf(msg, sizeof msg, "tenant %s: limiter reset (this instance)", t->conf->name);
    } else {
        evhttp_clear_headers(&q);
        reply_text(req, 404, "Not Found", "unknown action, backend or tenant");
        return;
    }
    evhttp_clear_headers(&q);
    log_warn("admin", "%s (client %s)", msg, "admin API");
    reply_text(req, 200, "OK", msg);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    const struct evhttp_uri *u = evhttp_request_get_evhttp_uri(req);
    const char *path = u ? evhttp_uri_get_path(u) : NULL;
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    if (!path) {
        reply_text(req, 400, "Bad Request", "bad request target");
        return;
    }
    int is_action = strncmp(path, "/actions/", 9) == 0;
    if (a->reads_need_token && !authorized(a, req)) {
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate", "Bearer");
        reply_text(req, 401, "Unauthorized", "this admin address needs Authorization: Bearer "
                   "<[admin] token>");
        return;
    }
    if (!is_action && !host_allowed(a, req) && !authorized(a, req)) {
        reply_text(req, 403, "Forbidden", "this Host does not name the admin address: add it "
                   "to [admin] hosts, or send Authorization: Bearer <[admin] token>");
        return;
    }
    if (cmd == EVHTTP_REQ_POST && is_action) {
        action(a, req, path + 9, evhttp_uri_get_query(u));
        return;
    }
    if (is_action || (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD)) {
        reply_text(req, 405, "Method Not Allowed", "GET the documents, POST the actions");
        return;
    }
    struct evbuffer *b = evbuffer_new();
    if (!b) {
        reply_text(req, 503, "Service Unavailable", "out of memory");
        return;
    }
    if (strcmp(path, "/status.json") == 0) {
        admin_status_json(a, b);
        reply(req, 200, "OK", "application/json", b);
    } else if (strcmp(path, "/scale.json") == 0) { /* KEDA metrics-api: valueLocation */
        autoscale_json(a->px->scaler, b);
        evbuffer_add(b, "\n", 1);
        reply(req, 200, "OK", "application/json", b);
    } else if (strcmp(path, "/metrics") == 0) {
        admin_metrics(a, b);
        reply(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", b);
    } else if (strcmp(path, "/status") == 0 || strcmp(path, "/") == 0) {
        evbuffer_add_reference(b, status_html, status_html_len, NULL, NULL);
        reply(req, 200, "OK", "text/html; charset=utf-8", b);
    } else {
        reply_text(req, 404, "Not Found", "try /status, /status.json, /scale.json or /metrics");
    }
    evbuffer_free(b);
}

/* "port" or "host:port" -> host and port. */
static int split_listen(const char *spec, char *host, size_t hl, int *port)
{
    const char *colon = strrchr(spec, ':');
    snprintf(host, hl, "%s", "127.0.0.1");
    if (colon) {
        size_t n = (size_t)(colon - spec);
        if (spec[0] == '[' && n >= 2 && spec[n - 1] == ']')
            snprintf(host, hl, "%.*s", (int)(n - 2), spec + 1);
        else
            snprintf(host, hl, "%.*s", (int)n, spec);
    }
    *port = atoi(colon ? colon + 1 : spec);
    return *port > 0 && *port < 65536 ? 0 : -1;
}

struct admin *admin_new(struct event_base *base, struct proxy *px, const struct runtime *rt,
                        char *err, size_t errlen)
{
    struct admin *a = calloc(1, sizeof *a);
    if (!a) {
        snprintf(err, errlen, "admin: out of memory");
        return NULL;
    }
    a->px = px;
    a->started = mono_s();
    char hostname[64] = "sluice";
    gethostname(hostname, sizeof hostname - 1);
    snprintf(a->instance, sizeof a->instance, "%s:%ld", hostname, (long)getpid());
    admin_set(a, rt);
    const struct admin_conf *ac = &rt->cfg->admin;
    if (!ac->listen)
        return a;
    char host[80];
    int port;
    a->http = evhttp_new(base);
    if (!a->http || split_listen(ac->listen, host, sizeof host, &port) < 0 ||
        !evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)port)) {
        snprintf(err, errlen, "%s:%d: [admin] listen = %s: cannot listen there", rt->cfg->path,
                 ac->line, ac->listen);
        admin_free(a);
        return NULL;
    }
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_max_headers_size(a->http, 16384);
    evhttp_set_max_body_size(a->http, 4096);
    evhttp_set_timeout(a->http, 10);
    evhttp_set_gencb(a->http, on_request, a);
    snprintf(a->listen, sizeof a->listen, "%s", ac->listen);
    snprintf(a->listen_host, sizeof a->listen_host, strchr(host, ':') ? "[%s]" : "%s", host);
    a->reads_need_token = strncmp(host, "127.", 4) != 0 && strcmp(host, "::1") != 0 &&
                          strcmp(host, "localhost") != 0;
    log_info("admin", "listening on %s:%d (status page /status, /status.json, /metrics)", host,
             port);
    return a;
}

void admin_set(struct admin *a, const struct runtime *rt)
{
    if (!a)
        return;
    const struct admin_conf *ac = &rt->cfg->admin;
    snprintf(a->token, sizeof a->token, "%s", ac->token ? ac->token : "");
    snprintf(a->hosts, sizeof a->hosts, "%s", ac->hosts ? ac->hosts : "");
    if (a->http && (!ac->listen || strcmp(ac->listen, a->listen) != 0))
        log_warn("admin", "[admin] listen changed to %s: takes effect on restart (still on %s)",
                 ac->listen ? ac->listen : "(none)", a->listen);
}

void admin_free(struct admin *a)
{
    if (!a)
        return;
    if (a->http)
        evhttp_free(a->http);
    free(a);
}
