"""Gateway commands: run, enqueue, status, stats, drain, tail, send --via-gateway."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

import click

from ccs.console.common import (
    config_errors,
    config_option,
    data_option,
    load_settings,
    parse_data,
    setup_logging,
)
from ccs.gateway.settings import ConfigError, Settings


def _json_option(name: str, help: str) -> Any:
    return click.option(name, default=None, metavar="JSON", help=help)


def _parse_json(value: str | None, name: str) -> Any:
    if value is None:
        return None
    from ccs.limits import LimitError, loads

    try:
        return loads(value, name)
    except LimitError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1], param_hint=name) from None
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint=name) from None


def _admin(settings: Settings) -> Any:
    from ccs.gateway.admin.client import AdminClient

    if not settings["admin.token"]:
        raise ConfigError("admin.token", "needed to reach the admin API (set CCS_ADMIN_TOKEN)")
    return AdminClient(settings["admin.port"], settings["admin.token"])


def _call(fn: Any, *args: Any) -> Any:
    from ccs.gateway.admin.client import AdminError

    try:
        return fn(*args)
    except AdminError as exc:
        raise click.ClickException(str(exc)) from None


@click.command()
@config_option
@config_errors
def run(config: str | None) -> None:
    """Run the gateway until SIGTERM or SIGINT, then stop cleanly (unsent work stays queued)."""
    import gevent
    from gevent.event import Event

    from ccs.gateway.supervisor import Supervisor

    settings = load_settings(config)
    setup_logging(settings["gateway.log_level"])
    stop = Event()  # handlers first: a signal right after the banner must stop us cleanly
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    sup = Supervisor(settings).start()
    admin = f", admin API {sup.admin.url}" if sup.admin else ""
    from ccs.gateway.outbox import shown

    click.echo(f"ccs-gateway running: providers {', '.join(sup.providers)}, outbox "
               f"{shown(settings['outbox.path'])}{admin}", err=True)
    stop.wait()
    click.echo("stopping: no new messages; waiting for in-flight ones", err=True)
    left = sup.stop()
    click.echo(f"stopped; {len(left)} in-flight messages left queued for the next start",
               err=True)


def _tokens(stream: IO[str]) -> Iterator[tuple[str, int]]:
    for line in stream:
        yield line.strip(), len(line.encode())


@click.command()
@config_option
@click.option("--tokens-file", required=True, type=click.File("r"),
              help="One token per line ('-' for stdin); a line starting with '{' is a whole "
                   "message as JSON.")
@data_option("The data object of every message.")
@_json_option("--notification", "The notification object of every message.")
@_json_option("--message", "Template message (JSON) each token is put into as 'to'.")
@click.option("--via", default=None, help="Provider to use (default: FCM via CCS or fallback).")
@click.option("--batch", default=1000, show_default=True, type=click.IntRange(1, 100000),
              help="Messages stored per transaction.")
@config_errors
def enqueue(config: str | None, tokens_file: IO[str], data: tuple[str, ...],
            notification: str | None, message: str | None, via: str | None,
            batch: int) -> None:
    """Bulk-enqueue into the outbox (streaming: memory stays bounded); `ccs run` sends them.

    A bad line is reported on stderr with its number and skipped; the exit status is then 1."""
    from ccs.gateway import providers as registry
    from ccs.gateway.dispatcher import Dispatcher
    from ccs.gateway.outbox import open_store, shown
    from ccs.gateway.outbox.base import StoreUnavailable
    from ccs.gateway.router import RouteError, Router

    settings = load_settings(config)
    if settings["outbox.path"] == ":memory:":
        raise ConfigError("outbox.path", "`ccs enqueue` needs a file outbox, not :memory:")
    registry.load_plugins(settings["gateway.plugins"])  # a plugin's provider checks its own
    template = dict(_parse_json(message, "--message") or {})
    if data:
        template["data"] = parse_data(data)
    if notification is not None:
        template["notification"] = _parse_json(notification, "--notification")
    names = settings["gateway.providers"]
    router = Router(lambda: dict.fromkeys(names, True), settings["gateway.fcm_fallback"])
    try:
        lane = router.lane_for(via)
    except RouteError as exc:
        raise click.BadParameter(str(exc), param_hint="--via") from None
    store = open_store(settings["outbox.path"], sync=settings["outbox.sync"],
                       **_redis_options(settings))
    total = added = skipped = 0
    size = _size(tokens_file)
    bar = click.progressbar(length=size, label="enqueue", file=sys.stderr) \
        if size and sys.stderr.isatty() else None
    pending: list[Any] = []

    def flush() -> None:
        nonlocal added
        if pending:
            try:
                added += sum(store.add(pending, time.time()))
            except StoreUnavailable as exc:  # exit 1; the lines after `added` were not stored
                raise click.ClickException(f"{exc} ({added} messages were enqueued before; run "
                                           "again: lines with a message_id are stored once)"
                                           ) from None
            pending.clear()

    try:
        for lineno, (line, nbytes) in enumerate(_tokens(tokens_file), 1):
            if bar is not None:
                bar.update(nbytes)
            if not line or line.startswith("#"):
                continue
            try:
                msg = _line_message(line, template)
                pending.append(Dispatcher._new(msg, lane, time.time(), lineno))
            except (RouteError, ValueError) as exc:  # reported, skipped, never silently
                click.echo(f"ccs enqueue: line {lineno} skipped: "
                           f"{str(exc).split(': ', 1)[-1]}", err=True)
                skipped += 1
                continue
            total += 1
            if len(pending) >= batch:
                flush()
        flush()
    finally:
        if bar is not None:
            bar.render_finish()
        store.close()
    click.echo(f"enqueued {added} messages ({total - added} already in the outbox, {skipped} "
               f"lines skipped) into {shown(settings['outbox.path'])}")
    if skipped:
        raise SystemExit(1)


def _line_message(line: str, template: dict[str, Any]) -> dict[str, Any]:
    if line.startswith("{"):
        from ccs.limits import LimitError, loads

        try:
            msg = loads(line, "line")
        except LimitError:
            raise
        except ValueError as exc:
            raise ValueError(f"line: not JSON: {exc}") from None
        if not isinstance(msg, dict):
            raise ValueError("line: not a JSON object")
        return {**template, **msg}
    return {**template, "to": line}


def _size(f: IO[str]) -> int | None:
    try:
        return os.fstat(f.fileno()).st_size or None
    except (OSError, ValueError, AttributeError):
        return None


@click.command()
@config_option
@click.argument("message_id", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@config_errors
def status(config: str | None, message_id: str | None, as_json: bool) -> None:
    """One message's state and outcome, or the outbox's counts per state (read from the file)."""
    from ccs.gateway.outbox import is_redis, open_store, shown

    settings = load_settings(config)
    path = settings["outbox.path"]
    shared = is_redis(path)
    if not shared and (path == ":memory:" or not os.path.exists(path)):
        raise ConfigError("outbox.path", f"no outbox file at {path}")
    store = open_store(path, **_redis_options(settings))
    try:
        if message_id is None:
            out: Any = store.counts()
            if shared:  # every live gateway, its sessions, and the one queue they share
                out = {"outbox": out, "depth": out["queued"],
                       "gateways": store.gateways()}  # type: ignore[attr-defined]
        else:
            record = store.get(message_id)
            if record is None:
                raise click.ClickException(f"no message {message_id!r} in {shown(path)}")
            out = record.as_json()
    finally:
        store.close()
    if as_json:
        click.echo(json.dumps(out, indent=2, sort_keys=True))
    elif shared and message_id is None:
        click.echo(f"queue depth: {out['depth']}")
        click.echo("outbox: " + ", ".join(f"{k} {v}" for k, v in out["outbox"].items()))
        click.echo(f"gateways: {len(out['gateways'])}")
        for g in out["gateways"]:
            sessions = g.get("sessions", [])
            ready = sum(1 for x in sessions if x.get("state") == "ready")
            click.echo(f"  {g['consumer']} pid {g['pid']} on {g['host']}: {len(sessions)} CCS "
                       f"sessions ({ready} ready), {g.get('in_flight', 0)} in flight, "
                       f"last heartbeat {time.time() - g['at']:.1f}s ago")
    else:
        for k, v in out.items():
            click.echo(f"{k}: {v}")


def _redis_options(settings: Settings) -> dict[str, Any]:
    from ccs.gateway.outbox import is_redis
    from ccs.gateway.supervisor import redis_options

    return redis_options(settings) if is_redis(settings["outbox.path"]) else {}


@click.command()
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (default: indented JSON too).")
@config_errors
def stats(config: str | None, as_json: bool) -> None:
    """Live statistics of the running gateway (through the admin API)."""
    out = _call(_admin(load_settings(config)).request, "GET", "/v1/stats")
    click.echo(json.dumps(out, separators=(",", ":")) if as_json else json.dumps(out, indent=2))


@click.command()
@config_option
@click.argument("session_id", required=False)
@config_errors
def drain(config: str | None, session_id: str | None) -> None:
    """Drain a CCS session (all when none given): new messages go to other sessions."""
    out = _call(_admin(load_settings(config)).request, "POST", "/v1/drain",
                {"session_id": session_id})
    click.echo(json.dumps(out))


@click.command()
@config_option
@click.option("--kinds", default=None,
              help="Comma-separated: upstream, receipt, token, outcome (default: all).")
@config_errors
def tail(config: str | None, kinds: str | None) -> None:
    """Print the gateway's event stream as JSON lines until interrupted.

    With a Redis outbox it follows the shared streams: every gateway's events."""
    settings = load_settings(config)
    wanted = [k for k in (kinds or "").split(",") if k] or None
    from ccs.gateway.outbox import is_redis, open_store

    if is_redis(settings["outbox.path"]):
        store: Any = open_store(settings["outbox.path"], **_redis_options(settings))
        try:
            events = store.tail(wanted or ["upstream", "receipt", "token", "outcome"])
            click.echo("ccs tail: following the shared streams", err=True)
            for kind, data in events:
                click.echo(json.dumps({"event": kind, **data}, separators=(",", ":")))
        except KeyboardInterrupt:
            pass
        finally:
            store.close()
        return
    client = _admin(settings)

    def connected() -> None:
        click.echo("ccs tail: following the gateway's events", err=True)

    try:
        for kind, data in _call(client.events, wanted, connected):
            click.echo(json.dumps({"event": kind, **data}, separators=(",", ":")))
    except KeyboardInterrupt:
        pass


def send_via_gateway(messages: Iterable[dict[str, Any]], as_json: bool,
                     batch: int = 500) -> int:
    """`ccs send --via-gateway`: POST the messages in batches; print one line per message.

    Exit status: 0 all stored, 2 bad configuration or a message refused, 3 gateway unreachable.
    """
    from ccs.gateway.admin.client import AdminError

    try:
        client = _admin(Settings.load(None))
    except ConfigError as exc:
        click.echo(f"ccs send: configuration error: {exc}", err=True)
        return 2
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        ids = client.request("POST", "/v1/messages", {"messages": pending})["ids"]
        for m, mid in zip(pending, ids, strict=True):
            to = m.get("to") or m.get("condition")
            line = {"id": mid, "to": to, "state": "queued"}
            click.echo(json.dumps(line) if as_json else f"queued  {to} id={mid}")
        pending.clear()

    try:
        for m in messages:
            pending.append(m)
            if len(pending) >= batch:
                flush()
        if pending:
            flush()
    except AdminError as exc:
        click.echo(f"ccs send: {exc}", err=True)
        return 3 if exc.status is None else 2
    return 0
