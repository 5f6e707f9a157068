"""Property: no request, however made, gets a 5xx from the emulator or stops it, and a refused request
leaves it as it was. Hypothesis writes the requests byte by byte (method, path, headers, body, some cut
short) for the device channel and the admin API, and sends them over real TLS to a running emulator.
"""
import json

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from connector.emulator import Emulator, make_devices
from connector.emulator.access import TOKEN_HEADER
from emulator_support import auth_params, exchange, raw_request

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ADMIN_PATHS = ["/devices", "/products", "/tokens/expire", "/faults", "/limits", "/reset", "/messages",
               "/counters", "/traffic", "/console/messages", "/console/devices", "/ui", "/ui/app.js"]

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12)
_header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)


@pytest.fixture(scope="module")
def target():
    """An emulator of this module's, short timeouts so that a request the fuzzer cut short ends soon."""
    devices = make_devices(2, product_key="pkFuzz")
    with Emulator(devices, extra_args=["--idle-timeout", "2", "--request-timeout", "2"]) as emulator:
        yield emulator


def _state(emulator):
    counters = emulator.counters()
    return {"messages": counters["messages"], "devices": emulator._admin("GET", "/devices"),
            "products": emulator.products(), "faults": emulator.faults(), "limits": emulator.limits()}


@st.composite
def _bodies(draw, device):
    """Bodies near the valid ones and far from them."""
    return draw(st.one_of(
        st.binary(max_size=300),
        st.builds(lambda value: json.dumps(value).encode(), _json),
        st.builds(lambda n, opener: opener * n, st.sampled_from([1, 100, 1_000, 5_000, 100_000]),
                  st.sampled_from([b"[", b'{"a":', b'{"clientId":[', b"\xff"])),
        st.builds(lambda extra: json.dumps({**auth_params(device), **extra}).encode(),
                  st.dictionaries(st.text(max_size=10), st.text(max_size=10) | st.integers(), max_size=3)),
        st.builds(lambda n: b"x" * n, st.sampled_from([0, 131_072, 131_073, 200_000])),
    ))


@st.composite
def _requests(draw, emulator, paths, tokens, proper):
    """(request bytes, whether the body is cut short, method). proper(path) gives the headers a
    well-made request to that path has: most requests start from them, then the fuzzer adds its own."""
    device = emulator.devices[0]
    method = draw(st.sampled_from(["POST"] * 12 + ["GET", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]))
    paths = [p.format(pk=device["productKey"], dn=device["deviceName"]) for p in paths]
    tail = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=30)
    path = draw(st.sampled_from(paths)) + (draw(tail) if draw(st.integers(0, 4)) == 0 else "")
    headers = proper(path) if draw(st.integers(0, 3)) else []
    headers += draw(st.lists(st.one_of(
        st.tuples(st.just("Content-Type"), st.sampled_from(
            ["application/json", "application/octet-stream", "text/plain", "application/json; charset=utf-16",
             "multipart/form-data; boundary=x", ""]) | _header_text),
        st.tuples(st.just("password"), st.sampled_from(tokens) | _header_text),
        st.tuples(st.just(TOKEN_HEADER), st.sampled_from(tokens) | _header_text),
        st.tuples(st.just("Origin"), st.sampled_from(["https://evil.example", "null", emulator.endpoint])),
        st.tuples(st.just("Sec-Fetch-Site"), st.sampled_from(["cross-site", "same-site", "same-origin", "none"])),
        st.tuples(st.sampled_from(["Content-Encoding", "Transfer-Encoding", "Expect", "Connection", "Upgrade"]),
                  st.sampled_from(["gzip", "deflate", "identity", "100-continue", "close", "Upgrade", "websocket"])),
        st.tuples(st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e, exclude_characters=":"),
                          min_size=1, max_size=20), _header_text),
    ), max_size=6))
    body = draw(_bodies(device))
    cut = draw(st.integers(0, 9)) == 0 and len(body) > 1
    length = len(body) + 10 if cut else None
    return raw_request(method, path, headers, body, length=length), cut, method


def _send(emulator, request):
    """Send a fuzzed request: (reply or None, state before, state after), checking what holds for any."""
    data, cut, method = request
    before = _state(emulator)
    reply = exchange(emulator, data, shut_write=cut, head=method == "HEAD", timeout=30)
    after = _state(emulator)  # the emulator still answers: nothing stopped it
    assert emulator._process.poll() is None
    if reply is None:  # closed without a reply: only a body cut short may be, and it changed nothing
        assert cut and after == before, data[:300]
    else:
        assert reply.status < 500, (reply.status, reply.body[:300], data[:300])
    return reply, before, after


def _code(reply):
    try:
        return json.loads(reply.body).get("code")
    except (ValueError, AttributeError):
        return None


@SETTINGS
@given(data=st.data())
def test_the_device_channel_never_answers_5xx_and_stores_only_what_it_accepts(target, data):
    own = "/topic/{pk}/{dn}/user/update"
    paths = ["/auth", "/auth?_v=1", "/topic", "/topic/", own, own + "?q=1", "/topic/sys/{pk}/{dn}/thing/event/x",
             "/topic/{pk}/other/user/update", "/topic//{pk}", "/topic/%ff/%00/+/#"]
    live = _live_token(target)

    def proper(path):
        if path.startswith("/auth"):
            return [("Content-Type", "application/json")]
        return [("Content-Type", "application/octet-stream"), ("password", live)]

    request = data.draw(_requests(target, paths, [live, "", "0" * 32], proper))
    reply, before, after = _send(target, request)
    stored = (reply is not None and reply.status == 200 and request[0].startswith(b"POST /topic")
              and _code(reply) == 0)
    assert after == dict(before, messages=before["messages"] + stored), request[0][:300]


@SETTINGS
@given(data=st.data())
def test_the_admin_api_never_answers_5xx_and_refusals_change_nothing(target, data):
    proper = [("Content-Type", "application/json"), (TOKEN_HEADER, target.admin_token)]
    request = data.draw(_requests(target, ["/_emulator" + p for p in ADMIN_PATHS], [target.admin_token, "wrong", ""],
                                  lambda path: list(proper)))
    try:
        reply, before, after = _send(target, request)
        if reply is not None and reply.status != 200:
            assert after == before, request[0][:300]
    finally:  # an accepted change (a fault, a limit) must not steer the next example
        target.reset(products=True)


_tokens = {}


def _live_token(emulator):
    """A token of the fuzzed device, made once (a fuzzed admin request may expire it: one more case)."""
    if emulator.endpoint not in _tokens:
        reply = exchange(emulator, raw_request("POST", "/auth", [("Content-Type", "application/json")],
                                               json.dumps(auth_params(emulator.devices[0])).encode()))
        _tokens[emulator.endpoint] = reply.json()["info"]["token"]
    return _tokens[emulator.endpoint]
