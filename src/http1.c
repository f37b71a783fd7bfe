/* http1: strict HTTP/1.1 head parser and chunked decoder (RFC 9112, RFC 9110).
 * One pass over a contiguous head; no allocation; fields point into the caller's buffer.
 * Anything a smuggling attack could use (CL+TE, odd Content-Length, bare LF, obs-fold,
 * odd header names or value bytes) is an error, never "repaired". */
#include <sluice/http1.h>

#include <stdint.h>
#include <string.h>
#include <strings.h>

#define DEF_MAX_HEAD 16384
#define DEF_MAX_LINE 8192
#define DEF_MAX_HEADERS 100
#define DEF_MAX_TRAILER 8192

/* tchar per RFC 9110 5.6.2 */
static const unsigned char tchar[256] = {
    ['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1, ['&'] = 1, ['\''] = 1, ['*'] = 1, ['+'] = 1,
    ['-'] = 1, ['.'] = 1, ['^'] = 1, ['_'] = 1, ['`'] = 1, ['|'] = 1, ['~'] = 1,
    ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1, ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1,
    ['8'] = 1, ['9'] = 1,
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1,
    ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1,
    ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1,
    ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1,
    ['y'] = 1, ['z'] = 1,
};

static int is_vchar_or_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || (c >= 0x21 && c != 0x7f);
}

struct hdr_name {
    const char *name; /* lower case */
    unsigned char len;
    unsigned char hop;
    enum http1_hdr id;
};

#define KNOWN(lit, id, hop) {lit, sizeof lit - 1, hop, id}

/* Hop-by-hop per RFC 9110 7.6.1, plus the framing fields (Content-Length,
 * Transfer-Encoding) and Expect, which sluice regenerates itself. Shortest first, as
 * first_of_len says. */
static const struct hdr_name known[] = {
    KNOWN("te", HTTP1_H_TE, 1),
    KNOWN("host", HTTP1_H_HOST, 0),
    KNOWN("expect", HTTP1_H_EXPECT, 1),
    KNOWN("trailer", HTTP1_H_TRAILER, 1),
    KNOWN("upgrade", HTTP1_H_UPGRADE, 1),
    KNOWN("forwarded", HTTP1_H_FORWARDED, 0),
    KNOWN("connection", HTTP1_H_CONNECTION, 1),
    KNOWN("keep-alive", HTTP1_H_KEEP_ALIVE, 1),
    KNOWN("x-request-id", HTTP1_H_X_REQUEST_ID, 0),
    KNOWN("content-length", HTTP1_H_CONTENT_LENGTH, 1),
    KNOWN("x-forwarded-for", HTTP1_H_X_FORWARDED_FOR, 0),
    KNOWN("proxy-connection", HTTP1_H_PROXY_CONNECTION, 1),
    KNOWN("x-forwarded-host", HTTP1_H_X_FORWARDED_HOST, 0),
    KNOWN("transfer-encoding", HTTP1_H_TRANSFER_ENCODING, 1),
    KNOWN("x-forwarded-proto", HTTP1_H_X_FORWARDED_PROTO, 0),
    KNOWN("proxy-authenticate", HTTP1_H_PROXY_AUTHENTICATE, 1),
    KNOWN("proxy-authorization", HTTP1_H_PROXY_AUTHORIZATION, 1),
};

/* a (n bytes, any case) equals lower-case lit (n bytes): ASCII only, no locale */
static int ieq_lower(const char *a, const char *lit, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if ((c >= 'A' && c <= 'Z' ? c + 32 : c) != (unsigned char)lit[i])
            return 0;
    }
    return 1;
}

/* A field name (n bytes, all tchar: checked before) equals lower-case lit (letters and '-'),
 * 8 bytes at a time. For a tchar byte c, c | 0x20 is a letter, a digit or '-' only when c
 * is one (in either case): the other tchars stay punctuation ('^' turns into '~', '_' into
 * DEL); only a control byte, never in a name, could turn into '-'. */
static int name_eq(const char *a, const char *lit, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x, y;
        memcpy(&x, a + i, 8);
        memcpy(&y, lit + i, 8);
        if ((x | 0x2020202020202020ULL) != y)
            return 0;
    }
    for (; i < n; i++)
        if (((unsigned char)a[i] | 0x20) != (unsigned char)lit[i])
            return 0;
    return 1;
}

static int mem_ieq_n(const char *a, size_t alen, const char *lit, size_t n)
{
    return alen == n && ieq_lower(a, lit, n);
}

/* a lower-case string literal: its length is known where it is written */
#define mem_ieq(a, alen, lit) mem_ieq_n(a, alen, lit, sizeof lit - 1)

int http1_name_is(const struct http1_header *h, const char *name)
{
    return h->name_len == strlen(name) && strncasecmp(h->name, name, h->name_len) == 0;
}

const struct http1_header *http1_find(const struct http1_msg *msg, enum http1_hdr id)
{
    for (size_t i = 0; i < msg->num_headers; i++)
        if (msg->headers[i].id == id)
            return &msg->headers[i];
    return NULL;
}

int http1_idempotent(enum http1_method m)
{
    return m == HTTP1_M_GET || m == HTTP1_M_HEAD || m == HTTP1_M_PUT || m == HTTP1_M_DELETE ||
           m == HTTP1_M_OPTIONS || m == HTTP1_M_TRACE;
}

/* known[]'s first entry of each name length (-1: none); test_http1's every-tchar test
 * finds every known name through it */
static const signed char first_of_len[] = {
    -1, -1, 0, -1, 1, -1, 2, 3, -1, 5, 6, -1, 8, -1, 9, 10, 11, 13, 15, 16,
};

static void classify(struct http1_header *h)
{
    h->id = HTTP1_H_OTHER;
    h->hop = 0;
    size_t n = h->name_len;
    if (n >= sizeof first_of_len || first_of_len[n] < 0)
        return;
    for (size_t i = (size_t)first_of_len[n]; i < sizeof known / sizeof known[0] &&
                                              known[i].len == n; i++)
        if (name_eq(h->name, known[i].name, n)) {
            h->id = known[i].id;
            h->hop = known[i].hop;
            return;
        }
}

static enum http1_method method_id(const char *m, size_t n)
{
    static const struct { const char *s; enum http1_method id; } tab[] = {
        {"GET", HTTP1_M_GET},         {"HEAD", HTTP1_M_HEAD},   {"POST", HTTP1_M_POST},
        {"PUT", HTTP1_M_PUT},         {"DELETE", HTTP1_M_DELETE}, {"OPTIONS", HTTP1_M_OPTIONS},
        {"PATCH", HTTP1_M_PATCH},     {"TRACE", HTTP1_M_TRACE}, {"CONNECT", HTTP1_M_CONNECT},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (strlen(tab[i].s) == n && memcmp(tab[i].s, m, n) == 0)
            return tab[i].id;
    return HTTP1_M_OTHER;
}

/* Find the CRLF ending the line that starts at p. Returns the offset of CR, -1 if more
 * bytes are needed, -2 on a bare LF or a CR not followed by LF. */
static long line_end(const char *buf, size_t start, size_t len)
{
    if (start >= len)
        return -1;
    /* the first CR or LF decides (memchr: a line at a time, not a byte) */
    const char *p = buf + start, *lf = memchr(p, '\n', len - start);
    const char *cr = memchr(p, '\r', (size_t)((lf ? lf : buf + len) - p));
    if (!cr)
        return lf ? -2 : -1; /* a bare LF, or no end yet */
    size_t i = (size_t)(cr - buf);
    if (i + 1 >= len)
        return -1;
    return buf[i + 1] == '\n' ? (long)i : -2;
}

static int parse_version(const char *p, size_t n, int *minor)
{
    if (n != 8 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1'))
        return -1;
    *minor = p[7] - '0';
    return 0;
}

static int err(int *status, int code)
{
    *status = code;
    return HTTP1_ERROR;
}

/* uri-host [ ":" port ] (RFC 9110 7.2): reg-name or IP-literal, digits after the colon. */
/* reg-name (RFC 3986 3.2.2): unreserved, sub-delims and '%' (ASCII, whatever the locale) */
static int regname_char(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    switch (c) {
    case '-': case '.': case '_': case '~': case '%': case '!': case '$': case '&':
    case '\'': case '(': case ')': case '*': case '+': case ';': case '=':
        return 1;
    default:
        return 0;
    }
}

static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int valid_host(const char *h, size_t n)
{
    size_t i = 0;
    if (n && h[0] == '[') {
        while (i < n && h[i] != ']') {
            unsigned char c = (unsigned char)h[i];
            if (i > 0 && !(is_hex(c) || c == ':' || c == '.'))
                return 0;
            i++;
        }
        if (i == n)
            return 0;
        i++;
    } else {
        for (; i < n && h[i] != ':'; i++) {
            unsigned char c = (unsigned char)h[i];
            if (!regname_char(c))
                return 0;
        }
    }
    if (i == n)
        return 1;
    if (h[i] != ':')
        return 0;
    for (i++; i < n; i++)
        if (!is_digit((unsigned char)h[i]))
            return 0;
    return 1;
}

/* absolute-form: "http://" or "https://" authority path-abempty [ "?" query ]. The target
 * becomes the path part; the authority is kept to replace Host (RFC 9112 3.2.2). */
static int parse_absolute(struct http1_msg *m)
{
    const char *t = m->target;
    size_t n = m->target_len, skip;
    if (n > 7 && strncasecmp(t, "http://", 7) == 0)
        skip = 7;
    else if (n > 8 && strncasecmp(t, "https://", 8) == 0)
        skip = 8;
    else
        return -1;
    const char *a = t + skip, *end = t + n, *p = a;
    while (p < end && *p != '/' && *p != '?')
        p++; /* the authority ends at the path, the query or the end */
    size_t alen = (size_t)(p - a); /* RFC 9110 4.2.1: an empty host is invalid */
    if (alen == 0 || a[0] == ':' || memchr(a, '@', alen) || !valid_host(a, alen))
        return -1;
    m->authority = a;
    m->authority_len = (size_t)(p - a);
    m->target = p;
    m->target_len = (size_t)(end - p);
    if (p == end && m->meth == HTTP1_M_OPTIONS) {
        m->target = "*"; /* RFC 9112 3.2.4: OPTIONS of the server as a whole */
        m->target_len = 1;
    } else if (p == end || *p == '?') {
        m->slash_missing = 1; /* RFC 9112 3.2.2: an empty path is sent as "/" */
    }
    return 0;
}

/* Request line: method SP request-target SP HTTP-version. */
static int parse_request_line(const char *b, size_t n, struct http1_msg *m)
{
    size_t i = 0;
    while (i < n && tchar[(unsigned char)b[i]])
        i++;
    if (i == 0 || i > 32 || i >= n || b[i] != ' ')
        return -1;
    m->method = b;
    m->method_len = i;
    m->meth = method_id(b, i);
    size_t t = ++i;
    while (i < n && (unsigned char)b[i] > 0x20 && (unsigned char)b[i] < 0x7f)
        i++;
    if (i == t || i >= n || b[i] != ' ')
        return -1;
    m->target = b + t;
    m->target_len = i - t;
    if (memchr(m->target, '#', m->target_len))
        return -1; /* a fragment is the client's own business, never sent (RFC 9112 3.2) */
    if (m->target[0] != '/' && !(m->target_len == 1 && m->target[0] == '*' &&
                                 m->meth == HTTP1_M_OPTIONS) &&
        parse_absolute(m) < 0)
        return -1;
    return parse_version(b + i + 1, n - i - 1, &m->minor);
}

static int parse_status_line(const char *b, size_t n, struct http1_msg *m)
{
    if (n < 12 || parse_version(b, 8, &m->minor) < 0 || b[8] != ' ')
        return -1;
    for (int i = 9; i < 12; i++)
        if (b[i] < '0' || b[i] > '9')
            return -1;
    m->status = (b[9] - '0') * 100 + (b[10] - '0') * 10 + (b[11] - '0');
    if (m->status < 100 || m->status > 599) /* RFC 9110 15: 100..599 */
        return -1;
    m->reason = b + n;
    m->reason_len = 0;
    if (n == 12)
        return 0;
    if (b[12] != ' ')
        return -1;
    for (size_t i = 13; i < n; i++)
        if (!is_vchar_or_ws((unsigned char)b[i]))
            return -1;
    m->reason = b + 13;
    m->reason_len = n - 13;
    return 0;
}

/* One field line b[0..n) (no CRLF) into h. */
static int parse_field(const char *b, size_t n, struct http1_header *h)
{
    size_t i = 0;
    while (i < n && tchar[(unsigned char)b[i]])
        i++;
    if (i == 0 || i >= n || b[i] != ':')
        return -1; /* empty name, bad name byte, space before colon, obs-fold, no colon */
    h->name = b;
    h->name_len = i;
    i++;
    while (i < n && (b[i] == ' ' || b[i] == '\t'))
        i++;
    size_t end = n;
    while (end > i && (b[end - 1] == ' ' || b[end - 1] == '\t'))
        end--;
    for (size_t k = i; k < end; k++)
        if (!is_vchar_or_ws((unsigned char)b[k]))
            return -1; /* NUL, CR, LF, other CTLs, DEL */
    h->value = b + i;
    h->value_len = end - i;
    classify(h);
    return 0;
}

/* Iterate comma-separated list elements of a field value; returns 0 when done. */
static int next_elem(const char **p, const char *end, const char **e, size_t *elen)
{
    const char *s = *p;
    if (s >= end)
        return 0;
    const char *c = memchr(s, ',', (size_t)(end - s));
    const char *stop = c ? c : end;
    *p = c ? c + 1 : end;
    while (s < stop && (*s == ' ' || *s == '\t'))
        s++;
    const char *t = stop;
    while (t > s && (t[-1] == ' ' || t[-1] == '\t'))
        t--;
    *e = s;
    *elen = (size_t)(t - s);
    return 1;
}

static int is_token(const char *s, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!tchar[(unsigned char)s[i]])
            return 0;
    return 1;
}

/* Mark headers named in Connection as hop-by-hop; note close/keep-alive/upgrade. */
static int scan_connection(struct http1_msg *m, int *close, int *ka, int *upg)
{
    for (size_t i = 0; i < m->num_headers; i++) {
        if (m->headers[i].id != HTTP1_H_CONNECTION)
            continue;
        const char *p = m->headers[i].value, *end = p + m->headers[i].value_len, *e;
        size_t n;
        while (next_elem(&p, end, &e, &n)) {
            if (n == 0)
                continue;
            if (!is_token(e, n))
                return -1;
            if (mem_ieq(e, n, "close"))
                *close = 1;
            else if (mem_ieq(e, n, "keep-alive"))
                *ka = 1;
            else if (mem_ieq(e, n, "upgrade"))
                *upg = 1;
            for (size_t k = 0; k < m->num_headers; k++)
                if (m->headers[k].name_len == n && strncasecmp(m->headers[k].name, e, n) == 0 &&
                    m->headers[k].id != HTTP1_H_HOST)
                    m->headers[k].hop = 1;
        }
    }
    return 0;
}

/* Content-Length: exactly one field of 1*DIGIT that fits in 63 bits. */
static int parse_cl(const struct http1_header *h, uint64_t *out)
{
    if (h->value_len == 0 || h->value_len > 18)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < h->value_len; i++) {
        unsigned char c = (unsigned char)h->value[i];
        if (c < '0' || c > '9')
            return -1;
        v = v * 10 + (c - '0');
    }
    *out = v;
    return 0;
}

/* Transfer-Encoding over all its fields: 0 = exactly "chunked", 1 = chunked last with other
 * codings before it, 2 = last coding is not chunked, -1 = malformed. */
static int parse_te(const struct http1_msg *m)
{
    int count = 0, last_chunked = 0, chunked_seen = 0;
    for (size_t i = 0; i < m->num_headers; i++) {
        if (m->headers[i].id != HTTP1_H_TRANSFER_ENCODING)
            continue;
        const char *p = m->headers[i].value, *end = p + m->headers[i].value_len, *e;
        size_t n;
        if (m->headers[i].value_len == 0)
            return -1;
        while (next_elem(&p, end, &e, &n)) {
            if (!is_token(e, n))
                return -1; /* empty element, parameters or obfuscation */
            int ch = mem_ieq(e, n, "chunked");
            if (ch && chunked_seen)
                return -1; /* chunked applied twice */
            chunked_seen |= ch;
            last_chunked = ch;
            count++;
        }
    }
    if (!last_chunked)
        return chunked_seen ? -1 : 2;
    return count == 1 ? 0 : 1;
}

/* Parse the field lines after the start line. Returns head length or error. */
static int parse_fields(const char *buf, size_t len, size_t pos, size_t max_head, size_t nmax,
                        struct http1_msg *m, int *status, int err_bad, int err_big)
{
    for (;;) {
        long e = line_end(buf, pos, len);
        if (e == -2)
            return err(status, err_bad);
        if (e == -1)
            return len > max_head ? err(status, err_big) : HTTP1_INCOMPLETE;
        size_t end = (size_t)e;
        if (end + 2 > max_head)
            return err(status, err_big);
        if (end == pos)
            return (int)(end + 2);
        if (m->num_headers >= nmax)
            return err(status, err_big);
        if (parse_field(buf + pos, end - pos, &m->headers[m->num_headers]) < 0)
            return err(status, err_bad);
        m->num_headers++;
        pos = end + 2;
    }
}

static void limits(const struct http1_limits *lim, size_t max_hdrs, size_t *head, size_t *line,
                   size_t *nmax)
{
    *head = lim && lim->max_head ? lim->max_head : DEF_MAX_HEAD;
    *line = lim && lim->max_line ? lim->max_line : DEF_MAX_LINE;
    *nmax = lim && lim->max_headers ? lim->max_headers : DEF_MAX_HEADERS;
    if (*nmax > max_hdrs)
        *nmax = max_hdrs;
}

/* Framing and semantics common to both directions. */
static int derive(struct http1_msg *m, int is_request, int *status, int bad)
{
    int close = 0, ka = 0, upg = 0, ncl = 0, nhost = 0, has_te = 0;
    if (scan_connection(m, &close, &ka, &upg) < 0)
        return err(status, bad);
    m->host = -1;
    for (size_t i = 0; i < m->num_headers; i++) {
        const struct http1_header *h = &m->headers[i];
        if (h->id == HTTP1_H_CONTENT_LENGTH) {
            if (++ncl > 1 || parse_cl(h, &m->content_length) < 0)
                return err(status, bad);
        } else if (h->id == HTTP1_H_TRANSFER_ENCODING) {
            has_te = 1;
        } else if (h->id == HTTP1_H_HOST) {
            if (is_request && !valid_host(h->value, h->value_len))
                return err(status, bad);
            nhost++;
            m->host = (int)i;
        } else if (h->id == HTTP1_H_EXPECT && mem_ieq(h->value, h->value_len, "100-continue")) {
            m->expect_continue = 1;
        } else if (h->id == HTTP1_H_UPGRADE) {
            m->upgrade = 1;
        }
    }
    m->upgrade = m->upgrade && upg;
    m->keep_alive = m->minor == 1 ? !close : (ka && !close);
    if (has_te && (ncl || m->minor == 0))
        return err(status, bad);
    if (has_te) {
        int te = parse_te(m);
        if (te == 0)
            m->body = HTTP1_BODY_CHUNKED;
        else if (te == 1 && is_request)
            return err(status, 501);
        else if (is_request || te < 0)
            return err(status, bad);
        else
            m->body = te == 1 ? HTTP1_BODY_CHUNKED : HTTP1_BODY_CLOSE;
    } else if (ncl) {
        m->body = HTTP1_BODY_LENGTH;
    }
    if (is_request && (nhost > 1 || (m->minor == 1 && nhost == 0)))
        return err(status, bad);
    return 0;
}

/* The length of an unterminated line from start: what it has so far, not counting a last CR
 * (its LF may be in the next read), so that the limit judges the same whole or split. */
static size_t unterminated(const char *buf, size_t start, size_t len)
{
    size_t n = len - start;
    return n && buf[len - 1] == '\r' ? n - 1 : n;
}

int http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
                        struct http1_header *hdrs, size_t max_hdrs, struct http1_msg *msg,
                        int *status)
{
    size_t max_head, max_line, nmax, pos = 0;
    limits(lim, max_hdrs, &max_head, &max_line, &nmax);
    memset(msg, 0, sizeof *msg);
    msg->headers = hdrs;
    /* RFC 9112 2.2: ignore at least one empty line before the request line */
    while (pos + 1 < len && pos < 4 && buf[pos] == '\r' && buf[pos + 1] == '\n')
        pos += 2;
    long e = line_end(buf, pos, len);
    if (e == -2)
        return err(status, 400);
    if (e == -1) {
        if (unterminated(buf, pos, len) > max_line)
            return err(status, 414);
        return len > max_head ? err(status, 431) : HTTP1_INCOMPLETE;
    }
    if ((size_t)e - pos > max_line)
        return err(status, 414);
    if (parse_request_line(buf + pos, (size_t)e - pos, msg) < 0)
        return err(status, 400);
    int n = parse_fields(buf, len, (size_t)e + 2, max_head, nmax, msg, status, 400, 431);
    if (n < 0)
        return n;
    if (derive(msg, 1, status, 400) < 0)
        return HTTP1_ERROR;
    return n;
}

int http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
                         struct http1_header *hdrs, size_t max_hdrs, enum http1_method req_meth,
                         struct http1_msg *msg, int *status)
{
    size_t max_head, max_line, nmax;
    limits(lim, max_hdrs, &max_head, &max_line, &nmax);
    memset(msg, 0, sizeof *msg);
    msg->headers = hdrs;
    long e = line_end(buf, 0, len);
    if (e == -2)
        return err(status, 502);
    if (e == -1)
        return unterminated(buf, 0, len) > max_line ? err(status, 502) : HTTP1_INCOMPLETE;
    if ((size_t)e > max_line || parse_status_line(buf, (size_t)e, msg) < 0)
        return err(status, 502);
    int n = parse_fields(buf, len, (size_t)e + 2, max_head, nmax, msg, status, 502, 502);
    if (n < 0)
        return n;
    if (derive(msg, 0, status, 502) < 0)
        return HTTP1_ERROR;
    if (msg->body == HTTP1_BODY_NONE && !http1_find(msg, HTTP1_H_CONTENT_LENGTH))
        msg->body = HTTP1_BODY_CLOSE;
    if (req_meth == HTTP1_M_HEAD || msg->status < 200 || msg->status == 204 ||
        msg->status == 304 || (req_meth == HTTP1_M_CONNECT && msg->status < 300)) {
        msg->unsent_body = (msg->body == HTTP1_BODY_LENGTH && msg->content_length > 0) ||
                           http1_find(msg, HTTP1_H_TRANSFER_ENCODING) != NULL;
        msg->body = HTTP1_BODY_NONE;
    }
    if (msg->body == HTTP1_BODY_CLOSE)
        msg->keep_alive = 0;
    return n;
}

/* ---- chunked ---- */

void http1_chunked_init(struct http1_chunked *c, size_t max_trailer)
{
    memset(c, 0, sizeof *c);
    c->max_trailer = max_trailer ? max_trailer : DEF_MAX_TRAILER;
}

void http1_chunked_data(struct http1_chunked *c, uint64_t n)
{
    c->remaining -= n;
    if (c->remaining == 0)
        c->state = HTTP1_CH_DATA_CRLF;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
}

/* chunk = chunk-size [ chunk-ext ] CRLF; returns bytes consumed, 0 if incomplete. */
static size_t chunk_size_line(struct http1_chunked *c, const char *b, size_t len)
{
    long e = line_end(b, 0, len < HTTP1_CHUNK_MAX_LINE ? len : HTTP1_CHUNK_MAX_LINE);
    if (e == -2 || (e == -1 && len >= HTTP1_CHUNK_MAX_LINE)) {
        c->state = HTTP1_CH_ERROR;
        return 0;
    }
    if (e == -1)
        return 0;
    size_t i = 0;
    uint64_t v = 0;
    int d;
    while (i < (size_t)e && (d = hexval((unsigned char)b[i])) >= 0) {
        if (i >= 15) { /* 16 hex digits would exceed 2^60: refuse, as HAProxy does */
            c->state = HTTP1_CH_ERROR;
            return 0;
        }
        v = v * 16 + (uint64_t)d;
        i++;
    }
    size_t k = i;
    while (k < (size_t)e && (b[k] == ' ' || b[k] == '\t'))
        k++;
    if (i == 0 || (k < (size_t)e && b[k] != ';') || (k == (size_t)e && k != i)) {
        c->state = HTTP1_CH_ERROR;
        return 0;
    }
    for (; k < (size_t)e; k++)
        if (!is_vchar_or_ws((unsigned char)b[k])) {
            c->state = HTTP1_CH_ERROR;
            return 0;
        }
    c->remaining = v;
    c->state = v ? HTTP1_CH_DATA : HTTP1_CH_TRAILER;
    return (size_t)e + 2;
}

/* One trailer line or the final empty line. */
static size_t trailer_line(struct http1_chunked *c, const char *b, size_t len)
{
    long e = line_end(b, 0, len);
    if (e == -2 || (e == -1 && c->trailer_bytes + len > c->max_trailer)) {
        c->state = HTTP1_CH_ERROR;
        return 0;
    }
    if (e == -1)
        return 0;
    c->trailer_bytes += (size_t)e + 2;
    if (c->trailer_bytes > c->max_trailer) {
        c->state = HTTP1_CH_ERROR;
        return 0;
    }
    if (e == 0) {
        c->state = HTTP1_CH_DONE;
        return 2;
    }
    struct http1_header h;
    if (parse_field(b, (size_t)e, &h) < 0) {
        c->state = HTTP1_CH_ERROR;
        return 0;
    }
    return (size_t)e + 2;
}

size_t http1_chunked_parse(struct http1_chunked *c, const char *buf, size_t len)
{
    size_t used = 0;
    for (;;) {
        size_t n = 0;
        switch (c->state) {
        case HTTP1_CH_SIZE:
            n = chunk_size_line(c, buf + used, len - used);
            break;
        case HTTP1_CH_DATA_CRLF:
            if (len - used < 2)
                return used;
            if (buf[used] != '\r' || buf[used + 1] != '\n') {
                c->state = HTTP1_CH_ERROR;
                return used;
            }
            n = 2;
            c->state = HTTP1_CH_SIZE;
            break;
        case HTTP1_CH_TRAILER:
            n = trailer_line(c, buf + used, len - used);
            break;
        case HTTP1_CH_DATA:
        case HTTP1_CH_DONE:
        case HTTP1_CH_ERROR:
            return used;
        }
        if (n == 0)
            return used;
        used += n;
    }
}
