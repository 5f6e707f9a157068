"""Emulator: run the emulator in a subprocess for tests and benchmarks, and drive its admin API.

A subprocess runs on its own core, and can be killed (-9) and restarted on the same port with the
same certificates and database, which is how tests show that acknowledged messages survive.
"""
import base64
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from types import TracebackType
from typing import IO, Any

import requests

from connector.protocol.device import Device

from .access import TOKEN_HEADER
from .admin import MAX_PAGE, PREFIX

__all__ = ["Emulator", "EmulatorError"]

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_DEVICES_PER_REQUEST = 10_000  # well under the admin API's bound on a body


class EmulatorError(RuntimeError):
    """The emulator did not start, or its admin API refused a request."""


class Emulator:
    """A running emulator; use as a context manager.

    It reads the run's admin token from the emulator's start-up line (admin_token) and sends it with
    every admin request, as changes need it; console is the page's address, token included.

    Args:
        devices: a list of {productKey, deviceName, deviceSecret} dicts, or the path of a devices file.
        token_ttl: seconds a token stays valid (the platform's 7 days by default).
        device_qps: messages per second a device may publish (the platform's 30 by default).
        account_qps: requests per second for the whole account (the platform's 10,000 by default).
        db: a SQLite file to keep accepted messages in, across restarts; in memory by default.
        latency_ms: milliseconds added before each reply.
        clock_offset: seconds the emulator's clock is ahead of this machine's (negative: behind).
        host: the address to listen on.
        port: the port to listen on; 0 picks a free one.
        extra_args: more command-line arguments for python -m connector.emulator.
        start_timeout: seconds to wait for it to accept connections.
        products: a list of {productKey, topicCategories} declaring the topic categories of products
            (see connector.emulator.products); products left out accept any /{pk}/{dn}/user/... topic.

    Raises:
        ValueError: products given with a devices file (they belong in the file).
    """

    def __init__(self, devices: str | os.PathLike[str] | Iterable[dict[str, str]], token_ttl: float | None = None,
                 device_qps: float | None = None, account_qps: float | None = None, db: str | None = None,
                 latency_ms: float | None = None, clock_offset: float | None = None, host: str = "127.0.0.1",
                 port: int = 0, extra_args: Sequence[str] = (), start_timeout: float = 30,
                 products: list[dict[str, Any]] | None = None) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="iot-emulator-")
        if isinstance(devices, (str, os.PathLike)):
            if products is not None:
                raise ValueError("give products in the devices file, or devices as a list with products")
            self._devices_file = os.fspath(devices)
            with open(self._devices_file, encoding="utf-8") as f:
                content = json.load(f)
            self.devices: list[dict[str, str]] = content.get("devices", []) if isinstance(content, dict) else content
        else:
            self.devices = list(devices)
            self._devices_file = os.path.join(self._dir.name, "devices.json")
            with open(self._devices_file, "w", encoding="utf-8") as f:
                json.dump(self.devices if products is None else {"devices": self.devices, "products": products}, f)
        self._options = {"--token-ttl": token_ttl, "--device-qps": device_qps, "--account-qps": account_qps,
                         "--db": db, "--latency-ms": latency_ms, "--clock-offset": clock_offset}
        self.host, self.port, self._extra_args = host, port, list(extra_args)
        self._start_timeout = start_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._session: requests.Session | None = None
        self.endpoint: str | None = None  # "https://127.0.0.1:port" once started
        self.ca_file: str | None = None  # the CA bundle that trusts it, once started
        self.console: str | None = None  # the console's address with the admin token, for a browser, once started
        self.admin_token: str | None = None  # this run's admin token (X-Emulator-Token), once started

    def __repr__(self) -> str:
        return f"Emulator({self.endpoint or 'not started'})"

    def __enter__(self) -> "Emulator":
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    # -- process --------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        command = [sys.executable, "-m", "connector.emulator", "--devices", self._devices_file,
                   "--host", self.host, "--port", str(self.port),
                   "--cert-dir", os.path.join(self._dir.name, "certs")]
        for flag, value in self._options.items():
            if value is not None:
                command += [flag, str(value)]
        return command + self._extra_args

    def start(self) -> "Emulator":
        """Start the subprocess and wait until it accepts connections.

        Returns:
            This emulator, its endpoint, ca_file, console and admin_token set.

        Raises:
            EmulatorError: it did not start; the message holds what it wrote to stderr.
        """
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [_PROJECT_ROOT, os.environ.get("PYTHONPATH")])))
        self._stderr = open(os.path.join(self._dir.name, "stderr.log"), "ab")
        self._process = subprocess.Popen(self._command(), stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        announcement = json.loads(self._read_announcement())
        self.endpoint, self.ca_file = announcement["endpoint"], announcement["ca_file"]
        self.console, self.admin_token = announcement["console"], announcement["admin_token"]
        self.port = int(self.endpoint.rsplit(":", 1)[1])
        self._session = requests.Session()
        self._session.trust_env = False  # a local admin API: no proxy from the environment, only ca_file
        self._session.headers[TOKEN_HEADER] = self.admin_token
        return self

    def _read_announcement(self) -> bytes:
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self._process.stdout], [], [], 0.1)
            if ready:
                line = self._process.stdout.readline()
                if line:
                    return line
            if self._process.poll() is not None:
                break
        returncode = self.kill()
        raise EmulatorError(f"the emulator did not start (exit code {returncode}); "
                            f"stderr:\n{self.stderr()}")

    def stderr(self) -> str:
        """What the emulator wrote to stderr so far (its log)."""
        with open(os.path.join(self._dir.name, "stderr.log"), encoding="utf-8", errors="replace") as f:
            return f.read()

    @property
    def pid(self) -> int | None:
        """The subprocess's id while it runs."""
        return self._process.pid if self._process else None

    def _finish(self) -> int:
        assert self._process is not None and self._process.stdout is not None and self._stderr is not None
        self._process.stdout.close()
        self._stderr.close()
        if self._session is not None:
            self._session.close()
        returncode, self._process = self._process.returncode, None
        return returncode

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM and wait; returns the exit code (0 when it stopped cleanly)."""
        if self._process is None:
            return None
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        return self._finish()

    def kill(self) -> int | None:
        """SIGKILL: no chance to flush or clean up, like a crash. Returns the exit code."""
        if self._process is None:
            return None
        self._process.kill()
        self._process.wait()
        return self._finish()

    def restart(self) -> "Emulator":
        """Start again on the same port with the same certificates and database."""
        self.kill()
        return self.start()

    def close(self) -> None:
        """Stop it and delete its certificates and files (a db file given by path stays)."""
        self.stop()
        self._dir.cleanup()

    # -- admin API ------------------------------------------------------------------------------
    def _admin(self, method: str, path: str, body: Any = None, params: dict[str, Any] | None = None) -> Any:
        if self._session is None:
            raise EmulatorError("the emulator is not running: start() it first")
        if method == "POST" and body is None:
            body = {}  # every change is sent as JSON
        response = self._session.request(method, f"{self.endpoint}{PREFIX}{path}", json=body, params=params,
                                         verify=self.ca_file, timeout=60)
        if response.status_code != 200:
            raise EmulatorError(f"{method} {PREFIX}{path}: HTTP {response.status_code} {response.text}")
        return response.json()

    def messages(self, device: Device | tuple[str, str] | str | None = None, topic: str | None = None,
                 page_size: int = MAX_PAGE) -> list[dict[str, Any]]:
        """Every stored message, oldest first.

        Args:
            device: only this device's: a Device, a (productKey, deviceName) pair or "productKey/deviceName".
            topic: only those sent to this topic.
            page_size: messages per admin request.

        Returns:
            Dicts with messageId an int and payload as bytes, and the device, topic and receivedAt.

        Raises:
            EmulatorError: the admin API refused.
        """
        params: dict[str, Any] = {"limit": page_size}
        if device is not None:
            params["device"] = device if isinstance(device, str) else str(Device(*device))
        if topic is not None:
            params["topic"] = topic
        found: list[dict[str, Any]] = []
        while True:
            page = self._admin("GET", "/messages", params=params)
            for message in page["messages"]:
                message["payload"] = base64.b64decode(message.pop("payload_b64"))
                found.append(message)
            if page["next"] is None:
                return found
            params["after"] = page["next"]

    def counters(self) -> dict[str, Any]:
        """Requests and replies counted by endpoint and code."""
        return self._admin("GET", "/counters")

    def add_devices(self, devices: list[dict[str, str]]) -> Any:
        """Register more {productKey, deviceName, deviceSecret} devices (10,000 a request)."""
        devices, added, reply = list(devices), 0, {}
        for start in range(0, max(len(devices), 1), _DEVICES_PER_REQUEST):
            chunk = devices[start:start + _DEVICES_PER_REQUEST]
            reply = self._admin("POST", "/devices", chunk)
            added += reply["added"]
            self.devices.extend(chunk)
        return {**reply, "added": added}

    def products(self) -> list[dict[str, Any]]:
        """The declared products, each with the custom topics its devices may publish to."""
        return self._admin("GET", "/products")["products"]

    def add_products(self, products: Iterable[dict[str, Any]]) -> Any:
        """Declare products' topic categories, as in the devices file; a product given again has
        its categories replaced."""
        return self._admin("POST", "/products", list(products))

    def expire_tokens(self) -> Any:
        """Every token issued so far answers "token is expired" from now on."""
        return self._admin("POST", "/tokens/expire")

    def faults(self) -> dict[str, Any]:
        """The fault configuration (see connector.emulator.faults)."""
        return self._admin("GET", "/faults")

    def set_faults(self, **faults: Any) -> Any:
        """Replace the fault configuration (see connector.emulator.faults); knobs left out are off."""
        return self._admin("POST", "/faults", faults)

    def clear_faults(self) -> Any:
        """Every fault off."""
        return self.set_faults()

    def limits(self) -> dict[str, Any]:
        """device_qps, account_qps and token_ttl as they are now."""
        return self._admin("GET", "/limits")

    def set_limits(self, **limits: float) -> Any:
        """Change device_qps, account_qps or token_ttl (seconds) at once."""
        return self._admin("POST", "/limits", limits)

    def reset(self, products: bool = False) -> Any:
        """No messages, no counts or traffic history, no faults, limits as at start (devices and tokens
        stay); with products=True also the products' topic categories as at start."""
        return self._admin("POST", "/reset", {"products": True} if products else {})
