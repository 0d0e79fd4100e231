"""`--data` in `ccs send` and `ccs enqueue`: KEY=VALUE and JSON objects, repeatable, merged."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import click
import pytest

from ccs.console.common import parse_data
from ccs.xmpp.emulator import CcsEmulator
from tests.helpers import run_ccs

SENDER, KEY = "99887766", "console-key"


def test_parse_data_merges_both_forms_in_order() -> None:
    got = parse_data(("a=1", '{"b": {"c": 2}, "a": "x"}', "eq=p=q", " {\"n\": 3}", "a=last"))
    assert got == {"a": "last", "b": {"c": 2}, "eq": "p=q", "n": 3}
    assert parse_data(()) is None
    assert parse_data(("k=",)) == {"k": ""}


@pytest.mark.parametrize("value, needle", [
    ("novalue", "KEY=VALUE"),
    ("=v", "KEY=VALUE"),
    ("[1, 2]", "KEY=VALUE"),
    ("{oops", "not a JSON object"),
    ("{" * 3000, "--data"),
])
def test_parse_data_refuses_bad_input_naming_data(value: str, needle: str) -> None:
    with pytest.raises(click.BadParameter) as info:
        parse_data((value,))
    assert info.value.param_hint == "--data"
    assert needle in info.value.format_message()


@pytest.fixture
def emu(pki):
    with CcsEmulator(sender_id=SENDER, server_key=KEY, pki=pki) as e:
        yield e


def test_send_takes_a_json_object_and_pairs(emu) -> None:
    env = {"CCS_HOST": emu.host, "CCS_PORT": str(emu.port), "CCS_SENDER_ID": SENDER,
           "CCS_SERVER_KEY": KEY, "CCS_CA_FILE": emu.ca_file}
    res = run_ccs(["send", "t1", "--data", '{"k": "v", "n": "1"}', "--data", "n=2", "--json"],
                  env=env)
    assert res.returncode == 0, res.stderr
    [sent] = emu.record.downstream
    assert sent.payload["data"] == {"k": "v", "n": "2"}


def test_send_bad_json_data_exits_2(emu) -> None:
    env = {"CCS_HOST": emu.host, "CCS_PORT": str(emu.port), "CCS_SENDER_ID": SENDER,
           "CCS_SERVER_KEY": KEY, "CCS_CA_FILE": emu.ca_file}
    res = run_ccs(["send", "t1", "--data", '{"k": '], env=env)
    assert res.returncode == 2 and "--data" in res.stderr and "Traceback" not in res.stderr
    assert emu.record.downstream == []


def stored_data(box: Path) -> list[dict]:
    db = sqlite3.connect(box)
    try:
        return [json.loads(p).get("data") for (p,) in db.execute(
            "SELECT payload FROM messages ORDER BY seq")]
    finally:
        db.close()


def test_enqueue_takes_pairs_and_json_objects(tmp_path: Path) -> None:
    box = tmp_path / "d.sqlite"
    env = {"CCS_OUTBOX": str(box)}
    r = run_ccs(["enqueue", "--tokens-file", "-", "--data", "k=v", "--data", '{"n": "5"}'],
                env=env, input="t1\n")
    assert r.returncode == 0, r.stderr
    r = run_ccs(["enqueue", "--tokens-file", "-", "--data", '{"k": "v"}'], env=env, input="t2\n")
    assert r.returncode == 0, r.stderr
    assert stored_data(box) == [{"k": "v", "n": "5"}, {"k": "v"}]
    r = run_ccs(["enqueue", "--tokens-file", "-", "--data", "novalue"], env=env, input="t3\n")
    assert r.returncode == 2 and "--data" in r.stderr and "KEY=VALUE" in r.stderr
    assert "Traceback" not in r.stderr
    assert len(stored_data(box)) == 2


def test_send_refuses_a_non_string_fcm_value_from_json_naming_it() -> None:
    """FCM data values are strings: a JSON number is refused before anything connects."""
    env = {"CCS_SENDER_ID": "1", "CCS_SERVER_KEY": "k", "CCS_PORT": "1"}
    res = run_ccs(["send", "t1", "--data", '{"n": 1}', "--connect-timeout", "1"], env=env)
    assert res.returncode == 2 and "data.n" in res.stderr and "Traceback" not in res.stderr
