"""The device channel: POST /auth and POST /topic/${topic}, answered as the platform answers them.

Business errors are HTTP 200 with {"code", "message", "info"}; messages start with the official text
from connector.protocol.codes and may add a detail after ": ". The request path stays lean: no JSON
parsing of payloads, no logging work unless debug is on.

No request answers 500: a body too large, too slow, truncated, wrongly encoded or nested too deep, an
odd method or header, each gets the platform's code (10001 mostly) or, where HTTP itself fails (a
malformed request line, headers past their bounds, a body slower than the request timeout), a 4xx.
"""
import asyncio
import json
import logging
import math
import time

from aiohttp import web

from connector.protocol import codes
from connector.protocol.device import Device
from connector.protocol.limits import (
    AUTH_CONTENT_TYPE,
    AUTH_PATH,
    MAX_CLIENT_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    PUBLISH_CONTENT_TYPE,
    TIMESTAMP_VALIDITY_MS,
    TOPIC_PATH_PREFIX,
)
from connector.protocol.signing import DEFAULT_SIGN_METHOD, SIGN_METHODS, signature_matches
from connector.protocol.topics import topic_problem

from . import admin, console
from .access import AdminAccess, media_type
from .bodies import BodyTooLarge, read_body, reject_constant

log = logging.getLogger("connector.emulator")

MAX_AUTH_REPLY_BYTES = 255  # the legacy C SDK reads the /auth reply into a 256-byte buffer
REQUIRED_AUTH_FIELDS = ("productKey", "deviceName", "clientId", "sign")
OPTIONAL_TEXT_FIELDS = ("signmethod", "version")
_PUBLISHED = b'{"code":0,"message":"success","info":{"messageId":%d}}'
# Bounds a shared machine needs; a client past them is cut off (idle) or answered 4xx (headers, body).
IDLE_TIMEOUT_SECONDS = 60  # a connection's TLS handshake, keep-alive pause, or wait for a request's headers
REQUEST_TIMEOUT_SECONDS = 30  # for a request's body once its headers are in
LINGER_SECONDS = 10  # aiohttp's default
MAX_HEADER_LINE_BYTES = 8190  # the request line and each header line
MAX_HEADERS = 64


class JsonNumber(str):
    """A JSON number kept as the text the client sent: a numeric timestamp is signed as that text."""


def _parse_auth_body(body):
    return json.loads(body, parse_int=JsonNumber, parse_float=JsonNumber, parse_constant=reject_constant)


class Outcome(Exception):
    """A platform reply other than success, raised where the rule that produces it is checked."""

    def __init__(self, code, detail=None, info=None):
        super().__init__(code, detail)
        self.code, self.detail, self.info = code, detail, info or {}


def _json_reply(code, info, detail=None, max_bytes=None):
    message = codes.MESSAGES[code] if detail is None else f"{codes.MESSAGES[code]}: {detail}"
    body = json.dumps({"code": code, "message": message, "info": info}, separators=(",", ":")).encode()
    if max_bytes is not None and len(body) > max_bytes and detail is not None:
        return _json_reply(code, info, None, max_bytes)
    return body


class DeviceChannel:
    def __init__(self, state, request_timeout=REQUEST_TIMEOUT_SECONDS):
        self.state = state
        self.request_timeout = request_timeout
        self._debug = log.isEnabledFor(logging.DEBUG)

    async def auth(self, request):
        return await self._serve(request, "auth", self._authenticate)

    async def topic(self, request):
        return await self._serve(request, "topic", self._publish)

    async def _serve(self, request, endpoint, handle):
        """What both endpoints share: body limit, account throttling, faults, latency, counting."""
        state, faults = self.state, self.state.faults
        try:
            body = await read_body(request, MAX_PAYLOAD_BYTES, self.request_timeout)
        except BodyTooLarge:
            body = None  # not read into memory; answered below
        except asyncio.IncompleteReadError:  # the client hung up in the middle of its body
            return self._drop(request, endpoint)
        except TimeoutError:
            return self._too_slow(endpoint)
        if faults.active:
            injected = self._inject(request, endpoint)
            if injected is not None:
                return await self._delayed(injected)
        stored = False
        try:
            code = faults.error_code(endpoint) if faults.active else None
            if code:  # injected: answered as the platform answers it, before the request is handled
                raise Outcome(code, info={"messageId": state.store.next_id()} if code == codes.TOKEN_EXPIRED else None)
            if request.method != "POST":
                raise Outcome(codes.PARAM_ERROR, "only POST is supported")
            if body is None:
                raise Outcome(codes.PARAM_ERROR, f"body is larger than {MAX_PAYLOAD_BYTES} bytes")
            encoding = request.headers.get("Content-Encoding")
            if encoding is not None and encoding.lower() != "identity":
                raise Outcome(codes.PARAM_ERROR, "Content-Encoding is not supported: send the body as it is")
            if not state.limiter.allow_request():
                raise Outcome(codes.REQUEST_TOO_MANY, "account request rate exceeded")
            code, reply = 0, await handle(request, body)
            stored = endpoint == "topic"
        except Outcome as outcome:
            code = outcome.code
            reply = _json_reply(code, outcome.info, outcome.detail,
                                MAX_AUTH_REPLY_BYTES if endpoint == "auth" else None)
        if stored and faults.active and faults.drop_after_store():
            return self._drop(request, endpoint)
        state.requests[endpoint, str(code)] += 1
        if self._debug:
            log.debug("%s %s -> %d (%d bytes in)", request.method, request.path, code, len(body or b""))
        return await self._delayed(web.Response(body=reply, content_type="application/json"))

    def _inject(self, request, endpoint):
        """A hang-up or a gateway's HTTP error decided before the request is handled (so nothing is
        stored), or None. Injected platform codes go through _serve's own error path."""
        faults = self.state.faults
        if faults.drop_before():
            return self._drop(request, endpoint)
        status = faults.http_status()
        if status:
            self.state.requests[endpoint, f"http_{status}"] += 1
            return web.Response(status=status, text=f"<html><body>{status}</body></html>",
                                content_type="text/html")
        return None

    def _too_slow(self, endpoint):
        """HTTP 408 and the connection closed: the body took longer than the request timeout."""
        self.state.requests[endpoint, "http_408"] += 1
        response = web.Response(status=408, text=f"the body did not arrive within {self.request_timeout} s")
        response.force_close()
        return response

    def _drop(self, request, endpoint):
        """Close the connection without replying; aiohttp then writes nothing."""
        self.state.requests[endpoint, "dropped"] += 1
        request.transport.close()
        return web.Response()

    async def _delayed(self, response):
        """Every reply waits latency_ms, and now and then a latency spike more."""
        faults = self.state.faults
        delay_ms = faults.latency_ms + (faults.spike_ms() if faults.active else 0)
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        return response

    async def _authenticate(self, request, body):
        if media_type(request) != AUTH_CONTENT_TYPE:
            raise Outcome(codes.PARAM_ERROR, f"Content-Type must be {AUTH_CONTENT_TYPE}")
        try:
            params = _parse_auth_body(body)
        except (ValueError, RecursionError):  # also UnicodeDecodeError; RecursionError: nested too deep
            raise Outcome(codes.PARAM_ERROR, "body must be a JSON object") from None
        if not isinstance(params, dict):
            raise Outcome(codes.PARAM_ERROR, "body must be a JSON object")
        _check_auth_params(params)
        method = params.get("signmethod", DEFAULT_SIGN_METHOD).lower()
        if method not in SIGN_METHODS:
            raise Outcome(codes.PARAM_ERROR, f"signmethod must be one of {', '.join(SIGN_METHODS)}")
        device = Device(params["productKey"], params["deviceName"])
        secret = self.state.registry.secret(device)
        if secret is None or not params["sign"].isascii() or not signature_matches(secret, params, method,
                                                                                   params["sign"]):
            raise Outcome(codes.AUTH_CHECK_ERROR)
        if "timestamp" in params:
            skew_ms = (time.time() + self.state.clock_offset) * 1000 - float(params["timestamp"])
            if abs(skew_ms) > TIMESTAMP_VALIDITY_MS:
                raise Outcome(codes.AUTH_CHECK_ERROR, f"timestamp is {abs(skew_ms) / 1000:.0f} s away from "
                              "server time, check the device clock (clock skew)")
        token = self.state.registry.issue_token(device)
        self.state.sign_methods[method] += 1
        return _json_reply(codes.SUCCESS, {"token": token})

    async def _publish(self, request, body):
        if "?" in request.raw_path:
            raise Outcome(codes.PARAM_ERROR, "a query string is not allowed on /topic")
        if media_type(request) != PUBLISH_CONTENT_TYPE:
            raise Outcome(codes.PARAM_ERROR, f"Content-Type must be {PUBLISH_CONTENT_TYPE}")
        device = self._token_owner(request.headers.get("password"))
        topic = request.path[len(TOPIC_PATH_PREFIX):]
        problem = topic_problem(topic)
        if problem:
            raise Outcome(codes.PARAM_ERROR, problem)
        if not self.state.products.may_publish(device, topic):
            raise Outcome(codes.PUBLISH_MESSAGE_ERROR, f"device {device} may not publish to this topic (not its "
                          "own, or no topic category of its product allows publishing to it)")
        if not self.state.limiter.allow_message(device):
            raise Outcome(codes.REQUEST_TOO_MANY, "device message rate exceeded")
        return _PUBLISHED % await self.state.store.add(device, topic, body)

    def _token_owner(self, token):
        if not token:
            raise Outcome(codes.TOKEN_NULL)
        found = self.state.registry.lookup(token)
        if found is None:
            raise Outcome(codes.CHECK_TOKEN_ERROR)
        device, expired = found
        if expired:
            raise Outcome(codes.TOKEN_EXPIRED, info={"messageId": self.state.store.next_id()})
        return device


def _check_auth_params(params):
    """Types and presence of /auth fields (10001); extra fields are signed, so must be text or numbers."""
    for name in REQUIRED_AUTH_FIELDS:
        if type(params.get(name)) is not str or not params[name]:
            raise Outcome(codes.PARAM_ERROR, f"{name} is required and must be a non-empty string")
    if len(params["clientId"]) > MAX_CLIENT_ID_CHARS:
        raise Outcome(codes.PARAM_ERROR, f"clientId is longer than {MAX_CLIENT_ID_CHARS} characters")
    for name in OPTIONAL_TEXT_FIELDS:
        if name in params and type(params[name]) is not str:
            raise Outcome(codes.PARAM_ERROR, f"{name} must be a string")
    for name, value in params.items():
        if not isinstance(value, str):
            raise Outcome(codes.PARAM_ERROR, f"{name} must be a string or a number")
        if not _is_text(name) or not _is_text(value):  # signed as UTF-8: a lone surrogate cannot be
            raise Outcome(codes.PARAM_ERROR, "names and values must be Unicode text (no lone surrogates)")
    timestamp = params.get("timestamp")
    if timestamp is not None and not _is_number(timestamp):
        raise Outcome(codes.PARAM_ERROR, "timestamp must be milliseconds since the epoch")


def _is_text(value):
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_number(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def make_app(state, access=None, request_timeout=REQUEST_TIMEOUT_SECONDS):
    """The aiohttp application: the device channel, the admin API and the console on one listener.

    access is the admin API's AdminAccess (a new token, loopback only, by default).
    """
    access = access or AdminAccess()
    app = web.Application(client_max_size=MAX_PAYLOAD_BYTES)
    channel = DeviceChannel(state, request_timeout)
    app.router.add_route("*", AUTH_PATH, channel.auth)
    app.router.add_route("*", TOPIC_PATH_PREFIX, channel.topic)
    app.router.add_route("*", TOPIC_PATH_PREFIX + "/{topic:.*}", channel.topic)
    admin.add_routes(app, state, access, request_timeout)
    console.add_routes(app, state, access)
    app.cleanup_ctx.append(_sample_traffic(state))
    return app


def _sample_traffic(state):
    """While the app runs, the traffic history takes a sample of the counters every second."""
    async def sampling(app):
        async def every_second():
            while True:
                state.traffic.sample()
                await asyncio.sleep(1)
        task = asyncio.create_task(every_second())
        yield
        task.cancel()
    return sampling


def runner_options(idle_timeout=IDLE_TIMEOUT_SECONDS, request_timeout=REQUEST_TIMEOUT_SECONDS):
    """aiohttp's AppRunner options for the emulator: the bounds above, and bodies taken as sent.

    aiohttp's keep-alive timer runs from a connection's start and from each reply until the next
    request's headers are in, so it bounds both an idle connection and headers sent slowly. The rest
    of a body answered unread (too large, too slow) is drained so that the client can read the reply,
    for at most aiohttp's 10 s or the request timeout. Content-Encoding is not decoded (a malformed
    or huge gzip body cannot hurt; it is answered 10001).
    """
    return {"access_log": None, "handle_signals": False, "keepalive_timeout": idle_timeout,
            "lingering_time": min(LINGER_SECONDS, request_timeout), "max_line_size": MAX_HEADER_LINE_BYTES,
            "max_field_size": MAX_HEADER_LINE_BYTES, "max_headers": MAX_HEADERS, "auto_decompress": False}
