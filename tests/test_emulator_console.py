"""The console's server side: newest-first paging over the store, decoded payloads, its JSON views."""
import asyncio
import collections
import time

import pytest
import requests

from connector import get_encoder
from connector.emulator import Emulator, make_devices, payloads
from connector.emulator.store import MessageStore
from connector.protocol.device import Device
from emulator_support import own_topic, publish, token

A, B = Device("pk", "a"), Device("pk", "b")


def _store():
    """Ten messages m0..m9, odd ones from A, even ones from B, on topics t0, t1, t2 in turn."""
    async def fill():
        store = MessageStore()
        for i in range(10):
            device = A if i % 2 else B
            await store.add(device, f"/pk/{device.device_name}/user/t{i % 3}", b"m%d" % i)
        return store
    return asyncio.run(fill())


def _payloads(page):
    return [m.payload for m in page]


def test_store_pages_newest_first_through_everything():
    store, seen, before = _store(), [], None
    while True:
        page, before = store.page_newest(before=before, limit=3)
        seen += _payloads(page)
        if before is None:
            break
    assert seen == [b"m%d" % i for i in reversed(range(10))]


def test_store_pages_newest_first_by_device_and_topic():
    store = _store()
    page, following = store.page_newest(device=A, limit=2)
    assert _payloads(page) == [b"m9", b"m7"]
    page, following = store.page_newest(device=A, before=int(following), limit=10)
    assert _payloads(page) == [b"m5", b"m3", b"m1"] and following is None
    page, _ = store.page_newest(device=A, topic="/pk/a/user/t0", limit=10)
    assert _payloads(page) == [b"m9", b"m3"]
    assert store.page_newest(device=Device("pk", "none"))[0] == []


def test_store_totals_per_device():
    store = _store()
    totals = store.totals(A)
    assert (totals.messages, totals.bytes) == (5, 10)
    assert totals.last_at == store.page_newest(device=A, limit=1)[0][0].received_at
    assert store.totals(Device("pk", "none")) is None
    store.clear()
    assert store.totals(A) is None


def test_payloads_decode_json_lines_alink_avro_text_and_hex():
    lines = payloads.decode(b'{"a": 1, "id": 18446744073709551615}\n{"a": 2}\n')
    assert lines["kind"] == "jsonl" and lines["text"] == '{\n  "a": 1,\n  "id": 18446744073709551615\n}\n{\n  "a": 2\n}'
    alink = payloads.decode(b'{"id":"1","version":"1.0","params":{"t":{"value":2}},'
                            b'"method":"thing.event.property.post"}')
    assert alink["kind"] == "alink" and '"value": 2' in alink["text"]
    avro = get_encoder("avro", schema={"type": "record", "name": "R", "fields": [{"name": "t", "type": "double"}]})
    decoded = payloads.decode(avro.payload(A, [avro.encode({"t": 1.5}), avro.encode({"t": 2.5})]))
    assert decoded == {"kind": "avro", "text": '{\n  "t": 1.5\n}\n{\n  "t": 2.5\n}', "truncated": False}
    assert payloads.decode("température 21\n".encode()) == {"kind": "text", "text": "température 21\n",
                                                             "truncated": False}
    assert payloads.decode(b"\x00\x01\xff") == {"kind": "hex", "text": "00 01 ff", "truncated": False}
    assert payloads.decode(b"Obj\x01 but not Avro")["kind"] == "hex"  # a broken container falls back


@pytest.mark.parametrize("payload", [
    b"[" * 100_000,  # not JSON, nested past the parser's recursion limit
    b"[" * 5_000 + b"]" * 5_000,  # JSON, too deep to parse
    b'{"a": 1}\n' + b"[" * 5_000 + b"]" * 5_000 + b"\n",  # JSON lines, one too deep
])
def test_payloads_nested_too_deep_are_shown_as_text(payload):
    shown = payloads.decode(payload)
    assert shown["kind"] == "text" and shown["text"] == payload.decode()[:payloads.MAX_SHOWN_CHARS]


def test_a_stored_payload_nested_too_deep_leaves_the_pages_working(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    for payload in (b"[" * 100_000, b"[" * 5_000 + b"]" * 5_000, b"[" * 500 + b"]" * 500):
        assert publish(clean_emulator, value, own_topic(devices[0]), payload).json()["code"] == 0
    page = _console_json(clean_emulator, "messages")
    assert [m["kind"] for m in page["messages"]] == ["json", "text", "text"]
    assert [len(m["payload"]) for m in clean_emulator.messages()] == [100_000, 10_000, 1_000]
    assert _console_json(clean_emulator, "devices")["total"] >= 4


def test_payloads_cut_long_ones_short_and_say_so():
    decoded = payloads.decode(bytes(100_000))
    assert decoded["kind"] == "hex" and decoded["truncated"]
    assert len(decoded["text"]) == payloads.MAX_SHOWN_CHARS


def _console_json(emulator, view, **params):
    response = requests.get(f"{emulator.endpoint}/_emulator/console/{view}", params=params, verify=emulator.ca_file,
                            timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def test_console_messages_carry_exact_message_ids_as_strings(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    sent = [publish(clean_emulator, value, own_topic(devices[0]), b'{"n": %d}' % i).json()["info"]["messageId"]
            for i in range(3)]
    page = _console_json(clean_emulator, "messages", limit=2)
    assert [m["messageId"] for m in page["messages"]] == [str(sent[2]), str(sent[1])]
    assert sent[0] > 2**53 and page["next"] == str(sent[1]) and page["stored"] == 3
    older = _console_json(clean_emulator, "messages", before=page["next"],
                          device=f"{devices[0]['productKey']}/{devices[0]['deviceName']}")
    assert [(m["messageId"], m["kind"], m["text"]) for m in older["messages"]] == [
        (str(sent[0]), "json", '{\n  "n": 0\n}')]


def test_console_devices_search_and_page_ten_thousand(tmp_path):
    fleet = make_devices(10_000, product_key="pkFleet")
    with Emulator(fleet) as emulator:
        value = token(emulator, fleet[9_999])
        publish(emulator, value, own_topic(fleet[9_999]), b"12345")
        page = _console_json(emulator, "devices", offset=9_990, limit=50)
        assert page["total"] == 10_000 and len(page["devices"]) == 10
        last = page["devices"][-1]
        assert (last["deviceName"], last["liveToken"], last["messages"], last["bytes"]) == ("device09999", True, 1, 5)
        assert last["lastMessageAt"] == emulator.messages()[0]["receivedAt"]
        found = _console_json(emulator, "devices", q="DEVICE0999")
        assert [d["deviceName"] for d in found["devices"]] == [f"device0999{i}" for i in range(10)]
        emulator.expire_tokens()
        assert not _console_json(emulator, "devices", q="device09999")["devices"][0]["liveToken"]


def test_console_files_are_served_with_a_strict_policy_and_nothing_else(emulator):
    page = requests.get(emulator.console, verify=emulator.ca_file, timeout=30)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["Referrer-Policy"] == "no-referrer"  # the address holds the admin token
    ui = emulator.endpoint + "/_emulator/ui"
    script = requests.get(ui + "/app.js", verify=emulator.ca_file, timeout=30)
    assert script.headers["Content-Type"].startswith("text/javascript")
    for name in ("missing.js", "..%2Fadmin.py", "%2E%2E%2Fconsole.py"):
        assert requests.get(f"{ui}/{name}", verify=emulator.ca_file, timeout=30).status_code == 404


def test_the_console_address_with_the_admin_token_is_announced_beside_the_endpoint(emulator):
    # read from the start-up line: the page learns the run's admin token from its address
    assert emulator.console == f"{emulator.endpoint}/_emulator/ui?token={emulator.admin_token}"
    assert len(emulator.admin_token) >= 32


def test_traffic_history_keeps_two_minutes_of_per_second_samples():
    from connector.emulator.traffic import TrafficHistory

    now = [1000.0]
    counts = collections.Counter({("admin", "200"): 7})
    history = TrafficHistory(counts, clock=lambda: now[0])
    for second in range(200):
        counts["topic", "0"] += second % 3
        counts["admin", "200"] += 1
        history.sample()
        now[0] += 1
    shown = history.as_json()
    assert shown["seconds"] == 120 and len(shown["samples"]) == 121  # 121 samples: 120 one-second rates
    assert shown["samples"][0]["at"] == 1_079_000 and shown["samples"][-1]["at"] == 1_199_000
    assert shown["samples"][-1]["requests"] == {"topic": {"0": sum(s % 3 for s in range(200))}}  # no admin
    counts.clear()
    history.clear()  # as a reset does: one sample of nothing, from which the next requests rise
    assert history.as_json()["samples"] == [{"at": 1_200_000, "requests": {}}]


def test_the_emulator_samples_its_traffic_while_no_page_is_open(fresh_emulator, devices):
    running = fresh_emulator()
    value = token(running, devices[0])
    for _ in range(5):
        publish(running, value, own_topic(devices[0]))
    publish(running, None, own_topic(devices[0]))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        samples = running._admin("GET", "/traffic")["samples"]
        if samples and samples[-1]["requests"].get("topic") == {"0": 5, "20002": 1}:
            break
        time.sleep(0.2)
    assert samples[-1]["requests"] == {"auth": {"0": 1}, "topic": {"0": 5, "20002": 1}}
    assert samples[0]["at"] < samples[-1]["at"] <= time.time() * 1000
    running.reset()  # counts start again from nothing, and so does their history
    assert all(sample["requests"] == {} for sample in running._admin("GET", "/traffic")["samples"])
