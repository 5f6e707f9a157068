"""The console in a real headless Chromium: messages appear decoded with exact ids, a fault set on the
page fails the next publishes, and every section loads without a console error. Screenshots are saved
for review in $IOT_CONSOLE_SCREENSHOTS (default: a new temporary directory, printed)."""
import os
import re

import pytest

from browser_support import chromium, console_errors, require_browser, screenshot_dir
from connector.client.errors import IoTPlatformError
from connector.client.http import IoTPlatformClient
from connector.emulator import Emulator, make_devices
from connector.protocol.device import Device

SECTIONS = ("messages", "devices", "traffic", "control")
WAIT_SECONDS = 10
PRODUCTS = [{"productKey": "pkConsole01", "topicCategories": [
    {"topic": "/${productKey}/${deviceName}/user/data", "operation": "PUB"}]}]


@pytest.fixture(scope="module")
def console_emulator():
    require_browser()  # before starting anything
    with Emulator(make_devices(120, product_key="pkConsole01"), products=PRODUCTS) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def browser(console_emulator):
    with chromium(console_emulator) as driver:
        yield driver


@pytest.fixture(scope="module")
def screenshots(request):
    path = screenshot_dir()
    with request.config.pluginmanager.get_plugin("capturemanager").global_and_fixture_disabled():
        print(f"\nconsole screenshots: {path}")
    return path


@pytest.fixture
def page(console_emulator, browser, screenshots):
    """The browser, with the emulator reset and the log read, so each test sees only its own errors."""
    console_emulator.reset()
    console_errors(browser)
    yield browser
    console_emulator.reset()


@pytest.fixture(scope="module")
def client(console_emulator):
    with IoTPlatformClient(console_emulator.endpoint, ca_file=console_emulator.ca_file) as opened:
        yield opened


def _device(emulator, index=0):
    entry = emulator.devices[index]
    return Device(entry["productKey"], entry["deviceName"]), entry["deviceSecret"]


def _open(driver, emulator, section):
    driver.get(f"{emulator.console}#{section}")
    driver.refresh()  # the same page with another #fragment would not load again


def _wait(driver, condition):
    from selenium.webdriver.support.ui import WebDriverWait
    return WebDriverWait(driver, WAIT_SECONDS).until(condition)


def _css(driver, selector):
    from selenium.webdriver.common.by import By
    return driver.find_elements(By.CSS_SELECTOR, selector)


def test_a_published_message_appears_decoded_with_its_exact_message_id(page, console_emulator, client, screenshots):
    device, secret = _device(console_emulator)
    token = client.authenticate(device, secret)
    topic = f"/{device.product_key}/{device.device_name}/user/update"
    _open(page, console_emulator, "messages")
    sent = client.publish(token, topic, b'{"temperature": 21.5, "seq": 9007199254740993}\n{"temperature": 22}\n')
    alink = client.publish(token, f"/sys/{device.product_key}/{device.device_name}/thing/event/property/post",
                           b'{"id":"7","version":"1.0","params":{"temperature":{"value":21.5}},'
                           b'"method":"thing.event.property.post"}')
    binary = client.publish(token, topic, bytes([0, 1, 254, 255]))
    hostile = client.publish(token, topic, b'<img src=x onerror="document.title=1">')
    item = _wait(page, lambda d: (_css(d, f'li[data-message-id="{hostile}"]') or [None])[0])
    first = _css(page, f'li[data-message-id="{sent}"]')[0]
    assert sent > 2**53 and first.find_element("css selector", ".id").text == str(sent)
    assert first.find_element("css selector", "pre").text == (
        '{\n  "temperature": 21.5,\n  "seq": 9007199254740993\n}\n{\n  "temperature": 22\n}')
    assert "jsonl" in first.text and topic in first.text
    shown = {message_id: _css(page, f'li[data-message-id="{message_id}"] .kind')[0].text
             for message_id in (alink, binary)}
    assert shown == {alink: "alink", binary: "hex"}
    assert _css(page, f'li[data-message-id="{binary}"] pre')[0].text == "00 01 fe ff"
    assert item.find_element("css selector", "pre").text == '<img src=x onerror="document.title=1">'
    assert not _css(page, "#message-list img") and page.title == "IoT Platform emulator console"
    page.save_screenshot(os.path.join(screenshots, "messages.png"))
    assert console_errors(page) == []


def test_a_fault_rate_set_on_the_page_fails_the_next_publishes(page, console_emulator, client, screenshots):
    device, secret = _device(console_emulator, 1)
    token = client.authenticate(device, secret)
    topic = f"/{device.product_key}/{device.device_name}/user/update"
    _open(page, console_emulator, "control")
    errors = _wait(page, lambda d: (_css(d, "#faults input[name=error_rate]") or [None])[0])
    errors.send_keys("30001=1")
    _css(page, "#faults button")[0].click()
    _wait(page, lambda d: _css(d, "#faults .result")[0].text == "Faults applied.")
    assert console_emulator.faults()["error_rate"] == {"30001": 1.0}
    for _ in range(3):
        with pytest.raises(IoTPlatformError) as refused:
            client.publish(token, topic, b"x")
        assert refused.value.code == 30001
    page.save_screenshot(os.path.join(screenshots, "control.png"))
    errors.clear()
    _css(page, "#faults button")[0].click()
    _wait(page, lambda d: console_emulator.faults()["error_rate"] == {})
    assert client.publish(token, topic, b"y") > 2**53
    assert console_emulator.counters()["requests"]["topic"] == {"0": 1, "30001": 3}


def test_limits_devices_and_tokens_change_from_the_page(page, console_emulator, client):
    _open(page, console_emulator, "control")
    qps = _wait(page, lambda d: [field for field in _css(d, "#limits input[name=device_qps]")
                                 if field.get_attribute("value")])[0]
    qps.clear()
    qps.send_keys("7")
    _css(page, "#limits button")[0].click()
    _wait(page, lambda d: _css(d, "#limits .result")[0].text == "Limits applied.")
    assert console_emulator.limits()["device_qps"] == 7
    for name, value in (("productKey", "pkConsole01"), ("deviceName", "added_on_page"), ("deviceSecret", "s3cret")):
        _css(page, f"#add-device input[name={name}]")[0].send_keys(value)
    _css(page, "#add-device button")[0].click()
    _wait(page, lambda d: _css(d, "#add-device .result")[0].text == "Added; 121 devices.")
    added = Device("pkConsole01", "added_on_page")
    token = client.authenticate(added, "s3cret")
    _css(page, "#expire-tokens")[0].click()
    _wait(page, lambda d: _css(d, "#actions .result")[0].text == "All tokens expired.")
    with pytest.raises(IoTPlatformError) as refused:
        client.publish(token, "/pkConsole01/added_on_page/user/update", b"x")
    assert refused.value.code == 20001
    assert console_errors(page) == []


def test_reset_asks_first_then_forgets_the_messages(page, console_emulator, client):
    device, secret = _device(console_emulator, 2)
    client.publish(client.authenticate(device, secret), f"/{device.product_key}/{device.device_name}/user/data", b"z")
    _open(page, console_emulator, "control")
    _wait(page, lambda d: _css(d, "#reset")[0].is_displayed())
    _css(page, "#reset")[0].click()
    assert _css(page, "#reset-confirm")[0].is_displayed() and len(console_emulator.messages()) == 1
    _css(page, "#reset-no")[0].click()
    assert not _css(page, "#reset-confirm")[0].is_displayed() and len(console_emulator.messages()) == 1
    _css(page, "#reset")[0].click()
    _css(page, "#reset-yes")[0].click()
    _wait(page, lambda d: _css(d, "#actions .result")[0].text.startswith("Reset"))
    assert console_emulator.messages() == []


def _peak(driver, chart):
    """The peak requests per second a chart's caption shows."""
    caption = _css(driver, f'figure[data-chart="{chart}"] figcaption')[0].text
    return float(re.search(r"peak ([0-9.]+)/s", caption).group(1))


def test_traffic_charts_show_the_publish_rate(page, console_emulator, client, screenshots):
    device, secret = _device(console_emulator, 4)
    token = client.authenticate(device, secret)
    _open(page, console_emulator, "traffic")
    _wait(page, lambda d: len(_css(d, "#charts figure")) == 4)
    for _ in range(10):
        client.publish(token, f"/{device.product_key}/{device.device_name}/user/update", b"x")
    with pytest.raises(IoTPlatformError):
        client.publish(token, "/pkConsole01/someone_else/user/update", b"x")
    # 11 requests within a second or two: some second saw at least 2 successes and the one error
    _wait(page, lambda d: _peak(d, "/topic by outcome") >= 2 and _peak(d, "Errors (every outcome but 0)") > 0)
    assert "30001" in _css(page, 'figure[data-chart="/topic by outcome"] .legend')[0].text
    page.save_screenshot(os.path.join(screenshots, "traffic-live.png"))
    assert console_errors(page) == []


def test_every_section_loads_without_console_errors(page, console_emulator, client, screenshots):
    device, secret = _device(console_emulator, 3)
    token = client.authenticate(device, secret)
    for n in range(5):
        client.publish(token, f"/{device.product_key}/{device.device_name}/user/data", b'{"n": %d}' % n)
    ready = {
        "messages": lambda d: len(_css(d, "#message-list li")) == 5,
        # one device is added on the page
        "devices": lambda d: re.fullmatch(r"1–50 of 12[01] devices", _css(d, "#devices-info")[0].text),
        "traffic": lambda d: len(_css(d, "#charts figure")) == 4,
        "control": lambda d: "pkConsole01: /pkConsole01/${deviceName}/user/data" in _css(d, "#product-list")[0].text,
    }
    for section in SECTIONS:
        _open(page, console_emulator, section)
        _wait(page, ready[section])
        assert _css(page, f"#{section}")[0].is_displayed()
        page.save_screenshot(os.path.join(screenshots, f"section-{section}.png"))
        assert console_errors(page) == [], section
    _open(page, console_emulator, "devices")
    _wait(page, ready["devices"])
    _css(page, "#device-search input")[0].send_keys(device.device_name)
    _wait(page, lambda d: _css(d, "#devices-info")[0].text == "1–1 of 1 devices")
    cells = [cell.text for cell in _css(page, "#device-rows td")]
    assert cells[:5] == [device.product_key, device.device_name, "yes", "5", "40"]
    assert console_errors(page) == []
