"""Ready-to-run pipelines built on WriteToIoTPlatform: backfill from Avro, replay dead letters, and a
streaming relay. Each is a `python -m pipelines.<name>` command; see docs/pipelines.md."""
