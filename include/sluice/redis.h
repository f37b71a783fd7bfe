/* redis: the client that shares tenant limits (and instance liveness) between sluice
 * instances through one Redis. One client per thread, on that thread's event_base
 * (hiredis async on its libevent adapter), so nothing is locked and nothing blocks.
 *
 * hiredis 0.14 has no command timeout: the caller times each call with its own timer and
 * cancels it (redis_cancel). Three timed-out calls in a row with no reply, or a connect or
 * PING not answered within max(4 x timeout, 1 s), drop the connection; it is retried with
 * backoff (100 ms doubling to 5 s). Calls are accepted only once a PING has been answered
 * (a stopped Redis still completes TCP handshakes), so while Redis is down a caller learns
 * at once (redis_gcra returns NULL) and applies its failure policy without waiting.
 *
 * Ownership: a struct redis_call is owned by the client until its callback has run or it
 * was cancelled; after cancel the callback is never called. Freeing the client fails
 * every call still pending (cancelled ones silently). */
#ifndef SLUICE_REDIS_H
#define SLUICE_REDIS_H

#include <stdint.h>

struct event;
struct event_base;
struct redisAsyncContext;
struct redis_conf;
struct stats;

enum rclient_state { RC_OFF = 0, RC_DOWN, RC_CONNECTING, RC_UP };

/* rc 0: the script answered: an integer in value, or a string in str (else NULL); rc -1:
 * the call failed (error reply, connection lost). */
typedef void (*redis_cb)(void *arg, int rc, long long value, const char *str);

struct rclient {
    struct event_base *base;          /* borrowed */
    struct stats *stats;              /* this thread's counters, borrowed; NULL = none */
    const char *who;                  /* for log lines: "worker 0", "main" */
    struct redisAsyncContext *ac;     /* owned while connecting or connected */
    enum rclient_state state;
    struct event *timer;              /* owned: reconnect wait, or connect/PING deadline */
    uint32_t backoff_ms;
    int misses;                       /* calls timed out since the last reply */
    int lost_logged;                  /* a failure was logged since the last connect */
    int first;                        /* the first connect to this target is under way:
                                       * calls wait for it (bounded by their own timeout)
                                       * instead of failing at once */
    /* the target, copied from a generation's [redis] */
    char ip[64];
    int port, db;
    char password[256];
    uint32_t timeout_ms;
};

struct redis_call;

/* A client on base; it connects when configured. 0 or -1 (out of memory). */
int rclient_init(struct rclient *c, struct event_base *base, struct stats *stats,
                 const char *who);

/* Close the connection and fail pending calls. */
void rclient_free(struct rclient *c);

/* Point the client at a generation's Redis (ip: its resolved address); a changed target
 * reconnects, the same one keeps the connection. rc->url NULL turns the client off. */
void rclient_configure(struct rclient *c, const struct redis_conf *rc, const char *ip);

/* GCRA for one key in Redis (the shared clock is Redis's TIME): value 0 = admitted, else
 * the microseconds until the key may send again (refused). NULL when the client is not
 * connected: the caller applies its failure policy now. */
struct redis_call *redis_gcra(struct rclient *c, const char *prefix, const char *name,
                              uint64_t interval_us, uint64_t tau_us, redis_cb cb, void *arg);

/* Heartbeat of instance id with its load (`stats`: "LAMBDA SUPPLY BUSY", numbers); str =
 * "INSTANCES LAMBDA SUPPLY_SUM SUPPLY_MAX BUSY LEADER": the instances seen in the last 5 s,
 * their loads summed (supply also its max), and the lowest live id (the one that decides
 * for the cluster). */
struct redis_call *redis_heartbeat(struct rclient *c, const char *prefix, const char *id,
                                   const char *stats, redis_cb cb, void *arg);

/* A command whose answer nobody waits for (SET, PUBLISH). 0 if sent, -1 if not connected. */
int redis_send(struct rclient *c, int argc, const char **argv);

/* The caller gives up on call (it timed out: timed_out = 1, or went away: 0). */
void redis_cancel(struct rclient *c, struct redis_call *call, int timed_out);

#endif
