"""The `ccs` console: one click group; each command lives in its own module."""

from __future__ import annotations

import click

from ccs import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ccs")
def cli() -> None:
    """ccs-gateway: push notifications through CCS, FCM, APNs and their emulators."""


def _register() -> None:
    from ccs.console import emulate, gateway, settings_cmd

    cli.add_command(emulate.emulate)
    cli.add_command(settings_cmd.settings_cmd)
    for command in (gateway.run, gateway.enqueue, gateway.status, gateway.stats, gateway.drain,
                    gateway.tail):
        cli.add_command(command)
    if "send" not in cli.commands:  # the CCS client's own `send` may take --via-gateway instead
        cli.add_command(gateway.send)


_register()
