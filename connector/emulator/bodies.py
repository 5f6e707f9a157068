"""Request bodies read within bounds: at most so many bytes, within so many seconds.

A client on a shared machine may send a huge body, or a body one byte a minute; neither may hold the
emulator's memory or a connection for long. The body a small request sends with its headers is
already here: it is taken without arming a timer, which keeps the device channel's fast path fast.
"""
import asyncio


class BodyTooLarge(Exception):
    """The body is larger than the limit (with a Content-Length, nothing of it was read)."""


async def read_body(request, limit, timeout):
    """The whole body of a request, as bytes.

    Raises:
        BodyTooLarge: larger than limit bytes.
        TimeoutError: the body did not arrive within timeout seconds.
        asyncio.IncompleteReadError: the client hung up in the middle of it.
    """
    length, content = request.content_length, request.content
    if length is not None:
        if length > limit:
            raise BodyTooLarge
        if not length:
            return b""
        if content.total_bytes >= length:  # arrived with the headers: no wait, no timer
            return await content.readexactly(length)
    async with asyncio.timeout(timeout):
        if length is not None:  # read in one piece, sparing a copy of 128 KB payloads
            return await content.readexactly(length)
        body = bytearray()  # chunked: stop as soon as it is too large
        async for chunk in content.iter_any():
            body += chunk
            if len(body) > limit:
                raise BodyTooLarge
        return bytes(body)


def reject_constant(name):
    """json.loads' parse_constant that refuses NaN and Infinity, which JSON does not have."""
    raise ValueError(f"{name} is not JSON")
