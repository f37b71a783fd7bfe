/* request-int: the functions the parts of a request call across files: request.c (the
 * state machine, the body buffered before a backend, release, the access log),
 * request_admit.c (Redis, slots, the queue), request_upstream.c (the backend side) and
 * request_answer.c (what sluice answers by itself). Internal: included only by
 * src/request*.c; the request's API for codecs is request.h. */
#ifndef SLUICE_REQUEST_INT_H
#define SLUICE_REQUEST_INT_H

#include <stdint.h>

#include <sluice/conn.h>
#include <sluice/request.h>
#include <sluice/runtime.h>

/* The configuration of the generation r runs on. */
static inline const struct config *req_cfg(const struct request *r)
{
    return r->rt->cfg;
}

/* The codec of r's connection: r's only way to its client. */
static inline const struct codec *req_codec(const struct request *r)
{
    return r->c->codec;
}

/* ---- request.c ---- */

/* (Re)arm r's own timer (Redis and queue deadlines) for ms; -1 out of memory. */
int req_timer_ms(struct request *r, uint32_t ms);
/* Stop r's timer, if it has one. */
void req_timer_stop(struct request *r);
/* Admission decided (wait_ns: 429; refuse_down: 503, the shared limiter is down): read the
 * body, or go for a backend. */
void req_admitted(struct request *r, uint64_t wait_ns, int refuse_down);
/* Checks shared by buffering and streaming a request body: 0 to go on, -1 r was ended. */
int req_body_checks(struct request *r, int rc, int eof);

/* ---- request_admit.c ---- */

/* Give back the tenant's and the route's in-flight slots (before adm_release_backend()). */
void adm_release_slots(struct request *r);
/* Give back the backend slot; a request waiting for one is woken. */
void adm_release_backend(struct request *r);
/* Take the tenant's and the route's slots r still lacks: 1, or 0 (one of them is full). */
int adm_take_slots(struct request *r);
/* Ask Redis for the tenant's shared rate limit (ADMIT), or fall back at once. */
void adm_ask_redis(struct request *r);
/* r's timer fired: Redis did not answer, or it waited queue timeout. */
void adm_timer(struct request *r);
/* No slot free: wait in the shared queue (QUEUED) or refuse; front: keep its place. */
void adm_wait_for_slot(struct request *r, int front);
/* Leave the queue and take back a wake-up on its way (release). */
void adm_leave_queue(struct request *r);

/* ---- request_upstream.c ---- */

/* Serialize the request head to send upstream into r->head_out; -1 out of memory. */
int ups_build_head(struct request *r, const struct http1_msg *m);
/* Pick a backend (from_queue: woken from the queue) and connect, or wait for a slot. */
void ups_pick_and_connect(struct request *r, int from_queue);
/* SENDING (or STREAMING before the body ended): move the client's body upstream. */
void ups_pump_request(struct request *r);
/* TUNNEL: move what the client sent to the backend. */
void ups_tunnel_client(struct request *r);
/* The client's side drained: read the backend again (STREAMING, TUNNEL). */
void ups_sink_drained(struct request *r);
/* Free r's backend connection, if any (not pooled). */
void ups_drop(struct request *r);

/* ---- request_answer.c ---- */

/* redirect_http: 308 to the same host and target over https. */
void req_send_redirect(struct request *r, const struct http1_msg *m);
/* 429 from the tenant's rate limit, with Retry-After and the RateLimit fields. */
void req_send_rate_limited(struct request *r, uint64_t wait_ns);
/* 503 from the queue (full, waited too long, or shed); retry_s 0: ask the queue. */
void req_send_queue_reject(struct request *r, const char *why, uint32_t retry_s);
/* One access log line for r, and its times into the meter. */
void req_access_log(struct request *r);

#endif
