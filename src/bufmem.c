/* bufmem: the process-wide body-memory budget (see bufmem.h). */
#include <sluice/bufmem.h>

#include <malloc.h>
#include <string.h>

int bufmem_reserve(struct bufmem *m, size_t n, size_t limit, int force)
{
    size_t cur = atomic_load_explicit(&m->used, memory_order_relaxed);
    do {
        if (!force && (cur > limit || n > limit - cur))
            return -1;
    } while (!atomic_compare_exchange_weak_explicit(&m->used, &cur, cur + n,
                                                    memory_order_relaxed,
                                                    memory_order_relaxed));
    size_t now = cur + n, high = atomic_load_explicit(&m->high, memory_order_relaxed);
    while (now > high && !atomic_compare_exchange_weak_explicit(&m->high, &high, now,
                                                                memory_order_relaxed,
                                                                memory_order_relaxed))
        ;
    return 0;
}

void bufmem_release(struct bufmem *m, size_t n)
{
    atomic_fetch_sub_explicit(&m->used, n, memory_order_relaxed);
}

size_t bufmem_used(struct bufmem *m)
{
    return atomic_load_explicit(&m->used, memory_order_relaxed);
}

/* glibc keeps freed heap memory for reuse, in every thread's arena: after a flood of large
 * bodies the process would stay at its peak. malloc_trim(0) returns the free pages of all
 * arenas; it takes each arena's lock in turn, so it runs rarely and from the main thread. */
int bufmem_tick(struct bufmem *m)
{
    size_t used = bufmem_used(m);
    size_t high = atomic_load_explicit(&m->high, memory_order_relaxed);
    if (high < used || high - used < BUFMEM_TRIM_STEP)
        return 0;
    atomic_store_explicit(&m->high, used, memory_order_relaxed);
    malloc_trim(0);
    m->trims++;
    return 1;
}

/* Measured (docs/benchmarks.md, session 13): two threads relaying 64 KiB responses made
 * about one madvise and one page fault a request (a TLB shootdown to the other core each
 * time); 256 KiB already stopped them, 1 MiB leaves room for more connections in flight.
 * What stays is at most BUFMEM_KEEP_TOP per arena; malloc_trim (bufmem_tick) still returns
 * everything after a flood of bodies. */
size_t bufmem_malloc_setup(const char *tunables, const char *trim_env)
{
    if ((tunables && strstr(tunables, "malloc.trim_threshold")) || trim_env)
        return 0;
    if (mallopt(M_TRIM_THRESHOLD, (int)BUFMEM_KEEP_TOP) != 1)
        return 0;
    return BUFMEM_KEEP_TOP;
}
