"""Shared console pieces: the --config option and settings errors mapped to exit status 2."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import click

from ccs.settings import ConfigError, Settings

CONFIG_EXIT = 2

config_option = click.option(
    "--config", "config", type=click.Path(dir_okay=False), default=None,
    help="TOML settings file (default: ./ccs.toml when it exists); CCS_* variables override it.")


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

    from ccs.outbox.base import StoreUnavailable

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as exc:
            fail_config(exc)
        except StoreUnavailable as exc:  # Redis down: a clear line, exit 1, no traceback
            raise click.ClickException(str(exc)) from None

    return wrapper
