"""The Beam layer: WriteToIoTPlatform and the pieces it is built from."""
