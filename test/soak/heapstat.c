/* heapstat: preloaded into the ASan build of sluice by test/soak/soak.sh. A thread appends
 * one line every SOAK_HEAPSTAT_EVERY seconds (default 10) to SOAK_HEAPSTAT_FILE:
 *
 *     UNIX_TIME  LIVE_BYTES  HEAP_BYTES
 *
 * LIVE_BYTES is what sluice (and the libraries it calls: OpenSSL, libevent, hiredis) holds
 * in live allocations now, from ASan's allocator; HEAP_BYTES is what the allocator has
 * mapped (live + quarantine + free lists). Under ASan, RSS follows HEAP_BYTES, which creeps
 * with the allocator's fragmentation even when nothing is retained; LIVE_BYTES is what a
 * retention (a leak of still-referenced memory) makes grow.
 *
 * Built by soak.sh: cc -shared -fPIC -O1 -o heapstat.so heapstat.c -lasan -lpthread
 * Loaded with LD_PRELOAD="<libasan.so> heapstat.so" (the ASan runtime must come first).
 * Without SOAK_HEAPSTAT_FILE in the environment it does nothing. SOAK_HEAPSTAT_PROFILE=1
 * also prints ASan's heap profile (live bytes by allocation stack) to stderr each time:
 * compare the first and the last to see what a growing live heap holds. */
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

size_t __sanitizer_get_current_allocated_bytes(void);
size_t __sanitizer_get_heap_size(void);
void __sanitizer_print_memory_profile(size_t top_percent, size_t max_contexts);

static const char *path;
static unsigned every = 10;
static int profile; /* SOAK_HEAPSTAT_PROFILE=1: ASan's heap profile to stderr at each sample */

static void *run(void *arg)
{
    (void)arg;
    for (;;) {
        FILE *f = fopen(path, "a");
        if (f) {
            fprintf(f, "%ld\t%zu\t%zu\n", (long)time(NULL),
                    __sanitizer_get_current_allocated_bytes(), __sanitizer_get_heap_size());
            fclose(f);
        }
        if (profile) {
            fprintf(stderr, "heapstat: profile at %ld\n", (long)time(NULL));
            __sanitizer_print_memory_profile(95, 25);
        }
        sleep(every);
    }
    return NULL;
}

__attribute__((constructor)) static void heapstat_start(void)
{
    path = getenv("SOAK_HEAPSTAT_FILE");
    if (!path || !*path)
        return;
    const char *e = getenv("SOAK_HEAPSTAT_EVERY");
    if (e && atoi(e) > 0)
        every = (unsigned)atoi(e);
    const char *pr = getenv("SOAK_HEAPSTAT_PROFILE");
    profile = pr && *pr == '1';
    pthread_t t;
    if (pthread_create(&t, NULL, run, NULL) == 0)
        pthread_detach(t);
}
