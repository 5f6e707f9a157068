"""Apache Beam connector for Alibaba Cloud IoT Platform's HTTPS device channel.

Layers, each knowing only the one below: protocol (codes, signing, topic rules) -> client (HTTPS,
tokens) -> beam (WriteToIoTPlatform). The emulator shares only the protocol layer.

Names are imported on first use, so that the emulator and the client start without loading Beam.
"""
import importlib

_HOMES = {
    "Device": "connector.protocol.device",
    "IoTPlatformClient": "connector.client.http",
    "IoTPlatformError": "connector.client.errors",
    "InvalidRequest": "connector.client.errors",
    "TransportError": "connector.client.errors",
    "UnknownDevice": "connector.client.errors",
    "TokenCache": "connector.client.tokens",
    "EncodeError": "connector.beam.encoders",
    "Encoder": "connector.beam.encoders",
    "get_encoder": "connector.beam.encoders",
    "CredentialsProvider": "connector.beam.credentials",
    "FileCredentials": "connector.beam.credentials",
    "RetryPolicy": "connector.beam.publisher",
    "FailedRecord": "connector.beam.results",
    "Reason": "connector.beam.results",
    "Receipt": "connector.beam.results",
    "FailedRow": "connector.beam.rows",
    "ToRows": "connector.beam.rows",
    "WriteToIoTPlatformResult": "connector.beam.results",
    "WriteToIoTPlatform": "connector.beam.write",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> object:
    if name not in _HOMES:
        raise AttributeError(f"module 'connector' has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
