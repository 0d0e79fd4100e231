"""Outbox files that cannot serve: each is exit 2 naming outbox.path, never a traceback; a full
disk is a clear 503 while running and a clean stop after."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from ccs.gateway.outbox.sqlite import SqliteStore
from ccs.gateway.settings import ConfigError, Settings
from ccs.gateway.supervisor import Supervisor
from tests.gateway.admin.test_hostile import raw, request
from tests.gateway.admin.test_server import TOKEN  # noqa: E402
from tests.helpers import run_ccs
from tests.providers import LocalProvider


def bad_outboxes(tmp: Path) -> dict[str, str]:
    good = tmp / "good.sqlite"
    SqliteStore(str(good)).close()
    data = good.read_bytes()
    (tmp / "truncated.sqlite").write_bytes(data[: len(data) // 2])
    (tmp / "garbage.sqlite").write_bytes(b"\x00not an outbox\xff" * 500)
    damaged = bytearray(data)
    damaged[:16] = b"corrupted header"
    (tmp / "damaged.sqlite").write_bytes(bytes(damaged))
    foreign = sqlite3.connect(tmp / "foreign.sqlite")
    foreign.execute("CREATE TABLE messages (id TEXT, body TEXT)")
    foreign.commit()
    foreign.close()
    (tmp / "adir").mkdir()
    return {"truncated": str(tmp / "truncated.sqlite"), "garbage": str(tmp / "garbage.sqlite"),
            "damaged": str(tmp / "damaged.sqlite"), "foreign": str(tmp / "foreign.sqlite"),
            "directory": str(tmp / "adir"), "missing parent": str(tmp / "no" / "such.sqlite"),
            "unwritable": "/proc/version", "uncreatable": "/proc/ccs-outbox.sqlite"}


def test_bad_outbox_files_are_config_errors_in_python(tmp_path: Path) -> None:
    for name, path in bad_outboxes(tmp_path).items():
        with pytest.raises(ConfigError) as exc:
            SqliteStore(path).close()
        assert exc.value.key == "outbox.path", name


@pytest.mark.parametrize("command", [["run"], ["status"], ["enqueue", "--tokens-file", "-"]])
def test_bad_outbox_files_exit_2_naming_outbox_path(tmp_path: Path, command: list[str]) -> None:
    for name, path in bad_outboxes(tmp_path).items():
        r = run_ccs(command, env={"CCS_PLUGINS": "tests.plugin_local", "CCS_OUTBOX": path,
                                  "CCS_ADMIN_TOKEN": TOKEN, "CCS_ADMIN_PORT": "0"},
                    input="tok1\n")
        assert r.returncode == 2, (name, r.stderr)
        assert "outbox.path" in r.stderr and "Traceback" not in r.stderr, (name, r.stderr)


def test_a_full_disk_is_503_then_a_clean_stop(tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:
    store = SqliteStore(str(tmp_path / "full.sqlite"))
    s = Settings.defaults().replace(admin__port=0, admin__token=TOKEN)
    p = LocalProvider("ccs")
    p.gate.clear()  # messages stay in flight
    sup = Supervisor(s, store=store, providers={"ccs": p}).start()
    ids = sup.enqueue_many([{"to": f"t{i}"} for i in range(3)])
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full from now on
    code, body = raw(sup.admin.port, request(
        "POST", "/v1/messages", b'{"messages": [' + b",".join(
            b'{"to": "t%d", "data": {"pad": "%s"}}' % (i, b"x" * 3000) for i in range(20))
        + b"]}"))
    assert code == 503 and "full" in body["error"]
    def full(*args: object) -> None:  # what SQLite says when even an update finds no room
        raise sqlite3.OperationalError("database or disk is full")

    store.finish = store.release = full  # type: ignore[method-assign]
    p.gate.set()
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        left = sup.stop(timeout=1)  # outcomes cannot be written: said once, no exception
    said = [r for r in caplog.records if r.name == "ccs.gateway.supervisor"]
    assert all("disk is full" in r.getMessage() and r.exc_info is None for r in said)
    assert any("go out again at the next start" in r.getMessage() for r in said)
    assert sorted(left) == sorted(ids)
    store._db.execute("PRAGMA max_page_count = 1073741823")
    store.close()
    again = SqliteStore(str(tmp_path / "full.sqlite"))
    try:  # nothing lost: still in flight, so the next start sends them again
        assert again.recover(0) == 3 and all(again.get(i).state == "queued" for i in ids)
    finally:
        again.close()
