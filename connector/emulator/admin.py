"""The admin API under /_emulator/: what tests read and change. JSON in, JSON out.

It answers loopback clients only (unless allowed anywhere) and never shows secrets or tokens.
"""
import base64
import functools
import ipaddress
import json

from aiohttp import web

from connector.protocol.device import Device

from .products import parse_products
from .registry import parse_devices

PREFIX = "/_emulator"
MAX_PAGE = 10_000
DEFAULT_PAGE = 1_000


def is_loopback(address):
    """Whether a peer address (IPv4, IPv6 or IPv4-mapped IPv6) is a loopback address."""
    try:
        ip = ipaddress.ip_address(address)
    except (TypeError, ValueError):
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


class BadRequest(ValueError):
    """An admin request that cannot be served as asked; its message says why."""


def guarded(state, allow_remote, handler):
    """Guard, count and answer an admin handler: 403 off loopback, 400 on bad input."""
    @functools.wraps(handler)
    async def answer(request):
        if not allow_remote and not is_loopback(request.remote):
            response = web.json_response({"error": "the admin API answers loopback clients only"}, status=403)
        else:
            try:
                response = web.json_response(await handler(state, request))
            except ValueError as error:  # BadRequest, and invalid faults, limits or devices
                response = web.json_response({"error": str(error)}, status=400)
        state.requests["admin", str(response.status)] += 1
        return response
    return answer


async def _json_body(request):
    try:
        return json.loads(await request.content.read())  # admin bodies may exceed the device limit
    except ValueError:
        raise BadRequest("body must be JSON") from None


def int_param(request, name, default, low, high):
    text = request.query.get(name)
    if text is None:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
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


async def list_devices(state, request):
    return {"devices": [{"productKey": d.product_key, "deviceName": d.device_name}
                        for d in state.registry.devices()]}


async def add_devices(state, request):
    added = parse_devices(await _json_body(request))
    state.registry.add(added)
    return {"added": len(added), "devices": len(state.registry)}


async def list_products(state, request):
    return {"products": state.products.as_list()}


async def add_products(state, request):
    added = parse_products(await _json_body(request))
    state.products.add(added)
    return {"added": len(added)}


async def expire_tokens(state, request):
    state.registry.expire_all()
    return {"expired": True}


async def get_faults(state, request):
    return state.faults.as_dict()


async def set_faults(state, request):
    spec = await _json_body(request)
    if not isinstance(spec, dict):
        raise BadRequest("faults must be a JSON object")
    state.faults.configure(spec)
    return state.faults.as_dict()


async def get_limits(state, request):
    return state.limits()


async def set_limits(state, request):
    changes = await _json_body(request)
    if not isinstance(changes, dict):
        raise BadRequest("limits must be a JSON object")
    state.set_limits(changes)
    return state.limits()


async def reset(state, request):
    state.reset()
    return {"reset": True}


ROUTES = [
    ("GET", "/messages", messages),
    ("GET", "/counters", counters),
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


def add_routes(app, state, allow_remote=False):
    for method, path, handler in ROUTES:
        app.router.add_route(method, PREFIX + path, guarded(state, allow_remote, handler))
