/* listener: creates listening sockets; accepting happens in worker.c via evconnlistener. */
#include <sluice/listener.h>

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define BACKLOG 4096

static int split(const char *spec, char *host, size_t hlen, const char **port)
{
    const char *colon = strrchr(spec, ':');
    snprintf(host, hlen, "0.0.0.0");
    *port = spec;
    if (!colon)
        return 0;
    size_t n = (size_t)(colon - spec);
    if (n >= hlen)
        return -1;
    memcpy(host, spec, n);
    host[n] = '\0';
    if (host[0] == '[' && n > 1 && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
    }
    *port = colon + 1;
    return 0;
}

int listener_port(const char *spec)
{
    const char *colon = strrchr(spec, ':');
    return atoi(colon ? colon + 1 : spec);
}

/* An IPv6 listener takes IPv6 only (as NGINX's ipv6only=on): `listen = 80` beside
 * `listen = [::]:80` is two sockets, not a conflict. 0 or -1. */
static int v6only(int fd, const struct addrinfo *ai)
{
    int one = 1;
    return ai->ai_family != AF_INET6 ? 0
                                     : setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
}

/* Bind without SO_REUSEPORT: fails with EADDRINUSE if anyone listens there. */
static int probe_free(const struct addrinfo *ai)
{
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1, rc = -1;
    if (fd >= 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0 &&
        v6only(fd, ai) == 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0)
        rc = 0;
    int e = errno;
    if (fd >= 0)
        close(fd);
    errno = e;
    return rc;
}

int listener_socket(const char *spec, int first, char *err, size_t errlen)
{
    char host[256];
    const char *port;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    if (split(spec, host, sizeof host, &port) < 0 || getaddrinfo(host, port, &hints, &res) != 0 ||
        !res) {
        snprintf(err, errlen, "listen %s: cannot resolve", spec);
        return -1;
    }
    if (first && probe_free(res) < 0) {
        snprintf(err, errlen, "listen %s: %s (is another instance running?)", spec,
                 strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0 || v6only(fd, res) < 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, BACKLOG) < 0) {
        snprintf(err, errlen, "listen %s: %s", spec, strerror(errno));
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}
