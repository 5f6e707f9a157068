"""The console in a real headless Chromium: messages appear decoded with exact ids, a fault set on the
page fails the next publishes, traffic shows what happened before the page was opened, every section
loads without a console error, and a page of another origin cannot change the emulator. Screenshots
are saved for review in $IOT_CONSOLE_SCREENSHOTS (default: a new temporary directory, printed)."""
import contextlib
import http.server
import json
import os
import re
import threading
import time

import pytest

from browser_support import chromium, console_errors, require_browser, screenshot_dir
from connector.client.errors import IoTPlatformError
from connector.client.http import IoTPlatformClient
from connector.emulator import Emulator, make_devices
from connector.emulator.tls import server_context
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


def test_traffic_opened_late_shows_what_happened_before(page, console_emulator, client, screenshots):
    page.get("about:blank")  # no console page is open while the requests are made
    device, secret = _device(console_emulator, 5)
    token = client.authenticate(device, secret)
    for _ in range(20):
        client.publish(token, f"/{device.product_key}/{device.device_name}/user/update", b"x")
    with pytest.raises(IoTPlatformError):
        client.publish(token, "/pkConsole01/someone_else/user/update", b"x")
    time.sleep(2.5)  # the emulator samples its counters every second
    _open(page, console_emulator, "traffic")
    _wait(page, lambda d: len(_css(d, "#charts figure")) == 4)
    # 21 requests within a second or two, all before the page was opened
    assert _peak(page, "/topic by outcome") >= 2 and _peak(page, "Errors (every outcome but 0)") > 0
    assert "30001" in _css(page, 'figure[data-chart="/topic by outcome"] .legend')[0].text
    page.save_screenshot(os.path.join(screenshots, "traffic-opened-late.png"))
    assert console_errors(page) == []


def test_the_console_without_its_token_reads_but_changes_nothing(page, console_emulator, client):
    device, secret = _device(console_emulator, 6)
    topic = f"/{device.product_key}/{device.device_name}/user/update"
    sent = client.publish(client.authenticate(device, secret), topic, b"seen")
    page.get(console_emulator.endpoint + "/_emulator/ui")
    page.execute_script("sessionStorage.clear()")
    page.get(console_emulator.endpoint + "/_emulator/ui#messages")  # the address without ?token=
    page.refresh()
    _wait(page, lambda d: _css(d, f'li[data-message-id="{sent}"]'))
    _open_section(page, "control")
    errors = _wait(page, lambda d: (_css(d, "#faults input[name=error_rate]") or [None])[0])
    errors.send_keys("30001=1")
    _css(page, "#faults button")[0].click()
    _wait(page, lambda d: "admin token" in _css(d, "#faults .result")[0].text)
    assert console_emulator.faults()["error_rate"] == {}
    # the address the emulator prints brings the token, and the page works again
    page.get(console_emulator.console)
    _wait(page, lambda d: "?token=" not in d.current_url)  # taken out of the address bar, kept for the tab
    _open_section(page, "control")
    errors = _wait(page, lambda d: (_css(d, "#faults input[name=error_rate]") or [None])[0])
    errors.send_keys("30001=1")
    _css(page, "#faults button")[0].click()
    _wait(page, lambda d: _css(d, "#faults .result")[0].text == "Faults applied.")
    assert console_emulator.faults()["error_rate"] == {"30001": 1.0}


def _open_section(driver, section):
    _css(driver, f'nav a[href="#{section}"]')[0].click()
    _wait(driver, lambda d: _css(d, f"#{section}")[0].is_displayed())


def _hostile_page(endpoint):
    """A page of another origin that tries what needs no CORS preflight: text/plain fetches and a form
    post to the admin API, and one JSON fetch, which needs a preflight the emulator never grants."""
    evil_device = '[{"productKey":"evil","deviceName":"x","deviceSecret":"y","pad":"'
    return f"""<!doctype html><html><head><title>loading</title></head><body>
<form id="post" method="POST" action="{endpoint}/_emulator/devices" enctype="text/plain" target="sink">
<input name='{evil_device}' value='"}}]'></form>
<iframe name="sink"></iframe>
<script>
(async () => {{
  const tried = {{}};
  const attempts = [["/_emulator/reset", "x"], ["/_emulator/faults", '{{"drop_rate": 1}}'],
                    ["/_emulator/tokens/expire", "{{}}"], ["/_emulator/devices", '{evil_device}"}}]']];
  for (const [path, body] of attempts) {{
    try {{
      await fetch("{endpoint}" + path, {{ method: "POST", mode: "no-cors", body,
                                          headers: {{ "Content-Type": "text/plain" }} }});
      tried[path] = "sent";
    }} catch (error) {{ tried[path] = String(error); }}
  }}
  try {{
    await fetch("{endpoint}/_emulator/limits", {{ method: "POST", body: '{{"device_qps": 1}}',
                                                   headers: {{ "Content-Type": "application/json" }} }});
    tried.json = "sent";
  }} catch (error) {{ tried.json = "refused by the browser"; }}
  document.getElementById("post").submit();
  setTimeout(() => {{ document.title = "done " + JSON.stringify(tried); }}, 1000);
}})();
</script></body></html>"""


@contextlib.contextmanager
def _another_origin(html, emulator, scheme):
    """A server of its own on 127.0.0.1 (another port: another origin) serving one page."""
    body = html.encode()

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    if scheme == "https":  # the emulator's own certificate: the browser trusts its key, so only the origin differs
        certs = os.path.dirname(emulator.ca_file)
        context = server_context(os.path.join(certs, "server.pem"), os.path.join(certs, "server-key.pem"))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{scheme}://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def _admin_state(emulator):
    counters = emulator.counters()
    return {"messages": emulator.messages(), "devices": emulator._admin("GET", "/devices"),
            "faults": emulator.faults(), "limits": emulator.limits(), "products": emulator.products(),
            "topic": counters["requests"].get("topic")}


@pytest.mark.parametrize("scheme", ["http", "https"])  # https://127.0.0.1:OTHER is even the same site
def test_a_page_of_another_origin_cannot_change_the_emulator(page, console_emulator, client, scheme):
    device, secret = _device(console_emulator, 7)
    token = client.authenticate(device, secret)
    client.publish(token, f"/{device.product_key}/{device.device_name}/user/update", b"kept")
    before = _admin_state(console_emulator)
    refused_before = console_emulator.counters()["requests"]["admin"].get("403", 0)
    with _another_origin(_hostile_page(console_emulator.endpoint), console_emulator, scheme) as address:
        page.get(address)
        _wait(page, lambda d: d.title.startswith("done "))
        tried = json.loads(page.title[len("done "):])
        # the simple requests did reach the emulator (they are what the browser lets through) ...
        assert {tried[path] for path in ("/_emulator/reset", "/_emulator/faults", "/_emulator/devices")} == {"sent"}
        assert tried["json"] == "refused by the browser"  # ... the JSON one never left the preflight
        deadline = time.monotonic() + WAIT_SECONDS
        while console_emulator.counters()["requests"]["admin"].get("403", 0) < refused_before + 5:
            assert time.monotonic() < deadline, console_emulator.counters()["requests"]["admin"]
            time.sleep(0.1)
    # ... and were refused: four fetches and the form post, and nothing changed
    assert _admin_state(console_emulator) == before
    assert client.publish(token, f"/{device.product_key}/{device.device_name}/user/update", b"still") > 2**53
