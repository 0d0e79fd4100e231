"""Poison messages: one message that breaks conversion or sending ends failed
(INVALID_MESSAGE) and its lane goes on; nothing deeper than the limit gets in at any entry
(Python API, `ccs enqueue`), for any provider; APNs refuses what APNs would refuse, at once."""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from ccs.gateway.outbox.sqlite import SqliteStore
from ccs.gateway.router import RouteError
from ccs.gateway.settings import Settings
from ccs.gateway.supervisor import Supervisor
from ccs.limits import MAX_DEPTH, MAX_MESSAGE_BYTES, LimitError, check_message, text_depth
from ccs.outcome import Status
from tests import apns_support as A
from tests.console.test_gateway import counts
from tests.gateway.admin.test_hostile import raw, request
from tests.gateway.admin.test_server import TOKEN
from tests.helpers import run_ccs, wait_until
from tests.providers import LocalProvider


def nested(depth: int) -> Any:
    value: Any = "x"
    for _ in range(depth):
        value = [value]
    return value


def store_raw(path: str, rows: list[tuple[str, str, str]]) -> None:
    """Write messages as an older gateway (no limits) or another tool might have."""
    SqliteStore(path).close()
    db = sqlite3.connect(path)
    now = time.time()
    db.executemany("INSERT INTO messages(id, lane, state, payload, created_at, updated_at) "
                   "VALUES (?, ?, 'queued', ?, ?, ?)", [(*r, now, now) for r in rows])
    db.execute("INSERT INTO counters(state, n) VALUES ('queued', ?) "
               "ON CONFLICT(state) DO UPDATE SET n = n + excluded.n", (len(rows),))
    db.commit()
    db.close()


def test_an_unreadable_stored_payload_fails_alone_and_the_lane_goes_on(pki, tmp_path: Path
                                                                       ) -> None:
    """The APNs payload nested 975 deep: it used to crash the lane at every claim."""
    emu = A.emulator(pki)
    emu.start()
    path = str(tmp_path / "o.sqlite")
    deep = json.dumps({"to": A.token(1), "topic": A.TOPIC, "payload": {"x": "@"}}).replace(
        '"@"', "[" * 975 + "]" * 975)
    good = json.dumps({"to": A.token(2), "topic": A.TOPIC, "alert": "hi"})
    store_raw(path, [("deep", "apns", deep), ("good", "apns", good),
                     ("junk", "apns", "{not json")])
    store = SqliteStore(path)
    client = A.client(emu)
    s = Settings.defaults().replace(admin__enabled=False, gateway__providers=["apns"])
    sup = Supervisor(s, store=store, providers={"apns": client}).start()
    try:
        wait_until(lambda: store.counts()["queued"] + store.counts()["in_flight"] == 0,
                   what="every message at an outcome")
        for bad in ("deep", "junk"):
            rec = store.get(bad)
            assert rec.state == "failed" and rec.error == "INVALID_MESSAGE", rec
        assert store.get("good").state == "ok"
        assert sup.children["lane:apns"].restarts == 0 and sup.health()["ok"]
    finally:
        sup.stop()
        store.close()
        emu.stop()


def test_any_exception_while_sending_fails_that_message_only() -> None:
    p = LocalProvider("ccs")
    sup = Supervisor(Settings.defaults().replace(admin__enabled=False),
                     providers={"ccs": p}).start()

    def explode(message: dict) -> None:
        if message["to"] == "poison":
            raise RecursionError("maximum recursion depth exceeded")

    p.on_send = explode
    try:
        ids = sup.enqueue_many([{"to": "poison"}, {"to": "fine"}])
        bad, good = (sup.result(i).get(timeout=5) for i in ids)
        assert bad.status is Status.FAILED and bad.error == "INVALID_MESSAGE"
        assert "RecursionError" in bad.description
        assert good.ok and sup.children["lane:fcm"].restarts == 0
    finally:
        sup.stop()


@pytest.mark.parametrize("via", [None, "apns", "mpns", "c2dm", "legacy"])
def test_the_python_api_refuses_deep_big_or_unencodable_messages(via: str | None) -> None:
    names = ["ccs", "apns", "mpns", "c2dm", "legacy"]
    sup = Supervisor(Settings.defaults().replace(admin__enabled=False),
                     providers={n: LocalProvider(n) for n in names}).start()
    try:
        cases = [({"to": "t", "data": {"k": nested(975)}}, "nested deeper"),
                 ({"to": "t", "data": {"k": nested(MAX_DEPTH)}}, "nested deeper"),
                 ({"to": "t", "data": {"k": "x" * MAX_MESSAGE_BYTES}}, "at most"),
                 ({"to": "t", "data": {"k": "a\ud800b"}}, "lone surrogate"),
                 ({"to": "t", "data": {"k": b"bytes"}}, "not JSON")]
        loop: dict[str, Any] = {"to": "t"}
        loop["self"] = loop
        cases.append((loop, "nested deeper"))
        for message, words in cases:
            with pytest.raises(RouteError) as exc:
                sup.enqueue(message, via=via)
            assert words in str(exc.value) and exc.value.field.startswith("messages[0]")
        assert sup.store.counts()["queued"] == 0
    finally:
        sup.stop()


def test_the_depth_limit_is_exact() -> None:
    check_message({"k": nested(MAX_DEPTH - 1)}, "m")  # the object, then 31 lists
    with pytest.raises(LimitError) as exc:
        check_message({"k": nested(MAX_DEPTH)}, "m")
    assert exc.value.field.startswith("m.k[0]")
    assert text_depth(b'{"a": "[[[[", "b": [[1]]}') == 3


def test_apns_refuses_a_lone_surrogate_or_short_token_at_once(pki) -> None:
    emu = A.emulator(pki)
    emu.start()
    client = A.client(emu)
    sup = Supervisor(Settings.defaults().replace(admin__port=0, admin__token=TOKEN,
                                                 gateway__providers=["apns"]),
                     providers={"apns": client}).start()
    try:
        for message, field in (({"to": "abcd", "alert": "hi"}, "device"),
                               ({"to": A.token(1), "alert": "a\udc00"}, "alert"),
                               ({"to": A.token(1), "payload": {"k\ud800": 1}}, "payload")):
            with pytest.raises(RouteError) as exc:
                sup.enqueue(message, via="apns")
            assert field in str(exc.value), exc.value
            body = json.dumps({"message": message, "via": "apns"}).encode()  # \ud800 escapes
            code, answer = raw(sup.admin.port, request("POST", "/v1/messages", body))
            assert code == 400 and field in answer["error"], answer
        assert sup.store.counts()["queued"] == 0
        assert sup.result(sup.enqueue({"to": A.token(1), "alert": "hi"}, via="apns")
                          ).get(timeout=10).ok
    finally:
        sup.stop()
        emu.stop()


def test_enqueue_skips_deep_and_bad_lines_and_stores_the_rest(tmp_path: Path) -> None:
    box = tmp_path / "e.sqlite"
    deep = '{"to": "d", "data": {"k": ' + "[" * 5000 + "]" * 5000 + "}}"
    lines = ["ok1", deep, '{"to": "s", "data": {"k": "\\ud800"}}', "{oops", "ok2",
             '{"to": "x", "data": {"k": ' + json.dumps(nested(MAX_DEPTH)) + "}}"]
    r = run_ccs(["enqueue", "--tokens-file", "-"], env={"CCS_OUTBOX": str(box)},
                input="\n".join(lines) + "\n")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "enqueued 2 messages" in r.stdout and "4 lines skipped" in r.stdout
    for n in (2, 3, 4, 6):
        assert f"line {n} skipped" in r.stderr
    assert counts(box) == {"queued": 2}
    r = run_ccs(["enqueue", "--tokens-file", "-", "--data", "[" * 3000 + "]" * 3000],
                env={"CCS_OUTBOX": str(box)}, input="ok3\n")
    assert r.returncode == 2 and "--data" in r.stderr and "Traceback" not in r.stderr


def test_a_redis_outbox_hands_an_unreadable_payload_over_as_such(redis_url: str) -> None:
    import redis

    from ccs.gateway.outbox.base import NewMessage, Unreadable
    from ccs.gateway.outbox.redis import RedisStore

    store = RedisStore(redis_url)
    try:
        store.add([NewMessage("deep", "apns", {"to": "x"}), NewMessage("fine", "apns",
                                                                         {"to": "y"})], 0.0)
        r = redis.Redis.from_url(redis_url.split("?")[0])
        r.hset(f"{store.shard('deep')}m:deep", "payload", "[" * 975 + "]" * 975)
        r.close()
        claimed, _ = store.claim("apns", 10, 1.0)
        by = {rec.id: rec for rec in claimed}
        assert isinstance(by["deep"].payload, Unreadable) and by["fine"].payload == {"to": "y"}
    finally:
        store.close()
