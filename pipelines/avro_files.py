"""Reading several Avro globs or paths as one PCollection of dicts, with Beam's Avro IO (fastavro)."""
import apache_beam as beam


class ReadAvroFiles(beam.PTransform):
    """One ReadFromAvro per glob or path (each splits its files across workers), flattened."""

    def __init__(self, patterns):
        super().__init__()
        self.patterns = [patterns] if isinstance(patterns, str) else list(patterns)

    def expand(self, pbegin):
        reads = [pbegin | f"Avro{i}" >> beam.io.ReadFromAvro(pattern) for i, pattern in enumerate(self.patterns)]
        return reads[0] if len(reads) == 1 else tuple(reads) | beam.Flatten()
