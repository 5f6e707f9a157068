"""The device channel's recent traffic: its request counters, sampled every second for two minutes.

Kept by the emulator rather than by the console page, so the page's Traffic tab shows the last two
minutes even when it is opened after the requests were made.
"""
import collections
import time

HISTORY_SECONDS = 120
DEVICE_ENDPOINTS = ("auth", "topic")


class TrafficHistory:
    """Samples of the (endpoint, outcome) -> count counter of the device channel, oldest first."""

    def __init__(self, counts, seconds=HISTORY_SECONDS, clock=time.time):
        self._counts = counts  # the live counter, shared with the server
        self._clock = clock
        self._samples = collections.deque(maxlen=seconds + 1)  # n + 1 samples give n one-second rates

    def __len__(self):
        return len(self._samples)

    def sample(self):
        """Take the counts as they are now."""
        counts = {key: count for key, count in self._counts.items() if key[0] in DEVICE_ENDPOINTS}
        self._samples.append((self._clock(), counts))

    def clear(self):
        """Forget the samples and start again from the counts as they are now (after a reset: none),
        so that requests made before the next sample still show as a rise."""
        self._samples.clear()
        self.sample()

    def as_json(self):
        """{"samples": [{"at": epoch ms, "requests": {endpoint: {outcome: count so far}}}]}, oldest first."""
        samples = []
        for at, counts in self._samples:
            requests = collections.defaultdict(dict)
            for (endpoint, outcome), count in counts.items():
                requests[endpoint][outcome] = count
            samples.append({"at": int(at * 1000), "requests": requests})
        return {"seconds": self._samples.maxlen - 1, "samples": samples}
