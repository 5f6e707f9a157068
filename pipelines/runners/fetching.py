"""Fetching what Beam's runners need, for `python -m pipelines.runners fetch` and for the tests, which
fetch on first use: one code path, so a test session fetches exactly what the command would.

Every fetch holds a lock in the user's state directory, so that two at once (two test sessions, or a
session and the command) fetch each thing once: the second waits, says so, and then finds it in place.
"""
import contextlib
import fcntl
import os

from . import (
    beam_jars,
    flink_dist,
    flink_job_server,
    kafka_broker,
    kafka_expansion,
    prism,
    pubsub_server,
    sql_expansion,
)
from .processes import STATE_HOME
from .tools import MissingTool

LOCK = os.path.join(STATE_HOME, "fetch.lock")
# What a fetch raises when it cannot fetch: each says why in one line.
ERRORS = (MissingTool, beam_jars.FetchError, flink_dist.FetchError, prism.FetchError, kafka_broker.FetchError,
          pubsub_server.FetchError)


class FetchFailed(RuntimeError):
    """Some of `fetch all` could not be fetched; the message says what and why, a line per part."""


def fetch_flink(log=print):
    jar = flink_job_server.fetch(log=log)
    flink_dist.fetch(flink_job_server.flink_release(jar), log=log)


def fetch_kafka(log=print):
    kafka_broker.fetch(log=log)
    kafka_expansion.fetch(log=log)


def fetch_all(log=print):
    """Everything the installed Beam can use: on a Beam whose Flink runner Maven Central does not serve,
    Prism and the Pub/Sub test server only (Beam SQL's expansion service and the relay's Kafka source run
    on Flink here). A part
    that cannot be fetched (a tool missing) does not stop the others: FetchFailed names them all."""
    if not flink_job_server.served():
        log(f"flink, sql, kafka: skipped: {flink_job_server.not_served()}")
        parts = {"prism": prism.fetch, "pubsub": pubsub_server.fetch}
    else:
        parts = {"flink": fetch_flink, "prism": prism.fetch, "sql": sql_expansion.fetch, "kafka": fetch_kafka,
                 "pubsub": pubsub_server.fetch}
    failed = []
    for name, part in parts.items():
        try:
            part(log=log)
        except ERRORS as error:
            log(f"{name}: not fetched: {error}")
            failed.append(f"{name}: {error}")
    if failed:
        raise FetchFailed("; ".join(failed))


FETCHERS = {"flink": fetch_flink, "prism": prism.fetch, "sql": sql_expansion.fetch, "kafka": fetch_kafka,
            "pubsub": pubsub_server.fetch, "all": fetch_all}


@contextlib.contextmanager
def exclusive(log=print):
    """Hold the fetch lock; say so when another fetch holds it, and wait for it."""
    os.makedirs(STATE_HOME, mode=0o700, exist_ok=True)
    with open(LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"fetch: another fetch is under way ({LOCK}); waiting for it to end")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def fetch(name="all", log=print):
    """Fetch `name` (flink, prism, sql, kafka, pubsub or all) under the lock. Idempotent: what is in place is
    reported as such and left as it is."""
    with exclusive(log):
        FETCHERS[name](log=log)
