"""Beam runners beyond the in-process ones, on this machine: Flink (embedded, and a local session
cluster) and Prism; and Beam SQL's expansion service.

`python -m pipelines.runners fetch [flink|prism|sql|all]` puts what each needs where Beam looks for
it, so that `--runner=FlinkRunner`, `--runner=PrismRunner` and SqlTransform then work offline;
`python -m pipelines.runners flink-cluster start|stop|status` runs a Flink session cluster on loopback.
"""
