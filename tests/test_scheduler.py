"""The Publisher's scheduler alone: pacing, per-device order and the byte budget, with a fake clock and a
fake client that records calls, so the times checked are the scheduler's own and nothing waits them out.

The only tests where the network is faked: tests/test_publisher.py runs the same Publisher against the
emulator over TLS.
"""
import threading

import pytest

from connector.beam.publisher import Publisher, PublisherConfig, RetryPolicy
from connector.client.errors import IoTPlatformError
from connector.protocol import codes
from connector.protocol.device import Device

DEVICES = [Device("pkScheduler", f"device{i}") for i in range(4)]


class FakeClock:
    """Time that passes only when the publisher waits: a wait of t seconds returns at once, t later.

    With one sender thread (max_in_flight=1) only that thread waits, so its times are exact."""

    def __init__(self):
        self._now = 0.0

    def now(self):
        return self._now

    def wait(self, condition, seconds):
        self._now += max(0.0, seconds)
        return False


class RecordingClient:
    """Stands in for IoTPlatformClient: records each publish as (time, device name, payload), and fails
    the attempts it is told to (payload -> how many of its attempts fail, with a retryable code).

    gate: publishes wait for it, so that a test can queue payloads while the first one is being sent."""

    def __init__(self, clock, failures=None):
        self.clock = clock
        self.failures = dict(failures or {})
        self.gate = threading.Event()
        self.gate.set()
        self.calls = []
        self._lock = threading.Lock()

    def authenticate(self, device, secret):
        return f"token-{device.device_name}"

    def publish(self, token, topic, payload):
        self.gate.wait(timeout=60)
        with self._lock:
            self.calls.append((self.clock.now(), topic.split("/")[2], payload))
            if self.failures.get(payload, 0):
                self.failures[payload] -= 1
                raise IoTPlatformError(codes.COMMON_ERROR, "common error")
            return len(self.calls)

    def close(self):
        pass

    def sent(self, device):
        """(time, payload) of each attempt for the device, in order."""
        return [(when, payload) for when, name, payload in self.calls if name == device.device_name]


def _publisher(client, clock, **options):
    config = PublisherConfig("https://scheduler.invalid", credentials=None, **options)
    return Publisher(config, secrets={device: "secret" for device in DEVICES}, client_factory=lambda _: client,
                     clock=clock)


def _topic(device):
    return f"/{device.product_key}/{device.device_name}/user/update"


def _submit_while_the_first_is_sent(publisher, client, jobs):
    """Submit (device, payload) pairs while the first publish waits at the gate, so every payload is
    queued before any time passes; their Outcomes."""
    client.gate.clear()
    futures = [publisher.submit(device, _topic(device), payload) for device, payload in jobs]
    client.gate.set()
    return [future.result(timeout=60) for future in futures]


def test_a_devices_sends_are_exactly_its_interval_apart():
    clock = FakeClock()
    client = RecordingClient(clock)
    publisher = _publisher(client, clock, max_in_flight=1, device_messages_per_second=5)
    outcomes = _submit_while_the_first_is_sent(publisher, client, [(DEVICES[0], b"%d" % i) for i in range(8)])
    assert [o.message_id for o in outcomes] == list(range(1, 9))
    assert client.sent(DEVICES[0]) == [(pytest.approx(0.2 * i), b"%d" % i) for i in range(8)]


def test_devices_do_not_wait_for_each_others_pace():
    clock = FakeClock()
    client = RecordingClient(clock)
    publisher = _publisher(client, clock, max_in_flight=1, device_messages_per_second=5)
    _submit_while_the_first_is_sent(publisher, client, [(d, b"%s-%d" % (d.device_name.encode(), i))
                                                        for i in range(3) for d in DEVICES[:2]])
    for device in DEVICES[:2]:
        assert client.sent(device) == [(pytest.approx(0.2 * i), b"%s-%d" % (device.device_name.encode(), i))
                                       for i in range(3)]


def test_a_retry_waits_its_backoff_and_the_pace_and_keeps_the_devices_order():
    clock = FakeClock()
    client = RecordingClient(clock, failures={b"1": 2})
    retry = RetryPolicy(initial_backoff=1.0, max_backoff=1.0)  # each wait a random 0.5 to 1 s
    publisher = _publisher(client, clock, max_in_flight=1, device_messages_per_second=5, retry=retry)
    outcomes = _submit_while_the_first_is_sent(publisher, client, [(DEVICES[0], b"%d" % i) for i in range(3)])
    assert [(o.message_id is not None, o.attempts) for o in outcomes] == [(True, 1), (True, 3), (True, 1)]
    sent = client.sent(DEVICES[0])
    assert [payload for _, payload in sent] == [b"0", b"1", b"1", b"1", b"2"]
    gaps = [b[0] - a[0] for a, b in zip(sent, sent[1:])]
    assert gaps[0] == pytest.approx(0.2) and gaps[3] == pytest.approx(0.2)
    assert all(0.5 <= gap <= 1.0 for gap in gaps[1:3]), gaps  # the backoffs, longer than the pace


def test_each_devices_payloads_end_in_order_however_many_senders_and_retries():
    clock = FakeClock()
    failures = {b"%s-%d" % (d.device_name.encode(), i): i % 3 for d in DEVICES for i in range(6)}
    client = RecordingClient(clock, failures=failures)
    publisher = _publisher(client, clock, max_in_flight=3, device_messages_per_second=30,
                           retry=RetryPolicy(initial_backoff=0.01, max_backoff=0.01))
    jobs = [(d, b"%s-%d" % (d.device_name.encode(), i)) for i in range(6) for d in DEVICES]
    outcomes = _submit_while_the_first_is_sent(publisher, client, jobs)
    assert all(o.message_id is not None for o in outcomes)
    assert [o.attempts for o in outcomes] == [1 + int(payload.rsplit(b"-", 1)[1]) % 3 for _, payload in jobs]
    for device in DEVICES:
        attempts = [payload for _, payload in client.sent(device)]
        expected = [b"%s-%d" % (device.device_name.encode(), i) for i in range(6)]
        # Every attempt at a payload comes before the first attempt at the next one.
        assert list(dict.fromkeys(attempts)) == expected
        assert attempts == sorted(attempts, key=expected.index)


def test_submit_waits_while_the_byte_budget_is_held_and_goes_on_once_a_payload_ends():
    clock = FakeClock()
    client = RecordingClient(clock)
    publisher = _publisher(client, clock, max_in_flight=4, max_buffered_bytes=10)
    client.gate.clear()
    held = [publisher.submit(DEVICES[0], _topic(DEVICES[0]), b"123456"),
            publisher.submit(DEVICES[1], _topic(DEVICES[1]), b"1234")]  # 10 bytes: the budget is full
    admitted = threading.Event()
    later = []

    def submit_one_more_byte():
        later.append(publisher.submit(DEVICES[2], _topic(DEVICES[2]), b"x"))
        admitted.set()

    submitter = threading.Thread(target=submit_one_more_byte)
    submitter.start()
    # Not admitted while the 10 bytes are held (this waits, it does not time anything: a broken budget
    # admits it at once, a working one never does while the gate is shut).
    assert not admitted.wait(timeout=0.2)
    assert client.calls == []
    client.gate.set()
    submitter.join(timeout=60)
    assert all(future.result(timeout=60).message_id is not None for future in held + later)
    # Sent after a held payload had ended and given its bytes back; the other held one may end later.
    sent = [call[2] for call in client.calls]
    assert sorted(sent) == sorted([b"123456", b"1234", b"x"]) and sent.index(b"x") > 0, sent


def test_a_payload_larger_than_the_whole_budget_goes_when_nothing_else_is_held():
    clock = FakeClock()
    client = RecordingClient(clock)
    publisher = _publisher(client, clock, max_buffered_bytes=10)
    future = publisher.submit(DEVICES[0], _topic(DEVICES[0]), b"x" * 50)
    assert future.result(timeout=60).message_id == 1
