"""Warnings Beam prints at import that say nothing to a user of these pipelines.

Beam 2.6x-2.7x logs "apitools not found, and bigquery client libraries are not available" on the
root logger whenever apache_beam is imported without Google Cloud's extras, which these pipelines do
not use. A filter on the root logger drops that one message; every other warning still shows.
"""
import logging

_NOISE = ("apitools not found, and bigquery client libraries are not available",)


class _DropBeamNoise(logging.Filter):
    def filter(self, record):
        return not (isinstance(record.msg, str) and record.msg.startswith(_NOISE))


def silence():
    """Install the filter once, before apache_beam is first imported."""
    root = logging.getLogger()
    if not any(isinstance(f, _DropBeamNoise) for f in root.filters):
        root.addFilter(_DropBeamNoise())
