"""Payloads as people read them: the console shows each stored message decoded, whatever its format.

JSON (an Alink envelope is JSON too) and JSON lines are pretty-printed, an Avro object container file
(it carries its schema) is shown as its records in JSON, other UTF-8 text as it is, anything else in hex.
Any payload can be shown: JSON nested deeper than Python's recursion limit is shown as text.
"""
import io
import json

import fastavro

AVRO_MAGIC = b"Obj\x01"
MAX_SHOWN_CHARS = 16_000  # a page of 128 KB payloads in hex would be megabytes


def _pretty(value):
    return json.dumps(value, indent=2, ensure_ascii=False, default=repr)


def _json(text):
    """("alink" or "json", pretty text) for one JSON document, or None."""
    try:
        value = json.loads(text)
        shown = _pretty(value)
    except (ValueError, RecursionError):  # RecursionError: parsing or printing nesting too deep
        return None
    is_alink = isinstance(value, dict) and "method" in value and "params" in value
    return ("alink" if is_alink else "json"), shown


def _json_lines(text):
    lines = [line for line in text.splitlines() if line.strip()]
    try:
        return "jsonl", "\n".join(_pretty(json.loads(line)) for line in lines)
    except (ValueError, RecursionError):
        return None


def _avro(payload):
    shown, size = [], 0
    try:
        for record in fastavro.reader(io.BytesIO(payload)):
            shown.append(_pretty(record))
            size += len(shown[-1]) + 1
            if size > MAX_SHOWN_CHARS:  # records past what is shown are not decoded
                break
    except Exception:  # fastavro raises many kinds on a payload that only looks like a container
        return None
    return "avro", "\n".join(shown)


def _is_text(text):
    return all(char.isprintable() or char in "\n\r\t" for char in text)


def decode(payload):
    """{"kind", "text", "truncated"}: kind is avro, alink, json, jsonl, text or hex."""
    found = _avro(payload) if payload.startswith(AVRO_MAGIC) else None
    if found is None:
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            found = _json(text) or (_json_lines(text) if "\n" in text.strip() else None)
            if found is None and _is_text(text):
                found = "text", text
    kind, shown = found or ("hex", payload.hex(" "))
    return {"kind": kind, "text": shown[:MAX_SHOWN_CHARS], "truncated": len(shown) > MAX_SHOWN_CHARS}
