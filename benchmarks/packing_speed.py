"""Records per second for encode + pack of 200,000 ~200-byte dict records (jsonl, alink-history).

Run from the repository root: python -m benchmarks.packing_speed
"""
import time

from connector.beam.encoders import get_encoder
from connector.beam.packing import pack
from connector.protocol.device import Device

DEVICE = Device("a1B2c3D4e5F", "sensor-01")
COUNT = 200_000


def reading(i):
    return {"time": 1524448722000 + i, "temperature": 21.5 + i % 10, "humidity": 40.1, "status": "ok",
            "site": "plant-7/line-3", "note": "n" * 95 + str(i)}


def measure(name, records):
    encoder = get_encoder(name)
    start = time.perf_counter()
    payloads = sum(1 for _ in pack(encoder, DEVICE, ((r, encoder.encode(r)) for r in records)))
    elapsed = time.perf_counter() - start
    size = len(encoder.encode(records[0]))
    print(f"{name:14} {COUNT / elapsed:>10,.0f} records/s  ({size}-byte fragments, {payloads} payloads)")


def main():
    records = [reading(i) for i in range(COUNT)]
    for name in ("jsonl", "alink-history"):
        measure(name, records)


if __name__ == "__main__":
    main()
