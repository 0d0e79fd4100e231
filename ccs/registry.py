"""Provider declarations: what the gateway and the console know of a provider that plugs in.

A provider package declares one `ProviderSpec` (name, its settings, factory, message adapter,
optional `ccs send` payload builder and emulator) and either registers it when imported (a
module named in CCS_PLUGINS calls `register`) or names it as an entry point in the
`ccs_gateway.providers` group. Plugins are loaded before the settings are checked, so a
registered name is a valid CCS_PROVIDERS entry and its settings are known to the file, the
environment and `ccs settings`.

This module sits at the bottom: it imports nothing of the gateway, only the seam.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ccs.errors import ConfigError
from ccs.provider import Provider

ENTRY_POINT_GROUP = "ccs_gateway.providers"


@dataclass(frozen=True, slots=True)
class Setting:
    key: str  # dotted TOML key: section.name
    env: str  # CCS_* environment variable
    type: str  # str, int, float, bool, path, list
    default: Any
    meaning: str
    secret: bool = False
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


# Settings more than one provider reads (declared here once; the gateway and the CCS provider
# list them among theirs).
CA_FILE = Setting("ccs.ca_file", "CCS_CA_FILE", "path", None,
                  "extra CA certificates (PEM) to trust, for every provider; TLS is always "
                  "verified")
SERVER_KEY = Setting("ccs.server_key", "CCS_SERVER_KEY", "str", None,
                     "server key (SASL password)", secret=True)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_env(s: Setting, raw: str) -> Any:
    """A variable's text as the setting's type (None when empty); ConfigError naming it."""
    text = raw.strip()
    if s.type in ("str", "path"):
        return text or None
    if text == "":
        return None
    if s.type == "int":
        try:
            return int(text)
        except ValueError:
            raise ConfigError(s.env, f"expected an integer, got {raw!r}") from None
    if s.type == "float":
        try:
            return float(text)
        except ValueError:
            raise ConfigError(s.env, f"expected a number, got {raw!r}") from None
    if s.type == "bool":
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ConfigError(s.env, f"expected true or false, got {raw!r}")
    return [p.strip() for p in text.split(",") if p.strip()]  # list


def read_env(declared: Iterable[Setting], environ: Mapping[str, str]) -> dict[str, Any]:
    """TOML key -> typed value of each declared setting whose variable is set and not empty.
    A provider's `from_env` reads its variables through its declaration, so each CCS_* name is
    written once."""
    out = {}
    for s in declared:
        raw = environ.get(s.env)
        if raw is not None and (value := parse_env(s, raw)) is not None:
            out[s.key] = value
    return out


def config_fields(values: Mapping[str, Any], declared: Iterable[Setting], config: type,
                  renames: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for the dataclass `config` from typed settings: each declared setting
    with a value (None: unset, the config's default stays) goes to the field named by its key
    after the section (apns.port -> port) or by `renames`; keys with no such field are left."""
    names = {f.name for f in dataclasses.fields(config)}
    out = {}
    for s in declared:
        value = values.get(s.key)
        field_name = (renames or {}).get(s.key, s.key.partition(".")[2])
        if value is not None and field_name in names:
            out[field_name] = value
    return out


# The typed settings (a read-only mapping from TOML key to value) -> a provider, not started.
Factory = Callable[[Mapping[str, Any]], Provider]
# A stored message (JSON object) -> what the provider's send() takes; ValueError names a field.
Adapter = Callable[[Mapping[str, Any]], Any]
# `ccs send`: (target, console options) -> the stored-message JSON for one target.
PayloadBuilder = Callable[[str | None, Any], dict[str, Any]]


class RunningEmulator(Protocol):
    """A started emulator: `ccs emulate NAME` prints info() as JSON, stop()s on a signal."""

    def info(self) -> dict[str, Any]: ...

    def stop(self) -> None: ...


class Refused(Exception):
    """A preflight's service answered and refused the credentials (`ccs send` exit 2, not 3)."""


# Before `ccs send` starts it: (provider, timeout) -> None when the service answered in time,
# else why it could not be reached; Refused when it refused the credentials.
Preflight = Callable[[Provider, float], "str | None"]

# `ccs emulate NAME`: port on 127.0.0.1 (0: any) -> a started emulator.
EmulatorFactory = Callable[[int], RunningEmulator]


@dataclass(frozen=True)
class ProviderSpec:
    """Everything the gateway and console need of provider `name`.

    `adapt` runs at enqueue (a ValueError is refused at once, naming the field) and again at
    send; `check`, when given, refuses more of the adapted message at enqueue.
    `endpoints(settings, first_target)` lists (host, port) pairs `ccs send` tries before
    sending (exit 3 when one does not answer)."""

    name: str
    factory: Factory
    settings: tuple[Setting, ...] = ()
    adapt: Adapter | None = None
    check: Callable[[Any], None] | None = None
    payload: PayloadBuilder | None = None
    endpoints: Callable[[Mapping[str, Any], str | None], list[tuple[str, int]]] | None = None
    emulator: EmulatorFactory | None = None
    # `ccs emulate NAME` with options of its own: returns a click command (used over emulator).
    command: Callable[[], Any] | None = None
    preflight: Preflight | None = None
    summary: str = field(default="", compare=False)


# Names the gateway ships, each declared in its own package (ccs/xmpp/declaration.py,
# http_fallback/<provider>/declaration.py) and named by an entry point in setup.cfg.
BUILTIN_NAMES = ("ccs", "http", "legacy", "c2dm", "mpns", "apns", "apns-binary")

_specs: dict[str, ProviderSpec] = {}
_tried: set[str] = set()  # names spec() looked up among the entry points


def register(spec: ProviderSpec) -> None:
    """Declare provider `spec.name` (replaces an earlier declaration of that name).

    ValueError when one of its settings takes a key or variable another plugin's declaration
    owns (a clash with the gateway's own settings is refused when the settings load)."""
    owners: dict[str, str] = {}
    for other in _specs.values():
        if other.name != spec.name:
            owners |= {s.key: other.name for s in other.settings}
            owners |= {s.env: other.name for s in other.settings}
    for s in spec.settings:
        for name in (s.key, s.env):
            if name in owners:
                raise ValueError(f"provider {spec.name!r}: setting {name} is already "
                                 f"declared by provider {owners[name]!r}")
    _specs[spec.name] = spec


def unregister(name: str) -> None:
    _specs.pop(name, None)
    _tried.discard(name)


def spec(name: str) -> ProviderSpec | None:
    """The declaration of `name`: registered, or loaded now from its entry point (the built-in
    HTTP providers and APNs declare themselves so); ConfigError if that entry point fails."""
    found = _specs.get(name)
    if found is None and name not in _tried:
        _tried.add(name)
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
            _load_entry_point(ep)
        found = _specs.get(name)
    return found


def specs() -> list[ProviderSpec]:
    return list(_specs.values())


def known() -> list[str]:
    """Every provider name CCS_PROVIDERS may list now: the built-in ones, then plugins'."""
    return [*BUILTIN_NAMES, *(n for n in _specs if n not in BUILTIN_NAMES)]


def declared_settings() -> tuple[Setting, ...]:
    """The settings plugins declared, in registration order (built-in names' excluded)."""
    return tuple(s for sp in _specs.values() if sp.name not in BUILTIN_NAMES
                 for s in sp.settings)


def builtin_settings() -> tuple[Setting, ...]:
    """The settings each built-in provider declares (its package's declaration, loaded now if
    it was not), in BUILTIN_NAMES order."""
    return tuple(s for name in BUILTIN_NAMES if (sp := spec(name)) is not None
                 for s in sp.settings)


def load_plugins(modules: list[str] | tuple[str, ...] = ()) -> None:
    """Import each module named (it registers its providers), then every installed entry point
    of the `ccs_gateway.providers` group but the built-in names'; ConfigError naming
    gateway.plugins if one fails."""
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ConfigError("gateway.plugins", f"cannot import {module!r}: {exc}") from None
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        # A built-in name is known already and loads when spec() asks for it: importing every
        # built-in package here would cost each `ccs` command about 0.14 s.
        if ep.name not in _specs and ep.name not in BUILTIN_NAMES:
            _load_entry_point(ep)


def _load_entry_point(ep: importlib.metadata.EntryPoint) -> None:
    try:
        _register_loaded(ep.name, ep.load())
    except Exception as exc:
        raise ConfigError("gateway.plugins", f"entry point {ENTRY_POINT_GROUP} "
                                             f"'{ep.name} = {ep.value}': {exc}") from None


def _register_loaded(name: str, obj: Any) -> None:
    """An entry point names a ProviderSpec, a function returning one, or a module that
    registers its providers when imported."""
    if callable(obj) and not isinstance(obj, ProviderSpec | type):
        obj = obj()
    if isinstance(obj, ProviderSpec):
        if obj.name != name:
            raise ValueError(f"declares provider {obj.name!r}, not {name!r}")
        register(obj)
    elif name not in _specs:
        raise ValueError(f"registers no provider {name!r}")
