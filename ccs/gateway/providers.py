"""Build providers by name: the supervisor builds the ones the settings name, nothing more.

A provider plugs in by declaring a `ccs.registry.ProviderSpec` (from a module listed in
CCS_PLUGINS, or an entry point in the `ccs_gateway.providers` group). The built-in ones
declare themselves the same way (ccs/xmpp/declaration.py, http_fallback/<provider>/
declaration.py, named in setup.cfg). `register(name, factory, adapt)` is the older
spelling of a declaration without settings (the factory receives the settings as CCS_*
variables). An adapter turns a stored message (a JSON object) into what send() takes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ccs import registry
from ccs.gateway.settings import ConfigError, Settings
from ccs.provider import Provider
from ccs.registry import Adapter, ProviderSpec

EnvFactory = Callable[[Mapping[str, str]], Provider]

def register(name: str, factory: EnvFactory, adapt: Adapter | None = None) -> None:
    """Declare provider `name` built by `factory(environ)` (replaces an earlier one)."""
    registry.register(ProviderSpec(name, lambda settings: factory(settings.environ()),
                                   adapt=adapt))


def unregister(name: str) -> None:
    registry.unregister(name)


def load_plugins(modules: list[str]) -> None:
    """Import each plugin module and the installed entry points; ConfigError if one fails."""
    registry.load_plugins(modules)


def _spec(name: str) -> ProviderSpec:
    """The declaration of provider `name`, through the registry; ConfigError naming
    gateway.providers when there is none."""
    declared = registry.spec(name)
    if declared is None:
        raise ConfigError("gateway.providers", f"unknown provider {name!r} (known: "
                                               f"{', '.join(registry.known())}; a built-in one "
                                               "is missing: reinstall the package)")
    return declared


def create(name: str, settings: Settings) -> Provider:
    """Build provider `name` from the settings; a bad setting surfaces as ConfigError."""
    declared = _spec(name)
    if any(d.key not in settings for d in declared.settings):
        settings = settings.replace()  # made before the plugin loaded: add its defaults
    try:
        provider = declared.factory(settings)
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ConfigError("gateway.providers", f"provider {name!r}: {exc}") from None
    provider.name = name  # the router's name for it, whatever the class calls itself
    return provider


def adapter_for(name: str) -> Adapter | None:
    """How to turn a stored message into provider `name`'s message; None: pass the dict."""
    declared = registry.spec(name)
    return declared.adapt if declared is not None else None


def to_provider(name: str, payload: Mapping[str, Any]) -> Any:
    """The stored message in the shape provider `name` takes (ValueError names a bad field)."""
    fn = adapter_for(name)
    if fn is not None:
        return fn(payload)
    if name == "http":
        from ccs.gateway.router import ccs_to_fcm_v1

        return ccs_to_fcm_v1(payload)
    return dict(payload)


def check_provider(name: str, message: Any, provider: Provider | None = None) -> None:
    """Refuse at once (ValueError naming the field) what provider `name` is sure to refuse
    later, with its declaration's `check`. A built-in name served by another class (a test's
    stand-in) is not checked: the check is the built-in class's."""
    declared = registry.spec(name)
    if declared is None or declared.check is None:
        return
    home = declared.factory.__module__.rpartition(".")[0]
    if (provider is not None and name in registry.BUILTIN_NAMES
            and not type(provider).__module__.startswith(home)):
        return
    declared.check(message)
