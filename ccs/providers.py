"""Build providers by name: the supervisor builds the ones the settings name, nothing more.

A provider plugs in by declaring a `ccs.registry.ProviderSpec` (from a module listed in
CCS_PLUGINS, or an entry point in the `ccs_gateway.providers` group). The built-in ones are
named in BUILTIN: a `create_provider(environ)` function in the module listed for the name, or
the recipe `Client(Config.from_env(environ))`. `register(name, factory, adapt)` is the older
spelling of a declaration without settings (the factory receives the settings as CCS_*
variables). An adapter turns a stored message (a JSON object) into what send() takes.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from ccs import registry
from ccs.provider import Provider
from ccs.registry import Adapter, ProviderSpec
from ccs.settings import ConfigError, Settings

EnvFactory = Callable[[Mapping[str, str]], Provider]

# name -> (module, client class, config class)
BUILTIN = {
    "ccs": ("ccs.client", "CcsClient", "CcsConfig"),
    "http": ("http_fallback.fcm", "FcmClient", "FcmConfig"),
    "legacy": ("http_fallback.legacy", "LegacyClient", "LegacyConfig"),
    "c2dm": ("http_fallback.c2dm", "C2dmClient", "C2dmConfig"),
    "mpns": ("http_fallback.mpns", "MpnsClient", "MpnsConfig"),
    "apns": ("http_fallback.apns", "ApnsClient", "ApnsConfig"),
    "apns-binary": ("http_fallback.apns.binary", "BinaryClient", "ApnsConfig"),
}

# name -> (module, message class, renames of stored keys; None drops the key)
MODELS: dict[str, tuple[str, str, dict[str, str | None]]] = {
    "legacy": ("http_fallback.legacy.model", "LegacyMessage",
               {"message_id": "id", "delivery_receipt_requested": None}),
    "c2dm": ("http_fallback.c2dm.model", "C2dmMessage",
             {"message_id": "id", "to": "registration_id"}),
    "apns": ("http_fallback.apns.model", "Notification", {"to": "device", "message_id": None}),
    "apns-binary": ("http_fallback.apns.model", "Notification",
                    {"to": "device", "message_id": None}),
}

_adapters: dict[str, Adapter] = {}


def register(name: str, factory: EnvFactory, adapt: Adapter | None = None) -> None:
    """Declare provider `name` built by `factory(environ)` (replaces an earlier one)."""
    registry.register(ProviderSpec(name, lambda settings: factory(settings.environ()),
                                   adapt=adapt))


def unregister(name: str) -> None:
    registry.unregister(name)


def load_plugins(modules: list[str]) -> None:
    """Import each plugin module and the installed entry points; ConfigError if one fails."""
    registry.load_plugins(modules)


def _builtin_factory(name: str) -> EnvFactory:
    """The factory for built-in provider `name`; ConfigError naming gateway.providers."""
    if name not in BUILTIN:
        raise ConfigError("gateway.providers", f"unknown provider {name!r} (known: "
                                               f"{', '.join(registry.known())})")
    module, client_name, config_name = BUILTIN[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError("gateway.providers",
                          f"provider {name!r} is not available ({module}: {exc})") from None
    custom = getattr(mod, "create_provider", None)
    if custom is not None:
        return custom
    client_cls, config_cls = getattr(mod, client_name), getattr(mod, config_name)
    return lambda environ: client_cls(config_cls.from_env(environ))


def create(name: str, settings: Settings) -> Provider:
    """Build provider `name` from the settings; a bad setting surfaces as ConfigError."""
    declared = registry.spec(name)
    if declared is not None and any(d.key not in settings for d in declared.settings):
        settings = settings.replace()  # made before the plugin loaded: add its defaults
    try:
        provider = declared.factory(settings) if declared is not None \
            else _builtin_factory(name)(settings.environ())
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ConfigError("gateway.providers", f"provider {name!r}: {exc}") from None
    provider.name = name  # the router's name for it, whatever the class calls itself
    return provider


MPNS_KINDS = {"toast": "Toast", "tile": "Tile", "flip_tile": "FlipTile",
              "iconic_tile": "IconicTile", "cycle_tile": "CycleTile", "raw": "Raw"}


def _mpns_adapter(payload: Mapping[str, Any]) -> Any:
    """{"to": channel URI, one of toast/tile/flip_tile/iconic_tile/cycle_tile/raw, ...}."""
    from http_fallback.mpns import model

    found = [k for k in MPNS_KINDS if k in payload]
    if len(found) != 1:
        raise ValueError(f"notification: give exactly one of {', '.join(MPNS_KINDS)}")
    kind = found[0]
    cls = getattr(model, MPNS_KINDS[kind])
    body = payload[kind]
    note = cls(body) if kind == "raw" else _dataclass_adapter(cls, {})(body)
    rest = {k: v for k, v in payload.items() if k != kind}
    message = _dataclass_adapter(model.MpnsMessage, {"to": "channel_uri", "message_id": "id"})
    return message({**rest, "notification": note})


def _apns_binary_adapter(payload: Mapping[str, Any]) -> Any:
    """A Notification, refusing fields the binary interface has no place for."""
    from http_fallback.apns.binary.client import check_fields

    module, cls_name, renames = MODELS["apns-binary"]
    note = _dataclass_adapter(getattr(importlib.import_module(module), cls_name), renames)(
        payload)
    check_fields(note)
    return note


def adapter_for(name: str) -> Adapter | None:
    """How to turn a stored message into provider `name`'s message; None: pass the dict."""
    declared = registry.spec(name)
    if declared is not None and (declared.adapt is not None or name not in BUILTIN):
        return declared.adapt
    if name in _adapters:
        return _adapters[name]
    if name == "apns-binary":
        _adapters[name] = _apns_binary_adapter
        return _apns_binary_adapter
    if name == "mpns":
        try:
            import http_fallback.mpns  # noqa: F401
        except ImportError:
            return None
        _adapters[name] = _mpns_adapter
        return _mpns_adapter
    if name not in MODELS:
        return None
    module, cls_name, renames = MODELS[name]
    try:
        cls = getattr(importlib.import_module(module), cls_name)
    except (ImportError, AttributeError):
        return None
    fn = _dataclass_adapter(cls, renames)
    _adapters[name] = fn
    return fn


def _dataclass_adapter(cls: type, renames: Mapping[str, str | None]) -> Adapter:
    """Build `cls` from a stored JSON object; an unknown key is a ValueError naming it."""
    names = {f.name for f in dataclasses.fields(cls)}
    tuples = {f.name for f in dataclasses.fields(cls) if "tuple" in str(f.type)}

    def adapt(payload: Mapping[str, Any]) -> Any:
        kwargs: dict[str, Any] = {}
        for key, value in payload.items():
            target = renames.get(key, key)
            if target is None:
                continue
            if target not in names:
                raise ValueError(f"{key}: not a field of {cls.__name__}")
            kwargs[target] = tuple(value) if isinstance(value, list) and target in tuples \
                else value
        return cls(**kwargs)

    return adapt


def to_provider(name: str, payload: Mapping[str, Any]) -> Any:
    """The stored message in the shape provider `name` takes (ValueError names a bad field)."""
    fn = adapter_for(name)
    if fn is not None:
        return fn(payload)
    if name == "http":
        from ccs.router import ccs_to_fcm_v1

        return ccs_to_fcm_v1(payload)
    return dict(payload)


def check_provider(name: str, message: Any, provider: Provider | None = None) -> None:
    """Refuse at once (ValueError naming the field) what built-in provider `name` is sure to
    refuse later: for APNs, everything its request check covers except a missing topic, which
    the provider's configured default may supply. A plugin's provider checks with its
    declaration's `check`."""
    declared = registry.spec(name)
    if declared is not None:
        if declared.check is not None:
            declared.check(message)
        return
    if name != "apns":
        return
    if provider is not None and not type(provider).__module__.startswith("http_fallback.apns"):
        return
    try:
        from http_fallback.apns.model import Notification
        from http_fallback.apns.protocol import prepare
    except ImportError:
        return
    if isinstance(message, Notification):
        prepare(message, message.topic or "com.example.check")
