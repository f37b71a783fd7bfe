/* tls: server-side OpenSSL contexts. One SSL_CTX per certificate; the first is the default
 * and its servername callback switches a handshake to the certificate whose names match
 * (X509_check_host, so wildcards work as browsers expect). */
#include <sluice/tls.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include <sluice/config.h>

struct tls_cert {
    SSL_CTX *ctx; /* owned */
    X509 *x509;   /* borrowed from ctx */
};

struct tls_ctx {
    struct tls_cert *certs; /* owned; [0] is the default */
    size_t n;
};

static const unsigned char sid_ctx[] = "sluice";

static void ssl_reason(char *buf, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    snprintf(buf, len, "%s", r ? r : "unknown OpenSSL error");
    ERR_clear_error();
}

/* ALPN: h2 first when [proxy] http2 is on (arg non-NULL), then http/1.1; with no overlap
 * the handshake goes on without ALPN (and HTTP/1.1 is spoken). */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char h2[] = "\x02h2\x08http/1.1", h1[] = "\x08http/1.1";
    (void)ssl;
    const unsigned char *ours = arg ? h2 : h1;
    unsigned int len = arg ? sizeof h2 - 1 : sizeof h1 - 1;
    if (SSL_select_next_proto((unsigned char **)out, outlen, ours, len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

static int sni_cb(SSL *ssl, int *alert, void *arg)
{
    struct tls_ctx *t = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)alert;
    if (!name)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 1; i < t->n; i++)
        if (X509_check_host(t->certs[i].x509, name, 0, 0, NULL) == 1) {
            SSL_set_SSL_CTX(ssl, t->certs[i].ctx);
            return SSL_TLSEXT_ERR_OK;
        }
    return SSL_TLSEXT_ERR_OK; /* the default certificate answers unknown names */
}

static int readable(const char *file, char *why, size_t len)
{
    FILE *f = fopen(file, "r");
    if (!f) {
        snprintf(why, len, "cannot open: %s", strerror(errno));
        return 0;
    }
    fclose(f);
    return 1;
}

/* One context for cert i. 0 or -1 with err. */
static int load_cert(struct tls_ctx *t, size_t i, const struct proxy_conf *pc, const char *path,
                     char *err, size_t errlen)
{
    const char *cert = pc->tls_cert.v[i], *key = pc->tls_key.v[i];
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    t->certs[i].ctx = ctx;
    if (!ctx) {
        snprintf(err, errlen, "%s:%d: out of memory", path, pc->tls_cert.line[i]);
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                 SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, pc->http2 ? (void *)ctx : NULL);
    if (SSL_CTX_set_cipher_list(ctx, pc->tls_ciphers) != 1) {
        snprintf(err, errlen, "%s:0: [proxy] tls_ciphers = %s: no usable cipher", path,
                 pc->tls_ciphers);
        return -1;
    }
    if (!readable(cert, why, sizeof why) ||
        (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 &&
         (ssl_reason(why, sizeof why), 1))) {
        snprintf(err, errlen, "%s:%d: [proxy] tls_cert = %s: %s", path, pc->tls_cert.line[i],
                 cert, why);
        return -1;
    }
    if (!readable(key, why, sizeof why) ||
        (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 &&
         (ssl_reason(why, sizeof why), 1))) {
        snprintf(err, errlen, "%s:%d: [proxy] tls_key = %s: cannot load the private key: %s",
                 path, pc->tls_key.line[i], key, why);
        return -1;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "%s:%d: [proxy] tls_key = %s: does not match tls_cert = %s", path,
                 pc->tls_key.line[i], key, cert);
        return -1;
    }
    t->certs[i].x509 = SSL_CTX_get0_certificate(ctx);
    return 0;
}

struct tls_ctx *tls_server_new(const struct proxy_conf *pc, const char *path, char *err,
                               size_t errlen)
{
    struct tls_ctx *t = calloc(1, sizeof *t);
    if (t)
        t->certs = calloc(pc->tls_cert.n ? pc->tls_cert.n : 1, sizeof *t->certs);
    if (!t || !t->certs) {
        free(t);
        snprintf(err, errlen, "%s:0: out of memory", path);
        return NULL;
    }
    t->n = pc->tls_cert.n;
    for (size_t i = 0; i < t->n; i++)
        if (load_cert(t, i, pc, path, err, errlen) < 0) {
            tls_server_free(t);
            return NULL;
        }
    SSL_CTX_set_tlsext_servername_callback(t->certs[0].ctx, sni_cb);
    SSL_CTX_set_tlsext_servername_arg(t->certs[0].ctx, t);
    return t;
}

void tls_server_free(struct tls_ctx *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n; i++)
        SSL_CTX_free(t->certs[i].ctx);
    free(t->certs);
    free(t);
}

SSL *tls_server_ssl(struct tls_ctx *t)
{
    return SSL_new(t->certs[0].ctx);
}

SSL_CTX *tls_client_ctx(const char *ca, int verify, char *err, size_t errlen)
{
    char why[256];
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (verify) {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
        int ok = ca ? (readable(ca, why, sizeof why) &&
                       SSL_CTX_load_verify_locations(ctx, ca, NULL) == 1)
                    : SSL_CTX_set_default_verify_paths(ctx) == 1;
        if (!ok) {
            if (ca && strncmp(why, "cannot open", 11) != 0)
                ssl_reason(why, sizeof why);
            snprintf(err, errlen, "tls_ca = %s: %s", ca ? ca : "(system)", ca ? why : "cannot load");
            SSL_CTX_free(ctx);
            return NULL;
        }
    }
    return ctx;
}

SSL *tls_client_ssl(SSL_CTX *ctx, const char *name)
{
    SSL *ssl = SSL_new(ctx);
    if (!ssl)
        return NULL;
    unsigned char ip[16];
    int is_ip = inet_pton(AF_INET, name, ip) == 1 || inet_pton(AF_INET6, name, ip) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(ssl, name); /* SNI carries names only (RFC 6066 3) */
    if (SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_PEER) {
        if (is_ip)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
        else
            SSL_set1_host(ssl, name);
    }
    return ssl;
}
