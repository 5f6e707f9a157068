"""Products' custom topic categories: declared in the devices file or through the admin API, a product's
devices publish only to its categories with publish permission, besides /user/update and the thing topics."""
import json
import re

import pytest

from connector.emulator import Emulator, EmulatorError, make_devices
from connector.emulator.products import parse_products
from connector.protocol import codes
from emulator_support import own_topic, publish, token
from write_support import run_write, write_credentials

LEGACY = "a1Legacy001"
CATEGORIES = [
    {"topic": "/${productKey}/${deviceName}/data", "operation": "PUB"},  # the legacy C SDK's example topic
    {"topic": f"/{LEGACY}/${{deviceName}}/user/report/daily", "operation": "ALL"},  # as the console shows it
    {"topic": "/${productKey}/${deviceName}/user/get", "operation": "SUB"},
]


@pytest.fixture(scope="module")
def fleet():
    """Devices of a product that declares topic categories, and of one that declares none."""
    return make_devices(2, product_key=LEGACY) + make_devices(1, product_key="a1Lenient01")


@pytest.fixture(scope="module")
def platform(fleet):
    with Emulator(fleet, products=[{"productKey": LEGACY, "topicCategories": CATEGORIES}]) as running:
        yield running


def _code(emulator, device, topic):
    return publish(emulator, token(emulator, device), topic).json()["code"]


@pytest.mark.parametrize("tail", [
    "data", "user/report/daily", "user/update", "user/update/error",
    "/sys/{pk}/{dn}/thing/event/property/history/post", "/ota/device/inform/{pk}/{dn}",
])
def test_declared_categories_default_ones_and_system_topics_are_accepted(platform, fleet, tail):
    device = fleet[0]
    topic = tail.format(pk=device["productKey"], dn=device["deviceName"]) if tail.startswith("/") \
        else own_topic(device, tail)
    assert _code(platform, device, topic) == 0


@pytest.mark.parametrize("tail", ["user/get", "user/other", "user/report", "user/report/daily/x", "other"])
def test_other_custom_topics_of_a_declaring_product_answer_30001(platform, fleet, tail):
    reply = publish(platform, token(platform, fleet[0]), own_topic(fleet[0], tail)).json()
    assert reply["code"] == codes.PUBLISH_MESSAGE_ERROR and "topic category" in reply["message"]


def test_a_declared_category_is_still_only_the_devices_own(platform, fleet):
    other = fleet[1]
    assert _code(platform, fleet[0], own_topic(other, "data")) == codes.PUBLISH_MESSAGE_ERROR


def test_a_product_that_declares_none_stays_lenient(platform, fleet):
    device = fleet[2]
    assert _code(platform, device, own_topic(device, "user/anything/at/all")) == 0
    assert _code(platform, device, own_topic(device, "data")) == codes.PUBLISH_MESSAGE_ERROR


def test_the_devices_file_may_declare_products(fleet, tmp_path):
    devices_file = tmp_path / "devices.json"
    devices_file.write_text(json.dumps({"devices": fleet, "products": [{"productKey": LEGACY,
                                                                        "topicCategories": CATEGORIES[:1]}]}))
    with Emulator(str(devices_file)) as emulator:
        assert emulator.devices == fleet
        assert _code(emulator, fleet[0], own_topic(fleet[0], "data")) == 0
        assert _code(emulator, fleet[0], own_topic(fleet[0], "user/report/daily")) == codes.PUBLISH_MESSAGE_ERROR
        assert emulator.products() == [{"productKey": LEGACY, "publishTopics": [f"/{LEGACY}/${{deviceName}}/data"]}]


def test_the_admin_api_declares_and_replaces_categories(fresh_emulator, fleet):
    emulator = fresh_emulator(devices=fleet)
    device = fleet[0]
    assert emulator.products() == []
    assert _code(emulator, device, own_topic(device, "user/anything")) == 0
    emulator.add_products([{"productKey": LEGACY, "topicCategories": CATEGORIES[:1]}])
    assert _code(emulator, device, own_topic(device, "user/anything")) == codes.PUBLISH_MESSAGE_ERROR
    assert _code(emulator, device, own_topic(device, "data")) == 0
    emulator.add_products([{"productKey": LEGACY, "topicCategories": [
        {"topic": "/${productKey}/${deviceName}/user/anything", "operation": "PUB"}]}])
    assert _code(emulator, device, own_topic(device, "user/anything")) == 0
    assert _code(emulator, device, own_topic(device, "data")) == codes.PUBLISH_MESSAGE_ERROR
    emulator.reset()  # products stay, like devices
    assert _code(emulator, device, own_topic(device, "user/anything")) == 0
    with pytest.raises(EmulatorError, match="400.*operation"):
        emulator.add_products([{"productKey": LEGACY,
                                "topicCategories": [{"topic": "/${productKey}/${deviceName}/x"}]}])
    emulator.reset(products=True)  # asked for: the categories declared since start are forgotten
    assert emulator.products() == []
    assert _code(emulator, device, own_topic(device, "data")) == codes.PUBLISH_MESSAGE_ERROR


def test_reset_with_products_goes_back_to_the_devices_files_categories(fleet, tmp_path):
    devices_file = tmp_path / "devices.json"
    declared = [{"productKey": LEGACY, "topicCategories": CATEGORIES[:1]}]
    devices_file.write_text(json.dumps({"devices": fleet, "products": declared}))
    with Emulator(str(devices_file)) as emulator:
        at_start = emulator.products()
        emulator.add_products([{"productKey": "a1Lenient01", "topicCategories": CATEGORIES[:1]},
                               {"productKey": LEGACY, "topicCategories": []}])
        assert _code(emulator, fleet[0], own_topic(fleet[0], "data")) == codes.PUBLISH_MESSAGE_ERROR
        emulator.reset(products=True)
        assert emulator.products() == at_start
        assert _code(emulator, fleet[0], own_topic(fleet[0], "data")) == 0
        assert _code(emulator, fleet[2], own_topic(fleet[2], "user/anything")) == 0


@pytest.mark.parametrize("category, problem", [
    ({"topic": "/${productKey}/${deviceName}/data"}, "operation"),
    ({"topic": "/${productKey}/${deviceName}/data", "operation": "pub"}, "operation"),
    ({"topic": "/{productKey}/{deviceName}/data", "operation": "PUB"}, "must be /${productKey}/${deviceName}/"),
    ({"topic": "/a1Other/${deviceName}/data", "operation": "PUB"}, "must be /${productKey}/${deviceName}/"),
    ({"topic": "/${productKey}/${deviceName}", "operation": "PUB"}, "with a level after"),
    ({"topic": "/${productKey}/${deviceName}/user/+", "operation": "PUB"}, "letters, digits"),
    ({"topic": "/${productKey}/${deviceName}/user//x", "operation": "PUB"}, "letters, digits"),
    ({"topic": "/${productKey}/${deviceName}/user/a-b", "operation": "ALL"}, "letters, digits"),
])
def test_bad_categories_are_refused_with_the_reason(category, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_products([{"productKey": LEGACY, "topicCategories": [category]}])


def test_subscribe_categories_may_hold_wildcards_and_never_allow_publishing():
    parsed = parse_products([{"productKey": LEGACY, "topicCategories": [
        {"topic": "/${productKey}/${deviceName}/user/#", "operation": "SUB"}]}])
    assert parsed == {LEGACY: frozenset()}


def test_a_bad_devices_file_stops_the_emulator_with_the_reason(tmp_path, fleet):
    devices_file = tmp_path / "devices.json"
    devices_file.write_text(json.dumps({"devices": fleet, "product": []}))
    with pytest.raises(EmulatorError, match="unknown keys"):
        Emulator(str(devices_file)).start()


def test_the_connector_publishes_to_a_legacy_category(platform, fleet, tmp_path):
    """A custom topic without /user/ works once its category is declared, through WriteToIoTPlatform too."""
    records = [{"productKey": d["productKey"], "deviceName": d["deviceName"], "n": i}
               for i in range(3) for d in fleet[:2]]
    credentials = write_credentials(tmp_path / "credentials.json", fleet)
    run = run_write(records, platform, credentials, tmp_path, topic="/{productKey}/{deviceName}/data")
    assert not run.failed and sum(r.record_count for r in run.receipts) == len(records)
    assert {r.topic for r in run.receipts} == {own_topic(d, "data") for d in fleet[:2]}
