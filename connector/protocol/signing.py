"""Signing of /auth requests: hex(HMAC(deviceSecret, content)).

content is every parameter sent except version, sign and signmethod, sorted by name and written as
name then value with no separators. Only parameters actually sent are signed.
"""
import hashlib
import hmac
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "CLIENT_SIGN_METHOD", "DEFAULT_SIGN_METHOD", "SIGN_METHODS", "UNSIGNED_PARAMS", "digest_for", "sign",
    "sign_content", "signature_matches",
]

SIGN_METHODS: dict[str, Callable[..., Any]] = {
    "hmacmd5": hashlib.md5,
    "hmacsha1": hashlib.sha1,
    "hmacsha256": hashlib.sha256,
}
DEFAULT_SIGN_METHOD = "hmacmd5"  # what the platform assumes when signmethod is absent
# What clients send unless told otherwise: documented by the spec (hmacsha256 is not) and stronger than md5.
CLIENT_SIGN_METHOD = "hmacsha1"
UNSIGNED_PARAMS = frozenset({"version", "sign", "signmethod"})


def sign_content(params: Mapping[str, object]) -> str:
    """The string that is signed: sorted name+value pairs of the signed parameters."""
    return "".join(f"{name}{params[name]}" for name in sorted(params) if name not in UNSIGNED_PARAMS)


def sign(secret: str, params: Mapping[str, object], method: str = DEFAULT_SIGN_METHOD) -> str:
    """Sign /auth parameters.

    Args:
        secret: the device secret.
        params: the parameters sent; version, sign and signmethod are left out of the signature.
        method: "hmacmd5", "hmacsha1" or "hmacsha256".

    Returns:
        The signature, in lowercase hex.

    Raises:
        ValueError: the method is unknown.
    """
    return hmac.new(secret.encode("utf-8"), sign_content(params).encode("utf-8"), digest_for(method)).hexdigest()


def digest_for(method: str) -> Callable[..., Any]:
    """The hash constructor of a sign method.

    Raises:
        ValueError: the method is unknown; the message names the methods there are.
    """
    try:
        return SIGN_METHODS[method]
    except KeyError:
        raise ValueError(f"unknown sign method {method!r}; use one of {sorted(SIGN_METHODS)}") from None


def signature_matches(secret: str, params: Mapping[str, object], method: str, given: object) -> bool:
    """Constant-time check of a signature given in either hex case."""
    return hmac.compare_digest(sign(secret, params, method), str(given).lower())
