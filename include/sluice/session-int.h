/* session-int: the functions the parts of a session call across files (session.c, the
 * client side; session_admit.c, admission; session_upstream.c, the backend side;
 * session_answer.c, what sluice answers by itself). Internal:
 * included only by src/session*.c; everything else in those files is static. */
#ifndef SLUICE_SESSION_INT_H
#define SLUICE_SESSION_INT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/time.h>

#include <sluice/http1.h>
#include <sluice/runtime.h>
#include <sluice/session-t.h>
#include <sluice/stats.h>

struct bufferevent;
struct evbuffer;

/* The configuration of the generation s's request runs on. */
static inline const struct config *sess_cfg_of(const struct session *s)
{
    return s->rt->cfg;
}

/* ms milliseconds as a timeval. */
static inline void sess_ms_tv(struct timeval *tv, uint32_t ms)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
}

/* ---- session.c: I/O helpers ---- */

/* (Re)arm the session's timer (header deadline, keep-alive idle, linger...) for ms. */
void sess_timer_ms(struct session *s, uint32_t ms);
/* Write what bev's output holds now; keep its write event armed only while bytes remain. */
void sess_flush_now(struct bufferevent *bev, int tls);
/* After a full 4 KiB libevent read, take what else the socket holds in one readv. */
void sess_read_more(struct bufferevent *bev, int tls);
/* sess_flush_now() on the client connection. */
void sess_flush_cli(struct session *s);
/* Client socket timeouts: read_ms for reading (0 = none), send_timeout for writing. */
void sess_cli_timeouts(struct session *s, uint32_t read_ms);
/* Bytes of in to give the head parser now (through the blank line, at most cap), or 0 to
 * wait: a head cut into many reads is searched and parsed in O(n) overall (hs: its state). */
size_t sess_head_span(struct evbuffer *in, size_t cap, struct head_scan *hs);

/* ---- session.c: ending a request ---- */

/* One access log line for the current request. */
void sess_access_log(struct session *s);
/* Stop forwarding: free the upstream connection. */
void sess_drop_upstream(struct session *s);
/* Give back the backend slot; a request waiting for one is woken. */
void sess_release_backend(struct session *s);
/* Close after what is queued for the client has been written (then linger). */
void sess_close_after_flush(struct session *s);
/* ---- session_answer.c ---- */

/* Answer a status the proxy produced (extra: more header lines, or NULL); keep or close. */
void sess_send_answer(struct session *s, int status, const char *code, const char *msg,
                      const char *extra);
/* sess_send_answer() without extra header lines. */
void sess_send_error(struct session *s, int status, const char *code, const char *msg);

/* redirect_http: 308 to the same host and target over https. */
void sess_send_redirect(struct session *s, const struct http1_msg *m);
/* 429 from the tenant's rate limit, with Retry-After and the RateLimit fields. */
void sess_send_rate_limited(struct session *s, uint64_t wait_ns);

/* The response had started when things went wrong: count why, log and free the session. */
void sess_abort_session(struct session *s, enum stat_id why);
/* Keep-alive: wait for (or parse the already pipelined) next request. */
void sess_next_request(struct session *s);

/* ---- session.c: the request ---- */

/* Admission decided on the head left in the input buffer (wait_ns: 429; refuse_down: 503). */
void sess_resume_head(struct session *s, uint64_t wait_ns, int refuse_down);
/* Checks shared by buffering and streaming a request body; 0 to go on, -1 answered. */
int sess_body_checks(struct session *s, int rc, int eof);
/* The client connection's read callback (also run for body bytes that came with the head). */
void sess_cli_read_cb(struct bufferevent *bev, void *arg);

/* ---- session_admit.c ---- */

/* Give back the tenant's and the route's in-flight slots (before sess_release_backend()). */
void sess_release_tenant(struct session *s);
/* Take one of the request's route's slots (1 without a route); 0 if the route is full. */
int sess_take_route(struct session *s);
/* Ask Redis for the tenant's shared rate limit (S_ADMIT), or fall back at once. */
void sess_ask_redis(struct session *s);
/* Redis did not decide (error or timeout): [redis] on_failure does. */
void sess_limiter_fallback(struct session *s);
/* 503 from the queue (full, waited too long, or shed). */
void sess_send_queue_reject(struct session *s, const char *why, uint32_t retry_s);
/* No slot free: wait in the shared queue (S_QUEUED) or refuse; front: keep its place. */
void sess_wait_for_slot(struct session *s, int front);

/* ---- session_upstream.c ---- */

/* Start moving a body of this framing (len: Content-Length), chunked on output or not. */
void sess_body_init(struct body *b, enum http1_body kind, uint64_t len, int out_chunked);
/* Move what src holds of the body to dst (eof: the source closed); 0 ok, -1 malformed. */
int sess_body_pump(struct body *b, struct evbuffer *src, struct evbuffer *dst, int eof);
/* Serialize the request head to send upstream into s->reqhead. */
void sess_build_upstream_head(struct session *s, const struct http1_msg *m);
/* Pick a backend and connect to it (the request's first attempt, or a retry). */
void sess_connect_upstream(struct session *s);
/* Pick a backend (from_queue: woken from the queue) and connect, or wait for a slot. */
void sess_pick_and_connect(struct session *s, int from_queue);
/* S_FORWARD: stream the client's request body upstream (eof: the client closed). */
void sess_pump_request(struct session *s, int eof);
/* S_TUNNEL: move what from has read to to, stopping from over the high watermark. */
void sess_tunnel_pump(struct bufferevent *from, struct bufferevent *to, int to_tls);

#endif
