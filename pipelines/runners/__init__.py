"""Beam runners beyond the in-process ones, on this machine: Flink (embedded, and a local session
cluster) and Prism.

`python -m pipelines.runners fetch [flink|prism|all]` puts what each runner needs where Beam looks for
it, so that `--runner=FlinkRunner` and `--runner=PrismRunner` then work offline with no further option;
`python -m pipelines.runners flink-cluster start|stop|status` runs a Flink session cluster on loopback.
"""
