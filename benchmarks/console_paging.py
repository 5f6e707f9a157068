"""Milliseconds per console page (50 messages, newest first) with 10 and with 1,000,000 stored messages:
the first page, a page deep in the log, and one device's newest page.

Run from the repository root: python -m benchmarks.console_paging
"""
import asyncio
import functools
import time

from connector.emulator.store import MessageStore
from connector.protocol.device import Device

DEVICES = [Device("a1B2c3D4e5F", f"sensor-{i:03d}") for i in range(100)]
PAGE = 50
REPEATS = 200


def filled(count):
    async def fill():
        store = MessageStore()
        for i in range(count):
            device = DEVICES[i % len(DEVICES)]
            await store.add(device, f"/{device.product_key}/{device.device_name}/user/update", b"x" * 200)
        return store
    return asyncio.run(fill())


def milliseconds(page):
    start = time.perf_counter()
    for _ in range(REPEATS):
        page()
    return (time.perf_counter() - start) / REPEATS * 1000


def main():
    for count in (10, 1_000_000):
        store = filled(count)
        middle = store.page(limit=count // 2)[0][-1].message_id
        pages = {"first page": dict(limit=PAGE), "page from the middle": dict(before=middle, limit=PAGE),
                 "one device's first page": dict(device=DEVICES[3], limit=PAGE)}
        figures = {name: milliseconds(functools.partial(store.page_newest, **query)) for name, query in pages.items()}
        print(f"{count:>9,} messages: " + ", ".join(f"{name} {ms:.3f} ms" for name, ms in figures.items()))


if __name__ == "__main__":
    main()
