/* uri: normalized paths for matching routes, bypass and path_prefix keys, and the
 * whole-segment prefix match. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include <sluice/uri.h>

static const struct {
    const char *in;
    const char *want; /* NULL: refused with `err` */
    long err;
} cases[] = {
    /* the spellings that slipped past a route prefixed /api/v1/sqllab */
    {"/api/v1/%73qllab/run", "/api/v1/sqllab/run", 0},
    {"/api/v1/sqll%61b/run", "/api/v1/sqllab/run", 0},
    {"//api/v1/sqllab/run", "/api/v1/sqllab/run", 0},
    {"///api/v1/sqllab/run", "/api/v1/sqllab/run", 0},
    {"/api/v1%2Fsqllab/run", NULL, URI_ENCODED_SLASH},
    {"/api/v1%2fsqllab/run", NULL, URI_ENCODED_SLASH},
    /* dot segments, encoded or not */
    {"/health/../x", "/x", 0},
    {"/a/./b/", "/a/b/", 0},
    {"/a/b/..", "/a/", 0},
    {"/a/.", "/a/", 0},
    {"/a/..", "/", 0},
    {"/a/%2e%2E/b", "/b", 0},
    {"/..", NULL, URI_ABOVE_ROOT},
    {"/a/../..", NULL, URI_ABOVE_ROOT},
    {"/%2e%2e/etc/passwd", NULL, URI_ABOVE_ROOT},
    /* "..." and "..x" are names, not dot segments */
    {"/.../x", "/.../x", 0},
    {"/..x/y", "/..x/y", 0},
    /* escapes: unreserved decoded, others kept with upper-case hex */
    {"/%7e%41%20b%3f", "/~A%20b%3F", 0},
    {"/x%", NULL, URI_BAD_ESCAPE},
    {"/x%4", NULL, URI_BAD_ESCAPE},
    {"/x%zz", NULL, URI_BAD_ESCAPE},
    {"/x%00y", NULL, URI_BAD_ESCAPE},
    /* the query is not part of the path; empty paths are "/" */
    {"/a//b?x=/../%2F", "/a/b", 0},
    {"", "/", 0},
    {"?x=1", "/", 0},
    {"/", "/", 0},
    {"//", "/", 0},
    {"*", "*", 0},
};

static void test_normalize(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char out[64];
        memset(out, 'Z', sizeof out);
        long r = uri_normalize_path(cases[i].in, strlen(cases[i].in), out);
        if (!cases[i].want) {
            if (r != cases[i].err)
                fail_msg("\"%s\": want error %ld, got %ld", cases[i].in, cases[i].err, r);
            continue;
        }
        if (r < 0 || (size_t)r != strlen(cases[i].want) || memcmp(out, cases[i].want, (size_t)r))
            fail_msg("\"%s\": want \"%s\", got %ld \"%.*s\"", cases[i].in, cases[i].want, r,
                     r > 0 ? (int)r : 0, out);
        if ((size_t)r > strlen(cases[i].in) + 1)
            fail_msg("\"%s\": longer than its room (len + 1)", cases[i].in);
    }
}

/* In place (the config normalizes route prefixes that way) when it starts with "/". */
static void test_normalize_in_place(void **state)
{
    (void)state;
    char buf[] = "/a/%62//./c/../d/";
    long r = uri_normalize_path(buf, strlen(buf), buf);
    assert_int_equal(r, 7);
    assert_memory_equal(buf, "/a/b/d/", 7);
}

static void test_prefix_match(void **state)
{
    (void)state;
    static const struct {
        const char *path, *prefix;
        int want;
    } m[] = {
        {"/health", "/health", 1},  {"/health/x", "/health", 1}, {"/healthX", "/health", 0},
        {"/health", "/health/", 1}, {"/health/", "/health/", 1}, {"/x", "/", 1},
        {"/", "/", 1},              {"/heal", "/health", 0},     {"/api/v1/sqllab/run", "/api/v1/sqllab", 1},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        if (uri_prefix_match(m[i].path, strlen(m[i].path), m[i].prefix, strlen(m[i].prefix)) !=
            m[i].want)
            fail_msg("\"%s\" under \"%s\": want %d", m[i].path, m[i].prefix, m[i].want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_normalize_in_place),
        cmocka_unit_test(test_prefix_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
