"""The admin API: messages, counters, devices, tokens, limits, faults; loopback only; no secrets."""
import json
import time

import pytest
import requests

from connector.emulator import EmulatorError, make_devices
from connector.emulator.admin import is_loopback
from connector.protocol import codes
from emulator_support import auth, auth_params, own_topic, publish, token


def test_messages_page_through_everything_and_filter(clean_emulator, devices):
    first, second = token(clean_emulator, devices[0]), token(clean_emulator, devices[1])
    for i in range(12):
        publish(clean_emulator, first, own_topic(devices[0], f"user/t{i % 2}"), b"a%d" % i)
    publish(clean_emulator, second, own_topic(devices[1]), b"b")
    everything = clean_emulator.messages(page_size=5)
    assert [m["payload"] for m in everything] == [b"a%d" % i for i in range(12)] + [b"b"]
    assert [m["messageId"] for m in everything] == sorted(m["messageId"] for m in everything)
    assert len(clean_emulator.messages(device=(devices[1]["productKey"], devices[1]["deviceName"]))) == 1
    only_t1 = clean_emulator.messages(topic=own_topic(devices[0], "user/t1"), page_size=2)
    assert [m["payload"] for m in only_t1] == [b"a%d" % i for i in range(1, 12, 2)]


def test_messages_rejects_bad_paging(emulator):
    with pytest.raises(EmulatorError, match="400"):
        emulator._admin("GET", "/messages", params={"limit": "0"})


def test_counters_count_requests_by_endpoint_and_code(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    publish(clean_emulator, value, own_topic(devices[0]))
    publish(clean_emulator, None, own_topic(devices[0]))
    auth(clean_emulator, b"{")
    counters = clean_emulator.counters()
    assert counters["requests"]["auth"] == {"0": 1, "10001": 1}
    assert counters["requests"]["topic"] == {"0": 1, "20002": 1}
    assert counters["messages"] == 1 and counters["faults"] == {}


def test_added_devices_can_authenticate(clean_emulator):
    newcomer = make_devices(1, product_key="pkAdded0001")
    assert auth(clean_emulator, auth_params(newcomer[0]))["code"] == codes.AUTH_CHECK_ERROR
    clean_emulator.add_devices(newcomer)
    assert auth(clean_emulator, auth_params(newcomer[0]))["code"] == 0


def test_bad_devices_are_refused(emulator):
    with pytest.raises(EmulatorError, match="400"):
        emulator.add_devices([{"productKey": "pk", "deviceName": "dn"}])


def test_admin_never_shows_secrets_or_tokens(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    publish(clean_emulator, value, own_topic(devices[0]))
    for path in ("/devices", "/counters", "/messages", "/faults", "/limits"):
        text = json.dumps(clean_emulator._admin("GET", path))
        assert value not in text and not any(d["deviceSecret"] in text for d in devices), path


def test_limits_change_and_reset_restores_them(clean_emulator):
    started = clean_emulator.limits()
    assert started == {"device_qps": 30, "account_qps": 10000, "token_ttl": 7 * 24 * 3600}
    assert clean_emulator.set_limits(device_qps=5)["device_qps"] == 5
    with pytest.raises(EmulatorError, match="400"):
        clean_emulator.set_limits(device_qps=0)
    with pytest.raises(EmulatorError, match="400"):
        clean_emulator.set_limits(bogus=1)
    clean_emulator.reset()
    assert clean_emulator.limits() == started


@pytest.mark.parametrize("code", [codes.COMMON_ERROR, codes.PUBLISH_MESSAGE_ERROR])
def test_injected_error_codes_on_topic_store_nothing(clean_emulator, devices, code):
    value = token(clean_emulator, devices[0])
    clean_emulator.set_faults(error_rate={str(code): 1.0})
    reply = publish(clean_emulator, value, own_topic(devices[0])).json()
    assert reply["code"] == code and reply["message"] == codes.MESSAGES[code]
    assert clean_emulator.messages() == []
    assert clean_emulator.counters()["faults"] == {f"error_{code}": 1}


def test_injected_update_session_error_hits_auth_only(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    clean_emulator.set_faults(error_rate={"20004": 1.0})
    assert auth(clean_emulator, auth_params(devices[0]))["code"] == codes.UPDATE_SESSION_ERROR
    assert publish(clean_emulator, value, own_topic(devices[0])).json()["code"] == 0


def test_injected_http_status(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    clean_emulator.set_faults(http_status_rate={"503": 1.0})
    assert publish(clean_emulator, value, own_topic(devices[0])).status_code == 503
    clean_emulator.clear_faults()
    assert clean_emulator.messages() == []
    counters = clean_emulator.counters()
    assert counters["faults"] == {"http_503": 1} and counters["requests"]["topic"] == {"http_503": 1}


def test_injected_drop_before_store(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    clean_emulator.set_faults(drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        publish(clean_emulator, value, own_topic(devices[0]))
    clean_emulator.clear_faults()
    assert clean_emulator.messages() == [] and clean_emulator.counters()["faults"] == {"drop": 1}


def test_injected_drop_after_store_is_ambiguous(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    clean_emulator.set_faults(drop_after_store_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        publish(clean_emulator, value, own_topic(devices[0]), b"accepted")
    clean_emulator.clear_faults()
    assert [m["payload"] for m in clean_emulator.messages()] == [b"accepted"]
    assert clean_emulator.counters()["faults"] == {"drop_after_store": 1}


def test_latency_and_latency_spikes(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    clean_emulator.set_faults(latency_ms=300)
    started = time.monotonic()
    assert publish(clean_emulator, value, own_topic(devices[0])).json()["code"] == 0
    assert time.monotonic() - started >= 0.3
    clean_emulator.set_faults(latency_spike={"rate": 1.0, "ms": 300})
    started = time.monotonic()
    assert publish(clean_emulator, value, own_topic(devices[0])).json()["code"] == 0
    assert time.monotonic() - started >= 0.3
    assert clean_emulator.counters()["faults"] == {"latency_spike": 1}
    assert len(clean_emulator.messages()) == 2


def test_seeded_faults_are_reproducible(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    outcomes = []
    for _ in range(2):
        clean_emulator.set_faults(error_rate={"30001": 0.5}, seed=7)
        outcomes.append([publish(clean_emulator, value, own_topic(devices[0])).json()["code"] for _ in range(12)])
    assert outcomes[0] == outcomes[1] and {0, codes.PUBLISH_MESSAGE_ERROR} == set(outcomes[0])


@pytest.mark.parametrize("faults", [
    {"error_rate": {"30001": 1.5}}, {"error_rate": {"99999": 0.1}}, {"drop_rate": -1},
    {"latency_ms": "slow"}, {"nonsense": 1}, {"error_rate": {"10000": 0.6, "30001": 0.6}},
])
def test_bad_fault_configurations_are_refused(emulator, faults):
    with pytest.raises(EmulatorError, match="400"):
        emulator.set_faults(**faults)


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.168.1.20", False), ("::ffff:10.0.0.1", False), ("2001:db8::1", False),
    (None, False), ("not an address", False),
])
def test_loopback_check(address, expected):
    assert is_loopback(address) is expected
