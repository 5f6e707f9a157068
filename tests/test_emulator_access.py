"""Who may change the emulator: only its console and deliberate clients, never a page of another site.

A browser is a loopback client, and a text/plain POST or a form post needs no CORS preflight: so every
change needs the run's admin token, a JSON body and no cross-site marks, and refused requests leave the
emulator as it was. Reads stay open to loopback clients; with --admin-anywhere they need the token too.
"""
import json

import pytest
import requests

from connector.emulator import Emulator
from connector.emulator.access import TOKEN_HEADER
from emulator_support import own_topic, publish, token

EVIL = "https://evil.example"
CHANGES = [("/devices", [{"productKey": "evil", "deviceName": "x", "deviceSecret": "y"}]),
           ("/products", [{"productKey": "evil", "topicCategories": []}]), ("/tokens/expire", {}),
           ("/faults", {"drop_rate": 1}), ("/limits", {"device_qps": 1}), ("/reset", {"products": True})]


def _state(emulator):
    """Everything an admin change can touch, as the admin API shows it."""
    counters = emulator.counters()
    return {"messages": emulator.messages(), "devices": emulator._admin("GET", "/devices"),
            "products": emulator.products(), "faults": emulator.faults(), "limits": emulator.limits(),
            "device_requests": {k: v for k, v in counters["requests"].items() if k != "admin"}}


def _post(emulator, path, body, headers):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return requests.post(f"{emulator.endpoint}/_emulator{path}", data=data, headers=headers,
                         verify=emulator.ca_file, timeout=30)


@pytest.fixture
def stocked(clean_emulator, devices):
    """The session emulator holding a message and a live token, so that a wipe or an expiry shows."""
    value = token(clean_emulator, devices[0])
    publish(clean_emulator, value, own_topic(devices[0]), b"kept")
    yield clean_emulator, value
    clean_emulator.reset(products=True)


def test_the_issues_two_commands_are_refused_and_change_nothing(stocked, devices):
    emulator, live_token = stocked
    before = _state(emulator)
    added = _post(emulator, "/devices", '[{"productKey":"evil","deviceName":"x","deviceSecret":"y"}]',
                  {"Origin": EVIL, "Content-Type": "text/plain"})
    wiped = _post(emulator, "/reset", "x", {"Origin": EVIL, "Content-Type": "text/plain"})
    assert (added.status_code, wiped.status_code) == (403, 403)
    assert "cross-site" in added.json()["error"]
    assert _state(emulator) == before
    assert publish(emulator, live_token, own_topic(devices[0])).json()["code"] == 0  # the token still works


@pytest.mark.parametrize("path, body", CHANGES)
@pytest.mark.parametrize("marks, status", [
    ({"Origin": EVIL}, 403),  # a page of another site, even with JSON and the token
    ({"Origin": "null"}, 403),  # a sandboxed page or a file
    ({"Sec-Fetch-Site": "cross-site"}, 403),
    ({"Sec-Fetch-Site": "same-site"}, 403),  # https://localhost:OTHER_PORT is the same site, not the same origin
    ({TOKEN_HEADER: None}, 403),  # a tool or page without the token
    ({TOKEN_HEADER: "not-the-token"}, 403),
    ({"Content-Type": "text/plain"}, 415),  # what a page may send cross-site without asking
    ({"Content-Type": "application/x-www-form-urlencoded"}, 415),  # a form post
    ({"Content-Type": None}, 415),
])
def test_every_change_needs_its_own_origin_the_token_and_json(stocked, path, body, marks, status):
    emulator, _ = stocked
    headers = {"Content-Type": "application/json", TOKEN_HEADER: emulator.admin_token, **marks}
    before = _state(emulator)
    refused = _post(emulator, path, body, {k: v for k, v in headers.items() if v is not None})
    assert refused.status_code == status, refused.text
    assert _state(emulator) == before


@pytest.mark.parametrize("path, body", CHANGES)
def test_the_console_and_tools_may_change_it(stocked, path, body):
    emulator, _ = stocked
    origin = emulator.endpoint  # the console's own requests: same origin, as a browser marks them
    for marks in ({"Origin": origin, "Sec-Fetch-Site": "same-origin"}, {"Origin": origin}, {}):
        headers = {"Content-Type": "application/json; charset=utf-8", TOKEN_HEADER: emulator.admin_token, **marks}
        assert _post(emulator, path, body, headers).status_code == 200


def test_reads_answer_loopback_clients_without_the_token(stocked):
    emulator, _ = stocked
    for path in ("/messages", "/counters", "/traffic", "/devices", "/products", "/faults", "/limits",
                 "/console/messages", "/console/devices"):
        reply = requests.get(f"{emulator.endpoint}/_emulator{path}", verify=emulator.ca_file, timeout=30)
        assert reply.status_code == 200, path
    # a page of another site cannot read the replies (no CORS headers); its reads are refused all the same
    reply = requests.get(f"{emulator.endpoint}/_emulator/messages", headers={"Sec-Fetch-Site": "cross-site"},
                         verify=emulator.ca_file, timeout=30)
    assert reply.status_code == 403 and "Access-Control-Allow-Origin" not in reply.headers


def test_admin_anywhere_needs_the_token_for_reads_too(devices):
    with Emulator(devices, extra_args=["--admin-anywhere"]) as emulator:
        for path in ("/messages", "/counters", "/console/messages", "/limits"):
            url = f"{emulator.endpoint}/_emulator{path}"
            assert requests.get(url, verify=emulator.ca_file, timeout=30).status_code == 403, path
            assert requests.get(url, headers={TOKEN_HEADER: emulator.admin_token}, verify=emulator.ca_file,
                                timeout=30).status_code == 200, path
        # the page itself holds no data: it loads, and its address gives it the token
        assert requests.get(emulator.console, verify=emulator.ca_file, timeout=30).status_code == 200
        emulator.set_faults(latency_ms=1)  # the Emulator helper passes the token
        assert emulator.faults()["latency_ms"] == 1


def test_each_run_has_its_own_token(fresh_emulator):
    running = fresh_emulator()
    first = running.admin_token
    running.restart()
    assert running.admin_token != first
    refused = _post(running, "/faults", {"drop_rate": 1},
                    {"Content-Type": "application/json", TOKEN_HEADER: first})
    assert refused.status_code == 403 and running.faults()["drop_rate"] == 0


def test_the_token_never_shows_in_the_log_or_the_admin_replies(fresh_emulator):
    running = fresh_emulator(extra_args=["--log-level", "DEBUG"])
    running.set_faults(seed=1)
    replies = [json.dumps(running._admin("GET", path)) for path in ("/counters", "/faults", "/limits", "/devices")]
    assert not any(running.admin_token in text for text in replies)
    assert running.admin_token not in running.stderr()


def test_a_refusal_names_what_is_missing(emulator):
    reply = _post(emulator, "/faults", {}, {"Content-Type": "application/json"})
    assert reply.status_code == 403
    assert "X-Emulator-Token" in reply.json()["error"] and "console address" in reply.json()["error"]
