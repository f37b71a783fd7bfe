/* uri: request paths normalized for matching (see uri.h). */
#include <sluice/uri.h>

#include <string.h>

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c |= 0x20;
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* RFC 3986 2.3: ALPHA / DIGIT / "-" / "." / "_" / "~" */
static int unreserved(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '.' || c == '_' || c == '~';
}

/* Decode the escapes of unreserved characters of p[0..n) into out; other escapes are kept
 * with upper-case hex. Returns the length written or a negative enum uri_err. */
static long decode(const char *p, size_t n, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '%') {
            out[o++] = p[i];
            continue;
        }
        int hi = i + 2 < n ? hexval((unsigned char)p[i + 1]) : -1;
        int lo = i + 2 < n ? hexval((unsigned char)p[i + 2]) : -1;
        if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
            return URI_BAD_ESCAPE;
        int v = hi * 16 + lo;
        if (v == '/')
            return URI_ENCODED_SLASH;
        if (unreserved(v)) {
            out[o++] = (char)v;
        } else {
            out[o++] = '%';
            out[o++] = hex[hi];
            out[o++] = hex[lo];
        }
        i += 2;
    }
    return (long)o;
}

/* Merge slashes and resolve dot segments of buf[0..n) (which starts with "/") in place
 * (RFC 3986 5.2.4): "/a//b/./c/../d" is "/a/b/d"; a path that ends in "/" or in a dot
 * segment ends in "/". Never longer than n (at least "/"). */
static long resolve(char *buf, size_t n)
{
    size_t o = 0, i = 0; /* output end <= input position: in place is safe */
    int dir = 0;         /* the path ends as a directory */
    while (i < n) {
        while (i < n && buf[i] == '/')
            i++; /* each segment is written after one slash: repeated ones merge */
        if (i >= n) {
            dir = 1;
            break;
        }
        size_t s = i;
        while (i < n && buf[i] != '/')
            i++;
        size_t len = i - s;
        dir = 1;
        if (len == 1 && buf[s] == '.')
            continue;
        if (len == 2 && buf[s] == '.' && buf[s + 1] == '.') {
            if (o == 0)
                return URI_ABOVE_ROOT;
            while (buf[--o] != '/')
                ; /* back to the slash that began the last segment, which goes too */
            continue;
        }
        buf[o++] = '/';
        memmove(buf + o, buf + s, len);
        o += len;
        dir = 0;
    }
    if (o == 0 || dir)
        buf[o++] = '/';
    return (long)o;
}

long uri_normalize_path(const char *target, size_t len, char *out)
{
    if (len == 1 && target[0] == '*') {
        out[0] = '*';
        return 1;
    }
    const char *q = memchr(target, '?', len);
    size_t n = q ? (size_t)(q - target) : len;
    size_t lead = n == 0 || target[0] != '/'; /* absolute-form with an empty path: "/" */
    out[0] = '/';
    long d = decode(target, n, out + lead);
    if (d < 0)
        return d;
    return resolve(out, (size_t)d + lead);
}

int uri_prefix_match(const char *path, size_t len, const char *prefix, size_t plen)
{
    while (plen > 0 && prefix[plen - 1] == '/')
        plen--; /* "/static/" is "/static"; "/" is "" and matches all */
    return len >= plen && memcmp(path, prefix, plen) == 0 && (len == plen || path[plen] == '/');
}

const char *uri_strerror(long err)
{
    switch (err) {
    case URI_BAD_ESCAPE: return "a malformed percent-escape (or %00) in the path";
    case URI_ENCODED_SLASH: return "an encoded slash (%2F) in the path";
    case URI_ABOVE_ROOT: return "a \"..\" segment that climbs above the root";
    default: return "a bad path";
    }
}
