"""Nothing lost, nothing leaked, under the failures test_write_faults.py does not cover: a restarted
platform that no longer knows the tokens (20003), one-second tokens, the account-level limit under a
large backlog, latency spikes past the read timeout, a SIGKILLed platform, and a runner retrying a
bundle. Every test runs a real pipeline and ends in the accounting check."""
import os
import time

import pytest

import connector
from connector.beam.encoders import Encoder, get_encoder
from connector.emulator import make_devices
from reliability_support import WhenStored, accounted, extra_copies, topic_codes
from test_write_batch import readings
from write_support import run_write, write_credentials

# Retries that outlast an emulator restart (about a second) with room to spare.
PATIENT = connector.RetryPolicy(max_attempts=200, max_seconds=60, initial_backoff=0.02, max_backoff=0.3,
                                throttled_backoff=0.05)


@pytest.fixture
def credentials(tmp_path, devices):
    return write_credentials(tmp_path / "credentials.json", devices)


def test_a_restarted_platform_rejects_old_tokens_20003_and_the_sink_reauthenticates_and_resends(
        fresh_emulator, devices, credentials, tmp_path):
    emulator = fresh_emulator(db=str(tmp_path / "store.db"))
    records = readings(devices, 160)  # 40 payloads per device at 40 per second
    with WhenStored(emulator, 40, lambda: (emulator.stop(), emulator.start())) as restart:
        run = run_write(records, emulator, credentials, tmp_path, max_payload_bytes=1024,
                        device_messages_per_second=40, retry=PATIENT)
    assert restart.fired and restart.error is None
    messages = emulator.messages()  # from the persisted store: before and after the restart
    result = accounted(run, messages, records)
    assert result.delivered == len(records) and not run.failed, result.summary()
    # Counters started again with the new process: every device's old token came back as unknown.
    after = topic_codes(emulator)
    assert after.get("20003", 0) >= 1 and after.get("0", 0) > 0, after
    assert run.counters["auth_calls"] >= len(devices) + after["20003"] // 2
    # A graceful stop can still cut a reply off: any duplicate is an ambiguous resend, counted.
    assert extra_copies(messages)[0] <= run.counters.get("ambiguous_resends", 0)


def test_one_second_tokens_are_renewed_throughout_a_run_of_several_seconds(fresh_emulator, devices, credentials,
                                                                           tmp_path):
    emulator = fresh_emulator(token_ttl=1)
    devices = devices[:2]
    records = readings(devices, 200)  # 50 payloads per device at 15 per second: 3.3 s or more
    run = run_write(records, emulator, credentials, tmp_path, max_payload_bytes=1024,
                    device_messages_per_second=15, retry=PATIENT)
    messages = emulator.messages()
    result = accounted(run, messages, records)
    received = [m["receivedAt"] for m in messages]
    assert max(received) - min(received) >= 2900  # the run did outlast several token lifetimes
    assert result.delivered == len(records) and result.duplicated == 0 and not run.failed
    codes = topic_codes(emulator)
    # The emulator puts a messageId in its 20001 replies (as the real server does): it must not
    # become a receipt. accounted() checked every receipt is a stored message; here the counts agree.
    assert codes.get("20001", 0) >= len(devices) * 2, codes
    assert len(run.receipts) == len(messages) == codes["0"]
    assert run.counters["auth_calls"] >= len(devices) * 3


def test_the_account_limit_under_a_backlog_far_above_it(fresh_emulator, tmp_path):
    fleet = make_devices(16, product_key="pkAccount01")
    credentials = write_credentials(tmp_path / "credentials.json", fleet)
    account_qps = 40
    emulator = fresh_emulator(devices=fleet, account_qps=account_qps, device_qps=100_000)
    records = readings(fleet, 48)  # 16 devices x 12 payloads: ~210 requests, 5 s at the account's limit
    started = time.monotonic()
    # No pacing per device: the sink offers requests as fast as it can, far above 40 a second.
    run = run_write(records, emulator, credentials, tmp_path, max_payload_bytes=1024, max_in_flight=8,
                    device_messages_per_second=0)
    elapsed = time.monotonic() - started
    result = accounted(run, emulator.messages(), records)
    assert result.delivered == len(records) and not run.failed, result.summary()
    requests = emulator.counters()["requests"]
    throttled = requests["topic"].get("40000", 0) + requests["auth"].get("40000", 0)
    total = sum(requests["topic"].values()) + sum(requests["auth"].values())
    share = throttled / total
    print(f"\naccount limit {account_qps}/s, {len(run.receipts)} messages in {elapsed:.1f} s: "
          f"{throttled} of {total} requests answered 40000 ({share:.1%}); "
          f"{run.counters.get('throttled_msecs', 0) / 1000:.1f} s of backoff counted")
    assert throttled > 0  # the backlog really was above the limit
    # The bound: after a 40000 a payload waits at least throttled_backoff/2 = 0.5 s (1 s with jitter
    # 0.5..1, doubling after each further 40000), so 8 payloads in flight send at most 16 throttled
    # requests a second while the account accepts 40: at most 16 / (16 + 40) = 29% of requests.
    assert share < 0.29
    assert run.counters["throttled_msecs"] > 0


def test_latency_spikes_past_the_read_timeout_are_resent_and_every_duplicate_is_counted(
        clean_emulator, devices, credentials, tmp_path):
    clean_emulator.set_limits(device_qps=100_000)
    clean_emulator.set_faults(latency_spike={"rate": 0.15, "ms": 1200}, seed=11)
    records = readings(devices, 300)
    run = run_write(records, clean_emulator, credentials, tmp_path, read_timeout=0.5, max_payload_bytes=4096,
                    device_messages_per_second=0, retry=PATIENT)
    messages = clean_emulator.messages()
    result = accounted(run, messages, records)
    assert result.delivered == len(records) and not run.failed, result.summary()
    spikes = clean_emulator.counters()["faults"]["latency_spike"]
    duplicate_messages, duplicate_records = extra_copies(messages)
    resends = run.counters["ambiguous_resends"]
    assert duplicate_messages > 0 and result.duplicated == duplicate_records
    # A spiked reply on /topic stored the message and timed out the client: one ambiguous resend each.
    assert duplicate_messages <= resends <= spikes
    assert len(run.receipts) == len(messages) - duplicate_messages


def _kill_for(emulator, seconds):
    def action():
        emulator.kill()
        time.sleep(seconds)  # the platform is down this long
        emulator.start()
    return action


def test_a_sigkilled_platform_restarted_from_its_store_loses_nothing_acknowledged(fresh_emulator, devices,
                                                                                  credentials, tmp_path):
    emulator = fresh_emulator(db=str(tmp_path / "store.db"))
    records = readings(devices, 160)
    with WhenStored(emulator, 40, _kill_for(emulator, 1.0)) as crash:
        run = run_write(records, emulator, credentials, tmp_path, max_payload_bytes=1024,
                        device_messages_per_second=40, retry=PATIENT)
    assert crash.fired and crash.error is None
    messages = emulator.messages()
    stored = {m["messageId"] for m in messages}
    assert {r.message_id for r in run.receipts} <= stored  # every acknowledged message survived
    result = accounted(run, messages, records)
    assert result.delivered == len(records) and not run.failed, result.summary()
    assert extra_copies(messages)[0] <= run.counters.get("ambiguous_resends", 0)


def test_a_platform_down_longer_than_the_retry_budget_fails_the_rest_loudly(fresh_emulator, devices,
                                                                             credentials, tmp_path):
    emulator = fresh_emulator(db=str(tmp_path / "store.db"))
    records = readings(devices, 160)
    # Once the platform has been unreachable for max_seconds, every payload fails at its next attempt;
    # max_seconds is kept small for the test.
    short = connector.RetryPolicy(max_attempts=3, max_seconds=1.0, initial_backoff=0.02, max_backoff=0.05)
    with WhenStored(emulator, 40, emulator.kill) as crash:
        run = run_write(records, emulator, credentials, tmp_path, max_payload_bytes=1024,
                        device_messages_per_second=40, retry=short)
    assert crash.fired and crash.error is None
    emulator.start()  # same port and database, to read what was stored
    messages = emulator.messages()
    assert {r.message_id for r in run.receipts} <= {m["messageId"] for m in messages}
    result = accounted(run, messages, records)
    assert run.failed and set(run.failed_reasons()) == {"retries_exhausted"}
    assert all(f.code is None and f.message.startswith(("connect", "connection_lost")) for f in run.failed)
    assert result.delivered + sum(result.failed.values()) - result.delivered_and_failed == len(records)
    # Only a request cut off by the kill may have been stored and then reported failed.
    assert result.delivered_and_failed <= max(r.record_count for r in run.receipts) * 16


class _FailsOnceEncoder(Encoder):
    """jsonl, except that the first attempt to build the payload holding the record with seq == `fail_at`
    of `device` raises (as a worker crash would), after earlier payloads of the bundle were already
    published. Not encode: a record's encoding that raises fails that record alone. A marker file says
    whether it has raised, so the runner's retry of the bundle goes through."""

    name = "jsonl"
    separator = b"\n"

    def __init__(self, marker, device_name, fail_at):
        self._jsonl = get_encoder("jsonl")
        self._marker, self._device_name, self._fail_at = marker, device_name, fail_at

    def encode(self, record):
        return self._jsonl.encode(record)

    def payload(self, device, fragments):
        marked = b'"seq":%d,' % self._fail_at
        if (device.device_name == self._device_name and any(marked in fragment for fragment in fragments)
                and not os.path.exists(self._marker)):
            open(self._marker, "w").close()
            raise RuntimeError("simulated worker failure in the middle of a bundle")
        return self._jsonl.payload(device, fragments)

    def decode(self, payload):
        return self._jsonl.decode(payload)


def test_a_bundle_retried_by_the_runner_loses_nothing_and_its_duplicates_are_counted(clean_emulator, devices,
                                                                                     credentials, tmp_path):
    """FnApiRunner does not retry a failed bundle (the run fails); the BundleBasedDirectRunner retries
    it up to 4 times, as Dataflow and Flink do. The retry publishes the whole bundle again: what the
    failed attempt had sent arrives twice (what it had not sent yet is cancelled). Its outputs are
    discarded, so receipts and failed records come from the successful attempt only, each once."""
    clean_emulator.set_limits(device_qps=100_000)
    marker = str(tmp_path / "raised")
    records = readings(devices, 200)
    unencodable = {"productKey": devices[0]["productKey"], "deviceName": devices[0]["deviceName"], "seq": -1,
                   "temperature": float("nan")}
    run = run_write([unencodable] + records, clean_emulator, credentials, tmp_path,
                    options=["--runner=BundleBasedDirectRunner"], max_payload_bytes=2048,
                    device_messages_per_second=0,
                    encoder=_FailsOnceEncoder(marker, devices[0]["deviceName"], fail_at=150))
    assert os.path.exists(marker)  # the failure did happen, and the runner's retry got past it
    messages = clean_emulator.messages()
    result = accounted(run, messages, records + [unencodable])
    assert result.delivered == len(records)
    assert run.failed_reasons() == {"unencodable": 1}  # once, though both attempts saw it
    duplicate_messages, duplicate_records = extra_copies(messages)
    print(f"\nbundle retry: the failed attempt had published {duplicate_messages} messages "
          f"({duplicate_records} records), all published again by the retry")
    assert result.duplicated == duplicate_records  # none at all if it failed before its first send
    # Receipts: one per message of the successful attempt; every record receipted exactly once.
    assert sum(r.record_count for r in run.receipts) == len(records)
    assert len(run.receipts) == len(messages) - duplicate_messages
