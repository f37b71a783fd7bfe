/* stats: names and help of the counters, and summing per-thread shards. */
#include <sluice/stats.h>

#include <stddef.h>

static const char *const names[] = {
#define STAT_NAME(name, help) #name,
    STATS_COUNTERS(STAT_NAME)
#undef STAT_NAME
};

static const char *const helps[] = {
#define STAT_HELP(name, help) help,
    STATS_COUNTERS(STAT_HELP)
#undef STAT_HELP
};

const char *stats_name(enum stat_id id)
{
    return names[id];
}

const char *stats_help(enum stat_id id)
{
    return helps[id];
}

uint64_t stats_sum(const struct stats *shards, int n, size_t stride, enum stat_id id)
{
    uint64_t sum = 0;
    const char *p = (const char *)shards;
    for (int i = 0; i < n; i++, p += stride)
        sum += atomic_load_explicit(&((const struct stats *)p)->c[id], memory_order_relaxed);
    return sum;
}
