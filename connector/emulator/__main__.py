"""python -m connector.emulator --devices FILE ...: serve the emulated device channel over HTTPS.

Prints one JSON line {"endpoint", "ca_file", "console", "admin_token"} on stdout once it accepts
connections; stops cleanly (exit 0) on SIGINT or SIGTERM. Open the console address (it carries this
run's admin token) in a browser on this machine; a client of the admin API sends the token in the
X-Emulator-Token header to change anything.
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

from .access import TOKEN_PARAM, AdminAccess
from .console import UI_PATH
from .products import parse_products
from .registry import parse_devices
from .server import IDLE_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS, make_app, runner_options
from .state import EmulatorState
from .tls import ensure_certificates, server_context

WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def make_parser():
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
    parser.add_argument("--cert-dir", help="where to keep the generated CA and server certificate across runs "
                        "(for clients that compile the CA in); a new temporary one each run by default")
    parser.add_argument("--cert", help="server certificate (PEM), instead of generating one")
    parser.add_argument("--key", help="server private key (PEM), with --cert")
    parser.add_argument("--ca-file", help="CA that signed --cert, printed for clients")
    parser.add_argument("--admin-anywhere", action="store_true",
                        help="the admin API and console answer clients off loopback too, and then every "
                        "admin request, reads too, needs the admin token")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_SECONDS,
                        help="seconds a connection may take for its TLS handshake, sit idle, or take to send "
                        "a request's headers before it is closed (default %(default)s)")
    parser.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_SECONDS,
                        help="seconds a request's body may take once its headers are in; slower is answered "
                        "408 (default %(default)s)")
    parser.add_argument("--log-level", default="WARNING", help="DEBUG logs one line per request")
    return parser


def parse_args(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    if bool(args.cert) != bool(args.key) or (args.cert and not args.ca_file):
        parser.error("--cert, --key and --ca-file go together")
    if args.idle_timeout <= 0 or args.request_timeout <= 0:
        parser.error("--idle-timeout and --request-timeout are positive numbers of seconds")
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
    access = AdminAccess(anywhere=args.admin_anywhere)
    with contextlib.ExitStack() as stack:
        stack.callback(state.store.close)
        ca_file, cert_file, key_file = _certificates(args, stack)
        runner = web.AppRunner(make_app(state, access, args.request_timeout),
                               **runner_options(args.idle_timeout, args.request_timeout))
        await runner.setup()
        loop = asyncio.get_running_loop()
        server = None
        try:
            # The server is made here rather than by aiohttp's TCPSite, which leaves the TLS handshake
            # asyncio's 60 s: a connection that never completes its handshake is bounded like an idle one.
            server = await loop.create_server(runner.server, args.host, args.port, backlog=1024,
                                              reuse_address=True, ssl=server_context(cert_file, key_file),
                                              ssl_handshake_timeout=args.idle_timeout)
            port = server.sockets[0].getsockname()[1]
            host = args.endpoint_host or ("127.0.0.1" if args.host in WILDCARD_HOSTS else args.host)
            if ":" in host:
                host = f"[{host}]"
            stop = asyncio.Event()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(signum, stop.set)
            endpoint = f"https://{host}:{port}"
            print(json.dumps({"endpoint": endpoint, "ca_file": ca_file,
                              "console": f"{endpoint}{UI_PATH}?{TOKEN_PARAM}={access.token}",
                              "admin_token": access.token}), flush=True)
            await stop.wait()
        finally:
            if server is not None:
                server.close()
            await runner.cleanup()


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
