"""The IoT Platform HTTP device channel itself: codes, limits, signing and topic rules.

Shared by the client and the emulator, and by nothing else: it knows neither HTTP libraries nor Beam.
"""
