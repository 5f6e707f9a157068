"""python -m connector.emulator --devices FILE ...: serve the emulated device channel over HTTPS.

Prints one JSON line {"endpoint", "ca_file", "console"} on stdout once it accepts connections; stops cleanly
(exit 0) on SIGINT or SIGTERM.
"""
import argparse
import asyncio
import contextlib
import json
import logging
import shutil
import signal
import sys
import tempfile

from aiohttp import web

from .console import UI_PATH
from .products import parse_products
from .registry import parse_devices
from .server import make_app
from .state import EmulatorState
from .tls import ensure_certificates, server_context

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m connector.emulator", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devices", required=True, help="JSON list of {productKey, deviceName, deviceSecret}, "
                        "or {\"devices\": [...], \"products\": [{productKey, topicCategories}]}")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--endpoint-host", help="host name in the printed endpoint, e.g. localhost")
    parser.add_argument("--token-ttl", type=float, help="token lifetime in seconds (default 7 days)")
    parser.add_argument("--device-qps", type=float, help="messages per second per device (default 30)")
    parser.add_argument("--account-qps", type=float, help="requests per second for all devices (default 10000)")
    parser.add_argument("--latency-ms", type=float, default=0, help="added to every device-channel reply")
    parser.add_argument("--clock-offset", type=float, default=0.0,
                        help="seconds added to the server's clock in /auth's timestamp check (to test clock skew)")
    parser.add_argument("--db", help="SQLite file: messages survive restarts")
    parser.add_argument("--cert-dir", help="where to keep the generated CA and server certificate")
    parser.add_argument("--cert", help="server certificate (PEM), instead of generating one")
    parser.add_argument("--key", help="server private key (PEM), with --cert")
    parser.add_argument("--ca-file", help="CA that signed --cert, printed for clients")
    parser.add_argument("--admin-anywhere", action="store_true", help="admin API answers non-loopback clients")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG logs one line per request")
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key) or (args.cert and not args.ca_file):
        parser.error("--cert, --key and --ca-file go together")
    return args


def load_devices_file(path):
    """(devices, products) from a devices file: a JSON list of devices, or an object that also declares
    products' topic categories. ValueError says what is wrong."""
    with open(path, encoding="utf-8") as f:
        content = json.load(f)
    if not isinstance(content, dict):
        return parse_devices(content), {}
    unknown = set(content) - {"devices", "products"}
    if unknown:
        raise ValueError(f"{path}: unknown keys {sorted(unknown)}; a devices file holds devices and products")
    return parse_devices(content.get("devices")), parse_products(content.get("products", []))


def _certificates(args, stack):
    """(ca, cert, key) paths: given ones, or generated into --cert-dir or a temporary directory."""
    if args.cert:
        return args.ca_file, args.cert, args.key
    cert_dir = args.cert_dir
    if cert_dir is None:
        cert_dir = tempfile.mkdtemp(prefix="iot-emulator-")
        stack.callback(shutil.rmtree, cert_dir, ignore_errors=True)
    names = ["localhost", "127.0.0.1"] + [h for h in (args.host, args.endpoint_host) if h not in WILDCARD_HOSTS]
    return ensure_certificates(cert_dir, hosts=tuple(dict.fromkeys(n for n in names if n)))


async def serve(args):
    devices, products = load_devices_file(args.devices)
    state = EmulatorState(devices, products=products, token_ttl=args.token_ttl, device_qps=args.device_qps,
                          account_qps=args.account_qps, latency_ms=args.latency_ms, db=args.db,
                          clock_offset=args.clock_offset)
    with contextlib.ExitStack() as stack:
        stack.callback(state.store.close)
        ca_file, cert_file, key_file = _certificates(args, stack)
        runner = web.AppRunner(make_app(state, args.admin_anywhere), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, args.host, args.port, ssl_context=server_context(cert_file, key_file),
                               backlog=1024, reuse_address=True)
            await site.start()
            port = runner.addresses[0][1]
            host = args.endpoint_host or ("127.0.0.1" if args.host in WILDCARD_HOSTS else args.host)
            if ":" in host:
                host = f"[{host}]"
            stop = asyncio.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                asyncio.get_running_loop().add_signal_handler(signum, stop.set)
            endpoint = f"https://{host}:{port}"
            print(json.dumps({"endpoint": endpoint, "ca_file": ca_file, "console": endpoint + UI_PATH}), flush=True)
            await stop.wait()
        finally:
            await runner.cleanup()


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
