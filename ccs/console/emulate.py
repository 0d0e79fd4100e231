"""`ccs emulate NAME`: run one of the shipped protocol emulators on loopback until stopped."""

from __future__ import annotations

import click


@click.group()
def emulate() -> None:
    """Run a protocol-faithful emulator on loopback (prints its address and CA file)."""


def _register_retired() -> None:
    from ccs.console.emulate_retired import register

    register(emulate)


_register_retired()
