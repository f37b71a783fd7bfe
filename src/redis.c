/* redis: per-thread async client for the shared tenant limits (see redis.h). */
#include <sluice/redis.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/adapters/libevent.h>
#include <openssl/evp.h>

#include <sluice/config.h>
#include <sluice/log.h>
#include <sluice/stats.h>

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
#define MISSES_TO_DROP 3

/* GCRA on Redis's clock, in microseconds: KEYS[1] holds the theoretical arrival time;
 * ARGV = interval, tau ((burst - 1) x interval). Returns 0 (admitted) or the wait. */
static const char gcra_lua[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local interval = tonumber(ARGV[1])\n"
    "local tau = tonumber(ARGV[2])\n"
    "local tat = tonumber(redis.call('GET', KEYS[1])) or now\n"
    "if tat < now then tat = now end\n"
    "if tat - now > tau then return tat - now - tau end\n"
    "tat = tat + interval\n"
    "redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX',\n"
    "           math.floor((tat - now) / 1000) + 1000)\n"
    "return 0\n";

/* Instances: a sorted set of instance ids scored by their last heartbeat (ms), and a hash
 * of their loads ("lambda supply busy"). KEYS = instances, loads; ARGV = id, load. */
static const char heartbeat_lua[] =
    "local t = redis.call('TIME')\n"
    "local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "redis.call('ZADD', KEYS[1], ms, ARGV[1])\n"
    "redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ms - 5000)\n"
    "redis.call('PEXPIRE', KEYS[1], 60000)\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])\n"
    "redis.call('PEXPIRE', KEYS[2], 60000)\n"
    "local ids = redis.call('ZRANGE', KEYS[1], 0, -1)\n"
    "local lam, sup, smax, busy, leader = 0, 0, 0, 0, nil\n"
    "for _, id in ipairs(ids) do\n"
    "  if not leader or id < leader then leader = id end\n"
    "  local v = redis.call('HGET', KEYS[2], id)\n"
    "  if v then\n"
    "    local a, b, c = string.match(v, '^(%S+) (%S+) (%S+)$')\n"
    "    lam = lam + (tonumber(a) or 0)\n"
    "    sup = sup + (tonumber(b) or 0)\n"
    "    smax = math.max(smax, tonumber(b) or 0)\n"
    "    busy = busy + (tonumber(c) or 0)\n"
    "  end\n"
    "end\n"
    "for _, id in ipairs(redis.call('HKEYS', KEYS[2])) do\n"
    "  if not redis.call('ZSCORE', KEYS[1], id) then redis.call('HDEL', KEYS[2], id) end\n"
    "end\n"
    "return string.format('%d %.3f %d %d %.3f %s', #ids, lam, sup, smax, busy, leader or '-')\n";

enum script { SCRIPT_GCRA, SCRIPT_HEARTBEAT, SCRIPT_MAX };

static const char *const script_body[SCRIPT_MAX] = {gcra_lua, heartbeat_lua};
static char script_sha[SCRIPT_MAX][41];
static pthread_once_t sha_once = PTHREAD_ONCE_INIT;

struct redis_call {
    struct rclient *c;
    redis_cb cb;          /* NULL once cancelled */
    void *arg;
    enum script script;
    int retried;          /* sent again with EVAL after NOSCRIPT */
    int nargs;
    char key[192];
    char key2[192];       /* a second key, when nkeys is 2 */
    int nkeys;
    char a1[80], a2[80];
};

static void hash_scripts(void)
{
    for (int s = 0; s < SCRIPT_MAX; s++) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned len = 0;
        if (!EVP_Digest(script_body[s], strlen(script_body[s]), md, &len, EVP_sha1(), NULL))
            len = 0; /* an empty sha: every EVALSHA gets NOSCRIPT, then EVAL works */
        for (unsigned i = 0; i < len && i < 20; i++)
            snprintf(script_sha[s] + 2 * i, 3, "%02x", md[i]);
    }
}

static void count(struct rclient *c, enum stat_id id)
{
    if (c->stats)
        stats_add(c->stats, id, 1);
}

static void retry_later(struct rclient *c)
{
    struct timeval tv = {c->backoff_ms / 1000, (c->backoff_ms % 1000) * 1000};
    c->state = RC_DOWN;
    evtimer_add(c->timer, &tv);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* Once per outage: the limits follow on_failure until a PING is answered again. */
static void lost(struct rclient *c, const char *why)
{
    c->first = 0;
    count(c, STAT_redis_errors);
    if (c->lost_logged)
        return;
    c->lost_logged = 1;
    log_warn(c->who, "redis %s:%d unavailable (%s): limits follow [redis] on_failure until it "
             "answers again; retrying with backoff up to %ds", c->ip, c->port, why,
             BACKOFF_MAX_MS / 1000);
}

/* Close the connection (pending calls fail) without scheduling anything. */
static void close_ac(struct rclient *c)
{
    redisAsyncContext *ac = c->ac;
    if (!ac)
        return;
    c->ac = NULL;
    ac->data = NULL; /* its disconnect callback must not touch c */
    redisAsyncFree(ac);
}

static void drop(struct rclient *c, const char *why)
{
    close_ac(c);
    lost(c, why);
    retry_later(c);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    struct rclient *c = ac->data;
    if (!c || status == REDIS_OK)
        return;
    c->ac = NULL; /* hiredis frees a context whose connect failed */
    lost(c, ac->errstr[0] ? ac->errstr : "connect failed");
    retry_later(c);
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    struct rclient *c = ac->data;
    if (!c)
        return;
    c->ac = NULL;
    lost(c, status == REDIS_OK ? "connection closed" : ac->errstr);
    retry_later(c);
}

/* AUTH and SELECT: an error reply (bad password, bad db) drops the connection. */
static void on_setup(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    struct rclient *c = ac->data;
    (void)priv;
    if (c && reply && reply->type == REDIS_REPLY_ERROR)
        drop(c, reply->str);
}

static void on_pong(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    struct rclient *c = ac->data;
    (void)priv;
    if (!c || c->state != RC_CONNECTING)
        return;
    if (!reply || reply->type == REDIS_REPLY_ERROR) {
        drop(c, reply ? reply->str : "connection closed");
        return;
    }
    evtimer_del(c->timer);
    c->state = RC_UP;
    c->first = 0;
    c->backoff_ms = BACKOFF_FIRST_MS;
    c->misses = 0;
    if (c->lost_logged)
        log_warn(c->who, "redis %s:%d connected again: limits are shared again", c->ip, c->port);
    else
        log_info(c->who, "redis %s:%d connected", c->ip, c->port);
    c->lost_logged = 0;
}

static void rc_connect(struct rclient *c)
{
    redisAsyncContext *ac = redisAsyncConnect(c->ip, c->port);
    if (!ac || ac->err) {
        lost(c, ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        retry_later(c);
        return;
    }
    ac->data = c;
    if (redisLibeventAttach(ac, c->base) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        lost(c, "cannot attach to the event loop");
        retry_later(c);
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
    c->state = RC_CONNECTING;
    if (c->password[0])
        redisAsyncCommand(ac, on_setup, NULL, "AUTH %s", c->password);
    if (c->db)
        redisAsyncCommand(ac, on_setup, NULL, "SELECT %d", c->db);
    redisAsyncCommand(ac, on_pong, NULL, "PING");
    uint32_t ms = c->timeout_ms * 4 > 1000 ? c->timeout_ms * 4 : 1000;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

/* Reconnect wait over, or a connect/PING deadline passed. */
static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct rclient *c = arg;
    (void)fd;
    (void)what;
    if (c->state == RC_CONNECTING)
        drop(c, "no answer to PING in time");
    else if (c->state == RC_DOWN)
        rc_connect(c);
}

int rclient_init(struct rclient *c, struct event_base *base, struct stats *stats,
                 const char *who)
{
    memset(c, 0, sizeof *c);
    pthread_once(&sha_once, hash_scripts);
    c->base = base;
    c->stats = stats;
    c->who = who;
    c->backoff_ms = BACKOFF_FIRST_MS;
    c->timer = evtimer_new(base, on_timer, c);
    return c->timer ? 0 : -1;
}

void rclient_free(struct rclient *c)
{
    close_ac(c);
    if (c->timer)
        event_free(c->timer);
    c->timer = NULL;
    c->state = RC_OFF;
}

void rclient_configure(struct rclient *c, const struct redis_conf *rc, const char *ip)
{
    if (!rc || !rc->url) {
        close_ac(c);
        evtimer_del(c->timer);
        c->state = RC_OFF;
        return;
    }
    const char *pw = rc->password ? rc->password : "";
    int same = c->state != RC_OFF && strcmp(c->ip, ip) == 0 && c->port == rc->port &&
               c->db == rc->db && strcmp(c->password, pw) == 0;
    c->timeout_ms = rc->timeout_ms;
    if (same)
        return;
    close_ac(c);
    evtimer_del(c->timer);
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    snprintf(c->password, sizeof c->password, "%s", pw);
    c->port = rc->port;
    c->db = rc->db;
    c->backoff_ms = BACKOFF_FIRST_MS;
    c->lost_logged = 0;
    c->first = 1; /* a request that comes while sluice starts waits for Redis */
    rc_connect(c);
}

static int send_call(struct redis_call *call, int eval);

static void on_reply(redisAsyncContext *ac, void *r, void *priv)
{
    redisReply *reply = r;
    struct redis_call *call = priv;
    struct rclient *c = call->c;
    if (reply && reply->type == REDIS_REPLY_ERROR && !call->retried && c->ac == ac &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0) {
        call->retried = 1; /* the script cache was flushed (or Redis restarted): load it */
        if (send_call(call, 1) == 0)
            return;
    }
    int rc = -1;
    long long v = 0;
    const char *str = NULL;
    if (reply) {
        c->misses = 0;
        if (reply->type == REDIS_REPLY_INTEGER) {
            rc = 0;
            v = reply->integer;
        } else if (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS) {
            rc = 0;
            str = reply->str;
        } else {
            count(c, STAT_redis_errors);
            log_debug(c->who, "redis: unexpected reply: %s",
                      reply->type == REDIS_REPLY_ERROR ? reply->str : "not an integer");
        }
    }
    redis_cb cb = call->cb;
    void *arg = call->arg;
    if (cb)
        cb(arg, rc, v, str); /* the reply (and str) lives until this callback returns */
    free(call);
}

static int send_call(struct redis_call *call, int eval)
{
    const char *argv[7] = {eval ? "EVAL" : "EVALSHA",
                           eval ? script_body[call->script] : script_sha[call->script],
                           call->nkeys == 2 ? "2" : "1", call->key};
    int argc = 4;
    if (call->nkeys == 2)
        argv[argc++] = call->key2;
    argv[argc++] = call->a1;
    if (call->nargs == 2)
        argv[argc++] = call->a2;
    struct rclient *c = call->c;
    if (!c->ac || redisAsyncCommandArgv(c->ac, on_reply, call, argc, argv, NULL) != REDIS_OK)
        return -1;
    return 0;
}

static struct redis_call *start(struct rclient *c, enum script s, const char *prefix,
                                const char *kind, const char *name, redis_cb cb, void *arg)
{
    if (c->state != RC_UP && !(c->state == RC_CONNECTING && c->first))
        return NULL; /* down: the caller decides by [redis] on_failure at once */
    struct redis_call *call = calloc(1, sizeof *call);
    if (!call)
        return NULL;
    call->c = c;
    call->cb = cb;
    call->arg = arg;
    call->script = s;
    call->nkeys = 1;
    snprintf(call->key, sizeof call->key, "%s%s%s", prefix ? prefix : "", kind, name);
    return call;
}

static struct redis_call *launch(struct redis_call *call)
{
    if (send_call(call, 0) < 0) {
        free(call);
        return NULL;
    }
    count(call->c, STAT_redis_calls);
    return call;
}

struct redis_call *redis_gcra(struct rclient *c, const char *prefix, const char *name,
                              uint64_t interval_us, uint64_t tau_us, redis_cb cb, void *arg)
{
    struct redis_call *call = start(c, SCRIPT_GCRA, prefix, "gcra:", name, cb, arg);
    if (!call)
        return NULL;
    call->nargs = 2;
    snprintf(call->a1, sizeof call->a1, "%llu", (unsigned long long)interval_us);
    snprintf(call->a2, sizeof call->a2, "%llu", (unsigned long long)tau_us);
    return launch(call);
}

struct redis_call *redis_heartbeat(struct rclient *c, const char *prefix, const char *id,
                                   const char *stats, redis_cb cb, void *arg)
{
    struct redis_call *call = start(c, SCRIPT_HEARTBEAT, prefix, "instances", "", cb, arg);
    if (!call)
        return NULL;
    call->nkeys = 2;
    snprintf(call->key2, sizeof call->key2, "%sloads", prefix ? prefix : "");
    call->nargs = 2;
    snprintf(call->a1, sizeof call->a1, "%s", id);
    snprintf(call->a2, sizeof call->a2, "%s", stats);
    return launch(call);
}

int redis_send(struct rclient *c, int argc, const char **argv)
{
    if (c->state != RC_UP || !c->ac ||
        redisAsyncCommandArgv(c->ac, NULL, NULL, argc, argv, NULL) != REDIS_OK)
        return -1;
    count(c, STAT_redis_calls);
    return 0;
}

void redis_cancel(struct rclient *c, struct redis_call *call, int timed_out)
{
    call->cb = NULL; /* freed when its reply (or the connection's end) arrives */
    if (!timed_out)
        return;
    count(c, STAT_redis_timeouts);
    if (++c->misses == 1) /* once until Redis answers again, not once per request */
        log_warn(c->who, "redis %s:%d: a call was not answered within %ums: [redis] on_failure "
                 "applies to it", c->ip, c->port, c->timeout_ms);
    if (c->misses >= MISSES_TO_DROP && c->state == RC_UP)
        drop(c, "calls not answered within [redis] timeout");
}
