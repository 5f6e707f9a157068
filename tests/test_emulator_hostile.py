"""Hostile and broken requests: none answers 500 or hurts the emulator, and a shared machine's limits hold.

Malformed, deeply nested, huge, wrongly encoded and truncated bodies on /auth and /topic get the
platform's codes (10001 mostly), broken HTTP a 4xx; admin bodies are bounded and validated; idle and
slow connections are cut off, request headers are bounded. Each refused request stores nothing.
"""
import json
import socket
import ssl
import time

import pytest

from connector.emulator.access import TOKEN_HEADER
from connector.emulator.admin import MAX_BODY_BYTES
from connector.emulator.server import MAX_HEADERS
from connector.protocol import codes
from emulator_support import (
    auth_params,
    exchange,
    own_topic,
    raw_request,
    read_raw_reply,
    tls_socket,
    token,
)

JSON = ("Content-Type", "application/json")
OCTETS = ("Content-Type", "application/octet-stream")
TIMEOUTS = ["--idle-timeout", "1", "--request-timeout", "1"]
CUT_OFF_WITHIN = 10  # seconds: the limits are 1 s; without them a connection would stay for 60 s or more


def _signed(device, **fields):
    return json.dumps({**auth_params(device), **fields}).encode()


AUTH_CASES = {
    "100,000 [": (b"[" * 100_000, [JSON], codes.PARAM_ERROR),
    "an object nested 100,000 deep": (b'{"a":' * 100_000, [JSON], codes.PARAM_ERROR),
    "a list nested 900 deep": (b"[" * 900 + b"]" * 900, [JSON], codes.PARAM_ERROR),
    "larger than 128 KB": (b'{"a":"' + b"x" * 140_000 + b'"}', [JSON], codes.PARAM_ERROR),
    "not UTF-8": (b'{"productKey":"\xff\xfe"}', [JSON], codes.PARAM_ERROR),
    "truncated JSON": (b'{"productKey":"pk","devi', [JSON], codes.PARAM_ERROR),
    "NaN": (b'{"timestamp": NaN}', [JSON], codes.PARAM_ERROR),
    "a number of 5,000 digits": (b'{"timestamp": ' + b"9" * 5000 + b"}", [JSON], codes.PARAM_ERROR),
    "gzip that is not gzip": (b"not gzip", [JSON, ("Content-Encoding", "gzip")], codes.PARAM_ERROR),
    "no Content-Type": (b"{}", [], codes.PARAM_ERROR),
    "a Content-Type of 300 characters": (b"{}", [("Content-Type", "a/" + "b" * 300)], codes.PARAM_ERROR),
    "a form": (b"productKey=pk", [("Content-Type", "application/x-www-form-urlencoded")], codes.PARAM_ERROR),
}


def _device_cases(device):
    return {
        **AUTH_CASES,
        "a lone surrogate in a signed field": (_signed(device, extra="\ud800"), [JSON], codes.PARAM_ERROR),
        "a lone surrogate in a field name": (_signed(device, **{"\udfff": "x"}), [JSON], codes.PARAM_ERROR),
        "a signature that is not ASCII": (_signed(device, sign="é" * 40), [JSON], codes.AUTH_CHECK_ERROR),
        "a timestamp of 1e999": (_signed(device, timestamp="1e999"), [JSON], codes.PARAM_ERROR),
    }


def _counts(emulator):
    counters = emulator.counters()
    return counters["messages"], {k: v for k, v in counters["requests"].items() if k != "admin"}


@pytest.mark.parametrize("case", sorted(_device_cases({"productKey": "p", "deviceName": "d", "deviceSecret": "s"})))
def test_broken_auth_bodies_get_the_platforms_codes(clean_emulator, devices, case):
    body, headers, code = _device_cases(devices[0])[case]
    reply = exchange(clean_emulator, raw_request("POST", "/auth", headers, body))
    assert reply.status == 200 and reply.json()["code"] == code, reply.body
    assert len(reply.body) <= 255  # the legacy C SDK's buffer, whatever the complaint
    assert clean_emulator.counters()["messages"] == 0


@pytest.mark.parametrize("path, headers, body, code", [
    ("/topic{own}", [OCTETS, ("password", "{token}"), ("Content-Encoding", "gzip")], b"\x1f\x8b...",
     codes.PARAM_ERROR),
    ("/topic{own}", [OCTETS, ("password", "{token}")], b"x" * 131_073, codes.PARAM_ERROR),
    # percent-encoded bytes that are no UTF-8 text stay encoded: not a topic of the device's
    ("/topic/%ed%a0%80/{pk}/{dn}/user/update", [OCTETS, ("password", "{token}")], b"x", codes.PUBLISH_MESSAGE_ERROR),
    ("/topic/%ff%fe", [OCTETS, ("password", "{token}")], b"x", codes.PUBLISH_MESSAGE_ERROR),
    ("/topic{own}", [OCTETS, ("password", b"\xff\xfe")], b"x", codes.CHECK_TOKEN_ERROR),
    ("/topic{own}", [OCTETS, ("password", "x" * 8000)], b"x", codes.CHECK_TOKEN_ERROR),
    ("/topic{own}", [("Content-Type", "text/plain; x=" + "y" * 7000), ("password", "{token}")], b"x",
     codes.PARAM_ERROR),
    ("/topic{own}?" + "q" * 7000, [OCTETS, ("password", "{token}")], b"x", codes.PARAM_ERROR),
    ("/topic", [OCTETS, ("password", "{token}")], b"x", codes.PARAM_ERROR),
])
def test_broken_publishes_get_the_platforms_codes_and_store_nothing(clean_emulator, devices, path, headers, body,
                                                                    code):
    device = devices[0]
    value = token(clean_emulator, device)
    fill = {"own": own_topic(device), "pk": device["productKey"], "dn": device["deviceName"], "token": value}
    headers = [(name, v.format(**fill) if isinstance(v, str) and "{" in v else v) for name, v in headers]
    reply = exchange(clean_emulator, raw_request("POST", path.format(**fill), headers, body))
    assert reply.status == 200 and reply.json()["code"] == code, reply.body
    assert clean_emulator.counters()["messages"] == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
def test_odd_methods_on_the_device_channel(clean_emulator, devices, method):
    for path in ("/auth", "/topic" + own_topic(devices[0])):
        reply = exchange(clean_emulator, raw_request(method, path, [JSON], b"{}"), head=method == "HEAD")
        assert reply.status == 200
        if method != "HEAD":
            assert reply.json()["code"] == codes.PARAM_ERROR and "only POST" in reply.json()["message"]
    assert _counts(clean_emulator)[0] == 0


@pytest.mark.parametrize("data", [
    b"FOO /auth HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",  # a method HTTP does not know
    b"POST /auth HTTP/9.9\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n",
    b"POST /auth HTTP/1.1\r\nHost: localhost\r\nContent-Length: -1\r\n\r\n",
    b"POST /auth HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /auth HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
    b"POST /auth HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"POST /auth HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n",
    b"POST /auth HTTP/1.1\r\nHo\x00st: localhost\r\n\r\n",
    b"POST /topic/a/b/user/c HTTP/1.1\r\nHost: localhost\r\npassword: a\x00b\r\nContent-Length: 0\r\n\r\n",
    b"\x16\x03\x01 not HTTP at all\r\n\r\n",
])
def test_broken_http_is_a_4xx(clean_emulator, data):
    reply = exchange(clean_emulator, data)
    assert reply is not None and 400 <= reply.status < 500
    assert _counts(clean_emulator) == (0, {})


def test_a_truncated_body_stores_nothing_and_the_server_carries_on(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    cut = raw_request("POST", "/topic" + own_topic(devices[0]), [OCTETS, ("password", value)], b"x" * 10, length=100)
    assert exchange(clean_emulator, cut, shut_write=True) is None
    cut_auth = raw_request("POST", "/auth", [JSON], _signed(devices[0])[:20], length=200)
    assert exchange(clean_emulator, cut_auth, shut_write=True) is None
    assert clean_emulator.counters()["messages"] == 0
    after = raw_request("POST", "/topic" + own_topic(devices[0]), [OCTETS, ("password", value)], b"after")
    reply = exchange(clean_emulator, after)
    assert reply.json()["code"] == 0


ADMIN_CASES = [
    ("/faults", b"[" * 100_000, 400),
    ("/faults", b'{"seed": [1]}', 400),
    ("/faults", b'{"seed": true}', 400),
    ("/faults", b'{"latency_ms": 1e300}', 400),
    ("/faults", b'{"latency_ms": NaN}', 400),
    ("/faults", b'{"error_rate": {"\xc2\xb2": 0.5}}', 400),
    ("/faults", b'{"error_rate": {"30001": 1}, "drop_rate": 2}', 400),  # nothing of it applied
    ("/limits", b'{"device_qps": 1' + b"0" * 400 + b"}", 400),
    ("/limits", b'{"token_ttl": Infinity}', 400),
    ("/limits", b'{"account_qps": 1e999}', 400),
    ("/limits", b'{"device_qps": 5, "account_qps": -1}', 400),
    ("/devices", b"\xff\xfe\x00\x00", 400),
    ("/devices", b'[{"productKey": "a", "deviceName": "b", "deviceSecret": "c"}, {}]', 400),  # none added
    ("/products", b'{"productKey": 1}', 400),
    ("/reset", b'{"products": "yes"}', 400),
    ("/reset", b"[]", 400),
    ("/tokens/expire", b"{", 400),
]


@pytest.mark.parametrize("path, body, status", ADMIN_CASES)
def test_broken_admin_bodies_are_refused_and_change_nothing(clean_emulator, path, body, status):
    before = (clean_emulator.faults(), clean_emulator.limits(), clean_emulator._admin("GET", "/devices"),
              clean_emulator.products())
    headers = [JSON, (TOKEN_HEADER, clean_emulator.admin_token)]
    reply = exchange(clean_emulator, raw_request("POST", "/_emulator" + path, headers, body))
    assert reply.status == status and reply.json()["error"], reply.body
    assert (clean_emulator.faults(), clean_emulator.limits(), clean_emulator._admin("GET", "/devices"),
            clean_emulator.products()) == before


def test_admin_bodies_are_bounded(clean_emulator):
    before = clean_emulator._admin("GET", "/devices")
    headers = [JSON, (TOKEN_HEADER, clean_emulator.admin_token)]
    announced = raw_request("POST", "/_emulator/devices", headers, b"[", length=MAX_BODY_BYTES + 1)
    assert exchange(clean_emulator, announced).status == 413  # refused on its Content-Length, unread
    with tls_socket(clean_emulator) as sock:  # chunked: refused once it grows past the bound
        sock.sendall(b"POST /_emulator/devices HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"%s: %s\r\nTransfer-Encoding: chunked\r\n\r\n" % (TOKEN_HEADER.encode(),
                                                                          clean_emulator.admin_token.encode()))
        chunk = b" " * 1_000_000
        try:
            for _ in range(MAX_BODY_BYTES // len(chunk) + 2):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the server stopped reading
        assert read_raw_reply(sock).status == 413
    assert clean_emulator._admin("GET", "/devices") == before


def test_request_headers_are_bounded(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    long_line = raw_request("POST", "/topic" + own_topic(devices[0]),
                            [OCTETS, ("password", value), ("X-Long", "y" * 9000)], b"x")
    many = raw_request("POST", "/topic" + own_topic(devices[0]),
                       [OCTETS, ("password", value)] + [(f"X-H{i}", "1") for i in range(MAX_HEADERS)], b"x")
    long_path = raw_request("POST", "/topic/" + "a" * 9000, [OCTETS, ("password", value)], b"x")
    for data in (long_line, many, long_path):
        reply = exchange(clean_emulator, data)
        assert reply is not None and 400 <= reply.status < 500, reply and reply.status
    assert clean_emulator.counters()["messages"] == 0


@pytest.fixture(scope="module")
def impatient(devices):
    """An emulator of this module's whose idle and request timeouts are 1 s."""
    from connector.emulator import Emulator

    with Emulator(devices, extra_args=TIMEOUTS) as running:
        yield running


def _closed_within(sock, seconds):
    """Seconds until the server closed the connection (reading nothing but a possible reply), or None."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return None
    except (ConnectionResetError, ssl.SSLError):
        pass
    return time.monotonic() - started


def test_an_idle_connection_is_closed(impatient, devices):
    with tls_socket(impatient) as sock:  # never sends a request
        assert _closed_within(sock, CUT_OFF_WITHIN) is not None
    with tls_socket(impatient) as sock:  # idle after a reply on a keep-alive connection
        sock.sendall(raw_request("POST", "/auth", [JSON], _signed(devices[0])))
        assert read_raw_reply(sock).json()["code"] == 0
        assert _closed_within(sock, CUT_OFF_WITHIN) is not None


def test_a_connection_that_never_completes_its_tls_handshake_is_closed(impatient):
    with socket.create_connection(("127.0.0.1", impatient.port), timeout=CUT_OFF_WITHIN) as sock:
        assert _closed_within(sock, CUT_OFF_WITHIN) is not None


def test_headers_sent_slowly_are_cut_off(impatient):
    with tls_socket(impatient) as sock:
        sock.sendall(b"POST /auth HTTP/1.1\r\nHost: local")
        closed = None
        for _ in range(CUT_OFF_WITHIN * 2):  # a byte every half second keeps the connection busy, not alive
            try:
                sock.sendall(b"h")
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                closed = True
                break
            time.sleep(0.5)
        assert closed or _closed_within(sock, 1) is not None


@pytest.mark.parametrize("path, headers", [
    ("/topic/a/b/user/update", [OCTETS, ("password", "x")]),
    ("/auth", [JSON]),
    ("/_emulator/faults", [JSON, (TOKEN_HEADER, "{token}")]),
])
def test_a_body_sent_slowly_is_answered_408_and_closed(impatient, path, headers):
    headers = [(n, v.replace("{token}", impatient.admin_token)) for n, v in headers]
    before = impatient.counters()
    with tls_socket(impatient) as sock:
        sock.sendall(raw_request("POST", path, headers, b"{", length=100))
        sock.settimeout(CUT_OFF_WITHIN)
        reply = read_raw_reply(sock)
        assert reply.status == 408 and reply.headers.get("Connection") == "close"
        assert _closed_within(sock, CUT_OFF_WITHIN) is not None
    after = impatient.counters()
    assert after["messages"] == before["messages"] and after["faults"] == before["faults"]
