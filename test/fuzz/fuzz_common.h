/* Helpers shared by the libFuzzer targets in test/fuzz/ (header only: `make fuzz` builds
 * each test/fuzz/fuzz_*.c on its own). */
#ifndef SLUICE_FUZZ_COMMON_H
#define SLUICE_FUZZ_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An invariant: on failure say which one (the crash report then names it) and abort. */
#define FUZZ_CHECK(cond, ...)                                                                 \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf(stderr, "\n*** fuzz invariant failed at %s:%d: %s\n*** ", __FILE__,       \
                    __LINE__, #cond);                                                         \
            fprintf(stderr, __VA_ARGS__);                                                     \
            fprintf(stderr, "\n");                                                            \
            abort();                                                                          \
        }                                                                                     \
    } while (0)

/* A copy of p[0..n) in a heap block of exactly n bytes, so ASan flags any read past it. */
static inline char *fuzz_dup(const void *p, size_t n)
{
    char *b = malloc(n ? n : 1);
    if (!b)
        abort();
    if (n)
        memcpy(b, p, n);
    return b;
}

/* p lies in [lo, hi]. */
static inline int fuzz_within(const char *p, const char *lo, const char *hi)
{
    return p >= lo && p <= hi;
}

#endif
