/* Unit tests for the HTTP/1.1 head parser and chunked decoder (include/sluice/http1.h).
 * Table-driven cases are registered one cmocka test per row, named after the row, so a
 * failure names the exact input. */
#include <ctype.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <sluice/http1.h>

/* A string literal as (pointer, length): keeps embedded NUL bytes. */
#define RAW(s) s, sizeof(s) - 1
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define NHDRS 128

#define GET11  "GET / HTTP/1.1\r\nHost: a\r\n"
#define POST11 "POST / HTTP/1.1\r\nHost: a\r\n"
#define CRLF   "\r\n"

static const struct http1_limits deflim; /* all zero: the documented defaults */

/* ------------------------------------------------------------------ helpers */

/* Printable rendering of raw bytes for failure messages. */
static const char *esc(const char *s, size_t n)
{
    static char out[600];
    size_t o = 0, i;
    for (i = 0; i < n && o + 8 < sizeof out; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '\r') {
            out[o++] = '\\';
            out[o++] = 'r';
        } else if (ch == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (ch == '\t') {
            out[o++] = '\\';
            out[o++] = 't';
        } else if (ch == '\\' || ch == '"') {
            out[o++] = '\\';
            out[o++] = (char)ch;
        } else if (ch < 0x20 || ch >= 0x7f) {
            o += (size_t)snprintf(out + o, sizeof out - o, "\\x%02x", ch);
        } else {
            out[o++] = (char)ch;
        }
    }
    if (i < n)
        o += (size_t)snprintf(out + o, sizeof out - o, "...(%zu bytes)", n);
    out[o] = '\0';
    return out;
}

/* Fail unless (p, n) equals the C string want. */
static void span_eq(const char *what, const char *p, size_t n, const char *want)
{
    if (p == NULL || n != strlen(want) || memcmp(p, want, n) != 0)
        fail_msg("%s: got \"%s\", want \"%s\"", what, p ? esc(p, n) : "(null)", want);
}

/* Length through the first blank line, or 0 if there is none. */
static size_t head_len_of(const char *buf, size_t len)
{
    const char *e = memmem(buf, len, "\r\n\r\n", 4);
    return e ? (size_t)(e - buf) + 4 : 0;
}

/* Growable text builder for large inputs. */
struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_add(struct sbuf *b, const char *fmt, ...) CMOCKA_PRINTF_ATTRIBUTE(2, 3);
static void sb_add(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    assert_true(n >= 0);
    if (b->len + (size_t)n + 1 > b->cap) {
        b->cap = (b->len + (size_t)n + 1) * 2;
        b->p = realloc(b->p, b->cap);
        assert_non_null(b->p);
    }
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

static void sb_rep(struct sbuf *b, char ch, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        sb_add(b, "%c", ch);
}

/* Result of one parse. The message is pre-filled with junk so fields the parser fails
 * to set are noticed. */
struct parsed {
    struct http1_header hdrs[NHDRS];
    struct http1_msg msg;
    int status;
    int rc;
};

static int req_parse(struct parsed *p, const char *buf, size_t len,
                     const struct http1_limits *lim, size_t max_hdrs)
{
    memset(p->hdrs, 0x5a, sizeof p->hdrs);
    memset(&p->msg, 0x5a, sizeof p->msg);
    p->status = -777;
    p->rc = http1_parse_request(buf, len, lim, p->hdrs, max_hdrs, &p->msg, &p->status);
    return p->rc;
}

static int resp_parse(struct parsed *p, const char *buf, size_t len,
                      const struct http1_limits *lim, enum http1_method meth)
{
    memset(p->hdrs, 0x5a, sizeof p->hdrs);
    memset(&p->msg, 0x5a, sizeof p->msg);
    p->status = -777;
    p->rc = http1_parse_response(buf, len, lim, p->hdrs, NHDRS, meth, &p->msg, &p->status);
    return p->rc;
}

/* Every proper prefix of the head must be HTTP1_INCOMPLETE. */
static void prefixes_incomplete(int is_req, const char *buf, size_t head_len,
                                enum http1_method meth)
{
    struct parsed *p = malloc(sizeof *p);
    size_t i;
    assert_non_null(p);
    for (i = 0; i < head_len; i++) {
        int rc = is_req ? req_parse(p, buf, i, &deflim, NHDRS)
                        : resp_parse(p, buf, i, &deflim, meth);
        if (rc != HTTP1_INCOMPLETE) {
            free(p);
            fail_msg("prefix of %zu/%zu bytes \"%s\": want HTTP1_INCOMPLETE, got rc=%d",
                     i, head_len, esc(buf, i), rc);
        }
    }
    free(p);
}

/* A request (possibly followed by body bytes) that must parse; every prefix of its head
 * must be incomplete, and the returned length must be exactly the head. */
static void req_ok(struct parsed *p, const char *buf, size_t len)
{
    size_t hl = head_len_of(buf, len);
    assert_true(hl > 0);
    prefixes_incomplete(1, buf, hl, HTTP1_M_OTHER);
    req_parse(p, buf, len, &deflim, NHDRS);
    if (p->rc != (int)hl)
        fail_msg("\"%s\": want head length %zu, got rc=%d status=%d", esc(buf, len), hl,
                 p->rc, p->status);
    assert_ptr_equal(p->msg.headers, p->hdrs);
}

static void resp_ok(struct parsed *p, const char *buf, size_t len, enum http1_method meth)
{
    size_t hl = head_len_of(buf, len);
    assert_true(hl > 0);
    prefixes_incomplete(0, buf, hl, meth);
    resp_parse(p, buf, len, &deflim, meth);
    if (p->rc != (int)hl)
        fail_msg("\"%s\": want head length %zu, got rc=%d status=%d", esc(buf, len), hl,
                 p->rc, p->status);
    assert_ptr_equal(p->msg.headers, p->hdrs);
}

static void expect_error(const struct parsed *p, int status, const char *buf, size_t len)
{
    if (p->rc != HTTP1_ERROR || p->status != status)
        fail_msg("\"%s\": want HTTP1_ERROR status %d, got rc=%d status=%d", esc(buf, len),
                 status, p->rc, p->status);
}

/* The header with this name (case-insensitive), failing if absent. */
static const struct http1_header *hdr(const struct http1_msg *m, const char *name)
{
    size_t i;
    for (i = 0; i < m->num_headers; i++)
        if (http1_name_is(&m->headers[i], name))
            return &m->headers[i];
    fail_msg("header %s not found", name);
    return NULL;
}

/* -------------------------------------------------------- valid requests */

static void test_req_get_with_headers(void **state)
{
    static const char req[] = "GET /index.html?q=1&r=%20 HTTP/1.1\r\n"
                              "Host: example.com\r\n"
                              "User-Agent: test/1.0\r\n"
                              "Accept: */*\r\n"
                              "\r\n";
    struct parsed p;
    const struct http1_header *h;

    req_ok(&p, RAW(req));
    span_eq("method", p.msg.method, p.msg.method_len, "GET");
    assert_int_equal(p.msg.meth, HTTP1_M_GET);
    span_eq("target", p.msg.target, p.msg.target_len, "/index.html?q=1&r=%20");
    assert_int_equal(p.msg.minor, 1);
    assert_int_equal(p.msg.num_headers, 3);
    span_eq("name0", p.hdrs[0].name, p.hdrs[0].name_len, "Host");
    span_eq("value0", p.hdrs[0].value, p.hdrs[0].value_len, "example.com");
    span_eq("name1", p.hdrs[1].name, p.hdrs[1].name_len, "User-Agent");
    span_eq("value1", p.hdrs[1].value, p.hdrs[1].value_len, "test/1.0");
    span_eq("name2", p.hdrs[2].name, p.hdrs[2].name_len, "Accept");
    span_eq("value2", p.hdrs[2].value, p.hdrs[2].value_len, "*/*");
    assert_int_equal(p.hdrs[0].id, HTTP1_H_HOST);
    assert_int_equal(p.hdrs[1].id, HTTP1_H_OTHER);
    assert_int_equal(p.hdrs[0].hop, 0);
    assert_int_equal(p.hdrs[1].hop, 0);
    assert_int_equal(p.hdrs[2].hop, 0);
    assert_int_equal(p.msg.host, 0);
    assert_int_equal(p.msg.body, HTTP1_BODY_NONE);
    assert_int_equal(p.msg.keep_alive, 1);
    assert_int_equal(p.msg.expect_continue, 0);
    assert_int_equal(p.msg.upgrade, 0);
    /* fields point into the caller's buffer */
    assert_ptr_equal(p.msg.method, req);
    h = http1_find(&p.msg, HTTP1_H_HOST);
    assert_ptr_equal(h, &p.hdrs[0]);
    assert_null(http1_find(&p.msg, HTTP1_H_CONTENT_LENGTH));
}

static void test_req_post_content_length(void **state)
{
    static const char req[] = "POST /submit HTTP/1.1\r\n"
                              "Host: a\r\n"
                              "Content-Type: text/plain\r\n"
                              "Content-Length: 5\r\n"
                              "\r\n"
                              "hello";
    struct parsed p;
    req_ok(&p, RAW(req));
    assert_int_equal(p.rc, sizeof req - 1 - 5); /* body bytes are not part of the head */
    assert_int_equal(p.msg.meth, HTTP1_M_POST);
    assert_int_equal(p.msg.body, HTTP1_BODY_LENGTH);
    assert_int_equal(p.msg.content_length, 5);
    assert_int_equal(p.msg.keep_alive, 1);
    assert_int_equal(hdr(&p.msg, "content-length")->id, HTTP1_H_CONTENT_LENGTH);
}

static void test_req_chunked_post(void **state)
{
    static const char req[] = "POST /up HTTP/1.1\r\n"
                              "Host: a\r\n"
                              "Transfer-Encoding: chunked\r\n"
                              "\r\n"
                              "5\r\nhello\r\n0\r\n\r\n";
    struct parsed p;
    req_ok(&p, RAW(req));
    assert_int_equal(p.msg.body, HTTP1_BODY_CHUNKED);
    assert_int_equal(p.msg.keep_alive, 1);
    assert_int_equal(hdr(&p.msg, "Transfer-Encoding")->id, HTTP1_H_TRANSFER_ENCODING);
    assert_int_equal(hdr(&p.msg, "Transfer-Encoding")->hop, 1); /* RFC 9110 7.6.1 */
}

/* Transfer-coding names are case-insensitive (RFC 9112 7). */
static void test_req_chunked_case_insensitive(void **state)
{
    struct parsed p;
    req_ok(&p, RAW(POST11 "Transfer-Encoding: Chunked\r\n" CRLF));
    assert_int_equal(p.msg.body, HTTP1_BODY_CHUNKED);
    req_ok(&p, RAW(POST11 "transfer-encoding: CHUNKED\r\n" CRLF));
    assert_int_equal(p.msg.body, HTTP1_BODY_CHUNKED);
}

/* Trailing OWS is not part of a field value (RFC 9112 5.1; header: "The value has leading
 * and trailing whitespace removed"), so "chunked " is plain chunked. */
static void test_req_chunked_trailing_ows(void **state)
{
    struct parsed p;
    req_ok(&p, RAW(POST11 "Transfer-Encoding: chunked \t\r\n" CRLF));
    assert_int_equal(p.msg.body, HTTP1_BODY_CHUNKED);
    span_eq("te value", hdr(&p.msg, "Transfer-Encoding")->value,
            hdr(&p.msg, "Transfer-Encoding")->value_len, "chunked");
}

static void test_req_content_length_values(void **state)
{
    static const struct {
        const char *cl;
        uint64_t want;
    } cases[] = {
        { "0", 0 },
        { "005", 5 }, /* 1*DIGIT: leading zeros are valid */
        { "1000000000000", 1000000000000ULL }, /* over 32 bits */
    };
    size_t i;
    for (i = 0; i < NELEM(cases); i++) {
        char buf[256];
        struct parsed p;
        int n = snprintf(buf, sizeof buf, POST11 "Content-Length: %s\r\n\r\n", cases[i].cl);
        req_parse(&p, buf, (size_t)n, &deflim, NHDRS);
        if (p.rc != n)
            fail_msg("Content-Length: %s: want rc=%d, got rc=%d status=%d", cases[i].cl, n,
                     p.rc, p.status);
        if (cases[i].want == 0 && p.msg.body == HTTP1_BODY_NONE)
            continue; /* "no body" is an equally good answer for 0 */
        assert_int_equal(p.msg.body, HTTP1_BODY_LENGTH);
        if (p.msg.content_length != cases[i].want)
            fail_msg("Content-Length: %s: got %llu", cases[i].cl,
                     (unsigned long long)p.msg.content_length);
    }
}

static void test_req_http10_no_host(void **state)
{
    struct parsed p;
    req_ok(&p, RAW("GET / HTTP/1.0\r\nAccept: */*\r\n\r\n"));
    assert_int_equal(p.msg.minor, 0);
    assert_int_equal(p.msg.host, -1);
    assert_null(http1_find(&p.msg, HTTP1_H_HOST));
}

/* RFC 9110 7.2: a client with no authority sends Host with an empty value. */
static void test_req_valid_host_values(void **state)
{
    static const char *const hosts[] = {
        "example.com", "example.com:8080", "127.0.0.1", "127.0.0.1:80", "[::1]", "[::1]:8080",
        "xn--bcher-kva.example", "a-b_c.~d", "EXAMPLE.COM", "a%2Db",
    };
    size_t i;
    for (i = 0; i < NELEM(hosts); i++) {
        char buf[256];
        struct parsed p;
        int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", hosts[i]);
        req_parse(&p, buf, (size_t)n, &deflim, NHDRS);
        if (p.rc != n)
            fail_msg("Host: %s: want rc=%d, got rc=%d status=%d", hosts[i], n, p.rc, p.status);
    }
}

/* Every byte value inside a reg-name Host ("a?b"), a port ("a:1?") and an IPv6 literal
 * ("[::?]"): allowed exactly as RFC 3986 says, whatever the C library's locale tables. */
static void test_req_host_every_byte(void **state)
{
    static const char regname[] = "-._~%!$&'()*+;=";
    (void)state;
    for (int c = 0; c < 256; c++) {
        int alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        int hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        struct {
            const char *pre, *post;
            int ok;
        } cases[] = {
            { "a", "b", alnum || (c && strchr(regname, c)) },
            { "a:1", "", (c >= '0' && c <= '9') || c == ' ' || c == '\t' }, /* OWS: trimmed */
            { "[::", "]", hex || c == ':' || c == '.' },
        };
        for (size_t k = 0; k < NELEM(cases); k++) {
            char buf[64];
            size_t n = 0;
            const char *head = "GET / HTTP/1.1\r\nHost: ";
            memcpy(buf, head, strlen(head));
            n += strlen(head);
            memcpy(buf + n, cases[k].pre, strlen(cases[k].pre));
            n += strlen(cases[k].pre);
            buf[n++] = (char)c;
            memcpy(buf + n, cases[k].post, strlen(cases[k].post));
            n += strlen(cases[k].post);
            memcpy(buf + n, "\r\n\r\n", 4);
            n += 4;
            struct parsed p;
            req_parse(&p, buf, n, &deflim, NHDRS);
            if (cases[k].ok && p.rc != (int)n)
                fail_msg("byte 0x%02x in %s?%s: refused (rc=%d)", c, cases[k].pre,
                         cases[k].post, p.rc);
            if (!cases[k].ok && p.rc != HTTP1_ERROR)
                fail_msg("byte 0x%02x in %s?%s: accepted", c, cases[k].pre, cases[k].post);
        }
    }
}

static void test_req_empty_host_value(void **state)
{
    struct parsed p;
    req_ok(&p, RAW("GET / HTTP/1.1\r\nHost:\r\n\r\n"));
    assert_int_equal(p.msg.host, 0);
    assert_int_equal(p.hdrs[0].value_len, 0);
}

/* Keep-alive defaults: 1.0 closes unless "keep-alive"; 1.1 persists unless "close". */
struct ka_case {
    const char *name;
    const char *raw;
    size_t len;
    int keep_alive;
};

static const struct ka_case ka_cases[] = {
    { "keepalive: 1.0 default close", RAW("GET / HTTP/1.0\r\n\r\n"), 0 },
    { "keepalive: 1.0 keep-alive", RAW("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), 1 },
    { "keepalive: 1.0 Keep-Alive mixed case", RAW("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"), 1 },
    { "keepalive: 1.0 keep-alive in a list", RAW("GET / HTTP/1.0\r\nConnection: foo, keep-alive\r\n\r\n"), 1 },
    { "keepalive: 1.0 close", RAW("GET / HTTP/1.0\r\nConnection: close\r\n\r\n"), 0 },
    { "keepalive: 1.0 other token", RAW("GET / HTTP/1.0\r\nConnection: foo\r\n\r\n"), 0 },
    { "keepalive: 1.1 default", RAW("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 1 },
    { "keepalive: 1.1 close", RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"), 0 },
    { "keepalive: 1.1 Close mixed case", RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: Close\r\n\r\n"), 0 },
    { "keepalive: 1.1 close in a list", RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: foo,close\r\n\r\n"), 0 },
    { "keepalive: 1.1 close wins over keep-alive", RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\n\r\n"), 0 },
    { "keepalive: 1.1 keep-alive", RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n"), 1 },
    { "keepalive: 1.1 closed is not close", RAW("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n"), 1 },
};

static void run_ka_case(void **state)
{
    const struct ka_case *c = *state;
    struct parsed p;
    req_ok(&p, c->raw, c->len);
    if (p.msg.keep_alive != c->keep_alive)
        fail_msg("%s: \"%s\": want keep_alive=%d, got %d", c->name, esc(c->raw, c->len),
                 c->keep_alive, p.msg.keep_alive);
}

static void test_req_expect_continue(void **state)
{
    struct parsed p;
    req_ok(&p, RAW(POST11 "Content-Length: 3\r\nExpect: 100-continue\r\n\r\n"));
    assert_int_equal(p.msg.expect_continue, 1);
    assert_int_equal(hdr(&p.msg, "Expect")->id, HTTP1_H_EXPECT);
    /* expectation values are case-insensitive (RFC 9110 10.1.1) */
    req_ok(&p, RAW(POST11 "Content-Length: 3\r\nexpect: 100-Continue\r\n\r\n"));
    assert_int_equal(p.msg.expect_continue, 1);
    req_ok(&p, RAW(POST11 "Content-Length: 3\r\n\r\n"));
    assert_int_equal(p.msg.expect_continue, 0);
    req_ok(&p, RAW(POST11 "Content-Length: 3\r\nExpect: 200-ok\r\n\r\n"));
    assert_int_equal(p.msg.expect_continue, 0);
}

static void test_req_upgrade_websocket(void **state)
{
    struct parsed p;
    req_ok(&p, RAW("GET /ws HTTP/1.1\r\n"
                   "Host: a\r\n"
                   "Upgrade: websocket\r\n"
                   "Connection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n"
                   "\r\n"));
    assert_int_equal(p.msg.upgrade, 1);
    assert_int_equal(p.msg.keep_alive, 1);
    assert_int_equal(hdr(&p.msg, "Upgrade")->id, HTTP1_H_UPGRADE);
    assert_int_equal(hdr(&p.msg, "Upgrade")->hop, 1);
    assert_int_equal(hdr(&p.msg, "Connection")->hop, 1);
    assert_int_equal(hdr(&p.msg, "Sec-WebSocket-Key")->hop, 0);

    req_ok(&p, RAW("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, upgrade\r\n"
                   "Upgrade: websocket\r\n\r\n"));
    assert_int_equal(p.msg.upgrade, 1);
}

/* Upgrade needs both the header and the Connection token. */
static void test_req_upgrade_needs_both(void **state)
{
    struct parsed p;
    req_ok(&p, RAW(GET11 "Upgrade: websocket\r\n" CRLF));
    assert_int_equal(p.msg.upgrade, 0);
    req_ok(&p, RAW(GET11 "Connection: upgrade\r\n" CRLF));
    assert_int_equal(p.msg.upgrade, 0);
    req_ok(&p, RAW(GET11 "Upgrade: websocket\r\nConnection: keep-alive\r\n" CRLF));
    assert_int_equal(p.msg.upgrade, 0);
}

static void test_req_hop_by_hop(void **state)
{
    struct parsed p;
    req_ok(&p, RAW("GET / HTTP/1.1\r\n"
                   "Host: a\r\n"
                   "Connection: keep-alive, X-Foo\r\n"
                   "X-Foo: 1\r\n"
                   "X-Bar: 2\r\n"
                   "Keep-Alive: timeout=5\r\n"
                   "TE: trailers\r\n"
                   "Proxy-Connection: keep-alive\r\n"
                   "Upgrade: h2c\r\n"
                   "\r\n"));
    assert_int_equal(hdr(&p.msg, "Host")->hop, 0);
    assert_int_equal(hdr(&p.msg, "Connection")->hop, 1);
    assert_int_equal(hdr(&p.msg, "X-Foo")->hop, 1);
    assert_int_equal(hdr(&p.msg, "X-Bar")->hop, 0);
    assert_int_equal(hdr(&p.msg, "Keep-Alive")->hop, 1);
    assert_int_equal(hdr(&p.msg, "TE")->hop, 1);
    assert_int_equal(hdr(&p.msg, "Proxy-Connection")->hop, 1);
    assert_int_equal(hdr(&p.msg, "Upgrade")->hop, 1);
    assert_int_equal(p.msg.upgrade, 0);
}

/* A field named in Connection is hop-by-hop wherever it appears and however it is cased. */
static void test_req_hop_by_hop_named_before_connection(void **state)
{
    struct parsed p;
    req_ok(&p, RAW("GET / HTTP/1.1\r\n"
                   "X-Secret: 1\r\n"
                   "Host: a\r\n"
                   "X-Other: 2\r\n"
                   "Connection: x-secret ,  X-OTHER\r\n"
                   "X-Kept: 3\r\n"
                   "\r\n"));
    assert_int_equal(hdr(&p.msg, "X-Secret")->hop, 1);
    assert_int_equal(hdr(&p.msg, "X-Other")->hop, 1);
    assert_int_equal(hdr(&p.msg, "X-Kept")->hop, 0);
    assert_int_equal(p.msg.host, 1);
}

static void test_req_value_trimming(void **state)
{
    struct parsed p;
    req_ok(&p, RAW(GET11 "X-A: \t  v w \t \r\n"
                   "X-B:\r\n"
                   "X-C:    \r\n"
                   "X-D:nospace\r\n"
                   "X-E: a\tb\r\n"
                   "X-F: caf\xc3\xa9\r\n" /* obs-text is allowed in values */
                   CRLF));
    span_eq("X-A", hdr(&p.msg, "X-A")->value, hdr(&p.msg, "X-A")->value_len, "v w");
    assert_int_equal(hdr(&p.msg, "X-B")->value_len, 0);
    assert_int_equal(hdr(&p.msg, "X-C")->value_len, 0);
    span_eq("X-D", hdr(&p.msg, "X-D")->value, hdr(&p.msg, "X-D")->value_len, "nospace");
    span_eq("X-E", hdr(&p.msg, "X-E")->value, hdr(&p.msg, "X-E")->value_len, "a\tb");
    span_eq("X-F", hdr(&p.msg, "X-F")->value, hdr(&p.msg, "X-F")->value_len, "caf\xc3\xa9");
}

/* Header names may use every tchar. */
static void test_req_tchar_names(void **state)
{
    struct parsed p;
    req_ok(&p, RAW(GET11 "!#$%&'*+-.^_`|~09azAZ: v\r\n" CRLF));
    span_eq("name", p.hdrs[1].name, p.hdrs[1].name_len, "!#$%&'*+-.^_`|~09azAZ");
}

static void test_req_methods(void **state)
{
    static const struct {
        const char *method, *target;
        enum http1_method want;
    } cases[] = {
        { "GET", "/", HTTP1_M_GET },
        { "HEAD", "/", HTTP1_M_HEAD },
        { "POST", "/", HTTP1_M_POST },
        { "PUT", "/", HTTP1_M_PUT },
        { "DELETE", "/", HTTP1_M_DELETE },
        { "OPTIONS", "*", HTTP1_M_OPTIONS },
        { "PATCH", "/", HTTP1_M_PATCH },
        { "TRACE", "/", HTTP1_M_TRACE },
        { "PROPFIND", "/", HTTP1_M_OTHER },
        { "get", "/", HTTP1_M_OTHER }, /* methods are case-sensitive */
        { "GETS", "/", HTTP1_M_OTHER },
        { "M-SEARCH", "/", HTTP1_M_OTHER },
    };
    size_t i;
    for (i = 0; i < NELEM(cases); i++) {
        char buf[256];
        struct parsed p;
        int n = snprintf(buf, sizeof buf, "%s %s HTTP/1.1\r\nHost: a\r\n\r\n", cases[i].method,
                         cases[i].target);
        req_parse(&p, buf, (size_t)n, &deflim, NHDRS);
        if (p.rc != n)
            fail_msg("method %s: want rc=%d, got rc=%d status=%d", cases[i].method, n, p.rc,
                     p.status);
        if (p.msg.meth != cases[i].want)
            fail_msg("method %s: want enum %d, got %d", cases[i].method, cases[i].want,
                     p.msg.meth);
        span_eq("method", p.msg.method, p.msg.method_len, cases[i].method);
        span_eq("target", p.msg.target, p.msg.target_len, cases[i].target);
    }
}

static void test_req_absolute_form(void **state)
{
    struct parsed p;
    req_ok(&p, RAW("GET http://example.com:8080/a/b?c=d HTTP/1.1\r\nHost: example.com:8080\r\n\r\n"));
    span_eq("target", p.msg.target, p.msg.target_len, "/a/b?c=d");
    span_eq("authority", p.msg.authority, p.msg.authority_len, "example.com:8080");
    assert_int_equal(p.msg.slash_missing, 0);
}

/* RFC 9112 3.2.2 and 3.2.4: an empty path is "/" ("/?q" with a query), "*" for OPTIONS. */
static void test_req_absolute_form_empty_path(void **state)
{
    struct parsed p;
    (void)state;
    req_ok(&p, RAW("GET http://h.test HTTP/1.1\r\nHost: h.test\r\n\r\n"));
    span_eq("authority", p.msg.authority, p.msg.authority_len, "h.test");
    assert_int_equal(p.msg.target_len, 0);
    assert_int_equal(p.msg.slash_missing, 1);
    req_ok(&p, RAW("GET http://h.test:1234?x=1 HTTP/1.1\r\nHost: h.test:1234\r\n\r\n"));
    span_eq("authority", p.msg.authority, p.msg.authority_len, "h.test:1234");
    span_eq("target", p.msg.target, p.msg.target_len, "?x=1");
    assert_int_equal(p.msg.slash_missing, 1);
    req_ok(&p, RAW("OPTIONS http://h.test HTTP/1.1\r\nHost: h.test\r\n\r\n"));
    span_eq("target", p.msg.target, p.msg.target_len, "*");
    assert_int_equal(p.msg.slash_missing, 0);
}

static void test_req_absolute_form_bad(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "GET ftp://example.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://user@example.com/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://exa mple/ HTTP/1.1\r\nHost: a\r\n\r\n",
        "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        "GET http://example.com/x#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /x#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET /x?a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
        "GET http://:80/x HTTP/1.1\r\nHost: a\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct http1_header hdrs[16];
        struct http1_msg m;
        int status = 0;
        int rc = http1_parse_request(bad[i], strlen(bad[i]), NULL, hdrs, 16, &m, &status);
        if (rc != HTTP1_ERROR || status != 400)
            fail_msg("accepted: %s (rc=%d status=%d)", bad[i], rc, status);
    }
}

/* Every byte value at every place of a 24-byte field value and reason phrase: refused
 * exactly when it is a CTL other than HTAB, or DEL (the parser checks 8 bytes at a time;
 * this puts each byte in each lane, before and after a word boundary). */
static int is_text_byte(int v)
{
    return v == ' ' || v == '\t' || (v >= 0x21 && v != 0x7f);
}

static void test_field_text_every_byte_everywhere(void **state)
{
    (void)state;
    for (int v = 0; v < 256; v++)
        for (int pos = 0; pos < 24; pos++) {
            char val[25];
            memset(val, 'a', 24);
            val[24] = 0;
            val[pos] = (char)v;
            char buf[128];
            int n = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\nX-A: a");
            memcpy(buf + n, val, 24);
            n += 24;
            n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\n\r\n");
            struct parsed p;
            int rc = req_parse(&p, buf, (size_t)n, NULL, NHDRS);
            if ((rc > 0) != is_text_byte(v))
                fail_msg("request: byte 0x%02x at %d: rc=%d status=%d", v, pos, rc, p.status);
            n = snprintf(buf, sizeof buf, "HTTP/1.1 200 O");
            memcpy(buf + n, val, 24);
            n += 24;
            n += snprintf(buf + n, sizeof buf - (size_t)n, "\r\nContent-Length: 0\r\n\r\n");
            rc = resp_parse(&p, buf, (size_t)n, NULL, HTTP1_M_GET);
            if ((rc > 0) != is_text_byte(v))
                fail_msg("response: byte 0x%02x at %d: rc=%d status=%d", v, pos, rc, p.status);
        }
}

static void test_req_header_ids(void **state)
{
    static const struct {
        const char *name, *value;
        enum http1_hdr id;
    } cases[] = {
        { "host", "a", HTTP1_H_HOST },
        { "CONTENT-LENGTH", "0", HTTP1_H_CONTENT_LENGTH },
        { "Connection", "keep-alive", HTTP1_H_CONNECTION },
        { "Keep-Alive", "timeout=5", HTTP1_H_KEEP_ALIVE },
        { "Proxy-Connection", "keep-alive", HTTP1_H_PROXY_CONNECTION },
        { "TE", "trailers", HTTP1_H_TE },
        { "Trailer", "X-T", HTTP1_H_TRAILER },
        { "Upgrade", "h2c", HTTP1_H_UPGRADE },
        { "Expect", "100-continue", HTTP1_H_EXPECT },
        { "Proxy-Authorization", "Basic eA==", HTTP1_H_PROXY_AUTHORIZATION },
        { "Proxy-Authenticate", "Basic", HTTP1_H_PROXY_AUTHENTICATE },
        { "x-forwarded-for", "10.0.0.1", HTTP1_H_X_FORWARDED_FOR },
        { "X-Forwarded-Proto", "https", HTTP1_H_X_FORWARDED_PROTO },
        { "X-Forwarded-Host", "a", HTTP1_H_X_FORWARDED_HOST },
        { "X-Request-Id", "r1", HTTP1_H_X_REQUEST_ID },
        { "Forwarded", "for=10.0.0.1", HTTP1_H_FORWARDED },
        { "Hostx", "v", HTTP1_H_OTHER },
        { "Hos", "v", HTTP1_H_OTHER },
        { "X-Forwarded", "v", HTTP1_H_OTHER },
        /* a known name's length, a first byte that is no letter or another letter */
        { "_e", "v", HTTP1_H_OTHER },
        { "Tf", "v", HTTP1_H_OTHER },
        { "4ost", "v", HTTP1_H_OTHER },
        { "tonnection", "v", HTTP1_H_OTHER },
        { "Proxy-Authorizatioo", "v", HTTP1_H_OTHER },
    };
    struct sbuf b = { 0 };
    struct parsed p;
    size_t i;

    sb_add(&b, "GET / HTTP/1.1\r\n");
    for (i = 0; i < NELEM(cases); i++)
        sb_add(&b, "%s: %s\r\n", cases[i].name, cases[i].value);
    sb_add(&b, "\r\n");
    req_parse(&p, b.p, b.len, &deflim, NHDRS);
    if (p.rc != (int)b.len)
        fail_msg("want rc=%zu, got rc=%d status=%d", b.len, p.rc, p.status);
    assert_int_equal(p.msg.num_headers, NELEM(cases));
    for (i = 0; i < NELEM(cases); i++)
        if (p.hdrs[i].id != cases[i].id)
            fail_msg("%s: want id %d, got %d", cases[i].name, cases[i].id, p.hdrs[i].id);
    free(b.p);
}

/* Every tchar byte at every place of every known name: the name is known only when the byte
 * is its letter in either case (names are compared 8 bytes at a time, OR 0x20). */
static void test_known_names_every_tchar_everywhere(void **state)
{
    static const struct {
        const char *name, *value;
        enum http1_hdr id;
    } known[] = {
        { "te", "trailers", HTTP1_H_TE },
        { "host", "a", HTTP1_H_HOST },
        { "expect", "100-continue", HTTP1_H_EXPECT },
        { "trailer", "x", HTTP1_H_TRAILER },
        { "upgrade", "h2c", HTTP1_H_UPGRADE },
        { "forwarded", "for=a", HTTP1_H_FORWARDED },
        { "connection", "keep-alive", HTTP1_H_CONNECTION },
        { "keep-alive", "timeout=5", HTTP1_H_KEEP_ALIVE },
        { "x-request-id", "r", HTTP1_H_X_REQUEST_ID },
        { "content-length", "0", HTTP1_H_CONTENT_LENGTH },
        { "x-forwarded-for", "a", HTTP1_H_X_FORWARDED_FOR },
        { "proxy-connection", "close", HTTP1_H_PROXY_CONNECTION },
        { "x-forwarded-host", "a", HTTP1_H_X_FORWARDED_HOST },
        { "transfer-encoding", "chunked", HTTP1_H_TRANSFER_ENCODING },
        { "x-forwarded-proto", "http", HTTP1_H_X_FORWARDED_PROTO },
        { "proxy-authenticate", "Basic", HTTP1_H_PROXY_AUTHENTICATE },
        { "proxy-authorization", "Basic eA==", HTTP1_H_PROXY_AUTHORIZATION },
    };
    static const char tchars[] = "!#$%&'*+-.^_`|~0123456789"
                                 "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (void)state;
    for (size_t k = 0; k < NELEM(known); k++) {
        size_t n = strlen(known[k].name);
        for (size_t at = 0; at < n; at++)
            for (const char *t = tchars; *t; t++) {
                char name[32], buf[256];
                memcpy(name, known[k].name, n + 1);
                name[at] = *t;
                int same = tolower((unsigned char)*t) == known[k].name[at];
                int len = snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\n%s%s: %s\r\n\r\n",
                                   known[k].id == HTTP1_H_HOST ? "" : "Host: a\r\n", name,
                                   known[k].value);
                struct parsed p;
                req_parse(&p, buf, (size_t)len, &deflim, NHDRS);
                if (!same && known[k].id == HTTP1_H_HOST) {
                    assert_int_equal(p.rc, HTTP1_ERROR); /* no Host left */
                    continue;
                }
                if (p.rc != len)
                    fail_msg("%s: rc=%d status=%d", name, p.rc, p.status);
                size_t i = known[k].id == HTTP1_H_HOST ? 0 : 1;
                enum http1_hdr want = same ? known[k].id : HTTP1_H_OTHER;
                if (p.hdrs[i].id != want)
                    fail_msg("%s: want id %d, got %d", name, want, p.hdrs[i].id);
            }
    }
}

/* With a pipelined second request in the buffer only the first head is counted. */
static void test_req_pipelined(void **state)
{
    static const char two[] = GET11 CRLF "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
    struct parsed p;
    req_parse(&p, RAW(two), &deflim, NHDRS);
    assert_int_equal(p.rc, sizeof GET11 CRLF - 1);
    span_eq("target", p.msg.target, p.msg.target_len, "/");
}

static void test_name_is_and_find(void **state)
{
    struct parsed p;
    req_ok(&p, RAW(GET11 "X-Request-Id: r1\r\nX-Request-ID: r2\r\nContent-Type: a/b\r\n" CRLF));
    assert_true(http1_name_is(&p.hdrs[1], "x-request-id"));
    assert_true(http1_name_is(&p.hdrs[1], "X-REQUEST-ID"));
    assert_false(http1_name_is(&p.hdrs[1], "X-Request"));
    assert_false(http1_name_is(&p.hdrs[1], "X-Request-Idx"));
    assert_false(http1_name_is(&p.hdrs[3], "Content-Typ"));
    assert_ptr_equal(http1_find(&p.msg, HTTP1_H_X_REQUEST_ID), &p.hdrs[1]); /* the first */
    assert_null(http1_find(&p.msg, HTTP1_H_FORWARDED));
}

static void test_idempotent(void **state)
{
    assert_true(http1_idempotent(HTTP1_M_GET));
    assert_true(http1_idempotent(HTTP1_M_HEAD));
    assert_true(http1_idempotent(HTTP1_M_PUT));
    assert_true(http1_idempotent(HTTP1_M_DELETE));
    assert_true(http1_idempotent(HTTP1_M_OPTIONS));
    assert_true(http1_idempotent(HTTP1_M_TRACE));
    assert_false(http1_idempotent(HTTP1_M_POST));
    assert_false(http1_idempotent(HTTP1_M_PATCH));
    assert_false(http1_idempotent(HTTP1_M_CONNECT));
    assert_false(http1_idempotent(HTTP1_M_OTHER));
}

/* ------------------------------------------------------ malformed requests */

struct bad_case {
    const char *name;
    const char *raw;
    size_t len;
    int status;
};

/* Note: "\x0b" "c" is split so the hex escape does not swallow the next letter. */
static const struct bad_case bad_requests[] = {
    /* Content-Length and Transfer-Encoding together (RFC 9112 6.1) */
    { "bad req: CL then TE", RAW(POST11 "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n" CRLF), 400 },
    { "bad req: TE then CL", RAW(POST11 "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n" CRLF), 400 },
    /* Content-Length: any duplicate, any malformed value */
    { "bad req: CL two differing headers", RAW(POST11 "Content-Length: 5\r\nContent-Length: 6\r\n" CRLF), 400 },
    { "bad req: CL two identical headers", RAW(POST11 "Content-Length: 5\r\nContent-Length: 5\r\n" CRLF), 400 },
    { "bad req: CL two headers differing case", RAW(POST11 "Content-Length: 5\r\ncontent-length: 5\r\n" CRLF), 400 },
    { "bad req: CL list identical 5, 5", RAW(POST11 "Content-Length: 5, 5\r\n" CRLF), 400 },
    { "bad req: CL list differing 5, 6", RAW(POST11 "Content-Length: 5, 6\r\n" CRLF), 400 },
    { "bad req: CL plus sign", RAW(POST11 "Content-Length: +5\r\n" CRLF), 400 },
    { "bad req: CL negative", RAW(POST11 "Content-Length: -1\r\n" CRLF), 400 },
    { "bad req: CL trailing garbage", RAW(POST11 "Content-Length:  5x\r\n" CRLF), 400 },
    { "bad req: CL inner space", RAW(POST11 "Content-Length: 1 2\r\n" CRLF), 400 },
    { "bad req: CL trailing comma", RAW(POST11 "Content-Length: 5,\r\n" CRLF), 400 },
    { "bad req: CL decimal point", RAW(POST11 "Content-Length: 5.0\r\n" CRLF), 400 },
    { "bad req: CL empty", RAW(POST11 "Content-Length:\r\n" CRLF), 400 },
    { "bad req: CL whitespace only", RAW(POST11 "Content-Length:   \r\n" CRLF), 400 },
    { "bad req: CL hex 0x5", RAW(POST11 "Content-Length: 0x5\r\n" CRLF), 400 },
    { "bad req: CL hex digit a", RAW(POST11 "Content-Length: a\r\n" CRLF), 400 },
    { "bad req: CL overflow 23 digits", RAW(POST11 "Content-Length: 99999999999999999999999\r\n" CRLF), 400 },
    { "bad req: CL overflow 2^64", RAW(POST11 "Content-Length: 18446744073709551616\r\n" CRLF), 400 },
    { "bad req: CL with VT", RAW(POST11 "Content-Length: 5\x0b\r\n" CRLF), 400 },
    /* Transfer-Encoding */
    { "bad req: TE chunked, gzip (chunked not last)", RAW(POST11 "Transfer-Encoding: chunked, gzip\r\n" CRLF), 400 },
    { "bad req: TE gzip alone", RAW(POST11 "Transfer-Encoding: gzip\r\n" CRLF), 400 },
    { "bad req: TE gzip, chunked (unsupported coding)", RAW(POST11 "Transfer-Encoding: gzip, chunked\r\n" CRLF), 501 },
    { "bad req: TE xchunked", RAW(POST11 "Transfer-Encoding: xchunked\r\n" CRLF), 400 },
    { "bad req: TE chunkedx", RAW(POST11 "Transfer-Encoding: chunkedx\r\n" CRLF), 400 },
    { "bad req: TE chunk", RAW(POST11 "Transfer-Encoding: chunk\r\n" CRLF), 400 },
    { "bad req: TE chunked VT", RAW(POST11 "Transfer-Encoding: chunked\x0b\r\n" CRLF), 400 },
    { "bad req: TE VT chunked", RAW(POST11 "Transfer-Encoding: \x0b" "chunked\r\n" CRLF), 400 },
    { "bad req: TE chunked FF", RAW(POST11 "Transfer-Encoding: chunked\x0c\r\n" CRLF), 400 },
    { "bad req: TE chun ked", RAW(POST11 "Transfer-Encoding: chun ked\r\n" CRLF), 400 },
    { "bad req: TE quoted chunked", RAW(POST11 "Transfer-Encoding: \"chunked\"\r\n" CRLF), 400 },
    { "bad req: TE empty", RAW(POST11 "Transfer-Encoding:\r\n" CRLF), 400 },
    { "bad req: TE chunked, chunked", RAW(POST11 "Transfer-Encoding: chunked, chunked\r\n" CRLF), 400 },
    { "bad req: TE chunked in two headers", RAW(POST11 "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n" CRLF), 400 },
    { "bad req: TE on HTTP/1.0", RAW("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), 400 },
    { "bad req: TE on HTTP/1.0 with Host", RAW("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"), 400 },
    /* obs-fold and stray whitespace */
    { "bad req: obs-fold SP", RAW(GET11 "X-A: b\r\n c\r\n" CRLF), 400 },
    { "bad req: obs-fold HTAB", RAW(GET11 "X-A: b\r\n\tc\r\n" CRLF), 400 },
    { "bad req: obs-fold of Transfer-Encoding", RAW(POST11 "Transfer-Encoding: gzip,\r\n chunked\r\n" CRLF), 400 },
    { "bad req: SP before first header", RAW("GET / HTTP/1.1\r\n Host: a\r\n\r\n"), 400 },
    { "bad req: space before colon (Host)", RAW("GET / HTTP/1.1\r\nHost : a\r\n\r\n"), 400 },
    { "bad req: space before colon", RAW(GET11 "X-A : b\r\n" CRLF), 400 },
    { "bad req: tab before colon", RAW(GET11 "X-A\t: b\r\n" CRLF), 400 },
    { "bad req: space before colon (TE)", RAW(POST11 "Transfer-Encoding : chunked\r\n" CRLF), 400 },
    /* header names */
    { "bad req: name Ho(st", RAW("GET / HTTP/1.1\r\nHost: a\r\nHo(st: a\r\n\r\n"), 400 },
    { "bad req: name with \\x01", RAW(GET11 "X\x01Y: a\r\n" CRLF), 400 },
    { "bad req: empty name", RAW(GET11 ":x\r\n" CRLF), 400 },
    { "bad req: empty name with space", RAW(GET11 ": x\r\n" CRLF), 400 },
    { "bad req: name with space", RAW(GET11 "X Y: a\r\n" CRLF), 400 },
    { "bad req: name with DEL", RAW(GET11 "X\x7f" "Y: a\r\n" CRLF), 400 },
    { "bad req: name with NUL", RAW(GET11 "X\0Y: a\r\n" CRLF), 400 },
    { "bad req: name with 8-bit byte", RAW(GET11 "X\xc3\xa9: a\r\n" CRLF), 400 },
    { "bad req: name with @", RAW(GET11 "X@Y: a\r\n" CRLF), 400 },
    { "bad req: name with /", RAW(GET11 "X/Y: a\r\n" CRLF), 400 },
    { "bad req: name with quote", RAW(GET11 "X\"Y: a\r\n" CRLF), 400 },
    { "bad req: no colon", RAW(GET11 "X-A b\r\n" CRLF), 400 },
    /* header values */
    { "bad req: NUL in value", RAW(GET11 "X-A: a\0b\r\n" CRLF), 400 },
    { "bad req: bare CR in value", RAW(GET11 "X-A: a\rb\r\n" CRLF), 400 },
    { "bad req: CR CR LF", RAW(GET11 "X-A: a\r\r\n" CRLF), 400 },
    { "bad req: bare LF in value", RAW(GET11 "X-A: a\nb\r\n" CRLF), 400 },
    { "bad req: \\x01 in value", RAW(GET11 "X-A: a\x01" "b\r\n" CRLF), 400 },
    { "bad req: \\x1f in value", RAW(GET11 "X-A: a\x1f" "b\r\n" CRLF), 400 },
    { "bad req: DEL in value", RAW(GET11 "X-A: a\x7f" "b\r\n" CRLF), 400 },
    { "bad req: NUL in Host", RAW("GET / HTTP/1.1\r\nHost: a\0.b\r\n\r\n"), 400 },
    /* line terminators */
    { "bad req: all bare LF", RAW("GET / HTTP/1.1\nHost: a\n\n"), 400 },
    { "bad req: bare LF after request line", RAW("GET / HTTP/1.1\nHost: a\r\n\r\n"), 400 },
    { "bad req: bare LF after header", RAW("GET / HTTP/1.1\r\nHost: a\n\r\n"), 400 },
    { "bad req: bare LF as blank line", RAW("GET / HTTP/1.1\r\nHost: a\r\n\n"), 400 },
    { "bad req: bare CR after request line", RAW("GET / HTTP/1.1\rHost: a\r\n\r\n"), 400 },
    { "bad req: bare CR as blank line", RAW("GET / HTTP/1.1\r\nHost: a\r\n\rX"), 400 },
    /* Host */
    { "bad req: HTTP/1.1 without Host", RAW("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n"), 400 },
    { "bad req: HTTP/1.1 without any header", RAW("GET / HTTP/1.1\r\n\r\n"), 400 },
    { "bad req: two Host differing", RAW("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"), 400 },
    { "bad req: two Host identical", RAW("GET / HTTP/1.1\r\nHost: a\r\nhost: a\r\n\r\n"), 400 },
    /* RFC 9112 3.2: 400 for "a Host header field with an invalid field value";
     * Host = uri-host [ ":" port ] (RFC 9110 7.2) */
    { "bad req: Host with space", RAW("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), 400 },
    { "bad req: Host with slash", RAW("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400 },
    { "bad req: Host with userinfo", RAW("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n"), 400 },
    { "bad req: Host with bad port", RAW("GET / HTTP/1.1\r\nHost: a:8x0\r\n\r\n"), 400 },
    { "bad req: Host with comma", RAW("GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"), 400 },
    { "bad req: two Host on HTTP/1.0", RAW("GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"), 400 },
    /* version */
    { "bad req: HTTP/1.2", RAW("GET / HTTP/1.2\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: HTTP/2.0", RAW("GET / HTTP/2.0\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: HTTP/2", RAW("GET / HTTP/2\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: HTTP/0.9", RAW("GET / HTTP/0.9\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: lowercase http/1.1", RAW("GET / http/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: HTTP/1.10", RAW("GET / HTTP/1.10\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: HTTP/11", RAW("GET / HTTP/11\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: HTTP/1.", RAW("GET / HTTP/1.\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: HTTP/1.1x", RAW("GET / HTTP/1.1x\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: HTTPS/1.1", RAW("GET / HTTPS/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: HTTP/ 1.1", RAW("GET / HTTP/ 1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: trailing SP after version", RAW("GET / HTTP/1.1 \r\nHost: a\r\n\r\n"), 400 },
    { "bad req: no version (HTTP/0.9 form)", RAW("GET /\r\nHost: a\r\n\r\n"), 400 },
    /* request-line shape */
    { "bad req: leading SP", RAW(" GET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: two SP after method", RAW("GET  / HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: two SP before version", RAW("GET /  HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: HTAB separators", RAW("GET\t/\tHTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: empty method", RAW(" / HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: missing target", RAW("GET HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: empty request line", RAW("\r\nHost: a\r\n\r\n"), 400 },
    /* method bytes */
    { "bad req: method G(ET", RAW("G(ET / HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: method with \\x01", RAW("GE\x01" "T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: method with @", RAW("GET@ / HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: method with comma", RAW("GET, / HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: method with 8-bit byte", RAW("G\xc3\x89T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: method with NUL", RAW("GE\0T / HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    /* target bytes */
    { "bad req: target with space", RAW("GET /a b HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: target with \\x01", RAW("GET /a\x01" "b HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: target with DEL", RAW("GET /a\x7f" "b HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: target with NUL", RAW("GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: target with HTAB", RAW("GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: target with bare CR", RAW("GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
    { "bad req: target with bare LF", RAW("GET /a\nb HTTP/1.1\r\nHost: a\r\n\r\n"), 400 },
};

static void run_bad_request(void **state)
{
    const struct bad_case *c = *state;
    struct parsed p;
    req_parse(&p, c->raw, c->len, &deflim, NHDRS);
    if (p.rc != HTTP1_ERROR || p.status != c->status)
        fail_msg("%s: \"%s\": want HTTP1_ERROR status %d, got rc=%d status=%d", c->name,
                 esc(c->raw, c->len), c->status, p.rc, p.status);
}

/* --------------------------------------------------------------- limits */

static void build_long_target(struct sbuf *b, size_t target_len, int complete)
{
    sb_add(b, "GET /");
    sb_rep(b, 'a', target_len - 1);
    if (complete)
        sb_add(b, " HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_req_line_too_long_414(void **state)
{
    struct http1_limits lim = { .max_line = 64 };
    struct sbuf b = { 0 };
    struct parsed p;
    build_long_target(&b, 200, 1);
    req_parse(&p, b.p, b.len, &lim, NHDRS);
    expect_error(&p, 414, b.p, b.len);
    free(b.p);
}

/* An over-long request line is refused before its CRLF arrives. */
static void test_req_line_too_long_incomplete_414(void **state)
{
    struct http1_limits lim = { .max_line = 64 };
    struct sbuf b = { 0 };
    struct parsed p;
    build_long_target(&b, 200, 0);
    req_parse(&p, b.p, b.len, &lim, NHDRS);
    expect_error(&p, 414, b.p, b.len);
    free(b.p);
}

static void test_req_line_default_limit(void **state)
{
    struct sbuf ok = { 0 }, big = { 0 };
    struct parsed p;
    build_long_target(&ok, 8000, 1);
    req_parse(&p, ok.p, ok.len, &deflim, NHDRS);
    assert_int_equal(p.rc, (int)ok.len);
    build_long_target(&big, 9000, 1);
    req_parse(&p, big.p, big.len, &deflim, NHDRS);
    expect_error(&p, 414, big.p, big.len);
    free(ok.p);
    free(big.p);
}

/* n headers "X-Hnnn: <vlen x's>" after the request line; optionally the blank line. */
static void build_headers(struct sbuf *b, size_t n, size_t vlen, int complete)
{
    size_t i;
    sb_add(b, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (i = 0; i < n; i++) {
        sb_add(b, "X-H%03zu: ", i);
        sb_rep(b, 'x', vlen);
        sb_add(b, "\r\n");
    }
    if (complete)
        sb_add(b, "\r\n");
}

static void test_req_head_too_big_431(void **state)
{
    struct http1_limits lim = { .max_head = 256 };
    struct sbuf b = { 0 };
    struct parsed p;
    build_headers(&b, 10, 40, 1);
    req_parse(&p, b.p, b.len, &lim, NHDRS);
    expect_error(&p, 431, b.p, b.len);
    free(b.p);
}

/* Once more than max_head bytes are buffered without a blank line, give up now. */
static void test_req_head_too_big_incomplete_431(void **state)
{
    struct http1_limits lim = { .max_head = 256 };
    struct sbuf b = { 0 };
    struct parsed p;
    build_headers(&b, 10, 40, 0);
    assert_true(b.len > 256);
    req_parse(&p, b.p, b.len, &lim, NHDRS);
    expect_error(&p, 431, b.p, b.len);
    free(b.p);
}

/* One unterminated header line larger than max_head. */
static void test_req_huge_header_line_incomplete_431(void **state)
{
    struct http1_limits lim = { .max_head = 256 };
    struct sbuf b = { 0 };
    struct parsed p;
    build_headers(&b, 1, 1000, 0);
    b.len -= 2; /* drop the CRLF: the line is still arriving */
    req_parse(&p, b.p, b.len, &lim, NHDRS);
    expect_error(&p, 431, b.p, b.len);
    free(b.p);
}

/* A request line with no CRLF, longer than max_head but within max_line: 431 or 414. */
static void test_req_line_over_max_head_incomplete(void **state)
{
    struct http1_limits lim = { .max_head = 128, .max_line = 1024 };
    struct sbuf b = { 0 };
    struct parsed p;
    build_long_target(&b, 300, 0);
    req_parse(&p, b.p, b.len, &lim, NHDRS);
    free(b.p);
    if (p.rc != HTTP1_ERROR || (p.status != 431 && p.status != 414))
        fail_msg("300-byte request line without CRLF, max_head 128, max_line 1024: want "
                 "HTTP1_ERROR 431 or 414, got rc=%d status=%d", p.rc, p.status);
}

static void test_req_head_default_limit(void **state)
{
    struct sbuf ok = { 0 }, big = { 0 }, partial = { 0 };
    struct parsed p;
    build_headers(&ok, 4, 3500, 1); /* ~14 KB */
    req_parse(&p, ok.p, ok.len, &deflim, NHDRS);
    assert_int_equal(p.rc, (int)ok.len);
    build_headers(&big, 5, 3500, 1); /* ~17.6 KB */
    req_parse(&p, big.p, big.len, &deflim, NHDRS);
    expect_error(&p, 431, big.p, big.len);
    build_headers(&partial, 5, 3500, 0);
    req_parse(&p, partial.p, partial.len, &deflim, NHDRS);
    expect_error(&p, 431, partial.p, partial.len);
    free(ok.p);
    free(big.p);
    free(partial.p);
}

static void test_req_too_many_headers_431(void **state)
{
    struct http1_limits lim = { .max_headers = 4 };
    struct sbuf ok = { 0 }, big = { 0 };
    struct parsed p;
    build_headers(&ok, 3, 1, 1); /* Host + 3 = 4 */
    req_parse(&p, ok.p, ok.len, &lim, NHDRS);
    assert_int_equal(p.rc, (int)ok.len);
    assert_int_equal(p.msg.num_headers, 4);
    build_headers(&big, 4, 1, 1); /* 5 */
    req_parse(&p, big.p, big.len, &lim, NHDRS);
    expect_error(&p, 431, big.p, big.len);
    free(ok.p);
    free(big.p);
}

static void test_req_default_max_headers(void **state)
{
    struct sbuf ok = { 0 }, big = { 0 };
    struct parsed p;
    build_headers(&ok, 99, 1, 1); /* 100 */
    req_parse(&p, ok.p, ok.len, &deflim, NHDRS);
    assert_int_equal(p.rc, (int)ok.len);
    assert_int_equal(p.msg.num_headers, 100);
    build_headers(&big, 100, 1, 1); /* 101 */
    req_parse(&p, big.p, big.len, &deflim, NHDRS);
    expect_error(&p, 431, big.p, big.len);
    free(ok.p);
    free(big.p);
}

/* The caller's array bounds the count as well. */
static void test_req_headers_bounded_by_array(void **state)
{
    struct sbuf ok = { 0 }, big = { 0 };
    struct parsed p;
    build_headers(&ok, 2, 1, 1); /* 3 */
    req_parse(&p, ok.p, ok.len, &deflim, 3);
    assert_int_equal(p.rc, (int)ok.len);
    build_headers(&big, 3, 1, 1); /* 4 */
    req_parse(&p, big.p, big.len, &deflim, 3);
    expect_error(&p, 431, big.p, big.len);
    free(ok.p);
    free(big.p);
}

/* ------------------------------------------------------------- responses */

static void test_resp_200_ok(void **state)
{
    static const char r[] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello";
    struct parsed p;
    resp_ok(&p, RAW(r), HTTP1_M_GET);
    assert_int_equal(p.rc, sizeof r - 1 - 5);
    assert_int_equal(p.msg.status, 200);
    span_eq("reason", p.msg.reason, p.msg.reason_len, "OK");
    assert_int_equal(p.msg.minor, 1);
    assert_int_equal(p.msg.num_headers, 2);
    assert_int_equal(p.msg.body, HTTP1_BODY_LENGTH);
    assert_int_equal(p.msg.content_length, 5);
    assert_int_equal(p.msg.keep_alive, 1);
}

static void test_resp_reason_forms(void **state)
{
    struct parsed p;
    resp_ok(&p, RAW("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"), HTTP1_M_GET);
    assert_int_equal(p.msg.status, 404);
    span_eq("reason", p.msg.reason, p.msg.reason_len, "Not Found");
    resp_ok(&p, RAW("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"), HTTP1_M_GET);
    assert_int_equal(p.msg.status, 200);
    assert_int_equal(p.msg.reason_len, 0);
    resp_ok(&p, RAW("HTTP/1.0 503 Service\tUnavailable caf\xc3\xa9\r\nContent-Length: 0\r\n\r\n"),
            HTTP1_M_GET);
    assert_int_equal(p.msg.status, 503);
    assert_int_equal(p.msg.minor, 0);
    span_eq("reason", p.msg.reason, p.msg.reason_len, "Service\tUnavailable caf\xc3\xa9");
}

struct resp_case {
    const char *name;
    const char *raw;
    size_t len;
    enum http1_method meth;
    enum http1_body body;
    uint64_t cl;     /* checked when body is LENGTH */
    int keep_alive;  /* -1: not checked */
    int upgrade;     /* -1: not checked */
};

static const struct resp_case resp_cases[] = {
    { "resp: 200 Content-Length", RAW("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_LENGTH, 12, 1, 0 },
    { "resp: 200 chunked", RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_CHUNKED, 0, 1, 0 },
    { "resp: 200 Chunked mixed case", RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_CHUNKED, 0, 1, -1 },
    { "resp: 200 no framing -> close", RAW("HTTP/1.1 200 OK\r\nContent-Type: a/b\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_CLOSE, 0, 0, -1 },
    { "resp: HEAD 200 with CL -> none", RAW("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"), HTTP1_M_HEAD, HTTP1_BODY_NONE, 0, 1, -1 },
    { "resp: HEAD 200 chunked -> none", RAW("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), HTTP1_M_HEAD, HTTP1_BODY_NONE, 0, 1, -1 },
    { "resp: HEAD 200 no framing -> none", RAW("HTTP/1.1 200 OK\r\n\r\n"), HTTP1_M_HEAD, HTTP1_BODY_NONE, 0, 1, -1 },
    { "resp: 204 -> none", RAW("HTTP/1.1 204 No Content\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_NONE, 0, 1, -1 },
    { "resp: 304 with CL -> none", RAW("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_NONE, 0, 1, -1 },
    { "resp: 100 Continue -> none", RAW("HTTP/1.1 100 Continue\r\n\r\n"), HTTP1_M_POST, HTTP1_BODY_NONE, 0, -1, -1 },
    { "resp: 103 Early Hints -> none", RAW("HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_NONE, 0, -1, -1 },
    { "resp: 101 websocket -> none, upgrade", RAW("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_NONE, 0, -1, 1 },
    { "resp: CONNECT 200 -> none (tunnel)", RAW("HTTP/1.1 200 Connection Established\r\n\r\n"), HTTP1_M_CONNECT, HTTP1_BODY_NONE, 0, -1, -1 },
    { "resp: CONNECT 407 with CL -> length", RAW("HTTP/1.1 407 Proxy Auth\r\nContent-Length: 3\r\n\r\n"), HTTP1_M_CONNECT, HTTP1_BODY_LENGTH, 3, 1, -1 },
    { "resp: 1.0 200 CL -> close after", RAW("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_LENGTH, 1, 0, -1 },
    { "resp: 1.0 200 CL keep-alive", RAW("HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_LENGTH, 1, 1, -1 },
    { "resp: 1.1 200 CL close", RAW("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_LENGTH, 1, 0, -1 },
    { "resp: 1.1 no Host needed", RAW("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), HTTP1_M_GET, HTTP1_BODY_LENGTH, 0, 1, -1 },
};

static void run_resp_case(void **state)
{
    const struct resp_case *c = *state;
    struct parsed p;
    resp_ok(&p, c->raw, c->len, c->meth);
    if (p.msg.body != c->body)
        fail_msg("%s: want body %d, got %d", c->name, c->body, p.msg.body);
    if (c->body == HTTP1_BODY_LENGTH && p.msg.content_length != c->cl)
        fail_msg("%s: want content_length %llu, got %llu", c->name, (unsigned long long)c->cl,
                 (unsigned long long)p.msg.content_length);
    if (c->keep_alive >= 0 && p.msg.keep_alive != c->keep_alive)
        fail_msg("%s: want keep_alive %d, got %d", c->name, c->keep_alive, p.msg.keep_alive);
    if (c->upgrade >= 0 && p.msg.upgrade != c->upgrade)
        fail_msg("%s: want upgrade %d, got %d", c->name, c->upgrade, p.msg.upgrade);
}

/* A head that announces a body it must not carry (the connection cannot be reused). */
static void test_resp_unsent_body(void **state)
{
    static const struct {
        const char *raw;
        enum http1_method meth;
        int unsent;
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", HTTP1_M_HEAD, 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", HTTP1_M_HEAD, 0},
        {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_M_HEAD, 1},
        {"HTTP/1.1 200 OK\r\n\r\n", HTTP1_M_HEAD, 0},
        {"HTTP/1.1 304 Not Modified\r\nContent-Length: 7\r\n\r\n", HTTP1_M_GET, 1},
        {"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n", HTTP1_M_GET, 0},
        {"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n", HTTP1_M_GET, 1},
        {"HTTP/1.1 100 Continue\r\nContent-Length: 5\r\n\r\n", HTTP1_M_POST, 1},
        {"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", HTTP1_M_GET, 0},
    };
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct parsed p;
        resp_ok(&p, cases[i].raw, strlen(cases[i].raw), cases[i].meth);
        if (p.msg.unsent_body != cases[i].unsent)
            fail_msg("case %zu \"%s\": want unsent_body %d, got %d", i,
                     esc(cases[i].raw, strlen(cases[i].raw)), cases[i].unsent, p.msg.unsent_body);
    }
}

static const struct bad_case bad_responses[] = {
    { "bad resp: 2-digit status", RAW("HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: 4-digit status", RAW("HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: letters in status", RAW("HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: signed status", RAW("HTTP/1.1 -20 OK\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: HTTP/2.0", RAW("HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: HTTP/1.2", RAW("HTTP/1.2 200 OK\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: lowercase http/1.1", RAW("http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: ICY", RAW("ICY 200 OK\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: two SP before status", RAW("HTTP/1.1  200 OK\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: CTL in reason", RAW("HTTP/1.1 200 O\x01K\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: bare LF", RAW("HTTP/1.1 200 OK\nContent-Length: 0\n\n"), 502 },
    { "bad resp: bare LF after header", RAW("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n"), 502 },
    { "bad resp: obs-fold", RAW("HTTP/1.1 200 OK\r\nX-A: b\r\n c\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: space before colon", RAW("HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n"), 502 },
    { "bad resp: bad name byte", RAW("HTTP/1.1 200 OK\r\nX(A: b\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: NUL in value", RAW("HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n"), 502 },
    { "bad resp: CL letters", RAW("HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n"), 502 },
    { "bad resp: CL negative", RAW("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), 502 },
    { "bad resp: CL plus", RAW("HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n"), 502 },
    { "bad resp: CL empty", RAW("HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n"), 502 },
    { "bad resp: CL overflow", RAW("HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n"), 502 },
    { "bad resp: CL list differing", RAW("HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\n"), 502 },
    { "bad resp: CL two differing headers", RAW("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), 502 },
    { "bad resp: CL and TE", RAW("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), 502 },
};

static void run_bad_response(void **state)
{
    const struct bad_case *c = *state;
    struct parsed p;
    resp_parse(&p, c->raw, c->len, &deflim, HTTP1_M_GET);
    if (p.rc != HTTP1_ERROR || p.status != c->status)
        fail_msg("%s: \"%s\": want HTTP1_ERROR status %d, got rc=%d status=%d", c->name,
                 esc(c->raw, c->len), c->status, p.rc, p.status);
}

/* A response head over max_head: 502, complete or not. */
static void test_resp_head_too_big_502(void **state)
{
    struct http1_limits lim = { .max_head = 256 };
    struct sbuf b = { 0 };
    struct parsed p;
    size_t i;
    sb_add(&b, "HTTP/1.1 200 OK\r\n");
    for (i = 0; i < 10; i++)
        sb_add(&b, "X-H%zu: %040d\r\n", i, 0);
    resp_parse(&p, b.p, b.len, &lim, HTTP1_M_GET); /* no blank line yet */
    expect_error(&p, 502, b.p, b.len);
    sb_add(&b, "Content-Length: 0\r\n\r\n");
    resp_parse(&p, b.p, b.len, &lim, HTTP1_M_GET);
    expect_error(&p, 502, b.p, b.len);
    free(b.p);
}

/* ---------------------------------------------------------- chunked decoding */

struct dechunk {
    enum http1_chunk_state state;
    size_t consumed; /* bytes of the wire taken (framing and data) */
    char body[8192];
    size_t body_len;
};

/* Decode `wire`, making at most `step` more bytes visible each time the decoder needs
 * more, the way a socket would deliver them. Unconsumed bytes stay in front. */
static void dechunk(struct dechunk *d, const char *wire, size_t len, size_t step,
                    size_t max_trailer)
{
    struct http1_chunked c;
    size_t pos = 0, avail = step < len ? step : len;
    int guard;

    memset(d, 0, sizeof *d);
    http1_chunked_init(&c, max_trailer);
    assert_int_equal(c.state, HTTP1_CH_SIZE);
    for (guard = 0; guard < 1000000; guard++) {
        size_t got = 0;
        enum http1_chunk_state before = c.state;
        if (c.state == HTTP1_CH_DONE || c.state == HTTP1_CH_ERROR)
            break;
        if (c.state == HTTP1_CH_DATA) {
            uint64_t n = avail - pos;
            if (c.remaining == 0)
                fail_msg("state DATA with remaining 0");
            if (n > c.remaining)
                n = c.remaining;
            if (d->body_len + n > sizeof d->body)
                fail_msg("test body buffer too small");
            memcpy(d->body + d->body_len, wire + pos, (size_t)n);
            d->body_len += (size_t)n;
            http1_chunked_data(&c, n);
            got = (size_t)n;
        } else {
            got = http1_chunked_parse(&c, wire + pos, avail - pos);
            if (got > avail - pos)
                fail_msg("parse consumed %zu of %zu bytes", got, avail - pos);
        }
        pos += got;
        if (got > 0 || c.state != before)
            continue; /* progress: go on with what is buffered */
        if (avail == len)
            break; /* needs more and there is no more */
        avail = avail + step < len ? avail + step : len;
    }
    d->state = c.state;
    d->consumed = pos;
}

struct chunk_case {
    const char *name;
    const char *wire;
    size_t len;
    const char *body; /* NULL: must end in HTTP1_CH_ERROR */
};

static const struct chunk_case chunk_cases[] = {
    { "chunked: one chunk", RAW("5\r\nhello\r\n0\r\n\r\n"), "hello" },
    { "chunked: empty body", RAW("0\r\n\r\n"), "" },
    { "chunked: several chunks", RAW("3\r\nabc\r\n4\r\ndefg\r\n1\r\nh\r\n0\r\n\r\n"), "abcdefgh" },
    { "chunked: hex upper", RAW("A\r\n0123456789\r\n1F\r\n0123456789012345678901234567890\r\n0\r\n\r\n"), "01234567890123456789012345678901234567890" },
    { "chunked: hex lower", RAW("a\r\n0123456789\r\n1f\r\n0123456789012345678901234567890\r\n0\r\n\r\n"), "01234567890123456789012345678901234567890" },
    { "chunked: leading zeros", RAW("0005\r\nhello\r\n000\r\n\r\n"), "hello" },
    { "chunked: data holding CRLFs", RAW("4\r\n\r\n\r\n\r\n0\r\n\r\n"), "\r\n\r\n" },
    { "chunked: extension a=b", RAW("5;a=b\r\nhello\r\n0\r\n\r\n"), "hello" },
    { "chunked: extension name only", RAW("5;a\r\nhello\r\n0;last\r\n\r\n"), "hello" },
    { "chunked: several extensions", RAW("5;a=b;c=d\r\nhello\r\n0\r\n\r\n"), "hello" },
    { "chunked: quoted extension", RAW("5;a=\"x y;z\"\r\nhello\r\n0\r\n\r\n"), "hello" },
    { "chunked: trailers", RAW("5\r\nhello\r\n0\r\nX-T: 1\r\nX-Checksum: abc\r\n\r\n"), "hello" },
    { "chunked: extension and trailer", RAW("5;x=1\r\nhello\r\n0;y\r\nX-T: 1\r\n\r\n"), "hello" },
    /* errors */
    { "chunked err: bare LF after size", RAW("5\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: bare LF after data", RAW("5\r\nhello\n0\r\n\r\n"), NULL },
    { "chunked err: bare LF after last size", RAW("5\r\nhello\r\n0\n\r\n"), NULL },
    { "chunked err: bare LF as final line", RAW("5\r\nhello\r\n0\r\n\n"), NULL },
    { "chunked err: bare LF after trailer", RAW("0\r\nX-T: 1\n\r\n"), NULL },
    { "chunked err: bare CR after size", RAW("5\rhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: 0x prefix", RAW("0x5\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: leading space", RAW(" 5\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: garbage after size", RAW("5 x\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: letter after size", RAW("5x\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: non-hex g", RAW("g\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: empty size line", RAW("\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: sign", RAW("+5\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: negative", RAW("-5\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: NUL in size line", RAW("5\0\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: 17 hex digits (2^64)", RAW("10000000000000000\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: 17 F", RAW("FFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: 20 F", RAW("FFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n"), NULL },
    { "chunked err: no CRLF after data", RAW("5\r\nhelloX\r\n0\r\n\r\n"), NULL },
    { "chunked err: data longer than size", RAW("5\r\nhello!\r\n0\r\n\r\n"), NULL },
    { "chunked err: next size right after data", RAW("5\r\nhello0\r\n\r\n"), NULL },
};

static void run_chunk_case(void **state)
{
    static const size_t steps[] = { 0 /* all at once */, 1, 2, 3, 7 };
    const struct chunk_case *c = *state;
    size_t i;
    for (i = 0; i < NELEM(steps); i++) {
        struct dechunk *d = malloc(sizeof *d);
        size_t step = steps[i] ? steps[i] : c->len;
        assert_non_null(d);
        dechunk(d, c->wire, c->len, step, 0);
        if (c->body == NULL) {
            if (d->state != HTTP1_CH_ERROR)
                fail_msg("%s: \"%s\" fed %zu at a time: want HTTP1_CH_ERROR, got state %d",
                         c->name, esc(c->wire, c->len), step, d->state);
        } else {
            if (d->state != HTTP1_CH_DONE || d->consumed != c->len)
                fail_msg("%s: \"%s\" fed %zu at a time: want DONE after %zu bytes, got state "
                         "%d after %zu", c->name, esc(c->wire, c->len), step, c->len, d->state,
                         d->consumed);
            if (d->body_len != strlen(c->body) || memcmp(d->body, c->body, d->body_len) != 0)
                fail_msg("%s: fed %zu at a time: body \"%s\"", c->name, step,
                         esc(d->body, d->body_len));
        }
        free(d);
    }
}

/* The documented step-by-step protocol on one message. */
static void test_chunked_api(void **state)
{
    static const char w[] = "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    struct http1_chunked c;
    size_t n;

    http1_chunked_init(&c, 0);
    assert_int_equal(c.state, HTTP1_CH_SIZE);
    n = http1_chunked_parse(&c, w, sizeof w - 1);
    assert_int_equal(n, 3); /* "5\r\n", stops at data */
    assert_int_equal(c.state, HTTP1_CH_DATA);
    assert_int_equal(c.remaining, 5);
    assert_int_equal(http1_chunked_parse(&c, w + 3, sizeof w - 4), 0); /* DATA: nothing */
    http1_chunked_data(&c, 2);
    assert_int_equal(c.state, HTTP1_CH_DATA);
    assert_int_equal(c.remaining, 3);
    http1_chunked_data(&c, 3);
    assert_int_equal(c.state, HTTP1_CH_DATA_CRLF);
    n = http1_chunked_parse(&c, w + 8, sizeof w - 9);
    assert_int_equal(n, 7); /* "\r\n0\r\n\r\n", not the next request */
    assert_int_equal(c.state, HTTP1_CH_DONE);
    assert_int_equal(http1_chunked_parse(&c, w + 15, sizeof w - 16), 0);
    assert_int_equal(c.state, HTTP1_CH_DONE);
}

/* Every proper prefix of a valid body leaves the decoder waiting, never DONE or ERROR. */
static void test_chunked_prefixes_wait(void **state)
{
    static const char w[] = "5;e=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n";
    size_t i;
    for (i = 0; i < sizeof w - 1; i++) {
        struct dechunk *d = malloc(sizeof *d);
        assert_non_null(d);
        dechunk(d, w, i, 1, 0);
        if (d->state == HTTP1_CH_DONE || d->state == HTTP1_CH_ERROR)
            fail_msg("prefix \"%s\": state %d", esc(w, i), d->state);
        free(d);
    }
}

static void test_chunked_big_chunk(void **state)
{
    struct sbuf b = { 0 };
    struct dechunk *d = malloc(sizeof *d);
    assert_non_null(d);
    sb_add(&b, "1000\r\n");
    sb_rep(&b, 'x', 4096);
    sb_add(&b, "\r\nFFF\r\n");
    sb_rep(&b, 'y', 4095);
    sb_add(&b, "\r\n0\r\n\r\n");
    dechunk(d, b.p, b.len, b.len, 0);
    assert_int_equal(d->state, HTTP1_CH_DONE);
    assert_int_equal(d->body_len, 8191);
    dechunk(d, b.p, b.len, 100, 0);
    assert_int_equal(d->state, HTTP1_CH_DONE);
    assert_int_equal(d->body_len, 8191);
    free(d);
    free(b.p);
}

/* Sizes beyond 32 bits are kept whole. */
static void test_chunked_big_size_value(void **state)
{
    struct http1_chunked c;
    http1_chunked_init(&c, 0);
    assert_int_equal(http1_chunked_parse(&c, RAW("1fFfFfFfF\r\n")), 11);
    assert_int_equal(c.state, HTTP1_CH_DATA);
    assert_true(c.remaining == 0x1ffffffffULL);
}

static void test_chunked_line_too_long(void **state)
{
    struct sbuf b = { 0 };
    struct dechunk *d = malloc(sizeof *d);
    assert_non_null(d);
    sb_add(&b, "5;ext=");
    sb_rep(&b, 'a', HTTP1_CHUNK_MAX_LINE + 100);
    sb_add(&b, "\r\nhello\r\n0\r\n\r\n");
    dechunk(d, b.p, b.len, b.len, 0);
    assert_int_equal(d->state, HTTP1_CH_ERROR);
    dechunk(d, b.p, b.len, 64, 0);
    assert_int_equal(d->state, HTTP1_CH_ERROR);
    free(d);
    free(b.p);
}

static void test_chunked_trailer_limit(void **state)
{
    struct sbuf b = { 0 };
    struct dechunk *d = malloc(sizeof *d);
    assert_non_null(d);
    sb_add(&b, "0\r\nX-T: ");
    sb_rep(&b, 'a', 200);
    sb_add(&b, "\r\n\r\n");
    dechunk(d, b.p, b.len, b.len, 64); /* over a 64-byte trailer limit */
    assert_int_equal(d->state, HTTP1_CH_ERROR);
    dechunk(d, b.p, b.len, 1, 64);
    assert_int_equal(d->state, HTTP1_CH_ERROR);
    dechunk(d, b.p, b.len, b.len, 0); /* within the 8192 default */
    assert_int_equal(d->state, HTTP1_CH_DONE);
    assert_int_equal(d->consumed, b.len);
    free(d);
    free(b.p);
}

/* ------------------------------------------------------------------ main */

#define ADD_ROWS(table, fn)                                                              \
    do {                                                                                 \
        size_t i_;                                                                       \
        for (i_ = 0; i_ < NELEM(table); i_++)                                            \
            tests[n++] = (struct CMUnitTest){ .name = (table)[i_].name, .test_func = (fn), \
                                              .initial_state = (void *)&(table)[i_] };   \
    } while (0)

int main(void)
{
    static const struct CMUnitTest fixed[] = {
        cmocka_unit_test(test_req_get_with_headers),
        cmocka_unit_test(test_field_text_every_byte_everywhere),
        cmocka_unit_test(test_req_post_content_length),
        cmocka_unit_test(test_req_chunked_post),
        cmocka_unit_test(test_req_chunked_case_insensitive),
        cmocka_unit_test(test_req_chunked_trailing_ows),
        cmocka_unit_test(test_req_content_length_values),
        cmocka_unit_test(test_req_http10_no_host),
        cmocka_unit_test(test_req_empty_host_value),
        cmocka_unit_test(test_req_valid_host_values),
        cmocka_unit_test(test_req_host_every_byte),
        cmocka_unit_test(test_req_expect_continue),
        cmocka_unit_test(test_req_upgrade_websocket),
        cmocka_unit_test(test_req_upgrade_needs_both),
        cmocka_unit_test(test_req_hop_by_hop),
        cmocka_unit_test(test_req_hop_by_hop_named_before_connection),
        cmocka_unit_test(test_req_value_trimming),
        cmocka_unit_test(test_req_tchar_names),
        cmocka_unit_test(test_req_methods),
        cmocka_unit_test(test_req_absolute_form),
        cmocka_unit_test(test_req_absolute_form_bad),
        cmocka_unit_test(test_req_absolute_form_empty_path),
        cmocka_unit_test(test_req_header_ids),
        cmocka_unit_test(test_known_names_every_tchar_everywhere),
        cmocka_unit_test(test_req_pipelined),
        cmocka_unit_test(test_name_is_and_find),
        cmocka_unit_test(test_idempotent),
        cmocka_unit_test(test_req_line_too_long_414),
        cmocka_unit_test(test_req_line_too_long_incomplete_414),
        cmocka_unit_test(test_req_line_default_limit),
        cmocka_unit_test(test_req_head_too_big_431),
        cmocka_unit_test(test_req_head_too_big_incomplete_431),
        cmocka_unit_test(test_req_huge_header_line_incomplete_431),
        cmocka_unit_test(test_req_line_over_max_head_incomplete),
        cmocka_unit_test(test_req_head_default_limit),
        cmocka_unit_test(test_req_too_many_headers_431),
        cmocka_unit_test(test_req_default_max_headers),
        cmocka_unit_test(test_req_headers_bounded_by_array),
        cmocka_unit_test(test_resp_200_ok),
        cmocka_unit_test(test_resp_reason_forms),
        cmocka_unit_test(test_resp_head_too_big_502),
        cmocka_unit_test(test_chunked_api),
        cmocka_unit_test(test_chunked_prefixes_wait),
        cmocka_unit_test(test_chunked_big_chunk),
        cmocka_unit_test(test_chunked_big_size_value),
        cmocka_unit_test(test_chunked_line_too_long),
        cmocka_unit_test(test_chunked_trailer_limit),
        cmocka_unit_test(test_resp_unsent_body),
    };
    static struct CMUnitTest tests[NELEM(fixed) + NELEM(ka_cases) + NELEM(bad_requests) +
                                   NELEM(resp_cases) + NELEM(bad_responses) +
                                   NELEM(chunk_cases)];
    size_t n = 0, i;

    for (i = 0; i < NELEM(fixed); i++)
        tests[n++] = fixed[i];
    ADD_ROWS(ka_cases, run_ka_case);
    ADD_ROWS(bad_requests, run_bad_request);
    ADD_ROWS(resp_cases, run_resp_case);
    ADD_ROWS(bad_responses, run_bad_response);
    ADD_ROWS(chunk_cases, run_chunk_case);
    return _cmocka_run_group_tests("http1", tests, n, NULL, NULL);
}
