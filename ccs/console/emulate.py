"""`ccs emulate NAME`: run one of the shipped protocol emulators on loopback until stopped."""

from __future__ import annotations

import click


@click.group()
def emulate() -> None:
    """Run a protocol-faithful emulator on loopback (prints its address and CA file)."""


@emulate.command("ccs")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, help="Port (0: pick a free one).")
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
def ccs(host: str, port: int, sender_id: str, server_key: str | None, **options: object) -> None:
    """Google CCS (XMPP over TLS): prints one JSON line, then serves until SIGTERM/SIGINT."""
    import json
    import secrets
    import signal
    import sys

    import gevent
    from gevent.event import Event

    from ccs.emulator import CcsEmulator

    key = server_key or secrets.token_urlsafe(24)
    try:
        emu = CcsEmulator(sender_id=sender_id, server_key=key, host=host, port=port, **options)
    except (TypeError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    stop = Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    with emu:
        line = {"host": emu.host, "port": emu.port, "ca_file": emu.ca_file,
                "sender_id": sender_id, "server_key": key, "domain": emu.domain}
        click.echo(json.dumps(line))
        sys.stdout.flush()
        stop.wait()
