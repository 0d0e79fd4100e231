"""`ccs emulate apns`: the APNs provider API (HTTP/2) on loopback (named by the declaration)."""

from __future__ import annotations

import click


@click.command("apns")
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
