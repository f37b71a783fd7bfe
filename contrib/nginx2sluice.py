#!/usr/bin/python3
"""nginx2sluice: convert the NGINX configuration in front of a Gunicorn pool into a sluice.ini.

    /usr/bin/python3 contrib/nginx2sluice.py [-o sluice.ini] [--workers N|auto] nginx.conf

It reads nginx.conf syntax (directives, blocks, quoted strings, comments, `include` with
globs, followed), picks the first `server` block that proxies to an upstream and writes:
[proxy] (listen, tls_listen, certificates, timeouts, limits, logs), one [backend NAME] per
upstream `server`, [tenants] / [tenant default] from `limit_req_zone` + `limit_req` (and
`limit_conn`), [route NAME] for other prefix locations of the same upstream and for
`return 200` health endpoints, [queue] and [admin] where NGINX Plus or `stub_status` ask for
them. Every directive it could not map becomes a comment in the output,

    ; nginx.conf:LINE: <directive>: not converted: <why>

and stderr gets `converted N directives, M not converted`. The output passes `sluice -t`
(when the backends' host names resolve) and is the same for the same input.

Exit status: 0 a configuration was written; 1 the input cannot be read or parsed (the
message names file:line), or it has no server that proxies anywhere; 2 usage error.
Standard library only. docs/migrating-from-nginx.md explains the mapping."""
import argparse
import glob
import ipaddress
import os
import re
import sys

PROG = "nginx2sluice"
WRAP = 100          # comment lines are wrapped here
MAX_LINE = 198      # sluice (inih) refuses longer lines

# ---------------------------------------------------------------- sluice's keys
# Types and bounds as src/config.c declares them (test_nginx2sluice.py checks they agree).
# (type, min, max): dur in ms, size in bytes.
SLUICE_KEYS = {
    "proxy": {
        "listen": ("list",), "tls_listen": ("list",), "tls_cert": ("list",),
        "tls_key": ("list",), "tls_ciphers": ("str",), "redirect_http": ("bool",),
        "http2": ("bool",), "h2c": ("bool",), "http2_max_streams": ("int", 1, 1000),
        "threads": ("threads", 1, 256), "access_log": ("str",), "error_log": ("str",),
        "pid_file": ("str",),
        "client_header_timeout": ("dur", 1, 3600000),
        "client_body_timeout": ("dur", 1, 3600000),
        "keepalive_timeout": ("dur", 0, 3600000),
        "send_timeout": ("dur", 1, 3600000),
        "shutdown_grace": ("dur", 0, 3600000),
        "max_header_size": ("size", 1024, 1 << 20),
        "max_line_size": ("size", 256, 1 << 20),
        "max_headers": ("int", 1, 1000),
        "max_body_size": ("size", 0, 1 << 50),
        "request_buffer": ("size", 0, 1 << 30),
        "buffer_memory": ("size", 1 << 20, 1 << 40),
        "retries": ("int", 0, 5),
        "log_level": ("level",),
    },
    "backend": {
        "address": ("str",), "weight": ("int", 1, 1000), "workers": ("workers", 0, 100000),
        "workers_min": ("int", 1, 100000), "workers_max": ("int", 1, 100000),
        "max_fails": ("int", 0, 1000), "fail_timeout": ("dur", 0, 3600000),
        "connect_timeout": ("dur", 1, 600000), "read_timeout": ("dur", 1, 3600000),
        "keepalive": ("autoint", 0, 10000), "idle_timeout": ("dur", 1, 3600000),
        "health_check": ("str",), "health_interval": ("dur", 100, 3600000),
        "health_timeout": ("dur", 10, 600000), "rise": ("int", 1, 100),
        "fall": ("int", 1, 100), "health_status": ("int", 100, 599),
        "slow_start": ("dur", 0, 3600000), "drain": ("bool",), "tls": ("bool",),
        "tls_verify": ("bool",), "tls_ca": ("str",), "tls_name": ("str",),
    },
    "tenant": {
        "rate": ("double", 0, 1000000), "burst": ("int", 1, 1000000),
        "weight": ("int", 1, 1000), "max_inflight": ("int", 0, 1000000),
        "max_queue": ("int", 0, 1000000),
    },
    "route": {"prefix": ("str",), "bypass": ("bool",), "max_inflight": ("int", 0, 1000000)},
    "queue": {"max": ("int", 0, 1000000), "timeout": ("dur", 1, 3600000),
              "target": ("autodur", 0, 600000), "interval": ("autodur", 10, 600000)},
    "tenants": {"key": ("str",), "max_tracked": ("int", 0, 1000000), "hmac_key": ("str",)},
    "admin": {"listen": ("str",), "token": ("str",), "hosts": ("str",)},
}

SLUICE_DEFAULT_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")


# ---------------------------------------------------------------- errors

class ParseError(Exception):
    def __init__(self, path, line, msg):
        Exception.__init__(self, ("%s:%d: %s" % (path, line, msg)) if line else
                           "%s: %s" % (path, msg))


class ConvertError(Exception):
    pass


# ---------------------------------------------------------------- tokenizer and parser

class Node:
    """One directive: name, args, where it is, and its block (None for a simple one)."""
    order = 0

    def __init__(self, name, args, file, line, children=None, end_line=None):
        self.name = name
        self.args = args
        self.file = file            # shown name (relative to the main file's directory)
        self.line = line
        self.children = children
        self.end_line = end_line
        self.parent = None
        Node.order += 1
        self.idx = Node.order

    @property
    def is_block(self):
        return self.children is not None

    def text(self, limit=70):
        parts = [self.name] + [quote(a) for a in self.args]
        s = " ".join(parts)
        if self.is_block:
            s += " { ... }"
        s = s.replace("\n", "\\n").replace("\t", " ")
        if len(s) > limit:
            s = s[:limit - 3] + "..."
        return s

    def where(self):
        return "%s:%d" % (self.file, self.line)

    def child(self, name):
        for c in self.children or ():
            if c.name == name:
                return c
        return None

    def all(self, name):
        return [c for c in (self.children or ()) if c.name == name]

    def __repr__(self):
        return "<%s %s:%d>" % (self.name, self.file, self.line)


def quote(a):
    if a == "" or re.search(r"[\s;{}#\"']", a):
        return '"%s"' % a.replace("\\", "\\\\").replace('"', '\\"')
    return a


def tokenize(text, path):
    """Yield (kind, value, line): kind is 'word' (value str), ';', '{' or '}'.
    Follows ngx_conf_read_token: '#' starts a comment only where a token could start,
    quotes are stripped with \\" \\' \\\\ \\t \\r \\n unescaped, ${var} does not open a block."""
    i, n, line = 0, len(text), 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
            continue
        if ch in " \t\r":
            i += 1
            continue
        if ch == "#":
            while i < n and text[i] != "\n":
                i += 1
            continue
        if ch in ";{}":
            yield ch, ch, line
            i += 1
            continue
        start_line = line
        if ch in "\"'":
            q = ch
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise ParseError(path, start_line, "unterminated %s-quoted string" %
                                     ("double" if q == '"' else "single"))
                c = text[i]
                if c == "\\" and i + 1 < n:
                    nx = text[i + 1]
                    buf.append({"t": "\t", "r": "\r", "n": "\n"}.get(nx, nx)
                               if nx in "\"'\\trn" else "\\" + nx)
                    if nx == "\n":
                        line += 1
                    i += 2
                    continue
                if c == q:
                    i += 1
                    break
                if c == "\n":
                    line += 1
                buf.append(c)
                i += 1
            if i < n and text[i] not in " \t\r\n;{})":
                raise ParseError(path, line, 'unexpected "%s" after a quoted string'
                                 % text[i])
            yield "word", "".join(buf), start_line
            continue
        buf = []
        while i < n:
            c = text[i]
            if c == "\\" and i + 1 < n:
                buf.append(c + text[i + 1])
                i += 2
                continue
            if c in " \t\r\n;}":
                break
            if c == "{":
                if buf and buf[-1] == "$":   # ${var}
                    j = text.find("}", i)
                    if j < 0:
                        raise ParseError(path, line, "unterminated ${...} variable")
                    buf.append(text[i:j + 1])
                    i = j + 1
                    continue
                break
            buf.append(c)
            i += 1
        yield "word", "".join(buf), start_line


class Parser:
    def __init__(self, main_path):
        self.main_path = main_path
        self.base = os.path.dirname(os.path.abspath(main_path)) if main_path != "-" else \
            os.getcwd()
        self.warnings = []
        self.missing_includes = []   # (include node, why)

    def shown(self, path):
        if path == "-":
            return "stdin"
        ap = os.path.abspath(path)
        rel = os.path.relpath(ap, self.base)
        return ap if rel.startswith("..") else rel

    def parse_file(self, path, depth=0, opened_as=None):
        shown = self.shown(path)
        errpath = opened_as or path
        try:
            if path == "-":
                text = sys.stdin.read()
            else:
                with open(path, "r", encoding="utf-8", errors="surrogateescape") as f:
                    text = f.read()
        except OSError as e:
            raise ParseError(errpath, 0, "cannot read: %s" % (e.strerror or e))
        toks = tokenize(text, errpath)
        nodes = self.parse_block(toks, errpath, shown, None, depth)
        return nodes

    def parse_block(self, toks, errpath, shown, opener, depth):
        """Directives up to the matching '}' (opener is the block's Node) or end of file."""
        out = []
        words, first_line = [], None
        for kind, val, line in toks:
            if kind == "word":
                if not words:
                    first_line = line
                words.append(val)
                continue
            if kind == ";":
                if not words:
                    raise ParseError(errpath, line, 'unexpected ";"')
                node = Node(words[0], words[1:], shown, first_line)
                words = []
                if node.name == "include":
                    out.extend(self.include(node, errpath, depth))
                else:
                    out.append(node)
                continue
            if kind == "{":
                if not words:
                    raise ParseError(errpath, line, 'unexpected "{"')
                node = Node(words[0], words[1:], shown, first_line, [])
                words = []
                node.children = self.parse_block(toks, errpath, shown, node, depth)
                for c in node.children:
                    c.parent = node
                out.append(node)
                continue
            # '}'
            if words:
                raise ParseError(errpath, first_line, 'the directive "%s" has no ";" '
                                 '(unexpected "}" at line %d)' % (words[0], line))
            if opener is None:
                raise ParseError(errpath, line, 'unexpected "}": no block is open here')
            opener.end_line = line
            return out
        if words:
            raise ParseError(errpath, first_line, 'unexpected end of file: the directive '
                             '"%s" has no ";"' % words[0])
        if opener is not None:
            raise ParseError(errpath, opener.line, 'the "%s" block opened here is not closed '
                             '(unexpected end of file, expecting "}")' % opener.name)
        return out

    def include(self, node, errpath, depth):
        if len(node.args) != 1:
            raise ParseError(errpath, node.line, "include takes one file name or pattern")
        if depth >= 16:
            raise ParseError(errpath, node.line, "includes nested more than 16 deep "
                             "(an include loop?)")
        pat = node.args[0]
        cur_dir = os.path.dirname(os.path.abspath(errpath)) if errpath != "-" else os.getcwd()
        # NGINX resolves a relative path against the main file's directory (its prefix);
        # the including file's own directory is tried next.
        cands = [pat] if os.path.isabs(pat) else [os.path.join(self.base, pat),
                                                  os.path.join(cur_dir, pat)]
        files = []
        for c in cands:
            if glob.has_magic(c):
                files = sorted(glob.glob(c))
            elif os.path.exists(c):
                files = [c]
            if files:
                break
        if not files:
            if not glob.has_magic(pat):
                self.missing_includes.append((node, "no such file (a relative path is "
                                              "looked up next to the main file, as NGINX "
                                              "does)"))
                return [node]       # kept: it gets its own "not converted" note
            return []               # a pattern matching nothing is fine, as in NGINX
        out = []
        for f in files:
            out.extend(self.parse_file(f, depth + 1, f))
        return out


# ---------------------------------------------------------------- values

TIME_UNITS = {"ms": 1, "s": 1000, "m": 60000, "h": 3600000, "d": 86400000,
              "w": 604800000, "M": 2592000000, "y": 31536000000}


def parse_time(s):
    """NGINX time ('30s', '1h 30m', '120' = seconds) -> ms, or None."""
    s = s.strip()
    if re.fullmatch(r"\d+", s):
        return int(s) * 1000
    total, pos = 0, 0
    for m in re.finditer(r"\s*(\d+)(ms|[smhdwMy])?", s):
        if m.start() != pos:
            return None
        total += int(m.group(1)) * TIME_UNITS[m.group(2) or "s"]
        pos = m.end()
    return total if pos == len(s) and pos else None


def fmt_time(ms, original=None):
    """A sluice duration; NGINX's own spelling when sluice reads it the same way."""
    if original is not None:
        m = re.fullmatch(r"(\d+)(ms|s|m|h)?", original.strip())
        if m:
            return m.group(1) + (m.group(2) or "s")
    for unit, mult in (("h", 3600000), ("m", 60000), ("s", 1000)):
        if ms and ms % mult == 0:
            return "%d%s" % (ms // mult, unit)
    return "%dms" % ms


def parse_size(s):
    m = re.fullmatch(r"(\d+)([kKmMgG]?)", s.strip())
    if not m:
        return None
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def fmt_size(b):
    for unit, shift in (("g", 30), ("m", 20), ("k", 10)):
        if b and b % (1 << shift) == 0:
            return "%d%s" % (b >> shift, unit)
    return str(b)


def fmt_num(x):
    s = "%.6g" % x
    return s


def host_port(spec, default_port):
    """'host:port', 'host', '[v6]:port' -> (host, port) or None."""
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\](?::(\d+))?", spec)
    if m:
        return "[%s]" % m.group(1), int(m.group(2) or default_port)
    if spec.count(":") == 1:
        h, p = spec.split(":")
        if not p.isdigit() or not h:
            return None
        return h, int(p)
    if ":" in spec or not spec:
        return None
    return spec, default_port


def is_ip(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def safe_name(s):
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", s).strip("-")
    return s[:63].strip("-") or "x"


def bad_value(v):
    """Why v cannot be a sluice INI value, or None."""
    if not v:
        return "empty value"
    if re.search(r"\s[;#]", v) or "\n" in v or "\r" in v:
        return "the value contains a comment character or a line break"
    if v != v.strip():
        return "the value starts or ends with white space"
    return None


# ---------------------------------------------------------------- outcomes

CONVERTED, PARTLY, BUILTIN, NOPE = "converted", "converted only in part", "built in", \
    "not converted"


class Effect:
    """What one directive does: keys to set (sect, key, value[, comment]), and how it fared."""

    def __init__(self, kind=CONVERTED, why=None, keys=()):
        self.kind = kind
        self.why = why
        self.keys = list(keys)


def conv(*keys, why=None):
    return Effect(PARTLY if why else CONVERTED, why, keys)


def builtin(why):
    return Effect(BUILTIN, why)


def nope(why):
    return Effect(NOPE, why)


class Section:
    def __init__(self, header, kind):
        self.header = header
        self.kind = kind
        self.keys = {}           # key -> [value, [source nodes], [comments]]
        self.lists = {}          # repeatable keys -> [(value, node, comment)]
        self.lead = []           # comment lines under the header

    def set(self, key, value, node=None, comment=None):
        t = SLUICE_KEYS[self.kind][key][0]
        if t == "list":
            self.lists.setdefault(key, []).append((value, node, comment))
            return
        ent = self.keys.get(key)
        if ent is None:
            ent = self.keys[key] = [value, [], []]
        ent[0] = value
        if node is not None and node not in ent[1]:
            ent[1].append(node)
        if comment and comment not in ent[2]:
            ent[2].append(comment)

    def get(self, key):
        ent = self.keys.get(key)
        return ent[0] if ent else None

    def render(self):
        """The section; each key is preceded by the NGINX directives it came from (once
        for a run of keys from the same ones) and by its own remarks."""
        out = ["[%s]" % self.header]
        out += self.lead
        last = None
        for key in SLUICE_KEYS[self.kind]:
            if key in self.lists:
                entries = [(v, [n] if n is not None else [], [c] if c else [])
                           for v, n, c in self.lists[key]]
            elif key in self.keys:
                v, nodes, comments = self.keys[key]
                entries = [(v, sorted(nodes, key=lambda n: n.idx), comments)]
            else:
                continue
            for value, nodes, comments in entries:
                src = [n.idx for n in nodes]
                if nodes and src != last:
                    for node in nodes:
                        out += wrap("; %s: %s" % (node.where(), node.text(80)))
                last = src if nodes else last
                for c in comments:
                    out += wrap(";   (%s)" % c)
                out.append("%s = %s" % (key, value))
        return out


def wrap(text, first_min=0):
    """Comment text (starting with '; ') wrapped at WRAP columns; continuation lines get
    ';   '. The first first_min characters are never broken."""
    words = text.split(" ")
    lines, cur = [], ""
    for w in words:
        if not cur:
            cur = w
        elif len(cur) + 1 + len(w) <= WRAP or len(cur) < first_min:
            cur += " " + w
        else:
            lines.append(cur)
            cur = ";   " + w
    if cur:
        lines.append(cur)
    out = []
    for l in lines:
        while len(l) > MAX_LINE:
            out.append(l[:MAX_LINE])
            l = ";   " + l[MAX_LINE:]
        out.append(l)
    return out


# ---------------------------------------------------------------- the converter

NOT_A_SERVER = ("listen", "server_name", "access_log", "error_log", "return", "location",
                "if", "ssl_certificate", "ssl_certificate_key", "ssl_protocols",
                "ssl_ciphers")
HEALTH_RE = re.compile(r"/(health|healthz|healthcheck|health-check|ping|ready|readyz|live|"
                       r"livez|status)/?$", re.I)
STATIC_RE = re.compile(r"^/(static|assets)(/|$)", re.I)
LOCATION_MODS = ("=", "~", "~*", "^~")


class Converter:
    def __init__(self, nodes, parser, workers=None):
        self.nodes = nodes
        self.parser = parser
        self.workers = workers
        self.outcome = {}        # node -> Effect
        self.decided = {}        # node -> Effect (set before the walk)
        self.proxy = Section("proxy", "proxy")
        self.backends = []       # Sections
        self.tenants = Section("tenants", "tenants")
        self.tenant = Section("tenant default", "tenant")
        self.routes = []
        self.queue = Section("queue", "queue")
        self.admin = Section("admin", "admin")
        self.differs = []        # nginx defaults that sluice does not copy

    # ---- helpers
    def record(self, node, eff):
        if node not in self.outcome:
            self.outcome[node] = eff

    def whole(self, node, eff):
        """One outcome for a block; everything in it is covered by that block's note."""
        self.record(node, eff)
        self._cover(node)

    def _cover(self, node):
        for c in node.children or ():
            self.outcome.setdefault(c, None)
            self._cover(c)

    def apply(self, node, eff):
        """Main scope: set the effect's keys and record the outcome. A value sluice could
        not read back (a comment character, over the line limit) converts nothing."""
        for k in eff.keys:
            why = bad_value(k[2])
            if why is None and len("%s = %s" % (k[1], k[2])) > MAX_LINE:
                why = "the value is longer than one sluice line (%d characters)" % MAX_LINE
            if why:
                self.record(node, nope(why))
                return
        for k in eff.keys:
            sect, key, value = k[0], k[1], k[2]
            comment = k[3] if len(k) > 3 else None
            targets = self.backends if sect == "backend*" else [self.section(sect)]
            for t in targets:
                t.set(key, value, node, comment)
        self.record(node, eff)

    def section(self, name):
        if isinstance(name, Section):
            return name
        return {"proxy": self.proxy, "tenants": self.tenants, "tenant": self.tenant,
                "queue": self.queue, "admin": self.admin}[name]

    def value_of(self, sect, key):
        if sect == "backend*":
            return self.backends[0].get(key) if self.backends else None
        return self.section(sect).get(key)

    # ---- scopes
    def run(self):
        top = self.nodes
        http_blocks = [n for n in top if n.name == "http" and n.is_block]
        for h in http_blocks:
            self.outcome[h] = "transparent"
        self.http = [c for h in http_blocks for c in h.children] if http_blocks else \
            [n for n in top]
        self.main_level = [n for n in top if n.name != "http"] if http_blocks else top
        self.servers = [n for n in self.http if n.name == "server" and n.is_block]
        self.upstreams = {}
        for n in self.http:
            if n.name == "upstream" and n.is_block and n.args:
                self.upstreams.setdefault(n.args[0], n)
        self.pick_main()
        self.chain = [self.http, self.server.children, self.location.children]
        self.make_backends()
        self.listens_and_tls()
        self.limits()
        for inc, why in self.parser.missing_includes:
            self.record(inc, nope(why))
        self.walk()
        self.other_servers()
        self.defaults_that_differ()

    def pick_main(self):
        for srv in self.servers:
            locs = [l for l in srv.all("location") if l.is_block]
            target = [l for l in locs if location_path(l) == "/" and proxy_target(l)]
            target = target or [l for l in locs if proxy_target(l) and
                                location_mod(l) in ("", "^~", "=")]
            for loc in target:
                t = proxy_target(loc)
                if t and "$" not in t["host"]:
                    self.server, self.location, self.target = srv, loc, t
                    return
        raise ConvertError("nothing to convert: no server block has a location that "
                           "proxies (proxy_pass) to an upstream or address")

    # ---- backends
    def make_backends(self):
        t = self.target
        up = self.upstreams.get(t["host"]) if t["port"] is None else None
        self.upstream = up
        servers = []
        if up is not None:
            self.outcome[up] = Effect(CONVERTED)
            for c in up.children:
                if c.name != "server":
                    continue
                if not c.args:
                    self.decided[c] = nope("no address")
                    continue
                if c.args[0].startswith("unix:"):
                    self.decided[c] = nope("sluice connects to backends over TCP only: bind "
                                           "Gunicorn to 127.0.0.1:PORT (-b) and list that")
                    continue
                hp = host_port(c.args[0], 443 if t["scheme"] == "https" else 80)
                if hp is None:
                    self.decided[c] = nope("cannot read the address %s" % c.args[0])
                    continue
                servers.append((c, hp[0], hp[1]))
        else:
            hp = host_port(t["host"] + (":%d" % t["port"] if t["port"] else ""),
                           443 if t["scheme"] == "https" else 80)
            if hp is None:
                raise ConvertError("%s: cannot read the address in proxy_pass %s" % (
                    t["node"].where(), t["url"]))
            servers.append((None, hp[0], hp[1]))
        if not servers:
            raise ConvertError("%s: upstream %s has no server sluice can use" % (
                up.where(), up.args[0]))
        names = backend_names([(h, p) for _, h, p in servers])
        for (node, host, port), name in zip(servers, names):
            b = Section("backend %s" % name, "backend")
            b.set("address", "%s:%d" % (host, port), node or t["node"])
            if self.workers is not None:
                b.set("workers", self.workers, None, "from --workers")
            self.backends.append(b)
            if node is not None:
                self.decided[node] = self.server_params(node, b)
        if t["scheme"] == "https":
            for b in self.backends:
                b.set("tls", "yes", t["node"])

    def server_params(self, node, b):
        """An upstream `server` line's parameters into its [backend]."""
        notes = []
        for p in node.args[1:]:
            k, _, v = p.partition("=")
            if k == "weight" and v.isdigit():
                w = int(v)
                if w > 1000:
                    notes.append("weight=%s lowered to 1000, sluice's maximum" % v)
                    w = 1000
                b.set("weight", str(max(1, w)), node)
            elif k == "max_fails" and v.isdigit():
                b.set("max_fails", str(min(int(v), 1000)), node)
            elif k == "fail_timeout" and parse_time(v) is not None:
                ms = min(parse_time(v), 3600000)
                b.set("fail_timeout", fmt_time(ms, v if ms == parse_time(v) else None), node)
            elif k == "max_conns" and v.isdigit():
                if int(v) > 0:
                    b.set("workers", str(min(int(v), 100000)), node,
                          "max_conns: at most this many requests in flight; sluice queues "
                          "the rest instead of failing them")
            elif k == "slow_start" and parse_time(v) is not None:
                b.set("slow_start", fmt_time(min(parse_time(v), 3600000), v), node)
            elif p in ("down", "drain"):
                b.set("drain", "yes", node)
            elif p == "backup":
                b.set("drain", "yes", node, "backup server: drained; undrain it with "
                      "POST /actions/undrain?backend=NAME on the admin listener")
                notes.append("backup: sluice has no automatic backup servers; this one is "
                             "kept drained (no new requests) until you undrain it")
            elif k == "resolve" or p == "resolve":
                notes.append("resolve: sluice resolves the name once, at start and on reload")
            else:
                notes.append("%s: no sluice equivalent" % p)
        if notes:
            return Effect(PARTLY, "; ".join(notes))
        return Effect(CONVERTED)

    # ---- listeners and TLS
    def listens_and_tls(self):
        srv = self.server
        ssl_on = any(n.name == "ssl" and n.args[:1] == ["on"] for n in srv.children)
        plain, tls = [], []            # (spec, node)
        for n in srv.all("listen"):
            self.listen_spec(n, ssl_on, plain, tls)
        if not srv.all("listen"):
            plain.append(("80", None))
            self.proxy.lead += wrap("; the server block has no listen: NGINX's default is "
                                    "port 80 on every address")
        # HTTP -> HTTPS: a server that only redirects, or `if ($scheme ...) { return 301 }`
        self.redirect_servers = [s for s in self.servers if s is not srv and
                                 https_redirect(s)]
        redirect_ifs = [n for n in srv.all("if") if scheme_redirect_if(n)]
        redirect_plain = []
        for rs in self.redirect_servers:
            for n in rs.all("listen"):
                self.listen_spec(n, False, redirect_plain, [])
        certs = self.effective_all("ssl_certificate")
        keys = self.effective_all("ssl_certificate_key")
        if tls and not certs:
            for spec, node in tls:
                self.decided[node] = nope("ssl listener without ssl_certificate")
            tls = []
        # A [::]:P listener in sluice is dual-stack (no IPV6_V6ONLY): it cannot be bound
        # next to 0.0.0.0:P, so it replaces the IPv4 ones on the same port.
        plain = merge_dual_stack(plain, self.decided)
        tls = merge_dual_stack(tls, self.decided)
        redirect_plain = merge_dual_stack(redirect_plain, self.decided)
        seen = set()
        for spec, node in plain + redirect_plain:
            if spec in seen:
                if node is not None:
                    self.decided.setdefault(node, conv())
                continue
            seen.add(spec)
            self.proxy.set("listen", spec, node)
            if node is not None:
                self.decided.setdefault(node, conv())
        for spec, node in tls:
            if spec in seen:
                continue
            seen.add(spec)
            self.proxy.set("tls_listen", spec, node)
            self.decided.setdefault(node, conv())
        if len(self.proxy.lists.get("listen", [])) + len(self.proxy.lists.get(
                "tls_listen", [])) > 32:
            raise ConvertError("more than 16 listen or tls_listen addresses")
        # certificates
        if tls:
            pairs = list(zip(certs, keys))
            for c, k in pairs:
                cv, kv = c.args[0] if c.args else "", k.args[0] if k.args else ""
                why = bad_value(cv) or bad_value(kv)
                if "$" in cv + kv or cv.startswith("data:") or kv.startswith("data:"):
                    why = "variables and data: values are not supported"
                if why:
                    self.decided[c] = nope(why)
                    self.decided[k] = nope(why)
                    continue
                self.proxy.set("tls_cert", cv, c)
                self.proxy.set("tls_key", kv, k)
                if len(self.proxy.lists["tls_cert"]) > 1:
                    self.decided[c] = conv(why="sluice chooses among certificates by the SNI "
                                           "name, not by key type: the first is the default")
                else:
                    self.decided[c] = conv()
                self.decided[k] = conv()
            for extra in certs[len(pairs):] + keys[len(pairs):]:
                self.decided[extra] = nope("no matching ssl_certificate/ssl_certificate_key")
            if not self.proxy.lists.get("tls_cert"):
                self.proxy.lists.pop("tls_listen", None)
                for spec, node in tls:
                    self.decided[node] = nope("no usable certificate")
                tls = []
        else:
            for n in certs + keys:
                self.decided[n] = nope("no ssl listener in the converted server")
        if not self.proxy.lists.get("listen") and not self.proxy.lists.get("tls_listen"):
            raise ConvertError("%s: the server has no listener sluice can use" % srv.where())
        # redirects
        want_redirect = bool(self.redirect_servers or redirect_ifs)
        main_plain = [n for s, n in plain if n is not None]
        if want_redirect and tls and not (self.redirect_servers and main_plain):
            first = self.redirect_servers[0] if self.redirect_servers else redirect_ifs[0]
            ret = first if first.name == "if" else (first.child("return") or next(
                c.child("return") for c in first.all("location") if c.child("return")))
            self.proxy.set("redirect_http", "yes", ret,
                           "every request on a plain listen gets 308 to https://")
            why308 = ("sluice answers 308 (method kept) to https://HOST[:tls port]/same/"
                      "target on every plain listen")
            for rs in self.redirect_servers:
                self.record(rs, Effect(CONVERTED))
                for c in rs.children:
                    if c.name == "listen":
                        self.record(c, self.decided.pop(c, None) or Effect(CONVERTED))
                    elif c.name == "return" or (c.name == "location" and c.child("return")):
                        self.whole(c, Effect(PARTLY, "%s, not %s" % (
                            why308, " ".join(redirect_args(c)[1:]))))
                    elif c.name == "server_name":
                        self.record(c, builtin("the redirect keeps the request's Host"))
                    else:
                        self.record(c, nope("sluice has one access and error log for the "
                                            "whole proxy"))
            for n in redirect_ifs:
                self.decided[n] = Effect(PARTLY, why308)
                self._cover(n)
        elif want_redirect:
            why = ("redirect_http needs a tls_listen" if not tls else
                   "sluice's redirect_http would also redirect the plain listen of the "
                   "proxying server")
            for rs in self.redirect_servers:
                self.whole(rs, nope("HTTP -> HTTPS redirect server not converted: " + why))
            for n in redirect_ifs:
                self.whole(n, nope(why))
            if self.redirect_servers:
                # its listens were added above: take them out again
                rl = {id(n) for rs in self.redirect_servers for n in rs.all("listen")}
                self.proxy.lists["listen"] = [e for e in self.proxy.lists.get("listen", [])
                                              if id(e[1]) not in rl]
                if not self.proxy.lists["listen"]:
                    del self.proxy.lists["listen"]
                for rs in self.redirect_servers:
                    for n in rs.all("listen"):
                        self.decided.pop(n, None)

    def listen_spec(self, node, ssl_on, plain, tls):
        if not node.args:
            self.decided[node] = nope("no address")
            return
        addr = node.args[0]
        params = node.args[1:]
        if addr.startswith("unix:"):
            self.decided[node] = nope("sluice listens on TCP addresses only")
            return
        if re.fullmatch(r"\d+", addr):
            spec = addr
        else:
            hp = host_port(addr, 80)
            if hp is None:
                self.decided[node] = nope("cannot read the address %s" % addr)
                return
            h, p = hp
            spec = str(p) if h == "*" else "%s:%d" % (h, p)
        is_ssl = ssl_on or "ssl" in params
        ignored = []
        for p in params:
            k = p.split("=")[0]
            if p in ("ssl", "default_server", "default", "bind", "deferred"):
                continue
            if p == "reuseport":
                continue            # sluice always sets SO_REUSEPORT
            if p == "http2" and is_ssl:
                continue            # sluice offers h2 on every tls_listen ([proxy] http2)
            if p == "http2":        # h2c with prior knowledge on a plain listener
                self.proxy.set("h2c", "yes", node, "HTTP/2 with prior knowledge on plain "
                               "listeners (all of them in sluice)")
                continue
            if k == "ipv6only" or k == "backlog":
                continue
            ignored.append(p)
        notes = []
        if ignored:
            notes.append("not converted: %s (no HTTP/3 or PROXY protocol; socket options "
                         "are fixed)" % " ".join(ignored))
        if notes:
            self.decided[node] = conv(why="; ".join(notes))
        (tls if is_ssl else plain).append((spec, node))

    def effective_all(self, name):
        """An array directive's nodes at the innermost level of the main chain that has it."""
        for level in reversed(self.chain):
            found = [n for n in level if n.name == name]
            if found:
                return found
        return []

    def effective(self, name):
        for level in reversed(self.chain):
            for n in level:
                if n.name == name:
                    return n
        return None

    def level_of(self, node):
        for i, level in enumerate(self.chain):
            if node in level:
                return i
        return None

    # ---- limit_req / limit_conn -> tenants
    def limits(self):
        zones = {}
        for n in self.http:
            if n.name in ("limit_req_zone", "limit_conn_zone"):
                z = zone_of(n)
                if z:
                    zones[(n.name, z)] = n
                else:
                    self.decided[n] = nope("cannot read zone=NAME:SIZE")
        used = set()
        key_set = None          # the [tenants] key chosen, '' = none (all share default)
        for i, lr in enumerate(self.effective_all("limit_req")):
            zname = arg_param(lr.args, "zone")
            zn = zones.get(("limit_req_zone", zname))
            if zn is None:
                self.decided[lr] = nope("no limit_req_zone %s" % zname)
                continue
            key = tenant_key(zn.args[0] if zn.args else "")
            rate = parse_rate(arg_param(zn.args, "rate"))
            if i > 0 or key_set is not None:
                self.decided[lr] = nope("sluice has one tenant key and one limit per "
                                        "tenant: only the first limit_req is converted")
                continue
            if key is None:
                why = ("its key %s has no sluice equivalent (sluice keys tenants by "
                       "header, host, cookie or client address)" % (zn.args[:1] or ["?"])[0])
                self.decided[lr] = nope(why)
                self.decided.setdefault(zn, nope(why))
                used.add(zn)
                continue
            if rate is None:
                self.decided[lr] = nope("cannot read rate= of zone %s" % zname)
                continue
            burst = arg_param(lr.args, "burst")
            burst = int(burst) if burst and burst.isdigit() else 0
            key_set = key
            used.add(zn)
            zkeys = []
            if key:
                zkeys.append(("tenants", "key", key))
            zkeys.append(("tenant", "rate", fmt_num(rate)))
            size_why = ("the zone size is not converted: sluice keeps up to [tenants] "
                        "max_tracked keys (10000), then new keys share one limiter")
            self.decided[zn] = conv(*zkeys, why=size_why if key else None)
            lr_keys = [("tenant", "burst", str(min(burst + 1, 1000000)),
                        "NGINX burst=%d is %d requests at once: sluice counts the first one "
                        "too" % (burst, burst + 1))]
            whys = []
            if "nodelay" not in lr.args:
                whys.append("without nodelay NGINX delays the burst to pace it; sluice "
                            "forwards what it admits at once (backend slots and the queue "
                            "pace the backends) and refuses the rest at once")
            if any(a.startswith("delay=") for a in lr.args):
                whys.append("delay= has no equivalent")
            if self.level_of(lr) == 2 and location_path(self.location) != "/":
                whys.append("sluice applies it to every request, not only to this location")
            self.decided[lr] = conv(*lr_keys, why="; ".join(whys) or None)
        for i, lc in enumerate(self.effective_all("limit_conn")):
            zname = lc.args[0] if lc.args else ""
            zn = zones.get(("limit_conn_zone", zname))
            n = lc.args[1] if len(lc.args) > 1 else ""
            if zn is None or not n.isdigit():
                self.decided[lc] = nope("no limit_conn_zone %s or no number" % zname)
                continue
            key = tenant_key(zn.args[0] if zn.args else "")
            if i > 0 or key is None or (key_set is not None and key != key_set):
                why = ("only one limit per tenant key: its key differs from the limit_req "
                       "one" if key is not None and key_set is not None and key != key_set
                       else "its key has no sluice equivalent" if key is None
                       else "only the first limit_conn is converted")
                self.decided[lc] = nope(why)
                self.decided.setdefault(zn, nope(why))
                used.add(zn)
                continue
            used.add(zn)
            if key_set is None:
                key_set = key
                self.decided[zn] = conv(*([("tenants", "key", key)] if key else []))
            else:
                self.decided[zn] = conv()
            self.decided[lc] = conv(("tenant", "max_inflight", str(min(int(n), 1000000))),
                                    why="NGINX refuses (503) past the limit; sluice keeps "
                                    "the extra requests in its queue until a slot frees "
                                    "([queue] timeout)")
        for key, zn in zones.items():
            if zn not in used and zn not in self.decided:
                self.decided[zn] = nope("zone not used by the converted server")
        self.limited = key_set is not None

    # ---- the walk
    def walk(self):
        """Outcomes in dependency order: the main chain (http, the server, its proxied
        location) sets the keys first; routes compare themselves against them."""
        for n in self.main_level + self.http:
            if n in self.outcome or n.name in ("server", "upstream") and n.is_block:
                continue
            self.visit(n, 0)
        srv, loc = self.server, self.location
        self.record(srv, Effect(CONVERTED))
        for c in srv.children:
            if not (c.name == "location" and c.is_block):
                self.visit(c, 1)
        self.record(loc, Effect(CONVERTED))
        for c in loc.children:
            self.visit(c, 2)
        if self.upstream is not None:
            for c in self.upstream.children:
                self.visit_upstream_child(c)
        for c in srv.children:
            if c.name == "location" and c.is_block and c is not loc and \
                    c not in self.outcome:
                self.other_location(c)
        for n in self.http:
            if n.name == "upstream" and n.is_block and n not in self.outcome:
                self.whole(n, nope("not used by the converted server"))

    def visit(self, n, level):
        if n in self.outcome:
            return
        if n in self.decided:
            self.apply(n, self.decided[n])
            self._cover(n)
            return
        if n.name == "location" and n.is_block and level < 2:
            return self.whole(n, nope("a location outside a server block"))
        self.apply(n, self.common(n, level))

    def visit_upstream_child(self, c):
        if c in self.outcome:
            return
        if c in self.decided:
            self.apply(c, self.decided[c])
            return
        nm, a = c.name, c.args
        if nm == "least_conn":
            eff = builtin("sluice always balances by least connections (in flight / weight)")
        elif nm == "keepalive" and a and a[0].isdigit():
            eff = conv(("backend*", "keepalive", str(min(int(a[0]), 10000))),
                       why="NGINX's number is per worker process for the whole upstream; "
                       "sluice's is per backend and per thread")
        elif nm == "keepalive_timeout" and a and parse_time(a[0]) is not None:
            ms = max(1, min(parse_time(a[0]), 3600000))
            eff = conv(("backend*", "idle_timeout", fmt_time(ms, a[0]),
                        "keep idle_timeout below Gunicorn's --keep-alive (2s by default)"
                        if ms >= 2000 else None))
        elif nm == "zone":
            eff = builtin("sluice's threads share backend state; nothing to size")
        elif nm == "queue" and a and a[0].isdigit():
            keys = [("queue", "max", str(min(int(a[0]), 1000000)))]
            t = arg_param(a, "timeout")
            ms = parse_time(t) if t else 60000
            if ms is not None:
                keys.append(("queue", "timeout", fmt_time(max(1, min(ms, 3600000)), t)))
            eff = conv(*keys, why="sluice answers 503 + Retry-After when it is full or "
                       "the wait is over, and serves the queue fairly by tenant")
        elif nm in ("ip_hash", "hash", "sticky", "random", "least_time", "ntlm"):
            eff = nope("sluice balances by least connections only, without session "
                       "affinity (Superset keeps its session in a cookie or a shared store, "
                       "so any worker can serve any request)")
        elif nm in ("keepalive_requests", "keepalive_time"):
            eff = nope("sluice reuses an upstream connection until it is idle for "
                       "idle_timeout or Gunicorn closes it")
        else:
            eff = nope("no sluice equivalent")
        self.apply(c, eff)

    # ---- locations other than the converted one
    def other_location(self, loc):
        mod, path = location_mod(loc), location_path(loc)
        if mod in ("~", "~*"):
            return self.whole(loc, nope("regular-expression locations are not supported: "
                                        "sluice routes by path prefix only; these requests "
                                        "go to the backends like any other"))
        if path.startswith("@"):
            return self.whole(loc, nope("named locations (error_page, try_files) have no "
                                        "sluice equivalent"))
        if mod == "=" and path == "/":
            return self.whole(loc, nope("an exact match of / has no prefix equivalent"))
        if loc.child("stub_status") is not None:
            return self.stub_status(loc, same_server=True)
        t = proxy_target(loc)
        ret = loc.child("return")
        if t is not None:
            if "$" in t["url"] or (t["scheme"], t["host"], t["port"]) != (
                    self.target["scheme"], self.target["host"], self.target["port"]):
                return self.whole(loc, nope(
                    "proxies to %s, another pool: sluice sends every request to its one set "
                    "of backends, so %s will go to them too; serve it from its own sluice "
                    "(or keep NGINX for it)" % (t["host"], path)))
            return self.route(loc, path, mod, bypass=bool(HEALTH_RE.search(path) or
                                                          STATIC_RE.search(path)))
        if ret is not None and ret.args and ret.args[0] in ("200", "204"):
            return self.route(loc, path, mod, bypass=True, answered=ret)
        if ret is not None or loc.child("deny") is not None:
            return self.whole(loc, nope(
                "sluice cannot answer or refuse a path by itself: requests for %s will "
                "reach the backends" % path))
        if loc.child("root") or loc.child("alias") or loc.child("try_files"):
            return self.whole(loc, nope("sluice does not serve files: Gunicorn (Superset) "
                                        "serves %s through the proxy" % path))
        return self.whole(loc, nope("no proxy_pass to the converted upstream"))

    def route(self, loc, path, mod, bypass, answered=None):
        names = {r.header for r in self.routes}
        base = safe_name(path.strip("/").replace("/", "-")) if path.strip("/") else "root"
        name, i = base, 2
        while "route " + name in names:
            name, i = "%s-%d" % (base, i), i + 1
        if bad_value(path) or not path.startswith("/") or len(path) > 150:
            return self.whole(loc, nope("cannot use %s as a prefix" % path))
        r = Section("route " + name, "route")
        r.set("prefix", path, loc)
        if bypass:
            r.set("bypass", "yes", None, "skips tenant limits, backend slots and the queue "
                  "(health checks and static assets)")
        self.routes.append(r)
        whys = []
        if mod == "=":
            whys.append("sluice matches by prefix: paths that start with %s match too"
                        % path)
        self.record(loc, Effect(PARTLY if whys else CONVERTED, "; ".join(whys) or None))
        for c in loc.children:
            if c in self.outcome:
                continue
            if c is answered:
                self.record(c, Effect(PARTLY, "NGINX answered %s itself; sluice forwards it "
                                      "to the backends (bypassing the queue): Superset "
                                      "answers /health, other paths need an endpoint" % path))
                continue
            if c.name == "proxy_pass":
                t = proxy_target(loc)
                if t["uri"] not in ("", path) and not (t["uri"] == "/" and path == "/"):
                    self.record(c, Effect(PARTLY, "the URI part %s is not converted: sluice "
                                          "forwards the path unchanged" % t["uri"]))
                else:
                    self.record(c, Effect(CONVERTED))
                continue
            if c.is_block:
                self.whole(c, nope("no sluice equivalent inside a route"))
                continue
            eff = self.common(c, 3)
            self.record(c, eff)

    def stub_status(self, loc, same_server):
        path = location_path(loc)
        if same_server and self.admin.get("listen") is None:
            self.admin.set("listen", "127.0.0.1:9901", loc,
                           "the admin listener: /status, /status.json, /metrics")
        self.record(loc, Effect(PARTLY, "moved to sluice's admin listener (%s): GET "
                                "/status.json and /metrics there, not %s" % (
                                    self.admin.get("listen"), path)))
        for c in loc.children:
            if c.name == "stub_status":
                self.record(c, Effect(CONVERTED))
            elif c.name in ("allow", "deny"):
                self.record(c, builtin("the admin listener binds 127.0.0.1; another "
                                       "address needs [admin] token"))
            elif c.name == "access_log":
                self.record(c, builtin("admin requests are not in the access log"))
            else:
                self.whole(c, nope("no sluice equivalent"))

    def other_servers(self):
        for srv in self.servers:
            if srv in self.outcome:
                continue
            stub = [l for l in srv.all("location") if l.is_block and
                    l.child("stub_status") is not None]
            if stub and not any(proxy_target(l) for l in srv.all("location") if l.is_block):
                listen = srv.child("listen")
                spec = listen.args[0] if listen is not None and listen.args else "80"
                hp = ("*", int(spec)) if spec.isdigit() else host_port(spec, 80)
                hp = hp or ("*", 9901)
                loopback = hp[0].startswith("127.") or hp[0] in ("localhost", "[::1]")
                addr = "%s:%d" % hp if loopback else "127.0.0.1:%d" % hp[1]
                self.admin.listen_set = True
                self.admin.keys.pop("listen", None)
                self.admin.set("listen", addr, listen)
                self.record(srv, Effect(PARTLY, "stub_status server -> [admin] listen = %s"
                                        "%s: /status.json and /metrics there" % (
                                            addr, "" if loopback else
                                            " (loopback: another address needs a token)")))
                for c in srv.children:
                    if c.name == "listen" or c in self.outcome:
                        self.record(c, Effect(CONVERTED))
                    elif c.name == "location" and c in stub:
                        self.stub_status(c, same_server=False)
                    elif c.name == "server_name":
                        self.record(c, builtin("the admin listener answers any Host"))
                    else:
                        self.whole(c, nope("no sluice equivalent on the admin listener"))
                continue
            if srv in self.redirect_servers:
                continue
            self.whole(srv, nope("sluice converts one server block (the first that "
                                 "proxies, %s); this one is not converted" %
                                 self.server.where()))

    # ---- directives valid in http / server / location
    def common(self, n, level):
        """The effect of a directive in the main chain (level 0 http, 1 server,
        2 location; 3 = a route's location, which must not change global keys)."""
        nm, a = n.name, n.args
        h = getattr(self, "d_" + nm, None)
        if level in (0, 1, 2) and nm in SCALAR and n is not self.effective(nm):
            eff_n = self.effective(nm)
            return nope("overridden by %s (%s)" % (eff_n.where(), eff_n.text(40)))
        if level in (0, 1, 2) and nm in ARRAY and n not in self.effective_all(nm):
            inner = self.effective_all(nm)[0]
            return nope("not inherited: %s sets its own %s" % (inner.where(), nm))
        if h is None:
            if nm.startswith(("proxy_cache", "proxy_no_cache")):
                h = self.g_proxy_cache
            elif nm.startswith(("gzip", "brotli")):
                h = self.g_gzip
            elif nm.startswith("ssl_"):
                h = self.g_ssl
            elif nm.startswith("proxy_ssl_"):
                h = self.g_proxy_ssl
        if level == 3 and nm == "access_log":
            return nope("sluice logs every request (there is no per-path switch)")
        if h is None:
            self._cover(n)
            return nope(MISC.get(nm, "no sluice equivalent"))
        eff = h(n, a)
        if level == 3 and eff.keys:
            same = all(self.value_of(k[0], k[1]) == k[2] for k in eff.keys)
            if same:
                return Effect(CONVERTED)
            return nope("only for %s in NGINX; sluice's %s applies to every request (%s)" % (
                location_path(n.parent), ", ".join(k[1] for k in eff.keys),
                ", ".join("%s" % (self.value_of(k[0], k[1]) or "default") for k in eff.keys)))
        if level == 2 and eff.keys and location_path(self.location) != "/" and \
                eff.kind != NOPE:
            eff.kind = PARTLY
            eff.why = ((eff.why + "; ") if eff.why else "") + \
                "sluice applies it to every request"
        return eff

    # timeouts
    def _dur(self, a, sect, key, nginx_default=None):
        if len(a) < 1 or parse_time(a[0]) is None:
            return nope("cannot read the time")
        ms = parse_time(a[0])
        lo, hi = SLUICE_KEYS["backend" if sect == "backend*" else sect][key][1:3]
        if ms < lo or ms > hi:
            c = min(max(ms, lo), hi)
            return conv((sect, key, fmt_time(c)),
                        why="%s clamped to %s, sluice's %s" % (
                            a[0], fmt_time(c), "maximum" if ms > hi else "minimum"))
        return conv((sect, key, fmt_time(ms, a[0])))

    def d_proxy_connect_timeout(self, n, a):
        return self._dur(a, "backend*", "connect_timeout")

    def d_proxy_read_timeout(self, n, a):
        e = self._dur(a, "backend*", "read_timeout")
        if e.kind != NOPE:
            extra = "also the idle limit of a WebSocket tunnel"
            e.keys = [k[:3] + (extra,) for k in e.keys]
        return e

    def d_proxy_send_timeout(self, n, a):
        rd = self.effective("proxy_read_timeout")
        if not a or parse_time(a[0]) is None:
            return nope("cannot read the time")
        if rd is not None and rd.args and parse_time(rd.args[0]) == parse_time(a[0]):
            return builtin("sluice's read_timeout (from proxy_read_timeout) also limits a "
                           "backend that does not take request bytes")
        return nope("sluice uses read_timeout (%s) for both directions" % (
            rd.args[0] if rd is not None and rd.args else "60s, its default"))

    def d_keepalive_timeout(self, n, a):
        e = self._dur(a, "proxy", "keepalive_timeout")
        if e.kind != NOPE and len(a) > 1:
            e.kind, e.why = PARTLY, "the second value (Keep-Alive: timeout=) is not sent"
        return e

    def d_client_header_timeout(self, n, a):
        return self._dur(a, "proxy", "client_header_timeout")

    def d_client_body_timeout(self, n, a):
        return self._dur(a, "proxy", "client_body_timeout")

    def d_send_timeout(self, n, a):
        return self._dur(a, "proxy", "send_timeout")

    def d_worker_shutdown_timeout(self, n, a):
        return self._dur(a, "proxy", "shutdown_grace")

    # sizes and limits
    def d_client_max_body_size(self, n, a):
        b = parse_size(a[0]) if a else None
        if b is None:
            return nope("cannot read the size")
        return conv(("proxy", "max_body_size", fmt_size(b) if b else "0",
                     "0 = no limit, as in NGINX" if b == 0 else None))

    def d_large_client_header_buffers(self, n, a):
        if len(a) != 2 or not a[0].isdigit() or parse_size(a[1]) is None:
            return nope("expected NUMBER SIZE")
        num, size = int(a[0]), parse_size(a[1])
        line = min(max(size, 256), 1 << 20)
        total = min(max(num * size, 1024), 1 << 20)
        return conv(("proxy", "max_line_size", fmt_size(line)),
                    ("proxy", "max_header_size", fmt_size(total)),
                    why="NGINX also limits each header field to %s; sluice limits the "
                    "request line and the whole head" % a[1])

    def d_client_body_buffer_size(self, n, a):
        b = parse_size(a[0]) if a else None
        if b is None:
            return nope("cannot read the size")
        rb = self.effective("proxy_request_buffering")
        if rb is not None and rb.args[:1] == ["off"]:
            return builtin("request bodies are streamed (proxy_request_buffering off)")
        if b <= 1 << 20:
            return builtin("sluice reads up to request_buffer (1m by default) of a body in "
                           "memory before choosing a backend, which covers %s" % a[0])
        return conv(("proxy", "request_buffer", fmt_size(min(b, 1 << 30))),
                    why="NGINX spools larger bodies to a file; sluice streams the rest")

    def d_proxy_request_buffering(self, n, a):
        if a[:1] == ["off"]:
            return conv(("proxy", "request_buffer", "0", "bodies are streamed at once"))
        return builtin("sluice reads up to request_buffer (1m) of a body before choosing a "
                       "backend and streams the rest; NGINX spools the whole body to a file")

    def d_proxy_buffering(self, n, a):
        if a[:1] == ["off"]:
            return builtin("sluice always streams responses (proxy_buffering off); request "
                           "bodies are governed by proxy_request_buffering -> request_buffer")
        return nope("sluice always streams responses with backpressure: a slow client "
                    "holds its Gunicorn worker while the response is sent")

    def d_proxy_http_version(self, n, a):
        if a[:1] == ["1.1"]:
            return builtin("sluice speaks HTTP/1.1 with keep-alive to backends")
        return nope("sluice always speaks HTTP/1.1 to backends")

    def d_proxy_next_upstream(self, n, a):
        if a[:1] == ["off"]:
            return conv(("proxy", "retries", "0"))
        rest = [x for x in a if x not in ("error", "timeout")]
        if not rest:
            return builtin("sluice retries a failed connect on another backend ([proxy] "
                           "retries = 1); nothing sent is never retried")
        return Effect(PARTLY, "sluice retries connect failures only (nothing was sent); "
                      "not converted: %s" % " ".join(rest))

    def d_proxy_next_upstream_tries(self, n, a):
        if not a or not a[0].isdigit():
            return nope("cannot read the number")
        t = int(a[0])
        if t == 0:
            return conv(("proxy", "retries", "5"), why="0 (no limit) becomes 5, "
                        "sluice's maximum")
        return conv(("proxy", "retries", str(min(t - 1, 5))),
                    why="tries counts the first attempt, retries does not" if t <= 6 else
                    "clamped to 5 retries, sluice's maximum")

    def d_http2_max_concurrent_streams(self, n, a):
        if not a or not a[0].isdigit():
            return nope("cannot read the number")
        t = int(a[0])
        if t < 1 or t > 1000:
            c = min(max(t, 1), 1000)
            return conv(("proxy", "http2_max_streams", str(c)),
                        why="clamped to %d, sluice's %s" % (c, "maximum" if t > 1000 else
                                                            "minimum"))
        return conv(("proxy", "http2_max_streams", str(t)))

    def d_proxy_set_header(self, n, a):
        if len(a) < 2:
            return nope("expected NAME VALUE")
        name, val = a[0].lower(), a[1]
        if name == "x-forwarded-for":
            if val == "$proxy_add_x_forwarded_for":
                return builtin("sluice appends the client address to X-Forwarded-For")
            return nope("sluice appends the client address to the client's X-Forwarded-For "
                        "(it does not replace it with %s)" % val)
        if name == "x-forwarded-proto":
            if val == "$scheme":
                return builtin("sluice sets X-Forwarded-Proto (http or https by listener)")
            return nope("sluice sets X-Forwarded-Proto from its own listener (http on "
                        "listen, https on tls_listen), not %s" % val)
        if name == "x-forwarded-host":
            if val in ("$host", "$http_host", "$server_name", "$host:$server_port"):
                return builtin("sluice sets X-Forwarded-Host to the request's Host")
            return nope("sluice sets X-Forwarded-Host to the request's Host")
        if name == "host":
            if val in ("$host", "$http_host", "$host:$server_port", "$proxy_host"):
                return builtin("sluice forwards the client's Host unchanged")
            return nope("sluice forwards the client's Host unchanged (not %s)" % val)
        if name == "x-request-id" and val in ("$request_id", "$http_x_request_id"):
            return builtin("sluice keeps the client's X-Request-ID or generates one and "
                           "returns it in the response")
        if name == "upgrade" or (name == "connection" and val.lower() in (
                "$connection_upgrade", "upgrade", '"upgrade"', "$http_connection")):
            return builtin("WebSocket upgrades are tunnelled automatically")
        if name == "connection" and val in ("", '""'):
            return builtin("sluice manages backend connections itself (keep-alive)")
        if name == "x-real-ip":
            return nope("sluice does not set X-Real-IP: the client address is the last "
                        "X-Forwarded-For entry (Superset: ENABLE_PROXY_FIX)")
        return nope("sluice does not add or rewrite request headers")

    def d_proxy_redirect(self, n, a):
        if a[:1] in (["off"], ["default"]):
            return builtin("sluice passes Location unchanged")
        return nope("sluice does not rewrite Location")

    def d_proxy_pass(self, n, a):
        t = parse_proxy_pass(a[0] if a else "", n)
        if t is None:
            return nope("cannot read the URL")
        if t["uri"] not in ("", "/") or (t["uri"] == "/" and
                                         location_path(n.parent) not in ("/", "")):
            return Effect(PARTLY, "the URI part %s is not converted: sluice forwards the "
                          "path unchanged" % t["uri"])
        return Effect(CONVERTED)

    def d_limit_req_status(self, n, a):
        if a[:1] == ["429"]:
            return builtin("sluice answers 429 + Retry-After (X-Sluice-Reject: rate)")
        return nope("sluice answers 429 + Retry-After, not %s" % (a[:1] or ["?"])[0])

    def d_limit_conn_status(self, n, a):
        return nope("past max_inflight sluice queues requests; a full queue answers 503")

    def d_worker_processes(self, n, a):
        if a[:1] == ["auto"]:
            return conv(("proxy", "threads", "auto"))
        if a and a[0].isdigit() and 1 <= int(a[0]) <= 256:
            return conv(("proxy", "threads", a[0]),
                        why=None if int(a[0]) > 1 else "consider threads = auto")
        return nope("expected auto or 1..256")

    def d_access_log(self, n, a):
        if a[:1] == ["off"]:
            return builtin("sluice writes no access log unless access_log is set")
        if not a:
            return nope("no path")
        path = a[0]
        first = [x for x in self.effective_all("access_log") if x.args[:1] != ["off"]]
        if first and n is not first[0] and self.level_of(n) is not None:
            return nope("sluice writes one access log (%s)" % first[0].args[0])
        if path.startswith("syslog:"):
            return nope("sluice logs to a file or stdout, not syslog")
        if path in ("/dev/stdout", "/proc/self/fd/1"):
            path = "stdout"
        why = bad_value(path)
        if why or "$" in path:
            return nope(why or "variables in the path are not supported")
        fmt = a[1] if len(a) > 1 and "=" not in a[1] else "combined"
        extra = [x for x in a[2:] if "=" in x] + ([a[1]] if len(a) > 1 and "=" in a[1]
                                                   else [])
        why = ("format %s not converted: sluice's line is fixed (docs/logging.md)" % fmt)
        if extra:
            why += "; %s not converted" % " ".join(extra)
        return conv(("proxy", "access_log", path), why=why)

    def d_error_log(self, n, a):
        if not a:
            return nope("no path")
        if self.level_of(n) is None:      # main context: the chain may override it
            inner = self.effective_all("error_log")
            if inner:
                return nope("overridden by %s" % inner[0].where())
            first = [x for x in self.main_level if x.name == "error_log"]
            if n is not first[0]:
                return nope("sluice writes one error log (%s)" % first[0].args[0])
        else:
            first = self.effective_all("error_log")
            if first and n is not first[0]:
                return nope("sluice writes one error log (%s)" % first[0].args[0])
        path = a[0]
        if path.startswith(("syslog:", "memory:")):
            return nope("sluice logs to a file, stderr or stdout")
        if path in ("/dev/stderr", "/proc/self/fd/2"):
            path = "stderr"
        if path in ("/dev/stdout", "/proc/self/fd/1"):
            path = "stdout"
        why = bad_value(path)
        if why:
            return nope(why)
        keys = [("proxy", "error_log", path)]
        if len(a) > 1:
            lvl = {"debug": "debug", "info": "info", "notice": "info", "warn": "warn",
                   "error": "error", "crit": "error", "alert": "error",
                   "emerg": "error"}.get(a[1])
            if lvl:
                keys.append(("proxy", "log_level", lvl))
        return conv(*keys)

    def d_server_name(self, n, a):
        return builtin("sluice has no virtual hosts: it serves every Host on its listeners "
                       "(with TLS, SNI picks among tls_cert by the certificates' names)")

    def d_server_tokens(self, n, a):
        return builtin("sluice adds no Server field (Gunicorn's passes through)")

    def d_chunked_transfer_encoding(self, n, a):
        return builtin("sluice frames bodies itself (Content-Length or chunked)")

    def d_tcp_nodelay(self, n, a):
        return builtin("sluice sets TCP_NODELAY on both sides")

    def d_health_check(self, n, a):
        keys, rest = [], []
        uri = "/"
        for p in a:
            k, _, v = p.partition("=")
            if k == "uri":
                uri = v
            elif k == "interval" and parse_time(v) is not None:
                keys.append(("backend*", "health_interval",
                             fmt_time(min(max(parse_time(v), 100), 3600000), v)))
            elif k == "fails" and v.isdigit():
                keys.append(("backend*", "fall", str(min(max(int(v), 1), 100))))
            elif k == "passes" and v.isdigit():
                keys.append(("backend*", "rise", str(min(max(int(v), 1), 100))))
            else:
                rest.append(p)
        if bad_value(uri) or not uri.startswith("/") or " " in uri:
            return nope("cannot use uri=%s" % uri)
        keys.insert(0, ("backend*", "health_check", uri))
        if not any(p.startswith("fails=") for p in a):
            keys.append(("backend*", "fall", "1"))
        if not any(p.startswith("passes=") for p in a):
            keys.append(("backend*", "rise", "1"))
        return conv(*keys, why=("not converted: %s" % " ".join(rest)) if rest else None)

    def d_return(self, n, a):
        return nope("sluice cannot answer requests itself: they reach the backends")

    def d_if(self, n, a):
        self._cover(n)
        return nope("if blocks are not supported")

    def d_location(self, n, a):
        self._cover(n)
        return nope("nested locations are not supported")

    def d_map(self, n, a):
        self._cover(n)
        if a[:1] == ["$http_upgrade"]:
            return builtin("WebSocket upgrades are tunnelled automatically")
        return nope("variables (map) are not supported")

    def d_limit_req(self, n, a):
        return nope("not the limit sluice converted")

    def d_limit_conn(self, n, a):
        return nope("not the limit sluice converted")

    def d_limit_req_zone(self, n, a):
        return nope("zone not used by the converted server")

    d_limit_conn_zone = d_limit_req_zone

    def d_ssl(self, n, a):
        if a[:1] == ["on"]:
            return builtin("the server's listens are converted to tls_listen")
        return builtin("plain listeners")

    def d_events(self, n, a):
        self._cover(n)
        return nope("sluice has no per-process connection cap: each thread's event loop "
                    "(libevent) takes what the file-descriptor limit allows")

    def d_log_format(self, n, a):
        return nope("sluice's access log line is fixed (docs/logging.md)")

    def d_types(self, n, a):
        self._cover(n)
        return nope("sluice does not serve files; Content-Type comes from Gunicorn")

    def g_proxy_cache(self, n, a):
        if n.is_block:
            self._cover(n)
        return nope("sluice has no response cache: Superset caches query results itself "
                    "(DATA_CACHE_CONFIG, CACHE_CONFIG); see docs/migrating-from-nginx.md")

    def g_gzip(self, n, a):
        if n.is_block:
            self._cover(n)
        if a[:1] == ["off"]:
            return builtin("sluice does not compress")
        return nope("sluice does not compress: Superset compresses its responses itself "
                    "(Flask-Compress, COMPRESS_REGISTER)")

    def g_ssl(self, n, a):
        nm = n.name
        if nm == "ssl_protocols":
            ok = {"TLSv1.2", "TLSv1.3"}
            if set(a) == ok:
                return builtin("sluice accepts TLS 1.2 and 1.3")
            if ok <= set(a):
                return Effect(PARTLY, "sluice accepts TLS 1.2 and 1.3 only; not converted: "
                              "%s" % " ".join(x for x in a if x not in ok))
            return nope("sluice always accepts TLS 1.2 and 1.3 (restrict TLS 1.2 ciphers "
                        "with tls_ciphers)")
        if nm == "ssl_ciphers":
            v = a[0] if a else ""
            if v == SLUICE_DEFAULT_CIPHERS:
                return builtin("sluice's default tls_ciphers")
            why = bad_value(v)
            if why:
                return nope(why)
            if len("tls_ciphers = " + v) > MAX_LINE:
                return nope("longer than one sluice line (200 characters); sluice's "
                            "default is the ECDHE + AES-GCM/ChaCha20 list")
            return conv(("proxy", "tls_ciphers", v, "TLS 1.2 only; TLS 1.3 uses OpenSSL's "
                         "AEAD suites"))
        if nm == "ssl_prefer_server_ciphers":
            if a[:1] == ["on"]:
                return builtin("sluice prefers its own cipher order")
            return nope("sluice always prefers its own cipher order")
        if nm == "ssl_session_cache" or (nm == "ssl_session_tickets" and a[:1] == ["on"]):
            return builtin("sluice resumes TLS sessions by its session cache and tickets")
        if nm == "ssl_certificate" or nm == "ssl_certificate_key":
            return nope("not used by the converted listeners")
        return nope(MISC.get(nm, "no sluice setting (TLS is set up by sluice's defaults)"))

    def g_proxy_ssl(self, n, a):
        nm = n.name
        if nm == "proxy_ssl_verify":
            if a[:1] == ["on"]:
                return conv(("backend*", "tls_verify", "yes"))
            return conv(("backend*", "tls_verify", "no",
                         "NGINX does not verify backend certificates unless "
                         "proxy_ssl_verify on"))
        if nm == "proxy_ssl_trusted_certificate" and a:
            return conv(("backend*", "tls_ca", a[0]))
        if nm == "proxy_ssl_name" and a and "$" not in a[0]:
            return conv(("backend*", "tls_name", a[0]))
        if nm == "proxy_ssl_server_name":
            return builtin("sluice sends the backend's name as SNI (tls_name)")
        return nope("no sluice setting (client certificates, protocols and ciphers to "
                    "backends are OpenSSL's defaults)")


SCALAR = {"proxy_connect_timeout", "proxy_read_timeout", "proxy_send_timeout",
          "keepalive_timeout", "client_header_timeout", "client_body_timeout", "send_timeout",
          "client_max_body_size", "large_client_header_buffers", "client_body_buffer_size",
          "proxy_request_buffering", "proxy_buffering", "proxy_http_version",
          "proxy_next_upstream", "proxy_next_upstream_tries", "proxy_redirect",
          "limit_req_status", "ssl_protocols", "ssl_ciphers", "proxy_ssl_verify",
          "proxy_ssl_trusted_certificate", "proxy_ssl_name", "ssl_prefer_server_ciphers",
          "server_tokens", "http2_max_concurrent_streams"}
ARRAY = {"proxy_set_header", "access_log", "limit_req", "limit_conn", "add_header",
         "ssl_certificate", "ssl_certificate_key"}

MISC = {
    "user": "sluice runs as the user systemd starts it as (User= in the unit)",
    "pid": "sluice's pid file is [proxy] pid_file; give it its own path (e.g. "
           "/run/sluice/sluice.pid) so both can run side by side",
    "worker_rlimit_nofile": "set LimitNOFILE in the systemd unit (contrib/sluice.service "
                            "sets 1048576)",
    "worker_connections": "sluice has no per-thread connection cap",
    "daemon": "sluice runs in the foreground (systemd Type=simple)",
    "master_process": "sluice is one process",
    "include": "no file matches",
    "add_header": "sluice does not add response headers: set security headers in Superset "
                  "(TALISMAN_CONFIG, HTTP_HEADERS)",
    "more_set_headers": "sluice does not add response headers",
    "proxy_hide_header": "sluice passes response headers unchanged (except hop-by-hop ones)",
    "proxy_pass_header": "sluice passes response headers unchanged",
    "proxy_ignore_headers": "sluice passes response headers unchanged",
    "proxy_intercept_errors": "sluice passes backend error responses unchanged",
    "error_page": "sluice passes backend errors unchanged; its own are one-line text "
                  "(X-Sluice-Error)",
    "proxy_buffers": "sluice streams responses through a bounded per-connection buffer",
    "proxy_buffer_size": "sluice streams responses through a bounded per-connection buffer",
    "proxy_busy_buffers_size": "sluice streams responses through a bounded buffer",
    "proxy_max_temp_file_size": "sluice never spools to disk",
    "proxy_temp_file_write_size": "sluice never spools to disk",
    "client_body_temp_path": "sluice never spools to disk",
    "client_header_buffer_size": "sluice reads the head into one buffer bounded by "
                                 "max_header_size",
    "sendfile": "sluice does not serve files",
    "tcp_nopush": "sluice does not serve files",
    "root": "sluice does not serve files",
    "alias": "sluice does not serve files",
    "index": "sluice does not serve files",
    "try_files": "sluice does not serve files",
    "expires": "sluice does not add Cache-Control/Expires: Superset sets them for /static",
    "default_type": "sluice does not serve files; Content-Type comes from Gunicorn",
    "charset": "sluice does not change Content-Type",
    "allow": "sluice has no address-based access control: use a firewall or security group",
    "deny": "sluice has no address-based access control: use a firewall or security group",
    "auth_basic": "sluice does not authenticate: Superset does",
    "auth_basic_user_file": "sluice does not authenticate: Superset does",
    "auth_request": "sluice does not authenticate: Superset does",
    "satisfy": "sluice has no access control",
    "real_ip_header": "sluice uses the connection's peer address (and appends it to "
                      "X-Forwarded-For); its `ip` tenant key is that address",
    "set_real_ip_from": "sluice uses the connection's peer address",
    "real_ip_recursive": "sluice uses the connection's peer address",
    "resolver": "sluice resolves backend names once, at start and on reload",
    "resolver_timeout": "sluice resolves backend names once, at start and on reload",
    "rewrite": "sluice forwards the path unchanged",
    "set": "variables are not supported",
    "http2": "sluice offers HTTP/2 on every tls_listen by default ([proxy] http2 = yes)",
    "http3": "sluice speaks HTTP/1.1 and HTTP/2",
    "quic": "sluice speaks HTTP/1.1 and HTTP/2",
    "keepalive_requests": "sluice keeps a client connection for any number of requests",
    "keepalive_time": "sluice keeps a client connection until keepalive_timeout",
    "lingering_close": "sluice closes with FIN and drains what the client still sends",
    "lingering_time": "sluice closes with FIN and drains what the client still sends",
    "lingering_timeout": "sluice closes with FIN and drains what the client still sends",
    "reset_timedout_connection": "sluice closes timed-out connections itself",
    "underscores_in_headers": "sluice accepts field names by RFC 9110 token rules",
    "ignore_invalid_headers": "sluice refuses invalid field names (400)",
    "merge_slashes": "sluice forwards the path unchanged",
    "limit_rate": "sluice does not throttle bandwidth",
    "limit_rate_after": "sluice does not throttle bandwidth",
    "proxy_cookie_path": "sluice does not rewrite cookies",
    "proxy_cookie_domain": "sluice does not rewrite cookies",
    "sub_filter": "sluice does not rewrite bodies",
    "proxy_pass_request_headers": "sluice always forwards the request's headers",
    "proxy_pass_request_body": "sluice always forwards the request's body",
    "server_names_hash_bucket_size": "nothing to size in sluice",
    "server_names_hash_max_size": "nothing to size in sluice",
    "types_hash_max_size": "nothing to size in sluice",
    "variables_hash_max_size": "nothing to size in sluice",
    "variables_hash_bucket_size": "nothing to size in sluice",
    "proxy_headers_hash_max_size": "nothing to size in sluice",
    "proxy_headers_hash_bucket_size": "nothing to size in sluice",
    "open_file_cache": "sluice does not serve files",
    "ssl_dhparam": "sluice uses ECDHE key exchange",
    "ssl_ecdh_curve": "sluice uses OpenSSL's default curves",
    "ssl_stapling": "sluice does not staple OCSP responses",
    "ssl_stapling_verify": "sluice does not staple OCSP responses",
    "ssl_trusted_certificate": "sluice does not staple OCSP responses",
    "ssl_client_certificate": "sluice does not verify client certificates (no mTLS)",
    "ssl_verify_client": "sluice does not verify client certificates (no mTLS)",
    "ssl_verify_depth": "sluice does not verify client certificates (no mTLS)",
    "ssl_session_timeout": "sluice's session lifetime is fixed",
    "ssl_session_tickets": "sluice always issues session tickets",
    "ssl_password_file": "sluice needs an unencrypted key file",
    "ssl_buffer_size": "sluice sends a small response in one TLS record",
    "ssl_early_data": "no 0-RTT in sluice",
    "stream": "sluice proxies HTTP only",
    "mail": "sluice proxies HTTP only",
    "load_module": "sluice has no modules",
    "env": "sluice reads no environment variables",
    "pcre_jit": "sluice has no regular expressions",
    "thread_pool": "sluice's threads are [proxy] threads",
    "worker_cpu_affinity": "set CPUAffinity= in the systemd unit",
    "worker_priority": "set Nice= in the systemd unit",
    "timer_resolution": "nothing to set in sluice",
    "aio": "sluice does not serve files",
    "directio": "sluice does not serve files",
    "output_buffers": "sluice does not serve files",
    "postpone_output": "sluice forwards bytes as they come",
    "etag": "sluice passes ETag unchanged",
    "if_modified_since": "sluice passes conditional requests to the backends",
    "absolute_redirect": "sluice does not redirect (except redirect_http)",
    "port_in_redirect": "sluice does not redirect (except redirect_http)",
    "server_name_in_redirect": "sluice does not redirect (except redirect_http)",
    "proxy_next_upstream_timeout": "sluice retries connect failures only",
    "limit_req_log_level": "sluice logs refusals at info level and counts them",
    "limit_conn_log_level": "sluice logs refusals at info level and counts them",
    "limit_req_dry_run": "no dry-run mode",
    "stub_status": "see [admin]",
    "proxy_method": "sluice forwards the method unchanged",
    "proxy_set_body": "sluice forwards the body unchanged",
    "proxy_store": "sluice does not store responses",
    "proxy_force_ranges": "sluice passes ranges to the backends",
    "access_by_lua": "no scripting in sluice",
    "client_body_in_file_only": "sluice never spools to disk",
    "client_body_in_single_buffer": "sluice streams bodies",
    "msie_padding": "nothing to set in sluice",
    "log_not_found": "sluice does not serve files",
    "log_subrequest": "no subrequests in sluice",
    "open_log_file_cache": "sluice keeps its log files open (SIGUSR1 reopens them)",
}


# ---------------------------------------------------------------- small readers

def location_mod(loc):
    return loc.args[0] if len(loc.args) > 1 and loc.args[0] in LOCATION_MODS else ""


def location_path(loc):
    if loc is None or loc.name != "location" or not loc.args:
        return ""
    return loc.args[1] if location_mod(loc) else loc.args[0]


def parse_proxy_pass(url, node):
    m = re.fullmatch(r"(https?)://([^/]+)(/.*)?", url)
    if not m:
        return None
    scheme, hostport, uri = m.group(1), m.group(2), m.group(3) or ""
    hp = re.fullmatch(r"(\[[^\]]+\]|[^:]+)(?::(\d+))?", hostport)
    if not hp:
        return None
    return {"scheme": scheme, "host": hp.group(1), "port": int(hp.group(2)) if hp.group(2)
            else None, "uri": uri, "url": url, "node": node}


def proxy_target(loc):
    pp = loc.child("proxy_pass")
    if pp is None or not pp.args:
        return None
    return parse_proxy_pass(pp.args[0], pp)


def redirect_args(n):
    r = n if n.name == "return" else n.child("return")
    return ["return"] + (r.args if r is not None else [])


def is_https_return(n):
    return (n is not None and n.name == "return" and len(n.args) >= 2 and
            n.args[0] in ("301", "302", "307", "308") and n.args[1].startswith("https://"))


def https_redirect(srv):
    """A server block whose only job is `return 30x https://...`."""
    found = False
    for c in srv.children:
        if c.name in ("listen", "server_name", "access_log", "error_log"):
            continue
        if is_https_return(c):
            found = True
            continue
        if c.name == "location" and c.is_block and location_path(c) == "/" and \
                len(c.children) == 1 and is_https_return(c.children[0]):
            found = True
            continue
        return False
    return found and all("ssl" not in l.args[1:] for l in srv.all("listen"))


def scheme_redirect_if(n):
    if not n.is_block or len(n.children) != 1 or not is_https_return(n.children[0]):
        return False
    cond = " ".join(n.args).replace(" ", "").replace('"', "").replace("'", "")
    return cond in ("($scheme=http)", "($scheme!=https)", "($https=)", "($https!=on)")


def merge_dual_stack(specs, decided):
    """[::]:P replaces IPv4 wildcard listeners on port P (sluice binds it dual-stack)."""
    v6ports = {s.rsplit(":", 1)[1] for s, _ in specs if s.startswith("[::]:")}
    out = []
    for s, node in specs:
        port = s.rsplit(":", 1)[-1]
        wildcard4 = s.isdigit() or s.startswith("0.0.0.0:") or s.startswith("*:")
        if wildcard4 and port in v6ports:
            if node is not None:
                decided[node] = builtin("covered by [::]:%s, which sluice binds dual-stack "
                                        "(IPv4 clients appear as ::ffff:a.b.c.d)" % port)
            continue
        out.append((s, node))
    return out


def zone_of(n):
    z = arg_param(n.args, "zone")
    return z.split(":")[0] if z else None


def arg_param(args, name):
    for a in args:
        if a.startswith(name + "="):
            return a[len(name) + 1:]
    return None


def parse_rate(r):
    m = re.fullmatch(r"(\d+(?:\.\d+)?)r/([sm])", r or "")
    if not m:
        return None
    v = float(m.group(1))
    return v if m.group(2) == "s" else v / 60.0


def tenant_key(var):
    """A limit zone's key -> sluice [tenants] key ('' = none: everyone shares one limiter),
    or None when sluice has no equivalent."""
    if var in ("$binary_remote_addr", "$remote_addr"):
        return "ip"
    if var in ("$host", "$http_host"):
        return "host"
    if var in ("$server_name", "$server_addr"):
        return ""
    m = re.fullmatch(r"\$http_([a-z0-9_]+)", var)
    if m:
        return "header:" + "-".join(p.capitalize() for p in m.group(1).split("_"))
    m = re.fullmatch(r"\$cookie_([A-Za-z0-9_.-]+)", var)
    if m:
        return "cookie:" + m.group(1)
    return None


def backend_names(servers):
    """A unique [backend NAME] per (host, port): the host's first label, else the whole
    host, else host-port, else a number appended."""
    cands = []
    for h, p in servers:
        bare = h.strip("[]")
        short = bare if is_ip(bare) else bare.split(".")[0]
        cands.append([safe_name(short), safe_name(bare), safe_name("%s-%d" % (bare, p))])
    level = [0] * len(servers)
    for _ in range(3):
        names = [cands[i][level[i]] for i in range(len(servers))]
        changed = False
        for i, nm in enumerate(names):
            if names.count(nm) > 1 and level[i] < 2:
                level[i] += 1
                changed = True
        if not changed:
            break
    names = [cands[i][level[i]] for i in range(len(servers))]
    out, seen = [], {}
    for nm in names:
        if nm in seen:
            seen[nm] += 1
            nm = "%s-%d" % (nm[:58], seen[nm])
        else:
            seen[nm] = 1
        out.append(nm)
    return out


# ---------------------------------------------------------------- output

DEFAULTS_THAT_DIFFER = [
    # (nginx directive, where it is looked for, text)
    ("client_max_body_size", "NGINX refuses bodies over 1m by default; sluice's "
     "max_body_size is 1g"),
    ("proxy_connect_timeout", "NGINX waits 60s for a backend connect by default; sluice's "
     "connect_timeout is 5s (then it tries another backend)"),
    ("client_header_timeout", "NGINX allows 60s for the request head by default; sluice's "
     "client_header_timeout is 10s"),
    ("large_client_header_buffers", "NGINX allows 4 x 8k of request head by default; "
     "sluice's max_header_size is 16k (max_line_size 8k)"),
    ("access_log", "NGINX writes logs/access.log by default; sluice writes no access log "
     "unless access_log is set"),
    ("proxy_next_upstream", "NGINX tries every server on error or timeout by default; "
     "sluice retries a failed connect once (retries = 1) and nothing that was sent"),
    ("proxy_request_buffering", "NGINX reads the whole request body (spooling to disk) "
     "before contacting a backend; sluice reads request_buffer (1m) and streams the rest"),
    ("proxy_buffering", "NGINX buffers responses by default; sluice always streams them"),
    ("worker_processes", "NGINX runs 1 worker process by default; sluice's threads = auto "
     "(one per core)"),
]


def render(cv, main_name):
    out = []
    out += wrap("; sluice configuration converted from %s by contrib/nginx2sluice.py." %
                main_name)
    out += wrap("; Check it with `sluice -t -c FILE` and read every note below before "
                "using it; docs/migrating-from-nginx.md describes running sluice next to "
                "NGINX before switching. FILE:LINE in these comments points into the NGINX "
                "configuration.")
    groups = [(NOPE, "not converted (review each)"),
              (PARTLY, "converted only in part"),
              (BUILTIN, "built into sluice, nothing to set")]
    items = sorted(((n, e) for n, e in cv.outcome.items() if isinstance(e, Effect)),
                   key=lambda x: x[0].idx)
    for kind, title in groups:
        sel = [(n, e) for n, e in items if e.kind == kind]
        if not sel:
            continue
        out.append(";")
        out.append("; ---- %s: %d ----" % (title, len(sel)))
        for n, e in sel:
            where = n.where()
            if n.is_block and n.end_line and n.end_line != n.line:
                text = "%s (to line %d)" % (n.text(60), n.end_line)
            else:
                text = n.text(60)
            head = "; %s: %s: %s:" % (where, text, kind)
            out += wrap(head + " " + (e.why or ""), first_min=len(head))
    if cv.differs:
        out.append(";")
        out.append("; ---- not set in the NGINX configuration, and sluice's default differs "
                   "----")
        for t in cv.differs:
            out += wrap("; " + t)
    if cv.workers is None:
        out.append(";")
        out += wrap("; Backend capacity: NGINX has no equivalent of [backend] workers (the "
                    "Gunicorn workers x threads behind each address). Until it is set, "
                    "sluice does not queue, share slots fairly among tenants or compute "
                    "scaling figures (--workers N writes it).")
    out.append("")
    sections = [cv.proxy] + cv.backends
    if cv.tenants.keys:
        sections.append(cv.tenants)
    if cv.tenant.keys:
        sections.append(cv.tenant)
    sections += cv.routes
    if cv.queue.keys:
        sections.append(cv.queue)
    if cv.admin.keys:
        sections.append(cv.admin)
    for s in sections:
        out += s.render()
        out.append("")
    for l in out:
        assert len(l) <= MAX_LINE, l
    return "\n".join(out).rstrip("\n") + "\n"


def defaults_that_differ(self):
    names = set()
    for level in self.chain + [self.main_level]:
        names.update(n.name for n in level)
    for nm, text in DEFAULTS_THAT_DIFFER:
        if nm not in names:
            self.differs.append(text)
    if self.limited and "limit_req_status" not in names:
        self.differs.append("NGINX refuses requests over limit_req with 503 by default; "
                            "sluice answers 429 with Retry-After")
    if not any(n.name == "proxy_set_header" and n.args[:1] and n.args[0].lower() == "host"
               for level in self.chain for n in level):
        self.differs.append("NGINX sends the proxy_pass host (the upstream's name) as Host "
                            "unless proxy_set_header Host is set; sluice forwards the "
                            "client's Host")
    if self.target["scheme"] == "https" and self.effective("proxy_ssl_verify") is None:
        for b in self.backends:
            b.set("tls_verify", "no", None, "NGINX does not verify backend certificates "
                  "unless proxy_ssl_verify on; verify with tls_verify = yes and tls_ca")
    if self.upstream is None or self.upstream.child("keepalive") is None:
        self.differs.append("NGINX opens a new backend connection per request unless the "
                            "upstream has keepalive; sluice keeps up to 32 idle per backend "
                            "and thread (idle_timeout 1s, below Gunicorn's keep-alive)")


Converter.defaults_that_differ = defaults_that_differ


def finish(cv):
    """Every directive gets an outcome: what the walk did not reach is not converted."""
    def all_nodes(nodes):
        for n in nodes:
            yield n
            if n.children:
                yield from all_nodes(n.children)
    for n in all_nodes(cv.nodes):
        if n not in cv.outcome:
            cv.record(n, nope(MISC.get(n.name, "no sluice equivalent")))
    conv_n = sum(1 for e in cv.outcome.values() if isinstance(e, Effect) and e.kind != NOPE)
    part_n = sum(1 for e in cv.outcome.values() if isinstance(e, Effect) and e.kind == PARTLY)
    nope_n = sum(1 for e in cv.outcome.values() if isinstance(e, Effect) and e.kind == NOPE)
    return conv_n, part_n, nope_n


def convert(path, workers=None):
    """(sluice.ini text, converted, partly, not converted); raises ParseError/ConvertError."""
    Node.order = 0
    parser = Parser(path)
    nodes = parser.parse_file(path)
    cv = Converter(nodes, parser, workers)
    cv.run()
    counts = finish(cv)
    main_name = "stdin" if path == "-" else os.path.basename(path)
    for inc, why in parser.missing_includes:
        print("%s: warning: %s: include %s: %s" % (PROG, inc.where(), inc.args[0], why),
              file=sys.stderr)
    return render(cv, main_name), counts


def main(argv=None):
    ap = argparse.ArgumentParser(
        prog="nginx2sluice.py",
        description="Convert an NGINX configuration (reverse proxy in front of Gunicorn) "
                    "into a sluice.ini. Unconverted directives become '; FILE:LINE: ...: "
                    "not converted: why' comments.",
        epilog="exit status: 0 written, 1 cannot parse or nothing to convert, 2 usage")
    ap.add_argument("nginx_conf", help="nginx.conf (or a conf.d file); - reads stdin")
    ap.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")
    ap.add_argument("--workers", metavar="N|auto",
                    help="[backend] workers for every backend (Gunicorn workers x threads)")
    args = ap.parse_args(argv)
    if args.workers is not None and not (args.workers == "auto" or (
            args.workers.isdigit() and 0 <= int(args.workers) <= 100000)):
        ap.error("--workers takes auto or 0..100000")
    try:
        text, (conv_n, part_n, nope_n) = convert(args.nginx_conf, args.workers)
    except ParseError as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return 1
    except ConvertError as e:
        print("%s: %s: %s" % (PROG, args.nginx_conf, e), file=sys.stderr)
        return 1
    if args.output:
        try:
            tmp = args.output + ".tmp"
            with open(tmp, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write(text)
            os.replace(tmp, args.output)
        except OSError as e:
            print("%s: %s: %s" % (PROG, args.output, e.strerror or e), file=sys.stderr)
            return 1
    else:
        sys.stdout.write(text)
        sys.stdout.flush()
    print("%s: converted %d directives, %d not converted%s" % (
        PROG, conv_n, nope_n,
        " (%d of the converted only in part); see the '; FILE:LINE:' notes in the output"
        % part_n if part_n else "; see the '; FILE:LINE:' notes in the output"
        if nope_n else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
