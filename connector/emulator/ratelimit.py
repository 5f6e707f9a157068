"""Token buckets for the platform's throttling: messages per device and requests per account."""
import time


class TokenBucket:
    """Allows `rate` events per second on average and bursts of up to `rate` (at least one)."""

    __slots__ = ("rate", "_capacity", "_tokens", "_stamp")

    def __init__(self, rate):
        self.rate = rate
        self._capacity = self._tokens = float(max(rate, 1))
        self._stamp = time.monotonic()

    def take(self):
        """Take one token; False when the bucket is empty (the request is throttled)."""
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class RateLimiter:
    """One bucket for the account and one per device, created on first use."""

    def __init__(self, device_qps, account_qps):
        self.configure(device_qps, account_qps)

    def configure(self, device_qps, account_qps):
        """New rates take effect at once, with full buckets."""
        self.device_qps = device_qps
        self.account_qps = account_qps
        self._account = TokenBucket(account_qps)
        self._devices = {}

    def allow_request(self):
        return self._account.take()

    def allow_message(self, device):
        bucket = self._devices.get(device)
        if bucket is None:
            bucket = self._devices[device] = TokenBucket(self.device_qps)
        return bucket.take()
