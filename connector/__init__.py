"""Apache Beam connector for Alibaba Cloud IoT Platform's HTTPS device channel.

Layers, each knowing only the one below: protocol (codes, signing, topic rules) -> client (HTTPS,
tokens) -> beam (WriteToIoTPlatform). The emulator shares only the protocol layer.
"""
from connector.client.errors import InvalidRequest, IoTPlatformError, TransportError, UnknownDevice
from connector.client.http import IoTPlatformClient
from connector.client.tokens import TokenCache
from connector.protocol.device import Device

__all__ = [
    "Device",
    "InvalidRequest",
    "IoTPlatformClient",
    "IoTPlatformError",
    "TokenCache",
    "TransportError",
    "UnknownDevice",
]
