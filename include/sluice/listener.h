/* listener: listening sockets. Each worker thread has its own socket per address, bound
 * with SO_REUSEPORT so the kernel spreads connections across threads. */
#ifndef SLUICE_LISTENER_H
#define SLUICE_LISTENER_H

#include <stddef.h>

/* A non-blocking listening socket bound to spec ("host:port", "[v6]:port" or "port").
 * first: this process has no socket on spec yet, so refuse an address another process
 * holds (SO_REUSEPORT would otherwise silently share it with a second instance).
 * Returns the fd, or -1 with err filled. */
int listener_socket(const char *spec, int first, char *err, size_t errlen);

/* The port of a listen spec, 0 if it has none. */
int listener_port(const char *spec);

#endif
