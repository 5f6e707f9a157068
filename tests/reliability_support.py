"""Helpers of the reliability suite: the accounting check, counting duplicate messages, and acting on
the emulator from a thread once a run is under way."""
import collections
import threading
import time

from connector.beam.encoders import get_encoder
from connector.emulator.accounting import account


def accounted(run, messages, records, encoder="jsonl"):
    """The accounting check: nothing lost, nothing invented; and no receipt the platform never stored."""
    result = account(records, messages, run.failed, get_encoder(encoder))
    assert result.lost == 0 and result.unexpected == 0, result.summary()
    stored = {m["messageId"] for m in messages}
    receipted = [r.message_id for r in run.receipts]
    assert len(set(receipted)) == len(receipted) and set(receipted) <= stored
    return result


def extra_copies(messages):
    """(messages, records) stored beyond the first copy of each distinct payload."""
    copies = collections.Counter(m["payload"] for m in messages)
    extra = [(payload, n - 1) for payload, n in copies.items() if n > 1]
    return (sum(n for _, n in extra),
            sum(n * len(get_encoder("jsonl").decode(payload)) for payload, n in extra))


def topic_codes(emulator):
    return emulator.counters()["requests"].get("topic", {})


class WhenStored(threading.Thread):
    """Runs action() once the emulator holds `count` messages (polling its admin API), at most once.

    Bounded: gives up after `timeout` seconds; `fired` says whether the action ran mid-run.
    """

    def __init__(self, emulator, count, action, timeout=60):
        super().__init__(daemon=True)
        self._emulator, self._count, self._action, self._timeout = emulator, count, action, timeout
        self._cancel = threading.Event()
        self.fired = False
        self.error = None

    def run(self):
        deadline = time.monotonic() + self._timeout
        while not self._cancel.is_set() and time.monotonic() < deadline:
            try:
                if self._emulator.counters()["messages"] >= self._count:
                    self._action()
                    self.fired = True
                    return
            except Exception as error:  # noqa: BLE001 - reported by the test
                self.error = error
                return
            self._cancel.wait(0.02)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self._cancel.set()
        self.join()
