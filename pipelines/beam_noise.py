"""Warnings Beam prints that say nothing to a user of these pipelines.

Beam 2.63-2.77 log "apitools not found, and bigquery client libraries are not available" on the root
logger whenever apache_beam is imported without Google Cloud's extras, which these pipelines do not use.
Beam 2.77 logs "Really starting service at ..." and "Really destroying service at ..." as warnings when
it starts and stops the Prism job server it keeps for the process, in every run on Prism (2.62 logs the
start at INFO, which does not show, and not the stop). A filter on each of those
loggers drops that one message; every other warning still shows.

With Google Cloud's extras installed (apache-beam[gcp], which Dataflow users have), importing Beam
imports Google's client libraries, which warn (FutureWarning) about support they will drop in 2027
(Python 3.11, grpcio without post-quantum TLS) at every command, whatever runner it uses: those two
warnings are dropped too.
"""
import logging
import warnings

# logger name -> the messages (their format strings' beginnings) dropped there
_NOISE = {"": ("apitools not found, and bigquery client libraries are not available",),
          "apache_beam.utils.subprocess_server": ("Really starting service at", "Really destroying service at")}


class _DropBeamNoise(logging.Filter):
    def __init__(self, messages):
        super().__init__()
        self._messages = messages

    def filter(self, record):
        return not (isinstance(record.msg, str) and record.msg.startswith(self._messages))


_GOOGLE_FUTURE = (r"You are using a Python version .* which Google will stop supporting",
                  r"grpcio < .* does not support Post-Quantum Cryptography")


def silence():
    """Install the filters once, before apache_beam is first imported."""
    for message in _GOOGLE_FUTURE:
        warnings.filterwarnings("ignore", message=message, category=FutureWarning)
    for name, messages in _NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropBeamNoise) for f in logger.filters):
            logger.addFilter(_DropBeamNoise(messages))
