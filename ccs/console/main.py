"""The `ccs` console: one click group; each command lives in its own module."""

from __future__ import annotations

import click

from ccs import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ccs")
def cli() -> None:
    """ccs-gateway: push notifications through CCS, FCM, APNs and their emulators."""


def _register() -> None:
    from ccs.console import demo, emulate, gateway, send, settings_cmd

    cli.add_command(demo.demo)
    cli.add_command(emulate.emulate)
    cli.add_command(send.send)
    cli.add_command(settings_cmd.settings_cmd)
    for command in (gateway.run, gateway.enqueue, gateway.status, gateway.stats, gateway.drain,
                    gateway.tail):
        cli.add_command(command)


_register()
