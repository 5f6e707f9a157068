"""The admin API under /_emulator/: what tests read and change. JSON in, JSON out.

Every route goes through connector.emulator.access first (loopback or --admin-anywhere, same origin,
and for changes the run's admin token and a JSON body); it never shows secrets or tokens.
"""
import asyncio
import base64
import functools
import json

from aiohttp import web

from connector.protocol.device import Device

from .access import Refused, is_loopback
from .bodies import BodyTooLarge, read_body, reject_constant
from .products import parse_products
from .registry import parse_devices

__all__ = ["PREFIX", "add_routes", "guarded", "int_param", "is_loopback"]

PREFIX = "/_emulator"
MAX_PAGE = 10_000
DEFAULT_PAGE = 1_000
# Enough for 50,000 devices in one request (Emulator.add_devices sends more in several); a bound, so
# that no client can make the emulator hold an arbitrary body in memory.
MAX_BODY_BYTES = 8 * 1024 * 1024


class BadRequest(ValueError):
    """An admin request that cannot be served as asked; its message says why."""


def guarded(state, access, handler, changes=False, timeout=30):
    """Check, count and answer an admin handler: 403/415 refused by access, 413 on a body too large,
    408 on one too slow, 400 on bad input. A change's handler gets its JSON body as a third argument."""
    @functools.wraps(handler)
    async def answer(request):
        try:
            access.check(request, changes)
            arguments = (state, request, await _json_body(request, timeout)) if changes else (state, request)
            response = web.json_response(await handler(*arguments))
        except Refused as refused:
            response = web.json_response({"error": refused.reason}, status=refused.status)
            if refused.status == 408:
                response.force_close()  # a client this slow is not waited for again on this connection
        except ValueError as error:  # BadRequest, and invalid faults, limits or devices
            response = web.json_response({"error": str(error)}, status=400)
        state.requests["admin", str(response.status)] += 1
        return response
    return answer


async def _json_body(request, timeout):
    try:
        body = await read_body(request, MAX_BODY_BYTES, timeout)
    except BodyTooLarge:
        raise Refused(413, f"an admin request body holds at most {MAX_BODY_BYTES} bytes") from None
    except TimeoutError:
        raise Refused(408, f"the body did not arrive within {timeout} s") from None
    except asyncio.IncompleteReadError:  # the client hung up in the middle of it: it reads no reply
        raise Refused(400, "the body ended before its Content-Length") from None
    try:
        return json.loads(body, parse_constant=reject_constant) if body else {}
    except (ValueError, RecursionError):  # also UnicodeDecodeError; RecursionError: nested too deep
        raise BadRequest("body must be JSON (UTF-8, nested less than a few hundred levels)") from None


def int_param(request, name, default, low, high):
    text = request.query.get(name)
    if text is None:
        return default
    if not (text.isascii() and text.isdecimal()) or len(text) > 20 or not low <= int(text) <= high:
        raise BadRequest(f"{name} must be an integer from {low} to {high}")
    return int(text)


def _message_json(message):
    return {
        "messageId": message.message_id,
        "messageIdStr": str(message.message_id),
        "productKey": message.device.product_key,
        "deviceName": message.device.device_name,
        "topic": message.topic,
        "payload_b64": base64.b64encode(message.payload).decode("ascii"),
        "receivedAt": int(message.received_at * 1000),
    }


async def messages(state, request):
    """One page of stored messages, oldest first; pass `next` as `after` for the following page."""
    device = request.query.get("device")
    if device is not None:
        product_key, _, device_name = device.partition("/")
        device = Device(product_key, device_name)
    after = int_param(request, "after", None, 0, 2**63)
    limit = int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    page, following = state.store.page(device, request.query.get("topic"), after, limit)
    return {"messages": [_message_json(m) for m in page], "next": None if following is None else str(following)}


async def counters(state, request):
    return state.counters()


async def traffic(state, request):
    """The device channel's counters sampled every second over the last two minutes, oldest first."""
    return state.traffic.as_json()


async def list_devices(state, request):
    return {"devices": [{"productKey": d.product_key, "deviceName": d.device_name}
                        for d in state.registry.devices()]}


async def add_devices(state, request, body):
    added = parse_devices(body)
    state.registry.add(added)
    return {"added": len(added), "devices": len(state.registry)}


async def list_products(state, request):
    return {"products": state.products.as_list()}


async def add_products(state, request, body):
    added = parse_products(body)
    state.products.add(added)
    return {"added": len(added)}


async def expire_tokens(state, request, body):
    state.registry.expire_all()
    return {"expired": True}


async def get_faults(state, request):
    return state.faults.as_dict()


async def set_faults(state, request, body):
    if not isinstance(body, dict):
        raise BadRequest("faults must be a JSON object")
    state.faults.configure(body)
    return state.faults.as_dict()


async def get_limits(state, request):
    return state.limits()


async def set_limits(state, request, body):
    if not isinstance(body, dict):
        raise BadRequest("limits must be a JSON object")
    state.set_limits(body)
    return state.limits()


async def reset(state, request, body):
    """Messages, counts, faults and limits as at start; with {"products": true} products' topic
    categories too."""
    if not isinstance(body, dict) or set(body) - {"products"} or not isinstance(body.get("products", False), bool):
        raise BadRequest('reset takes {} or {"products": true} (also forget the topic categories declared since start)')
    state.reset(products=body.get("products", False))
    return {"reset": True}


ROUTES = [
    ("GET", "/messages", messages),
    ("GET", "/counters", counters),
    ("GET", "/traffic", traffic),
    ("GET", "/devices", list_devices),
    ("POST", "/devices", add_devices),
    ("GET", "/products", list_products),
    ("POST", "/products", add_products),
    ("POST", "/tokens/expire", expire_tokens),
    ("GET", "/faults", get_faults),
    ("POST", "/faults", set_faults),
    ("GET", "/limits", get_limits),
    ("POST", "/limits", set_limits),
    ("POST", "/reset", reset),
]


def add_routes(app, state, access, timeout):
    for method, path, handler in ROUTES:
        app.router.add_route(method, PREFIX + path, guarded(state, access, handler, method == "POST", timeout))
