"""Device secrets, read by each worker at setup and never pickled into the pipeline graph.

A file of productKey, deviceName, deviceSecret (JSON list of objects, or CSV with that header) at any
path Beam's FileSystems can open (local, gs://, s3://...), or any object with a `secrets()` method.
"""
import csv
import io
import json
from typing import Any, Protocol

from apache_beam.io.filesystems import FileSystems

from connector.protocol.device import Device

__all__ = ["CredentialsProvider", "FileCredentials", "as_credentials", "parse_credentials", "read_table"]

_FIELDS = ("productKey", "deviceName", "deviceSecret")


class CredentialsProvider(Protocol):
    """Where the sink's workers get device secrets: read at setup on each worker, never pickled."""

    def secrets(self) -> dict[Device, str]:
        """Device -> secret."""
        ...


class FileCredentials:
    """Secrets from a file; holds only the path, so pickling it reveals nothing."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"FileCredentials({self.path!r})"

    def secrets(self) -> dict[Device, str]:
        """Device -> secret, read now (on the worker)."""
        return parse_credentials(read_table(self.path), self.path)


def read_table(path: str) -> list[Any]:
    """The rows of a JSON list of objects, or of a CSV table with a header, at any Beam path."""
    with FileSystems.open(path) as handle:
        text = handle.read().decode("utf-8-sig")
    return json.loads(text) if text.lstrip().startswith("[") else list(csv.DictReader(io.StringIO(text)))


def parse_credentials(rows: list[Any], source: str = "credentials") -> dict[Device, str]:
    """Device -> secret from table rows, spaces around names and values trimmed; errors name the source
    and row, never a secret."""
    rows = [_trimmed(row) for row in rows]
    if rows and isinstance(rows[0], dict) and not set(_FIELDS) <= set(rows[0]):
        missing = ", ".join(field for field in _FIELDS if field not in rows[0])
        raise ValueError(f"{source}: no {missing} in the header: the first line must be the header "
                         f"{','.join(_FIELDS)} (a JSON file: a list of objects with those fields)")
    secrets: dict[Device, str] = {}
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict) or any(not isinstance(row.get(f), str) or not row.get(f) for f in _FIELDS):
            raise ValueError(f"{source}: row {number} needs non-empty text fields {', '.join(_FIELDS)}")
        secrets[Device(row["productKey"], row["deviceName"])] = row["deviceSecret"]
    return secrets


def _trimmed(row: Any) -> Any:
    if not isinstance(row, dict):
        return row
    return {str(name).strip(): value.strip() if isinstance(value, str) else value
            for name, value in row.items() if name is not None}


def as_credentials(credentials: "str | CredentialsProvider") -> CredentialsProvider:
    """A path becomes FileCredentials; a provider passes through; secrets given inline are refused."""
    if isinstance(credentials, str):
        return FileCredentials(credentials)
    if callable(getattr(credentials, "secrets", None)):
        return credentials
    raise TypeError("credentials must be a path to a credentials file or an object with a secrets() "
                    "method; secrets given inline would be pickled into the pipeline graph")
