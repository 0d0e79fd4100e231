"""`ccs emulate NAME`: run one of the shipped protocol emulators on loopback until stopped."""

from __future__ import annotations

import json
import signal
from typing import Any

import click

from ccs.errors import ConfigError


class _WithPlugins(click.Group):
    """ccs's emulator, the built-in providers' (each declaration's command, found through the
    registry), then those plugin providers declare (CCS_PLUGINS, entry points): `ccs emulate
    NAME --port P` prints the emulator's info() as one JSON line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        shipped = [*super().list_commands(ctx), *_builtin_commands()]
        return [*sorted(shipped),  # --help: a bad setting hides plugins, no exit
                *(n for n in _plugin_emulators(strict=False) if n not in shipped)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name) or _builtin_commands().get(name)
        if found is not None:
            return found
        make = _plugin_emulators(strict=True).get(name)
        return None if make is None else _plugin_command(name, make)


def _builtin_commands() -> dict[str, click.Command]:
    """The built-in providers' emulator commands by their own names (`http`'s is `fcm`);
    no settings needed."""
    from ccs import registry

    found = {}
    for name in registry.BUILTIN_NAMES:
        declared = registry.spec(name)
        if declared is not None and declared.command is not None:
            command = declared.command()
            found[command.name] = command
    return found


def _plugin_emulators(strict: bool) -> dict[str, Any]:
    """Emulators plugins declare; loading the settings imports the plugins they name (a bad
    setting exits 2 naming it when `strict`)."""
    import os

    from ccs import registry
    from ccs.console.common import load_settings
    from ccs.gateway.settings import Settings

    if strict:
        load_settings(None)
    else:
        try:
            Settings.load(None, os.environ)
        except ConfigError:
            pass
    return {s.name: s.emulator for s in registry.specs() if s.emulator is not None}


def _plugin_command(name: str, make: Any) -> click.Command:
    @click.command(name, help=f"The emulator of plugin provider {name} (prints one JSON line, "
                              "then serves until SIGTERM or SIGINT).")
    @click.option("--port", default=0, show_default=True, help="TCP port on 127.0.0.1 (0: any).")
    def run(port: int) -> None:
        emulator = make(port)
        click.echo(json.dumps({"emulator": name, **emulator.info()}))
        _serve_until_signalled()
        emulator.stop()

    return run


def _serve_until_signalled() -> None:
    import gevent
    import gevent.event

    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()


@click.group(cls=_WithPlugins)
def emulate() -> None:
    """Run a protocol-faithful emulator on loopback (prints its address and CA file)."""


@emulate.command("ccs")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, help="Port (0: pick a free one).")
@click.option("--pki-dir", default=None,
              help="Where to write the throw-away CA (default: a temporary directory); a CA "
                   "already there is reused, never overwritten.")
@click.option("--sender-id", default="1234567890", show_default=True)
@click.option("--server-key", default=None, help="Server key (default: a random one, printed).")
@click.option("--ack-delay", type=float, default=0.0, show_default=True,
              help="Seconds to hold every ack/nack.")
@click.option("--drain-after", type=int, default=None,
              help="Send CONNECTION_DRAINING after N downstream on a connection.")
@click.option("--drop-after", type=int, default=None,
              help="Abort a connection on its Nth downstream, unanswered.")
@click.option("--unavailable-every", type=int, default=None,
              help="Nack every Kth downstream SERVICE_UNAVAILABLE.")
@click.option("--keepalive", type=float, default=None, help="Whitespace keepalive interval (s).")
@click.option("--prefixed-fraction", type=float, default=0.25, show_default=True,
              help="Share of outbound stanzas sent as <data:gcm>.")
@click.option("--strict-flow/--no-strict-flow", default=True, show_default=True,
              help="Treat a 101st pending downstream as a protocol violation.")
@click.option("--flow-violation", type=click.Choice(["close", "nack", "record"]),
              default="close", show_default=True)
@click.option("--upstream-redeliver", type=float, default=10.0, show_default=True)
@click.option("--receipt-redeliver", type=float, default=10.0, show_default=True)
@click.option("--drain-grace", type=float, default=0.5, show_default=True)
def ccs(host: str, port: int, pki_dir: str | None, sender_id: str, server_key: str | None,
        **options: object) -> None:
    """Google CCS (XMPP over TLS): prints one JSON line, then serves until SIGTERM/SIGINT."""
    import json
    import os
    import secrets
    import signal
    import sys

    import gevent
    from gevent.event import Event

    from ccs.testing.pki import load_test_pki, make_test_pki
    from ccs.xmpp.emulator import CcsEmulator

    pki = None  # None: the emulator makes and removes one
    if pki_dir and os.path.exists(os.path.join(pki_dir, "ca.pem")):
        try:  # clients already trust this CA: keep it
            pki = load_test_pki(pki_dir)
        except ValueError as exc:
            raise click.UsageError(f"--pki-dir: {exc}; not overwriting it (give an empty "
                                   "directory or remove the old files)") from None
    elif pki_dir:
        pki = make_test_pki(pki_dir)
    key = server_key or secrets.token_urlsafe(24)
    try:
        emu = CcsEmulator(sender_id=sender_id, server_key=key, pki=pki, host=host, port=port,
                          record_limit=10_000, **options)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    stop = Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    with emu:
        line = {"emulator": "ccs", "host": emu.host, "port": emu.port, "ca_file": emu.ca_file,
                "sender_id": sender_id, "server_key": key, "domain": emu.domain}
        click.echo(json.dumps(line))
        sys.stdout.flush()
        stop.wait()
