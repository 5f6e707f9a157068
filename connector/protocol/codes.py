"""The platform's result codes, their official messages, and what a client should do about each."""
import enum

__all__ = [
    "AUTH_CHECK_ERROR", "AUTH_CODES", "CHECK_TOKEN_ERROR", "COMMON_ERROR", "MESSAGES", "PARAM_ERROR",
    "PUBLISH_MESSAGE_ERROR", "REQUEST_TOO_MANY", "SUCCESS", "TOKEN_EXPIRED", "TOKEN_NULL", "TOPIC_CODES",
    "UPDATE_SESSION_ERROR", "Action", "action_for",
]

SUCCESS = 0
COMMON_ERROR = 10000
PARAM_ERROR = 10001
AUTH_CHECK_ERROR = 20000
TOKEN_EXPIRED = 20001
TOKEN_NULL = 20002
CHECK_TOKEN_ERROR = 20003
UPDATE_SESSION_ERROR = 20004
PUBLISH_MESSAGE_ERROR = 30001
REQUEST_TOO_MANY = 40000

MESSAGES = {
    SUCCESS: "success",
    COMMON_ERROR: "common error",
    PARAM_ERROR: "param error",
    AUTH_CHECK_ERROR: "auth check error",
    TOKEN_EXPIRED: "token is expired",
    TOKEN_NULL: "token is null",
    CHECK_TOKEN_ERROR: "check token error",
    UPDATE_SESSION_ERROR: "update session error",
    PUBLISH_MESSAGE_ERROR: "publish message error",
    REQUEST_TOO_MANY: "request too many",
}


class Action(enum.Enum):
    """What a client does after a failure."""

    RETRY = "retry"  # transient: back off and send again
    REAUTHENTICATE = "reauthenticate"  # the token is bad: get a new one and send again
    THROTTLED = "throttled"  # too many requests: back off longer, count the time
    PERMANENT = "permanent"  # sending again cannot help


_ACTIONS: dict[int | None, Action] = {
    COMMON_ERROR: Action.RETRY,
    UPDATE_SESSION_ERROR: Action.RETRY,
    PUBLISH_MESSAGE_ERROR: Action.RETRY,
    TOKEN_EXPIRED: Action.REAUTHENTICATE,
    TOKEN_NULL: Action.REAUTHENTICATE,
    CHECK_TOKEN_ERROR: Action.REAUTHENTICATE,
    REQUEST_TOO_MANY: Action.THROTTLED,
    PARAM_ERROR: Action.PERMANENT,
    AUTH_CHECK_ERROR: Action.PERMANENT,
}


def action_for(code: int | None) -> Action:
    """What to do after a platform code.

    Args:
        code: a platform result code; None (no platform reply) and codes the platform may add later
            are treated as transient.

    Returns:
        The Action for the code.
    """
    return _ACTIONS.get(code, Action.RETRY)

# The codes each endpoint can answer (spec and docs/protocol.md), besides SUCCESS.
AUTH_CODES = frozenset({COMMON_ERROR, PARAM_ERROR, AUTH_CHECK_ERROR, UPDATE_SESSION_ERROR, REQUEST_TOO_MANY})
TOPIC_CODES = frozenset({
    COMMON_ERROR, PARAM_ERROR, TOKEN_EXPIRED, TOKEN_NULL, CHECK_TOKEN_ERROR, PUBLISH_MESSAGE_ERROR,
    REQUEST_TOO_MANY,
})
