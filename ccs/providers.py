"""Find providers by name: the supervisor builds the ones the settings name, nothing more.

A provider module plugs in either by calling `register(name, factory)` or by defining
`create_provider(environ) -> Provider` in the module listed for its name in MODULES; the
factory receives the settings rendered as CCS_* variables (file + environment).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping

from ccs.provider import Provider
from ccs.settings import ConfigError, Settings

Factory = Callable[[Mapping[str, str]], Provider]

MODULES = {
    "ccs": "ccs.client",
    "http": "http_fallback.fcm.client",
    "legacy": "http_fallback.legacy.client",
    "c2dm": "http_fallback.c2dm.client",
    "mpns": "http_fallback.mpns.client",
    "apns": "http_fallback.apns.client",
}

_factories: dict[str, Factory] = {}


def register(name: str, factory: Factory) -> None:
    """Make provider `name` available to the supervisor (replaces an earlier registration)."""
    _factories[name] = factory


def unregister(name: str) -> None:
    _factories.pop(name, None)


def load_plugins(modules: list[str]) -> None:
    """Import each plugin module (which registers its providers); ConfigError if one fails."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ConfigError("gateway.plugins", f"cannot import {module!r}: {exc}") from None


def _ccs_factory(environ: Mapping[str, str]) -> Provider:
    from ccs.client import CcsClient, CcsConfig

    return CcsClient(CcsConfig.from_env(environ))


def factory_for(name: str) -> Factory:
    """The factory for `name`; ConfigError naming gateway.providers when there is none."""
    if name in _factories:
        return _factories[name]
    module = MODULES.get(name)
    if module is None:
        raise ConfigError("gateway.providers", f"unknown provider {name!r}")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError("gateway.providers",
                          f"provider {name!r} is not available ({module}: {exc})") from None
    fn = getattr(mod, "create_provider", None)
    if fn is None and name == "ccs":
        fn = _ccs_factory
    if fn is None:
        raise ConfigError("gateway.providers",
                          f"provider {name!r}: {module} has no create_provider(environ)")
    return fn


def create(name: str, settings: Settings) -> Provider:
    """Build provider `name` from the settings; a bad setting surfaces as ConfigError."""
    try:
        provider = factory_for(name)(settings.environ())
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ConfigError("gateway.providers", f"provider {name!r}: {exc}") from None
    provider.name = name  # the router's name for it, whatever the class calls itself
    return provider
