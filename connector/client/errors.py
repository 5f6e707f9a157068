"""What can go wrong talking to the platform, classified by what the caller should do next.

Every failure is an IoTPlatformError: platform codes carry `.code`; transport failures and requests
refused before sending carry `code=None` and their own class. Messages never hold a secret or a token.
"""
from typing import Any

from connector.protocol.codes import MESSAGES, Action, action_for
from connector.protocol.device import Device

__all__ = ["InvalidRequest", "IoTPlatformError", "TransportError", "UnknownDevice", "action_for_http_status"]


class IoTPlatformError(Exception):
    """A failure reported by the platform, or on the way to it.

    Args:
        code: the platform's result code, or None for a failure with no platform reply.
        message: what went wrong, for people; never holds a secret or a token.
        action: whether to retry, re-authenticate, back off or give up; by default the code's.
        ambiguous: the request may have reached the platform and been accepted (a resend may duplicate it).
    """

    def __init__(self, code: int | None, message: str, *, action: Action | None = None,
                 ambiguous: bool = False) -> None:
        super().__init__(f"{message} (code {code})" if code is not None else message)
        self.code = code
        self.message = message
        self.action = action if action is not None else action_for(code)
        self.ambiguous = ambiguous

    @classmethod
    def from_reply(cls, code: int, message: str | None = None) -> "IoTPlatformError":
        """An error for a platform reply.

        Args:
            code: the reply's code.
            message: the reply's message; the official message for the code when empty.

        Returns:
            The error, with the action for the code.
        """
        return cls(code, message or MESSAGES.get(code, "unknown error"))

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls: type[IoTPlatformError], args: tuple[Any, ...], state: dict[str, Any]) -> IoTPlatformError:
    """Unpickle without calling __init__, so every subclass survives Beam's pickling unchanged."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class TransportError(IoTPlatformError):
    """No platform reply: refused, reset, timed out, TLS failure, or an HTTP error from a gateway.

    Args:
        kind: "connect", "connect_timeout", "read_timeout", "connection_lost", "tls", "http_status", or
            "bad_reply" (an answer that is not the platform's JSON, or a success without its token or
            messageId).
        message: what went wrong.
        action: what to do next; retry by default.
        ambiguous: the request may have reached the platform and been accepted.
        http_status: the HTTP status of a gateway's error reply (kind "http_status").
    """

    UNREACHED_KINDS = frozenset({"connect", "connect_timeout", "tls"})

    def __init__(self, kind: str, message: str, *, action: Action = Action.RETRY, ambiguous: bool = False,
                 http_status: int | None = None) -> None:
        super().__init__(None, f"{kind}: {message}", action=action, ambiguous=ambiguous)
        self.kind = kind
        self.http_status = http_status

    @property
    def unreached(self) -> bool:
        """Whether the request never reached the platform (no connection, no TLS session)."""
        return self.kind in self.UNREACHED_KINDS


def action_for_http_status(status: int) -> Action:
    """What to do after an HTTP error instead of a platform reply. 404: nothing answers at that address
    (a wrong endpoint), which no retry changes; 429: a gateway's throttling; others may pass."""
    if status == 404:
        return Action.PERMANENT
    return Action.THROTTLED if status == 429 else Action.RETRY


class InvalidRequest(IoTPlatformError):
    """Refused by the client before sending, because the platform would refuse it (bad topic, size...)."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message, action=Action.PERMANENT)


class UnknownDevice(IoTPlatformError):
    """No secret is known for the device, so it cannot authenticate."""

    def __init__(self, device: Device) -> None:
        super().__init__(None, f"no device secret for {device}", action=Action.PERMANENT)
