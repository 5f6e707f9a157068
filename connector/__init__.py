"""Apache Beam connector for Alibaba Cloud IoT Platform's HTTPS device channel.

Layers, each knowing only the one below: protocol (codes, signing, topic rules) -> client (HTTPS,
tokens) -> beam (WriteToIoTPlatform). The emulator shares only the protocol layer.
"""
from connector.beam.credentials import FileCredentials
from connector.beam.encoders import EncodeError, Encoder, get_encoder
from connector.beam.publisher import RetryPolicy
from connector.beam.results import FailedRecord, Reason, Receipt, WriteToIoTPlatformResult
from connector.beam.write import WriteToIoTPlatform
from connector.client.errors import InvalidRequest, IoTPlatformError, TransportError, UnknownDevice
from connector.client.http import IoTPlatformClient
from connector.client.tokens import TokenCache
from connector.protocol.device import Device

__all__ = [
    "Device",
    "EncodeError",
    "Encoder",
    "FailedRecord",
    "FileCredentials",
    "InvalidRequest",
    "IoTPlatformClient",
    "IoTPlatformError",
    "Reason",
    "Receipt",
    "RetryPolicy",
    "TokenCache",
    "TransportError",
    "UnknownDevice",
    "WriteToIoTPlatform",
    "WriteToIoTPlatformResult",
    "get_encoder",
]
