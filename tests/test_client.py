"""IoTPlatformClient against the emulator over real TLS on 127.0.0.1: round trips, classified failures,
client-side refusals, TLS trust, keep-alive, thread safety, and secrets kept out of sight.

Every test runs twice, over wire.py and over urllib3 (tests/urllib3_transport.py): a differential test
that holds the hand-written transport to a well-kept library's reading of the same replies and faults."""
import functools
import logging
import os
import pickle
import socket
import threading
import time

import pytest
from apache_beam.internal import pickler as beam_pickler

from connector.client import http, wire
from connector.client.errors import InvalidRequest, IoTPlatformError, TransportError, UnknownDevice
from connector.client.tokens import TokenCache
from connector.protocol.codes import Action
from connector.protocol.device import Device
from urllib3_transport import Urllib3Pool

SYSTEM_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
IoTPlatformClient = http.IoTPlatformClient  # over the transport the `transport` fixture sets


@pytest.fixture(autouse=True, params=[wire.Pool, Urllib3Pool], ids=["wire", "urllib3"])
def transport(request, monkeypatch):
    """Each test's clients send through this transport."""
    monkeypatch.setattr(__import__(__name__), "IoTPlatformClient",
                        functools.partial(http.IoTPlatformClient, transport=request.param))
    return request.param


def _device(item):
    return Device(item["productKey"], item["deviceName"])


def _topic(item, tail="user/update"):
    return f"/{item['productKey']}/{item['deviceName']}/{tail}"


def _device_requests(emulator):
    """The emulator's counts of device-channel requests (admin calls, which this reads with, left out)."""
    return {endpoint: counts for endpoint, counts in emulator.counters()["requests"].items() if endpoint != "admin"}


def _closed_port():
    """A port on 127.0.0.1 nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def client(emulator):
    with IoTPlatformClient(emulator.endpoint, ca_file=emulator.ca_file) as running:
        yield running


@pytest.fixture
def token(client, devices):
    return client.authenticate(_device(devices[0]), devices[0]["deviceSecret"])


# -- round trips ---------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["hmacmd5", "hmacsha1", "hmacsha256"])
def test_round_trip_with_each_sign_method(clean_emulator, devices, method):
    item = devices[1]
    payload = bytes(range(256)) + b"\x00\r\n" + method.encode()
    with IoTPlatformClient(clean_emulator.endpoint, ca_file=clean_emulator.ca_file, sign_method=method) as client:
        token = client.authenticate(_device(item), item["deviceSecret"])
        message_id = client.publish(token, _topic(item), payload)
    assert type(message_id) is int and message_id > 2**53
    [stored] = clean_emulator.messages(device=_device(item))
    assert stored["messageIdStr"] == str(message_id)  # exact: a float would lose the last digits
    assert stored["payload"] == payload and stored["topic"] == _topic(item)


def test_history_topic_of_eight_levels_is_published(clean_emulator, devices, client):
    item = devices[3]
    topic = f"/sys/{item['productKey']}/{item['deviceName']}/thing/event/property/history/post"
    token = client.authenticate(_device(item), item["deviceSecret"])
    message_id = client.publish(token, topic, b'{"id":"1"}')
    [stored] = clean_emulator.messages(device=_device(item))
    assert (stored["messageId"], stored["topic"]) == (message_id, topic)


def test_largest_payload_and_longest_client_id_are_accepted_end_to_end(clean_emulator, devices):
    item = devices[2]
    payload = os.urandom(131_072)
    with IoTPlatformClient(clean_emulator.endpoint, ca_file=clean_emulator.ca_file) as client:
        token = client.authenticate(_device(item), item["deviceSecret"], client_id="c" * 64)
        message_id = client.publish(token, _topic(item, "user/big"), payload)
    [stored] = clean_emulator.messages(device=_device(item))
    assert stored["messageId"] == message_id and stored["payload"] == payload


def test_explicit_timestamp_within_validity_is_accepted(client, devices):
    item = devices[0]
    token = client.authenticate(_device(item), item["deviceSecret"], timestamp_ms=int(time.time() * 1000) - 60_000)
    assert isinstance(token, str) and token


# -- platform codes ------------------------------------------------------------------------------

def _assert_explains_auth_failure(error):
    assert error.code == 20000 and error.action is Action.PERMANENT and not error.ambiguous
    assert error.message.startswith("auth check error")
    for hint in ("secret", "exists", "clock"):
        assert hint in error.message


def test_wrong_secret_is_a_permanent_auth_check_error(client, devices):
    with pytest.raises(IoTPlatformError) as caught:
        client.authenticate(_device(devices[0]), "not-the-secret")
    _assert_explains_auth_failure(caught.value)
    assert type(caught.value) is IoTPlatformError and "(code 20000)" in str(caught.value)


def test_unknown_device_is_a_permanent_auth_check_error(client, devices):
    with pytest.raises(IoTPlatformError) as caught:
        client.authenticate(Device(devices[0]["productKey"], "noSuchDevice"), devices[0]["deviceSecret"])
    _assert_explains_auth_failure(caught.value)
    assert "noSuchDevice" in caught.value.message


def test_old_timestamp_fails_and_names_clock_skew(client, devices):
    twenty_minutes_ago = int(time.time() * 1000) - 20 * 60 * 1000
    with pytest.raises(IoTPlatformError) as caught:
        client.authenticate(_device(devices[0]), devices[0]["deviceSecret"], timestamp_ms=twenty_minutes_ago)
    _assert_explains_auth_failure(caught.value)
    assert "clock skew" in caught.value.message


def test_expired_token_asks_to_reauthenticate(clean_emulator, client, devices):
    clean_emulator.set_limits(token_ttl=0.3)
    token = client.authenticate(_device(devices[0]), devices[0]["deviceSecret"])
    time.sleep(0.4)
    with pytest.raises(IoTPlatformError) as caught:
        client.publish(token, _topic(devices[0]), b"late")
    error = caught.value
    assert (error.code, error.message, error.action) == (20001, "token is expired", Action.REAUTHENTICATE)
    assert clean_emulator.messages() == []


def test_expire_tokens_on_a_fresh_emulator(fresh_emulator, devices):
    running = fresh_emulator()
    with IoTPlatformClient(running.endpoint, ca_file=running.ca_file) as client:
        token = client.authenticate(_device(devices[3]), devices[3]["deviceSecret"])
        client.publish(token, _topic(devices[3]), b"before")
        running.expire_tokens()
        with pytest.raises(IoTPlatformError) as caught:
            client.publish(token, _topic(devices[3]), b"after")
        assert caught.value.code == 20001 and caught.value.action is Action.REAUTHENTICATE
        fresh = client.authenticate(_device(devices[3]), devices[3]["deviceSecret"])
        assert fresh != token
        client.publish(fresh, _topic(devices[3]), b"again")
    assert [m["payload"] for m in running.messages()] == [b"before", b"again"]


def test_unknown_token_is_check_token_error(client, devices):
    with pytest.raises(IoTPlatformError) as caught:
        client.publish("0" * 32, _topic(devices[0]), b"x")
    error = caught.value
    assert (error.code, error.message, error.action) == (20003, "check token error", Action.REAUTHENTICATE)


@pytest.mark.parametrize("empty", ["", None])
def test_empty_token_is_sent_and_answered_token_is_null(clean_emulator, client, devices, empty):
    # The platform's own answer carries the right action (get a token), so the client does not pre-empt it.
    with pytest.raises(IoTPlatformError) as caught:
        client.publish(empty, _topic(devices[0]), b"x")
    error = caught.value
    assert (error.code, error.message, error.action) == (20002, "token is null", Action.REAUTHENTICATE)
    assert _device_requests(clean_emulator)["topic"] == {"20002": 1}


def test_malformed_token_is_refused_without_echoing_it(clean_emulator, client, token, devices):
    for bad in (token + "\n", " " + token, token + "\r\nX-Injected: 1"):
        with pytest.raises(InvalidRequest) as caught:
            client.publish(bad, _topic(devices[0]), b"x")
        assert token not in str(caught.value) and not caught.value.ambiguous
    assert "topic" not in _device_requests(clean_emulator)


def test_another_devices_topic_is_publish_message_error(client, token, devices):
    with pytest.raises(IoTPlatformError) as caught:
        client.publish(token, _topic(devices[1]), b"x")
    error = caught.value
    # Documented as a transient 'publish message error', so RETRY, though a resend cannot help here.
    assert error.code == 30001 and error.message.startswith("publish message error")
    assert error.action is Action.RETRY and "may not publish" in error.message


def test_device_rate_limit_is_throttled(clean_emulator, client, devices):
    clean_emulator.set_limits(device_qps=1)
    token = client.authenticate(_device(devices[0]), devices[0]["deviceSecret"])
    with pytest.raises(IoTPlatformError) as caught:
        for _ in range(5):
            client.publish(token, _topic(devices[0]), b"x")
    error = caught.value
    assert (error.code, error.message, error.action) == (40000, "request too many: device message rate exceeded",
                                                         Action.THROTTLED)


# -- transport failures --------------------------------------------------------------------------

def test_connection_refused_is_connect_and_not_ambiguous(devices):
    with IoTPlatformClient(f"https://127.0.0.1:{_closed_port()}", connect_timeout=2) as client:
        with pytest.raises(TransportError) as auth_failure:
            client.authenticate(_device(devices[0]), devices[0]["deviceSecret"])
        with pytest.raises(TransportError) as publish_failure:
            client.publish("0" * 32, _topic(devices[0]), b"x")
    for error in (auth_failure.value, publish_failure.value):
        assert error.kind == "connect" and error.code is None
        assert error.action is Action.RETRY and not error.ambiguous


def test_read_timeout_is_ambiguous_for_publish(clean_emulator, devices):
    item = devices[1]
    with IoTPlatformClient(clean_emulator.endpoint, ca_file=clean_emulator.ca_file, read_timeout=0.25) as client:
        token = client.authenticate(_device(item), item["deviceSecret"])
        clean_emulator.set_faults(latency_ms=1000)
        with pytest.raises(TransportError) as publish_failure:
            client.publish(token, _topic(item), b"slow")
        with pytest.raises(TransportError) as auth_failure:
            client.authenticate(_device(item), item["deviceSecret"])
    assert publish_failure.value.kind == "read_timeout" and publish_failure.value.ambiguous
    assert publish_failure.value.action is Action.RETRY
    assert auth_failure.value.kind == "read_timeout" and not auth_failure.value.ambiguous
    # Why it is ambiguous: the platform stored the message whose reply never came.
    assert [m["payload"] for m in clean_emulator.messages(device=_device(item))] == [b"slow"]


def test_dropped_connection_is_connection_lost(clean_emulator, client, token, devices):
    clean_emulator.set_faults(drop_rate=1)
    with pytest.raises(TransportError) as publish_failure:
        client.publish(token, _topic(devices[0]), b"x")
    with pytest.raises(TransportError) as auth_failure:
        client.authenticate(_device(devices[0]), devices[0]["deviceSecret"])
    assert publish_failure.value.kind == "connection_lost" and publish_failure.value.ambiguous
    assert auth_failure.value.kind == "connection_lost" and not auth_failure.value.ambiguous
    assert _device_requests(clean_emulator) == {"auth": {"0": 1, "dropped": 1}, "topic": {"dropped": 1}}


@pytest.mark.parametrize("status, action", [(503, Action.RETRY), (429, Action.THROTTLED), (404, Action.PERMANENT)])
def test_gateway_http_status_is_not_a_platform_code(clean_emulator, client, token, devices, status, action):
    clean_emulator.set_faults(http_status_rate={str(status): 1})
    with pytest.raises(TransportError) as caught:
        client.publish(token, _topic(devices[0]), b"x")
    error = caught.value
    assert (error.kind, error.http_status, error.code, error.action) == ("http_status", status, None, action)
    assert error.ambiguous is (status >= 500)


def test_certificate_from_another_ca_is_a_permanent_tls_failure(fresh_emulator, emulator, devices):
    other = fresh_emulator()
    with IoTPlatformClient(other.endpoint, ca_file=emulator.ca_file) as client:
        with pytest.raises(TransportError) as caught:
            client.authenticate(_device(devices[0]), devices[0]["deviceSecret"])
    error = caught.value
    assert error.kind == "tls" and error.action is Action.PERMANENT and not error.ambiguous
    assert _device_requests(other) == {}


# -- TLS trust -----------------------------------------------------------------------------------

def test_ca_file_wins_over_requests_ca_bundle(emulator, devices, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", os.environ.get("REQUESTS_CA_BUNDLE") or SYSTEM_CA_BUNDLE)
    with IoTPlatformClient(emulator.endpoint, ca_file=emulator.ca_file) as client:
        assert client.authenticate(_device(devices[0]), devices[0]["deviceSecret"])
    with IoTPlatformClient(emulator.endpoint) as client:  # the system bundle does not trust the emulator
        with pytest.raises(TransportError) as caught:
            client.authenticate(_device(devices[0]), devices[0]["deviceSecret"])
    assert caught.value.kind == "tls" and caught.value.action is Action.PERMANENT
    assert "certificate" in caught.value.message.lower()


def test_requests_ca_bundle_is_honoured_without_ca_file(emulator, devices, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", emulator.ca_file)
    with IoTPlatformClient(emulator.endpoint) as client:
        assert client.authenticate(_device(devices[0]), devices[0]["deviceSecret"])


def test_insecure_mode_connects_and_warns_without_secrets(clean_emulator, devices, caplog):
    item = devices[0]
    caplog.set_level(logging.DEBUG)
    with IoTPlatformClient(clean_emulator.endpoint, insecure_skip_tls_verify=True) as client:
        token = client.authenticate(_device(item), item["deviceSecret"])
        client.publish(token, _topic(item), b"x")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "connector.client.http"]
    assert len(warnings) == 1 and "verification is OFF" in warnings[0].getMessage()
    assert item["deviceSecret"] not in caplog.text and token not in caplog.text
    assert len(clean_emulator.messages()) == 1


# -- refused before sending ----------------------------------------------------------------------

def _exactly(n):
    """A topic of the device's own, exactly n bytes long."""
    return lambda pk, dn: f"/{pk}/{dn}/user/".ljust(n, "x")


BAD_TOPICS = [
    pytest.param("/{pk}/{dn}/user/+", id="plus"),
    pytest.param("/{pk}/{dn}/user/#", id="hash"),
    pytest.param("/{pk}/{dn}/+/update", id="plus-level"),
    pytest.param("/{pk}//user/x", id="empty-level"),
    pytest.param("/{pk}/{dn}/user/", id="trailing-slash"),
    pytest.param("/{pk}/{dn}/user/x?a=b", id="query-string"),
    pytest.param(_exactly(129), id="129-bytes"),
    pytest.param("{pk}/{dn}/user/x", id="no-leading-slash"),
    pytest.param("", id="empty"),
]


@pytest.mark.parametrize("template", BAD_TOPICS)
def test_bad_topics_are_refused_without_a_request(emulator, client, token, devices, template):
    pk, dn = devices[0]["productKey"], devices[0]["deviceName"]
    topic = template(pk, dn) if callable(template) else template.format(pk=pk, dn=dn)
    before = _device_requests(emulator)
    with pytest.raises(InvalidRequest) as caught:
        client.publish(token, topic, b"x")
    assert caught.value.action is Action.PERMANENT and caught.value.code is None
    assert _device_requests(emulator) == before


def test_topic_byte_limit_is_inclusive(clean_emulator, client, devices):
    item = devices[0]
    token = client.authenticate(_device(item), item["deviceSecret"])
    longest = _exactly(128)(item["productKey"], item["deviceName"])
    client.publish(token, longest, b"x")
    assert len(longest) == 128 and [m["topic"] for m in clean_emulator.messages()] == [longest]


def test_oversized_payload_is_refused_without_a_request(emulator, client, token, devices):
    before = _device_requests(emulator)
    with pytest.raises(InvalidRequest) as caught:
        client.publish(token, _topic(devices[0]), b"\0" * 131_073)
    assert "131073" in str(caught.value) and caught.value.action is Action.PERMANENT
    assert _device_requests(emulator) == before


@pytest.mark.parametrize("client_id", ["", "c" * 65])
def test_bad_client_id_is_refused_without_a_request(emulator, client, devices, client_id):
    before = _device_requests(emulator)
    with pytest.raises(InvalidRequest):
        client.authenticate(_device(devices[0]), devices[0]["deviceSecret"], client_id=client_id)
    assert _device_requests(emulator) == before


@pytest.mark.parametrize("endpoint", ["http://127.0.0.1:1", "127.0.0.1:1", "ftp://127.0.0.1"])
def test_only_https_endpoints(endpoint):
    with pytest.raises(ValueError, match="HTTPS"):
        IoTPlatformClient(endpoint)


def test_unknown_sign_method_is_refused():
    with pytest.raises(ValueError, match="sign method"):
        IoTPlatformClient("https://127.0.0.1:1", sign_method="hmacsha512")


# -- connections -------------------------------------------------------------------------------

def test_keep_alive_reuses_one_connection(clean_emulator, client, devices):
    item = devices[2]
    token = client.authenticate(_device(item), item["deviceSecret"])
    for i in range(20):
        client.publish(token, _topic(item), b"%d" % i)
    assert (client.connections_opened, client.requests_sent) == (1, 21)


def test_sixteen_threads_share_a_pool_of_sixteen(clean_emulator, devices):
    clean_emulator.set_limits(device_qps=10_000)
    per_thread, threads = 8, 16
    with IoTPlatformClient(clean_emulator.endpoint, ca_file=clean_emulator.ca_file, pool_size=16) as client:
        tokens = [client.authenticate(_device(item), item["deviceSecret"]) for item in devices]
        start = threading.Barrier(threads)
        ids, failures = [], []

        def work(n):
            item = devices[n % len(devices)]
            start.wait()
            try:
                for i in range(per_thread):
                    ids.append(client.publish(tokens[n % len(devices)], _topic(item), b"%d-%d" % (n, i)))
            except Exception as error:  # reported below: an assertion in a thread would be lost
                failures.append(error)

        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    assert failures == []
    assert len(set(ids)) == threads * per_thread
    stored = clean_emulator.messages()
    assert {m["messageId"] for m in stored} == set(ids)
    assert {m["payload"] for m in stored} == {b"%d-%d" % (n, i) for n in range(threads) for i in range(per_thread)}
    assert 1 <= client.connections_opened <= 16
    assert client.requests_sent == len(devices) + threads * per_thread


# -- secrets stay secret ---------------------------------------------------------------------------

def test_secrets_and_tokens_stay_out_of_logs_errors_and_reprs(clean_emulator, devices, caplog):
    caplog.set_level(logging.DEBUG)
    item, other = devices[0], devices[1]
    wrong_secret = "wrong-" + item["deviceSecret"][::-1]
    with IoTPlatformClient(clean_emulator.endpoint, ca_file=clean_emulator.ca_file) as client:
        cache = TokenCache(client, {_device(item): item["deviceSecret"], _device(other): wrong_secret})
        with pytest.raises(IoTPlatformError) as auth_failure:
            cache.get(_device(other))
        token = cache.get(_device(item))
        with pytest.raises(IoTPlatformError) as publish_failure:
            client.publish(token, _topic(other), b"x")
        with pytest.raises(InvalidRequest) as header_failure:
            client.publish(token + "\n", _topic(item), b"x")
        texts = [caplog.text, repr(client), repr(cache)]
        for error in (auth_failure.value, publish_failure.value, header_failure.value):
            texts += [str(error), repr(error), error.message]
    assert 'POST /topic' in caplog.text and 'POST /auth' in caplog.text  # the client's debug lines were captured
    for text in texts:
        for secret in (item["deviceSecret"], wrong_secret, other["deviceSecret"], token):
            assert secret not in text


# -- errors survive pickling -----------------------------------------------------------------------

def _attributes(error):
    return (type(error), str(error), error.args, error.code, error.message, error.action, error.ambiguous,
            getattr(error, "kind", None), getattr(error, "http_status", None))


def test_errors_pickle_with_their_attributes(client, devices):
    with pytest.raises(IoTPlatformError) as from_platform:
        client.authenticate(_device(devices[0]), "wrong")
    errors = [
        from_platform.value,
        IoTPlatformError.from_reply(20001),
        IoTPlatformError(30001, "publish message error", ambiguous=True),
        TransportError("http_status", "HTTP 503", http_status=503, ambiguous=True),
        TransportError("tls", "bad certificate", action=Action.PERMANENT),
        InvalidRequest("topic must not have empty levels"),
        UnknownDevice(Device("pk", "dn")),
    ]
    for error in errors:
        for dumps, loads in ((pickle.dumps, pickle.loads), (beam_pickler.dumps, beam_pickler.loads)):
            copy = loads(dumps(error))
            assert _attributes(copy) == _attributes(error)
    assert pickle.loads(pickle.dumps(errors[3])).http_status == 503
