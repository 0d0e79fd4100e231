"""`ccs send`: send through any provider and print one result line per input message.

Exit status: 0 all ok; 1 any failed, expired or unknown; 2 bad usage or configuration;
3 could not reach the service at all. Token files stream: memory is bounded by
--max-outstanding, whatever the file's size. Results print in input order, each as soon as it
and every earlier one are final.
"""

from __future__ import annotations

import json
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

import click
import gevent
from gevent import socket

from ccs.console.common import config_option, data_option, load_settings, parse_data
from ccs.console.payloads import (
    BUILDERS,
    FCM_VIAS,
    VIAS,
    OptionError,
    Options,
    builder_for,
    endpoints,
    sendable,
)
from ccs.errors import ConfigError
from ccs.limits import MAX_TTL
from ccs.outcome import Outcome, SendResult, Status

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _lines(values: tuple[str, ...], files: Iterable[TextIO | None]) -> Iterator[str]:
    yield from values
    for f in files:
        if f is None:
            continue
        for line in f:
            item = line.strip()
            if item and not item.startswith("#"):
                yield item


def _line(outcome: Outcome, as_json: bool) -> str:
    if as_json:
        return json.dumps(outcome.as_json(), ensure_ascii=False)
    parts = [str(outcome.status).ljust(7), outcome.to or "-", f"via={outcome.via}",
             f"message_id={outcome.message_id}"]
    if outcome.error:
        parts.append(f"error={outcome.error}")
    if outcome.canonical_id:
        parts.append(f"canonical_id={outcome.canonical_id}")
    parts.append(f"attempts={outcome.attempts}")
    return " ".join(parts)


def run_sends(send: Any, messages: Iterable[Any], as_json: bool, max_outstanding: int,
              progress: bool, out: TextIO, wait: float | None = None, via: str = "-") -> int:
    """Send each message, print results in input order; return the exit status.

    `messages` may yield an Outcome in place of a message (a bad input): it is printed in its
    place, so every input gets exactly one line. A line is written (and flushed) as soon as its
    outcome and those of every earlier input are final. At most `max_outstanding` results wait
    in memory: when the oldest is still unresolved, sending pauses until it resolves. A message
    without an answer `wait` seconds after it was handed over prints `unknown` (NO_ANSWER): no
    service can hold the command.
    """
    pending: deque[SendResult | Outcome] = deque()
    worst = EXIT_OK
    bar = click.progressbar(length=0, label="sent", file=sys.stderr) if progress else None
    waits: dict[int, tuple[float, Any]] = {}  # id(result) -> (deadline, target)

    def answer(item: SendResult) -> Outcome:
        deadline, to = waits.pop(id(item), (None, None))
        if deadline is None:
            return item.get()
        try:
            return item.get(timeout=max(0.0, deadline - time.monotonic()))
        except gevent.Timeout:
            return Outcome(Status.UNKNOWN, via=via, to=to, error="NO_ANSWER",
                           description=f"no answer within {wait:g}s (--wait)", attempts=1)

    def submit(msg: Any) -> SendResult:
        result = send(msg)
        if wait is not None:
            waits[id(result)] = (time.monotonic() + wait, _target(msg))
        return result

    def emit(item: SendResult | Outcome) -> None:
        nonlocal worst
        outcome = item if isinstance(item, Outcome) else answer(item)
        if outcome.status is not Status.OK:
            worst = EXIT_FAILED
        out.write(_line(outcome, as_json) + "\n")
        if bar is not None:
            bar.update(1)

    def emit_ready() -> None:
        if pending and _ready(pending[0]):
            while pending and _ready(pending[0]):
                emit(pending.popleft())
            out.flush()

    for msg in messages:
        pending.append(msg if isinstance(msg, Outcome) else submit(msg))
        emit_ready()
        while len(pending) >= max_outstanding:
            emit(pending.popleft())  # waits for the oldest: memory stays bounded
            emit_ready()
            out.flush()  # the oldest's line too, even when nothing after it is ready yet
    while pending:
        emit(pending.popleft())
        emit_ready()
        out.flush()
    if bar is not None:
        bar.render_finish()
    out.flush()
    return worst


def _target(msg: Any) -> Any:
    if isinstance(msg, dict):
        return msg.get("to") or msg.get("token") or msg.get("condition")
    return next((getattr(msg, a) for a in ("to", "device", "token", "channel_uri",
                                           "registration_id") if getattr(msg, a, None)), None)


def _ready(item: SendResult | Outcome) -> bool:
    return isinstance(item, Outcome) or item.ready()


def _reachable(addresses: list[tuple[str, int]], timeout: float) -> str | None:
    """None when every address takes a TCP connection; else the first that did not."""
    for host, port in addresses:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            return f"{host}:{port} ({exc.strerror or exc})"
    return None


def _pick_via(via: str | None, kinds: dict[str, bool]) -> str:
    implied = [name for name, given in (("mpns", kinds["mpns"]), ("apns", kinds["apns"]),
                                        ("c2dm", kinds["c2dm"])) if given]
    if len(implied) > 1 or (implied and kinds["tokens"]):
        raise click.UsageError("give one kind of target: tokens, --mpns-uri, --apns-token or "
                               "--c2dm-registration-id")
    if implied == ["apns"] and via == "apns-binary":
        return via  # APNs tokens, through the binary interface
    if implied:
        if via is not None and via != implied[0]:
            raise click.UsageError(f"--via {via} does not take {implied[0]} targets")
        return implied[0]
    return via or "ccs"


@click.command()
@click.argument("tokens", nargs=-1)
@click.option("--token", "extra_tokens", multiple=True, help="A registration token (repeatable).")
@click.option("--tokens-file", type=click.File("r"), help="One token per line; - for stdin.")
@click.option("--topic", help="Send to a topic (ccs, http, legacy).")
@click.option("--condition", help="A topic condition, e.g. \"'a' in topics && 'b' in topics\".")
@click.option("--via", default=None, metavar="|".join(VIAS) + "|PLUGIN",
              help="Provider (default ccs, falling back to http when no CCS session can be had "
                   "and FCM HTTP v1 is configured), or one a plugin in CCS_PLUGINS declares "
                   "with a payload builder.")
@click.option("--mpns-uri", "mpns_uris", multiple=True, help="An MPNS channel URI (repeatable).")
@click.option("--mpns-uris-file", type=click.File("r"), help="One channel URI per line.")
@click.option("--c2dm-registration-id", "c2dm_ids", multiple=True,
              help="A C2DM registration id (repeatable).")
@click.option("--apns-token", "apns_tokens", multiple=True, help="An APNs device token (hex).")
@click.option("--apns-tokens-file", type=click.File("r"), help="One APNs token per line.")
@data_option("Message data: FCM data, C2DM data.<key>, APNs custom keys, MPNS raw body.")
@click.option("--title", help="Notification title (MPNS toast Text1).")
@click.option("--body", help="Notification body (MPNS toast Text2).")
@click.option("--collapse-key", help="Collapse key (C2DM default: ccs).")
@click.option("--ttl", type=click.IntRange(0, MAX_TTL), help="time_to_live in seconds.")
@click.option("--priority", type=click.Choice(["normal", "high", "10", "5", "1"]),
              help="FCM normal|high; APNs 10|5|1 (high=10, normal=5).")
@click.option("--delivery-receipt", is_flag=True, help="Ask CCS for a delivery receipt.")
@click.option("--dry-run", is_flag=True, help="Validate at the service; deliver nothing.")
@click.option("--alert", help="APNs alert text.")
@click.option("--badge", type=click.IntRange(0), help="APNs badge.")
@click.option("--sound", help="APNs sound.")
@click.option("--push-type", help="APNs push type (alert, background, voip, ...).")
@click.option("--expiration", type=click.IntRange(0), help="APNs expiration (epoch seconds).")
@click.option("--collapse-id", help="APNs collapse id (at most 64 bytes).")
@click.option("--topic-suffix", help="Appended to CCS_APNS_TOPIC for this send.")
@click.option("--mpns-param", help="MPNS toast Param (page and query to open).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result line.")
@click.option("--connect-timeout", type=float, default=15.0, show_default=True,
              help="Seconds to reach the service before giving up (exit 3).")
@click.option("--wait", type=click.FloatRange(0, min_open=True), default=120.0,
              show_default=True,
              help="Seconds to wait for each message's answer once sent; then it prints "
                   "unknown (NO_ANSWER).")
@click.option("--max-outstanding", type=click.IntRange(1), default=10000, show_default=True,
              help="Results held in memory at once (bounds memory for huge token files).")
@click.option("--via-gateway", is_flag=True,
              help="Hand the messages to the running gateway (`ccs run`) through its admin API: "
                   "stored in its outbox, then sent; prints each message's id.")
@config_option
def send(tokens: tuple[str, ...], extra_tokens: tuple[str, ...], tokens_file: TextIO | None,
         topic: str | None, condition: str | None, via: str | None,
         mpns_uris: tuple[str, ...], mpns_uris_file: TextIO | None, c2dm_ids: tuple[str, ...],
         apns_tokens: tuple[str, ...], apns_tokens_file: TextIO | None,
         data: tuple[str, ...], title: str | None, body: str | None,
         collapse_key: str | None, ttl: int | None, priority: str | None,
         delivery_receipt: bool, dry_run: bool, alert: str | None, badge: int | None,
         sound: str | None, push_type: str | None, expiration: int | None,
         collapse_id: str | None, topic_suffix: str | None, mpns_param: str | None,
         as_json: bool, connect_timeout: float, wait: float, max_outstanding: int,
         via_gateway: bool, config: str | None) -> None:
    """Send a message to each target through one provider; print one line per message.

    Configured by --config (TOML) and the CCS_* environment: see the settings table in
    docs/settings.rst.
    """
    kinds = {"tokens": bool(tokens or extra_tokens or tokens_file),
             "mpns": bool(mpns_uris or mpns_uris_file),
             "apns": bool(apns_tokens or apns_tokens_file), "c2dm": bool(c2dm_ids)}
    chosen = _pick_via(via, kinds)
    explicit = via is not None or chosen != "ccs"
    if (topic or condition) and chosen not in FCM_VIAS:
        raise click.UsageError(f"--topic and --condition go with ccs, http or legacy, "
                               f"not {chosen}")
    if topic and condition:
        raise click.UsageError("give --topic or --condition, not both")
    targets: Iterator[str | None]
    if topic or condition:
        if kinds["tokens"]:
            raise click.UsageError("give tokens, --topic or --condition: only one kind")
        targets = iter([f"/topics/{topic}" if topic else None])
    else:
        targets = _lines(tokens + extra_tokens + mpns_uris + c2dm_ids + apns_tokens,
                         (tokens_file, mpns_uris_file, apns_tokens_file))
    first = next(targets, None)
    if first is None and not condition:
        raise click.UsageError("no target: give TOKENS, --token, --tokens-file, --topic, "
                               "--condition, --mpns-uri, --apns-token or --c2dm-registration-id")
    settings = load_settings(config)  # loads the plugins: their providers become known
    if builder_for(chosen) is None:
        raise click.BadParameter(f"unknown provider {chosen!r} (known: "
                                 f"{', '.join(sendable())})", param_hint="--via")
    apns_topic = None
    if topic_suffix:
        if not settings["apns.topic"]:
            raise click.UsageError("--topic-suffix needs a default topic (CCS_APNS_TOPIC)")
        apns_topic = settings["apns.topic"] + topic_suffix
    opts = Options(
        data=parse_data(data), title=title, body=body, collapse_key=collapse_key,
        ttl=ttl, priority=priority, delivery_receipt=delivery_receipt, dry_run=dry_run,
        condition=condition, alert=alert, badge=badge, sound=sound, push_type=push_type,
        expiration=expiration, collapse_id=collapse_id, apns_topic=apns_topic,
        mpns_param=mpns_param)

    everything = _chain(first, targets)
    if via_gateway:
        from ccs.console.gateway import send_via_gateway

        if chosen != "ccs":
            raise click.UsageError("--via-gateway takes FCM targets; the gateway routes them")
        _check_first(chosen, first, opts)
        sys.exit(send_via_gateway((BUILDERS["ccs"](t, opts) for t in everything), as_json))

    provider, chosen = _start_provider(chosen, explicit, settings, first, opts,
                                       connect_timeout)
    try:
        progress = sys.stderr.isatty() and any(
            f is not None for f in (tokens_file, mpns_uris_file, apns_tokens_file))
        code = run_sends(provider.send, _messages(chosen, everything, opts),
                         as_json, max_outstanding, progress, sys.stdout, wait=wait, via=chosen)
    finally:
        provider.stop(timeout=5.0)
    sys.exit(code)


def _chain(first: str | None, rest: Iterator[str | None]) -> Iterator[str | None]:
    yield first
    yield from rest


def _check_first(via: str, first: str | None, opts: Options) -> None:
    """Check the options against the first target before anything connects (exit 2)."""
    from ccs.gateway.providers import adapter_for

    try:
        payload = _build(via)(first, opts)
        adapt = adapter_for(via)
        if adapt is not None:
            adapt(payload)
    except OptionError as exc:
        raise click.BadParameter(str(exc), param_hint=exc.option) from None
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc)) from None


def _build(via: str) -> Any:
    build = builder_for(via)
    assert build is not None  # checked when the settings were loaded
    return build


def _start_provider(via: str, explicit: bool, settings: Any, first: str | None,
                    opts: Options, timeout: float) -> tuple[Any, str]:
    """Build and start the provider; exit 2 on configuration, 3 when it cannot be reached."""
    from ccs.gateway import providers
    _check_first(via, first, opts)
    try:
        provider = providers.create(via, settings)
    except ConfigError as exc:
        _fail(EXIT_USAGE, f"configuration: {exc}")
    if via == "ccs":
        provider.start()
        if provider.wait_ready(timeout):
            return provider, via
        auth = provider.stats()["auth_failures"]
        provider.stop(timeout=1.0)
        if auth:
            _fail(EXIT_USAGE, "authentication refused: check CCS_SENDER_ID and CCS_SERVER_KEY")
        if not explicit and settings["fcm.credentials"]:
            click.echo("ccs send: no CCS session could be had; falling back to http",
                       err=True)
            return _start_provider("http", True, settings, first, opts, timeout)
        _fail(EXIT_UNREACHABLE, f"could not reach CCS at {settings['ccs.host']}:"
                                f"{settings['ccs.port']}")
    down = _reachable(endpoints(via, first, settings), timeout)
    if down is not None:
        _fail(EXIT_UNREACHABLE, f"could not reach {via} at {down}")
    from ccs import registry

    declared = registry.spec(via)
    try:  # e.g. FCM's OAuth token endpoint, which would otherwise hold every message
        down = declared.preflight(provider, timeout) \
            if declared is not None and declared.preflight is not None else None
    except registry.Refused as exc:
        _fail(EXIT_USAGE, f"authentication refused: {exc}")
    if down is not None:
        _fail(EXIT_UNREACHABLE, f"could not reach {via}: {down}")
    provider.start()
    return provider, via


def _fail(code: int, text: str) -> Any:
    click.echo(f"ccs send: {text}", err=True)
    sys.exit(code)


def _messages(via: str, targets: Iterable[str | None], opts: Options) -> Iterator[Any]:
    from ccs.gateway.providers import adapter_for

    build, adapt = _build(via), adapter_for(via)
    for target in targets:
        try:
            payload = build(target, opts)
            yield adapt(payload) if adapt is not None else payload
        except (ValueError, TypeError) as exc:
            yield Outcome(Status.FAILED, via=via, to=target, error="INVALID_MESSAGE",
                          description=str(exc), attempts=0)
