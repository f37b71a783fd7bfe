/* main: command line, start-up, signals (reload, stop, log reopen) and shutdown. The work
 * happens in worker threads; this thread only loads configurations and waits for signals. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include <sluice/admin.h>
#include <sluice/autoscale.h>
#include <sluice/cluster.h>
#include <sluice/health.h>
#include <sluice/log.h>
#include <sluice/meter.h>
#include <sluice/runtime.h>
#include <sluice/version.h>
#include <sluice/worker.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: sluice [-t] -c FILE | sluice -c FILE -s reload|stop\n"
               "       sluice --from-nginx [-o OUT] [--workers N|auto] NGINX_CONF\n"
               "  -c FILE    configuration file (INI; see docs/configuration.md)\n"
               "  -t         check the configuration and exit (0 ok, 1 with file:line: errors)\n"
               "  -s SIGNAL  send reload (SIGHUP) or stop (SIGTERM) to the instance whose\n"
               "             pid_file the configuration names\n"
               "  -v         print the version\n"
               "  --from-nginx  write a sluice.ini for an nginx.conf (contrib/nginx2sluice.py;\n"
               "             every line it cannot map becomes a note)\n");
}

/* Wait (briefly) until every worker has adopted generation gen. */
static void wait_adopted(struct proxy *px, unsigned gen)
{
    for (int tries = 0; tries < 2000; tries++) {
        int all = 1;
        for (int i = 0; i < px->nworkers; i++)
            all &= atomic_load(&px->workers[i].adopted) >= gen;
        if (all)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    log_warn("main", "a worker has not adopted generation %u after 2s", gen);
}

static int same_threads(const struct runtime *a, const struct runtime *b)
{
    return a->cfg->proxy.threads == b->cfg->proxy.threads;
}

/* SIGHUP: a new generation, or the old one keeps serving and the failure is counted. */
static struct health *checker; /* the main thread's; NULL until run() starts it */
static struct cluster *heartbeat; /* the main thread's; NULL without memory */
static struct admin *admin;       /* the main thread's admin listener */

static void reload(struct proxy *px)
{
    char err[1024];
    struct runtime *old = atomic_load(&px->rt);
    struct runtime *next = runtime_load(px->config_path, old, err, sizeof err);
    if (!next) {
        atomic_fetch_add(&px->reload_failures, 1);
        log_error("main", "reload failed, still serving generation %u: %s", old->generation, err);
        return;
    }
    if (!same_threads(old, next))
        log_warn("main", "reload: [proxy] threads changes only on restart; keeping %d threads",
                 px->nworkers);
    for (int i = 0; i < px->nworkers; i++)
        if (worker_prepare(&px->workers[i], next, err, sizeof err) < 0) {
            for (int k = 0; k < i; k++)
                worker_unprepare(&px->workers[k]);
            atomic_fetch_add(&px->reload_failures, 1);
            log_error("main", "reload failed, still serving generation %u: %s", old->generation,
                      err);
            runtime_unref(next);
            return;
        }
    atomic_store(&px->rt, next);
    for (int i = 0; i < px->nworkers; i++)
        worker_reload(&px->workers[i]);
    wait_adopted(px, next->generation);
    health_set(checker, next);
    cluster_set(heartbeat, next);
    admin_set(admin, next);
    meter_attach(px->meter, next);
    autoscale_set(px->scaler, next);
    queue_configure(&px->queue, next->cfg->queue_target_ms, next->cfg->queue_interval_ms);
    runtime_unref(old);
    atomic_fetch_add(&px->reloads, 1);
    log_info("main", "reloaded generation=%u backends=%d", next->generation, next->up.n);
}

/* Every second: return memory freed by request bodies to the kernel (bufmem.h). */
static void on_trim(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct proxy *px = arg;
    size_t used = bufmem_used(&px->bufmem);
    if (bufmem_tick(&px->bufmem))
        log_debug("main", "returned freed body memory to the kernel (%zu bytes still held)",
                  used);
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
        reload(px);
        return;
    }
    log_info("main", "signal %d: stopping, draining in-flight requests (grace %ums)", (int)sig,
             atomic_load(&px->rt)->cfg->proxy.shutdown_grace_ms);
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
    char line[1536];
    size_t n = 0;
    for (int id = 0; id < STAT_MAX && n < sizeof line; id++) {
        uint64_t v = stats_sum(&px->workers[0].stats, px->nworkers, sizeof(struct worker), id);
        int m = snprintf(line + n, sizeof line - n, "%s%s=%llu", n ? " " : "", stats_name(id),
                         (unsigned long long)v);
        if (m > 0)
            n += (size_t)m;
    }
    log_info("stats", "%s reloads=%llu reload_failures=%llu access_log_lost=%llu", line,
             (unsigned long long)atomic_load(&px->reloads),
             (unsigned long long)atomic_load(&px->reload_failures),
             (unsigned long long)log_access_lost());
    const struct admit *a = &atomic_load(&px->rt)->admit;
    for (int i = 0; i < a->n; i++) {
        const struct tenant_state *st = a->t[i].st;
        char rej[256];
        size_t k = 0;
        for (int r = 0; r < REJ_MAX; r++) {
            int m = snprintf(rej + k, sizeof rej - k, " rejected_%s=%llu", admit_reason_name(r),
                             (unsigned long long)atomic_load(&st->rejected[r]));
            if (m > 0 && (size_t)m < sizeof rej - k)
                k += (size_t)m;
        }
        for (char *c = rej; *c; c++) /* "tenant-queue" -> tenant_queue, like the totals */
            if (*c == '-')
                *c = '_';
        log_info("stats", "tenant=%s admitted=%llu%s", st->name,
                 (unsigned long long)atomic_load(&st->admitted), rej);
    }
}

/* Every connection is a descriptor: take the hard RLIMIT_NOFILE (at most 2^20) rather than
 * a soft 1024, as HAProxy does; the workers share what it allows (worker_fd_check). */
static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur >= rl.rlim_max)
        return;
    rlim_t want = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (1u << 20) ? (1u << 20)
                                                                           : rl.rlim_max;
    if (want > rl.rlim_cur) {
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
            log_warn("main", "cannot raise RLIMIT_NOFILE to %lu: %s", (unsigned long)want,
                     strerror(errno));
    }
}

static int start_workers(struct proxy *px)
{
    struct runtime *rt = atomic_load(&px->rt);
    char err[512];
    int n = rt->cfg->proxy.threads > 0 ? rt->cfg->proxy.threads
                                       : (int)sysconf(_SC_NPROCESSORS_ONLN);
    px->nworkers = n < 1 ? 1 : n;
    raise_nofile(); /* before the workers take their shares */
    px->workers = calloc((size_t)px->nworkers, sizeof *px->workers);
    px->meter = meter_new(px->nworkers); /* before any worker records into it */
    if (!px->workers || !px->meter || meter_attach(px->meter, rt) < 0)
        return -1;
    for (int i = 0; i < px->nworkers; i++) {
        if (worker_init(&px->workers[i], px, i, err, sizeof err) < 0 ||
            worker_prepare(&px->workers[i], rt, err, sizeof err) < 0) {
            log_error("main", "%s", err);
            fprintf(stderr, "sluice: %s\n", err);
            return -1;
        }
        if (worker_adopt(&px->workers[i]) < 0)
            return -1;
    }
    for (int i = 0; i < px->nworkers; i++)
        if (worker_start(&px->workers[i]) < 0)
            return -1;
    return 0;
}

static int run(struct proxy *px)
{
    struct runtime *rt = atomic_load(&px->rt);
    int rc = 0;
    struct event_base *base = event_base_new();
    if (!base)
        return 1;
    /* signals and the admin listener before the proxy's listeners: once a proxy port
     * accepts, a stop is graceful and the admin port answers (readiness checks look at
     * either) */
    int sigs[] = {SIGTERM, SIGINT, SIGUSR1, SIGHUP};
    struct event *sev[4];
    for (int i = 0; i < 4; i++) {
        sev[i] = evsignal_new(base, sigs[i], on_signal, px);
        evsignal_add(sev[i], NULL);
    }
    /* the pid file before any port accepts: whoever waits for the port may run
     * `sluice -s reload` at once (written after the workers, such a reload found no pid) */
    char *pid_file = rt->cfg->proxy.pid_file ? strdup(rt->cfg->proxy.pid_file) : NULL;
    if (pid_file && write_pid(pid_file) < 0)
        log_warn("main", "cannot write pid_file=%s: %s", pid_file, strerror(errno));
    char err[512];
    admin = admin_new(base, px, rt, err, sizeof err);
    if (!admin || start_workers(px) < 0) {
        if (!admin) {
            log_error("main", "%s", err);
            fprintf(stderr, "sluice: %s\n", err);
        }
        for (int i = 0; px->workers && i < px->nworkers; i++)
            if (px->workers[i].base)
                worker_free(&px->workers[i]);
        admin_free(admin);
        admin = NULL;
        for (int i = 0; i < 4; i++)
            event_free(sev[i]);
        event_base_free(base);
        if (pid_file)
            unlink(pid_file);
        free(pid_file);
        return 1;
    }
    checker = health_new(base);
    health_set(checker, rt);
    heartbeat = cluster_new(base, px);
    cluster_set(heartbeat, rt);
    px->cluster = heartbeat;
    px->scaler = autoscale_new(base, px);
    struct event *trim = event_new(base, -1, EV_PERSIST, on_trim, px);
    struct timeval second = {1, 0};
    if (trim)
        event_add(trim, &second);
    log_info("main", "ready version=%s threads=%d listen=%s backends=%d", SLUICE_VERSION,
             px->nworkers, rt->cfg->proxy.listen.n ? rt->cfg->proxy.listen.v[0]
                                                   : rt->cfg->proxy.tls_listen.v[0],
             rt->up.n);
    while (!atomic_load(&px->stopping))
        event_base_loop(base, EVLOOP_ONCE);
    if (trim)
        event_free(trim);
    health_free(checker);
    checker = NULL;
    autoscale_free(px->scaler);
    px->scaler = NULL;
    px->cluster = NULL;
    cluster_free(heartbeat);
    heartbeat = NULL;
    admin_free(admin);
    admin = NULL;
    for (int i = 0; i < px->nworkers; i++)
        pthread_join(px->workers[i].thread, NULL);
    log_totals(px);
    for (int i = 0; i < 4; i++)
        event_free(sev[i]);
    event_base_free(base);
    for (int i = 0; i < px->nworkers; i++)
        worker_free(&px->workers[i]);
    if (pid_file)
        unlink(pid_file);
    free(pid_file);
    log_info("main", "stopped");
    return rc;
}

/* -s reload|stop: signal the running instance named by the pid_file. Only the config's
 * syntax is needed: a stop must work even when a certificate went missing. */
static int send_signal(const struct config *cfg, const char *what)
{
    int sig = strcmp(what, "reload") == 0 ? SIGHUP : strcmp(what, "stop") == 0 ? SIGTERM : 0;
    const char *pf = cfg->proxy.pid_file;
    if (!sig) {
        fprintf(stderr, "sluice: -s takes reload or stop, not '%s'\n", what);
        return 2;
    }
    if (!pf) {
        fprintf(stderr, "sluice: %s: [proxy] pid_file is not set\n", cfg->path);
        return 1;
    }
    FILE *f = fopen(pf, "r");
    long pid = 0;
    if (!f || fscanf(f, "%ld", &pid) != 1 || pid <= 1) {
        fprintf(stderr, "sluice: cannot read a pid from %s\n", pf);
        if (f)
            fclose(f);
        return 1;
    }
    fclose(f);
    if (kill((pid_t)pid, sig) < 0) {
        fprintf(stderr, "sluice: kill %ld: %s\n", pid, strerror(errno));
        return 1;
    }
    return 0;
}

#ifndef SLUICE_DATADIR
#define SLUICE_DATADIR "/usr/local/share/sluice"
#endif

/* sluice --from-nginx ARGS: run the converter (a Python script: nginx.conf's grammar and
 * its many directives are easier to keep right there). Found through SLUICE_NGINX2SLUICE,
 * ../contrib/ next to a binary in a build tree, or the installed copy. */
static int from_nginx(int argc, char **argv)
{
    char here[4096], path[4200];
    const char *script = getenv("SLUICE_NGINX2SLUICE");
    if (!script || !*script) {
        ssize_t n = readlink("/proc/self/exe", here, sizeof here - 1);
        char *slash = n > 0 ? (here[n] = '\0', strrchr(here, '/')) : NULL;
        if (slash)
            *slash = '\0';
        snprintf(path, sizeof path, "%s/../contrib/nginx2sluice.py", slash ? here : ".");
        if (!slash || access(path, R_OK) != 0)
            snprintf(path, sizeof path, "%s/nginx2sluice.py", SLUICE_DATADIR);
        script = path;
    }
    if (access(script, R_OK) != 0) {
        fprintf(stderr, "sluice: --from-nginx: no converter at %s (%s); set SLUICE_NGINX2SLUICE "
                "to contrib/nginx2sluice.py\n", script, strerror(errno));
        return 2;
    }
    char **args = calloc((size_t)argc + 3, sizeof *args);
    if (!args)
        return 1;
    args[0] = "python3";
    args[1] = (char *)script;
    for (int i = 0; i < argc; i++)
        args[i + 2] = argv[i];
    execv("/usr/bin/python3", args);
    fprintf(stderr, "sluice: --from-nginx: cannot run /usr/bin/python3 %s: %s\n", script,
            strerror(errno));
    free(args);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--from-nginx") == 0)
        return from_nginx(argc - 2, argv + 2);
    const char *path = NULL, *sig = NULL;
    int test_only = 0, opt;
    while ((opt = getopt(argc, argv, "c:s:tvh")) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 's': sig = optarg; break;
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
    px.config_path = path;
    if (sig) {
        struct config *cfg = config_load(path, err, sizeof err);
        if (!cfg) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        int rc = send_signal(cfg, sig);
        config_free(cfg);
        return rc;
    }
    struct runtime *rt = runtime_load(path, NULL, err, sizeof err);
    if (!rt) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    if (test_only) {
        printf("sluice: the configuration file %s syntax is ok\n", path);
        runtime_unref(rt);
        return 0;
    }
    atomic_store(&px.rt, rt);
    queue_init(&px.queue);
    queue_configure(&px.queue, rt->cfg->queue_target_ms, rt->cfg->queue_interval_ms);
    signal(SIGPIPE, SIG_IGN);
    bufmem_malloc_setup(getenv("GLIBC_TUNABLES"), getenv("MALLOC_TRIM_THRESHOLD_"));
    evthread_use_pthreads();
    if (log_open(rt->cfg->proxy.error_log, rt->cfg->proxy.access_log, rt->cfg->proxy.log_level) <
        0)
        return 1;
    int rc = run(&px);
    free(px.workers);
    meter_free(px.meter);
    queue_destroy(&px.queue);
    runtime_unref(atomic_load(&px.rt));
    log_close();
    libevent_global_shutdown();
    return rc;
}
