"""POST /topic/${topic}: tokens, content type, size, topics, throttling, and what gets stored."""
import re
import time

import pytest

from connector.protocol import codes
from connector.protocol.limits import MAX_PAYLOAD_BYTES
from emulator_support import auth, auth_params, own_topic, publish, token


@pytest.fixture
def device(devices):
    return devices[0]


@pytest.fixture
def device_token(emulator, device):
    return token(emulator, device)


def test_publish_is_stored_with_an_exact_message_id_above_2_53(clean_emulator, device, device_token):
    reply = publish(clean_emulator, device_token, own_topic(device), b"\x00payload\xff")
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
    text_id = re.fullmatch(r'\{"code":0,"message":"success","info":\{"messageId":(\d+)\}\}', reply.text).group(1)
    assert int(text_id) > 2**53
    (stored,) = clean_emulator.messages()
    assert stored["messageIdStr"] == text_id and stored["messageId"] == int(text_id)
    assert stored["payload"] == b"\x00payload\xff" and stored["topic"] == own_topic(device)
    assert (stored["productKey"], stored["deviceName"]) == (device["productKey"], device["deviceName"])


def test_message_ids_increase(emulator, device, device_token):
    ids = [publish(emulator, device_token, own_topic(device)).json()["info"]["messageId"] for _ in range(5)]
    assert ids == sorted(set(ids))


@pytest.mark.parametrize("header", ["password", "Password", "PASSWORD"])
def test_password_header_in_any_case(emulator, device, device_token, header):
    assert publish(emulator, device_token, own_topic(device), header=header).json()["code"] == 0


@pytest.mark.parametrize("tail", ["user/update", "user/a/b/c", "user/a/b/c/d/e", "thing/event/property/post",
                                  "thing/event/property/history/post", "thing/event/property/batch/post"])
def test_own_topics_are_accepted(emulator, device, device_token, tail):
    system_topic = f"/sys/{device['productKey']}/{device['deviceName']}/{tail}"
    topic = own_topic(device, tail) if tail.startswith("user") else system_topic
    assert publish(emulator, device_token, topic).json()["code"] == 0


@pytest.mark.parametrize("value, code, message", [
    (None, codes.TOKEN_NULL, "token is null"),
    ("", codes.TOKEN_NULL, "token is null"),
    ("0123456789abcdef0123456789abcdef", codes.CHECK_TOKEN_ERROR, "check token error"),
])
def test_missing_and_unknown_tokens(clean_emulator, device, value, code, message):
    reply = publish(clean_emulator, value, own_topic(device)).json()
    assert (reply["code"], reply["message"]) == (code, message)
    assert clean_emulator.messages() == []


def test_token_expires_after_its_lifetime(clean_emulator, device):
    clean_emulator.set_limits(token_ttl=1)
    short_lived = token(clean_emulator, device)
    assert publish(clean_emulator, short_lived, own_topic(device)).json()["code"] == 0
    time.sleep(1.1)
    reply = publish(clean_emulator, short_lived, own_topic(device)).json()
    assert (reply["code"], reply["message"]) == (codes.TOKEN_EXPIRED, "token is expired")
    assert reply["info"]["messageId"] > 2**53  # the real server sends one with 20001 too
    assert len(clean_emulator.messages()) == 1


def test_expire_tokens_expires_every_issued_token(clean_emulator, devices):
    tokens = [token(clean_emulator, d) for d in devices[:2]]
    clean_emulator.expire_tokens()
    for device, value in zip(devices, tokens):
        assert publish(clean_emulator, value, own_topic(device)).json()["code"] == codes.TOKEN_EXPIRED
    assert publish(clean_emulator, token(clean_emulator, devices[0]), own_topic(devices[0])).json()["code"] == 0


@pytest.mark.parametrize("content_type", [None, "application/json", "text/plain"])
def test_other_content_types_are_param_errors(clean_emulator, device, device_token, content_type):
    reply = publish(clean_emulator, device_token, own_topic(device), content_type=content_type).json()
    assert reply["code"] == codes.PARAM_ERROR
    assert clean_emulator.messages() == []


def test_query_string_is_a_param_error(clean_emulator, device, device_token):
    assert publish(clean_emulator, device_token, own_topic(device) + "?qos=1").json()["code"] == codes.PARAM_ERROR
    assert clean_emulator.messages() == []


def test_body_of_exactly_128_kb_is_accepted_and_one_byte_more_is_not(clean_emulator, device, device_token):
    largest = bytes(range(256)) * (MAX_PAYLOAD_BYTES // 256)
    assert publish(clean_emulator, device_token, own_topic(device), largest).json()["code"] == 0
    reply = publish(clean_emulator, device_token, own_topic(device), largest + b"!").json()
    assert reply["code"] == codes.PARAM_ERROR
    assert [m["payload"] for m in clean_emulator.messages()] == [largest]


def test_chunked_body_over_128_kb_is_a_param_error(clean_emulator, device, device_token):
    chunks = iter([b"a" * 100_000, b"b" * 40_000])  # requests sends a generator chunked
    reply = publish(clean_emulator, device_token, own_topic(device), chunks).json()
    assert reply["code"] == codes.PARAM_ERROR
    assert publish(clean_emulator, device_token, own_topic(device), iter([b"ok"])).json()["code"] == 0


@pytest.mark.parametrize("suffix", [
    "user/+", "user/%23", "user//x", "user/x/", "user/" + "x" * 120,
])
def test_invalid_topics_are_param_errors(clean_emulator, device, device_token, suffix):
    reply = publish(clean_emulator, device_token, own_topic(device, suffix)).json()
    assert reply["code"] == codes.PARAM_ERROR and reply["message"].startswith("param error: ")
    assert clean_emulator.messages() == []


def test_another_devices_topic_is_a_publish_error(clean_emulator, devices, device_token):
    for topic in (own_topic(devices[1]), f"/sys/{devices[1]['productKey']}/{devices[1]['deviceName']}/thing/x",
                  f"/{devices[0]['productKey']}/{devices[0]['deviceName']}/other"):
        reply = publish(clean_emulator, device_token, topic).json()
        assert reply["code"] == codes.PUBLISH_MESSAGE_ERROR
        assert reply["message"].startswith("publish message error: ") and "may not publish" in reply["message"]
    assert clean_emulator.messages() == []


@pytest.mark.parametrize("method", ["GET", "PUT"])
def test_only_post_is_supported(clean_emulator, device, device_token, method):
    reply = publish(clean_emulator, device_token, own_topic(device), method=method)
    assert reply.status_code == 200 and reply.json()["code"] == codes.PARAM_ERROR
    assert clean_emulator.messages() == []


def test_device_rate_limit_answers_request_too_many(clean_emulator, devices):
    clean_emulator.set_limits(device_qps=3)
    first, second = token(clean_emulator, devices[0]), token(clean_emulator, devices[1])
    burst = [publish(clean_emulator, first, own_topic(devices[0])).json() for _ in range(6)]
    assert [r["code"] for r in burst].count(0) == 3
    throttled = next(r for r in burst if r["code"] != 0)
    assert (throttled["code"], throttled["message"]) == (
        codes.REQUEST_TOO_MANY, "request too many: device message rate exceeded")
    assert publish(clean_emulator, second, own_topic(devices[1])).json()["code"] == 0  # per device
    time.sleep(0.4)  # refills at 3 per second
    assert publish(clean_emulator, first, own_topic(devices[0])).json()["code"] == 0
    assert len(clean_emulator.messages()) == 5


def test_account_rate_limit_counts_auth_and_publish(clean_emulator, devices):
    value = token(clean_emulator, devices[0])
    clean_emulator.set_limits(account_qps=4)
    replies = [auth(clean_emulator, auth_params(devices[0]))["code"] for _ in range(2)]
    replies += [publish(clean_emulator, value, own_topic(devices[0])).json()["code"] for _ in range(4)]
    assert replies.count(0) == 4 and replies.count(codes.REQUEST_TOO_MANY) == 2
    assert replies[:4] == [0, 0, 0, 0]
