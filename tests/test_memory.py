"""What the sink's memory bounds count is what their buffers hold (connector.beam.memory), measured
with tracemalloc for the record shapes that once held several times what was counted: small readings,
records kept beside their fragments, one window per record (Sessions), many windows, payloads of one
record. Records come as a coder or a JSON reader hands them: each with its own dict keys."""
import json
import tracemalloc

import pytest
from apache_beam.transforms.window import GlobalWindow, IntervalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP

import connector
from connector.beam import batch
from connector.beam.chunks import chunk_payloads, encode_chunk
from connector.beam.encoders import get_encoder
from connector.beam.ordering import OrderBy
from connector.beam.packing import Packer
from connector.beam.publishing import BundlePublisher
from connector.beam.routing import make_router
from connector.protocol.device import Device
from write_support import write_credentials

# Held may exceed counted by this much (samples, the allocator's rounding); counted may exceed held
# by more (dict keys records share are counted in each), not by twice.
OVER, UNDER = 1.1, 0.5


def reading(i, devices=10, kept=False):
    record = {"productKey": "pk", "deviceName": f"d{i % devices}", "ts": 1_700_000_000_000 + i,
              "temperature": 20.5 + i % 7, "status": "ok"}
    if kept:
        record["pair"] = [i, 2]  # a tuple once decoded: records that are not flat cross beside their fragment
    record = json.loads(json.dumps(record))
    if kept:
        record["pair"] = tuple(record["pair"])
    return record


def assert_bounded(held, counted):
    assert UNDER * counted <= held <= OVER * counted, (
        f"held {held:,} bytes where {counted:,} were counted ({held / counted:.2f})")


SHAPES = {
    "small readings": lambda i: (reading(i, devices=100), GlobalWindow()),  # too many to fill chunks first
    "kept records": lambda i: (reading(i, kept=True), GlobalWindow()),
    "a window per record": lambda i: (reading(i, devices=1), IntervalWindow(i, i + 0.5)),
    "many windows": lambda i: (reading(i), IntervalWindow(i // 10 * 10, i // 10 * 10 + 10)),
}
# A topic made from a record's field: the router makes each record's key, which its chunk then holds.
SHAPES["many windows, a topic per record"] = SHAPES["many windows"]
TOPICS = {"many windows, a topic per record": "/{productKey}/{deviceName}/user/{status}"}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_the_first_stage_sends_its_chunks_when_it_holds_bundle_bytes(shape, monkeypatch):
    monkeypatch.setattr(batch, "BUNDLE_BYTES", 4 << 20)
    router = make_router(**({"topic": TOPICS[shape]} if shape in TOPICS else {}))
    fn = batch._RouteAndEncodeInWindowsFn(router, get_encoder("jsonl"), 131072)
    fn.setup()
    fn.start_bundle()
    when_sent = []
    chunks = fn._chunks
    close_all = chunks.close_all

    def measured_close_all():
        when_sent.append((tracemalloc.get_traced_memory()[0] - start, chunks.held))
        return close_all()
    monkeypatch.setattr(chunks, "close_all", measured_close_all)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        for i in range(10**6):
            fn.process(*SHAPES[shape](i))
            if when_sent:
                break
    finally:
        tracemalloc.stop()
    held, counted = when_sent[0]
    assert counted >= 4 << 20
    assert_bounded(held, counted)


def test_order_by_sorts_sort_buffer_bytes_of_records_at_a_time(monkeypatch, devices):
    order_by = OrderBy("ts", sort_buffer_bytes=4 << 20)
    encoder = get_encoder("jsonl")
    held = []

    def measured_sorted(pairs, *context):
        held.append(tracemalloc.get_traced_memory()[0] - start)
        raise StopIteration
    monkeypatch.setattr(order_by, "sorted", measured_sorted)
    pairs = ((record, encoder.encode(record)) for record in map(reading, range(10**6)))
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        with pytest.raises(RuntimeError):  # the StopIteration, raised in a generator
            list(order_by.sorted_in_buffers(pairs, None, None))
    finally:
        tracemalloc.stop()
    assert_bounded(held[0], 4 << 20)


@pytest.mark.parametrize("records_per_payload", [1, 500])
def test_the_publisher_holds_max_buffered_bytes_of_payloads_in_flight(records_per_payload, fresh_emulator, devices,
                                                                       tmp_path):
    """Payloads of one device wait for its pace: what they hold (their bodies, records, chunks and the
    objects around each) is what the Publisher's budget counts. One record a payload is what a window
    per record makes."""
    emulator = fresh_emulator()
    credentials = write_credentials(tmp_path / "credentials.json", devices)
    write = connector.WriteToIoTPlatform(emulator.endpoint, credentials, ca_file=emulator.ca_file,
                                         device_messages_per_second=0.01)
    publishing = BundlePublisher(write._config)
    publishing.setup()
    publishing.start_bundle()
    device = Device(devices[0]["productKey"], devices[0]["deviceName"])
    encoder, budget = write._encoder, publishing.publisher._budget

    def payloads(count):
        """As the batch publishing stage makes them: from a chunk that crossed the shuffle, each group
        with its own key and window, as GroupByKey hands them over."""
        for n in range(count):
            records = [reading(n * records_per_payload + i, devices=1) for i in range(records_per_payload)]
            chunk = encode_chunk([encoder.encode(r) for r in records], {})
            key = Device(*json.loads(json.dumps(device)))
            for payload in chunk_payloads(Packer(encoder, key), [chunk]):
                yield key, f"/{key.product_key}/{key.device_name}/user/update", payload, IntervalWindow(n, n + 1)
    try:
        sent = payloads(1 + (4000 if records_per_payload == 1 else 40))
        list(publishing.submit(*next(sent), MIN_TIMESTAMP))  # the rest wait the device's pace
        tracemalloc.start()
        start, counted_before = tracemalloc.get_traced_memory()[0], budget._used
        for key, topic, payload, window in sent:
            list(publishing.submit(key, topic, payload, window, MIN_TIMESTAMP))
        held = tracemalloc.get_traced_memory()[0] - start
        tracemalloc.stop()
        assert_bounded(held, budget._used - counted_before)
    finally:
        publishing.publisher.cancel(publishing.bundle.outstanding)
        publishing.teardown()
