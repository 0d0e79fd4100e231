"""ccs.registry: declarations, plugin loading, and the capability protocols providers meet."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ccs import registry
from ccs.errors import ConfigError
from ccs.provider import Drains, TakesReceipts, TakesUpstream, WaitsReady
from ccs.registry import ProviderSpec, Setting
from ccs.xmpp.client import CcsClient
from tests.providers import LocalProvider


@pytest.fixture(autouse=True)
def clean() -> Iterator[None]:
    yield
    for name in ("one", "two"):
        registry.unregister(name)


def spec(name: str, *settings: Setting) -> ProviderSpec:
    return ProviderSpec(name, lambda s: LocalProvider(name), settings=settings)


def test_known_lists_built_in_names_then_plugins() -> None:
    assert "one" not in registry.known()
    registry.register(spec("one"))
    assert registry.known()[:len(registry.BUILTIN_NAMES)] == list(registry.BUILTIN_NAMES)
    assert registry.known()[-1] == "one" and registry.spec("one") is not None
    registry.unregister("one")
    assert "one" not in registry.known()


def test_two_plugins_cannot_declare_one_setting() -> None:
    registry.register(spec("one", Setting("one.url", "CCS_ONE_URL", "str", None, "u")))
    with pytest.raises(ValueError) as exc:
        registry.register(spec("two", Setting("two.url", "CCS_ONE_URL", "str", None, "u")))
    assert "CCS_ONE_URL" in str(exc.value) and "'one'" in str(exc.value)
    registry.register(spec("one", Setting("one.url", "CCS_ONE_URL", "str", None, "again")))
    mine = [s.meaning for s in registry.declared_settings() if s.env == "CCS_ONE_URL"]
    assert mine == ["again"]  # replaced (another test file's plugin may be loaded too)


def test_a_plugin_that_fails_to_import_names_itself() -> None:
    with pytest.raises(ConfigError) as exc:
        registry.load_plugins(["tests.no_such_plugin"])
    assert exc.value.args[0] == "gateway.plugins" or "gateway.plugins" in str(exc.value)
    assert "tests.no_such_plugin" in str(exc.value)


def test_an_entry_point_must_declare_the_name_it_is_listed_under() -> None:
    with pytest.raises(ValueError, match="'one'"):
        registry._register_loaded("two", spec("one"))
    with pytest.raises(ValueError, match="registers no provider"):
        registry._register_loaded("two", registry)  # a module that registers nothing
    registry._register_loaded("one", lambda: spec("one"))
    assert registry.spec("one") is not None


def test_capabilities_are_found_by_protocol_not_by_name_probing() -> None:
    local = LocalProvider("x")
    assert not isinstance(local, TakesUpstream | TakesReceipts | Drains | WaitsReady)
    assert issubclass(CcsClient, TakesUpstream) and issubclass(CcsClient, TakesReceipts)
    assert issubclass(CcsClient, Drains) and issubclass(CcsClient, WaitsReady)
