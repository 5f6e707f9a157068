"""The console at /_emulator/ui: a page to watch messages arrive and steer the emulator.

Static files (HTML, CSS, JavaScript modules) come from the package's console/ directory; nothing is
built or fetched. The page reads and changes the emulator through the admin API, plus the two JSON
views here that page over devices and messages on the server so they stay fast with 10,000 devices
and a million messages. Like the admin API it answers loopback clients only (unless --admin-anywhere);
the page learns the run's admin token from the address the emulator prints (?token=...).
"""
import mimetypes
import os

from aiohttp import web

from connector.protocol.device import Device

from . import admin, payloads

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "console")
UI_PATH = admin.PREFIX + "/ui"
MAX_PAGE = 500
# Scripts, styles and images from the emulator only: a payload that slipped into the page unescaped
# still could not run anything.
# No page may frame it, and the address it was opened with (it holds the token) is never sent on.
_HEADERS = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                                       "form-action 'none'; base-uri 'none'",
            "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "DENY"}


def _static_files():
    """{name: (content type, bytes)} of the console's files, read once."""
    files = {}
    for name in os.listdir(STATIC_DIR):
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".js"):
            content_type = "text/javascript"  # modules need a JavaScript type, whatever the system's table says
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            files[name] = (content_type, f.read())
    return files


def _device_param(request):
    text = request.query.get("device")
    if not text:
        return None
    product_key, _, device_name = text.partition("/")
    return Device(product_key, device_name)


async def devices(state, request):
    """A page of devices sorted by product and name, with their message totals; q filters by substring."""
    query = request.query.get("q", "").strip().lower()
    offset = admin.int_param(request, "offset", 0, 0, 10**9)
    limit = admin.int_param(request, "limit", 50, 1, MAX_PAGE)
    matching = sorted(d for d in state.registry.devices() if query in f"{d.product_key}/{d.device_name}".lower())
    live = state.registry.live_token_holders()
    rows = []
    for device in matching[offset:offset + limit]:
        totals = state.store.totals(device)
        rows.append({"productKey": device.product_key, "deviceName": device.device_name,
                     "liveToken": device in live, "messages": totals.messages if totals else 0,
                     "bytes": totals.bytes if totals else 0,
                     "lastMessageAt": int(totals.last_at * 1000) if totals else None})
    return {"devices": rows, "total": len(matching), "offset": offset}


async def messages(state, request):
    """A page of messages newest first, decoded; messageIds as strings (JavaScript's numbers would round
    them). Pass `next` as `before` for older messages."""
    before = admin.int_param(request, "before", None, 0, 2**63)
    limit = admin.int_param(request, "limit", 50, 1, MAX_PAGE)
    topic = request.query.get("topic") or None
    page, following = state.store.page_newest(_device_param(request), topic, before, limit)
    return {"messages": [{"messageId": str(m.message_id), "productKey": m.device.product_key,
                          "deviceName": m.device.device_name, "topic": m.topic, "size": len(m.payload),
                          "receivedAt": int(m.received_at * 1000), **payloads.decode(m.payload)}
                         for m in page],
            "next": None if following is None else str(following), "stored": len(state.store)}


def add_routes(app, state, access):
    files = _static_files()

    async def static(request):
        if not access.may_serve_page(request):
            return web.Response(status=403, text="the console answers loopback clients only")
        found = files.get(request.match_info.get("name") or "index.html")
        if found is None:
            return web.Response(status=404, text="no such console file")
        content_type, body = found
        return web.Response(body=body, content_type=content_type, headers=_HEADERS)

    app.router.add_get(UI_PATH, static)
    app.router.add_get(UI_PATH + "/{name}", static)
    app.router.add_get(admin.PREFIX + "/console/devices", admin.guarded(state, access, devices))
    app.router.add_get(admin.PREFIX + "/console/messages", admin.guarded(state, access, messages))
