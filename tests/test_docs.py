"""The project's own documentation: every relative link and anchor resolves, the README's Python example
runs against the emulator, and the pages say what the code does (failure reasons, protocol codes and
what the connector does about each, sign methods, limits, topics)."""
import ast
import glob
import json
import os
import re

import pytest

from connector import Reason, get_encoder
from connector.emulator import Emulator
from connector.protocol import codes, limits, signing
from connector.protocol.codes import Action
from pipelines.summary import HINTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOL_NOTES = os.path.join(ROOT, "docs", "protocol.md")
# How the notes' codes table words each action, at the start of its last column.
ACTION_WORDS = {Action.RETRY: "retries", Action.REAUTHENTICATE: "re-authenticates and resends",
                Action.THROTTLED: "backs off", Action.PERMANENT: "fails the records"}


def _read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _markdown_files():
    return ([os.path.join(ROOT, "README.md"), os.path.join(ROOT, "CHANGELOG.md")]
            + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md"))))


def _prose(text):
    """The text outside fenced code blocks and HTML comments, where links and headings are markdown's."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def github_anchor(heading):
    """The anchor GitHub gives a heading: its text without markup, lower case, with every character
    but letters, digits, spaces, hyphens and underscores dropped, and each space a hyphen."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link: its text
    text = re.sub(r"[`*]", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path):
    """Every anchor of a markdown file's headings, numbered as GitHub numbers repeated ones (-1, -2)."""
    found, seen = set(), {}
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", _prose(_read(path)), flags=re.M):
        anchor = github_anchor(heading)
        found.add(anchor if anchor not in seen else f"{anchor}-{seen[anchor]}")
        seen[anchor] = seen.get(anchor, 0) + 1
    return found


def test_anchors_are_githubs():
    assert github_anchor("Schema'd records and outputs") == "schemad-records-and-outputs"
    assert github_anchor("How often `setup` runs, and /auth") == "how-often-setup-runs-and-auth"
    assert github_anchor("Pipelines: backfill, dry run, replay, streaming relay") == (
        "pipelines-backfill-dry-run-replay-streaming-relay")


@pytest.mark.parametrize("path", _markdown_files(), ids=os.path.basename)
def test_every_relative_link_and_anchor_resolves(path):
    text = _read(path)
    links = re.findall(r"\]\(([^)\s]+)\)", _prose(text))
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
        assert resolved.startswith(ROOT + os.sep) and os.path.exists(resolved), link
        if anchor:
            assert resolved.endswith(".md"), link
            assert anchor in anchors(resolved), f"{link}: no such heading in {os.path.relpath(resolved, ROOT)}"
    assert "shared/" not in text and "PROTOCOL.md" not in text  # notes kept outside the project


def test_the_readme_links_every_page_of_the_docs():
    readme = _read(os.path.join(ROOT, "README.md"))
    for page in glob.glob(os.path.join(ROOT, "docs", "*.md")):
        if os.path.basename(page) != "c-sdks.md":  # linked from the emulator's page
            assert f"](docs/{os.path.basename(page)}" in readme, page
    assert "](CHANGELOG.md)" in readme
    assert len(readme.splitlines()) <= 250  # a front door


def _readme_section(heading):
    readme = _read(os.path.join(ROOT, "README.md"))
    return readme.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


# The README's example, its three names set to the emulator's: the substitution its text documents.
SETTINGS = ("ENDPOINT", "CREDENTIALS", "CA_FILE")


def test_the_readmes_python_example_runs_against_the_emulator(tmp_path, capsys):
    section = _readme_section("A first pipeline")
    example = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    devices = [{"productKey": "a1Pk", "deviceName": name, "deviceSecret": f"secret-of-{name}"}
               for name in ("meter-01", "meter-02")]
    credentials = tmp_path / "devices.json"
    credentials.write_text(json.dumps(devices))
    with Emulator(str(credentials)) as emulator:
        values = {"ENDPOINT": emulator.endpoint, "CREDENTIALS": str(credentials), "CA_FILE": emulator.ca_file}
        for name in SETTINGS:
            example, replaced = re.subn(rf"^{name} = .*$", f"{name} = {values[name]!r}", example, flags=re.M)
            assert replaced == 1, name
        exec(compile(example, "README.md", "exec"), {"__name__": "readme_example"})  # noqa: S102
        stored = emulator.messages()
    printed = [ast.literal_eval(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    shown = [ast.literal_eval(line) for line in
             re.search(r"```text\n(.*?)```", section, re.S).group(1).splitlines()]
    assert all(isinstance(line, dict) for line in printed), printed  # receipts only: nothing failed
    assert len(printed) == len(stored) == len(shown) == 2
    assert {r["message_id"] for r in printed} == {str(m["messageId"]) for m in stored}
    ignore_ids = [{**receipt, "message_id": None} for receipt in printed]
    assert sorted(ignore_ids, key=str) == sorted(({**r, "message_id": None} for r in shown), key=str)
    sent = sorted(record["temperature"] for m in stored for record in get_encoder("jsonl").decode(m["payload"]))
    assert sent == [19.0, 21.5]


def _table_rows(text, heading):
    """The first cell of each row of the table under a heading (code spans unwrapped)."""
    section = text.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    return [line.split("|")[1].strip().strip("`") for line in section.splitlines()
            if line.startswith("| `")]


def test_the_user_guide_gives_every_failure_reason_and_the_dead_letters_name_them_all():
    assert _table_rows(_read(os.path.join(ROOT, "docs", "user-guide.md")), "## Failure reasons") == list(Reason.ALL)
    dead_letters = _read(os.path.join(ROOT, "docs", "pipelines.md")).split("\n## Dead letters and replay\n")[1]
    reason_row = next(line for line in dead_letters.splitlines() if line.startswith("| `reason` |"))
    assert set(re.findall(r"`([a-z_]+)`", reason_row)) - {"reason"} == set(Reason.ALL)
    assert set(HINTS) == set(Reason.ALL)  # the run summary's hint for each


def test_the_readme_links_the_protocol_notes():
    assert "](docs/protocol.md)" in _read(os.path.join(ROOT, "README.md"))


def _code_rows():
    """{code: (message, what the connector does)} from the notes' codes table."""
    rows = {}
    for line in _read(PROTOCOL_NOTES).splitlines():
        cells = [cell.strip().strip("`") for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].isdigit():
            rows[int(cells[0])] = (cells[1], cells[-1])
    return rows


def test_the_notes_give_every_code_its_message_and_what_the_connector_does():
    rows = _code_rows()
    assert set(rows) == set(codes.MESSAGES)
    for code, (message, handling) in rows.items():
        assert message == codes.MESSAGES[code], code
        if code != codes.SUCCESS:
            assert handling.startswith(ACTION_WORDS[codes.action_for(code)]), (code, handling)


def test_the_notes_name_the_sign_methods_the_default_and_the_limits():
    text = _read(PROTOCOL_NOTES)
    for method in signing.SIGN_METHODS:
        assert f"`{method}`" in text
    assert f"default `{signing.CLIENT_SIGN_METHOD}`" in text
    assert f"{limits.MAX_PAYLOAD_BYTES:,}" in text and f"{limits.MAX_TOPIC_BYTES} bytes" in text
    assert "/sys/${productKey}/${deviceName}/thing/event/property/history/post" in text


def _option_defaults(page, heading):
    """{option: default cell} of the option table under a heading of a page, for rows of one option."""
    section = _read(os.path.join(ROOT, "docs", page)).split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 3 and re.fullmatch(r"`--[a-z_-]+`", cells[0]):
            rows[cells[0].strip("`")] = cells[1]
    return rows


@pytest.mark.parametrize("page, heading, parser", [("pipelines.md", "Backfill", "backfill"),
                                                   ("pipelines.md", "Streaming relay", "stream")])
def test_the_pipelines_option_tables_give_the_commands_defaults(page, heading, parser):
    import importlib

    actions = {option: action for action in importlib.import_module(f"pipelines.{parser}").make_parser()._actions
               for option in action.option_strings}
    rows = _option_defaults(page, heading)
    checked = 0
    for option, default in rows.items():
        action = actions[option if option in actions else option.replace("_", "-")]
        written = re.fullmatch(r"`([^`]*)`|\**([0-9.]+)\**(?: s)?", default)
        if written and action.default is not None:
            value = written.group(1) if written.group(1) is not None else written.group(2)
            if isinstance(action.default, int | float):
                assert float(value) == action.default, (option, default, action.default)
            else:
                assert value == str(action.default), (option, default, action.default)
            checked += 1
    # An option whose parser default is None (--time-field: `time` unless given) is not counted.
    assert checked >= (7 if parser == "backfill" else 1)


def test_ci_runs_the_readmes_test_command_and_the_readme_installs_what_ci_installs():
    setup, tests = re.findall(r"```sh\n(.*?)\n```", _readme_section("Two commands"), re.S)[:2]
    ci = _read(os.path.join(ROOT, ".ci", "run"))
    assert tests.strip() == "python -m pytest -q" and f"    {tests.strip()}\n" in ci
    assert 'pip install -e ".[test,flink]"' in setup and setup.strip().endswith("python -m pipelines.backfill")
    assert 'install "$pinned" test,lint,flink' in ci


def test_the_user_guide_gives_every_option_of_the_transform():
    import inspect

    from connector import WriteToIoTPlatform

    guide = _read(os.path.join(ROOT, "docs", "user-guide.md"))
    section = guide.split("\n## The transform\n", 1)[1].split("\n## ", 1)[0]
    documented = {name for line in section.splitlines() if line.startswith("| `")
                  for name in re.findall(r"`([a-z_]+)`", line.split("|")[1])}
    assert set(inspect.signature(WriteToIoTPlatform.__init__).parameters) - {"self"} <= documented
