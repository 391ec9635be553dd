"""The ``dora-forwarder`` command: one module per command, ``main`` parses and dispatches."""

from workers.cli.main import main

__all__ = ["main"]
