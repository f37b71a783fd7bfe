/* json: string escaping for the documents sluice writes (see json.h). */
#include <sluice/json.h>

#include <stdio.h>
#include <string.h>

#include <event2/buffer.h>

/* The escape of c, or NULL when c stands for itself; tmp holds \u00XX forms. */
static const char *escape_of(unsigned char c, char tmp[8])
{
    if (c == '"')
        return "\\\"";
    if (c == '\\')
        return "\\\\";
    if (c >= 0x20)
        return NULL;
    snprintf(tmp, 8, "\\u%04x", c);
    return tmp;
}

void json_escape(char *dst, size_t n, const char *s)
{
    size_t k = 0;
    char tmp[8];
    for (; s && *s && k + 1 < n; s++) {
        const char *e = escape_of((unsigned char)*s, tmp);
        size_t el = e ? strlen(e) : 1;
        if (k + el + 1 > n)
            break;
        memcpy(dst + k, e ? e : s, el);
        k += el;
    }
    if (n)
        dst[k] = '\0';
}

void json_str(struct evbuffer *out, const char *s)
{
    char tmp[8];
    evbuffer_add(out, "\"", 1);
    for (; s && *s; s++) {
        const char *e = escape_of((unsigned char)*s, tmp);
        if (e)
            evbuffer_add(out, e, strlen(e));
        else
            evbuffer_add(out, s, 1);
    }
    evbuffer_add(out, "\"", 1);
}
