/* runtime: builds a configuration generation; frees it when the last user lets go. */
#include <sluice/runtime.h>

#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <sluice/tls.h>

/* [redis] host -> a numeric address (hiredis would resolve it on a worker thread,
 * blocking it). 0 or -1 with why. */
static int resolve_redis(const struct redis_conf *r, char *ip, size_t iplen, char *why,
                         size_t whylen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(r->host, NULL, &hints, &res);
    if (rc != 0 || !res) {
        snprintf(why, whylen, "[redis] url: cannot resolve %s: %s", r->host, gai_strerror(rc));
        return -1;
    }
    rc = getnameinfo(res->ai_addr, res->ai_addrlen, ip, (socklen_t)iplen, NULL, 0,
                     NI_NUMERICHOST);
    freeaddrinfo(res);
    if (rc != 0) {
        snprintf(why, whylen, "[redis] url: cannot resolve %s", r->host);
        return -1;
    }
    return 0;
}

struct runtime *runtime_load(const char *path, const struct runtime *prev, char *err,
                             size_t errlen)
{
    struct runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        snprintf(err, errlen, "%s:0: out of memory", path);
        return NULL;
    }
    rt->cfg = config_load(path, err, errlen);
    if (!rt->cfg)
        goto fail;
    char why[512];
    const struct config *c = rt->cfg;
    if (up_init(&rt->up, c->backends, (int)c->nbackends, prev ? &prev->up : NULL, why,
                sizeof why) < 0) {
        snprintf(err, errlen, "%s:%d: %s", path, c->nbackends ? c->backends[0].line : 0, why);
        goto fail;
    }
    if (admit_init(&rt->admit, &c->tenants, c->tenant, (int)c->ntenants,
                   prev ? &prev->admit : NULL) < 0 ||
        admit_routes_init(&rt->admit, c->routes, (int)c->nroutes,
                          prev ? &prev->admit : NULL) < 0) {
        snprintf(err, errlen, "%s:0: out of memory", path);
        goto fail;
    }
    if (c->redis.url && resolve_redis(&c->redis, rt->redis_ip, sizeof rt->redis_ip, why,
                                      sizeof why) < 0) {
        snprintf(err, errlen, "%s:%d: %s", path, c->redis.url_line, why);
        goto fail;
    }
    if (c->proxy.tls_listen.n > 0) {
        rt->tls = tls_server_new(&c->proxy, path, err, errlen);
        if (!rt->tls)
            goto fail;
    }
    rt->lim.max_head = c->proxy.max_header_size;
    rt->lim.max_line = c->proxy.max_line_size;
    rt->lim.max_headers = (size_t)c->proxy.max_headers;
    rt->generation = prev ? prev->generation + 1 : 1;
    atomic_init(&rt->refs, 1);
    return rt;
fail:
    admit_free(&rt->admit);
    up_free(&rt->up);
    config_free(rt->cfg);
    free(rt);
    return NULL;
}

void runtime_ref(struct runtime *rt)
{
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
}

void runtime_unref(struct runtime *rt)
{
    if (!rt || atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1)
        return;
    tls_server_free(rt->tls);
    admit_free(&rt->admit);
    up_free(&rt->up);
    config_free(rt->cfg);
    free(rt);
}
