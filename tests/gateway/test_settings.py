"""Settings: file + environment, errors by name, exit status 2, docs settings table in step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccs.gateway.settings import REGISTRY, ConfigError, Settings, declared, rst_table
from tests.helpers import ROOT, run_ccs


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "ccs.toml"
    p.write_text(text)
    return p


def test_defaults_and_env_overrides_file(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[ccs]\nport = 5236\nhost = "file.example"\n[admin]\nport = 9000\n')
    s = Settings.load(cfg, {"CCS_PORT": "5300", "CCS_CONNECTIONS": "8"})
    assert s["ccs.port"] == 5300 and s.source("ccs.port") == "environment"
    assert s["ccs.host"] == "file.example" and s.source("ccs.host") == str(cfg)
    assert s["ccs.connections"] == 8
    assert s["admin.port"] == 9000
    assert s["ccs.domain"] == "gcm.googleapis.com" and s.source("ccs.domain") == "default"
    assert Settings.load(None, {})["outbox.path"] == "./ccs-outbox.sqlite"


def test_every_setting_has_env_key_type_meaning() -> None:
    every = declared()
    by_env = {s.env: s for s in every}
    assert len(by_env) == len({s.key for s in every}) == len(every)  # each declared once
    for s in every:
        assert s.env.startswith("CCS_") and "." in s.key and s.meaning
        assert s.type in {"str", "int", "float", "bool", "path", "list"}
    wanted = {"CCS_HOST", "CCS_PORT", "CCS_SENDER_ID", "CCS_SERVER_KEY", "CCS_CA_FILE",
              "CCS_CONNECTIONS", "CCS_DOMAIN", "CCS_OUTBOX", "CCS_ADMIN_PORT", "CCS_ADMIN_TOKEN",
              "CCS_FCM_CREDENTIALS", "CCS_APNS_PFX_PASSPHRASE", "CCS_APNS_FEEDBACK_PORT",
              "CCS_C2DM_LOGIN_URL", "CCS_MPNS_KEY", "CCS_LEGACY_KEY", "CCS_WEBHOOK_URL"}
    assert wanted <= set(by_env)


def test_each_provider_declares_its_own_settings() -> None:
    from ccs import registry

    own = {s.key.split(".")[0] for s in REGISTRY}
    assert own == {"gateway", "outbox", "admin", "webhook", "ccs"}  # ccs: only ccs.ca_file
    assert [s.key for s in REGISTRY if s.key.startswith("ccs.")] == ["ccs.ca_file"]
    sections = {"ccs": "ccs", "http": "fcm", "legacy": "legacy", "c2dm": "c2dm", "mpns": "mpns",
                "apns": "apns", "apns-binary": "apns"}
    for name, section in sections.items():
        spec = registry.spec(name)
        assert spec is not None and spec.settings, name
        assert all(s.key.startswith(section + ".") for s in spec.settings), name
    ours = [s.key for s in REGISTRY + registry.builtin_settings()]
    assert [s.key for s in declared()][:len(ours)] == ours  # then any plugin's


@pytest.mark.parametrize("text,key", [
    ("[ccs]\nport = 'x'\n", "ccs.port"),
    ("[ccs]\nbogus = 1\n", "ccs.bogus"),
    ("colour = 'red'\n", "colour"),
    ("[admin]\nport = 70000\n", "admin.port"),
    ("[outbox]\nsync = 'sometimes'\n", "outbox.sync"),
    ("[gateway]\nproviders = ['ccs', 'pigeon']\n", "gateway.providers"),
    ("[ccs\nport = 1\n", "ccs.toml"),
])
def test_bad_file_names_the_key(tmp_path: Path, text: str, key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.load(write(tmp_path, text), {})
    assert key in str(exc.value)


@pytest.mark.parametrize("env,name", [
    ({"CCS_PORT": "fifty"}, "CCS_PORT"),
    ({"CCS_APNS_SANDBOX": "maybe"}, "CCS_APNS_SANDBOX"),
    ({"CCS_CONNECTIONS": "0"}, "CCS_CONNECTIONS"),
])
def test_bad_env_names_the_variable(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.load(None, env)
    assert exc.value.key == name


def test_environ_render_and_secrets_hidden(tmp_path: Path) -> None:
    cfg = write(tmp_path, '[apns]\nsandbox = true\npfx_passphrase = "hunter2"\n')
    s = Settings.load(cfg, {"CCS_SERVER_KEY": "sekrit-key", "CCS_PROVIDERS": "ccs,apns"})
    env = s.environ()
    assert env["CCS_APNS_SANDBOX"] == "true" and env["CCS_PROVIDERS"] == "ccs,apns"
    assert env["CCS_SERVER_KEY"] == "sekrit-key"  # providers need it
    assert "CCS_APNS_HOST" not in env  # unset: the provider's own default applies
    assert "sekrit-key" not in repr(s) and "hunter2" not in repr(s)
    assert s.redacted()["ccs.server_key"] == "***"


def test_console_exits_2_naming_the_key(tmp_path: Path) -> None:
    cfg = write(tmp_path, "[ccs]\nprot = 5235\n")
    r = run_ccs(["settings", "--config", str(cfg)])
    assert r.returncode == 2 and "ccs.prot" in r.stderr and "Traceback" not in r.stderr
    r = run_ccs(["settings", "--config", str(write(tmp_path, "x = [\n"))])
    assert r.returncode == 2 and "TOML" in r.stderr
    r = run_ccs(["settings"], env={"CCS_ADMIN_PORT": "-1"})
    assert r.returncode == 2 and "CCS_ADMIN_PORT" in r.stderr
    r = run_ccs(["settings", "--json"], env={"CCS_SERVER_KEY": "topsecret"})
    assert r.returncode == 0 and "topsecret" not in r.stdout
    assert json.loads(r.stdout)["ccs.server_key"] == "***"


def test_docs_table_matches_registry() -> None:
    page = (ROOT / "docs" / "settings.rst").read_text()
    assert rst_table() in page, "docs/settings.rst is stale: run scripts/settings_table.py --write"
