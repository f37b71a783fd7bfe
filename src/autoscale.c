/* autoscale: the scale controller's tick and its sinks (see autoscale.h). */
#include <sluice/autoscale.h>

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>

#include <sluice/cluster.h>
#include <sluice/json.h>
#include <sluice/log.h>
#include <sluice/meter.h>
#include <sluice/runtime.h>
#include <sluice/sizer.h>
#include <sluice/stats.h>
#include <sluice/worker.h>

extern char **environ;

#define WEB_ATTEMPTS 4 /* a delivery is tried this often, 1 s, 2 s, 4 s apart */
#define ACTUATOR_WAIT_MS 30000 /* a signal's effect is awaited this long (SIGTTOU lets a busy
                                 * worker finish its request: up to Gunicorn's graceful_timeout) */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const struct scale_section *conf_of(const struct autoscale *a)
{
    return &atomic_load(&a->px->rt)->cfg->scale;
}

/* ---- measurements -> scale input ---- */

static int supply_of(const struct runtime *rt, uint64_t now)
{
    int supply = 0;
    for (int i = 0; i < rt->up.n; i++)
        if (up_is_up(&rt->up.b[i], now))
            supply += up_capacity(&rt->up.b[i]);
    return supply;
}

static int any_up(const struct runtime *rt, uint64_t now)
{
    for (int i = 0; i < rt->up.n; i++)
        if (up_is_up(&rt->up.b[i], now))
            return 1;
    return 0;
}

/* The window to replay for mode model: arrivals per second and upstream times. Sized for
 * the cluster when several instances share the pool: this instance's seconds scaled by
 * the cluster's rate over its own. */
static void gather_load(struct autoscale *a, uint64_t span, double own, struct scale_input *in)
{
    struct meter *m = a->px->meter;
    int n = meter_arrivals(m, span, a->arrivals);
    if (a->clustered && own > 0 && in->lambda > own)
        for (int i = 0; i < n; i++)
            a->arrivals[i] = (uint32_t)(a->arrivals[i] * (in->lambda / own) + 0.5);
    meter_hist(m->upstream, span, &a->service);
    in->load = (struct sizing_load){.per_s = a->arrivals, .seconds = n, .service = &a->service};
    in->window_full = (uint64_t)n >= span;
}

static void gather(struct autoscale *a, uint64_t now, struct scale_input *in)
{
    struct proxy *px = a->px;
    const struct runtime *rt = atomic_load(&px->rt);
    const struct scale_section *sc = &rt->cfg->scale;
    uint64_t span = sc->window_ms / 1000;
    struct meter_win up;
    meter_window(px->meter->upstream, span, &up);
    memset(in, 0, sizeof *in);
    in->now_ms = now;
    in->sizer = a->sizer;
    in->lambda = meter_admitted_rate(px->meter, span);
    in->wq_s = (double)meter_quantile_us(px->meter->upstream, span, sc->c.quantile) / 1e6;
    in->p50_s = (double)up.p50_us / 1e6;
    in->service_s = up.mean_us / 1e6;
    in->samples = up.requests;
    in->queue_depth = queue_len(&px->queue);
    in->queue_wait_s = (double)meter_quantile_us(px->meter->queue, 10, 0.95) / 1e6;
    in->supply = supply_of(rt, now);
    in->current = a->gunicorn_workers > 0 ? a->gunicorn_workers : 0;
    double busy = up.covered_s ? up.busy_s / (double)up.covered_s : 0; /* mean in flight */
    cluster_set_load(px->cluster, in->lambda, in->supply, busy);
    a->clustered = cluster_view(px->cluster, &a->cv);
    if (a->clustered) { /* several instances share the pool: size it from their sum */
        in->lambda = a->cv.lambda;
        in->supply = conf_of(a)->shared_backends ? a->cv.supply_max : a->cv.supply;
        busy = a->cv.busy;
    }
    in->utilisation = in->supply > 0 ? busy / in->supply : 0;
    if (in->utilisation > 1)
        in->utilisation = 1;
    gather_load(a, span, meter_admitted_rate(px->meter, span), in);
}

/* ---- the exec hook ---- */

static void env_int(char *buf, size_t n, const char *name, long v)
{
    snprintf(buf, n, "%s=%ld", name, v);
}

static void run_hook(struct autoscale *a, const struct scale_out *o)
{
    const struct scale_section *sc = conf_of(a);
    char e[7][320];
    env_int(e[0], sizeof e[0], "SLUICE_DESIRED_WORKERS", o->desired);
    env_int(e[1], sizeof e[1], "SLUICE_CURRENT_WORKERS", o->current);
    env_int(e[2], sizeof e[2], "SLUICE_REQUIRED_WORKERS", o->required);
    env_int(e[3], sizeof e[3], "SLUICE_SUPPLY", o->supply);
    snprintf(e[4], sizeof e[4], "SLUICE_DECISION=%s", scale_decision_name(o->decision));
    snprintf(e[5], sizeof e[5], "SLUICE_REASON=%s", o->reason);
    snprintf(e[6], sizeof e[6], "PATH=%s", getenv("PATH") ? getenv("PATH") : "/usr/bin:/bin");
    char *envp[] = {e[0], e[1], e[2], e[3], e[4], e[5], e[6], NULL};
    char *argv[] = {sc->on_scale, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, sc->on_scale, NULL, NULL, argv, envp);
    a->hook_runs++;
    if (rc != 0) {
        a->hook_failures++;
        log_error("scale", "on_scale %s: cannot run: %s", sc->on_scale, strerror(rc));
        return;
    }
    a->hook_pid = pid;
    a->hook_deadline_ms = now_ms() + sc->on_scale_timeout_ms;
    log_info("scale", "on_scale %s started pid=%ld desired=%d", sc->on_scale, (long)pid,
             o->desired);
}

/* Reap a finished hook (or kill one past its timeout); then run the pending one. */
static void watch_hook(struct autoscale *a)
{
    if (a->hook_pid > 0) {
        int status;
        pid_t r = waitpid(a->hook_pid, &status, WNOHANG);
        if (r == 0 && now_ms() >= a->hook_deadline_ms) {
            log_warn("scale", "on_scale pid=%ld ran past on_scale_timeout: killed",
                     (long)a->hook_pid);
            kill(a->hook_pid, SIGKILL);
            r = waitpid(a->hook_pid, &status, 0);
            a->hook_failures++;
        } else if (r == a->hook_pid && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
            a->hook_failures++;
            log_warn("scale", "on_scale pid=%ld failed (status %d)", (long)a->hook_pid, status);
        }
        if (r != 0)
            a->hook_pid = 0;
    }
    if (a->hook_pid == 0 && a->hook_pending && conf_of(a)->on_scale) {
        a->hook_pending = 0;
        run_hook(a, &a->hook_out);
    }
}

/* ---- the webhook ---- */

static void web_send(struct autoscale *a);

static void web_done(struct evhttp_request *req, void *arg)
{
    struct autoscale *a = arg;
    int code = req ? evhttp_request_get_response_code(req) : 0;
    if (code >= 200 && code < 300) {
        a->web_sent++;
        a->web_attempt = 0;
        return;
    }
    a->web_failures++;
    if (a->web_attempt >= WEB_ATTEMPTS) {
        log_warn("scale", "webhook: giving up after %d attempts (last status %d)",
                 a->web_attempt, code);
        a->web_attempt = 0;
        return;
    }
    struct timeval tv = {1 << (a->web_attempt - 1), 0}; /* 1 s, 2 s, 4 s */
    evtimer_add(a->web_retry, &tv);
}

static void web_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    web_send(arg);
}

/* http://host[:port]/path -> parts. 0 or -1. */
static int split_url(const char *url, char *host, size_t hl, int *port, const char **path)
{
    const char *h = url + 7, *slash = strchr(h, '/'), *end = slash ? slash : h + strlen(h);
    const char *colon = memchr(h, ':', (size_t)(end - h));
    size_t n = (size_t)((colon ? colon : end) - h);
    if (n == 0 || n >= hl)
        return -1;
    memcpy(host, h, n);
    host[n] = '\0';
    *port = colon ? atoi(colon + 1) : 80;
    *path = slash ? slash : "/";
    return *port > 0 && *port < 65536 ? 0 : -1;
}

static void web_send(struct autoscale *a)
{
    const struct scale_section *sc = conf_of(a);
    char host[256];
    int port;
    const char *path;
    if (!sc->webhook || split_url(sc->webhook, host, sizeof host, &port, &path) < 0)
        return;
    a->web_attempt++;
    struct evhttp_connection *conn = evhttp_connection_base_new(a->base, a->dns, host,
                                                                (unsigned short)port);
    struct evhttp_request *req = conn ? evhttp_request_new(web_done, a) : NULL;
    if (!req) {
        if (conn)
            evhttp_connection_free(conn);
        web_done(NULL, a);
        return;
    }
    evhttp_connection_set_timeout(conn, (int)((sc->webhook_timeout_ms + 999) / 1000));
    evhttp_connection_free_on_completion(conn);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "Content-Type", "application/json");
    evbuffer_add(evhttp_request_get_output_buffer(req), a->web_body, strlen(a->web_body));
    if (evhttp_make_request(conn, req, EVHTTP_REQ_POST, path) != 0)
        web_done(NULL, a); /* the request was freed by libevent */
}

/* The decision as one JSON object (webhook body, Redis value). */
static void decision_json(const struct autoscale *a, char *buf, size_t n)
{
    const struct scale_out *o = &a->out;
    char reason[2 * SCALE_REASON_LEN];
    json_escape(reason, sizeof reason, o->reason);
    snprintf(buf, n,
             "{\"decision\":\"%s\",\"desired_workers\":%d,\"current_workers\":%d,"
             "\"required_workers\":%d,\"supply\":%d,\"reason\":\"%s\",\"time\":%lld}",
             scale_decision_name(o->decision), o->desired, o->current, o->required, o->supply,
             reason, (long long)time(NULL));
}

/* ---- the Gunicorn actuator ---- */

static pid_t read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (!f)
        return 0;
    if (fscanf(f, "%ld", &pid) != 1)
        pid = 0;
    fclose(f);
    return pid > 1 ? (pid_t)pid : 0;
}

/* Children of pid (Gunicorn's workers), by their parent in /proc/N/stat. -1 if pid is gone. */
static int count_children(pid_t pid)
{
    if (kill(pid, 0) < 0 && errno == ESRCH)
        return -1;
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char path[300], buf[512];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[len] = '\0';
        const char *rp = strrchr(buf, ')'); /* after the command name, which may hold spaces */
        long ppid = 0;
        char st;
        if (rp && sscanf(rp + 1, " %c %ld", &st, &ppid) == 2 && ppid == pid)
            n++;
    }
    if (d)
        closedir(d);
    return n;
}

/* Move the master towards gunicorn_target one worker at a time: standard signals do not
 * queue (two SIGTTOU sent together may arrive as one), and a worker told to stop is still
 * there while it finishes its request; so each signal's effect is awaited (or given up
 * on after ACTUATOR_WAIT_MS) before the next. */
static void actuate(struct autoscale *a, uint64_t now)
{
    const struct scale_section *sc = conf_of(a);
    if (!sc->gunicorn_pidfile)
        return;
    pid_t master = read_pid(sc->gunicorn_pidfile);
    int seen = master ? count_children(master) : -1;
    if (seen < 0) {
        if (!a->master_missing)
            log_warn("scale", "gunicorn_pidfile %s: no running master", sc->gunicorn_pidfile);
        a->master_missing = 1;
        a->gunicorn_workers = -1;
        return;
    }
    a->master_missing = 0;
    a->gunicorn_master = master;
    a->gunicorn_workers = seen;
    const struct runtime *rt = atomic_load(&a->px->rt);
    for (int i = 0; sc->gunicorn_backend && i < rt->up.n; i++)
        if (strcmp(rt->up.b[i].conf->name, sc->gunicorn_backend) == 0)
            atomic_store(&rt->up.b[i].st->workers_seen, seen);
    if (a->act_expect >= 0 && seen != a->act_expect && now < a->act_deadline)
        return; /* the last signal has not shown yet */
    a->act_expect = -1;
    if (!a->gunicorn_target || seen == a->gunicorn_target) {
        a->gunicorn_target = 0;
        return;
    }
    int up = a->gunicorn_target > seen;
    kill(master, up ? SIGTTIN : SIGTTOU);
    a->act_expect = seen + (up ? 1 : -1);
    a->act_deadline = now + ACTUATOR_WAIT_MS;
    log_info("scale", "gunicorn master %ld: %d workers, target %d: sent %s", (long)master, seen,
             a->gunicorn_target, up ? "SIGTTIN" : "SIGTTOU");
}

/* ---- the tick ---- */

static void decided(struct autoscale *a)
{
    const struct scale_section *sc = conf_of(a);
    const struct scale_out *o = &a->out;
    a->decisions++;
    log_info("scale", "decision=%s desired=%d current=%d required=%d supply=%d reason=\"%s\"",
             scale_decision_name(o->decision), o->desired, o->current, o->required, o->supply,
             o->reason);
    if (sc->on_scale) {
        if (a->hook_pid) { /* never two at once: the newest decision runs next */
            a->hook_pending = 1;
            a->hook_out = *o;
        } else {
            run_hook(a, o);
        }
    }
    if (sc->webhook || sc->redis_publish)
        decision_json(a, a->web_body, sizeof a->web_body);
    if (sc->webhook) {
        evtimer_del(a->web_retry);
        a->web_attempt = 0;
        web_send(a);
    }
    if (sc->redis_publish && cluster_publish(a->px->cluster, a->web_body) < 0)
        log_warn("scale", "redis_publish: Redis is not connected; decision not published");
    if (sc->gunicorn_pidfile)
        a->gunicorn_target = o->desired;
}

static void remember(struct autoscale *a, uint64_t now_s)
{
    if (a->last_point_s && now_s < a->last_point_s + 10)
        return;
    a->last_point_s = now_s;
    struct autoscale_point *p = &a->hist[a->hist_next];
    p->t = (int64_t)time(NULL);
    p->required = a->out.required;
    p->supply = a->out.supply;
    p->desired = a->out.desired;
    p->queue = a->in.queue_depth;
    a->hist_next = (a->hist_next + 1) % AUTOSCALE_HISTORY;
    if (a->nhist < AUTOSCALE_HISTORY)
        a->nhist++;
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct autoscale *a = arg;
    struct proxy *px = a->px;
    (void)fd;
    (void)what;
    uint64_t now = now_ms();
    meter_attach(px->meter, atomic_load(&px->rt));
    meter_tick(px->meter, now / 1000,
               stats_sum(&px->workers[0].stats, px->nworkers, sizeof(struct worker),
                         STAT_admitted));
    actuate(a, now);
    gather(a, now, &a->in);
    scale_tick(&a->sc, &a->in, &a->out);
    if (a->out.why == SCALE_WHY_NO_SUPPLY && any_up(atomic_load(&px->rt), now))
        snprintf(a->out.reason, sizeof a->out.reason, "no backend has a known capacity: set "
                 "workers = N (or auto) on the backends to size the pool");
    a->have = 1;
    if (a->out.decision != SCALE_HOLD && (!a->clustered || a->cv.leader))
        decided(a); /* with several instances, the leader alone acts (the same numbers) */
    remember(a, now / 1000);
    watch_hook(a);
}

struct autoscale *autoscale_new(struct event_base *base, struct proxy *px)
{
    struct autoscale *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->px = px;
    a->base = base;
    a->gunicorn_workers = -1;
    a->act_expect = -1;
    a->tick = event_new(base, -1, EV_PERSIST, on_tick, a);
    a->web_retry = evtimer_new(base, web_retry_cb, a);
    a->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
    a->sizer = sizer_new(); /* NULL: the model is worked out in the tick */
    if (!a->tick || !a->web_retry) {
        autoscale_free(a);
        return NULL;
    }
    scale_init(&a->sc, &conf_of(a)->c);
    struct timeval tv = {1, 0};
    event_add(a->tick, &tv);
    return a;
}

void autoscale_set(struct autoscale *a, const struct runtime *rt)
{
    if (a && memcmp(&a->sc.conf, &rt->cfg->scale.c, sizeof a->sc.conf) != 0)
        scale_init(&a->sc, &rt->cfg->scale.c);
}

void autoscale_free(struct autoscale *a)
{
    if (!a)
        return;
    if (a->hook_pid > 0) {
        int status;
        if (waitpid(a->hook_pid, &status, WNOHANG) == 0)
            log_warn("scale", "on_scale pid=%ld still running at exit: left to finish",
                     (long)a->hook_pid);
    }
    if (a->tick)
        event_free(a->tick);
    if (a->web_retry)
        event_free(a->web_retry);
    if (a->dns)
        evdns_base_free(a->dns, 0);
    sizer_free(a->sizer);
    free(a);
}

/* ---- documents ---- */

void autoscale_json(const struct autoscale *a, struct evbuffer *o)
{
    if (!a || !a->have) {
        evbuffer_add_printf(o, "null");
        return;
    }
    const struct scale_out *s = &a->out;
    char body[1024];
    decision_json(a, body, sizeof body);
    evbuffer_add_printf(o,
                        "{\"mode\":\"%s\",\"required\":%d,\"required_little\":%d,"
                        "\"required_erlang\":%d,\"required_model\":%d,\"supply\":%d,\"current\":%d,\"desired\":%d,"
                        "\"decision\":\"%s\",\"why\":\"%s\",\"db_cap\":%d,\"db_capped\":%s,"
                        "\"lambda\":%.3f,\"wq_s\":%.4f,\"service_s\":%.4f,\"margin\":%.2f,"
                        "\"utilisation\":%.3f,\"queue\":%d,\"decisions\":%" PRIu64 ","
                        "\"gunicorn_workers\":%d,\"slo_wait_s\":%.3f,\"slo_quantile\":%.4f,"
                        "\"window_s\":%u,\"model_requests\":%" PRIu64 ",\"model_headroom\":%.3f,"
                        "\"model_cost_ms\":%.1f,\"model_age_s\":%.1f,\"last\":%s,",
                        scale_mode_name(a->sc.conf.mode), s->required, s->required_little,
                        s->required_erlang, s->required_model, s->supply, s->current, s->desired,
                        scale_decision_name(s->decision), scale_why_name(s->why), s->db_cap,
                        s->db_capped ? "true" : "false", a->in.lambda, a->in.wq_s,
                        a->in.service_s, a->sc.conf.margin, a->in.utilisation,
                        a->in.queue_depth, a->decisions, a->gunicorn_workers,
                        a->sc.conf.target_wait_ms / 1000.0, 1 - a->sc.conf.epsilon,
                        conf_of(a)->window_ms / 1000, s->model_requests, s->model_headroom,
                        s->model_cost_ms, (double)s->model_age_ms / 1000.0, body);
    if (a->clustered) {
        evbuffer_add_printf(o, "\"cluster\":{\"instances\":%d,\"lambda\":%.3f,\"supply\":%d,"
                               "\"leader\":%s,\"leader_id\":",
                            a->cv.instances, a->cv.lambda, a->in.supply,
                            a->cv.leader ? "true" : "false");
        json_str(o, a->cv.leader_id);
        evbuffer_add_printf(o, "},");
    } else {
        evbuffer_add_printf(o, "\"cluster\":null,");
    }
    evbuffer_add_printf(o, "\"reason\":");
    json_str(o, s->reason);
    evbuffer_add_printf(o, ",\"history\":[");
    for (int i = 0; i < a->nhist; i++) {
        int k = (a->hist_next - a->nhist + i + AUTOSCALE_HISTORY) % AUTOSCALE_HISTORY;
        const struct autoscale_point *p = &a->hist[k];
        evbuffer_add_printf(o, "%s{\"t\":%lld,\"required\":%d,\"supply\":%d,\"desired\":%d,"
                               "\"queue\":%d}",
                            i ? "," : "", (long long)p->t, p->required, p->supply, p->desired,
                            p->queue);
    }
    evbuffer_add_printf(o, "]}");
}

void autoscale_metrics(const struct autoscale *a, struct evbuffer *o)
{
    if (!a || !a->have)
        return;
    const struct scale_out *s = &a->out;
    const struct {
        const char *name, *help;
        double v;
    } g[] = {
        {"scale_required_workers", "workers the measured load needs (the mode's estimate)",
         s->required},
        {"scale_required_workers_little", "the rule of thumb: lambda x Wq x margin",
         s->required_little},
        {"scale_required_workers_model",
         "fewest with P(wait>target) <= epsilon, the window replayed (0: too little data)",
         s->required_model},
        {"scale_required_workers_erlang", "Erlang C: fewest with P(wait>target) <= epsilon",
         s->required_erlang},
        {"scale_supply_workers", "worker capacity of the backends that are up", s->supply},
        {"scale_desired_workers", "workers the last decision asks for", s->desired},
        {"scale_utilisation", "mean in-flight / supply over the window", a->in.utilisation},
        {"scale_arrival_rate", "admitted requests per second over the window", a->in.lambda},
        {"scale_latency_quantile_seconds", "the configured quantile of upstream time",
         a->in.wq_s},
        {"scale_db_capped", "1 if the database budget cut the requirement", s->db_capped},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        evbuffer_add_printf(o, "# HELP sluice_%s %s\n# TYPE sluice_%s gauge\nsluice_%s %g\n",
                            g[i].name, g[i].help, g[i].name, g[i].name, g[i].v);
    evbuffer_add_printf(o, "# HELP sluice_scale_decisions_total scale up/down decisions made\n"
                           "# TYPE sluice_scale_decisions_total counter\n"
                           "sluice_scale_decisions_total %" PRIu64 "\n",
                        a->decisions);
}
