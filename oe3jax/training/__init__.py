"""The host side of training: configuration, the command line, the chunked loop, progress output,
checkpoints with exact resume, and loading trained policies.

The top layer: it may import every other layer; none imports it.
"""
