/* bufmem: the process-wide budget for request bodies held in memory ([proxy] buffer_memory).
 * A body buffered before a backend is chosen reserves its room here first; a reservation
 * that does not fit is refused (the request gets 503 buffers-full) rather than letting
 * memory grow with the number of connections. The main thread hands freed memory back to
 * the kernel (malloc_trim) once a large part of what was held has been released. */
#ifndef SLUICE_BUFMEM_H
#define SLUICE_BUFMEM_H

#include <stdatomic.h>
#include <stddef.h>

struct bufmem {
    atomic_size_t used; /* bytes reserved now, all threads */
    atomic_size_t high; /* the most reserved since the last trim */
    size_t trims;       /* malloc_trim calls (main thread only) */
};

/* Reserve n more bytes under limit. 0, or -1 (nothing reserved) when used + n > limit.
 * force: reserve even past the limit (bytes the process already holds). */
int bufmem_reserve(struct bufmem *m, size_t n, size_t limit, int force);

/* Give n reserved bytes back. */
void bufmem_release(struct bufmem *m, size_t n);

/* Bytes reserved now. */
size_t bufmem_used(struct bufmem *m);

/* Main thread, periodically: return freed memory to the kernel when at least
 * BUFMEM_TRIM_STEP bytes were released since the last time. 1 when it trimmed. */
int bufmem_tick(struct bufmem *m);

#define BUFMEM_TRIM_STEP (8u << 20)

/* At start, before any thread: let each malloc arena keep up to BUFMEM_KEEP_TOP bytes free
 * at its top (glibc's M_TRIM_THRESHOLD; its default, 128 KiB, gives a worker's freed top
 * back with madvise(MADV_DONTNEED) about once per 64 KiB response relayed, and the pages
 * fault in again on the next one). Not when the user set glibc's own threshold: tunables is
 * getenv("GLIBC_TUNABLES"), trim_env getenv("MALLOC_TRIM_THRESHOLD_"). The threshold set,
 * or 0 when it was left alone. */
size_t bufmem_malloc_setup(const char *tunables, const char *trim_env);

#define BUFMEM_KEEP_TOP (1u << 20)

#endif
