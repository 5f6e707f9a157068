"""The client's HTTP/1.1 transport (connector.client.wire) over real sockets on 127.0.0.1: replies framed
every way HTTP/1.1 allows, replies that break off or are not HTTP, connections the server closed while
idle, non-ASCII topics, and HTTPS through an HTTP CONNECT proxy."""
import base64
import socket
import threading
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from connector.client.errors import TransportError
from connector.client.http import IoTPlatformClient
from connector.emulator import tls
from connector.emulator.tls import ensure_certificates, server_context
from connector.protocol.codes import Action
from connector.protocol.device import Device

TOPIC = "/pk/dn/user/update"
OK = b'{"code":0,"info":{"messageId":42},"message":"success"}'


def _read_request(stream):
    """One request's bytes from a socket file, or None when the client closed."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline()
        if not line:
            return None
        head += line
    length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    return head + stream.read(length)


class LocalServer:
    """A TCP server on 127.0.0.1 handing each connection to handle(), in its accepting thread."""

    def __init__(self, host="127.0.0.1"):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, 0), family=family)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            try:
                self.handle(connection)
            except OSError:  # the client broke the connection off (a refused certificate, say)
                connection.close()

    def close(self):
        self._listener.close()


class CannedServer(LocalServer):
    """A TLS server on 127.0.0.1 answering each request with the next canned reply. A None closes the
    connection: in place of a reply, or right after the reply before it. A reply of HTTP/1.0 or with
    Connection: close closes it too, once sent."""

    def __init__(self, certificates, replies, host="127.0.0.1"):
        self.ca_file, cert, key = certificates
        self._context = server_context(cert, key)
        self._replies = list(replies)
        self.requests, self.connections = [], 0
        super().__init__(host)
        self.endpoint = f"https://{f'[{host}]' if ':' in host else host}:{self.port}"

    def handle(self, raw):
        self.connections += 1
        with self._context.wrap_socket(raw, server_side=True) as conn, conn.makefile("rb") as stream:
            while self._replies:
                request = _read_request(stream)
                if request is None:
                    break
                self.requests.append(request)
                reply = self._replies.pop(0)
                if reply is None:
                    break
                conn.sendall(reply)
                if self._replies and self._replies[0] is None:
                    self._replies.pop(0)
                    break
                if reply.startswith(b"HTTP/1.0") or b"Connection: close" in reply:
                    break


@pytest.fixture
def canned(tmp_path):
    servers = []

    def start(*replies, host="127.0.0.1", certificates=None):
        certificates = certificates or ensure_certificates(str(tmp_path / host.replace(":", "_")), hosts=(host,))
        servers.append(CannedServer(certificates, replies, host))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _publish(server, payload=b"x", client=None):
    with IoTPlatformClient(server.endpoint, ca_file=server.ca_file) as client:
        return client.publish("0" * 32, TOPIC, payload), client.connections_opened


def _length(body, extra=b""):
    return b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + extra + \
        b"Content-Length: %d\r\n\r\n" % len(body) + body


# -- replies framed every way ------------------------------------------------------------------------

def test_one_write_carries_head_and_body_and_the_connection_is_kept(canned):
    server = canned(_length(OK), _length(OK))
    with IoTPlatformClient(server.endpoint, ca_file=server.ca_file) as client:
        assert [client.publish("0" * 32, TOPIC, b"p%d" % i) for i in range(2)] == [42, 42]
        assert (client.connections_opened, client.requests_sent) == (1, 2)
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    assert head.split(b"\r\n")[0] == b"POST /topic/pk/dn/user/update HTTP/1.1"
    assert b"password: " + b"0" * 32 in head and b"Content-Length: 2" in head and body == b"p0"


def test_chunked_reply(canned):
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (OK[:10], OK[10:])) + b"0\r\n\r\n"
    server = canned(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks, _length(OK))
    with IoTPlatformClient(server.endpoint, ca_file=server.ca_file) as client:
        assert client.publish("0" * 32, TOPIC, b"x") == 42
        assert client.publish("0" * 32, TOPIC, b"x") == 42
        assert client.connections_opened == 1


def test_connection_close_and_http_1_0_replies_open_a_new_connection(canned):
    server = canned(_length(OK, b"Connection: close\r\n"), b"HTTP/1.0 200 OK\r\n\r\n" + OK, _length(OK))
    with IoTPlatformClient(server.endpoint, ca_file=server.ca_file) as client:
        assert [client.publish("0" * 32, TOPIC, b"x") for _ in range(3)] == [42, 42, 42]
        assert client.connections_opened == 3
    assert len(server.requests) == 3


def test_transfer_encoding_wins_over_content_length_and_the_connection_is_not_reused(canned):
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(OK), OK)
    server = canned(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked,
                    None, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\n\r\n" + OK, None, _length(OK))
    with IoTPlatformClient(server.endpoint, ca_file=server.ca_file) as client:
        assert [client.publish("0" * 32, TOPIC, b"x") for _ in range(3)] == [42, 42, 42]
        assert client.connections_opened == 3


def test_ipv6_literal_endpoint_is_bracketed_in_the_host_header(canned):
    server = canned(_length(OK), host="::1")
    assert _publish(server) == (42, 1)
    assert b"\r\nHost: [::1]:%d\r\n" % server.port in server.requests[0]


def test_a_certificate_naming_the_host_only_in_its_common_name_is_refused(canned, tmp_path):
    """Host names are checked against subjectAltName only, as urllib3 and browsers check them."""
    ca_key, server_key = tls._new_key(), tls._new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    ca = tls._build(ca_name, ca_name, ca_key.public_key(), ca_key,
                    [(x509.BasicConstraints(ca=True, path_length=0), True)], days=1)
    server_cert = tls._build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]), ca_name,
                             server_key.public_key(), ca_key, [], days=1)
    paths = [tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem")]
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    server = canned(_length(OK), certificates=[str(p) for p in paths])
    with pytest.raises(TransportError) as caught:
        _publish(server)
    assert caught.value.kind == "tls" and caught.value.action is Action.PERMANENT
    assert server.requests == []


def test_interim_reply_is_skipped(canned):
    server = canned(b"HTTP/1.1 100 Continue\r\n\r\n" + _length(OK))
    assert _publish(server) == (42, 1)


def test_a_reply_without_a_body_is_read_as_empty_and_keeps_the_connection(canned):
    server = canned(b"HTTP/1.1 204 No Content\r\n\r\n", _length(OK))
    with IoTPlatformClient(server.endpoint, ca_file=server.ca_file) as client:
        with pytest.raises(TransportError) as caught:
            client.publish("0" * 32, TOPIC, b"x")
        assert (caught.value.kind, caught.value.http_status) == ("http_status", 204)
        assert client.publish("0" * 32, TOPIC, b"x") == 42
        assert client.connections_opened == 1


@pytest.mark.parametrize("reply, kind", [
    pytest.param(b"SSH-2.0-OpenSSH\r\n\r\n", "bad_reply", id="not-http"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n", "bad_reply", id="bad-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n", "bad_reply", id="negative-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 0x5\r\n\r\n", "bad_reply", id="hex-length"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 2\r\n\r\nhello", "bad_reply",
                 id="two-lengths"),
    pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-2\r\nxx\r\n0\r\n\r\n", "bad_reply",
                 id="negative-chunk"),
    pytest.param(b"HTTP/1.1 200 OK\r\nX-Filler: " + b"y" * 70_000 + b"\r\n\r\n", "bad_reply", id="huge-head"),
    pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + OK[:10], "connection_lost", id="cut-short"),
    pytest.param(None, "connection_lost", id="closed-unanswered"),
])
def test_broken_replies_are_ambiguous_for_a_publish(canned, reply, kind):
    server = canned(reply, None)  # the server closes after its reply
    with pytest.raises(TransportError) as caught:
        _publish(server)
    error = caught.value
    assert (error.kind, error.ambiguous, error.action) == (kind, True, Action.RETRY)
    assert "0" * 32 not in str(error)


# -- replies that never end ----------------------------------------------------------------------------

TOKEN_REPLY = _length(b'{"code":0,"info":{"token":"' + b"7" * 32 + b'"},"message":"success"}')
TRICKLES = {  # a reply head, then what the server sends every 0.5 s for as long as the client listens
    "interim-replies": (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
    "body-byte-by-byte": (b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", b"{"),
    "endless-trailers": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", b"X-Trailer: y\r\n"),
}


class TricklingServer(LocalServer):
    """A TLS server on 127.0.0.1 that answers /auth with a token and every publish with a reply that
    never ends, a little at a time, each connection in a thread of its own."""

    def __init__(self, certificates, trickle):
        self.ca_file, cert, key = certificates
        self._context = server_context(cert, key)
        self._head, self._drip = TRICKLES[trickle]
        self.publishes = 0
        super().__init__()
        self.endpoint = f"https://127.0.0.1:{self.port}"

    def handle(self, raw):
        threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            with self._context.wrap_socket(raw, server_side=True) as conn, conn.makefile("rb") as stream:
                while (request := _read_request(stream)) is not None:
                    if request.startswith(b"POST /auth"):
                        conn.sendall(TOKEN_REPLY)
                        continue
                    self.publishes += 1
                    conn.sendall(self._head)
                    while True:
                        conn.sendall(self._drip)
                        time.sleep(0.5)
        except OSError:  # the client gave up on the reply and closed the connection
            raw.close()


@pytest.fixture(params=sorted(TRICKLES))
def trickling(request, tmp_path):
    server = TricklingServer(ensure_certificates(str(tmp_path / "certificates")), request.param)
    yield server
    server.close()


def test_a_reply_that_never_ends_is_cut_off_at_the_read_timeout_as_ambiguous(trickling):
    """read_timeout bounds the whole reply, not each read: a server sending a little every 0.5 s would
    otherwise hold the request for ever."""
    outcome = {}

    def publish():
        with IoTPlatformClient(trickling.endpoint, ca_file=trickling.ca_file, read_timeout=1) as client:
            try:
                client.publish("0" * 32, TOPIC, b"x")
            except TransportError as error:
                outcome["error"] = error

    attempt = threading.Thread(target=publish, daemon=True)
    attempt.start()
    attempt.join(timeout=30)  # a bound for the test only: the client's own is 1 s
    assert not attempt.is_alive(), "the publish is still reading the reply"
    error = outcome["error"]
    assert (error.kind, error.ambiguous, error.action) == ("read_timeout", True, Action.RETRY)


# -- connections the server closed while idle -----------------------------------------------------

def test_connection_closed_while_idle_is_replaced_before_sending(fresh_emulator, devices):
    emulator = fresh_emulator()
    item = devices[0]
    device, topic = Device(item["productKey"], item["deviceName"]), f"/{item['productKey']}/{item['deviceName']}/user/x"
    with IoTPlatformClient(emulator.endpoint, ca_file=emulator.ca_file) as client:
        client.publish(client.authenticate(device, item["deviceSecret"]), topic, b"before")
        emulator.restart()  # the idle connection is closed by the server; its tokens and messages are gone
        assert client.publish(client.authenticate(device, item["deviceSecret"]), topic, b"after")
        assert client.connections_opened == 2
    assert [m["payload"] for m in emulator.messages()] == [b"after"]


def test_non_ascii_topic_is_percent_encoded_and_arrives_intact(clean_emulator, devices):
    item = devices[1]
    device = Device(item["productKey"], item["deviceName"])
    topic = f"/{item['productKey']}/{item['deviceName']}/user/温度 100%"
    with IoTPlatformClient(clean_emulator.endpoint, ca_file=clean_emulator.ca_file) as client:
        client.publish(client.authenticate(device, item["deviceSecret"]), topic, b"x")
    assert [m["topic"] for m in clean_emulator.messages()] == [topic]


# -- through an HTTP CONNECT proxy -----------------------------------------------------------------

class ConnectProxy(LocalServer):
    """An HTTP proxy on 127.0.0.1 that tunnels CONNECT requests, checking Basic credentials if given."""

    def __init__(self, credentials=None):
        self._expected = "Basic " + base64.b64encode(credentials.encode()).decode() if credentials else None
        self.asked, self.tunnels = [], []  # the CONNECT targets asked for, and those it opened
        super().__init__()

    def handle(self, client):
        threading.Thread(target=self._tunnel, args=(client,), daemon=True).start()

    def _tunnel(self, client):
        with client, client.makefile("rb") as stream:
            head = _read_request(stream).decode()
            target = head.split()[1]
            self.asked.append(target)
            authorization = next((line.split(":", 1)[1].strip() for line in head.split("\r\n")
                                  if line.lower().startswith("proxy-authorization:")), None)
            if self._expected and authorization != self._expected:
                client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n")
                return
            host, port = target.rsplit(":", 1)
            try:
                upstream = socket.create_connection((host, int(port)), timeout=5)
            except OSError:
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                return
            with upstream:
                upstream.settimeout(None)
                self.tunnels.append(target)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                threading.Thread(target=_pipe, args=(upstream, client), daemon=True).start()
                _pipe(client, upstream)


def _pipe(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        try:
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            pass


@pytest.fixture
def proxy():
    running = []

    def start(credentials=None):
        running.append(ConnectProxy(credentials))
        return running[-1]

    yield start
    for each in running:
        each.close()


def _proxy_env(monkeypatch, url, no_proxy=None):
    """HTTPS_PROXY=url, and NO_PROXY as given (unset by default, in either case of its name)."""
    monkeypatch.setenv("HTTPS_PROXY", url)
    monkeypatch.delenv("no_proxy", raising=False)
    if no_proxy:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    else:
        monkeypatch.delenv("NO_PROXY", raising=False)


def test_https_proxy_tunnels_with_credentials_and_keeps_the_connection(clean_emulator, devices, proxy,
                                                                      monkeypatch):
    through = proxy("user:p@ss")
    _proxy_env(monkeypatch, f"http://user:p%40ss@127.0.0.1:{through.port}")
    item = devices[0]
    device = Device(item["productKey"], item["deviceName"])
    with IoTPlatformClient(clean_emulator.endpoint, ca_file=clean_emulator.ca_file) as client:
        client.publish(client.authenticate(device, item["deviceSecret"]), f"/{device.product_key}/"
                       f"{device.device_name}/user/x", b"via proxy")
    assert through.tunnels == [clean_emulator.endpoint.removeprefix("https://")]
    assert [m["payload"] for m in clean_emulator.messages()] == [b"via proxy"]


def test_no_proxy_bypasses_the_proxy(clean_emulator, devices, proxy, monkeypatch):
    through = proxy()
    _proxy_env(monkeypatch, f"http://127.0.0.1:{through.port}", no_proxy="127.0.0.1")
    item = devices[0]
    with IoTPlatformClient(clean_emulator.endpoint, ca_file=clean_emulator.ca_file) as client:
        assert client.authenticate(Device(item["productKey"], item["deviceName"]), item["deviceSecret"])
    assert through.tunnels == []


def test_a_proxy_refusing_the_tunnel_is_a_connect_failure_before_sending(clean_emulator, devices, proxy,
                                                                        monkeypatch):
    through = proxy("user:right")
    _proxy_env(monkeypatch, f"http://user:wrong@127.0.0.1:{through.port}")
    with IoTPlatformClient(clean_emulator.endpoint, ca_file=clean_emulator.ca_file) as client:
        with pytest.raises(TransportError) as caught:
            client.publish("0" * 32, TOPIC, b"x")
    error = caught.value
    assert (error.kind, error.ambiguous, error.action) == ("connect", False, Action.RETRY)
    assert "proxy" in error.message and "407" in error.message and "wrong" not in error.message
    assert clean_emulator.messages() == []


def test_a_host_name_beyond_ascii_travels_in_its_idna_form(proxy, monkeypatch):
    through = proxy()
    _proxy_env(monkeypatch, f"http://127.0.0.1:{through.port}")
    with IoTPlatformClient("https://bücher.invalid", connect_timeout=2) as client:
        with pytest.raises(TransportError) as caught:  # the proxy cannot reach it: nothing was sent
            client.publish("0" * 32, TOPIC, b"x")
    assert caught.value.kind == "connect" and not caught.value.ambiguous and "502" in caught.value.message
    assert through.asked == ["xn--bcher-kva.invalid:443"]


def test_socks_proxies_are_refused_when_the_client_is_made(monkeypatch):
    _proxy_env(monkeypatch, "socks5://127.0.0.1:1080")
    with pytest.raises(ValueError, match="only http:// proxies"):
        IoTPlatformClient("https://iot.example.com")
