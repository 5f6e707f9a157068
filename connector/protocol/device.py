"""A device's identity on the platform."""
from typing import NamedTuple


class Device(NamedTuple):
    product_key: str
    device_name: str

    @property
    def client_id(self):
        """The clientId common clients send: productKey.deviceName (at most 64 characters is the rule)."""
        return f"{self.product_key}.{self.device_name}"

    def __str__(self):
        return f"{self.product_key}/{self.device_name}"
