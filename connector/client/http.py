"""IoTPlatformClient: the HTTPS device channel, request by request.

One keep-alive urllib3 connection pool per client (the one endpoint host), for use from several threads.
It knows the protocol (signing, codes, limits) and nothing of Beam or of token caching.
"""
import http.client
import json
import logging
import os
import re
import ssl
import time
import urllib.parse

import requests.utils
import urllib3
from urllib3.util.ssl_ import create_urllib3_context

from connector.protocol import codes, limits, signing
from connector.protocol.codes import Action
from connector.protocol.topics import topic_problem

from .errors import InvalidRequest, IoTPlatformError, TransportError

_LOG = logging.getLogger(__name__)
# What a token may hold to travel in a header: printable ASCII without spaces (tokens are hex today).
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]*")


class IoTPlatformClient:
    """Authenticates devices and publishes payloads to topics.

    endpoint: "https://host[:port]" (HTTPS only). ca_file: a CA bundle to trust instead of the default one
    (the emulator's CA in tests); it wins over REQUESTS_CA_BUNDLE and CURL_CA_BUNDLE, which win over
    certifi's bundle, as with requests. insecure_skip_tls_verify: turns certificate checking off, loudly;
    never the default. HTTPS_PROXY/ALL_PROXY and NO_PROXY are honoured as requests honoured them.
    pool_size: connections kept for concurrent threads. Timeouts are in seconds.
    """

    def __init__(self, endpoint, *, ca_file=None, insecure_skip_tls_verify=False, connect_timeout=5.0,
                 read_timeout=30.0, pool_size=16, sign_method="hmacsha256"):
        if not str(endpoint).startswith("https://"):
            raise ValueError(f"the platform speaks HTTPS only; endpoint must start with https://: {endpoint!r}")
        signing.digest_for(sign_method)  # refuse an unknown method now, not at the first /auth
        self.endpoint = endpoint.rstrip("/")
        self.sign_method = sign_method
        self._timeout = urllib3.Timeout(connect=connect_timeout, read=read_timeout)
        # The environment (HTTPS_PROXY/ALL_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE/CURL_CA_BUNDLE) is read once,
        # here, with the rules requests applies: reading it per request cost a third of the client's CPU.
        if insecure_skip_tls_verify:
            _LOG.warning("TLS certificate verification is OFF for %s: anyone on the path can read and "
                         "change the traffic, device tokens included", self.endpoint)
            # urllib3 still warns (InsecureRequestWarning) on every request that goes out unverified.
            context = create_urllib3_context(cert_reqs=ssl.CERT_NONE)
            tls = {"cert_reqs": "CERT_NONE", "assert_hostname": False}
        else:
            # One context, its CA bundle loaded once: urllib3 would otherwise build a context and load the
            # bundle for every new connection. Default bundle: certifi's, as requests used.
            context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
            _load_ca(context, ca_file or os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                     or requests.utils.DEFAULT_CA_BUNDLE_PATH)
            tls = {"cert_reqs": "CERT_REQUIRED"}
        parsed = urllib.parse.urlsplit(self.endpoint)
        options = dict(maxsize=pool_size, block=False, retries=False, timeout=self._timeout, ssl_context=context,
                       **tls)
        proxy = requests.utils.select_proxy(self.endpoint, requests.utils.get_environ_proxies(self.endpoint))
        self._manager = _pool_manager(proxy, options)
        # Every request goes to this one pool: keep-alive, up to pool_size idle connections kept. block=False
        # as requests had it: a thread never waits for a slot; a connection beyond pool_size is opened and
        # dropped after use (the publisher keeps at most pool_size requests in flight, so it does not happen).
        self._pool = self._manager.connection_from_host(parsed.hostname, parsed.port or 443, scheme="https")
        self._path_prefix = parsed.path

    def __repr__(self):
        return f"IoTPlatformClient({self.endpoint!r})"

    def close(self):
        self._manager.clear()

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
        headers = {"Content-Type": limits.PUBLISH_CONTENT_TYPE}
        if token is not None:  # None: sent without the header, as requests did (the platform answers 20002)
            headers["password"] = token
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
            response = self._pool.urlopen("POST", self._path_prefix + path, body=body, headers=headers,
                                          retries=False, redirect=False, timeout=self._timeout,
                                          preload_content=True, assert_same_host=False)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError, ValueError) as error:
            raise _transport_error(error, ambiguous) from None
        if response.status != 200:
            raise TransportError(
                "http_status", f"HTTP {response.status} from {self.endpoint}",
                action=Action.THROTTLED if response.status == 429 else Action.RETRY,
                ambiguous=ambiguous and response.status >= 500, http_status=response.status)
        try:
            reply = json.loads(response.data)
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


def _load_ca(context, location):
    """Trust the CA bundle at location (a file, or a directory of hashed certificates, as requests allowed)."""
    if not os.path.exists(location):
        raise OSError(f"Could not find a suitable TLS CA certificate bundle, invalid path: {location}")
    if os.path.isdir(location):
        context.load_verify_locations(capath=location)
    else:
        context.load_verify_locations(cafile=location)


def _pool_manager(proxy, options):
    """A PoolManager, or a proxy manager tunnelling to the endpoint when the environment names a proxy."""
    if not proxy:
        return urllib3.PoolManager(num_pools=1, **options)
    proxy = requests.utils.prepend_scheme_if_needed(proxy, "http")
    username, password = requests.utils.get_auth_from_url(proxy)
    if proxy.lower().startswith("socks"):
        from urllib3.contrib.socks import SOCKSProxyManager  # needs PySocks, as it did with requests
        return SOCKSProxyManager(proxy, username=username, password=password, num_pools=1, **options)
    headers = urllib3.make_headers(proxy_basic_auth=f"{username}:{password}") if username else None
    return urllib3.ProxyManager(proxy, num_pools=1, proxy_headers=headers, **options)


def _transport_error(error, ambiguous):
    """Map a urllib3 (or socket, http.client) exception to a TransportError that says whether the request
    may have arrived. urllib3's texts name the host and port, never a header (the token travels in one)."""
    exc = urllib3.exceptions
    if isinstance(error, exc.MaxRetryError) and error.reason is not None:  # retries=False raises most bare
        error = error.reason
    if isinstance(error, (exc.SSLError, ssl.SSLError, ssl.CertificateError)):
        text = _first_line(error)
        # A certificate that does not verify will not verify next time; a handshake cut short might.
        permanent = "certificate" in text.lower() or "hostname" in text.lower()
        return TransportError("tls", f"TLS failure: {text}",
                              action=Action.PERMANENT if permanent else Action.RETRY)
    if isinstance(error, exc.ProxyError):
        return TransportError("connect", _first_line(error))
    if isinstance(error, exc.NewConnectionError):  # refused, unreachable, no such name: nothing was sent
        return TransportError("connect", _first_line(error))
    if isinstance(error, exc.ConnectTimeoutError):  # NewConnectionError is one too, hence second
        return TransportError("connect_timeout", "connecting timed out")
    if isinstance(error, (exc.ReadTimeoutError, TimeoutError)):
        return TransportError("read_timeout", "no reply within the read timeout", ambiguous=ambiguous)
    if isinstance(error, ValueError):  # LocationValueError, or http.client refusing a header
        # Raised before anything is sent; a text might quote a header value (a token), so drop it.
        return InvalidRequest(f"the request could not be built ({type(error).__name__})")
    if isinstance(error, exc.DecodeError):
        return TransportError("bad_reply", f"reply could not be decoded ({type(error).__name__})",
                              ambiguous=ambiguous)
    # ProtocolError (reset, RemoteDisconnected, cut short), and anything else on the way.
    return TransportError("connection_lost", _first_line(error), ambiguous=ambiguous)


def _first_line(error):
    return str(error).splitlines()[0][:300] if str(error) else type(error).__name__
