"""Sink memory: what each of the sink's memory bounds lets a worker hold, as peak RSS, for the record
shapes that once held several times what the bound counted.

    python -m benchmarks.sink_memory [--records 400000] [--baseline DIR] [--json PATH]

Each run feeds one stage of the sink, alone in a child process, with --records records of one shape,
and reports how much the process's peak RSS grew over what it had once set up, against the stage's
bound, and the most the bound counted:

  first    the batch first stage (route, encode, chunk before the shuffle), its outputs dropped as the
           runner would take them; bound: batch.BUNDLE_BYTES (16 MB), after which it sends all it holds
  sort     order_by's sort buffer of one device's records (as the publishing stage decodes them from
           the shuffle), sorted buffers dropped; bound: sort_buffer_bytes (--sort-buffer-mb)
  publish  the batch publishing stage fed the shape's groups as GroupByKey hands them over (a chunk
           per device and window), publishing to an emulator at a pace that lets nothing drain after
           each device's first payload; bound: max_buffered_bytes (--max-buffered-mb), at which it
           blocks (the run then ends)

Shapes: readings (5 fields, about 90 bytes of JSON) in the global window; kept (readings with a tuple,
which cross the shuffle beside their fragment); windows (fixed windows of 10 s, 10 readings of a
device in each; in the first stage, which gets 100 devices, a reading of each); topics (those windows,
routed to a topic made from a record's field, so that each chunk holds a key of its own); sessions (one
window per reading). Records are made by a JSON reader, so each has its own dict keys, as records a
coder or a reader hands over do.

With --baseline DIR (another checkout, e.g. `git worktree add DIR REV` of the code before a change),
every run is made with that checkout's connector too, interleaved, in the same invocation.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time

STAGES = {"first": ("readings", "kept", "windows", "topics", "sessions"), "sort": ("readings", "kept"),
          "publish": ("readings", "windows", "sessions")}
PRODUCT_KEY = "a1MemoryBench"
DEVICES = 100


# --- child: one stage, one shape -------------------------------------------------------------------

def records(shape, count, devices):
    """(record, window) pairs of a shape, made lazily; a record of device n % devices, 10 a second."""
    from apache_beam.transforms.window import GlobalWindow, IntervalWindow

    global_window = GlobalWindow()
    for n in range(count):
        record = {"productKey": PRODUCT_KEY, "deviceName": f"sensor{n % devices:05d}", "ts": 1_700_000_000_000 + n,
                  "temperature": 20 + n % 70 / 10, "status": "ok"}
        record = json.loads(json.dumps(record))  # its own keys, as a reader's or a coder's
        if shape == "kept":
            record["pair"] = (n, 2)
        seconds = n / 10
        if shape in ("windows", "topics"):
            window = IntervalWindow(seconds // 10 * 10, seconds // 10 * 10 + 10)
        elif shape == "sessions":
            window = IntervalWindow(seconds, seconds + 0.05)
        else:
            window = global_window
        yield record, window


def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_first(args, report):
    from connector.beam import batch
    from connector.beam.encoders import get_encoder
    from connector.beam.routing import make_router

    router = make_router(topic="/{productKey}/{deviceName}/user/{status}") if args.shape == "topics" else make_router()
    fn = batch._RouteAndEncodeInWindowsFn(router, get_encoder("jsonl"), 131072)
    fn.setup()
    fn.start_bundle()
    chunks = fn._chunks
    close_all = chunks.close_all

    def counted_close_all():
        report["counted"] = max(report["counted"], chunks.held)
        return close_all()
    chunks.close_all = counted_close_all
    report["bound"] = batch.BUNDLE_BYTES
    report["start_rss"] = rss()
    for record, window in records(args.shape, args.records, DEVICES):
        for _ in fn.process(record, window=window) or ():  # taken and dropped, as the runner sends them on
            pass
    report["counted"] = max(report["counted"], chunks.held)
    report["fed"] = args.records


def run_sort(args, report):
    from connector.beam.encoders import get_encoder
    from connector.beam.ordering import OrderBy

    bound = args.sort_buffer_mb << 20
    order_by = OrderBy("ts", sort_buffer_bytes=bound)
    encoder = get_encoder("jsonl")
    report["bound"] = bound
    report["counted"] = None  # the buffer's count is the method's own: it sorts at the bound
    pairs = ((record, encoder.encode(record)) for record, _ in records(args.shape, args.records, 1))
    report["start_rss"] = rss()
    for _ in order_by.sorted_in_buffers(pairs, None, None):
        pass
    report["fed"] = args.records


def run_publish(args, report):
    from apache_beam.utils.timestamp import MIN_TIMESTAMP

    from connector import WriteToIoTPlatform
    from connector.beam import batch, chunks

    bound = args.max_buffered_mb << 20
    write = WriteToIoTPlatform(args.endpoint, args.credentials, ca_file=args.ca_file, max_buffered_bytes=bound,
                               device_messages_per_second=0.001)
    encoder = write._encoder
    fn = batch._PublishChunksFn(write._config, encoder, write._max_payload_bytes)
    fn.setup()
    fn.start_bundle()
    budget = fn._publishing.publisher._budget
    report["bound"] = bound
    devices = 1 if args.shape == "sessions" else 10
    fed = [0]

    def groups():
        """The shape's groups: a device's records of one window, as one chunk (readings: a device's
        records, in chunks of 256 KB as the first stage sends them)."""
        open_groups = {}
        for record, window in records(args.shape, args.records, devices):
            key = (record["productKey"], record["deviceName"])
            group = open_groups.setdefault((key, window), [])
            group.append(encoder.encode(record))
            fed[0] += 1
            if args.shape == "readings" and sum(map(len, group)) < 256 << 10:
                continue
            if args.shape == "windows" and len(group) < 10:
                continue
            del open_groups[(key, window)]
            yield key, window, chunks.encode_chunk(group, {})

    def feed():
        for key, window, chunk in groups():
            element = ((key, f"/{key[0]}/{key[1]}/user/update"), [chunk])
            for _ in fn.process(element, window=window, timestamp=MIN_TIMESTAMP):
                pass
        done.set()
    done = threading.Event()
    report["start_rss"] = rss()
    threading.Thread(target=feed, daemon=True).start()
    last = -1
    while not done.wait(1.0):  # blocked for a second at max_buffered_bytes: it holds all it may
        report["counted"] = max(report["counted"], budget._used)
        if fed[0] == last:
            break
        last = fed[0]
    report["counted"] = max(report["counted"], budget._used)
    report["fed"] = fed[0]


def run_child(args):
    report = {"stage": args.child, "shape": args.shape, "counted": 0}
    started = time.monotonic()
    {"first": run_first, "sort": run_sort, "publish": run_publish}[args.child](args, report)
    report["seconds"] = round(time.monotonic() - started, 1)
    report["peak_rss"] = peak_rss()
    print(json.dumps(report), flush=True)
    os._exit(0)  # the publish stage's payloads wait at their pace: nothing more to see


# --- parent ----------------------------------------------------------------------------------------

def run(stage, shape, args, emulator, credentials, checkout):
    """One child: this checkout's benchmark, with the connector of `checkout`."""
    command = [sys.executable, os.path.abspath(__file__), "--child", stage, "--shape", shape,
               "--records", str(args.records), "--sort-buffer-mb", str(args.sort_buffer_mb),
               "--max-buffered-mb", str(args.max_buffered_mb), "--endpoint", emulator.endpoint,
               "--ca-file", emulator.ca_file, "--credentials", credentials]
    done = subprocess.run(command, capture_output=True, text=True, cwd=checkout,
                          env={**os.environ, "PYTHONPATH": checkout}, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{stage} {shape} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    report["grown"] = report["peak_rss"] - report["start_rss"]
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sink_memory", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=400_000)
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--sort-buffer-mb", type=int, default=16)
    parser.add_argument("--max-buffered-mb", type=int, default=64)
    parser.add_argument("--baseline", help="another checkout (a directory) whose connector runs every stage too")
    parser.add_argument("--json", default="sink_memory.json", help="where to write the figures")
    parser.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    parser.add_argument("--shape", help=argparse.SUPPRESS)
    for name in ("--endpoint", "--ca-file", "--credentials"):
        parser.add_argument(name, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)

    from connector.emulator import Emulator, make_devices

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    checkouts = {"this": here, **({"baseline": os.path.abspath(args.baseline)} if args.baseline else {})}
    devices = make_devices(DEVICES, product_key=PRODUCT_KEY, prefix="sensor")
    results = []
    with tempfile.TemporaryDirectory(prefix="sink-memory-") as scratch, Emulator(devices) as emulator:
        credentials = os.path.join(scratch, "credentials.json")
        with open(credentials, "w", encoding="utf-8") as out:
            json.dump(devices, out)
        for stage in args.stages.split(","):
            for shape in STAGES[stage]:
                row = {"stage": stage, "shape": shape}
                for label, checkout in checkouts.items():  # interleaved: the machine may be shared
                    emulator.reset()
                    print(f"running {stage} {shape} ({label}) ...", file=sys.stderr, flush=True)
                    row[label] = run(stage, shape, args, emulator, credentials, checkout)
                results.append(row)
    mb = 2**20
    print(f"\n{args.records:,} records a run; MB: the bound, the most it counted, and how much peak RSS grew")
    header = f"{'stage':8} {'shape':9} {'bound':>6}  {'counted':>8} {'RSS grew':>9} {'x bound':>8} {'fed':>9}"
    print(header + ("   baseline: counted, RSS grew, x bound, fed" if args.baseline else ""))
    def figures(run):
        counted = "-" if run["counted"] is None else f"{run['counted'] / mb:.1f}"
        return f"{counted:>8} {run['grown'] / mb:9.1f} {run['grown'] / run['bound']:8.2f} {run['fed']:9,}"
    for row in results:
        line = f"{row['stage']:8} {row['shape']:9} {row['this']['bound'] / mb:6.0f}  {figures(row['this'])}"
        print(line + (f"   {figures(row['baseline'])}" if "baseline" in row else ""))
    with open(args.json, "w", encoding="utf-8") as out:
        json.dump({"command": " ".join(["python -m benchmarks.sink_memory"] + (argv or sys.argv[1:])),
                   "records": args.records, "results": results}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
