"""python -m pipelines.runners: fetch what Beam's runners, Beam SQL and the relay's Kafka source need; run
a Flink session cluster and a Kafka broker.

  fetch [flink|prism|sql|kafka|all]   the Flink job server jar (Maven) and Flink's distribution (PyPI);
                                Prism (go install of Beam's Go module); Beam SQL's expansion service
                                jar (Maven); Kafka's jars and the Flink job server with KafkaIO, the
                                relay's Kafka expansion service (Maven); all: every one (Prism only on
                                a Beam whose Flink runner Maven Central does not serve). Idempotent;
                                one fetch at a time (a second waits for the first).
  flink-cluster start [--taskmanagers N] [--rest-port P] [--workdir D]
  flink-cluster stop|status [--workdir D]
  kafka start [--partitions N] [--workdir D]   a single-node KRaft broker on loopback; prints one JSON
                                line with "bootstrap_servers"
  kafka stop|status [--workdir D]
"""
import argparse
import json
import os
import sys

from . import fetching, flink_cluster, flink_job_server, kafka_broker
from .fetching import FETCHERS
from .flink_cluster import ClusterError, FlinkCluster
from .kafka_broker import BrokerError, KafkaBroker


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
    return parser


def run_kafka(args):
    if args.action == "start":
        broker = KafkaBroker(args.workdir).start(partitions=args.partitions)
        print(json.dumps({"bootstrap_servers": broker.bootstrap_servers, "pid": broker.process.pid,
                          "workdir": broker.workdir}), flush=True)
        return 0
    broker = KafkaBroker.load(args.workdir)
    if args.action == "stop":
        broker.stop()
        print(f"stopped the Kafka broker of {broker.workdir}")
        return 0
    running = broker.running()
    print(f"Kafka broker of {broker.workdir}: {'running' if running else 'not running'}, "
          f"bootstrap servers {broker.bootstrap_servers}")
    return 0 if running else 1


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
        return run_cluster(args)
    except (*fetching.ERRORS, fetching.FetchFailed, ClusterError, BrokerError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
