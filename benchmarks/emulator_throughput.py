"""How fast the emulator serves publishes, against the best its stack does on this machine.

Starts the emulator in a subprocess, drives it from load-generator processes over TLS keep-alive
connections (raw sockets: the cheapest client Python has, so the server is what is measured), and
prints requests/s for small (100 B) and 128 KB publishes plus the emulator's CPU seconds. The same load
against a bare aiohttp.web TLS server that answers a constant JSON reply is the baseline.

On a machine with few cores the load generator competes with the server for CPU: requests per
CPU-second of the server process is then the per-core figure. Only 127.0.0.1 is ever contacted.

    python benchmarks/emulator_throughput.py [--seconds 5] [--processes 2] [--connections 4]
"""
import argparse
import asyncio
import json
import multiprocessing
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

import psutil

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from connector.emulator import Emulator, make_devices  # noqa: E402
from connector.emulator.tls import ensure_certificates, server_context  # noqa: E402
from connector.protocol.signing import sign  # noqa: E402

SMALL, LARGE = 100, 131_072


class RawConnection:
    """One TLS keep-alive connection that sends prepared request bytes and reads one reply each."""

    def __init__(self, port, ca_file):
        context = ssl.create_default_context(cafile=ca_file)
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port)), server_hostname="localhost")
        self.buffer = b""

    def exchange(self, request):
        self.sock.sendall(request)
        while b"\r\n\r\n" not in self.buffer:
            self._receive()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
        while len(self.buffer) < length:
            self._receive()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body

    def _receive(self):
        chunk = self.sock.recv(262_144)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buffer += chunk


def _request(path, headers, body):
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", f"Content-Length: {len(body)}", *headers, "", ""]
    return "\r\n".join(lines).encode() + body


def _token(connection, device):
    params = {"productKey": device["productKey"], "deviceName": device["deviceName"], "clientId": "bench"}
    params.update(sign=sign(device["deviceSecret"], params, "hmacsha1"), signmethod="hmacsha1")
    reply = connection.exchange(_request("/auth", ["Content-Type: application/json"], json.dumps(params).encode()))
    return json.loads(reply)["info"]["token"]


def _drive(port, ca_file, device, payload_size, count, deadline, results):
    """One connection: authenticate, then publish until count or deadline; appends (sent, failures)."""
    sent = failures = 0
    try:
        connection = RawConnection(port, ca_file)
        request = _request(f"/topic/{device['productKey']}/{device['deviceName']}/user/update",
                           ["Content-Type: application/octet-stream", f"password: {_token(connection, device)}"],
                           b"x" * payload_size)
        while sent < count and time.monotonic() < deadline:
            failures += not connection.exchange(request).startswith(b'{"code":0')
            sent += 1
    except (OSError, ValueError, KeyError) as error:
        print(f"load connection failed after {sent} requests: {error!r}", file=sys.stderr)
        failures += 1
    results.append((sent, failures))


def _load_process(port, ca_file, devices, payload_size, count, seconds, queue):
    deadline = time.monotonic() + seconds
    results = []
    threads = [threading.Thread(target=_drive, args=(port, ca_file, d, payload_size, count, deadline, results))
               for d in devices]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put((sum(s for s, _ in results), sum(f for _, f in results)))


def measure(pid, port, ca_file, devices, payload_size, total, seconds, processes):
    """(requests/s, failures, server CPU seconds) of one load run with len(devices) connections."""
    server = psutil.Process(pid)
    queue = multiprocessing.Queue()
    per_process = [devices[i::processes] for i in range(processes)]
    per_connection = max(1, total // len(devices))
    workers = [multiprocessing.Process(target=_load_process, args=(port, ca_file, group, payload_size,
                                                                   per_connection, seconds, queue))
               for group in per_process]
    cpu_before, started = sum(server.cpu_times()[:2]), time.monotonic()
    for worker in workers:
        worker.start()
    outcomes = [queue.get() for _ in workers]
    elapsed, cpu = time.monotonic() - started, sum(server.cpu_times()[:2]) - cpu_before
    for worker in workers:
        worker.join()
    sent = sum(s for s, _ in outcomes)
    return {"requests": sent, "failures": sum(f for _, f in outcomes), "seconds": round(elapsed, 2),
            "requests_per_s": round(sent / elapsed), "server_cpu_s": round(cpu, 2),
            "requests_per_cpu_s": round(sent / cpu) if cpu else None,
            "MB_per_s": round(sent * payload_size / elapsed / 1e6, 1),
            "MB_per_cpu_s": round(sent * payload_size / cpu / 1e6, 1) if cpu else None}


def baseline_server(cert_dir):
    """A bare aiohttp.web TLS server that reads the body and answers a constant JSON reply."""
    from aiohttp import web

    def constant(body):
        async def handler(request):
            await request.read()
            return web.Response(body=body, content_type="application/json")
        return handler

    async def serve():
        app = web.Application(client_max_size=LARGE)
        app.router.add_post("/auth", constant(b'{"code":0,"message":"success","info":{"token":"%s"}}' % (b"0" * 32)))
        app.router.add_post("/topic/{topic:.*}", constant(b'{"code":0,"message":"success","info":{"messageId":1}}'))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        ca_file, cert_file, key_file = ensure_certificates(cert_dir)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(cert_file, key_file))
        await site.start()
        print(json.dumps({"port": runner.addresses[0][1], "ca_file": ca_file}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


class _Baseline:
    """The baseline server in a subprocess, shaped like Emulator for measure()."""

    def __init__(self, cert_dir):
        self.process = subprocess.Popen([sys.executable, __file__, "--baseline-server", cert_dir],
                                        stdout=subprocess.PIPE)
        announcement = json.loads(self.process.stdout.readline())
        self.pid, self.port, self.ca_file = self.process.pid, announcement["port"], announcement["ca_file"]

    def close(self):
        self.process.terminate()
        self.process.wait()


def run(args):
    devices = make_devices(args.processes * args.connections, product_key="pkBench")
    limits = {"device_qps": 1e9, "account_qps": 1e9}
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        targets = [("baseline (bare aiohttp TLS)", None), ("emulator (memory)", None),
                   ("emulator (--db)", os.path.join(scratch, "bench.db"))]
        for name, db in targets:
            if name.startswith("baseline"):
                server = _Baseline(os.path.join(scratch, "certs"))
                stop, pid, port, ca_file = server.close, server.pid, server.port, server.ca_file
            else:
                server = Emulator(devices, db=db, **limits).start()
                stop, pid, port, ca_file = server.close, server.pid, server.port, server.ca_file
            try:
                for size, total in ((SMALL, args.small_count), (LARGE, args.large_count)):
                    if db and size == LARGE and not args.large_db:
                        continue
                    result = measure(pid, port, ca_file, devices, size, total, args.seconds, args.processes)
                    rows.append({"server": name, "payload_bytes": size, **result})
                    print(json.dumps(rows[-1]), flush=True)
                    if not name.startswith("baseline"):
                        server.reset()  # 128 KB payloads pile up in memory otherwise
            finally:
                stop()
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5, help="time bound of each run")
    parser.add_argument("--small-count", type=int, default=100_000, help="request bound of each small run")
    parser.add_argument("--large-count", type=int, default=4_000, help="request bound of each 128 KB run")
    parser.add_argument("--processes", type=int, default=2, help="load-generator processes")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections per process")
    parser.add_argument("--large-db", action="store_true", help="also 128 KB publishes with --db")
    parser.add_argument("--baseline-server", metavar="CERT_DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        return baseline_server(args.baseline_server)
    run(args)


if __name__ == "__main__":
    main()
