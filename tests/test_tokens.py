"""TokenCache against the emulator: single-flight, one token per device, invalidation, renewal after the
assumed lifetime and the refused-device pause (on a fake clock), unknown devices, transport errors."""
import threading
import traceback

import pytest

from connector.client.errors import IoTPlatformError, TransportError, UnknownDevice
from connector.client.http import IoTPlatformClient
from connector.client.tokens import TokenCache
from connector.protocol.codes import Action
from connector.protocol.device import Device


class FakeClock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


def _device(item):
    return Device(item["productKey"], item["deviceName"])


def _topic(device):
    return f"/{device.product_key}/{device.device_name}/user/update"


def _auth_counts(emulator):
    return emulator.counters()["requests"].get("auth", {})


def _in_threads(n, work):
    """Run work(i) in n threads released at once; returns the results (or exceptions) in order."""
    start = threading.Barrier(n)
    results = [None] * n

    def run(i):
        start.wait()
        try:
            results[i] = work(i)
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert not any(thread.is_alive() for thread in threads), "a thread is still waiting for its token"
    return results


@pytest.fixture
def client(emulator):
    with IoTPlatformClient(emulator.endpoint, ca_file=emulator.ca_file) as running:
        yield running


@pytest.fixture
def secrets(devices):
    return {_device(item): item["deviceSecret"] for item in devices}


@pytest.fixture
def clock():
    return FakeClock()


def test_single_flight_for_one_device(clean_emulator, client, secrets, devices):
    device = _device(devices[0])
    cache = TokenCache(client, secrets)
    clean_emulator.set_faults(latency_ms=200)  # the /auth is still under way when every thread asks
    results = _in_threads(32, lambda i: cache.fetch(device))
    clean_emulator.clear_faults()
    assert not [r for r in results if isinstance(r, Exception)]
    tokens = {token for token, _ in results}
    assert len(tokens) == 1
    assert [authenticated for _, authenticated in results].count(True) == 1  # the leader only
    assert _auth_counts(clean_emulator) == {"0": 1} and cache.auth_calls == 1
    [token] = tokens
    assert cache.fetch(device) == (token, False)
    assert client.publish(token, _topic(device), b"x") > 0


def test_one_token_per_device_across_devices(clean_emulator, client, secrets, devices):
    cache = TokenCache(client, secrets)
    order = [_device(devices[i % len(devices)]) for i in range(32)]
    results = _in_threads(32, lambda i: cache.get(order[i]))
    by_device = {}
    for device, token in zip(order, results):
        assert isinstance(token, str)
        by_device.setdefault(device, set()).add(token)
    assert all(len(tokens) == 1 for tokens in by_device.values()) and len(by_device) == len(devices)
    assert len({next(iter(tokens)) for tokens in by_device.values()}) == len(devices)  # no sharing
    assert _auth_counts(clean_emulator) == {"0": len(devices)} and cache.auth_calls == len(devices)
    for device, tokens in by_device.items():
        client.publish(next(iter(tokens)), _topic(device), b"x")  # each token is its own device's
    assert len(clean_emulator.messages()) == len(devices)


def test_failed_auth_reaches_every_waiter_with_one_request(clean_emulator, client, devices):
    device = _device(devices[1])
    cache = TokenCache(client, {device: "wrong"})
    clean_emulator.set_faults(latency_ms=200)
    results = _in_threads(8, lambda i: cache.get(device))
    assert all(isinstance(r, IoTPlatformError) and r.code == 20000 for r in results)
    assert _auth_counts(clean_emulator) == {"20000": 1} and cache.auth_calls == 1


def test_invalidate_drops_only_the_token_given(clean_emulator, client, secrets, devices):
    device, other = _device(devices[0]), _device(devices[1])
    cache = TokenCache(client, secrets)
    first, other_token = cache.get(device), cache.get(other)
    cache.invalidate(device, first)
    second = cache.get(device)
    assert second != first and cache.auth_calls == 3
    cache.invalidate(device, first)  # stale: a thread that held the old token reports it late
    cache.invalidate(other, first)  # another device's token
    assert cache.get(device) == second and cache.get(other) == other_token
    assert _auth_counts(clean_emulator) == {"0": 3} and cache.auth_calls == 3


def test_token_renewed_after_assumed_lifetime(clean_emulator, client, secrets, devices, clock):
    device = _device(devices[2])
    cache = TokenCache(client, secrets, assumed_lifetime=100, clock=clock)
    first = cache.get(device)
    clock.advance(99.9)
    assert cache.fetch(device) == (first, False)
    clock.advance(0.1)
    second, authenticated = cache.fetch(device)
    assert authenticated and second != first
    assert _auth_counts(clean_emulator) == {"0": 2} and cache.auth_calls == 2
    clock.advance(99)
    assert cache.get(device) == second


def test_refused_device_is_not_asked_again_for_a_while(clean_emulator, client, devices, clock):
    device = _device(devices[3])
    secrets = {device: "not-the-secret"}
    cache = TokenCache(client, secrets, refused_retry_after=30, clock=clock)
    with pytest.raises(IoTPlatformError) as first:
        cache.get(device)
    assert first.value.code == 20000 and first.value.action is Action.PERMANENT
    secrets[device] = devices[3]["deviceSecret"]  # fixed, but the pause still holds
    for _ in range(3):
        clock.advance(9.9)
        with pytest.raises(IoTPlatformError) as again:
            cache.get(device)
        assert (again.value.code, again.value.message) == (20000, first.value.message)
    assert _auth_counts(clean_emulator) == {"20000": 1} and cache.auth_calls == 1
    clock.advance(0.4)  # 30.1 s after the refusal
    token, authenticated = cache.fetch(device)
    assert authenticated and _auth_counts(clean_emulator) == {"20000": 1, "0": 1}
    assert client.publish(token, _topic(device), b"x") > 0


def test_refused_again_after_the_pause_is_cached_again(clean_emulator, client, devices, clock):
    device = _device(devices[3])
    cache = TokenCache(client, {device: "wrong"}, refused_retry_after=5, clock=clock)
    for _ in range(2):
        with pytest.raises(IoTPlatformError):
            cache.get(device)
        with pytest.raises(IoTPlatformError):
            cache.get(device)
        clock.advance(5)
    assert _auth_counts(clean_emulator) == {"20000": 2} and cache.auth_calls == 2


def test_repeated_refusals_do_not_grow_one_traceback(client, devices, clock):
    device = _device(devices[3])
    cache = TokenCache(client, {device: "wrong"}, clock=clock)
    depths = []
    for _ in range(20):
        try:
            cache.get(device)
        except IoTPlatformError as error:
            depths.append(len(traceback.extract_tb(error.__traceback__)))
    assert len(depths) == 20 and max(depths[1:]) <= depths[1]
    assert cache.auth_calls == 1


@pytest.mark.parametrize("kind", ["callable", "mapping"])
def test_unknown_device_raises_without_auth(clean_emulator, client, devices, kind):
    known = {_device(devices[0]): devices[0]["deviceSecret"]}
    cache = TokenCache(client, (lambda device: known.get(device)) if kind == "callable" else known)
    stranger = Device(devices[0]["productKey"], "stranger")
    with pytest.raises(UnknownDevice) as caught:
        cache.get(stranger)
    assert caught.value.action is Action.PERMANENT and "stranger" in str(caught.value)
    assert "auth" not in clean_emulator.counters()["requests"]


def test_transport_errors_are_not_negatively_cached(clean_emulator, client, secrets, devices, clock):
    device = _device(devices[0])
    cache = TokenCache(client, secrets, clock=clock)
    clean_emulator.set_faults(drop_rate=1)
    with pytest.raises(TransportError) as caught:
        cache.get(device)
    assert caught.value.kind == "connection_lost"
    clean_emulator.clear_faults()
    token, authenticated = cache.fetch(device)  # same instant: no pause after a transport failure
    assert authenticated and token
    assert _auth_counts(clean_emulator) == {"dropped": 1, "0": 1} and cache.auth_calls == 2


def test_an_interrupted_auth_does_not_leave_waiters_hanging(client, secrets, devices):
    device = _device(devices[0])
    calls = []

    def secret_for(wanted):
        calls.append(wanted)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return secrets[wanted]

    cache = TokenCache(client, secret_for)
    with pytest.raises(KeyboardInterrupt):
        cache.get(device)
    [token] = _in_threads(1, lambda i: cache.get(device))
    assert isinstance(token, str) and len(calls) == 2


def test_repr_holds_no_secret_or_token(client, secrets, devices):
    cache = TokenCache(client, secrets)
    token = cache.get(_device(devices[0]))
    text = repr(cache)
    assert token not in text and devices[0]["deviceSecret"] not in text and "1 devices" in text
