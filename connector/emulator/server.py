"""The device channel: POST /auth and POST /topic/${topic}, answered as the platform answers them.

Business errors are HTTP 200 with {"code", "message", "info"}; messages start with the official text
from connector.protocol.codes and may add a detail after ": ". The request path stays lean: no JSON
parsing of payloads, no logging work unless debug is on.
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

log = logging.getLogger("connector.emulator")

MAX_AUTH_REPLY_BYTES = 255  # the legacy C SDK reads the /auth reply into a 256-byte buffer
REQUIRED_AUTH_FIELDS = ("productKey", "deviceName", "clientId", "sign")
OPTIONAL_TEXT_FIELDS = ("signmethod", "version")
_PUBLISHED = b'{"code":0,"message":"success","info":{"messageId":%d}}'


class JsonNumber(str):
    """A JSON number kept as the text the client sent: a numeric timestamp is signed as that text."""


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _parse_auth_body(body):
    return json.loads(body, parse_int=JsonNumber, parse_float=JsonNumber, parse_constant=_reject_constant)


async def _read_body(request):
    """The request body, or None when it is larger than the platform takes (not read into memory).

    With a Content-Length the body is read in one piece, sparing a copy of 128 KB payloads.
    """
    length = request.content_length
    if length is None:
        try:
            return await request.read()  # chunked: aiohttp stops at client_max_size
        except web.HTTPRequestEntityTooLarge:
            return None
    if length > MAX_PAYLOAD_BYTES:
        return None
    return await request.content.readexactly(length) if length else b""


def _media_type(request):
    """The Content-Type without parameters, lower case; None when absent (aiohttp would default it)."""
    value = request.headers.get("Content-Type")
    return None if value is None else value.split(";", 1)[0].strip().lower()


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
    def __init__(self, state):
        self.state = state
        self._debug = log.isEnabledFor(logging.DEBUG)

    async def auth(self, request):
        return await self._serve(request, "auth", self._authenticate)

    async def topic(self, request):
        return await self._serve(request, "topic", self._publish)

    async def _serve(self, request, endpoint, handle):
        """What both endpoints share: body limit, account throttling, faults, latency, counting."""
        state, faults = self.state, self.state.faults
        try:
            body = await _read_body(request)
        except asyncio.IncompleteReadError:  # the client hung up in the middle of its body
            return self._drop(request, endpoint)
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
        if _media_type(request) != AUTH_CONTENT_TYPE:
            raise Outcome(codes.PARAM_ERROR, f"Content-Type must be {AUTH_CONTENT_TYPE}")
        try:
            params = _parse_auth_body(body)
        except ValueError:  # also UnicodeDecodeError
            raise Outcome(codes.PARAM_ERROR, "body must be a JSON object") from None
        if not isinstance(params, dict):
            raise Outcome(codes.PARAM_ERROR, "body must be a JSON object")
        _check_auth_params(params)
        method = params.get("signmethod", DEFAULT_SIGN_METHOD).lower()
        if method not in SIGN_METHODS:
            raise Outcome(codes.PARAM_ERROR, f"signmethod must be one of {', '.join(SIGN_METHODS)}")
        device = Device(params["productKey"], params["deviceName"])
        secret = self.state.registry.secret(device)
        if secret is None or not signature_matches(secret, params, method, params["sign"]):
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
        if _media_type(request) != PUBLISH_CONTENT_TYPE:
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
    timestamp = params.get("timestamp")
    if timestamp is not None and not _is_number(timestamp):
        raise Outcome(codes.PARAM_ERROR, "timestamp must be milliseconds since the epoch")


def _is_number(text):
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def make_app(state, admin_anywhere=False):
    """The aiohttp application: the device channel, the admin API and the console on one listener."""
    app = web.Application(client_max_size=MAX_PAYLOAD_BYTES)
    channel = DeviceChannel(state)
    app.router.add_route("*", AUTH_PATH, channel.auth)
    app.router.add_route("*", TOPIC_PATH_PREFIX, channel.topic)
    app.router.add_route("*", TOPIC_PATH_PREFIX + "/{topic:.*}", channel.topic)
    admin.add_routes(app, state, allow_remote=admin_anywhere)
    console.add_routes(app, state, allow_remote=admin_anywhere)
    return app
