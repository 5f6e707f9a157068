"""Ready-to-run pipelines built on WriteToIoTPlatform: backfill from Avro, Parquet, CSV or JSON lines,
replay dead letters, and a streaming relay. Each is a `python -m pipelines.<name>` command; see the
docs/pipelines.md."""
from . import beam_noise

beam_noise.silence()
