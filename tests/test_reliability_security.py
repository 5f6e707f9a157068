"""Security in a running pipeline: a server certified by another CA is refused before anything is
sent; turning verification off works and says so loudly; the emulator's admin API stays on loopback;
a clock skewed past 15 minutes fails with an error that names clock skew. Runs end in the accounting
check. Only 127.0.0.1 is ever contacted."""
import asyncio
import logging

import psutil
import pytest
from aiohttp.test_utils import make_mocked_request

from connector.emulator.access import TOKEN_HEADER, AdminAccess
from connector.emulator.admin import PREFIX, is_loopback
from connector.emulator.server import make_app
from connector.emulator.state import EmulatorState
from connector.emulator.tls import ensure_certificates
from reliability_support import accounted
from test_write_batch import readings
from write_support import run_write, write_credentials


@pytest.fixture
def credentials(tmp_path, devices):
    return write_credentials(tmp_path / "credentials.json", devices)


@pytest.fixture
def other_ca(tmp_path):
    """The CA of another server: valid, but not the one that signed the emulator's certificate."""
    return ensure_certificates(str(tmp_path / "other-ca"))[0]


def test_a_server_certified_by_another_ca_is_refused_and_nothing_is_sent(clean_emulator, devices, credentials,
                                                                         other_ca, tmp_path):
    records = readings(devices, 20)
    run = run_write(records, clean_emulator, credentials, tmp_path, ca_file=other_ca)
    result = accounted(run, clean_emulator.messages(), records)
    assert result.delivered == 0 and run.failed_reasons() == {"tls_error": len(records)}
    assert all("certificate" in f.message.lower() and f.code is None for f in run.failed)
    # The handshake failed, so no request reached the device channel at all.
    assert clean_emulator.counters()["requests"].get("auth", {}) == {}
    assert clean_emulator.counters()["requests"].get("topic", {}) == {}


def test_insecure_skip_tls_verify_publishes_and_logs_a_warning(clean_emulator, devices, credentials, other_ca,
                                                               tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="connector")
    records = readings(devices, 20)
    run = run_write(records, clean_emulator, credentials, tmp_path, ca_file=other_ca,
                    insecure_skip_tls_verify=True)
    result = accounted(run, clean_emulator.messages(), records)
    assert result.delivered == len(records) and not run.failed
    warnings = [r for r in caplog.records if r.name.startswith("connector") and r.levelno == logging.WARNING]
    assert warnings and "verification is OFF" in warnings[0].getMessage()


def test_the_admin_api_is_loopback_only_by_default(emulator):
    # The emulator listens on loopback only, and its endpoint says so.
    assert emulator.endpoint.startswith("https://127.0.0.1:")
    listening = [c.laddr.ip for c in psutil.Process(emulator.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN]
    assert listening and all(is_loopback(ip) for ip in listening)
    # And its admin guard refuses a peer off loopback (a request object, no traffic leaves the host).
    state = EmulatorState([])
    app = make_app(state)

    def status_for(peer, app=app, headers=None):
        request = make_mocked_request("GET", PREFIX + "/counters", app=app, headers=headers)
        request._transport_peername = (peer, 40000)
        match = asyncio.run(app.router.resolve(request))
        return asyncio.run(match.handler(request)).status

    assert status_for("127.0.0.1") == 200 and status_for("::1") == 200
    assert status_for("192.0.2.10") == 403 and status_for("::ffff:198.51.100.7") == 403
    anywhere = make_app(state, AdminAccess("run-token", anywhere=True))
    assert status_for("192.0.2.10", app=anywhere, headers={TOKEN_HEADER: "run-token"}) == 200
    assert status_for("192.0.2.10", app=anywhere) == 403  # anywhere, even reads need the token


@pytest.mark.parametrize("offset_seconds, refused", [(1200, True), (-1200, True), (600, False)])
def test_a_clock_skewed_past_15_minutes_fails_naming_clock_skew(offset_seconds, refused, fresh_emulator, devices,
                                                                credentials, tmp_path):
    # The emulator's clock is moved instead of the worker's: the same skew as seen by the platform.
    emulator = fresh_emulator(clock_offset=offset_seconds)
    records = readings(devices, 10)
    run = run_write(records, emulator, credentials, tmp_path)
    result = accounted(run, emulator.messages(), records)
    if refused:
        assert result.delivered == 0 and run.failed_reasons() == {"auth_failed": len(records)}
        for entry in run.failed:
            assert entry.code == 20000 and "clock skew" in entry.message
            assert f"{abs(offset_seconds)} s away from server time" in entry.message
        assert emulator.counters()["requests"].get("topic", {}) == {}
    else:
        assert result.delivered == len(records) and not run.failed
