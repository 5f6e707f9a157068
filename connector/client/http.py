"""IoTPlatformClient: the HTTPS device channel, request by request.

One keep-alive requests.Session per client, pooled for use from several threads. It knows the
protocol (signing, codes, limits) and nothing of Beam or of token caching.
"""
import json
import logging
import os
import re
import time

import requests
from requests.adapters import HTTPAdapter

from connector.protocol import codes, limits, signing
from connector.protocol.topics import topic_problem

from connector.protocol.codes import Action

from .errors import InvalidRequest, IoTPlatformError, TransportError

_LOG = logging.getLogger(__name__)
# What a token may hold to travel in a header: printable ASCII without spaces (tokens are hex today).
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]*")


class IoTPlatformClient:
    """Authenticates devices and publishes payloads to topics.

    endpoint: "https://host[:port]" (HTTPS only). ca_file: a CA bundle to trust instead of the system's
    (the emulator's CA in tests); it wins over REQUESTS_CA_BUNDLE. insecure_skip_tls_verify: turns
    certificate checking off, loudly; never the default. pool_size: connections kept for concurrent
    threads. Timeouts are in seconds.
    """

    def __init__(self, endpoint, *, ca_file=None, insecure_skip_tls_verify=False, connect_timeout=5.0,
                 read_timeout=30.0, pool_size=16, sign_method="hmacsha256"):
        if not str(endpoint).startswith("https://"):
            raise ValueError(f"the platform speaks HTTPS only; endpoint must start with https://: {endpoint!r}")
        if sign_method not in signing.SIGN_METHODS:
            raise ValueError(f"unknown sign method {sign_method!r}; use one of {sorted(signing.SIGN_METHODS)}")
        self.endpoint = endpoint.rstrip("/")
        self.sign_method = sign_method
        self.timeout = (connect_timeout, read_timeout)
        if insecure_skip_tls_verify:
            _LOG.warning("TLS certificate verification is OFF for %s: anyone on the path can read and "
                         "change the traffic, device tokens included", self.endpoint)
            self._verify = False
        else:
            # Passed on every request: a Session-level verify is silently replaced by REQUESTS_CA_BUNDLE.
            self._verify = ca_file or True
        self._session = requests.Session()
        # The environment (proxies, NO_PROXY, REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE) is read once, here. Left to
        # requests, every request walks os.environ twice for proxies and looks for a .netrc: over half of
        # the client's CPU per publish (0.65 of 1.2 ms).
        self._session.trust_env = False
        self._session.proxies = requests.utils.get_environ_proxies(self.endpoint)
        if self._verify is True:
            self._verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("https://", adapter)

    def __repr__(self):
        return f"IoTPlatformClient({self.endpoint!r})"

    def close(self):
        self._session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def authenticate(self, device, secret, *, client_id=None, timestamp_ms=None):
        """Get a token for the device (a connector.protocol.device.Device).

        The timestamp defaults to now: the platform refuses it if this machine's clock is more than
        15 minutes off, and the error says so.
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

    def publish(self, token, topic, payload):
        """Send payload bytes to a topic; returns the platform's messageId as an exact int."""
        problem = topic_problem(topic)
        if problem:
            raise InvalidRequest(f"{problem}: {topic!r}")
        if token and not (isinstance(token, str) and _TOKEN_CHARACTERS.fullmatch(token)):
            # Never echo it: a token is a credential. An empty one goes out; the platform answers 20002.
            raise InvalidRequest("token cannot be sent in a header: it must be printable ASCII without spaces")
        if len(payload) > limits.MAX_PAYLOAD_BYTES:
            raise InvalidRequest(f"payload of {len(payload)} bytes is over the platform's "
                                 f"{limits.MAX_PAYLOAD_BYTES}-byte limit")
        headers = {"Content-Type": limits.PUBLISH_CONTENT_TYPE, "password": token}
        reply = self._post(limits.TOPIC_PATH_PREFIX + topic, payload, headers, ambiguous=True)
        message_id = _info(reply).get("messageId")
        if not isinstance(message_id, int):
            raise TransportError("bad_reply", f"publish succeeded without a messageId: {message_id!r}",
                                 ambiguous=True)
        return message_id

    def _post(self, path, body, headers, ambiguous=False):
        """POST and return the decoded reply; raises IoTPlatformError unless its code is 0.

        ambiguous: whether a lost reply may hide an accepted request (true for publishes).
        """
        try:
            response = self._session.post(self.endpoint + path, data=body, headers=headers,
                                          timeout=self.timeout, verify=self._verify)
        except requests.exceptions.RequestException as error:
            raise _transport_error(error, ambiguous) from None
        if response.status_code != 200:
            raise TransportError(
                "http_status", f"HTTP {response.status_code} from {self.endpoint}",
                action=Action.THROTTLED if response.status_code == 429 else Action.RETRY,
                ambiguous=ambiguous and response.status_code >= 500, http_status=response.status_code)
        try:
            reply = json.loads(response.content)
            code = reply["code"]
        except (ValueError, KeyError, TypeError):
            raise TransportError("bad_reply", f"reply from {self.endpoint} is not the platform's JSON",
                                 ambiguous=ambiguous) from None
        if code != codes.SUCCESS:
            raise IoTPlatformError.from_reply(code, reply.get("message"))
        return reply


def _info(reply):
    """The reply's info object; the spec's sample says `Info`, the real server says `info`."""
    info = reply.get("info", reply.get("Info"))
    return info if isinstance(info, dict) else {}


def _auth_failure_message(device, server_message):
    return (f"{server_message or 'auth check error'}: {device} was refused; check its device secret, "
            f"that the device exists, and that this machine's clock is within 15 minutes of the platform's")


def _transport_error(error, ambiguous):
    """Map a requests exception to a TransportError that says whether the request may have arrived."""
    exc = requests.exceptions
    if isinstance(error, (exc.InvalidHeader, exc.InvalidURL, exc.InvalidSchema, exc.MissingSchema)):
        # Raised before anything is sent; requests' text may quote a header value (a token), so drop it.
        return InvalidRequest(f"the request could not be built ({type(error).__name__})")
    if isinstance(error, exc.SSLError):
        text = _first_line(error)
        # A certificate that does not verify will not verify next time; a handshake cut short might.
        permanent = "certificate" in text.lower() or "hostname" in text.lower()
        return TransportError("tls", f"TLS failure: {text}",
                              action=Action.PERMANENT if permanent else Action.RETRY)
    if isinstance(error, exc.ConnectTimeout):
        return TransportError("connect_timeout", "connecting timed out")
    if isinstance(error, exc.ReadTimeout):
        return TransportError("read_timeout", "no reply within the read timeout", ambiguous=ambiguous)
    if isinstance(error, exc.ConnectionError):
        text = _first_line(error)
        refused = "refused" in text.lower() or "NewConnectionError" in text
        return TransportError("connect" if refused else "connection_lost", text,
                              ambiguous=ambiguous and not refused)
    return TransportError("connection_lost", _first_line(error), ambiguous=ambiguous)


def _first_line(error):
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__
