"""A real headless Chromium for the console's tests, driven by Selenium through chromedriver.

A missing browser, driver or Selenium skips the test with one line naming what is missing; with
IOT_RUNNER_TESTS=required (set by .ci/run) it fails instead, as the runner tests do. IOT_CHROMIUM and
IOT_CHROMEDRIVER name another browser and driver.
"""
import base64
import contextlib
import hashlib
import importlib.util
import os
import socket
import ssl
import tempfile

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from runner_support import unavailable

CHROMIUM = os.environ.get("IOT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("IOT_CHROMEDRIVER", "/usr/bin/chromedriver")
# Headless, and quiet on the network: without the background-networking flags Chromium keeps
# reaching for Google's services, and this machine's closed network refuses it.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900")


def require_browser():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package (pip install -e '.[test]')")
    if missing:
        unavailable(f"console browser tests: {' and '.join(missing)} missing "
                    "(apt-get install -y chromium chromium-driver)")


def served_key_pin(emulator):
    """The base64 SHA-256 of the public key the emulator serves, read over TLS verified with its CA.

    Chromium trusts that one key (--ignore-certificate-errors-spki-list) instead of ignoring every
    certificate error: a profile-less headless browser has no CA store a test may add to.
    """
    context = ssl.create_default_context(cafile=emulator.ca_file)
    with context.wrap_socket(socket.create_connection(("127.0.0.1", emulator.port), timeout=10),
                             server_hostname="127.0.0.1") as sock:
        certificate = x509.load_der_x509_certificate(sock.getpeercert(binary_form=True))
    key = certificate.public_key().public_bytes(serialization.Encoding.DER,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(key).digest()).decode("ascii")


@contextlib.contextmanager
def chromium(emulator):
    """A Selenium driver of a headless Chromium with an empty profile, trusting the emulator's key."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="iot-console-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--ignore-certificate-errors-spki-list={served_key_pin(emulator)}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        try:
            yield driver
        finally:
            driver.quit()


def console_errors(driver):
    """The browser log's errors since the last call (failed loads, exceptions, CSP refusals)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot_dir():
    """Where screenshots go for review: $IOT_CONSOLE_SCREENSHOTS, or a new temporary directory."""
    path = os.environ.get("IOT_CONSOLE_SCREENSHOTS") or tempfile.mkdtemp(prefix="iot-console-screenshots-")
    os.makedirs(path, exist_ok=True)
    return path
