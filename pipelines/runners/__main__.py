"""python -m pipelines.runners: fetch what Beam's runners, Beam SQL and the relay's Kafka and Pub/Sub
sources need; run a Flink session cluster, a Kafka broker and Google's Pub/Sub test server.

  fetch [flink|prism|sql|kafka|pubsub|all]   the Flink job server jar (Maven) and Flink's distribution
                                (PyPI); Prism (go install of Beam's Go module); Beam SQL's expansion
                                service jar (Maven); Kafka's jars and the Flink job server with KafkaIO,
                                the relay's Kafka expansion service (Maven); Google's Pub/Sub test server
                                (go build); all: every one (Prism and Pub/Sub only on a Beam whose Flink
                                runner Maven Central does not serve). Idempotent; one fetch at a time (a
                                second waits for the first).
  flink-cluster start [--taskmanagers N] [--rest-port P] [--workdir D]
  flink-cluster stop|status [--workdir D]
  kafka start [--partitions N] [--workdir D]   a single-node KRaft broker on loopback; prints one JSON
                                line with "bootstrap_servers"
  kafka stop|status [--workdir D]
  pubsub start [--project P --topic T --subscription S] [--workdir D]   Google's Pub/Sub test server on
                                loopback (with a topic and a subscription to it); prints one JSON line
                                with "emulator_host", for PUBSUB_EMULATOR_HOST
  pubsub stop|status [--workdir D]
"""
import argparse
import json
import os
import sys

from . import fetching, flink_cluster, flink_job_server, kafka_broker, pubsub_server
from .fetching import FETCHERS
from .flink_cluster import ClusterError, FlinkCluster
from .kafka_broker import BrokerError, KafkaBroker
from .pubsub_server import PubSubServer, ServerError


def make_parser():
    parser = argparse.ArgumentParser(prog="python -m pipelines.runners", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    fetch = commands.add_parser("fetch", help="fetch what the runners need, so they work offline")
    fetch.add_argument("runner", nargs="?", choices=sorted(FETCHERS), default="all")
    cluster = commands.add_parser("flink-cluster", help="a Flink session cluster on this machine")
    cluster.add_argument("action", choices=["start", "stop", "status"])
    cluster.add_argument("--taskmanagers", type=int, default=2)
    cluster.add_argument("--rest-port", type=int, default=flink_cluster.DEFAULT_REST_PORT)
    cluster.add_argument("--rpc-port", type=int, default=flink_cluster.DEFAULT_RPC_PORT)
    cluster.add_argument("--workdir", default=flink_cluster.DEFAULT_WORKDIR,
                         help="configuration, logs, checkpoints and its processes' records, a private "
                         "directory (default %(default)s)")
    kafka = commands.add_parser("kafka", help="a single-node Kafka broker on this machine's loopback")
    kafka.add_argument("action", choices=["start", "stop", "status"])
    kafka.add_argument("--partitions", type=int, default=1, help="partitions of each topic it creates")
    kafka.add_argument("--workdir", default=kafka_broker.DEFAULT_WORKDIR,
                       help="configuration, data, log and its process's record, a private directory "
                       "(default %(default)s)")
    pubsub = commands.add_parser("pubsub", help="Google's Pub/Sub test server on this machine's loopback")
    pubsub.add_argument("action", choices=["start", "stop", "status"])
    pubsub.add_argument("--project", default="iot-relay-local",
                        help="project of the topic and subscription to create (default %(default)s)")
    pubsub.add_argument("--topic", help="a topic to create at start")
    pubsub.add_argument("--subscription", help="a pull subscription to --topic to create at start")
    pubsub.add_argument("--workdir", default=pubsub_server.DEFAULT_WORKDIR,
                        help="its log and process record, a private directory (default %(default)s)")
    return parser


def run_pubsub(args):
    if args.action == "start":
        if bool(args.topic) != bool(args.subscription):
            raise ServerError("--topic and --subscription go together")
        server = PubSubServer(args.workdir).start()
        started = {"emulator_host": server.emulator_host, "pid": server.process.pid, "workdir": server.workdir}
        if args.topic:
            try:
                started["subscription"] = server.create(args.project, args.topic, args.subscription)
            except Exception:
                server.stop()
                raise
        print(json.dumps(started), flush=True)
        return 0
    server = PubSubServer.load(args.workdir)
    return _stop_or_status(args.action, server, "Pub/Sub server", f"PUBSUB_EMULATOR_HOST={server.emulator_host}")


def _stop_or_status(action, service, name, address):
    """stop, or status (exit 1 when not running), of a broker or server a `start` recorded."""
    if action == "stop":
        service.stop()
        print(f"stopped the {name} of {service.workdir}")
        return 0
    running = service.running()
    print(f"{name} of {service.workdir}: {'running' if running else 'not running'}, {address}")
    return 0 if running else 1


def run_kafka(args):
    if args.action == "start":
        broker = KafkaBroker(args.workdir).start(partitions=args.partitions)
        print(json.dumps({"bootstrap_servers": broker.bootstrap_servers, "pid": broker.process.pid,
                          "workdir": broker.workdir}), flush=True)
        return 0
    broker = KafkaBroker.load(args.workdir)
    return _stop_or_status(args.action, broker, "Kafka broker", f"bootstrap servers {broker.bootstrap_servers}")


def run_cluster(args):
    if args.action == "start":
        if not os.path.exists(flink_job_server.jar_path()):
            raise ClusterError("the Flink job server is not fetched: run python -m pipelines.runners fetch flink")
        release = flink_job_server.flink_release()
        cluster = FlinkCluster(release, args.workdir, args.rest_port, rpc_port=args.rpc_port).start(args.taskmanagers)
        print(f"Flink {release} session cluster: REST http://{cluster.master} (JobManager pid {cluster.jobmanager}, "
              f"TaskManager pids {', '.join(map(str, cluster.taskmanagers))})\n"
              f"run jobs with --runner=FlinkRunner --flink_master={cluster.master}; logs in {args.workdir}/log")
        return 0
    cluster = FlinkCluster.load(args.workdir)
    if args.action == "stop":
        cluster.stop()
        print(f"stopped the Flink cluster of {args.workdir}")
        return 0
    overview = cluster.overview()
    if overview is None:
        print(f"Flink cluster of {args.workdir}: not answering at http://{cluster.master}")
        return 1
    print(f"Flink {overview.get('flink-version', cluster.release)} at http://{cluster.master}: "
          f"{overview['taskmanagers']} TaskManagers ({len(cluster.live_taskmanagers())} started here alive), "
          f"{overview['slots-available']}/{overview['slots-total']} slots free, "
          f"{overview['jobs-running']} jobs running")
    return 0


def main(argv=None):
    args = make_parser().parse_args(argv)
    try:
        if args.command == "fetch":
            fetching.fetch(args.runner)
            return 0
        if args.command == "kafka":
            return run_kafka(args)
        if args.command == "pubsub":
            return run_pubsub(args)
        return run_cluster(args)
    except (*fetching.ERRORS, fetching.FetchFailed, ClusterError, BrokerError, ServerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
