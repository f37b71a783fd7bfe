/* sizer: the sizing model on a thread of its own at the lowest priority (sizer.h). */
#include <sluice/sizer.h>

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define SIZER_NICE 19
/* A job that waited this long at SCHED_IDLE (other work kept every core busy) finishes at
 * nice 19 alone, where the scheduler owes it a share: the figure is never starved. */
#define SIZER_IDLE_MAX_S 10

enum job_state { JOB_NONE = 0, JOB_ASKED, JOB_DONE };

struct sizer {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    _Atomic int stop;              /* set once: the thread ends, a running job is cut short */
    enum job_state state;          /* under lock */
    uint64_t next_id;              /* under lock */
    /* the job: written by sizer_submit while JOB_NONE, read by the thread while JOB_ASKED */
    uint32_t per_s[HIST_WIN_MAX_S];
    struct hist_snap service;
    struct sizing_load load;
    double wait_s, quantile;
    int most, hint;
    struct sizer_result result;    /* written by the thread, read under lock once JOB_DONE */
    struct timespec asked;         /* under lock: when the running job was asked */
    int raised;                    /* under lock: the running job left SCHED_IDLE */
    int idle_max_s;                /* under lock: SIZER_IDLE_MAX_S (tests change it) */
};

static double thread_cpu_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0)
        return 0;
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void sizer_run(const struct sizing_load *l, double wait_s, double quantile, int most,
               int hint, struct sizer_result *r)
{
    double t0 = thread_cpu_ms();
    r->model = sizing_required_near(l, wait_s, quantile, most, hint);
    r->requests = sizing_requests(l);
    r->headroom = r->model > 0 ? sizing_headroom(l) : 0;
    r->cost_ms = thread_cpu_ms() - t0;
}

static void *sizer_main(void *arg)
{
    struct sizer *z = arg;
    /* Linux: a thread's nice is its own; failing leaves it at the proxy's priority. */
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), SIZER_NICE);
    struct sched_param sp = {0};
    pthread_mutex_lock(&z->lock);
    for (;;) {
        while (z->state != JOB_ASKED && !atomic_load(&z->stop))
            pthread_cond_wait(&z->wake, &z->lock);
        if (atomic_load(&z->stop))
            break;
        /* each job at SCHED_IDLE: it runs only when no proxy thread wants its core, and a
         * proxy thread that wakes takes the core back at once (at nice 19 alone it kept
         * the core for its time slice: pinned /small p99 about 1 ms higher); sizer_take
         * raises a job that waits too long */
        z->raised = 0;
        (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &sp);
        pthread_mutex_unlock(&z->lock);
        sizer_run(&z->load, z->wait_s, z->quantile, z->most, z->hint, &z->result);
        pthread_mutex_lock(&z->lock);
        z->state = JOB_DONE;
    }
    pthread_mutex_unlock(&z->lock);
    return NULL;
}

struct sizer *sizer_new(void)
{
    struct sizer *z = calloc(1, sizeof *z);
    if (!z)
        return NULL;
    pthread_mutex_init(&z->lock, NULL);
    pthread_cond_init(&z->wake, NULL);
    z->idle_max_s = SIZER_IDLE_MAX_S;
    /* the thread takes none of the process's signals (HUP, TERM, ...): they are the main
     * loop's. Under TSan a SIGHUP the kernel gave it while it slept in pthread_cond_wait
     * was never handled: a reload lost. Made with them blocked, so it never has them. */
    sigset_t async, old;
    sigemptyset(&async);
    int sigs[] = {SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGPIPE, SIGCHLD, SIGALRM};
    for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++)
        sigaddset(&async, sigs[i]);
    pthread_sigmask(SIG_BLOCK, &async, &old);
    int rc = pthread_create(&z->thread, NULL, sizer_main, z);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_cond_destroy(&z->wake);
        pthread_mutex_destroy(&z->lock);
        free(z);
        return NULL;
    }
    return z;
}

/* The newest HIST_WIN_MAX_S seconds of l into the job. */
static void copy_load(struct sizer *z, const struct sizing_load *l)
{
    int n = l->seconds < HIST_WIN_MAX_S ? l->seconds : HIST_WIN_MAX_S;
    if (n > 0 && l->per_s)
        memcpy(z->per_s, l->per_s + (l->seconds - n), (size_t)n * sizeof *z->per_s);
    if (l->service)
        z->service = *l->service;
    z->load = (struct sizing_load){
        .per_s = n > 0 && l->per_s ? z->per_s : NULL,
        .seconds = n,
        .service = l->service ? &z->service : NULL,
        .headroom = l->headroom,
        .stop = &z->stop,
    };
}

uint64_t sizer_submit(struct sizer *z, const struct sizing_load *l, double wait_s,
                      double quantile, int most, int hint)
{
    pthread_mutex_lock(&z->lock);
    uint64_t id = 0;
    if (z->state == JOB_NONE) {
        copy_load(z, l);
        z->wait_s = wait_s;
        z->quantile = quantile;
        z->most = most;
        z->hint = hint;
        z->result = (struct sizer_result){.id = id = ++z->next_id};
        z->state = JOB_ASKED;
        clock_gettime(CLOCK_MONOTONIC, &z->asked);
        pthread_cond_signal(&z->wake);
    }
    pthread_mutex_unlock(&z->lock);
    return id;
}

/* Under lock: a job still running SIZER_IDLE_MAX_S after it was asked leaves SCHED_IDLE
 * (nice 19 stays). */
static void raise_late_job(struct sizer *z)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    if (z->state != JOB_ASKED || z->raised || now.tv_sec - z->asked.tv_sec < z->idle_max_s)
        return;
    struct sched_param sp = {0};
    (void)pthread_setschedparam(z->thread, SCHED_OTHER, &sp);
    z->raised = 1;
}

int sizer_take(struct sizer *z, struct sizer_result *r)
{
    pthread_mutex_lock(&z->lock);
    int done = z->state == JOB_DONE;
    if (done) {
        *r = z->result;
        z->state = JOB_NONE;
    } else {
        raise_late_job(z);
    }
    pthread_mutex_unlock(&z->lock);
    return done;
}

void sizer_idle_max(struct sizer *z, int seconds)
{
    pthread_mutex_lock(&z->lock);
    z->idle_max_s = seconds;
    pthread_mutex_unlock(&z->lock);
}

void sizer_free(struct sizer *z)
{
    if (!z)
        return;
    pthread_mutex_lock(&z->lock);
    atomic_store(&z->stop, 1);
    pthread_cond_signal(&z->wake);
    pthread_mutex_unlock(&z->lock);
    pthread_join(z->thread, NULL);
    pthread_cond_destroy(&z->wake);
    pthread_mutex_destroy(&z->lock);
    free(z);
}
