"""The emulator as a process: persistence across kill -9, clean stop, start-up errors, logs."""
import json
import os

import pytest
import requests

from connector.emulator import Emulator, EmulatorError
from connector.emulator.__main__ import make_parser
from emulator_support import own_topic, publish, token


def test_acknowledged_messages_survive_kill_and_ids_continue(fresh_emulator, devices, tmp_path):
    running = fresh_emulator(db=str(tmp_path / "messages.db"))
    value = token(running, devices[0])
    acknowledged = [publish(running, value, own_topic(devices[0]), b"m%d" % i).json()["info"]["messageId"]
                    for i in range(20)]
    port = running.port
    running.kill()
    running.restart()
    assert running.port == port
    assert [m["messageId"] for m in running.messages()] == acknowledged
    # tokens live in memory only: a restart forgets them, like a server that lost its sessions
    assert publish(running, value, own_topic(devices[0])).json()["code"] == 20003
    later = publish(running, token(running, devices[0]), own_topic(devices[0])).json()["info"]["messageId"]
    assert later > max(acknowledged)


def test_reset_with_a_database_keeps_ids_increasing(fresh_emulator, devices, tmp_path):
    running = fresh_emulator(db=str(tmp_path / "messages.db"))
    value = token(running, devices[0])
    before = publish(running, value, own_topic(devices[0])).json()["info"]["messageId"]
    running.reset()
    running.restart()
    assert running.messages() == []
    assert publish(running, token(running, devices[0]), own_topic(devices[0])).json()["info"]["messageId"] > before


def test_message_ids_never_repeat_across_runs_without_a_database(fresh_emulator, devices):
    issued = []
    for _ in range(2):
        running = fresh_emulator()  # a new process, no --db
        value = token(running, devices[0])
        issued += [publish(running, value, own_topic(devices[0])).json()["info"]["messageId"] for _ in range(3)]
        running.close()
    assert issued == sorted(issued) and len(set(issued)) == 6 and issued[0] > 2**53


def test_message_ids_start_from_the_time_like_the_platforms():
    from connector.emulator.store import first_message_id

    # the recorded id 1207967842654323713 decodes to 2019-12-20T10:15:51.303Z
    assert first_message_id(1576836951.303) == 1207967842654323713 - 99329
    assert first_message_id(1576836951.304) - first_message_id(1576836951.303) == 2**22
    assert first_message_id() < 2**63 - 1


def test_sigterm_stops_cleanly(fresh_emulator):
    running = fresh_emulator()
    assert running.stop() == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(running.endpoint + "/_emulator/counters", verify=running.ca_file, timeout=5)


def test_endpoint_host_names_localhost(fresh_emulator):
    running = fresh_emulator(extra_args=["--endpoint-host", "localhost"])
    assert running.endpoint == f"https://localhost:{running.port}"
    assert requests.get(running.endpoint + "/_emulator/limits", verify=running.ca_file, timeout=5).ok


def test_start_up_failure_reports_stderr(tmp_path):
    broken = tmp_path / "devices.json"
    broken.write_text(json.dumps([{"productKey": "pk"}]))
    with pytest.raises(EmulatorError, match="device #0 needs"):
        Emulator(str(broken)).start()


def test_debug_log_has_one_line_per_request_and_no_secrets(fresh_emulator, devices):
    running = fresh_emulator(extra_args=["--log-level", "DEBUG"])
    value = token(running, devices[0])
    publish(running, value, own_topic(devices[0]))
    log = running.stderr()
    assert "POST /auth -> 0" in log and f"POST /topic{own_topic(devices[0])} -> 0" in log
    assert value not in log and devices[0]["deviceSecret"] not in log


def test_the_emulator_page_names_every_option_in_its_usage_and_table():
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "emulator.md")) as f:
        page = f.read()
    section = page[page.index("# The emulator"):page.index("## The console")]
    start = section.index("```sh")
    usage = section[start:section.index("```", start + 5)]
    options = [o for action in make_parser()._actions for o in action.option_strings if o.startswith("--")]
    assert len(options) >= 18  # --help among them
    for option in options[1:]:
        assert option in usage and f"`{option}" in section, option
