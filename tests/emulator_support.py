"""Raw clients for the emulator tests: they speak the wire protocol themselves, verifying TLS."""
import json
import socket
import ssl
import time

import requests
from cryptography import x509

from connector.protocol.signing import sign

_session = requests.Session()


def auth_params(device, method="hmacsha1", timestamp=None, client_id=None, **extra):
    """A signed /auth body for a device dict; timestamp=None sends none."""
    params = {"productKey": device["productKey"], "deviceName": device["deviceName"],
              "clientId": client_id if client_id is not None else f"{device['productKey']}.{device['deviceName']}",
              **extra}
    if timestamp is not None:
        params["timestamp"] = timestamp
    params["sign"] = sign(device["deviceSecret"], params, method)
    params["signmethod"] = method
    return params


def post(emulator, path, body=b"", headers=None, method="POST"):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return _session.request(method, emulator.endpoint + path, data=body, headers=headers or {},
                            verify=emulator.ca_file, timeout=30)


def auth(emulator, body, content_type="application/json", path="/auth"):
    """POST /auth; returns the reply's JSON."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    return post(emulator, path, body, headers).json()


def token(emulator, device, **options):
    reply = auth(emulator, auth_params(device, **options))
    assert reply["code"] == 0, reply
    return reply["info"]["token"]


def own_topic(device, tail="user/update"):
    return f"/{device['productKey']}/{device['deviceName']}/{tail}"


def publish(emulator, token_value, topic, payload=b"x", content_type="application/octet-stream",
            header="password", method="POST"):
    """POST /topic/...; returns the requests.Response (its .json() is the platform reply)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    if token_value is not None:
        headers[header] = token_value
    return post(emulator, "/topic" + topic, payload, headers, method)


def now_ms():
    return int(time.time() * 1000)


def tls_socket(emulator, server_hostname="localhost", cipher=None):
    """A verified TLS socket to the emulator; server_hostname=None sends no SNI (chain still checked)."""
    context = ssl.create_default_context(cafile=emulator.ca_file)
    if cipher:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)
    if server_hostname is None:
        context.check_hostname = False
    return context.wrap_socket(socket.create_connection(("127.0.0.1", emulator.port), timeout=10),
                               server_hostname=server_hostname)


def read_reply(sock, buffer=b""):
    """(head bytes, body bytes, rest) of one HTTP reply, found the way the legacy C SDK finds it."""
    while b"\r\n\r\n" not in buffer:
        buffer += _recv(sock)
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(buffer) < length:
        buffer += _recv(sock)
    return head, buffer[:length], buffer[length:]


def _recv(sock):
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection")
    return chunk


def raw_request(method, path, headers=(), body=b"", length=None):
    """The bytes of an HTTP/1.1 request, written as given (headers: (name, value) pairs; str or bytes)."""
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Host: localhost"]
    for name, value in headers:
        lines.append(_bytes(name) + b": " + _bytes(value))
    lines.append(b"Content-Length: %d" % (len(body) if length is None else length))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _bytes(text):
    return text if isinstance(text, bytes) else text.encode("utf-8")


class RawReply:
    """A reply as read off the wire: status, header lines (names as sent) and body."""

    def __init__(self, head, body):
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split(" ")[1])
        self.headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        self.body = body

    def json(self):
        return json.loads(self.body)


def exchange(emulator, data, *, shut_write=False, head=False, timeout=30):
    """Send raw request bytes on a new verified TLS connection; the RawReply, or None when the server
    closed the connection without replying. shut_write: hang up our side after sending (a truncated
    body); head: the reply to a HEAD request (no body)."""
    with tls_socket(emulator) as sock:
        sock.settimeout(timeout)
        try:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server answered (a 4xx) and closed before taking all of it: read its reply
        return read_raw_reply(sock, head)


def read_raw_reply(sock, head_only=False):
    """One reply (by Content-Length, else to the end), or None when the connection closes first."""
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            chunk = _recv_or_empty(sock)
            if not chunk:
                return None
            buffer += chunk
        head, _, body = buffer.partition(b"\r\n\r\n")
        reply = RawReply(head, b"")
        if reply.status >= 200:
            break
        buffer = body  # an interim reply (100 Continue): the real one follows
    length = "0" if head_only else reply.headers.get("Content-Length")
    while length is None or len(body) < int(length):
        chunk = _recv_or_empty(sock)
        if not chunk:
            break
        body += chunk
    reply.body = body if length is None else body[:int(length)]
    return reply


def _recv_or_empty(sock):
    try:
        return sock.recv(65536)
    except (ConnectionResetError, ssl.SSLError):  # a reset, or a TLS connection cut without close_notify
        return b""


def served_certificate(emulator):
    """The emulator's certificate (cryptography x509), its chain verified with the emulator's CA and
    its names left unchecked: the test compares them itself."""
    context = ssl.create_default_context(cafile=emulator.ca_file)
    context.check_hostname = False
    with context.wrap_socket(socket.create_connection(("127.0.0.1", emulator.port), timeout=10)) as sock:
        return x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))


def mbedtls_accepts_name(certificate, host):
    """Whether mbedTLS 2.x, the TLS stack of the platform's legacy C SDK, accepts the certificate for
    the host it connected to: with a subjectAltName it compares the host with the SAN's DNS names only
    (mbedTLS 2.x parses no other kind), else with the subject's CNs; case-insensitive, and a name
    "*.rest" matches one leading level. IP addresses in the certificate are never looked at."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [a.value for a in certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    host = host.lower()
    for name in (n.lower() for n in names):
        if name == host or (name.startswith("*.") and "." in host and host.split(".", 1)[1] == name[2:]):
            return True
    return False
