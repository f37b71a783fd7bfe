/* config: loads an INI file (inih) into an immutable struct config, validating every key
 * with `file:line: what is wrong` errors. It does not open sockets or start anything. */
#ifndef SLUICE_CONFIG_H
#define SLUICE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <sluice/scale.h>

#define CONFIG_MAX_LISTEN 16
#define CONFIG_MAX_LIST 16

/* A key that may repeat; each value remembers its line for later error messages. */
struct strlist {
    char *v[CONFIG_MAX_LIST]; /* owned */
    int line[CONFIG_MAX_LIST];
    size_t n;
};

/* One [backend NAME] section. */
struct backend_conf {
    char *name;                  /* owned */
    char *address;               /* owned: "host:port" */
    int weight;                  /* [1] 1..1000 */
    int workers;                 /* [0] = no cap; N = at most N in flight; -1 = auto */
    int workers_min;             /* [1] workers = auto: the learned limit's bounds */
    int workers_max;             /* [64] */
    int max_fails;               /* [1] 0 disables passive health */
    uint32_t fail_timeout_ms;    /* [10s] */
    uint32_t connect_timeout_ms; /* [5s] */
    uint32_t read_timeout_ms;    /* [60s] time to wait for response bytes */
    int keepalive;               /* [auto: -1] idle upstream connections kept per thread */
    uint32_t idle_timeout_ms;    /* [1s] an idle pooled connection is closed after this */
    char *health_check;          /* owned: path for active checks; NULL = none */
    uint32_t health_interval_ms; /* [5s] */
    uint32_t health_timeout_ms;  /* [2s] */
    int rise;                    /* [2] passes that bring a down backend back */
    int fall;                    /* [3] failures that take it out */
    int health_status;           /* [200] the status a pass must have */
    uint32_t slow_start_ms;      /* [0] weight ramps from ~0 to weight over this after recovery */
    int drain;                   /* [no] no new requests; in-flight ones finish */
    int tls;                     /* [no] speak TLS to the backend */
    int tls_verify;              /* [yes] verify its certificate and name */
    char *tls_ca;                /* owned: CA bundle (PEM); NULL = the system's */
    char *tls_name;              /* owned: SNI and the name verified; NULL = address host */
    int line;                    /* where the section starts */
};

/* The [proxy] section. */
struct proxy_conf {
    struct strlist listen;           /* plain HTTP listeners */
    struct strlist tls_listen;       /* HTTPS listeners */
    struct strlist tls_cert;         /* PEM chains; the first is the default, others by SNI */
    struct strlist tls_key;          /* PEM keys, paired with tls_cert in order */
    char *tls_ciphers;               /* owned: TLS 1.2 cipher list */
    int redirect_http;               /* [no] answer plain HTTP with 308 to https */
    int http2;                       /* [yes] offer HTTP/2 over TLS (ALPN h2) */
    int h2c;                         /* [no] HTTP/2 with prior knowledge on plain listeners */
    int http2_max_streams;           /* [100] concurrent streams per HTTP/2 connection */
    int threads;                     /* [auto] 0 = number of cores */
    char *access_log;                /* owned, NULL = none; "-" or "stdout" = stdout */
    char *error_log;                 /* owned, NULL = stderr */
    char *pid_file;                  /* owned, NULL = none */
    uint32_t client_header_timeout_ms; /* [10s] -> 408 */
    uint32_t client_body_timeout_ms;   /* [60s] -> 408 */
    uint32_t keepalive_timeout_ms;     /* [75s] idle client connection closed quietly */
    uint32_t send_timeout_ms;          /* [60s] client not reading the response */
    uint32_t shutdown_grace_ms;        /* [30s] SIGTERM drain limit */
    size_t max_header_size;            /* [16k] -> 431 */
    size_t max_line_size;              /* [8k] -> 414 */
    int max_headers;                   /* [100] -> 431 */
    uint64_t max_body_size;            /* [1g] -> 413; 0 = unlimited */
    size_t request_buffer;             /* [1m] body read before a backend is chosen; 0 = none */
    size_t buffer_memory;              /* [128m] all such bodies together, whole process */
    int retries;                       /* [1] connect-failure retries on another backend */
    int log_level;                     /* [info] 0 error, 1 warn, 2 info, 3 debug */
};

/* [tenants]: how a request's tenant is found. */
enum tenant_key { TK_NONE = 0, TK_HEADER, TK_HOST, TK_COOKIE, TK_IP, TK_PATH_PREFIX };

struct tenants_conf {
    enum tenant_key key;         /* [none]: every request is tenant `default` */
    char *key_name;              /* owned: header or cookie name */
    int prefix_segments;         /* path_prefix:N */
    int max_tracked;             /* [10000] unnamed keys with their own limiter; 0 = none */
    char *hmac_key;              /* owned: when set, a key counts only as NAME.HEXSIG with
                                  * HEXSIG = hex HMAC-SHA256(hmac_key, NAME) */
    int hmac_line;
};

/* One [tenant NAME] section; `default` holds for unknown keys. */
struct tenant_conf {
    char *name;                  /* owned */
    double rate;                 /* [0] requests per second; 0 = no rate limit */
    int burst;                   /* [1] requests allowed at once (GCRA bucket) */
    int weight;                  /* [1] share of freed backend slots when requests queue */
    int max_inflight;            /* [0] its requests at backends at once; 0 = no cap */
    int max_queue;               /* [0] its requests waiting at once; 0 = only [queue] max */
    int line;
};

/* One [route NAME] section: a class of requests by path prefix. */
struct route_conf {
    char *name;                  /* owned */
    char *prefix;                /* owned: matches targets starting with it (longest wins) */
    int bypass;                  /* [no] skip tenant limits, backend slots and the queue */
    int max_inflight;            /* [0] its requests at backends at once, all tenants */
    int line;
};

/* [redis]: shared tenant limits for several sluice instances. */
enum redis_failure { RF_LOCAL = 0, RF_OPEN, RF_CLOSED };

struct redis_conf {
    char *url;                   /* owned: redis://[:PASSWORD@]HOST:PORT[/DB]; NULL = off */
    int url_line;
    char *host;                  /* owned, parsed from url */
    int port;
    int db;
    char *password;              /* owned, NULL = none */
    uint32_t timeout_ms;         /* [50ms] a call not answered by then: on_failure applies */
    int on_failure;              /* [local] enum redis_failure */
    char *prefix;                /* owned: [sluice:] key prefix */
};

/* [admin]: the status page, /status.json, /metrics and actions. */
struct admin_conf {
    char *listen;                /* owned: "port" or "host:port" (host 127.0.0.1); NULL = off */
    char *token;                 /* owned: needed for actions, and for a non-loopback listen */
    char *hosts;                 /* owned: more Host names that may read without the token
                                  * (space or comma separated); NULL = loopback names only */
    int line;                    /* of listen */
};

/* [scale]: the sizing rules (scale.h) and where decisions go. */
struct scale_section {
    struct scale_conf c;          /* the arithmetic and the rules, keys of the same names */
    uint32_t window_ms;           /* [1m] lambda and Wq are measured over 10s, 1m or 5m */
    char *on_scale;               /* owned: exec hook run on each decision; NULL = none */
    uint32_t on_scale_timeout_ms; /* [30s] the hook is killed after this */
    char *webhook;                /* owned: http://host:port/path POSTed JSON; NULL = none */
    uint32_t webhook_timeout_ms;  /* [5s] per attempt */
    char *gunicorn_pidfile;       /* owned: the Gunicorn master to send TTIN/TTOU; NULL = none */
    char *gunicorn_backend;       /* owned: the [backend] that master serves: its capacity
                                   * follows the workers seen; NULL = none */
    int redis_publish;            /* [no] SET + PUBLISH decisions through [redis] */
    int shared_backends;          /* [yes] instances front the same backends: the cluster's
                                   * supply is the largest one reported, not the sum */
    int line;                     /* the [scale] header (errors about the rules as a whole) */
    int key_line[32];             /* line of each key, by its place in config.c's table */
};

struct config {
    char *path;                   /* owned */
    struct proxy_conf proxy;
    struct backend_conf *backends; /* owned array */
    size_t nbackends;
    struct tenants_conf tenants;
    int queue_max;                /* [queue] max [1000] waiting requests, all tenants */
    uint32_t queue_timeout_ms;    /* [queue] timeout [10s] -> 503 */
    uint32_t queue_target_ms;     /* [queue] target [auto = UINT32_MAX; off = 0]: sojourn */
    uint32_t queue_interval_ms;   /* [queue] interval [auto]: above target this long: stands */
    struct redis_conf redis;
    struct admin_conf admin;
    struct scale_section scale;
    struct tenant_conf *tenant;   /* owned array; includes `default` (added if absent) */
    size_t ntenants;
    struct route_conf *routes;    /* owned array */
    size_t nroutes;
};

/* Load and validate `path`. On error returns NULL and writes "file:line: message" to err. */
struct config *config_load(const char *path, char *err, size_t errlen);

/* Free a config from config_load. */
void config_free(struct config *cfg);

/* Parse "250ms", "10s", "2m", "1h" or a bare number of seconds into ms. 0 ok, -1 bad. */
int config_parse_duration(const char *s, uint32_t *ms);

/* Parse "512", "16k", "64m", "1g" into bytes. 0 ok, -1 bad. */
int config_parse_size(const char *s, uint64_t *bytes);

/* keepalive = auto keeps at least this many idle connections per thread (worker.c) */
#define KEEPALIVE_AUTO_MIN 32

#endif
