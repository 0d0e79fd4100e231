"""A provider package outside ccs/ and http_fallback/ (tests/plugin_webpush) runs through the
gateway and the console from CCS_PLUGINS + CCS_PROVIDERS alone, against a real loopback server."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gevent
import pytest
from gevent import subprocess as gsubprocess

from ccs import registry
from ccs.errors import ConfigError
from ccs.gateway.router import RouteError
from ccs.gateway.settings import Settings
from ccs.gateway.supervisor import Supervisor
from ccs.provider import Drains, TakesReceipts, TakesUpstream
from tests.helpers import ROOT, ccs_env, run_ccs, wait_until
from tests.plugin_webpush.emulator import WebpushEmulator

PLUGIN = "tests.plugin_webpush"


@pytest.fixture
def service() -> Iterator[WebpushEmulator]:
    emulator = WebpushEmulator().start()
    yield emulator
    emulator.stop()


@pytest.fixture(autouse=True)
def forget_plugin() -> Iterator[None]:
    """Each test starts with webpush unknown, as a fresh process would."""
    registry.unregister("webpush")
    sys.modules.pop(PLUGIN, None)
    yield
    registry.unregister("webpush")
    sys.modules.pop(PLUGIN, None)


def env_for(service: WebpushEmulator, **extra: str) -> dict[str, str]:
    return {"CCS_PLUGINS": PLUGIN, "CCS_PROVIDERS": "webpush", "CCS_WEBPUSH_URL": service.url,
            "CCS_WEBPUSH_TOKEN": "sekrit-token-1", **extra}


def test_the_settings_check_knows_a_plugins_provider_and_settings() -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.load(environ={"CCS_PROVIDERS": "webpush"})
    assert exc.value.args[0] == "CCS_PROVIDERS" or "CCS_PROVIDERS" in str(exc.value)
    assert "'webpush'" in str(exc.value) and "apns-binary" in str(exc.value)
    s = Settings.load(environ={"CCS_PLUGINS": PLUGIN, "CCS_PROVIDERS": "ccs,webpush",
                               "CCS_WEBPUSH_TIMEOUT": "2.5", "CCS_WEBPUSH_TOKEN": "t0ken"})
    assert s["gateway.providers"] == ["ccs", "webpush"] and s["webpush.timeout"] == 2.5
    assert s.redacted()["webpush.token"] == "***" and "t0ken" not in repr(s)
    assert s.environ()["CCS_WEBPUSH_TIMEOUT"] == "2.5"
    with pytest.raises(ConfigError) as exc:  # its declared type and range hold
        Settings.load(environ={"CCS_PLUGINS": PLUGIN, "CCS_WEBPUSH_TIMEOUT": "0"})
    assert "CCS_WEBPUSH_TIMEOUT" in str(exc.value)
    with pytest.raises(ConfigError) as exc:  # still refused, naming the known ones
        Settings.load(environ={"CCS_PLUGINS": PLUGIN, "CCS_PROVIDERS": "webpsh"})
    assert "'webpsh'" in str(exc.value) and "webpush" in str(exc.value)


def test_a_plugins_settings_in_the_file_are_known(tmp_path: Path) -> None:
    path = tmp_path / "ccs.toml"
    path.write_text('[gateway]\nplugins = ["tests.plugin_webpush"]\nproviders = ["webpush"]\n'
                    '[webpush]\nurl = "http://127.0.0.1:9/push"\n')
    s = Settings.load(path, environ={})
    assert s["webpush.url"] == "http://127.0.0.1:9/push"
    assert s.source("webpush.url") == str(path)


def test_a_setting_of_the_gateways_own_is_refused_to_a_plugin() -> None:
    taken = registry.Setting("admin.port", "CCS_ADMIN_PORT", "int", 1, "mine")
    registry.register(registry.ProviderSpec("greedy", lambda s: None,  # type: ignore
                                            settings=(taken,)))
    try:
        with pytest.raises(ConfigError) as exc:
            Settings.defaults()
        assert "admin.port" in str(exc.value)
    finally:
        registry.unregister("greedy")


def test_an_entry_point_declares_a_provider(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "webpush_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: webpush-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[ccs_gateway.providers]\nwebpush = tests.plugin_webpush.declaration:spec\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    s = Settings.load(environ={"CCS_PROVIDERS": "webpush"})  # no CCS_PLUGINS
    assert s["gateway.providers"] == ["webpush"] and "webpush.url" in s
    r = run_ccs(["settings", "--json"], env={"CCS_PROVIDERS": "webpush",
                                             "PYTHONPATH": f"{ROOT}:{tmp_path}"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["gateway.providers"] == ["webpush"]
    (dist / "entry_points.txt").write_text(
        "[ccs_gateway.providers]\npushy = tests.plugin_webpush.declaration:spec\n")
    registry.unregister("webpush")
    with pytest.raises(ConfigError) as exc:
        Settings.load(environ={})
    assert "pushy" in str(exc.value) and "'webpush'" in str(exc.value)


def test_the_gateway_sends_through_the_plugin(service: WebpushEmulator) -> None:
    settings = Settings.load(environ=env_for(service, CCS_OUTBOX=":memory:",
                                             CCS_ADMIN_ENABLED="false"))
    sup = Supervisor(settings).start()
    try:
        ok_id = sup.enqueue({"to": "sub-1", "data": {"k": "v"}}, via="webpush")
        gone_id = sup.enqueue({"to": "gone-2"}, via="webpush")
        ok, gone = sup.result(ok_id).get(timeout=20), sup.result(gone_id).get(timeout=20)
        assert (str(ok.status), ok.via) == ("ok", "webpush")
        assert (str(gone.status), gone.error) == ("failed", "HTTP_410")
        assert sup.status(ok_id)["state"] == "ok" and sup.status(gone_id)["state"] == "failed"
        got = {m["to"]: m for m in service.received}
        assert got["sub-1"]["data"] == {"k": "v"}
        assert got["sub-1"]["authorization"] == "Bearer sekrit-token-1"
        with pytest.raises(RouteError) as exc:  # the adapter refuses at enqueue, naming it
            sup.enqueue({"to": "sub-3", "colour": "red"}, via="webpush")
        assert "colour" in str(exc.value)
        with pytest.raises(RouteError) as exc:  # and so does the declaration's check
            sup.enqueue({"to": "x" * 65}, via="webpush")
        assert "64" in str(exc.value)
        assert len(service.received) == 2
        provider = sup.providers["webpush"]
        assert not isinstance(provider, TakesUpstream | TakesReceipts | Drains)
    finally:
        sup.stop(timeout=5)


def counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state"))
    finally:
        db.close()


def test_ccs_enqueue_and_ccs_run_through_the_plugin(tmp_path: Path,
                                                    service: WebpushEmulator) -> None:
    box = tmp_path / "o.sqlite"
    env = env_for(service, CCS_OUTBOX=str(box), CCS_ADMIN_ENABLED="false")
    r = run_ccs(["enqueue", "--via", "webpush", "--tokens-file", "-"], env=env,
                input="sub-a\ngone-b\n")
    assert r.returncode == 0, r.stderr
    assert "enqueued 2 messages" in r.stdout
    proc = gsubprocess.Popen([sys.executable, "-m", "ccs", "run"], env=ccs_env(env), cwd=ROOT,
                             stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: counts(box) == {"ok": 1, "failed": 1}, timeout=30,
                   what="both outcomes recorded")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert sorted(m["to"] for m in service.received) == ["gone-b", "sub-a"]


def test_ccs_settings_lists_the_plugins_settings(service: WebpushEmulator) -> None:
    r = run_ccs(["settings"], env=env_for(service))
    assert r.returncode == 0, r.stderr
    assert f"webpush.url = '{service.url}'  [environment]" in r.stdout
    assert "webpush.token = '***'" in r.stdout and "sekrit" not in r.stdout
    r = run_ccs(["settings"], env={"CCS_PROVIDERS": "webpush"})
    assert r.returncode == 2 and "unknown provider 'webpush'" in r.stderr


def test_ccs_send_via_the_plugin(service: WebpushEmulator) -> None:
    r = run_ccs(["send", "--via", "webpush", "sub-1", "gone-2", "--data", "a=1",
                 "--title", "hi", "--json"], env=env_for(service))
    assert r.returncode == 1, r.stderr  # one failed
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert [(x["status"], x["to"]) for x in lines] == [("ok", "sub-1"), ("failed", "gone-2")]
    assert service.received[0]["data"] == {"a": "1", "title": "hi"}
    r = run_ccs(["send", "--via", "nopush", "sub-1"], env=env_for(service))
    assert r.returncode == 2 and "nopush" in r.stderr and "webpush" in r.stderr
    r = run_ccs(["send", "--via", "webpush", "sub-1"],
                env=env_for(service, CCS_WEBPUSH_URL="http://127.0.0.1:1/push"))
    assert r.returncode == 3 and "could not reach webpush" in r.stderr


def test_ccs_emulate_runs_the_plugins_emulator(service: WebpushEmulator) -> None:
    proc = gsubprocess.Popen([sys.executable, "-m", "ccs", "emulate", "webpush"],
                             env=ccs_env({"CCS_PLUGINS": PLUGIN}), cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout
        with gevent.Timeout(30):
            info = json.loads(proc.stdout.readline())
        assert info["emulator"] == "webpush"
        r = run_ccs(["send", "--via", "webpush", "sub-9", "--json"],
                    env=env_for(service, CCS_WEBPUSH_URL=info["url"]))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert service.received == []  # it went to the emulator `ccs emulate` ran


def test_settings_made_before_the_plugin_loaded_get_its_defaults(
        service: WebpushEmulator) -> None:
    from ccs.gateway import providers
    s = Settings.defaults().replace(gateway__plugins=[PLUGIN])  # no webpush.* keys yet
    assert "webpush.url" not in s
    providers.load_plugins(s["gateway.plugins"])
    with pytest.raises(ConfigError) as exc:  # the declared default (unset) reaches it
        providers.create("webpush", s)
    assert "webpush.url" in str(exc.value)
    sup = Supervisor(s.replace(webpush__url=service.url, gateway__providers=["webpush"],
                               admin__enabled=False, outbox__path=":memory:")).start()
    try:  # known now: its settings take values, the others their declared defaults
        assert sup.providers["webpush"].timeout == 5.0  # type: ignore[attr-defined]
        assert str(sup.result(sup.enqueue({"to": "s"}, via="webpush")).get(timeout=20).status) \
            == "ok"
    finally:
        sup.stop(timeout=5)
