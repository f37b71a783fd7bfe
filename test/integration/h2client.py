"""A small HTTP/2 client on python3-h2 (Debian) for the tests: real frames on a real socket,
with the client's own checks switched off so that a test can send what a broken or hostile
client would (uppercase names, connection-specific fields, floods)."""
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


class H2:
    def __init__(self, port, tls=False, host="alpha.test", timeout=10.0, settings=None,
                 validate=False):
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            raw = ctx.wrap_socket(raw, server_hostname=host)
            assert raw.selected_alpn_protocol() == "h2", raw.selected_alpn_protocol()
        self.sock = raw
        self.host = host
        self.port = port
        self.timeout = timeout
        cfg = h2.config.H2Configuration(client_side=True, header_encoding="utf-8",
                                        validate_outbound_headers=validate,
                                        normalize_outbound_headers=validate,
                                        validate_inbound_headers=False)
        self.conn = h2.connection.H2Connection(config=cfg)
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings(settings)
        self.flush()
        self.events = []
        self.closed = False
        self.goaway = None
        self.responses = {}   # stream id -> {"status", "headers", "body", "ended", "reset"}

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data):
        self.sock.sendall(data)

    def headers(self, path, method="GET", extra=(), end_stream=True, authority=None):
        sid = self.conn.get_next_available_stream_id()
        hs = [(":method", method), (":scheme", "https"),
              (":authority", authority or "%s:%d" % (self.host, self.port)), (":path", path)]
        hs += list(extra)
        self.conn.send_headers(sid, hs, end_stream=end_stream)
        self.responses[sid] = {"status": None, "headers": [], "body": b"", "ended": False,
                               "reset": None}
        self.flush()
        return sid

    def data(self, sid, data, end_stream=False):
        self.conn.send_data(sid, data, end_stream=end_stream)
        self.flush()

    def get(self, path, **kw):
        return self.headers(path, **kw)

    def pump(self, until, timeout=None):
        """Read and handle frames until until() is true, the peer closes, or timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while not until() and not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, ssl.SSLError, OSError):
                self.closed = True
                break
            if not data:
                self.closed = True
                break
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                break
            self.handle(events)
            try:
                self.flush()
            except OSError:
                self.closed = True
        return until()

    def handle(self, events):
        for e in events:
            self.events.append(e)
            r = self.responses.get(getattr(e, "stream_id", None))
            if isinstance(e, h2.events.ResponseReceived) and r is not None:
                r["headers"] = list(e.headers)
                r["status"] = int(dict(e.headers)[":status"])
            elif isinstance(e, h2.events.DataReceived) and r is not None:
                r["body"] += e.data
                self.conn.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
            elif isinstance(e, h2.events.StreamEnded) and r is not None:
                r["ended"] = True
            elif isinstance(e, h2.events.StreamReset) and r is not None:
                r["reset"] = e.error_code
                r["ended"] = True
            elif isinstance(e, h2.events.ConnectionTerminated):
                self.goaway = e

    def wait(self, sids, timeout=None):
        return self.pump(lambda: all(self.responses[s]["ended"] for s in sids), timeout)

    def header(self, sid, name):
        for k, v in self.responses[sid]["headers"]:
            if k == name:
                return v
        return None

    def wait_closed(self, timeout=None):
        """Read (and drop) until the peer closes; True if it did within timeout."""
        return self.pump(lambda: False, timeout) or self.closed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def frame(ftype, flags, sid, payload=b""):
    """A raw HTTP/2 frame (RFC 9113 4.1)."""
    n = len(payload)
    return bytes([n >> 16 & 255, n >> 8 & 255, n & 255, ftype, flags]) + \
        sid.to_bytes(4, "big") + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SETTINGS, HEADERS, CONTINUATION, PING, RST_STREAM, DATA = 4, 1, 9, 6, 3, 0
END_STREAM, END_HEADERS = 0x1, 0x4
