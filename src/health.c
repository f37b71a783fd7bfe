/* health: active checks. One probe at a time per backend: connect, send a GET with
 * Connection: close, read the status line; a pass is the configured status within
 * health_timeout. rise passes bring a backend back (with slow start), fall failures take
 * it out. Runs on the main thread only; it never blocks a worker. */
#include <sluice/health.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>

#include <sluice/log.h>
#include <sluice/runtime.h>
#include <sluice/tls.h>
#include <sluice/upstream.h>

struct check {
    struct health *h;          /* borrowed */
    struct runtime *rt;        /* a reference: b lives in it */
    struct backend *b;         /* borrowed from rt */
    struct event *timer;       /* owned: next probe */
    struct event *deadline;    /* owned: health_timeout of the probe in flight */
    struct bufferevent *bev;   /* owned: the probe in flight, NULL between probes */
    int orphan;                /* replaced by a reload: free when the probe ends */
};

struct health {
    struct event_base *base;   /* borrowed */
    struct check **checks;     /* owned */
    size_t n;
};

static void check_free(struct check *c)
{
    if (c->bev)
        bufferevent_free(c->bev);
    event_free(c->timer);
    event_free(c->deadline);
    runtime_unref(c->rt);
    free(c);
}

static void schedule(struct check *c, uint32_t ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/* The probe ended: record, log a change, plan the next one. */
static void finish(struct check *c, int status)
{
    struct backend *b = c->b;
    int pass = status == b->conf->health_status;
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    evtimer_del(c->deadline);
    int change = up_check_result(b, pass, status, up_now_ms());
    if (change < 0)
        log_warn("health", "backend=%s down: %d failed checks path=%s last_status=%d",
                 b->conf->name, b->conf->fall, b->conf->health_check, status);
    else if (change > 0)
        log_info("health", "backend=%s up: %d passed checks slow_start=%ums", b->conf->name,
                 b->conf->rise, b->conf->slow_start_ms);
    if (c->orphan) {
        check_free(c);
        return;
    }
    schedule(c, b->conf->health_interval_ms);
}

/* Status line "HTTP/1.x NNN": the status, 0 if not there yet, -1 if malformed. */
static int status_of(struct evbuffer *in)
{
    struct evbuffer_ptr p = evbuffer_search(in, "\r\n", 2, NULL);
    if (p.pos < 0)
        return evbuffer_get_length(in) > 1024 ? -1 : 0;
    if (p.pos < 12)
        return -1;
    const char *l = (const char *)evbuffer_pullup(in, 12);
    if (memcmp(l, "HTTP/1.", 7) != 0 || l[8] != ' ')
        return -1;
    int st = 0;
    for (int i = 9; i < 12; i++) {
        if (l[i] < '0' || l[i] > '9')
            return -1;
        st = st * 10 + (l[i] - '0');
    }
    return st;
}

static void probe_read(struct bufferevent *bev, void *arg)
{
    int st = status_of(bufferevent_get_input(bev));
    if (st != 0)
        finish(arg, st < 0 ? 0 : st);
}

static void probe_event(struct bufferevent *bev, short what, void *arg)
{
    struct check *c = arg;
    if (what & BEV_EVENT_CONNECTED)
        return;
    int st = status_of(bufferevent_get_input(bev));
    finish(c, st > 0 ? st : 0);
}

static void probe_deadline(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    finish(arg, 0);
}

static void probe_start(evutil_socket_t fd, short what, void *arg)
{
    struct check *c = arg;
    struct backend *b = c->b;
    (void)fd;
    (void)what;
    c->bev = up_bufferevent(b, c->h->base); /* TLS backends are probed over TLS */
    if (!c->bev) {
        finish(c, 0);
        return;
    }
    bufferevent_setcb(c->bev, probe_read, NULL, probe_event, c);
    uint32_t ms = b->conf->health_timeout_ms;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->deadline, &tv);
    evbuffer_add_printf(bufferevent_get_output(c->bev),
                        "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: sluice-health\r\n"
                        "Connection: close\r\n\r\n",
                        b->conf->health_check, b->conf->address);
    if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&b->addr, (int)b->addrlen) < 0) {
        finish(c, 0);
        return;
    }
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

struct health *health_new(struct event_base *base)
{
    struct health *h = calloc(1, sizeof *h);
    if (h)
        h->base = base;
    return h;
}

static void drop_checks(struct health *h)
{
    for (size_t i = 0; i < h->n; i++) {
        struct check *c = h->checks[i];
        if (c->bev) {
            c->orphan = 1;
            evtimer_del(c->timer);
        } else {
            check_free(c);
        }
    }
    free(h->checks);
    h->checks = NULL;
    h->n = 0;
}

void health_set(struct health *h, struct runtime *rt)
{
    if (!h)
        return;
    drop_checks(h);
    h->checks = calloc((size_t)(rt->up.n > 0 ? rt->up.n : 1), sizeof *h->checks);
    if (!h->checks)
        return;
    for (int i = 0; i < rt->up.n; i++) {
        struct backend *b = &rt->up.b[i];
        if (!b->conf->health_check)
            continue;
        struct check *c = calloc(1, sizeof *c);
        if (!c)
            continue;
        c->h = h;
        c->b = b;
        c->rt = rt;
        runtime_ref(rt);
        c->timer = evtimer_new(h->base, probe_start, c);
        c->deadline = evtimer_new(h->base, probe_deadline, c);
        h->checks[h->n++] = c;
        schedule(c, 0);
    }
}

void health_free(struct health *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        check_free(h->checks[i]);
    free(h->checks);
    free(h);
}
