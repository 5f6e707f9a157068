"""The publish step as a runner drives it (its BundlePublisher): copies unpickled on a worker, bundles
that end and bundles the runner gives up on, and teardown."""
import time
import tracemalloc

import pytest
from apache_beam.internal import pickler
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP

import connector
from connector.beam.batch import _PublishChunksFn
from connector.beam.chunks import encode_chunk
from connector.protocol.device import Device


class _SecretsInMemory:
    """A credentials provider of the user's own, without a __repr__ of its own."""

    def __init__(self, devices):
        self._secrets = {(d["productKey"], d["deviceName"]): d["deviceSecret"] for d in devices}

    def secrets(self):
        return {Device(*key): secret for key, secret in self._secrets.items()}


def _publish_fn(emulator, credentials, **options):
    """The batch publishing DoFn WriteToIoTPlatform would run, with these options."""
    write = connector.WriteToIoTPlatform(emulator.endpoint, credentials, ca_file=emulator.ca_file, **options)
    return _PublishChunksFn(write._config, write._encoder, write._max_payload_bytes)


def _worker_copy(fn):
    """The DoFn as a worker gets it: pickled into the graph, unpickled, set up."""
    copy = pickler.loads(pickler.dumps(fn))
    copy.setup()
    return copy


def test_every_copy_of_the_dofn_in_a_process_shares_one_publisher_whatever_the_credentials(emulator, devices):
    fn = _publish_fn(emulator, _SecretsInMemory(devices))
    first, second = _worker_copy(fn), _worker_copy(fn)
    # one /auth per device per process, one set of limits
    assert first._publishing.publisher is second._publishing.publisher


def _group(device, records, per_chunk=50):
    """One device's records as GroupByKey hands them to the batch DoFn, made as they are read: chunks of
    jsonl fragments, each record kept beside its fragment (as the first stage keeps those its encoder
    cannot restore), so that payloads in flight hold records too."""
    product_key, device_name = device["productKey"], device["deviceName"]
    encoder = connector.get_encoder("jsonl")

    def chunks():
        fragments, kept = [], {}
        for record in records:
            kept[len(fragments)] = record
            fragments.append(encoder.encode(record))
            if len(fragments) == per_chunk:
                yield encode_chunk(fragments, kept)
                fragments, kept = [], {}
        if fragments:
            yield encode_chunk(fragments, kept)
    return ((product_key, device_name), f"/{product_key}/{device_name}/user/update"), chunks()


def _process(fn, element):
    return list(fn.process(element, window=GlobalWindow(), timestamp=MIN_TIMESTAMP))


def _records(device, count, first=0):
    return [{"productKey": device["productKey"], "deviceName": device["deviceName"], "seq": first + i,
             "note": "x" * 200} for i in range(count)]


def _wait_until_idle(publisher):
    deadline = time.monotonic() + 30
    while publisher._lanes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not publisher._lanes


GIVING_UP = {  # how a runner goes on after a bundle failed
    "teardown": lambda fn, original: fn.teardown(),  # Dataflow and Flink discard the bundle's DoFn
    "reuse": lambda fn, original: fn.start_bundle(),  # a runner may start the next bundle with it
    "a-new-copy": lambda fn, original: _worker_copy(original).start_bundle(),  # the direct runner's retry
}


@pytest.mark.parametrize("gives_up_by", sorted(GIVING_UP))
def test_a_bundle_the_runner_gave_up_on_sends_no_more_of_its_payloads(gives_up_by, clean_emulator, devices):
    """The runner retries the bundle: its unsent payloads would only go ahead of the retry's own and
    arrive twice."""
    original = _publish_fn(clean_emulator, _SecretsInMemory(devices), max_payload_bytes=300,
                           device_messages_per_second=1)
    fn = _worker_copy(original)
    fn.start_bundle()
    _process(fn, _group(devices[0], _records(devices[0], 6)))  # six payloads, one a second
    GIVING_UP[gives_up_by](fn, original)
    _wait_until_idle(fn._publishing.publisher)
    assert len(clean_emulator.messages()) <= 2  # the one being sent, if any, and one more at most


def test_teardown_closes_the_idle_connections_once_the_last_copy_is_done(clean_emulator, devices):
    fn = _publish_fn(clean_emulator, _SecretsInMemory(devices))
    first, second = _worker_copy(fn), _worker_copy(fn)
    first.start_bundle()
    _process(first, _group(devices[0], _records(devices[0], 1)))
    assert [type(o) for o in first.finish_bundle()]  # its receipt
    pool = first._publishing.publisher.client._pool
    assert pool._idle
    first.teardown()
    assert pool._idle  # the second copy still works with them
    second.teardown()
    assert not pool._idle


def test_a_payload_that_ends_after_its_bundle_was_given_up_is_not_reported_in_the_next(clean_emulator, devices):
    clean_emulator.set_faults(latency_ms=500)
    fn = _worker_copy(_publish_fn(clean_emulator, _SecretsInMemory(devices), device_messages_per_second=0))
    fn.start_bundle()
    _process(fn, _group(devices[0], _records(devices[0], 1)))  # in flight when the runner gives up
    fn.start_bundle()
    outputs = _process(fn, _group(devices[0], _records(devices[0], 2, first=1)))
    outputs += list(fn.finish_bundle())
    assert [o.value.record_count for o in outputs] == [2]  # its own payload's receipt, not the first one's


def test_max_buffered_bytes_bounds_the_records_behind_the_payloads_too(clean_emulator, devices):
    """Measured with tracemalloc while the stage packs a lazy stream of chunks for one paced device: what
    the publisher holds, payloads and their records, stays near the option."""
    limit = 256 << 10
    fn = _worker_copy(_publish_fn(clean_emulator, _SecretsInMemory(devices), max_payload_bytes=16 << 10,
                                  max_buffered_bytes=limit, device_messages_per_second=10))
    device = devices[0]
    readings = ({"productKey": device["productKey"], "deviceName": device["deviceName"], "seq": i,
                 "time": 1_700_000_000_000 + i, "temperature": 20.5 + i % 7, "note": "x" * (150 + i % 2)}
                for i in range(4000))
    fn.start_bundle()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        outputs = _process(fn, _group(device, readings)) + list(fn.finish_bundle())
        peak = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert sum(o.value.record_count for o in outputs) == 4000
    assert peak <= 2 * limit, f"{peak / limit:.1f} times max_buffered_bytes"
