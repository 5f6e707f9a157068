"""HTTP/1.1 over keep-alive TLS connections: just what the device channel needs.

A request is one POST with a small body or a payload of at most 128 KB; a reply is a small JSON
document. urllib3 and http.client spent 0.55 to 0.65 ms of CPU per request here (header objects, the
email parser, headers and body sent in separate TLS records, a connection check per request); this
sends each request in one write and reads the reply with a few bytes operations, about a third of
that (benchmarks/client_request_cpu.py). Under the GIL, that CPU is what bounds the requests a
worker process can make.

Errors: ConnectFailed when no request was sent (the connection, the proxy's tunnel or the TLS
handshake failed); ReplyLost when the request may have been sent and no complete reply came.
Transport is that contract, for another HTTP client to meet in Pool's place (IoTPlatformClient's
`transport`).
"""
import base64
import logging
import re
import select
import socket
import ssl
import threading
import time
import urllib.parse
from typing import NamedTuple, Protocol

__all__ = [
    "PATH_SAFE", "ConnectFailed", "Pool", "Reply", "ReplyLost", "RequestRefused", "Transport", "TransportFactory",
]

_LOG = logging.getLogger(__name__)
MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 1 << 20  # the platform's replies are a few hundred bytes
_READ_SIZE = 65536


class ConnectFailed(Exception):
    """No connection; nothing was sent. stage: "connect", "proxy" or "tls"; cause: the exception."""

    def __init__(self, cause: BaseException, stage: str) -> None:
        super().__init__(_describe(cause))
        self.cause = cause
        self.stage = stage


class RequestRefused(ValueError):
    """The request cannot be written: a header value or the path holds a line break."""


class ReplyLost(Exception):
    """The request may have been sent and no complete reply came.

    kind: "read_timeout", "connection_lost" (reset, closed, TLS error) or "bad_reply" (not HTTP/1.x).
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class Reply(NamedTuple):
    """An HTTP reply: its status code and its whole body."""

    status: int
    body: bytes


class Transport(Protocol):
    """Sends POSTs to one HTTPS host over keep-alive connections, for many threads: what
    IoTPlatformClient needs of Pool, and all it needs."""

    @property
    def connections_opened(self) -> int:
        """Connections opened so far."""

    @property
    def requests_sent(self) -> int:
        """Requests sent so far."""

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        """POST body to path with headers.

        Raises:
            ConnectFailed: nothing was sent.
            ReplyLost: the request may have been sent and no complete reply came.
            RequestRefused: the request cannot be written (a line break or non-ASCII in a header).
        """

    def close(self) -> None:
        """Close the idle connections; a later post opens new ones."""


class TransportFactory(Protocol):
    """Pool's constructor, or another transport's: one host, a TLS context to connect with, timeouts in
    seconds, at most `size` idle connections, and an optional http:// proxy URL to tunnel through."""

    def __call__(self, host: str, port: int, context: ssl.SSLContext, *, connect_timeout: float,
                 read_timeout: float, size: int, proxy: str | None = None) -> Transport: ...


class _Head(NamedTuple):
    version: str
    status: int
    headers: dict[str, str]  # lower-cased names; a repeated header keeps its last value


class Connection:
    """One TLS connection, used by one thread at a time."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self._deadline: float | None = None  # monotonic time by which the reply must be complete; None: each read's own

    def close(self) -> None:
        self._sock.close()

    def stale(self) -> bool:
        """Whether the server closed (or wrote unasked) while this connection sat idle."""
        if self._buffer or (isinstance(self._sock, ssl.SSLSocket) and self._sock.pending()):
            return True
        try:
            if hasattr(select, "poll"):  # select.select cannot watch descriptors above 1023
                poller = select.poll()
                poller.register(self._sock, select.POLLIN)
                return bool(poller.poll(0))
            return bool(select.select([self._sock], [], [], 0)[0])
        except (OSError, ValueError):  # closed meanwhile
            return True

    def exchange(self, request: bytes, timeout: float) -> tuple[Reply, bool]:
        """Send the request bytes; (Reply, whether the connection can be reused).

        timeout bounds the whole exchange, not each read: a server that trickles its reply (interim
        replies, a body byte by byte, endless trailers) cannot hold it longer."""
        self._deadline = time.monotonic() + timeout
        self._sock.settimeout(timeout)
        self._sock.sendall(request)
        head = self._read_head()
        while 100 <= head.status < 200:  # an interim reply (we never ask for one): the real one follows
            head = self._read_head()
        headers = head.headers
        keep_alive = head.version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        coding = headers.get("transfer-encoding")
        if head.status in (204, 304):  # never a body
            body = b""
        elif coding is not None:  # it wins over any Content-Length (RFC 9112 6.3)
            if coding.lower().rsplit(",", 1)[-1].strip() != "chunked":
                body, keep_alive = self._read_to_end(), False
            else:
                body = self._read_chunked()
                keep_alive = keep_alive and "content-length" not in headers
        elif "content-length" in headers:
            length = _int(headers["content-length"], "Content-Length")
            if length > MAX_BODY_BYTES:
                raise ReplyLost("bad_reply", f"reply body of {length} bytes (at most {MAX_BODY_BYTES} are read)")
            body = self._read_exactly(length)
        else:  # delimited by the end of the connection
            body = self._read_to_end()
            keep_alive = False
        return Reply(head.status, body), keep_alive

    def _fill(self) -> None:
        if self._deadline is not None:
            left = self._deadline - time.monotonic()
            if left <= 0:
                raise ReplyLost("read_timeout", "timed out: no complete reply within the read timeout")
            self._sock.settimeout(left)
        data = self._sock.recv(_READ_SIZE)
        if not data:
            raise ReplyLost("connection_lost", "the server closed the connection before replying in full")
        self._buffer += data

    def _read_head(self) -> _Head:
        while True:
            end = self._buffer.find(b"\r\n\r\n")
            if 0 <= end <= MAX_HEAD_BYTES:
                break
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ReplyLost("bad_reply", f"reply head is over {MAX_HEAD_BYTES} bytes")
            self._fill()
        text = self._buffer[:end].decode("latin-1")
        del self._buffer[:end + 4]
        status_line, *lines = text.split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ReplyLost("bad_reply", "the reply is not HTTP/1.x")
        headers: dict[str, str] = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise ReplyLost("bad_reply", "malformed header line in the reply")
            name, value = name.strip().lower(), value.strip()
            if name not in headers:
                headers[name] = value
            elif name == "content-length":  # repeated: only the same length again is unambiguous
                if value != headers[name]:
                    raise ReplyLost("bad_reply", "the reply gives two different Content-Lengths")
            else:
                headers[name] += ", " + value
        return _Head(parts[0], _int(parts[1], "status"), headers)

    def _read_exactly(self, length: int) -> bytes:
        while len(self._buffer) < length:
            self._fill()
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        return body

    def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                raise ReplyLost("bad_reply", "chunk header line is too long")
            self._fill()
        line = bytes(self._buffer[:end])
        del self._buffer[:end + 2]
        return line

    def _read_chunked(self) -> bytes:
        body = bytearray()
        while True:
            size_text = self._read_line().split(b";", 1)[0].strip().decode("latin-1")  # no chunk extensions
            size = _int(size_text, "chunk size", hexadecimal=True)
            if size == 0:
                while self._read_line():  # trailers, up to the blank line
                    pass
                return bytes(body)
            if len(body) + size > MAX_BODY_BYTES:
                raise ReplyLost("bad_reply", f"reply body is over {MAX_BODY_BYTES} bytes")
            body += self._read_exactly(size)
            if self._read_line():
                raise ReplyLost("bad_reply", "malformed or oversized chunked reply")

    def _read_to_end(self) -> bytes:
        while len(self._buffer) <= MAX_BODY_BYTES:
            try:
                self._fill()
            except ReplyLost:
                body = bytes(self._buffer)
                self._buffer.clear()
                return body
        raise ReplyLost("bad_reply", f"reply body is over {MAX_BODY_BYTES} bytes")


_DECIMAL = re.compile(r"[0-9]{1,18}")
_HEXADECIMAL = re.compile(r"[0-9A-Fa-f]{1,15}")


def _int(text: str, what: str, hexadecimal: bool = False) -> int:
    """A non-negative number as HTTP writes it (digits only: no sign, no underscore, no 0x)."""
    if not (_HEXADECIMAL if hexadecimal else _DECIMAL).fullmatch(text):
        raise ReplyLost("bad_reply", f"malformed {what} in the reply")
    return int(text, 16 if hexadecimal else 10)


class Pool:
    """Keep-alive connections to one HTTPS host for many threads: an idle one is reused, else one is
    opened; at most `size` idle ones are kept.

    proxy: an "http://[user:password@]host:port" URL to tunnel through with CONNECT, or None.
    """

    def __init__(self, host: str, port: int, context: ssl.SSLContext, *, connect_timeout: float,
                 read_timeout: float, size: int, proxy: str | None = None) -> None:
        self._host, self._port = host, port
        self._context = context
        self._connect_timeout, self._read_timeout = connect_timeout, read_timeout
        self._size = size
        self._proxy = _proxy_parts(proxy) if proxy else None
        if ":" in host:  # an IPv6 address is bracketed in URLs and headers
            literal = f"[{host}]"
        else:  # a host name beyond ASCII travels in its IDNA form (xn--...), as DNS and TLS see it
            literal = host.encode("idna").decode("ascii")
        self._target = f"{literal}:{port}"
        self._host_header = literal if port == 443 else self._target
        self._lock = threading.Lock()
        self._idle: list[Connection] = []
        self._closed = False
        self.connections_opened = 0
        self.requests_sent = 0

    def close(self) -> None:
        """Close the idle connections, and each one in use when its request ends; a later request
        opens the pool again."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        """POST body to path with headers (a dict of str); a Reply, or ConnectFailed or ReplyLost."""
        request = self._request_bytes(path, body, headers)
        connection = self._take()
        with self._lock:
            self.requests_sent += 1
            self._closed = False
        try:
            reply, keep_alive = connection.exchange(request, self._read_timeout)
        except ReplyLost:
            connection.close()
            raise
        except OSError as error:  # timeouts, resets, and TLS errors after the handshake
            connection.close()
            kind = "read_timeout" if isinstance(error, TimeoutError) else "connection_lost"
            raise ReplyLost(kind, _describe(error)) from None
        if keep_alive:
            self._give(connection)
        else:
            connection.close()
        return reply

    def _request_bytes(self, path: str, body: bytes, headers: dict[str, str]) -> bytes:
        lines = [f"POST {urllib.parse.quote(path, safe=PATH_SAFE)} HTTP/1.1", f"Host: {self._host_header}"]
        lines += [f"{name}: {value}" for name, value in headers.items()]
        lines.append(f"Content-Length: {len(body)}")
        head = "\r\n".join(lines)
        if head.count("\n") != len(lines) - 1 or head.count("\r") != len(lines) - 1:
            raise RequestRefused("a header value holds a line break")  # not repeated: it may hold a token
        try:
            return (head + "\r\n\r\n").encode("ascii") + body
        except UnicodeEncodeError:  # a non-ASCII host name or header value: HTTP/1.1 headers cannot hold it
            raise RequestRefused("a header holds characters other than ASCII") from None

    def _take(self) -> Connection:
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                return self._open()
            if not connection.stale():
                return connection
            connection.close()

    def _give(self, connection: Connection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self._size:
                self._idle.append(connection)
                return
        connection.close()

    def _open(self) -> Connection:
        target = (self._proxy.host, self._proxy.port) if self._proxy else (self._host, self._port)
        try:
            sock = socket.create_connection(target, timeout=self._connect_timeout)
        except (OSError, UnicodeError) as error:  # UnicodeError: a host name IDNA cannot encode
            raise ConnectFailed(error, "proxy" if self._proxy else "connect") from None
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._proxy:
                self._tunnel(sock, self._proxy)
            sock = self._context.wrap_socket(sock, server_hostname=self._host)
        except ConnectFailed:
            sock.close()
            raise
        except OSError as error:  # ssl.SSLError and certificate failures are OSErrors too
            sock.close()
            raise ConnectFailed(error, "tls" if isinstance(error, ssl.SSLError) else "connect") from None
        sock.settimeout(self._read_timeout)
        with self._lock:
            self.connections_opened += 1
        _LOG.debug("opened a connection to %s%s", self._target, " through the proxy" if self._proxy else "")
        return Connection(sock)

    def _tunnel(self, sock: socket.socket, proxy: "_Proxy") -> None:
        """Ask the proxy for a tunnel to the host (HTTP CONNECT); TLS then runs through it."""
        target = self._target
        lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
        if proxy.authorization:
            lines.append(f"Proxy-Authorization: {proxy.authorization}")
        tunnel = Connection(sock)
        try:
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            head = tunnel._read_head()
        except (OSError, ReplyLost) as error:
            raise ConnectFailed(error, "proxy") from None
        if not 200 <= head.status < 300 or tunnel._buffer:
            raise ConnectFailed(OSError(f"the proxy refused the tunnel to {target} (HTTP {head.status})"), "proxy")


# RFC 3986 pchar: what a path may hold unencoded; anything else (non-ASCII topics, %) is percent-encoded.
PATH_SAFE = "/!$&'()*+,;=:@"


class _Proxy(NamedTuple):
    host: str
    port: int
    authorization: str  # a Proxy-Authorization value, or ""


def _proxy_parts(url: str) -> _Proxy:
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme != "http":
        raise ValueError(f"only http:// proxies (HTTP CONNECT) are supported, not {parsed.scheme}://")
    authorization = ""
    if parsed.username is not None:
        user = urllib.parse.unquote(parsed.username)
        password = urllib.parse.unquote(parsed.password or "")
        authorization = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return _Proxy(parsed.hostname or "", parsed.port or 80, authorization)


def _describe(error: BaseException) -> str:
    """A short text for a socket error; never a header (a token travels in one)."""
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__
