"""POST /auth: every rule of the spec and docs/protocol.md with the code the emulator answers."""
import json
import re

import pytest

from connector.protocol import codes
from emulator_support import auth, auth_params, now_ms, own_topic, post, publish, token


@pytest.mark.parametrize("method", ["hmacmd5", "hmacsha1", "hmacsha256"])
def test_each_sign_method_authenticates(emulator, devices, method):
    reply = auth(emulator, auth_params(devices[0], method=method))
    assert reply["code"] == 0 and reply["message"] == "success"
    assert re.fullmatch(r"[0-9a-f]{32}", reply["info"]["token"])


@pytest.mark.parametrize("declared", ["hmacmd5", "hmacsha1", "hmacsha256"])
def test_a_signature_made_another_way_is_refused_for_each_method(emulator, devices, declared):
    for signed_with in {"hmacmd5", "hmacsha1", "hmacsha256"} - {declared}:
        params = auth_params(devices[0], method=signed_with)
        params["signmethod"] = declared
        assert auth(emulator, params)["code"] == codes.AUTH_CHECK_ERROR
    wrong_secret = dict(devices[0], deviceSecret="not-the-secret")
    assert auth(emulator, auth_params(wrong_secret, method=declared))["code"] == codes.AUTH_CHECK_ERROR
    assert auth(emulator, auth_params(devices[0], method=declared))["code"] == 0


def test_sign_methods_of_accepted_auths_are_counted(clean_emulator, devices):
    for method in ("hmacsha1", "hmacsha256", "hmacsha256"):
        auth(clean_emulator, auth_params(devices[0], method=method))
    params = auth_params(devices[0], method="hmacmd5")
    del params["signmethod"]  # absent: hmacmd5
    auth(clean_emulator, params)
    auth(clean_emulator, auth_params(dict(devices[0], deviceSecret="wrong"), method="hmacsha1"))  # refused
    assert clean_emulator.counters()["sign_methods"] == {"hmacmd5": 1, "hmacsha1": 1, "hmacsha256": 2}
    clean_emulator.reset()
    assert clean_emulator.counters()["sign_methods"] == {}


def test_absent_signmethod_means_hmacmd5(emulator, devices):
    params = auth_params(devices[0], method="hmacmd5")
    del params["signmethod"]
    assert auth(emulator, params)["code"] == 0
    params = auth_params(devices[0], method="hmacsha1")
    del params["signmethod"]
    assert auth(emulator, params)["code"] == codes.AUTH_CHECK_ERROR


def test_uppercase_hex_signature_is_accepted(emulator, devices):
    params = auth_params(devices[0], method="hmacsha1")
    params["sign"] = params["sign"].upper()
    assert auth(emulator, params)["code"] == 0


def test_timestamp_as_string_and_as_number(emulator, devices):
    assert auth(emulator, auth_params(devices[0], timestamp=str(now_ms())))["code"] == 0
    assert auth(emulator, auth_params(devices[0], timestamp=now_ms()))["code"] == 0


def test_numeric_timestamp_is_signed_as_the_text_sent(emulator, devices):
    stamp = now_ms()
    params = auth_params(devices[0], timestamp=str(stamp))  # signed over "timestamp<digits>"
    body = json.dumps(params).replace(f'"timestamp": "{stamp}"', f'"timestamp": {stamp}')
    assert f'"timestamp": {stamp}' in body
    assert auth(emulator, body.encode())["code"] == 0


@pytest.mark.parametrize("offset_minutes", [-16, 16])
def test_timestamp_beyond_15_minutes_fails_and_names_clock_skew(emulator, devices, offset_minutes):
    reply = auth(emulator, auth_params(devices[0], timestamp=str(now_ms() + offset_minutes * 60_000)))
    assert reply["code"] == codes.AUTH_CHECK_ERROR
    assert reply["message"].startswith("auth check error") and "clock skew" in reply["message"]


def test_timestamp_within_15_minutes_is_accepted(emulator, devices):
    assert auth(emulator, auth_params(devices[0], timestamp=str(now_ms() - 14 * 60_000)))["code"] == 0


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"])
def test_json_content_types_are_accepted(emulator, devices, content_type):
    assert auth(emulator, auth_params(devices[0]), content_type=content_type)["code"] == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/octet-stream", "application/jsonx"])
def test_other_content_types_are_param_errors(emulator, devices, content_type):
    reply = auth(emulator, auth_params(devices[0]), content_type=content_type)
    assert reply["code"] == codes.PARAM_ERROR and reply["message"].startswith("param error")


@pytest.mark.parametrize("field", ["productKey", "deviceName", "clientId", "sign"])
def test_each_required_field_is_required(emulator, devices, field):
    params = auth_params(devices[0])
    del params[field]
    assert auth(emulator, params)["code"] == codes.PARAM_ERROR


@pytest.mark.parametrize("length, code", [(0, codes.PARAM_ERROR), (1, 0), (64, 0), (65, codes.PARAM_ERROR)])
def test_client_id_is_1_to_64_characters(emulator, devices, length, code):
    assert auth(emulator, auth_params(devices[0], client_id="c" * length))["code"] == code


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'"text"', b"null", b"\xff\xfe{", b'{"productKey": NaN}'])
def test_bodies_that_are_not_a_json_object_are_param_errors(emulator, body):
    assert auth(emulator, body)["code"] == codes.PARAM_ERROR


@pytest.mark.parametrize("field, value", [
    ("productKey", 12345), ("deviceName", None), ("clientId", ["a"]), ("sign", {}),
    ("timestamp", True), ("timestamp", "yesterday"), ("version", 1), ("signmethod", 1), ("extra", {"a": 1}),
])
def test_wrong_types_are_param_errors(emulator, devices, field, value):
    params = auth_params(devices[0])
    params[field] = value
    assert auth(emulator, params)["code"] == codes.PARAM_ERROR


def test_unknown_sign_method_is_a_param_error(emulator, devices):
    params = auth_params(devices[0])
    params["signmethod"] = "hmacsha512"
    assert auth(emulator, params)["code"] == codes.PARAM_ERROR


def test_unknown_device_and_wrong_secret_fail_auth_check(emulator, devices):
    stranger = dict(devices[0], deviceName="nobody")
    reply = auth(emulator, auth_params(stranger))
    assert reply == {"code": codes.AUTH_CHECK_ERROR, "message": "auth check error", "info": {}}
    wrong_secret = dict(devices[0], deviceSecret="not-the-secret")
    assert auth(emulator, auth_params(wrong_secret))["code"] == codes.AUTH_CHECK_ERROR


def test_extra_parameters_are_signed(emulator, devices):
    params = auth_params(devices[0], extra="1")
    assert auth(emulator, params)["code"] == 0
    params["extra"] = "2"
    assert auth(emulator, params)["code"] == codes.AUTH_CHECK_ERROR


def test_query_string_on_auth_is_ignored(emulator, devices):
    assert auth(emulator, auth_params(devices[0]), path="/auth?_v=2&x=y")["code"] == 0


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_only_post_is_supported(emulator, devices, method):
    reply = post(emulator, "/auth", auth_params(devices[0]), {"Content-Type": "application/json"}, method=method)
    assert reply.status_code == 200 and reply.json()["code"] == codes.PARAM_ERROR


def test_auth_reply_is_small_json_with_lowercase_info(emulator, devices):
    reply = post(emulator, "/auth", auth_params(devices[0]), {"Content-Type": "application/json"})
    assert reply.status_code == 200 and reply.headers["Content-Type"] == "application/json"
    assert len(reply.content) <= 255 and list(reply.json()) == ["code", "message", "info"]
    failure = post(emulator, "/auth", auth_params(devices[0], timestamp="1"), {"Content-Type": "application/json"})
    assert len(failure.content) <= 255 and failure.json()["code"] == codes.AUTH_CHECK_ERROR


def test_each_auth_issues_a_new_token_and_old_ones_stay_valid(emulator, devices):
    first, second = token(emulator, devices[1]), token(emulator, devices[1])
    assert first != second
    for value in (first, second):
        assert publish(emulator, value, own_topic(devices[1])).json()["code"] == 0
