/* http1: strict, in-place HTTP/1.1 message-head parser and chunked-body decoder (RFC 9112).
 * It never allocates: parsed fields are pointers + lengths into the caller's buffer.
 * It does not do I/O; the codecs (h1.c, h2.c) and request_upstream.c feed it bytes. */
#ifndef SLUICE_HTTP1_H
#define SLUICE_HTTP1_H

#include <stddef.h>
#include <stdint.h>

/* Parse results for heads: > 0 is the head's length in bytes (through the blank line). */
#define HTTP1_INCOMPLETE (-2) /* need more bytes; nothing wrong so far */
#define HTTP1_ERROR      (-1) /* malformed: *status says what to answer */

enum http1_method {
    HTTP1_M_OTHER = 0, HTTP1_M_GET, HTTP1_M_HEAD, HTTP1_M_POST, HTTP1_M_PUT, HTTP1_M_DELETE,
    HTTP1_M_OPTIONS, HTTP1_M_PATCH, HTTP1_M_TRACE, HTTP1_M_CONNECT
};

/* How a message body is delimited (RFC 9112 section 6.3). */
enum http1_body {
    HTTP1_BODY_NONE = 0, /* no body */
    HTTP1_BODY_LENGTH,   /* Content-Length bytes */
    HTTP1_BODY_CHUNKED,  /* Transfer-Encoding: chunked */
    HTTP1_BODY_CLOSE     /* responses only: until the connection closes */
};

/* Well-known headers the parser recognises; HTTP1_H_OTHER for the rest. */
enum http1_hdr {
    HTTP1_H_OTHER = 0, HTTP1_H_HOST, HTTP1_H_CONTENT_LENGTH, HTTP1_H_TRANSFER_ENCODING,
    HTTP1_H_CONNECTION, HTTP1_H_KEEP_ALIVE, HTTP1_H_PROXY_CONNECTION, HTTP1_H_TE,
    HTTP1_H_TRAILER, HTTP1_H_UPGRADE, HTTP1_H_EXPECT, HTTP1_H_PROXY_AUTHORIZATION,
    HTTP1_H_PROXY_AUTHENTICATE, HTTP1_H_X_FORWARDED_FOR, HTTP1_H_X_FORWARDED_PROTO,
    HTTP1_H_X_FORWARDED_HOST, HTTP1_H_X_REQUEST_ID, HTTP1_H_FORWARDED
};

/* One header field; name and value point into the parsed buffer. The value has
 * leading and trailing whitespace removed. `hop` is set for hop-by-hop fields
 * (RFC 9110 7.6.1), including those named in Connection (except Host), and for the
 * fields sluice regenerates itself: Content-Length, Transfer-Encoding and Expect. */
struct http1_header {
    const char *name;
    size_t name_len;
    const char *value;
    size_t value_len;
    enum http1_hdr id;
    int hop;
};

/* Limits the parser enforces; a zero field takes the default in brackets. */
struct http1_limits {
    size_t max_head;      /* [16384] whole head incl. request line -> 431 (414 if the line alone is over) */
    size_t max_line;      /* [8192] request/status line -> 414 for requests */
    size_t max_headers;   /* [100] header count -> 431; also bounded by the caller's array */
};

/* A parsed message head (request or response). */
struct http1_msg {
    /* request line */
    const char *method;
    size_t method_len;
    enum http1_method meth;
    const char *target;        /* origin-form path (for absolute-form, its path part) */
    size_t target_len;
    int slash_missing;         /* absolute-form with an empty path: the origin-form target
                                * is "/" followed by `target` (empty, or "?query") */
    const char *path;          /* its normalized path (uri.h), set by the caller; NULL: none */
    size_t path_len;
    const char *authority;     /* absolute-form only: the authority, which replaces Host */
    size_t authority_len;
    /* status line (responses) */
    int status;
    const char *reason;
    size_t reason_len;
    int minor;                 /* HTTP/1.minor: 0 or 1 */
    /* headers */
    struct http1_header *headers; /* the caller's array */
    size_t num_headers;
    /* framing and semantics derived from the headers */
    enum http1_body body;
    uint64_t content_length;   /* valid when body == HTTP1_BODY_LENGTH */
    int keep_alive;            /* 1 if the connection may persist after this message */
    int expect_continue;       /* request had "Expect: 100-continue" */
    int upgrade;               /* Upgrade present and Connection lists "upgrade" */
    int host;                  /* index of the Host header, -1 if absent */
    int unsent_body;           /* response: its head announces a body (Content-Length > 0 or
                                * Transfer-Encoding) that it must not carry (an answer to
                                * HEAD, 1xx, 204, 304); a server may send it anyway, so the
                                * connection cannot be trusted for another request */
};

/* Parse a request head from buf[0..len). Returns the head length, HTTP1_INCOMPLETE, or
 * HTTP1_ERROR with *status set to 400, 414, 431 or 501. Accepts origin-form, absolute-form
 * (http/https; RFC 9112 3.2.2: its authority wins over Host; an empty path is "/", or "*"
 * for OPTIONS) and "*" for OPTIONS; rejects authority-form and a target with a fragment
 * ("#", as HAProxy does). Rejects (RFC 9112): bare LF, a Host that is not uri-host[:port],
 * obs-fold, bad method/target/version, bad header-name bytes, NUL/CR/LF/CTL in values,
 * both Content-Length and Transfer-Encoding, differing or malformed Content-Length,
 * Transfer-Encoding whose last coding is not chunked (400) or with other codings (501),
 * HTTP/1.1 without exactly one Host, and more headers than allowed. */
int http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
                        struct http1_header *hdrs, size_t max_hdrs, struct http1_msg *msg,
                        int *status);

/* Parse a response head. `req_meth` is the method of the request it answers (HEAD and
 * CONNECT change framing). Returns the head length, HTTP1_INCOMPLETE or HTTP1_ERROR
 * (*status 502). 1xx, 204 and 304 and responses to HEAD have no body. */
int http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
                         struct http1_header *hdrs, size_t max_hdrs, enum http1_method req_meth,
                         struct http1_msg *msg, int *status);

/* Case-insensitive comparison of a header field with a literal name. */
int http1_name_is(const struct http1_header *h, const char *name);

/* Find the first header with this id; NULL if none. */
const struct http1_header *http1_find(const struct http1_msg *msg, enum http1_hdr id);

/* Methods a failed attempt may be retried with (RFC 9110 9.2.2). */
int http1_idempotent(enum http1_method m);

/* ---- chunked transfer coding ---- */

enum http1_chunk_state {
    HTTP1_CH_SIZE = 0,  /* expecting a chunk-size line */
    HTTP1_CH_DATA,      /* inside chunk data: `remaining` bytes to go */
    HTTP1_CH_DATA_CRLF, /* expecting the CRLF after chunk data */
    HTTP1_CH_TRAILER,   /* inside the trailer section */
    HTTP1_CH_DONE,      /* the message is complete */
    HTTP1_CH_ERROR
};

struct http1_chunked {
    enum http1_chunk_state state;
    uint64_t remaining;   /* data bytes left in the current chunk */
    size_t trailer_bytes; /* bytes of trailer seen so far (bounded) */
    size_t max_trailer;   /* [8192] */
};

#define HTTP1_CHUNK_MAX_LINE 4096 /* size line incl. extensions */

/* Start a decoder. */
void http1_chunked_init(struct http1_chunked *c, size_t max_trailer);

/* Consume framing bytes (size lines, the CRLF after data, trailers) from buf[0..len).
 * Stops at the start of chunk data (state HTTP1_CH_DATA), at the end (HTTP1_CH_DONE), on an
 * error (HTTP1_CH_ERROR) or when it needs more bytes. Returns the number of bytes consumed.
 * In HTTP1_CH_DATA it consumes nothing: the caller moves up to `remaining` data bytes and
 * reports them with http1_chunked_data(). */
size_t http1_chunked_parse(struct http1_chunked *c, const char *buf, size_t len);

/* Report n data bytes moved (n <= remaining). */
void http1_chunked_data(struct http1_chunked *c, uint64_t n);

#endif
