"""IoTPlatformClient: the HTTPS device channel, request by request.

One pool of keep-alive connections per client (the one endpoint host), for use from several threads.
It knows the protocol (signing, codes, limits) and nothing of Beam or of token caching.
"""
import json
import logging
import os
import re
import ssl
import time
import urllib.parse
from types import TracebackType
from typing import Any

import requests.utils

from connector.protocol import codes, limits, signing
from connector.protocol.codes import Action
from connector.protocol.device import Device
from connector.protocol.topics import topic_problem

from . import wire
from .errors import InvalidRequest, IoTPlatformError, TransportError, action_for_http_status

__all__ = ["IoTPlatformClient"]

_LOG = logging.getLogger(__name__)
# What a token may hold to travel in a header: printable ASCII without spaces (tokens are hex today).
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]*")


class IoTPlatformClient:
    """Authenticates devices and publishes payloads to topics.

    HTTPS_PROXY/ALL_PROXY (an http:// proxy, tunnelled with CONNECT) and NO_PROXY are honoured as
    requests honours them.

    Args:
        endpoint: "https://host[:port]" (HTTPS only).
        ca_file: a CA bundle to trust instead of the default one (the emulator's CA in tests); it wins
            over REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE, which win over certifi's bundle, as with requests.
        insecure_skip_tls_verify: turns certificate checking off, loudly; never the default.
        connect_timeout: seconds to open a connection and finish the TLS handshake.
        read_timeout: seconds for a whole reply.
        pool_size: idle connections kept for concurrent threads.
        sign_method: how /auth is signed, "hmacmd5", "hmacsha1" or "hmacsha256".
        transport: what builds the connection pool; wire.Pool (the default) or another
            connector.client.wire.TransportFactory, such as tests' urllib3 reference.

    Raises:
        ValueError: the endpoint is not https://, or the sign method is unknown.
        OSError: the CA bundle cannot be found.
    """

    def __init__(self, endpoint: str, *, ca_file: str | None = None, insecure_skip_tls_verify: bool = False,
                 connect_timeout: float = 5.0, read_timeout: float = 30.0, pool_size: int = 16,
                 sign_method: str = signing.CLIENT_SIGN_METHOD,
                 transport: wire.TransportFactory = wire.Pool) -> None:
        if not str(endpoint).startswith("https://"):
            raise ValueError(f"the platform speaks HTTPS only; endpoint must start with https://: {endpoint!r}")
        signing.digest_for(sign_method)  # refuse an unknown method now, not at the first /auth
        self.endpoint = endpoint.rstrip("/")
        self.sign_method = sign_method
        # The environment (HTTPS_PROXY/ALL_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE) is read once,
        # here, with the rules requests applies: reading it per request cost a third of the client's CPU.
        if insecure_skip_tls_verify:
            _LOG.warning("TLS certificate verification is OFF for %s: anyone on the path can read and "
                         "change the traffic, device tokens included", self.endpoint)
            context = _tls_context(verify=False)
        else:
            # One context, its CA bundle loaded once. Default bundle: certifi's, as requests uses.
            context = _tls_context(verify=True)
            _load_ca(context, ca_file or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                     or requests.utils.DEFAULT_CA_BUNDLE_PATH)
        parsed = urllib.parse.urlsplit(self.endpoint)
        proxy = requests.utils.select_proxy(self.endpoint, requests.utils.get_environ_proxies(self.endpoint))
        if proxy:
            proxy = requests.utils.prepend_scheme_if_needed(proxy, "http")
        # A thread never waits for a connection: one is opened when none is idle (the publisher keeps at
        # most pool_size requests in flight, so at most pool_size are open).
        self._pool = transport(parsed.hostname or "", parsed.port or 443, context, connect_timeout=connect_timeout,
                               read_timeout=read_timeout, size=pool_size, proxy=proxy)
        self._path_prefix = parsed.path

    def __repr__(self) -> str:
        return f"IoTPlatformClient({self.endpoint!r})"

    @property
    def connections_opened(self) -> int:
        """Connections opened so far (a reused keep-alive connection counts once)."""
        return self._pool.connections_opened

    @property
    def requests_sent(self) -> int:
        """Requests sent so far."""
        return self._pool.requests_sent

    def close(self) -> None:
        """Close the idle connections; a later request opens new ones."""
        self._pool.close()

    def __enter__(self) -> "IoTPlatformClient":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def authenticate(self, device: Device, secret: str, *, client_id: str | None = None,
                     timestamp_ms: int | None = None) -> str:
        """Get a token for the device.

        Args:
            device: the device to authenticate.
            secret: its device secret; it signs the request and is never sent.
            client_id: the clientId to send; productKey.deviceName by default.
            timestamp_ms: the request's time; now by default. The platform refuses it if this
                machine's clock is more than 15 minutes off, and the error says so.

        Returns:
            The device's token, for publish().

        Raises:
            InvalidRequest: the clientId breaks the platform's rules (nothing is sent).
            IoTPlatformError: the platform refused (its code says why), or TransportError when no
                reply came.
        """
        client_id = device.client_id if client_id is None else client_id
        if not 1 <= len(client_id) <= limits.MAX_CLIENT_ID_CHARS:
            raise InvalidRequest(f"clientId must be 1 to {limits.MAX_CLIENT_ID_CHARS} characters, "
                                 f"got {len(client_id)} for {device}")
        params = {
            "productKey": device.product_key,
            "deviceName": device.device_name,
            "clientId": client_id,
            "timestamp": str(int(time.time() * 1000) if timestamp_ms is None else timestamp_ms),
        }
        params["sign"] = signing.sign(secret, params, self.sign_method)
        params["signmethod"] = self.sign_method
        params["version"] = "default"
        body = json.dumps(params, separators=(",", ":")).encode()
        try:
            reply = self._post(limits.AUTH_PATH, body, {"Content-Type": limits.AUTH_CONTENT_TYPE})
        except IoTPlatformError as error:
            if error.code != codes.AUTH_CHECK_ERROR:
                raise
            raise IoTPlatformError(codes.AUTH_CHECK_ERROR, _auth_failure_message(device, error.message)) from None
        token = _info(reply).get("token")
        if not isinstance(token, str) or not token or not _TOKEN_CHARACTERS.fullmatch(token):
            raise TransportError("bad_reply", "/auth succeeded without a usable token", ambiguous=False)
        return token

    def publish(self, token: str | None, topic: str, payload: bytes) -> int:
        """Send payload bytes to a topic.

        Args:
            token: the device's token from authenticate(); None sends no token (the platform
                answers 20002, token is null).
            topic: a topic the device may publish to.
            payload: at most 128 KB.

        Returns:
            The platform's messageId, as an exact int.

        Raises:
            InvalidRequest: the topic, token or payload break the platform's rules (nothing is sent).
            IoTPlatformError: the platform refused (its code and action say why and what to do), or
                TransportError when no reply came; `ambiguous` says whether it may have been accepted.
        """
        problem = topic_problem(topic)
        if problem:
            raise InvalidRequest(f"{problem}: {topic!r}")
        if token and not (isinstance(token, str) and _TOKEN_CHARACTERS.fullmatch(token)):
            # Never echo it: a token is a credential. An empty one goes out; the platform answers 20002.
            raise InvalidRequest("token cannot be sent in a header: it must be printable ASCII without spaces")
        if len(payload) > limits.MAX_PAYLOAD_BYTES:
            raise InvalidRequest(f"payload of {len(payload)} bytes is over the platform's "
                                 f"{limits.MAX_PAYLOAD_BYTES}-byte limit")
        headers = {"Content-Type": limits.PUBLISH_CONTENT_TYPE}
        if token is not None:  # None: sent without the header, as requests did (the platform answers 20002)
            headers["password"] = token
        reply = self._post(limits.TOPIC_PATH_PREFIX + topic, payload, headers, ambiguous=True)
        message_id = _info(reply).get("messageId")
        if not isinstance(message_id, int):
            raise TransportError("bad_reply", f"publish succeeded without a messageId: {message_id!r}",
                                 ambiguous=True)
        return message_id

    def _post(self, path: str, body: bytes, headers: dict[str, str], ambiguous: bool = False) -> dict[str, Any]:
        """POST and return the decoded reply; raises IoTPlatformError unless its code is 0.

        ambiguous: whether a lost reply may hide an accepted request (true for publishes).
        """
        try:
            response = self._pool.post(self._path_prefix + path, body, headers)
        except wire.ConnectFailed as error:
            raise _connect_error(error, self.endpoint) from None
        except wire.ReplyLost as error:
            raise TransportError(error.kind, str(error), ambiguous=ambiguous) from None
        except wire.RequestRefused as refused:  # says which rule, never the header: it might be the token
            raise InvalidRequest(f"the request could not be built: {refused}") from None
        _LOG.debug("POST %s%s: HTTP %d", self._path_prefix, path, response.status)
        if response.status != 200:
            raise TransportError(
                "http_status", f"HTTP {response.status} from {self.endpoint}{path}",
                action=action_for_http_status(response.status),
                ambiguous=ambiguous and response.status >= 500, http_status=response.status)
        try:
            reply: dict[str, Any] = json.loads(response.body)  # checked: a list or a number has no ["code"]
            code = reply["code"]
        except (ValueError, KeyError, TypeError):
            raise TransportError("bad_reply", f"reply from {self.endpoint} is not the platform's JSON",
                                 ambiguous=ambiguous) from None
        if code != codes.SUCCESS:
            raise IoTPlatformError.from_reply(code, reply.get("message"))
        return reply


def _info(reply: dict[str, Any]) -> dict[str, Any]:
    """The reply's info object; the spec's sample says `Info`, the real server says `info`."""
    info = reply.get("info", reply.get("Info"))
    return info if isinstance(info, dict) else {}


def _auth_failure_message(device: Device, server_message: str | None) -> str:
    return (f"{server_message or 'auth check error'}: {device} was refused; check its device secret, "
            f"that the device exists, and that this machine's clock is within 15 minutes of the platform's")


def _load_ca(context: ssl.SSLContext, location: str) -> None:
    """Trust the CA bundle at location (a file, or a directory of hashed certificates, as requests allowed)."""
    if not os.path.exists(location):
        raise OSError(f"Could not find a suitable TLS CA certificate bundle, invalid path: {location}")
    if os.path.isdir(location):
        context.load_verify_locations(capath=location)
    else:
        context.load_verify_locations(cafile=location)


def _tls_context(verify: bool) -> ssl.SSLContext:
    """TLS 1.2 or newer; with verify, the certificate chain and the host name are checked, the name
    against the certificate's subjectAltName only (as urllib3 and browsers do, not its common name)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.hostname_checks_common_name = False
    context.options |= ssl.OP_NO_TICKET  # as urllib3 sets it: some servers mishandle session tickets
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _connect_error(error: wire.ConnectFailed, endpoint: str) -> TransportError:
    """A TransportError for a connection that failed before anything was sent (never ambiguous)."""
    cause = error.cause
    if error.stage == "tls":
        # A certificate that does not verify will not verify next time; a handshake cut short might.
        permanent = isinstance(cause, ssl.SSLCertVerificationError) or "certificate" in str(cause).lower()
        return TransportError("tls", f"TLS failure with {endpoint}: {error}",
                              action=Action.PERMANENT if permanent else Action.RETRY)
    via = " through the proxy" if error.stage == "proxy" else ""
    if isinstance(cause, TimeoutError):
        return TransportError("connect_timeout", f"connecting to {endpoint}{via} timed out")
    return TransportError("connect", f"cannot connect to {endpoint}{via}: {error}")
