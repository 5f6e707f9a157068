"""The protocol layer: signing against the spec's example and vectors from `openssl dgst -hmac`."""
import pytest

from connector.protocol import codes, signing
from connector.protocol.topics import InvalidTopic, device_owns_topic, topic_problem, validate_topic

SPEC_PARAMS = {"clientId": "12345", "deviceName": "device", "productKey": "pk", "timestamp": "789"}


def test_sign_content_is_sorted_name_value_pairs_without_unsigned_params():
    params = dict(SPEC_PARAMS, signmethod="hmacsha1", version="default", sign="x")
    assert signing.sign_content(params) == "clientId12345deviceNamedeviceproductKeypktimestamp789"


# Computed independently: printf %s CONTENT | openssl dgst -<alg> -hmac secret
@pytest.mark.parametrize("method, expected", [
    ("hmacmd5", "14b198324fe55e1d3c88f2e705e201ee"),
    ("hmacsha1", "fafd82a3d602b37fb0fa8b7892f24a477f851a14"),
    ("hmacsha256", "6074a46a91b1ebb2cc4ea42790ad0e80202c9843859fc292e57c4eb19fad9e57"),
])
def test_sign_matches_openssl_vectors_for_the_spec_example(method, expected):
    assert signing.sign("secret", SPEC_PARAMS, method) == expected


def test_only_parameters_sent_are_signed():
    params = {"clientId": "pk.dn", "deviceName": "dn", "productKey": "pk"}
    assert signing.sign("s3cr3t", params, "hmacsha1") == "c4514cd54e2247041cb08a7234942a329b3c33b9"


def test_signature_check_accepts_either_hex_case_and_refuses_a_wrong_one():
    good = signing.sign("secret", SPEC_PARAMS, "hmacsha1")
    assert signing.signature_matches("secret", SPEC_PARAMS, "hmacsha1", good.upper())
    assert not signing.signature_matches("other", SPEC_PARAMS, "hmacsha1", good)


def test_unknown_sign_method_is_refused():
    with pytest.raises(ValueError, match="unknown sign method"):
        signing.sign("secret", SPEC_PARAMS, "hmacsha512")


@pytest.mark.parametrize("topic, problem", [
    ("/pk/dn/user/update", None),
    ("pk/dn/user/update", "start with '/'"),
    ("/pk/dn/user/+", "wildcards"),
    ("/pk/dn/user/#", "wildcards"),
    ("/pk//user/update", "empty levels"),
    ("/pk/dn/user/update/", "empty levels"),
    ("/pk/dn/user/update?x=1", "query string"),
    ("/pk/dn/user/" + "a" * 120, "128 bytes"),
    ("/sys/pk/dn/thing/event/property/history/post", None),  # 8 levels: valid
    ("/pk/dn/user/a/b/c/d/e", None),  # no level limit in the spec for custom topics either
    ("", "non-empty"),
])
def test_topic_rules(topic, problem):
    found = topic_problem(topic)
    if problem is None:
        assert found is None
        validate_topic(topic)
    else:
        assert problem in found
        with pytest.raises(InvalidTopic):
            validate_topic(topic)


@pytest.mark.parametrize("topic, owned", [
    ("/pk/dn/user/update", True),
    ("/pk/dn/user/a/b", True),
    ("/pk/dn/data", True),  # a custom topic: whether its category exists only the platform knows
    ("/pk/dn", False),
    ("/pk/other/user/update", False),
    ("/sys/pk/dn/thing/event/property/post", True),
    ("/sys/pk/dn/thing/deviceinfo/update", True),
    ("/sys/pk/other/thing/event/property/post", False),
    ("/ota/device/inform/pk/dn", True),
    ("/ota/device/progress/pk/dn", True),
    ("/shadow/update/pk/dn", True),
    ("/shadow/update/pk/other", False),
])
def test_device_owns_only_its_own_topics(topic, owned):
    assert device_owns_topic(topic, "pk", "dn") is owned


# The thing-model topics a directly connected device publishes to, as the platform documents them.
DOCUMENTED_THING_TOPICS = [
    "/sys/{pk}/{dn}/thing/event/property/post",
    "/sys/{pk}/{dn}/thing/event/property/history/post",
    "/sys/{pk}/{dn}/thing/event/property/batch/post",
    "/sys/{pk}/{dn}/thing/event/{identifier}/post",
    "/sys/{pk}/{dn}/thing/service/property/set_reply",
    "/sys/{pk}/{dn}/thing/deviceinfo/update",
    "/sys/{pk}/{dn}/thing/deviceinfo/delete",
    "/sys/{pk}/{dn}/thing/property/desired/get",
    "/sys/{pk}/{dn}/thing/property/desired/delete",
    "/sys/{pk}/{dn}/thing/model/up_raw",
]


@pytest.mark.parametrize("template", DOCUMENTED_THING_TOPICS)
def test_every_documented_thing_topic_is_valid_and_the_devices_own(template):
    topic = template.format(pk="a1B2c3D4e5F", dn="meter-00001", identifier="overheat")
    assert topic_problem(topic) is None
    assert device_owns_topic(topic, "a1B2c3D4e5F", "meter-00001")


def test_every_code_has_its_official_message_and_an_action():
    assert codes.MESSAGES[codes.TOKEN_EXPIRED] == "token is expired"
    assert codes.action_for(codes.TOKEN_EXPIRED) is codes.Action.REAUTHENTICATE
    assert codes.action_for(codes.REQUEST_TOO_MANY) is codes.Action.THROTTLED
    assert codes.action_for(codes.PARAM_ERROR) is codes.Action.PERMANENT
    assert codes.action_for(codes.PUBLISH_MESSAGE_ERROR) is codes.Action.RETRY
