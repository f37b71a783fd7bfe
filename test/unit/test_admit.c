/* Unit tests for tenants and the GCRA rate limit (include/sluice/admit.h). */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include <sluice/admit.h>
#include <sluice/config.h>
#include <sluice/http1.h>

#define SEC 1000000000ULL

static struct tenant_conf confs[] = {
    {.name = "gold", .rate = 10, .burst = 5},
    {.name = "default", .rate = 0, .burst = 1},
};

static void setup_admit(struct admit *a, struct tenants_conf *tc)
{
    assert_int_equal(admit_init(a, tc, confs, 2, NULL), 0);
}

/* Over any span t from a full bucket, GCRA admits exactly burst + floor(rate x t). */
static void test_gcra_admits_exactly_rate_times_t_plus_burst(void **state)
{
    (void)state;
    struct tenants_conf tc = {.key = TK_HEADER, .key_name = "X-Tenant"};
    struct admit a;
    setup_admit(&a, &tc);
    struct tenant *t = &a.t[0];
    uint64_t t0 = 1000 * SEC, admitted = 0;
    /* offer a request every millisecond for 3 s */
    for (uint64_t ms = 0; ms <= 3000; ms++)
        if (admit_rate(t, t0 + ms * 1000000ULL) == 0)
            admitted++;
    assert_int_equal(admitted, 5 + 10 * 3);
    assert_int_equal(t->st->admitted, admitted);
    assert_int_equal(t->st->rejected[REJ_rate], 0); /* counted when answered (request_answer.c) */
    admit_free(&a);
}

/* A refused request is told how long until it would conform, and that is right. */
static void test_gcra_wait_is_exact(void **state)
{
    (void)state;
    struct tenants_conf tc = {0};
    struct admit a;
    setup_admit(&a, &tc);
    struct tenant *t = &a.t[0];
    uint64_t now = 50 * SEC;
    for (int i = 0; i < 5; i++)
        assert_int_equal(admit_rate(t, now), 0);
    uint64_t wait = admit_rate(t, now);
    assert_int_equal(wait, SEC / 10);
    assert_true(admit_rate(t, now + wait - 1) > 0);
    assert_int_equal(admit_rate(t, now + wait), 0);
    admit_free(&a);
}

/* No rate configured: never refused. */
static void test_no_rate_never_refuses(void **state)
{
    (void)state;
    struct tenants_conf tc = {0};
    struct admit a;
    setup_admit(&a, &tc);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(admit_rate(&a.t[1], 7 * SEC), 0);
    admit_free(&a);
}

static struct tenant *classify(struct admit *a, const char *raw, const char *peer)
{
    static struct http1_header hdrs[16];
    static struct http1_msg m;
    int status;
    assert_true(http1_parse_request(raw, strlen(raw), NULL, hdrs, 16, &m, &status) > 0);
    return admit_classify(a, &m, peer);
}

static void test_classify_by_each_key_kind(void **state)
{
    (void)state;
    struct admit a;
    struct tenants_conf tc = {.key = TK_HEADER, .key_name = "X-Tenant"};
    setup_admit(&a, &tc);
    assert_string_equal(classify(&a, "GET / HTTP/1.1\r\nHost: h\r\nx-tenant: gold\r\n\r\n",
                                 "1.2.3.4")->conf->name, "gold");
    assert_string_equal(classify(&a, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: tin\r\n\r\n",
                                 "1.2.3.4")->conf->name, "default");
    assert_string_equal(classify(&a, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "1.2.3.4")->conf->name,
                        "default");
    tc = (struct tenants_conf){.key = TK_HOST};
    assert_string_equal(classify(&a, "GET / HTTP/1.1\r\nHost: gold:8080\r\n\r\n", "x")->conf->name,
                        "gold");
    tc = (struct tenants_conf){.key = TK_COOKIE, .key_name = "org"};
    assert_string_equal(
        classify(&a, "GET / HTTP/1.1\r\nHost: h\r\nCookie: a=1; org=gold; b=2\r\n\r\n", "x")
            ->conf->name,
        "gold");
    assert_string_equal(
        classify(&a, "GET / HTTP/1.1\r\nHost: h\r\nCookie: xorg=gold\r\n\r\n", "x")->conf->name,
        "default");
    tc = (struct tenants_conf){.key = TK_IP};
    assert_string_equal(classify(&a, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "gold")->conf->name,
                        "gold");
    tc = (struct tenants_conf){.key = TK_PATH_PREFIX, .prefix_segments = 1};
    assert_string_equal(classify(&a, "GET /gold/x/y HTTP/1.1\r\nHost: h\r\n\r\n", "x")->conf->name,
                        "gold");
    assert_string_equal(classify(&a, "GET /gold HTTP/1.1\r\nHost: h\r\n\r\n", "x")->conf->name,
                        "gold");
    assert_string_equal(classify(&a, "GET / HTTP/1.1\r\nHost: h\r\n\r\n", "x")->conf->name,
                        "default");
    admit_free(&a);
}

/* hmac_key: only NAME.HEXSIG with the right HMAC-SHA256 of NAME names a tenant. */
static void test_signed_keys(void **state)
{
    (void)state;
    const char *key = "0123456789abcdef-secret";
    struct tenants_conf tc = {.key = TK_HEADER, .key_name = "X-Tenant", .hmac_key = (char *)key};
    struct admit a;
    setup_admit(&a, &tc);
    unsigned char mac[32];
    unsigned ml = 0;
    HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)"gold", 4, mac, &ml);
    char sig[65], req[256];
    for (int i = 0; i < 32; i++)
        snprintf(sig + 2 * i, 3, "%02x", mac[i]);
    snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: gold.%s\r\n\r\n", sig);
    assert_string_equal(classify(&a, req, "x")->conf->name, "gold");
    assert_string_equal(classify(&a, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: gold\r\n\r\n",
                                 "x")->conf->name, "default");
    sig[0] = sig[0] == 'a' ? 'b' : 'a'; /* one wrong digit */
    snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: gold.%s\r\n\r\n", sig);
    assert_string_equal(classify(&a, req, "x")->conf->name, "default");
    sig[0] = 'G'; /* not hex */
    snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: gold.%s\r\n\r\n", sig);
    assert_string_equal(classify(&a, req, "x")->conf->name, "default");
    snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: gold.%.63s\r\n\r\n", sig);
    assert_string_equal(classify(&a, req, "x")->conf->name, "default");
    assert_int_equal(a.bad_signatures, 4);
    admit_free(&a);
}

/* A reload keeps a tenant's limiter state when its name stays. */
static void test_state_survives_reload_by_name(void **state)
{
    (void)state;
    struct tenants_conf tc = {0};
    struct admit a, b;
    setup_admit(&a, &tc);
    for (int i = 0; i < 5; i++)
        admit_rate(&a.t[0], SEC);
    assert_int_equal(admit_init(&b, &tc, confs, 2, &a), 0);
    admit_free(&a);
    assert_true(admit_rate(&b.t[0], SEC) > 0); /* the bucket is still empty */
    admit_free(&b);
}

/* Unnamed keys get their own limiter (default's limits), up to max_tracked; beyond that an
 * idle entry is reused and a busy table sends keys to the shared default. */
static void test_unnamed_keys_are_tracked_and_bounded(void **state)
{
    (void)state;
    static struct tenant_conf c2[] = {
        {.name = "default", .rate = 1, .burst = 2},
    };
    struct tenants_conf tc = {.key = TK_HEADER, .key_name = "X-Tenant", .max_tracked = 4};
    struct admit a;
    assert_int_equal(admit_init(&a, &tc, c2, 1, NULL), 0);
    struct tenant *u1 = classify(&a, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: u1\r\n\r\n", "x");
    struct tenant *u2 = classify(&a, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: u2\r\n\r\n", "x");
    assert_ptr_not_equal(u1, u2);
    assert_ptr_not_equal(u1, &a.t[0]);
    uint64_t now = admit_now_ns();
    assert_int_equal(admit_rate(u1, now), 0);
    assert_int_equal(admit_rate(u1, now), 0);
    assert_true(admit_rate(u1, now) > 0); /* u1 is out of burst ... */
    assert_int_equal(admit_rate(u2, now), 0); /* ... u2 is not */
    /* the same key finds the same entry */
    assert_ptr_equal(classify(&a, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: u1\r\n\r\n", "x"),
                     u1);
    admit_done(u1);
    /* fill the table while every entry is held: the rest share default */
    char raw[128];
    struct tenant *held[8];
    int shared = 0;
    for (int i = 0; i < 8; i++) {
        snprintf(raw, sizeof raw, "GET / HTTP/1.1\r\nHost: h\r\nX-Tenant: k%d\r\n\r\n", i);
        held[i] = classify(&a, raw, "x");
        shared += held[i] == &a.t[0];
    }
    assert_true(shared >= 6 - 2); /* 4 slots, u1/u2 hold 2 (u1 twice, released once) */
    assert_true(a.keys.used <= 4);
    for (int i = 0; i < 8; i++)
        admit_done(held[i]);
    admit_done(u1);
    admit_done(u2);
    admit_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gcra_admits_exactly_rate_times_t_plus_burst),
        cmocka_unit_test(test_gcra_wait_is_exact),
        cmocka_unit_test(test_no_rate_never_refuses),
        cmocka_unit_test(test_classify_by_each_key_kind),
        cmocka_unit_test(test_signed_keys),
        cmocka_unit_test(test_state_survives_reload_by_name),
        cmocka_unit_test(test_unnamed_keys_are_tracked_and_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
