"""Devices the emulator knows, and the tokens it has issued to them."""
import secrets
import time

from connector.protocol.device import Device
from connector.protocol.limits import TOKEN_LIFETIME_SECONDS

DEVICE_FIELDS = ("productKey", "deviceName", "deviceSecret")


def make_devices(n: int, product_key: str = "pkEmulator01", prefix: str = "device") -> list[dict[str, str]]:
    """Devices for tests and benchmarks, with deterministic names and fresh random secrets.

    Args:
        n: how many.
        product_key: their productKey.
        prefix: their deviceNames are the prefix and a five-digit number, from 00000.

    Returns:
        {productKey, deviceName, deviceSecret} dicts, as Emulator and the devices file take them.
    """
    return [
        {"productKey": product_key, "deviceName": f"{prefix}{i:05d}", "deviceSecret": secrets.token_hex(16)}
        for i in range(n)
    ]


def parse_devices(items):
    """{Device: secret} from a list of device dicts; ValueError names the first bad entry's index."""
    if not isinstance(items, list):
        raise ValueError("devices must be a JSON list of {productKey, deviceName, deviceSecret}")
    parsed = {}
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not all(
            isinstance(item.get(field), str) and item[field] for field in DEVICE_FIELDS
        ):
            raise ValueError(f"device #{index} needs non-empty string fields {', '.join(DEVICE_FIELDS)}")
        parsed[Device(item["productKey"], item["deviceName"])] = item["deviceSecret"]
    return parsed


class Registry:
    """Device secrets and issued tokens.

    Like the platform, every /auth issues a new token and earlier ones stay valid until they expire.
    Expired tokens are remembered so they answer "token is expired" rather than "check token error".
    """

    def __init__(self, devices=None, token_ttl=TOKEN_LIFETIME_SECONDS):
        self._secrets = dict(devices or {})
        self._tokens = {}  # token -> (Device, expires at, epoch seconds)
        self.token_ttl = token_ttl

    def __len__(self):
        return len(self._secrets)

    def __repr__(self):
        return f"Registry({len(self._secrets)} devices, {len(self._tokens)} tokens)"

    def add(self, devices):
        self._secrets.update(devices)

    def devices(self):
        return list(self._secrets)

    def secret(self, device):
        return self._secrets.get(device)

    def issue_token(self, device):
        token = secrets.token_hex(16)
        self._tokens[token] = (device, time.time() + self.token_ttl)
        return token

    def lookup(self, token):
        """(Device, expired) for a token, or None when it was never issued."""
        entry = self._tokens.get(token)
        if entry is None:
            return None
        device, expires_at = entry
        return device, time.time() >= expires_at

    def live_token_holders(self):
        """The devices holding at least one token that has not expired."""
        now = time.time()
        return {device for device, expires_at in self._tokens.values() if expires_at > now}

    def expire_all(self):
        self._tokens = {token: (device, 0.0) for token, (device, _) in self._tokens.items()}
