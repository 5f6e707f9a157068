"""What can go wrong talking to the platform, classified by what the caller should do next.

Every failure is an IoTPlatformError: platform codes carry `.code`; transport failures and requests
refused before sending carry `code=None` and their own class. Messages never hold a secret or a token.
"""
from connector.protocol.codes import MESSAGES, Action, action_for


class IoTPlatformError(Exception):
    """A failure reported by the platform, or on the way to it.

    action: a connector.protocol.codes.Action saying whether to retry, re-authenticate, back off or give up.
    ambiguous: the request may have reached the platform and been accepted (a resend may duplicate it).
    """

    def __init__(self, code, message, *, action=None, ambiguous=False):
        super().__init__(f"{message} (code {code})" if code is not None else message)
        self.code = code
        self.message = message
        self.action = action if action is not None else action_for(code)
        self.ambiguous = ambiguous

    @classmethod
    def from_reply(cls, code, message=None):
        """An error for a platform reply; falls back to the official message for the code."""
        return cls(code, message or MESSAGES.get(code, "unknown error"))

    def __reduce__(self):
        return _rebuild, (type(self), self.args, self.__dict__)


def _rebuild(cls, args, state):
    """Unpickle without calling __init__, so every subclass survives Beam's pickling unchanged."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class TransportError(IoTPlatformError):
    """No platform reply: refused, reset, timed out, TLS failure, or an HTTP error from a gateway.

    kind: "connect", "connect_timeout", "read_timeout", "connection_lost", "tls", "http_status", or
    "bad_reply" (an answer that is not the platform's JSON, or a success without its token or messageId).
    """

    UNREACHED_KINDS = frozenset({"connect", "connect_timeout", "tls"})

    def __init__(self, kind, message, *, action=Action.RETRY, ambiguous=False, http_status=None):
        super().__init__(None, f"{kind}: {message}", action=action, ambiguous=ambiguous)
        self.kind = kind
        self.http_status = http_status

    @property
    def unreached(self):
        """Whether the request never reached the platform (no connection, no TLS session)."""
        return self.kind in self.UNREACHED_KINDS


def action_for_http_status(status):
    """What to do after an HTTP error instead of a platform reply. 404: nothing answers at that address
    (a wrong endpoint), which no retry changes; 429: a gateway's throttling; others may pass."""
    if status == 404:
        return Action.PERMANENT
    return Action.THROTTLED if status == 429 else Action.RETRY


class InvalidRequest(IoTPlatformError):
    """Refused by the client before sending, because the platform would refuse it (bad topic, size...)."""

    def __init__(self, message):
        super().__init__(None, message, action=Action.PERMANENT)


class UnknownDevice(IoTPlatformError):
    """No secret is known for the device, so it cannot authenticate."""

    def __init__(self, device):
        super().__init__(None, f"no device secret for {device}", action=Action.PERMANENT)
