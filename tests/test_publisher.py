"""The Publisher against the emulator: a device's payloads in order and at its pace, many devices moved by
a few senders, a backoff that does not hold a sender, and senders that end when there is nothing to do."""
import threading
import time

import pytest

from connector.beam.publisher import Publisher, PublisherConfig, RetryPolicy
from connector.emulator import make_devices
from connector.protocol.device import Device
from test_client_transport import trickling  # noqa: F401 - a fixture


@pytest.fixture
def fleet():
    return make_devices(30, product_key="pkPublisher", prefix="pub")


def _publisher(emulator, fleet, **options):
    config = PublisherConfig(emulator.endpoint, credentials=None, ca_file=emulator.ca_file, **options)
    return Publisher(config, secrets={Device(d["productKey"], d["deviceName"]): d["deviceSecret"] for d in fleet})


def _topic(device):
    return f"/{device.product_key}/{device.device_name}/user/update"


def _submit_all(publisher, jobs):
    """Submit (device, payload) pairs in order; their Outcomes once all have ended."""
    futures = [publisher.submit(device, _topic(device), payload) for device, payload in jobs]
    return [future.result(timeout=60) for future in futures]


def test_a_devices_payloads_go_in_order_at_its_pace(fresh_emulator, fleet):
    emulator = fresh_emulator(devices=fleet)
    device = Device(fleet[0]["productKey"], fleet[0]["deviceName"])
    publisher = _publisher(emulator, fleet, device_messages_per_second=5)
    outcomes = _submit_all(publisher, [(device, b"%d" % i) for i in range(8)])
    assert all(o.message_id is not None for o in outcomes)
    stored = emulator.messages()
    assert [m["payload"] for m in stored] == [b"%d" % i for i in range(8)]
    gaps = [b["receivedAt"] - a["receivedAt"] for a, b in zip(stored, stored[1:])]
    # Sends start 200 ms apart; arrivals vary by the request's own time (the first one opens the
    # connection and authenticates) and the scheduler's jitter, by tens of ms on a loaded machine
    # (at 50 ms apart a gap of 26 ms was seen): a pace broken by one message is still 200 ms short.
    assert min(gaps) >= 140 and sum(gaps) >= 7 * 200 - 60, gaps


def test_many_devices_are_moved_by_max_in_flight_senders_side_by_side(fresh_emulator, fleet):
    emulator = fresh_emulator(devices=fleet)
    devices = [Device(d["productKey"], d["deviceName"]) for d in fleet]
    publisher = _publisher(emulator, fleet, max_in_flight=2, device_messages_per_second=10)
    seen = []
    stop = threading.Event()

    def count_senders():
        while not stop.wait(0.005):
            seen.append(sum(t.name == publisher.thread_name and t.is_alive() for t in threading.enumerate()))

    counter = threading.Thread(target=count_senders)
    counter.start()
    try:
        outcomes = _submit_all(publisher, [(d, b"%s-%d" % (d.device_name.encode(), i)) for i in range(3)
                                           for d in devices])
    finally:
        stop.set()
        counter.join()
    assert all(o.message_id is not None for o in outcomes)
    assert max(seen) <= 2
    stored = emulator.messages()
    for d in devices:
        assert [m["payload"] for m in stored if m["deviceName"] == d.device_name] == \
            [b"%s-%d" % (d.device_name.encode(), i) for i in range(3)]
    # While each device waits out its 100 ms pace, the others go: every device's first payload is
    # stored before any device's second.
    assert {m["deviceName"] for m in stored[:len(devices)]} == {d.device_name for d in devices}


def test_a_device_backing_off_does_not_hold_the_only_sender(fresh_emulator, fleet):
    emulator = fresh_emulator(devices=fleet, device_qps=1)
    a, b = (Device(d["productKey"], d["deviceName"]) for d in fleet[:2])
    publisher = _publisher(emulator, fleet, max_in_flight=1, device_messages_per_second=0)
    outcomes = _submit_all(publisher, [(a, b"a1"), (a, b"a2"), (b, b"b1")])
    assert all(o.message_id is not None for o in outcomes)
    assert outcomes[1].tries > 1 and outcomes[1].throttled_seconds > 0  # a2 was throttled and waited
    assert [m["payload"] for m in emulator.messages()] == [b"a1", b"b1", b"a2"]


def test_senders_end_when_idle_and_come_back_for_new_work(fresh_emulator, fleet):
    emulator = fresh_emulator(devices=fleet)
    device = Device(fleet[0]["productKey"], fleet[0]["deviceName"])
    publisher = _publisher(emulator, fleet, device_messages_per_second=0)
    publisher.IDLE_SENDER_SECONDS = 0.2
    assert _submit_all(publisher, [(device, b"first")])[0].message_id is not None
    deadline = time.monotonic() + 10
    while publisher._senders and time.monotonic() < deadline:
        time.sleep(0.05)
    assert publisher._senders == 0
    assert _submit_all(publisher, [(device, b"again")])[0].message_id is not None
    assert [m["payload"] for m in emulator.messages()] == [b"first", b"again"]


def test_a_burst_of_new_devices_gets_senders_even_while_one_sender_waits(fresh_emulator, fleet):
    emulator = fresh_emulator(devices=fleet)
    devices = [Device(d["productKey"], d["deviceName"]) for d in fleet]
    publisher = _publisher(emulator, fleet, device_messages_per_second=0)
    assert _submit_all(publisher, [(devices[0], b"warm")])[0].message_id is not None  # one sender, now waiting
    emulator.set_faults(latency_ms=200)  # replies come late: every sender stays busy with its device
    futures = [publisher.submit(d, _topic(d), b"burst") for d in devices[1:]]
    senders = sum(t.name == publisher.thread_name for t in threading.enumerate())
    assert all(f.result(timeout=60).message_id is not None for f in futures)
    assert senders >= len(futures) // 2, senders  # not one sender doing 29 devices one after another


def test_an_outage_shorter_than_max_seconds_does_not_spend_the_attempts(fresh_emulator, fleet):
    emulator = fresh_emulator(devices=fleet)
    device = Device(fleet[0]["productKey"], fleet[0]["deviceName"])
    patient_in_time_only = RetryPolicy(max_attempts=3, max_seconds=60, initial_backoff=0.05, max_backoff=0.2)
    publisher = _publisher(emulator, fleet, device_messages_per_second=0, connect_timeout=1,
                           retry=patient_in_time_only)
    assert _submit_all(publisher, [(device, b"before")])[0].message_id is not None
    emulator.kill()
    during = publisher.submit(device, _topic(device), b"during")
    time.sleep(1.5)  # refused connections all along: many more attempts than max_attempts
    emulator.start()  # same port; its tokens and (without a database) its messages are gone
    outcome = during.result(timeout=60)
    # Two requests left: the restarted emulator refused the token it no longer knew, then took the resend.
    assert outcome.message_id is not None and outcome.tries > 3 and outcome.attempts == 2, outcome
    assert [m["payload"] for m in emulator.messages()] == [b"during"]


def test_once_an_outage_outlasts_max_seconds_each_payload_fails_at_its_next_attempt(fresh_emulator, fleet):
    emulator = fresh_emulator(devices=fleet)
    device = Device(fleet[0]["productKey"], fleet[0]["deviceName"])
    publisher = _publisher(emulator, fleet, device_messages_per_second=0, connect_timeout=1,
                           retry=RetryPolicy(max_attempts=3, max_seconds=0.5, initial_backoff=0.05, max_backoff=0.1))
    emulator.kill()
    outcomes = _submit_all(publisher, [(device, b"%d" % i) for i in range(5)])
    assert {o.reason for o in outcomes} == {"retries_exhausted"}
    assert all(o.error.kind == "connect" for o in outcomes)
    # The first spent the outage's half second, beyond max_attempts, and sent nothing.
    assert outcomes[0].tries > 3 and outcomes[0].attempts == 0
    # The rest find the outage clock run out at once (an attempt or two: each plans its own next wait),
    # instead of each spending half a second of its own.
    assert all(o.tries <= 2 for o in outcomes[1:]), [o.tries for o in outcomes]


def test_a_sender_that_cannot_start_leaves_no_device_unserved(fresh_emulator, fleet, monkeypatch):
    emulator = fresh_emulator(devices=fleet)
    device = Device(fleet[0]["productKey"], fleet[0]["deviceName"])
    publisher = _publisher(emulator, fleet, device_messages_per_second=0)
    start = threading.Thread.start

    def out_of_threads(thread):
        if thread.name == publisher.thread_name:
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", out_of_threads)
    with pytest.raises(RuntimeError):
        publisher.submit(device, _topic(device), b"refused")  # the caller knows it was not taken
    monkeypatch.setattr(threading.Thread, "start", start)
    assert publisher.submit(device, _topic(device), b"taken").result(timeout=20).message_id is not None
    assert [m["payload"] for m in emulator.messages()] == [b"taken"]


def test_an_attempt_whose_reply_never_ends_is_retried_as_an_ambiguous_failure(trickling):
    device = Device("pk", "dn")
    config = PublisherConfig(trickling.endpoint, credentials=None, ca_file=trickling.ca_file, read_timeout=1,
                             retry=RetryPolicy(max_attempts=2, initial_backoff=0.05))
    outcome = Publisher(config, secrets={device: "secret"}).submit(device, _topic(device), b"x").result(timeout=60)
    assert (outcome.reason, outcome.attempts, outcome.ambiguous_resends) == ("retries_exhausted", 2, 1)
    assert outcome.error.kind == "read_timeout" and trickling.publishes == 2
