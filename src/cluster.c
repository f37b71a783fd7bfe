/* cluster: the heartbeat that counts live sluice instances in Redis (see cluster.h). */
#include <sluice/cluster.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <time.h>

#include <event2/event.h>
#include <openssl/rand.h>

#include <sluice/redis.h>
#include <sluice/runtime.h>
#include <sluice/worker.h>

#define HEARTBEAT_MS 1000

struct cluster {
    struct proxy *px;            /* borrowed */
    struct rclient rc;
    struct event *tick;          /* owned */
    struct redis_call *pending;  /* the heartbeat in flight, if any */
    char prefix[128];
    char id[80];                 /* host:pid:random */
    char load[80];               /* "lambda supply busy" for the next heartbeat */
    struct cluster_view view;    /* the last answer */
    uint64_t view_ms;            /* when it came (monotonic), 0 = never */
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void on_view(void *arg, int rc, long long n, const char *str)
{
    struct cluster *c = arg;
    struct cluster_view v = {0};
    (void)n;
    c->pending = NULL;
    if (rc < 0 || !str ||
        sscanf(str, "%d %lf %d %d %lf %79s", &v.instances, &v.lambda, &v.supply, &v.supply_max,
               &v.busy, v.leader_id) != 6 || v.instances < 1)
        return;
    v.leader = strcmp(v.leader_id, c->id) == 0;
    c->view = v;
    c->view_ms = mono_ms();
    atomic_store(&c->px->redis_instances, v.instances);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct cluster *c = arg;
    (void)fd;
    (void)what;
    if (c->pending) /* unanswered for a whole second: count it as timed out */
        redis_cancel(&c->rc, c->pending, 1);
    c->pending = redis_heartbeat(&c->rc, c->prefix, c->id, c->load, on_view, c);
}

struct cluster *cluster_new(struct event_base *base, struct proxy *px)
{
    struct cluster *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->px = px;
    if (rclient_init(&c->rc, base, NULL, "cluster") < 0 ||
        !(c->tick = event_new(base, -1, EV_PERSIST, on_tick, c))) {
        rclient_free(&c->rc);
        free(c);
        return NULL;
    }
    char host[40] = "sluice";
    unsigned char rnd[4] = {0};
    gethostname(host, sizeof host - 1);
    RAND_bytes(rnd, sizeof rnd);
    snprintf(c->id, sizeof c->id, "%s:%ld:%02x%02x%02x%02x", host, (long)getpid(), rnd[0],
             rnd[1], rnd[2], rnd[3]);
    snprintf(c->load, sizeof c->load, "0 0 0");
    return c;
}

void cluster_set(struct cluster *c, const struct runtime *rt)
{
    if (!c)
        return;
    const struct redis_conf *r = &rt->cfg->redis;
    if (c->pending) {
        redis_cancel(&c->rc, c->pending, 0);
        c->pending = NULL;
    }
    rclient_configure(&c->rc, r, rt->redis_ip);
    snprintf(c->prefix, sizeof c->prefix, "%s", r->prefix ? r->prefix : "");
    if (!r->url) {
        event_del(c->tick);
        atomic_store(&c->px->redis_instances, 0);
        return;
    }
    struct timeval tv = {HEARTBEAT_MS / 1000, (HEARTBEAT_MS % 1000) * 1000};
    event_add(c->tick, &tv);
}

void cluster_set_load(struct cluster *c, double lambda, int supply, double busy)
{
    if (c)
        snprintf(c->load, sizeof c->load, "%.3f %d %.3f", lambda, supply, busy);
}

int cluster_view(const struct cluster *c, struct cluster_view *out)
{
    if (!c || !c->view_ms || mono_ms() - c->view_ms > 3000)
        return 0;
    *out = c->view;
    return 1;
}

const char *cluster_id(const struct cluster *c)
{
    return c ? c->id : "";
}

int cluster_publish(struct cluster *c, const char *json)
{
    if (!c)
        return -1;
    char key[160];
    snprintf(key, sizeof key, "%sscale", c->prefix);
    const char *set[] = {"SET", key, json}, *pub[] = {"PUBLISH", key, json};
    if (redis_send(&c->rc, 3, set) < 0)
        return -1;
    return redis_send(&c->rc, 3, pub);
}

void cluster_free(struct cluster *c)
{
    if (!c)
        return;
    if (c->pending)
        redis_cancel(&c->rc, c->pending, 0);
    rclient_free(&c->rc);
    event_free(c->tick);
    free(c);
}
