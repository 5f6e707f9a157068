"""Client CPU per HTTPS request: IoTPlatformClient.authenticate and publish against the emulator.

    python -m benchmarks.client_request_cpu [--requests 2000] [--repeat 3]

The emulator runs in a subprocess on 127.0.0.1 (its throttling raised out of the way); this process
makes the requests one after another on one keep-alive connection and reports the CPU time of this
process (user + system) per request, the best of --repeat rounds, for /auth, a 100-byte publish and
an 80 KB publish. Wall time includes the emulator's share of the machine's cores.
"""
import argparse
import json
import os
import time

from connector.client.http import IoTPlatformClient
from connector.emulator import Emulator, make_devices
from connector.protocol.device import Device


def _cpu():
    times = os.times()
    return times.user + times.system


def measure(call, n):
    wall, cpu = time.perf_counter(), _cpu()
    for i in range(n):
        call(i)
    return (_cpu() - cpu) / n * 1000, (time.perf_counter() - wall) / n * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", help="where to write the figures")
    args = parser.parse_args()
    fleet = make_devices(50, product_key="a1BenchClient", prefix="cpu")
    device = Device(fleet[0]["productKey"], fleet[0]["deviceName"])
    topic = f"/{device.product_key}/{device.device_name}/user/update"
    small, large = b"x" * 100, os.urandom(80 * 1024)
    with Emulator(fleet, device_qps=1_000_000, account_qps=1_000_000) as emulator:
        with IoTPlatformClient(emulator.endpoint, ca_file=emulator.ca_file) as client:
            token = client.authenticate(device, fleet[0]["deviceSecret"])
            cases = {
                "auth": lambda i: client.authenticate(device, fleet[0]["deviceSecret"]),
                "publish_100B": lambda i: client.publish(token, topic, small),
                "publish_80KB": lambda i: client.publish(token, topic, large),
            }
            figures = {}
            for name, call in cases.items():
                call(0)  # the connection is open and warm
                runs = []
                for _ in range(args.repeat):
                    runs.append(measure(call, args.requests if name != "publish_80KB" else args.requests // 4))
                    emulator.reset()
                cpu_ms, wall_ms = min(runs)
                figures[name] = {"client_cpu_ms": round(cpu_ms, 3), "wall_ms": round(wall_ms, 3),
                                 "runs_cpu_ms": [round(r[0], 3) for r in runs]}
                print(f"{name:14s} client CPU {cpu_ms:.3f} ms/request, wall {wall_ms:.3f} ms/request "
                      f"(runs: {', '.join(f'{r[0]:.3f}' for r in runs)})")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(figures, out, indent=1)


if __name__ == "__main__":
    main()
