/* json: the little JSON writing sluice needs (status documents, webhook bodies): strings
 * escaped per RFC 8259 section 7. No parser. */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

#include <stddef.h>

struct evbuffer;

/* Append s as a JSON string (quoted, escaped); NULL as "". */
void json_str(struct evbuffer *out, const char *s);

/* s escaped for use between quotes into dst (cut to fit, always terminated). */
void json_escape(char *dst, size_t n, const char *s);

#endif
