"""The built-in providers' declarations (http_fallback/<provider>/declaration.py), as the
console reads them through the registry."""

from __future__ import annotations

import pytest

from ccs import registry
from ccs.gateway.settings import Settings


@pytest.mark.parametrize("name, changes, first, expected", [
    ("http", {}, None, [("fcm.googleapis.com", 443)]),
    ("http", {"fcm__url": "http://127.0.0.1:8080"}, None, [("127.0.0.1", 8080)]),
    ("legacy", {}, None, [("fcm.googleapis.com", 443)]),
    ("c2dm", {"c2dm__url": "https://127.0.0.1:9/c2dm/send"}, None,
     [("www.google.com", 443), ("127.0.0.1", 9)]),
    ("mpns", {}, "http://mpns.example:81/c/1", [("mpns.example", 81)]),
    ("mpns", {}, None, []),
    ("apns", {}, None, [("api.push.apple.com", 443)]),
    ("apns", {"apns__sandbox": True, "apns__port": 2197}, None,
     [("api.sandbox.push.apple.com", 2197)]),
    ("apns-binary", {"apns__sandbox": True}, None, [("gateway.sandbox.push.apple.com", 2195)]),
    ("apns-binary", {"apns__legacy_host": "127.0.0.1", "apns__legacy_port": 7}, None,
     [("127.0.0.1", 7)]),
])
def test_endpoints_ccs_send_tries_first(name, changes, first, expected) -> None:
    declared = registry.spec(name)
    assert declared is not None and declared.endpoints is not None
    assert declared.endpoints(Settings.defaults().replace(**changes), first) == expected


def test_a_registered_name_replaces_the_built_in_declaration() -> None:
    built_in = registry.spec("legacy")
    registry.register(registry.ProviderSpec("legacy", lambda s: None))  # type: ignore[arg-type]
    try:
        assert registry.spec("legacy") is not built_in
    finally:
        registry.unregister("legacy")
    assert registry.spec("legacy") == built_in  # found again from its entry point


def test_loading_the_settings_imports_only_the_declarations() -> None:
    """Every `ccs` command loads the settings, so the built-in providers' declarations and
    their settings modules are read, but no client, model, protocol core or emulator."""
    import json
    import subprocess
    import sys

    code = ("import sys, json; from ccs.gateway.settings import Settings; "
            "Settings.load(None, {}); print(json.dumps(sorted(m for m in sys.modules "
            "if m.startswith(('http_fallback', 'ccs.xmpp')))))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    loaded = set(json.loads(r.stdout))
    packages = {"ccs.xmpp", "http_fallback.apns", "http_fallback.c2dm", "http_fallback.fcm",
                "http_fallback.legacy", "http_fallback.mpns"}
    helpers = {"http_fallback", "http_fallback.adapt", "http_fallback.endpoints",
               "http_fallback.lazy"}
    assert loaded == packages | helpers | {p + ".declaration" for p in packages} | {
        p + ".settings" for p in packages}


@pytest.mark.parametrize("name, changes, key", [
    ("http", {}, "CCS_FCM_CREDENTIALS"),
    ("legacy", {}, "CCS_LEGACY_KEY"),
    ("c2dm", {}, "CCS_C2DM_EMAIL"),
    ("c2dm", {"c2dm__email": "a@b"}, "CCS_C2DM_PASSWORD"),
    ("mpns", {"mpns__cert": "/c.pem"}, "CCS_MPNS_CERT"),
    ("apns", {"apns__key_file": "/k.p8"}, "ApnsConfig.key_id"),
])
def test_a_provider_refuses_its_settings_with_the_one_config_error(name, changes, key) -> None:
    from ccs.errors import ConfigError
    from ccs.gateway import providers

    with pytest.raises(ConfigError) as caught:
        providers.create(name, Settings.defaults().replace(**changes))
    assert caught.value.key == key  # named where it was set, not wrapped in gateway.providers
    assert isinstance(caught.value, ValueError) and str(caught.value).startswith(key + ": ")


ENVIRONMENTS = {
    "ccs": ("ccs.xmpp.config", "CcsConfig", {
        "CCS_SENDER_ID": "123", "CCS_SERVER_KEY": "k", "CCS_HOST": "h.example", "CCS_PORT": "5236",
        "CCS_CONNECTIONS": "3", "CCS_DOMAIN": "fcm.googleapis.com", "CCS_WINDOW": "50",
        "CCS_ACK_TIMEOUT": "9", "CCS_NO_SESSION_TIMEOUT": "4"}),
    "http": ("http_fallback.fcm.config", "FcmConfig", {
        "CCS_FCM_CREDENTIALS": "/c.json", "CCS_FCM_PROJECT": "p", "CCS_FCM_URL": "https://f.x",
        "CCS_FCM_IID_URL": "https://i.x", "CCS_FCM_CONCURRENCY": "7", "CCS_FCM_CONNECTIONS": "3"}),
    "legacy": ("http_fallback.legacy.client", "LegacyConfig", {
        "CCS_LEGACY_URL": "https://l.x/send", "CCS_SERVER_KEY": "from-ccs"}),
    "c2dm": ("http_fallback.c2dm.client", "C2dmConfig", {
        "CCS_C2DM_EMAIL": "a@b", "CCS_C2DM_PASSWORD": "pw", "CCS_C2DM_SOURCE": "s",
        "CCS_C2DM_QUOTA_LOCK": "/q.lock", "CCS_C2DM_URL": "https://c.x/send",
        "CCS_C2DM_CALLBACK_URL": "https://cb.x", "CCS_C2DM_CALLBACK_SECRET": "sec"}),
    "mpns": ("http_fallback.mpns.client", "MpnsConfig", {
        "CCS_MPNS_CERT": "/c.pem", "CCS_MPNS_KEY": "/k.pem"}),
    "apns": ("http_fallback.apns.config", "ApnsConfig", {
        "CCS_APNS_SANDBOX": "true", "CCS_APNS_PORT": "2197", "CCS_APNS_CERT": "/c.pem",
        "CCS_APNS_CERT_KEY": "/k.pem", "CCS_APNS_TOPIC": "com.x", "CCS_APNS_CONNECTIONS": "5",
        "CCS_APNS_RETRY_ATTEMPTS": "1", "CCS_APNS_RETRY_SECONDS": "7.5",
        "CCS_APNS_BINARY_CACHE": "9", "CCS_APNS_BINARY_QUIET": "0.5",
        "CCS_APNS_FEEDBACK_PORT": "7"}),
}


@pytest.mark.parametrize("name", sorted(ENVIRONMENTS))
def test_from_env_and_the_gateway_read_the_same_declared_settings(name) -> None:
    """A provider's config reads its variables through its declared settings: from_env and the
    gateway's typed settings give the same config, and every variable set took effect."""
    import dataclasses
    import importlib

    module, cls_name, env = ENVIRONMENTS[name]
    cls = getattr(importlib.import_module(module), cls_name)
    direct = cls.from_env(env)
    through_gateway = cls.from_settings(Settings.load(None, env))
    assert direct == through_gateway
    default = {f.name: f.default for f in dataclasses.fields(cls)}
    changed = {k for k, v in dataclasses.asdict(direct).items() if v != default.get(k)}
    names = [name, "apns-binary"] if name == "apns" else [name]
    declared = {s.env for n in names for s in registry.spec(n).settings} | {"CCS_SERVER_KEY"}
    assert set(env) <= declared  # only declared variables were used...
    assert len(changed) >= len(env)  # ...and each one changed a field
