/* uri: the path of a request target as sluice decides on it (routes, bypass, caps,
 * path_prefix tenant keys), normalized the way the application behind reads it, so that
 * how a path is written cannot move a request out of its route (RFC 3986 6.2.2):
 * percent-encoded unreserved characters decoded (other escapes kept, hex upper-cased),
 * repeated slashes merged, "." and ".." segments resolved. Refused (the caller answers
 * 400): an encoded "/" (%2F: WSGI servers decode it into PATH_INFO, where it would be a
 * separator sluice did not see), an encoded NUL, a malformed escape, and a ".." that
 * would climb above the root. What is forwarded is the target as the client sent it. */
#ifndef SLUICE_URI_H
#define SLUICE_URI_H

#include <stddef.h>

enum uri_err {
    URI_BAD_ESCAPE = -1,    /* "%" not followed by two hex digits, or %00 */
    URI_ENCODED_SLASH = -2, /* %2F */
    URI_ABOVE_ROOT = -3,    /* ".." past the first segment */
};

/* The normalized path of target[0..len) (origin-form, up to its "?"; "" is "/", "*" stays
 * "*") into out, which needs len + 1 bytes (it is never longer than the target, plus one
 * when the target is empty). Returns its length, or a negative enum uri_err. */
long uri_normalize_path(const char *target, size_t len, char *out);

/* Whether normalized path[0..len) is under prefix[0..plen) by whole segments: "/health"
 * matches "/health" and "/health/x", not "/healthX"; "/" matches every path. A trailing
 * "/" in the prefix is ignored ("/static/" is "/static"). */
int uri_prefix_match(const char *path, size_t len, const char *prefix, size_t plen);

/* What an error means, for an answer or a config message. */
const char *uri_strerror(long err);

#endif
