/* atomics: small lock-free helpers shared by the modules that count slots. */
#ifndef SLUICE_ATOMICS_H
#define SLUICE_ATOMICS_H

#include <stdatomic.h>

/* Increment *v unless that would take it to cap or beyond (cap <= 0: no cap). 1 if it
 * was incremented, 0 if it was at the cap. Exact under any number of threads. */
static inline int atomic_take_below(atomic_int *v, int cap)
{
    int cur = atomic_load_explicit(v, memory_order_relaxed);
    do {
        if (cap > 0 && cur >= cap)
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(v, &cur, cur + 1, memory_order_relaxed,
                                                    memory_order_relaxed));
    return 1;
}

#endif
