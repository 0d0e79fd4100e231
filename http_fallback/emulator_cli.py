"""`ccs emulate legacy|c2dm|mpns`: the retired HTTP services on loopback, until SIGTERM.

Each provider's declaration names its command here (ProviderSpec.command); the console finds
them through the registry."""

from __future__ import annotations

import atexit
import json
import shutil
import signal
import tempfile
from typing import Any

import click
import gevent
from gevent.event import Event

from ccs.testing.pki import make_test_pki
from ccs.transport.tls import server_context


def _serve(emulator: Any, info: dict[str, Any]) -> None:
    """Start, print one JSON line, serve until SIGTERM or SIGINT."""
    stop = Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    emulator.start()
    line = {"host": emulator.host, "port": emulator.port, **info(emulator)}
    click.echo(json.dumps(line), nl=True)
    stop.wait()
    emulator.stop()


def _pki(pki_dir: str | None) -> Any:
    """The given directory, or a temporary one removed at exit."""
    if pki_dir is None:
        pki_dir = tempfile.mkdtemp(prefix="ccs-emulate-")
        atexit.register(shutil.rmtree, pki_dir, True)
    return make_test_pki(pki_dir)


_host = click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
_port = click.option("--port", default=0, show_default=True, help="Port (0: any free port).")
_pki_dir = click.option("--pki-dir", default=None, help="Where to write the throw-away CA.")


@click.command("legacy")
@_host
@_port
@_pki_dir
@click.option("--server-key", default="emulator-server-key", show_default=True,
              help="The key clients must send as Authorization: key=...")
def legacy(host: str, port: int, pki_dir: str | None, server_key: str) -> None:
    """Legacy GCM/FCM HTTP (POST /fcm/send) over TLS."""
    from http_fallback.legacy.emulator import LegacyEmulator

    pki = _pki(pki_dir)
    emu = LegacyEmulator(server_key, host=host, port=port,
                         ssl_context=server_context(pki.cert_file, pki.key_file))
    _serve(emu, lambda e: {"emulator": "legacy", "url": e.url, "ca_file": pki.ca_file,
                           "server_key": server_key})


@click.command("c2dm")
@_host
@_port
@_pki_dir
@click.option("--email", default="sender@example.com", show_default=True)
@click.option("--password", default="emulator-password", show_default=True)
def c2dm(host: str, port: int, pki_dir: str | None, email: str, password: str) -> None:
    """C2DM: ClientLogin (/accounts/ClientLogin) and send (/c2dm/send) over TLS."""
    from http_fallback.c2dm.emulator import C2dmEmulator

    pki = _pki(pki_dir)
    emu = C2dmEmulator({email: password}, host=host, port=port,
                       ssl_context=server_context(pki.cert_file, pki.key_file))
    _serve(emu, lambda e: {"emulator": "c2dm", "url": e.url, "login_url": e.login_url,
                           "ca_file": pki.ca_file, "email": email, "password": password})


@click.command("mpns")
@_host
@_port
@_pki_dir
@click.option("--daily-limit", default=500, show_default=True,
              help="Posts a day per unauthenticated channel before 406.")
def mpns(host: str, port: int, pki_dir: str | None, daily_limit: int) -> None:
    """MPNS over TLS; any channel URI under the printed bases is accepted as a subscription."""
    from http_fallback.mpns.emulator import MpnsEmulator

    pki = _pki(pki_dir)
    emu = MpnsEmulator(daily_limit=daily_limit, auto_channels=True, host=host, port=port,
                       ssl_context=server_context(pki.cert_file, pki.key_file,
                                                  client_ca_file=pki.ca_file))
    _serve(emu, lambda e: {
        "emulator": "mpns", "channel_uri": e.new_channel(),
        "authenticated_channel_uri": e.new_channel(authenticated=True),
        "channel_base": f"{e.origin}/throttledthirdparty/01.00/",
        "authenticated_channel_base": f"{e.origin}/unthrottledthirdparty/01.00/",
        "ca_file": pki.ca_file, "client_cert_file": pki.client_cert_file,
        "client_key_file": pki.client_key_file})
