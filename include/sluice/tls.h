/* tls: OpenSSL server contexts for the HTTPS listeners: TLS 1.2 and 1.3 only, a forward-
 * secret AEAD cipher list, ALPN http/1.1, several certificates chosen by SNI, session
 * resumption (cache and tickets). It does no I/O: bufferevent_openssl does. */
#ifndef SLUICE_TLS_H
#define SLUICE_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct proxy_conf;
struct tls_ctx;

/* Build the contexts from tls_cert/tls_key (pairs, first = default). On error NULL with
 * "file:line: [proxy] tls_key = ...: reason" in err. */
struct tls_ctx *tls_server_new(const struct proxy_conf *pc, const char *path, char *err,
                               size_t errlen);

/* Free the contexts (SSL objects made from them hold their own references). */
void tls_server_free(struct tls_ctx *t);

/* A new server-side SSL for an accepted connection, NULL when out of memory. */
SSL *tls_server_ssl(struct tls_ctx *t);

/* A client context for TLS to a backend: TLS 1.2+, verifying against ca (PEM file; NULL =
 * the system's store) unless verify is 0. NULL with err filled. */
SSL_CTX *tls_client_ctx(const char *ca, int verify, char *err, size_t errlen);

/* A client SSL for one connection: SNI and (when verifying) the expected host name. */
SSL *tls_client_ssl(SSL_CTX *ctx, const char *name);

#endif
