"""The publishing DoFn as a runner drives it: copies unpickled on a worker, bundles that end and bundles
the runner gives up on, and teardown."""
import apache_beam as beam
from apache_beam.internal import pickler

import connector
from connector.beam.publish_fns import _GroupedPublishFn


class _SecretsInMemory:
    """A credentials provider of the user's own, without a __repr__ of its own."""

    def __init__(self, devices):
        self._secrets = {(d["productKey"], d["deviceName"]): d["deviceSecret"] for d in devices}

    def secrets(self):
        from connector.protocol.device import Device
        return {Device(*key): secret for key, secret in self._secrets.items()}


def _publish_fn(emulator, credentials, **options):
    """The batch publishing DoFn WriteToIoTPlatform would run, with these options."""
    write = connector.WriteToIoTPlatform(emulator.endpoint, credentials, ca_file=emulator.ca_file, **options)
    return _GroupedPublishFn(write._config, write._encoder, write._max_payload_bytes)


def _worker_copy(fn):
    """The DoFn as a worker gets it: pickled into the graph, unpickled, set up."""
    copy = pickler.loads(pickler.dumps(fn))
    copy.setup()
    return copy


def test_every_copy_of_the_dofn_in_a_process_shares_one_publisher_whatever_the_credentials(emulator, devices):
    fn = _publish_fn(emulator, _SecretsInMemory(devices))
    first, second = _worker_copy(fn), _worker_copy(fn)
    assert first._publisher is second._publisher  # one /auth per device per process, one set of limits
