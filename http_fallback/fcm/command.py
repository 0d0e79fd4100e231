"""`ccs emulate fcm`: FCM HTTP v1 with OAuth and topics on loopback (named by the declaration)."""

from __future__ import annotations

import json
import signal
import tempfile
from pathlib import Path

import click


@click.command("fcm")
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
