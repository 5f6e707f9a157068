"""A device's identity on the platform."""
from typing import NamedTuple

__all__ = ["Device"]


class Device(NamedTuple):
    """A device, named by its product's key and its own name (the platform's productKey, deviceName)."""

    product_key: str
    device_name: str

    @property
    def client_id(self) -> str:
        """The clientId common clients send: productKey.deviceName (at most 64 characters is the rule)."""
        return f"{self.product_key}.{self.device_name}"

    def __str__(self) -> str:
        return f"{self.product_key}/{self.device_name}"
