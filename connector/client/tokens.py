"""TokenCache: one token per device, shared by every thread of a worker process.

Single-flight: however many threads ask for the same device at once, one /auth is made. Tokens are
renewed before their assumed lifetime ends, dropped when the platform says they are bad, and a
refused device is not asked about again for a short while, so a wrong secret does not hammer /auth.
"""
import copy
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from typing import Protocol

from connector.protocol.codes import Action
from connector.protocol.device import Device

from .errors import UnknownDevice

__all__ = ["ASSUMED_TOKEN_LIFETIME_SECONDS", "REFUSED_DEVICE_RETRY_SECONDS", "Authenticator", "TokenCache"]

# An older SDK assumed 48 hours; the spec says 7 days. Renewing early costs one /auth per device.
ASSUMED_TOKEN_LIFETIME_SECONDS = 48 * 3600
REFUSED_DEVICE_RETRY_SECONDS = 30.0


class Authenticator(Protocol):
    """What TokenCache needs of a client: IoTPlatformClient.authenticate."""

    def authenticate(self, device: Device, secret: str) -> str: ...


class TokenCache:
    """Tokens for devices, fetched through `client.authenticate` with secrets from `secrets`.

    Args:
        client: an IoTPlatformClient, or anything with its authenticate().
        secrets: a callable Device -> secret (or None when unknown), or a mapping Device -> secret.
        assumed_lifetime: seconds after which a token is renewed.
        refused_retry_after: seconds during which a refused device is refused again without an /auth.
        clock: monotonic seconds.
    """

    def __init__(self, client: Authenticator,
                 secrets: Callable[[Device], str | None] | Mapping[Device, str], *,
                 assumed_lifetime: float = ASSUMED_TOKEN_LIFETIME_SECONDS,
                 refused_retry_after: float = REFUSED_DEVICE_RETRY_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client = client
        self._secret_for = secrets if callable(secrets) else secrets.get
        self._lifetime = assumed_lifetime
        self._refused_retry_after = refused_retry_after
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[Device, tuple[str, float]] = {}  # device -> (token, renew_at)
        self._refused: dict[Device, tuple[Exception, float]] = {}  # device -> (error, retry_at)
        self._pending: dict[Device, Future[str]] = {}  # device -> Future of the /auth under way
        self.auth_calls = 0  # /auth requests sent
        self._auth_calls_taken = 0

    def __repr__(self) -> str:
        return f"TokenCache({len(self._tokens)} devices)"

    def get(self, device: Device) -> str:
        """A valid token for the device.

        Raises:
            IoTPlatformError: it cannot authenticate (UnknownDevice when no secret is known for it).
        """
        return self.fetch(device)[0]

    def fetch(self, device: Device) -> tuple[str, bool]:
        """A valid token for the device, and whether this call's /auth got it.

        Returns:
            (token, authenticated): authenticated is true for the one caller whose /auth got the token.

        Raises:
            IoTPlatformError: it cannot authenticate.
        """
        with self._lock:
            now = self._clock()
            cached = self._tokens.get(device)
            if cached and now < cached[1]:
                return cached[0], False
            refused = self._refused.get(device)
            if refused and now < refused[1]:
                # A copy: raising the stored error itself would stack this call's frames onto its
                # traceback, growing it with every call while the pause lasts.
                raise copy.copy(refused[0])
            pending = self._pending.get(device)
            leader = pending is None
            if pending is None:
                pending = self._pending[device] = Future()
        if leader:
            self._authenticate(device, pending)
        return pending.result(), leader

    def take_auth_calls(self) -> int:
        """/auth requests sent since the last call (refused ones too), for counting them once."""
        with self._lock:
            new, self._auth_calls_taken = self.auth_calls - self._auth_calls_taken, self.auth_calls
        return new

    def invalidate(self, device: Device, token: str) -> None:
        """Forget the token after the platform rejected it, unless another thread already renewed it."""
        with self._lock:
            cached = self._tokens.get(device)
            if cached and cached[0] == token:
                del self._tokens[device]

    def _authenticate(self, device: Device, pending: Future[str]) -> None:
        try:
            secret = self._secret_for(device)
            if secret is None:
                raise UnknownDevice(device)
            with self._lock:
                self.auth_calls += 1  # /auth requests sent: none for a device without a secret
            token = self._client.authenticate(device, secret)
        except BaseException as error:  # KeyboardInterrupt too: a Future left pending hangs every waiter
            with self._lock:
                del self._pending[device]
                if isinstance(error, Exception) and getattr(error, "action", None) == Action.PERMANENT:
                    self._refused[device] = (error, self._clock() + self._refused_retry_after)
            pending.set_exception(error)
            if not isinstance(error, Exception):
                raise
            return
        with self._lock:
            del self._pending[device]
            self._refused.pop(device, None)
            self._tokens[device] = (token, self._clock() + self._lifetime)
        pending.set_result(token)
