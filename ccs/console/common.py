"""Shared console pieces: the --config option and settings errors mapped to exit status 2."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import click

from ccs.gateway.settings import ConfigError, Settings, mask_urls

CONFIG_EXIT = 2

config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None,
    help="TOML settings file (default: ./ccs.toml when it exists); CCS_* variables override it.")


def data_option(help: str) -> Any:
    """The --data option of `ccs send` and `ccs enqueue`: both accept both forms."""
    return click.option("--data", "data", multiple=True, metavar="KEY=VALUE|JSON",
                        help=help + " Repeatable: KEY=VALUE, or a JSON object ({...}); "
                                    "later entries override earlier keys.")


def parse_data(values: tuple[str, ...]) -> dict[str, Any] | None:
    """Merge --data values in order: `{...}` is a JSON object, anything else KEY=VALUE.

    Bad input is a click.BadParameter naming --data (exit 2), never a traceback."""
    from ccs.limits import LimitError, loads

    data: dict[str, Any] = {}
    for value in values:
        if value.lstrip().startswith("{"):
            try:
                obj = loads(value, "--data")
            except LimitError as exc:
                raise click.BadParameter(str(exc).split(": ", 1)[-1], param_hint="--data") \
                    from None
            except ValueError as exc:
                raise click.BadParameter(f"not a JSON object: {exc}", param_hint="--data") \
                    from None
            if not isinstance(obj, dict):
                raise click.BadParameter(f"expected a JSON object, got {value!r}",
                                         param_hint="--data")
            data.update(obj)
            continue
        key, sep, rest = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE or a JSON object, got {value!r}",
                                     param_hint="--data")
        data[key] = rest
    return data or None


def load_settings(config: str | None) -> Settings:
    """Settings from file and environment; a bad one prints its name and exits with status 2."""
    try:
        return Settings.load(config, os.environ)
    except ConfigError as exc:
        fail_config(exc)
        raise AssertionError("unreachable") from exc


def fail_config(exc: ConfigError) -> None:
    click.echo(f"ccs: configuration error: {exc}", err=True)
    raise SystemExit(CONFIG_EXIT)


def config_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator: a ConfigError raised anywhere in the command exits with status 2."""
    import functools

    from ccs.gateway.outbox.base import StoreUnavailable

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            fail_config(exc)
        except StoreUnavailable as exc:  # Redis down: a clear line, exit 1, no traceback
            raise click.ClickException(str(exc)) from None

    return wrapper


class MaskUrls(logging.Filter):
    """Every log line with the credentials inside URLs masked (an error may quote a URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        masked = mask_urls(text)
        if masked != text:
            record.msg, record.args = masked, None
        return True


def setup_logging(level: str) -> None:
    """Log to stderr at `level` (gateway.log_level), credentials in URLs masked."""
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(MaskUrls())
