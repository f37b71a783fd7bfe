/* main: command line, start-up, signals and shutdown. The work happens in worker threads. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include <sluice/config.h>
#include <sluice/log.h>
#include <sluice/worker.h>

#define SLUICE_VERSION "0.1.0"

static void usage(FILE *f)
{
    fprintf(f, "usage: sluice [-t] -c FILE\n"
               "  -c FILE  configuration file (INI, see sluice.ini(5) and docs/configuration.md)\n"
               "  -t       check the configuration and exit (0 ok, 1 with file:line: errors)\n"
               "  -v       print the version\n");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct proxy *px = arg;
    (void)what;
    if (sig == SIGUSR1) {
        log_info("main", "reopening logs on SIGUSR1");
        if (log_reopen() < 0)
            log_error("main", "reopening logs failed: %s", strerror(errno));
        return;
    }
    if (sig == SIGHUP) {
        log_warn("main", "SIGHUP: configuration reload is not supported yet; nothing changed");
        return;
    }
    log_info("main", "signal %d: stopping, draining in-flight requests (grace %ums)", (int)sig,
             px->cfg->proxy.shutdown_grace_ms);
    atomic_store(&px->stopping, 1);
    for (int i = 0; i < px->nworkers; i++)
        worker_stop(&px->workers[i]);
}

static int write_pid(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "%ld\n", (long)getpid());
    return fclose(f);
}

static void log_totals(struct proxy *px)
{
    char line[1024];
    size_t n = 0;
    for (int id = 0; id < STAT_MAX && n < sizeof line; id++) {
        uint64_t v = stats_sum(&px->workers[0].stats, px->nworkers, sizeof(struct worker), id);
        int m = snprintf(line + n, sizeof line - n, "%s%s=%llu", n ? " " : "", stats_name(id),
                         (unsigned long long)v);
        if (m > 0)
            n += (size_t)m;
    }
    log_info("stats", "%s", line);
}

static int run(struct proxy *px)
{
    struct config *cfg = px->cfg;
    char err[512];
    int n = cfg->proxy.threads > 0 ? cfg->proxy.threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    px->lim.max_head = cfg->proxy.max_header_size;
    px->lim.max_line = cfg->proxy.max_line_size;
    px->lim.max_headers = (size_t)cfg->proxy.max_headers;
    px->workers = calloc((size_t)n, sizeof *px->workers);
    if (!px->workers)
        return 1;
    px->nworkers = n;
    for (int i = 0; i < n; i++)
        if (worker_init(&px->workers[i], px, i, err, sizeof err) < 0) {
            log_error("main", "%s", err);
            fprintf(stderr, "sluice: %s\n", err);
            return 1;
        }
    struct event_base *base = event_base_new();
    int sigs[] = {SIGTERM, SIGINT, SIGUSR1, SIGHUP};
    struct event *sev[4];
    for (int i = 0; i < 4; i++) {
        sev[i] = evsignal_new(base, sigs[i], on_signal, px);
        evsignal_add(sev[i], NULL);
    }
    if (cfg->proxy.pid_file && write_pid(cfg->proxy.pid_file) < 0)
        log_warn("main", "cannot write pid_file=%s: %s", cfg->proxy.pid_file, strerror(errno));
    for (int i = 0; i < n; i++)
        worker_start(&px->workers[i]);
    log_info("main", "ready version=%s threads=%d listen=%s backends=%d", SLUICE_VERSION, n,
             cfg->proxy.listen[0], px->up.n);
    /* The main loop only waits for signals; it ends when every worker has ended. */
    while (!atomic_load(&px->stopping))
        event_base_loop(base, EVLOOP_ONCE);
    for (int i = 0; i < n; i++)
        pthread_join(px->workers[i].thread, NULL);
    log_totals(px);
    for (int i = 0; i < 4; i++)
        event_free(sev[i]);
    event_base_free(base);
    for (int i = 0; i < n; i++)
        worker_free(&px->workers[i]);
    if (cfg->proxy.pid_file)
        unlink(cfg->proxy.pid_file);
    log_info("main", "stopped");
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    int test_only = 0, opt;
    while ((opt = getopt(argc, argv, "c:tvh")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': test_only = 1; break;
        case 'v': printf("sluice %s\n", SLUICE_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    char err[1024];
    struct proxy px;
    memset(&px, 0, sizeof px);
    px.cfg = config_load(path, err, sizeof err);
    if (!px.cfg) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (up_init(&px.up, px.cfg->backends, (int)px.cfg->nbackends, err, sizeof err) < 0) {
        fprintf(stderr, "%s:%d: %s\n", path, px.cfg->backends[0].line, err);
        config_free(px.cfg);
        return 1;
    }
    if (test_only) {
        printf("sluice: the configuration file %s syntax is ok\n", path);
        up_free(&px.up);
        config_free(px.cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    evthread_use_pthreads();
    if (log_open(px.cfg->proxy.error_log, px.cfg->proxy.access_log, px.cfg->proxy.log_level) < 0)
        return 1;
    int rc = run(&px);
    free(px.workers);
    up_free(&px.up);
    config_free(px.cfg);
    log_close();
    libevent_global_shutdown();
    return rc;
}
