"""`ccs emulate NAME`: run one of the shipped protocol emulators on loopback until stopped."""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path
from typing import Any

import click

from ccs.errors import ConfigError


class _WithPlugins(click.Group):
    """The shipped emulators, then those declared by plugin providers (CCS_PLUGINS, entry
    points): `ccs emulate NAME --port P` prints the emulator's info() as one JSON line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*super().list_commands(ctx),  # --help: a bad setting hides plugins, no exit
                *(n for n in _plugin_emulators(strict=False) if n not in self.commands)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        found = super().get_command(ctx, name)
        if found is not None:
            return found
        make = _plugin_emulators(strict=True).get(name)
        return None if make is None else _plugin_command(name, make)


def _plugin_emulators(strict: bool) -> dict[str, Any]:
    """Emulators plugins declare; loading the settings imports the plugins they name (a bad
    setting exits 2 naming it when `strict`)."""
    import os

    from ccs import registry
    from ccs.console.common import load_settings
    from ccs.settings import Settings

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


@emulate.command("fcm")
@click.option("--port", default=0, show_default=True, help="TCP port on 127.0.0.1 (0: any).")
@click.option("--project", default="emulated-project", show_default=True,
              help="Firebase project id the emulator serves.")
@click.option("--token-lifetime", default=3600, show_default=True,
              help="Seconds an issued access token stays valid.")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=None,
              help="Where to write the CA and the service-account file (default: a temp dir).")
@click.option("--record-limit", default=10_000, show_default=True,
              help="How many requests the emulator remembers.")
@click.option("--latency", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Seconds before every answer (a round trip to Google is about 0.05).")
@click.option("--streams", type=click.IntRange(min=1), default=100, show_default=True,
              help="SETTINGS_MAX_CONCURRENT_STREAMS on HTTP/2 connections.")
@click.option("--goaway-after", type=click.IntRange(min=1), default=None,
              help="Send GOAWAY on each HTTP/2 connection after this many requests.")
@click.option("--http2/--no-http2", default=True, show_default=True,
              help="Offer HTTP/2 (ALPN h2) besides HTTP/1.1.")
def fcm(port: int, project: str, token_lifetime: int, directory: str | None,
        record_limit: int, latency: float, streams: int, goaway_after: int | None,
        http2: bool) -> None:
    """FCM HTTP v1 with its OAuth token endpoint and the IID topic API, over HTTPS
    (HTTP/1.1 and HTTP/2 on one port).

    Prints one JSON line (host, port, url, ca_file, credentials, project), then serves until
    SIGTERM or SIGINT.
    """
    import gevent
    import gevent.event

    from ccs.testing.pki import make_test_pki
    from http_fallback.fcm.emulator import FcmEmulator

    tmp = None
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="ccs-emulate-fcm-")
        directory = tmp.name
    Path(directory).mkdir(parents=True, exist_ok=True)
    pki = make_test_pki(Path(directory))
    emulator = FcmEmulator(pki, project, port=port, token_lifetime=token_lifetime,
                           record_limit=record_limit, latency=latency,
                           max_concurrent_streams=streams, goaway_after=goaway_after,
                           http2=http2).start()
    account = emulator.create_service_account(str(Path(directory) / "service-account.json"))
    click.echo(json.dumps({"emulator": "fcm", "host": "127.0.0.1", "port": emulator.port,
                           "url": emulator.url, "ca_file": pki.ca_file,
                           "credentials": account.path, "project": project}), nl=True)
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()
    emulator.stop()
    if tmp is not None:
        tmp.cleanup()


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

    from ccs.emulator import CcsEmulator
    from ccs.testing.pki import load_test_pki, make_test_pki

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


def _register_retired() -> None:
    from ccs.console.emulate_retired import register

    register(emulate)


_register_retired()


@emulate.command("apns")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, help="0 picks a free port")
@click.option("--topic", default="com.example.app", show_default=True)
@click.option("--key-id", default="EMULKEY123", show_default=True)
@click.option("--team-id", default="EMULTEAM12", show_default=True)
@click.option("--streams", default=1000, show_default=True,
              help="SETTINGS_MAX_CONCURRENT_STREAMS once a token is accepted")
@click.option("--dir", "directory", default=None, help="where to write the PKI and key")
@click.option("--record/--no-record", default=True, show_default=True)
def apns(host: str, port: int, topic: str, key_id: str, team_id: str, streams: int,
         directory: str | None, record: bool) -> None:
    """APNs provider API (HTTP/2) emulator; prints one JSON line, serves until SIGTERM."""
    from http_fallback.apns.serve import run

    run(host, port, topic, key_id, team_id, streams, directory, record)
