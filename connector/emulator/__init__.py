"""A local stand-in for IoT Platform's HTTPS device channel, faithful enough to test real clients.

Run it with ``python -m connector.emulator --devices FILE``, or from tests with ``Emulator``.
"""
from .client import Emulator, EmulatorError
from .registry import make_devices

__all__ = ["Emulator", "EmulatorError", "make_devices"]
