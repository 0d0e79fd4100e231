"""`ccs send`: send to one or many targets and print one result line per message.

Exit status: 0 all ok; 1 any failed, expired or unknown; 2 bad usage or configuration;
3 could not reach the service. Tokens files stream: memory is bounded by --max-outstanding,
whatever the file's size. Results print in input order.
"""

from __future__ import annotations

import json
import sys
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

import click

from ccs.errors import ConfigError
from ccs.message import InvalidMessage, build_message
from ccs.outcome import Outcome, SendResult, Status

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def _tokens(tokens: tuple[str, ...], tokens_file: TextIO | None) -> Iterator[str]:
    yield from tokens
    if tokens_file is not None:
        for line in tokens_file:
            token = line.strip()
            if token and not token.startswith("#"):
                yield token


def _parse_data(pairs: tuple[str, ...]) -> dict[str, str] | None:
    data: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--data")
        data[key] = value
    return data or None


def _line(outcome: Outcome, as_json: bool) -> str:
    if as_json:
        return json.dumps(outcome.as_json(), ensure_ascii=False)
    parts = [str(outcome.status).ljust(7), outcome.to or "-", f"message_id={outcome.message_id}"]
    if outcome.error:
        parts.append(f"error={outcome.error}")
    if outcome.canonical_id:
        parts.append(f"canonical_id={outcome.canonical_id}")
    parts.append(f"attempts={outcome.attempts}")
    return " ".join(parts)


def run_sends(send: Any, messages: Iterable[dict[str, Any] | Outcome], as_json: bool,
              max_outstanding: int, progress: bool, out: TextIO) -> int:
    """Send each message, print results in input order; return the exit status.

    `messages` may yield an Outcome instead of a message (a bad input line): it is printed
    in its place, so every input gets exactly one line.
    """
    pending: deque[SendResult | Outcome] = deque()
    worst = EXIT_OK
    count = 0
    bar = click.progressbar(length=0, label="sent", file=sys.stderr) if progress else None

    def emit(item: SendResult | Outcome) -> None:
        nonlocal worst, count
        outcome = item if isinstance(item, Outcome) else item.get()
        if outcome.status is not Status.OK:
            worst = EXIT_FAILED
        out.write(_line(outcome, as_json) + "\n")
        count += 1
        if bar is not None:
            bar.update(1)

    for msg in messages:
        pending.append(msg if isinstance(msg, Outcome) else send(msg))
        while pending and (len(pending) >= max_outstanding or _ready(pending[0])):
            emit(pending.popleft())
    while pending:
        emit(pending.popleft())
    if bar is not None:
        bar.render_finish()
    out.flush()
    return worst


def _ready(item: SendResult | Outcome) -> bool:
    return isinstance(item, Outcome) or item.ready()


@click.command()
@click.argument("tokens", nargs=-1)
@click.option("--token", "extra_tokens", multiple=True, help="A registration token (repeatable).")
@click.option("--tokens-file", type=click.File("r"), help="One token per line; - for stdin.")
@click.option("--topic", help="Send to /topics/NAME instead of tokens.")
@click.option("--condition", help="A topic condition, e.g. \"'a' in topics && 'b' in topics\".")
@click.option("--via", type=click.Choice(["ccs"]), default="ccs", show_default=True,
              help="The provider to send through.")
@click.option("--data", "data_pairs", multiple=True, metavar="KEY=VALUE",
              help="A data payload entry (repeatable).")
@click.option("--title", help="Notification title.")
@click.option("--body", help="Notification body.")
@click.option("--collapse-key", help="Collapse key.")
@click.option("--ttl", type=click.IntRange(0, 2419200), help="time_to_live in seconds.")
@click.option("--priority", type=click.Choice(["normal", "high"]))
@click.option("--delivery-receipt", is_flag=True, help="Ask for a delivery receipt.")
@click.option("--dry-run", is_flag=True, help="Validate at the service; deliver nothing.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per result line.")
@click.option("--connect-timeout", type=float, default=15.0, show_default=True,
              help="Seconds to wait for a session before giving up (exit 3).")
@click.option("--max-outstanding", type=click.IntRange(1), default=10000, show_default=True,
              help="Results held in memory at once (bounds memory for huge token files).")
@click.option("--via-gateway", is_flag=True,
              help="Hand the messages to the running gateway (`ccs run`) through its admin API: "
                   "stored in its outbox, then sent; prints each message's id.")
def send(tokens: tuple[str, ...], extra_tokens: tuple[str, ...], tokens_file: TextIO | None,
         topic: str | None, condition: str | None, via: str, data_pairs: tuple[str, ...],
         title: str | None, body: str | None, collapse_key: str | None, ttl: int | None,
         priority: str | None, delivery_receipt: bool, dry_run: bool, as_json: bool,
         connect_timeout: float, max_outstanding: int, via_gateway: bool = False) -> None:
    """Send a message to TOKENS (or a topic / condition) and print one line per message.

    Configured from the environment (CCS_HOST, CCS_PORT, CCS_SENDER_ID, CCS_SERVER_KEY,
    CCS_CA_FILE, CCS_CONNECTIONS).
    """
    from ccs.client import CcsClient, CcsConfig

    all_tokens = _tokens(tokens + extra_tokens, tokens_file)
    targets: Iterable[str | None]
    if topic or condition:
        if tokens or extra_tokens or tokens_file or (topic and condition):
            raise click.UsageError("give tokens, --topic or --condition: only one kind")
        probe = f"/topics/{topic}" if topic else None
        targets = [probe]
    else:
        probe = next(all_tokens, None)
        if probe is None:
            raise click.UsageError("no target: give TOKENS, --token, --tokens-file, --topic "
                                   "or --condition")
        targets = _chain(probe, all_tokens)
    options: dict[str, Any] = {
        "data": _parse_data(data_pairs),
        "notification": {k: v for k, v in (("title", title), ("body", body)) if v} or None,
        "collapse_key": collapse_key, "time_to_live": ttl, "priority": priority,
        "delivery_receipt_requested": delivery_receipt or None, "dry_run": dry_run or None,
    }
    # Check the options once against the first target, before anything connects.
    try:
        build_message(probe, condition=condition, **options)
    except InvalidMessage as exc:
        raise click.BadParameter(str(exc)) from None

    if via_gateway:
        from ccs.console.gateway import send_via_gateway

        sys.exit(send_via_gateway(
            (build_message(t, condition=condition, **options) for t in targets), as_json))
    try:
        config = CcsConfig.from_env()
    except ConfigError as exc:
        click.echo(f"ccs send: configuration: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    client = CcsClient(config)
    client.start()
    try:
        if not client.wait_ready(connect_timeout):
            if client.stats()["auth_failures"]:
                click.echo("ccs send: authentication refused: check CCS_SENDER_ID and "
                           "CCS_SERVER_KEY", err=True)
                sys.exit(EXIT_USAGE)
            click.echo(f"ccs send: could not reach CCS at {config.host}:{config.port}", err=True)
            sys.exit(EXIT_UNREACHABLE)

        def messages() -> Iterator[dict[str, Any] | Outcome]:
            for target in targets:
                try:
                    yield build_message(target, condition=condition, **options)
                except InvalidMessage as exc:
                    yield Outcome(Status.FAILED, via=via, to=target, error="INVALID_MESSAGE",
                                  description=str(exc), attempts=0)

        progress = sys.stderr.isatty() and tokens_file is not None
        code = run_sends(client.send, messages(), as_json, max_outstanding, progress,
                         sys.stdout)
    finally:
        client.stop(timeout=5.0)
    sys.exit(code)


def _chain(first: str, rest: Iterator[str]) -> Iterator[str]:
    yield first
    yield from rest
