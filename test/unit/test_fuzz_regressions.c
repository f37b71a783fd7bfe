/* Regression tests for what the libFuzzer targets in test/fuzz/ found. Each test is named
 * after its saved input in test/fuzz/crashes/NAME/ and states the behaviour wanted. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <sluice/admit.h>
#include <sluice/config.h>
#include <sluice/http1.h>

#define RAW(s) s, sizeof(s) - 1

/* ------------------------------------------------------------------ config helpers */

/* Load `text` from a temporary file; the file's path in path[]. */
static struct config *load(const char *text, char *path, size_t plen, char *err, size_t errlen)
{
    snprintf(path, plen, "/tmp/sluice-fuzzreg-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t n = strlen(text);
    assert_int_equal(write(fd, text, n), (ssize_t)n);
    close(fd);
    err[0] = '\0';
    struct config *c = config_load(path, err, errlen);
    unlink(path);
    return c;
}

/* config_load refused it with "PATH:LINE: ..." naming `line`. */
static void expect_error_at(const char *text, int line)
{
    char path[64], err[512], want[96];
    struct config *c = load(text, path, sizeof path, err, sizeof err);
    if (c) {
        config_free(c);
        fail_msg("accepted:\n%s", text);
    }
    snprintf(want, sizeof want, "%s:%d: ", path, line);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("error \"%s\", want it to start with \"%s\"", err, want);
}

#define MIN_CONF "[proxy]\nlisten = 127.0.0.1:8080\n\n[backend app]\naddress = 127.0.0.1:8001\n"

/* crashes/config-section-kind-mismatch: a [KIND NAME] header that is refused (bad name or
 * duplicate) left the previous section's entry as the one keys are stored into, with the
 * other kind's key table: `rate` (a double) landed on [backend app]'s address pointer, and
 * config_free freed it (SIGSEGV; `sluice -t` and a reload crash). */
static void test_config_section_kind_mismatch(void **state)
{
    (void)state;
    /* lines: 1 [proxy] 2 listen 3 (empty) 4 [backend app] 5 address 6 [tenant a b] 7 rate */
    expect_error_at(MIN_CONF "[tenant a b]\nrate = 1\n", 6);
    /* the other way round: backend keys into a tenant entry, past its end */
    expect_error_at("[proxy]\nlisten = 8080\n[tenant t]\nburst = 2\n[backend bad name]\n"
                    "tls_name = x\ntls_ca = /y\nhealth_check = /h\n[backend a]\naddress = h:1\n",
                    5);
    /* a duplicate [backend app] after a [tenant]: tenant keys into the backend entry */
    expect_error_at(MIN_CONF "[tenant t]\nrate = 2\n[backend app]\naddress = h:2\n", 8);
    /* and a [route] after a refused [route] name */
    expect_error_at(MIN_CONF "[route r]\nprefix = /a\n[route r!]\nprefix = /b\nbypass = yes\n", 8);
}

/* crashes/config-nan-rate: strtod takes "nan", and NaN passes `x < min || x > max`: a
 * tenant with rate = nan was accepted (and silently had no limit). */
static void test_config_nan_rate(void **state)
{
    (void)state;
    expect_error_at(MIN_CONF "[tenant t]\nrate = nan\n", 7);
    expect_error_at(MIN_CONF "[tenant t]\nrate = -nan\n", 7);
}

/* crashes/config-tiny-rate: a positive rate below ~5.4e-11 passes the [0, 1e6] range, then
 * admit_init computes (uint64_t)(1e9 / rate) from a value past UINT64_MAX (or inf):
 * undefined behaviour (UBSan: "inf is outside the range of representable values"). Such
 * a rate must be refused where it is read. */
static void test_config_tiny_rate(void **state)
{
    (void)state;
    expect_error_at(MIN_CONF "[tenant t]\nrate = 1e-300\n", 7);
    expect_error_at(MIN_CONF "[tenant t]\nrate = 1e-11\n", 7);
    /* an ordinary small rate still loads and gives a sane interval */
    char path[64], err[512];
    struct config *c = load(MIN_CONF "[tenant t]\nrate = 0.5\n", path, sizeof path, err,
                            sizeof err);
    assert_non_null(c);
    struct admit a;
    assert_int_equal(admit_init(&a, &c->tenants, c->tenant, (int)c->ntenants, NULL), 0);
    int found = 0;
    for (int i = 0; i < a.n; i++)
        if (strcmp(a.t[i].conf->name, "t") == 0) {
            assert_int_equal(a.t[i].interval_ns, 2000000000ULL);
            found = 1;
        }
    assert_true(found);
    admit_free(&a);
    config_free(c);
}

/* ------------------------------------------------------------------ http1 helpers */

static int parse_resp(const char *buf, size_t len, size_t max_line, int *status)
{
    struct http1_limits lim = {.max_head = 4096, .max_line = max_line, .max_headers = 16};
    struct http1_header h[16];
    struct http1_msg m;
    char *p = malloc(len ? len : 1);
    assert_non_null(p);
    memcpy(p, buf, len);
    *status = 0;
    int n = http1_parse_response(p, len, &lim, h, 16, HTTP1_M_GET, &m, status);
    free(p);
    return n;
}

static int parse_req(const char *buf, size_t len, size_t max_line, int *status)
{
    struct http1_limits lim = {.max_head = 4096, .max_line = max_line, .max_headers = 16};
    struct http1_header h[16];
    struct http1_msg m;
    char *p = malloc(len ? len : 1);
    assert_non_null(p);
    memcpy(p, buf, len);
    *status = 0;
    int n = http1_parse_request(p, len, &lim, h, 16, &m, status);
    free(p);
    return n;
}

/* crashes/response-status-over-599: "HTTP/1.1 999 X" was accepted and forwarded. RFC 9110
 * section 15: status codes are 100..599; anything else from a backend is a 502. */
static void test_response_status_over_599(void **state)
{
    (void)state;
    static const char *bad[] = {"HTTP/1.1 600 X\r\n\r\n", "HTTP/1.1 999 X\r\n\r\n",
                                "HTTP/1.0 700\r\nContent-Length: 0\r\n\r\n"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int st;
        int n = parse_resp(bad[i], strlen(bad[i]), 0, &st);
        if (n != HTTP1_ERROR || st != 502)
            fail_msg("\"%s\": got %d (status %d), want HTTP1_ERROR 502", bad[i], n, st);
    }
    int st;
    assert_true(parse_resp(RAW("HTTP/1.1 599 X\r\n\r\n"), 0, &st) > 0);
}

/* Build a head whose first line is exactly `line` bytes: prefix, then fill, then suffix. */
static size_t build(char *buf, const char *prefix, size_t line, const char *suffix,
                    const char *rest)
{
    size_t n = strlen(prefix), s = strlen(suffix);
    memcpy(buf, prefix, n);
    while (n < line - s)
        buf[n++] = 'a';
    memcpy(buf + n, suffix, s);
    n += s;
    memcpy(buf + n, rest, strlen(rest));
    return n + strlen(rest);
}

/* crashes/response-long-status-line: with max_line 256, a 300-byte status line was accepted
 * when it arrived whole and was a 502 when the first read ended inside it: the limit must
 * hold either way (and an accepted head's every prefix is HTTP1_INCOMPLETE). */
static void test_response_long_status_line(void **state)
{
    (void)state;
    char buf[512];
    size_t n = build(buf, "HTTP/1.1 200 ", 300, "", "\r\nContent-Length: 0\r\n\r\n");
    int st_whole, st_part;
    int whole = parse_resp(buf, n, 256, &st_whole);
    int part = parse_resp(buf, 280, 256, &st_part);
    assert_int_equal(part, HTTP1_ERROR);
    if (whole != HTTP1_ERROR)
        fail_msg("a 300-byte status line (max_line 256) is accepted whole (%d) but refused "
                 "when split", whole);
}

/* crashes/response-line-at-limit-split-crlf: a status line of exactly max_line bytes is
 * accepted, but was a 502 when a read ended between its CR and LF. */
static void test_response_line_at_limit_split_crlf(void **state)
{
    (void)state;
    char buf[512];
    size_t n = build(buf, "HTTP/1.1 200 ", 256, "", "\r\nContent-Length: 0\r\n\r\n");
    int st;
    assert_true(parse_resp(buf, n, 256, &st) > 0);
    int part = parse_resp(buf, 257, 256, &st); /* ends with the CR */
    if (part != HTTP1_INCOMPLETE)
        fail_msg("first 257 bytes (line + CR) give %d (status %d), want HTTP1_INCOMPLETE",
                 part, st);
}

/* crashes/http1-request-line-at-limit-split-crlf: the same for requests: a request line of
 * exactly max_line bytes got 414 when a read ended between its CR and LF. */
static void test_request_line_at_limit_split_crlf(void **state)
{
    (void)state;
    char buf[512];
    size_t n = build(buf, "GET /", 256, " HTTP/1.1", "\r\nHost: a\r\n\r\n");
    int st;
    assert_true(parse_req(buf, n, 256, &st) > 0);
    int part = parse_req(buf, 257, 256, &st);
    if (part != HTTP1_INCOMPLETE)
        fail_msg("first 257 bytes (line + CR) give %d (status %d), want HTTP1_INCOMPLETE",
                 part, st);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_config_section_kind_mismatch),
        cmocka_unit_test(test_config_nan_rate),
        cmocka_unit_test(test_config_tiny_rate),
        cmocka_unit_test(test_response_status_over_599),
        cmocka_unit_test(test_response_long_status_line),
        cmocka_unit_test(test_response_line_at_limit_split_crlf),
        cmocka_unit_test(test_request_line_at_limit_split_crlf),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
