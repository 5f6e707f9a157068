"""The project's own documentation: links that resolve inside the repository, and protocol notes that
say what the code does (codes and what the connector does about each, sign methods, limits, topics)."""
import glob
import os
import re

import pytest

from connector import Reason
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
    return [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


@pytest.mark.parametrize("path", _markdown_files(), ids=os.path.basename)
def test_relative_links_resolve_inside_the_repository(path):
    text = _read(path)
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    for target in targets:
        if re.match(r"[a-z]+://", target):
            continue
        resolved = os.path.normpath(os.path.join(os.path.dirname(path), target))
        assert resolved.startswith(ROOT + os.sep) and os.path.exists(resolved), target
    assert "shared/" not in text and "PROTOCOL.md" not in text  # notes kept outside the project


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


def _readme_section(title):
    """The README's text under a heading, to the next heading of any level."""
    text = _read(os.path.join(ROOT, "README.md"))
    start = text.index(f"\n{title}\n")
    following = re.search(r"\n#+ ", text[start + len(title) + 2:])
    return text[start:start + len(title) + 2 + following.start()] if following else text[start:]


def test_the_readme_documents_every_failure_reason_and_no_other():
    """The failure reasons table and the dead letters' `reason` field list exactly connector.Reason.ALL."""
    table = re.findall(r"^\| `([a-z_]+)` \|", _readme_section("### Failure reasons"), re.MULTILINE)
    assert table == list(Reason.ALL)
    field = next(line for line in _readme_section("### Dead letters and replay").splitlines()
                 if line.startswith("| `reason` |"))
    assert re.findall(r"`([a-z_]+)`", field.split("|")[3]) == list(Reason.ALL)
    assert set(HINTS) == set(Reason.ALL)  # the summary's hint for each
