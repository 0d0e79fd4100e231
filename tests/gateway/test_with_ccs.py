"""The gateway with the real CcsClient against the CCS emulator over TLS on loopback."""

from __future__ import annotations

import sqlite3
import subprocess as std_subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from gevent import subprocess

from ccs.gateway.settings import Settings
from ccs.gateway.supervisor import Supervisor
from ccs.outcome import Status
from ccs.xmpp.emulator import CcsEmulator
from tests.gateway.test_feedback import SECRET, Receiver
from tests.helpers import ROOT, ccs_env, wait_until

SENDER, KEY = "4815162342", "gateway-test-key"


@pytest.fixture
def emu(pki: Any) -> Any:
    with CcsEmulator(sender_id=SENDER, server_key=KEY, pki=pki, upstream_redeliver=0.2,
                     receipt_redeliver=0.2, drain_grace=0.05) as e:
        yield e


def ccs_settings(emu: CcsEmulator, outbox: Path, **kw: Any) -> Settings:
    return Settings.defaults().replace(
        admin__enabled=False, ccs__host=emu.host, ccs__port=emu.port, ccs__sender_id=SENDER,
        ccs__server_key=KEY, ccs__ca_file=emu.ca_file, ccs__connections=2,
        outbox__path=str(outbox), **kw)


def test_gateway_over_ccs_outcomes_upstream_receipts_and_feedback(emu: Any,
                                                                  tmp_path: Path) -> None:
    rx = Receiver()
    emu.set_token_error("dead-token", "DEVICE_UNREGISTERED")
    box = tmp_path / "g.sqlite"
    sup = Supervisor(ccs_settings(emu, box, webhook__url=rx.url, webhook__secret=SECRET)).start()
    try:
        upstream: list[Any] = []
        receipts: list[Any] = []
        sup.upstream.add(upstream.append)
        sup.receipts.add(receipts.append)
        ids = sup.enqueue_many([{"to": f"tok{i}", "data": {"i": str(i)}} for i in range(300)])
        rid = sup.enqueue({"to": "tok-r", "delivery_receipt_requested": True})
        dead = sup.enqueue({"to": "dead-token"})
        outcomes = [sup.result(i).get(timeout=20) for i in ids]
        assert all(o.status is Status.OK and o.via == "ccs" for o in outcomes)
        assert sup.result(rid).get(timeout=10).ok
        o = sup.result(dead).get(timeout=10)
        assert o.status is Status.FAILED and o.error == "DEVICE_UNREGISTERED"
        # the emulator's record agrees with the outbox
        assert set(ids) <= set(emu.record.downstream_ids()) and emu.record.duplicates == 0
        assert set(ids) <= emu.record.answered_ids()
        # upstream: stored before the ack, handed to the app once
        emu.send_upstream("device-1", {"hello": "world"}, message_id="up-1")
        wait_until(lambda: upstream and receipts, what="upstream and receipt handled")
        wait_until(lambda: any(a.message_id == "up-1" for a in emu.record.acks_received),
                   what="upstream acked")
        assert upstream[0].body["from"] == "device-1" and upstream[0].body["data"] == {
            "hello": "world"}
        assert receipts[0].body["original_message_id"] == rid
        db = sqlite3.connect(box)
        kinds = Counter(k for (k,) in db.execute("SELECT kind FROM events"))
        db.close()
        assert kinds["upstream"] == 1 and kinds["receipt"] == 1
        # token feedback reached the webhook
        wait_until(lambda: rx.accepted(), what="webhook")
        assert rx.accepted()[0]["token"] == "dead-token"
        st = sup.stats()
        assert st["providers"]["ccs"]["messages_sent"] == 301
        assert st["providers"]["ccs"]["logged_in"] is True
        assert sup.drain() == {"drained": 2}  # both sessions; replacements open
        assert sup.result(sup.enqueue({"to": "after-drain"})).get(timeout=10).ok
    finally:
        sup.stop()
        rx.server.stop()


def counts(path: Path) -> dict[str, int]:
    db = sqlite3.connect(path)
    try:
        return dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state"))
    finally:
        db.close()


def start_run(env: dict[str, str]) -> Any:
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "run"], env=ccs_env(env), cwd=ROOT,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:
        if "ccs-gateway running" in line:
            return proc
    raise AssertionError(f"ccs run did not start: exit {proc.wait()}")


def test_kill_9_of_ccs_run_mid_10000_then_restart(emu: Any, tmp_path: Path) -> None:
    box = tmp_path / "k.sqlite"
    env = {"CCS_HOST": emu.host, "CCS_PORT": str(emu.port), "CCS_SENDER_ID": SENDER,
           "CCS_SERVER_KEY": KEY, "CCS_CA_FILE": emu.ca_file, "CCS_CONNECTIONS": "2",
           "CCS_OUTBOX": str(box), "CCS_ADMIN_ENABLED": "false"}
    n = 10_000
    r = std_subprocess.run([sys.executable, "-m", "ccs", "enqueue", "--tokens-file", "-"],
                           env=ccs_env(env), cwd=ROOT, capture_output=True, text=True,
                           input="".join(f"tok{i}\n" for i in range(n)), timeout=60)
    assert r.returncode == 0, r.stderr
    emu.set_faults(ack_delay=0.05)  # slow enough to be killed in the middle
    proc = start_run(env)
    wait_until(lambda: len(emu.record.answered_ids()) >= 2000, timeout=30,
               what="2000 messages acked")
    proc.kill()  # SIGKILL
    proc.wait()
    mid = counts(box)
    assert mid.get("in_flight", 0) > 0 and mid.get("queued", 0) > 0
    emu.set_faults(ack_delay=0.0)
    proc = start_run(env)
    try:
        wait_until(lambda: counts(box).get("ok") == n, timeout=60, what="all ok")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode == 0
    db = sqlite3.connect(box)
    rows = {i: (s, resent) for i, s, resent in db.execute("SELECT id, state, resent FROM messages")}
    db.close()
    assert len(rows) == n and {s for s, _ in rows.values()} == {"ok"}
    # the emulator saw every message, and acked each
    assert set(emu.record.downstream_ids()) == set(rows)
    assert set(rows) <= emu.record.answered_ids()
    # duplicates only for messages that were in flight at the kill, each counted as resent
    for mid_ in emu.record.duplicate_ids:
        assert rows[mid_][1] >= 1
    assert len(emu.record.duplicate_ids) <= mid["in_flight"]


def test_fcm_falls_back_to_http_when_ccs_is_down(emu: Any, pki: Any, tmp_path: Path) -> None:
    from http_fallback.fcm.emulator import FcmEmulator

    emu.set_faults(refuse_auth=True)  # no CCS session will come up
    with FcmEmulator(pki, "proj-gw") as fcm:
        fcm.fail("gone-token", "unregistered")
        s = ccs_settings(emu, tmp_path / "f.sqlite", gateway__providers=["ccs", "http"],
                         gateway__ccs_startup_grace=0.0,
                         fcm__credentials=fcm.credentials_file, fcm__url=fcm.url,
                         fcm__iid_url=fcm.url)
        sup = Supervisor(s).start()
        events: list[Any] = []
        sup.token_events.add(events.append)
        try:
            ok = sup.enqueue({"to": "tok-1", "data": {"k": "v"}, "priority": "high"})
            gone = sup.enqueue({"to": "gone-token"})
            topic = sup.enqueue({"to": "/topics/news"}, via="http")
            assert sup.result(ok).get(timeout=10).via == "http"
            o = sup.result(gone).get(timeout=10)
            assert o.status is Status.FAILED and o.via == "http"
            assert sup.result(topic).get(timeout=10).ok
            seen = {x.target: x for x in fcm.seen if x.path.endswith("messages:send")}
            assert seen["tok-1"].message["data"] == {"k": "v"}
            assert seen["tok-1"].message["android"]["priority"] == "HIGH"
            assert sup.status(ok)["via"] == "http" and sup.status(ok)["lane"] == "fcm"
            wait_until(lambda: events, what="token event from the http provider")
            assert events[0].token == "gone-token" and events[0].provider == "http"
        finally:
            sup.stop()


def test_mpns_lane_through_the_gateway_to_the_mpns_emulator(pki: Any, tmp_path: Path) -> None:
    from ccs.transport.tls import server_context
    from http_fallback.mpns.emulator import MpnsEmulator

    ctx = server_context(pki.cert_file, pki.key_file, client_ca_file=pki.ca_file)
    with MpnsEmulator(ssl_context=ctx) as mpns:
        uri = mpns.new_channel()
        s = Settings.defaults().replace(
            admin__enabled=False, gateway__providers=["mpns"], ccs__ca_file=pki.ca_file,
            mpns__cert=pki.client_cert_file, mpns__key=pki.client_key_file,
            outbox__path=str(tmp_path / "m.sqlite"))
        sup = Supervisor(s).start()
        try:
            mid = sup.enqueue({"to": uri, "toast": {"text1": "Hi & bye", "text2": "<b>"}},
                              via="mpns")
            o = sup.result(mid).get(timeout=10)
            assert o.ok and o.via == "mpns" and sup.status(mid)["via"] == "mpns"
            assert mpns.delivered[0].fields == {"Text1": "Hi & bye", "Text2": "<b>"}
            with pytest.raises(ValueError) as exc:  # refused before it is stored
                sup.enqueue({"to": uri, "toast": {"colour": "red"}}, via="mpns")
            assert "colour" in str(exc.value) and sup.store.counts()["ok"] == 1
            with pytest.raises(ValueError) as exc:
                sup.enqueue({"to": "t"})  # no FCM provider configured
            assert "via" in str(exc.value)
        finally:
            sup.stop()


def test_apns_lane_through_the_gateway_to_the_apns_emulator(pki: Any, tmp_path: Path) -> None:
    from tests.apns_support import KEY_ID, KEY_PEM, TEAM_ID, TOPIC, emulator, token

    key_file = tmp_path / "apns.p8"
    key_file.write_bytes(KEY_PEM)
    with emulator(pki) as apns:
        apns.reject(token(2), "BadDeviceToken")
        s = Settings.defaults().replace(
            admin__enabled=False, gateway__providers=["apns"], ccs__ca_file=pki.ca_file,
            apns__host="127.0.0.1", apns__port=apns.port, apns__key_file=str(key_file),
            apns__key_id=KEY_ID, apns__team_id=TEAM_ID, apns__topic=TOPIC,
            apns__connections=1, outbox__path=str(tmp_path / "a.sqlite"))
        sup = Supervisor(s).start()
        events: list[Any] = []
        sup.token_events.add(events.append)
        try:
            good = sup.enqueue({"to": token(1), "alert": "Hello", "badge": 3}, via="apns")
            bad = sup.enqueue({"to": token(2), "alert": "Hi"}, via="apns")
            assert sup.result(good).get(timeout=10).ok
            o = sup.result(bad).get(timeout=10)
            assert o.status is Status.FAILED and o.error == "BadDeviceToken"
            assert sup.status(good)["via"] == "apns"
            assert any(x.token == token(1) for x in apns.seen)
            wait_until(lambda: events, what="token event from APNs")
            assert events[0].token == token(2) and events[0].provider == "apns"
            with pytest.raises(ValueError) as exc:
                sup.enqueue({"to": token(3), "colour": "red"}, via="apns")
            assert "colour" in str(exc.value)
        finally:
            sup.stop()


def test_legacy_http_as_the_fcm_fallback(emu: Any, pki: Any, tmp_path: Path) -> None:
    from ccs.transport.tls import server_context
    from http_fallback.legacy.emulator import LegacyEmulator

    emu.set_faults(refuse_auth=True)
    with LegacyEmulator("legacy-key", ssl_context=server_context(pki.cert_file,
                                                                  pki.key_file)) as legacy:
        legacy.canonical["old-token"] = "new-token"
        s = ccs_settings(emu, tmp_path / "l.sqlite", gateway__providers=["ccs", "legacy"],
                         gateway__fcm_fallback="legacy", gateway__ccs_startup_grace=0.0,
                         legacy__url=legacy.url, legacy__key="legacy-key")
        sup = Supervisor(s).start()
        events: list[Any] = []
        sup.token_events.add(events.append)
        try:
            mid = sup.enqueue({"to": "old-token", "data": {"k": "v"}, "time_to_live": 300})
            o = sup.result(mid).get(timeout=10)
            assert o.ok and o.via == "legacy" and o.canonical_id == "new-token"
            rec = sup.status(mid)
            assert rec["via"] == "legacy" and rec["canonical_id"] == "new-token"
            (sent,) = legacy.delivered
            assert sent.payload["to"] == "old-token" and sent.payload["data"] == {"k": "v"}
            assert 0 < sent.payload["time_to_live"] <= 300  # what is left of it, not more
            wait_until(lambda: events, what="canonical token event")
            assert events[0].kind == "canonical" and events[0].new_token == "new-token"
        finally:
            sup.stop()


def test_c2dm_lane_through_the_gateway_to_the_c2dm_emulator(pki: Any, tmp_path: Path) -> None:
    from ccs.transport.tls import server_context
    from http_fallback.c2dm.emulator import C2dmEmulator

    ctx = server_context(pki.cert_file, pki.key_file)
    with C2dmEmulator({"sender@example.com": "pw-123"}, ssl_context=ctx) as c2dm:
        c2dm.script("bad-reg", "InvalidRegistration")
        s = Settings.defaults().replace(
            admin__enabled=False, gateway__providers=["c2dm"], ccs__ca_file=pki.ca_file,
            c2dm__url=c2dm.url, c2dm__login_url=c2dm.login_url, c2dm__email="sender@example.com",
            c2dm__password="pw-123", c2dm__quota_lock=str(tmp_path / "quota.lock"),
            outbox__path=str(tmp_path / "c.sqlite"))
        sup = Supervisor(s).start()
        events: list[Any] = []
        sup.token_events.add(events.append)
        try:
            good = sup.enqueue({"to": "reg-1", "collapse_key": "news", "data": {"a": "b"}},
                               via="c2dm")
            bad = sup.enqueue({"to": "bad-reg", "collapse_key": "news"}, via="c2dm")
            assert sup.result(good).get(timeout=10).ok
            assert sup.result(bad).get(timeout=10).error == "InvalidRegistration"
            assert [(d.registration_id, d.data) for d in c2dm.delivered] == [
                ("reg-1", {"a": "b"})]
            wait_until(lambda: events, what="token event")
            assert events[0].token == "bad-reg" and events[0].provider == "c2dm"
            row = sup.stats()["providers"]["c2dm"]
            assert {"uptime", "messages_sent", "messages_in_queue", "backing_off",
                    "total_errors", "rate_limited_tokens", "token_age"} <= set(row)
        finally:
            sup.stop()


def test_messages_held_by_a_ccs_client_that_lost_every_session_go_to_the_fallback(
        emu: Any, pki: Any, tmp_path: Path) -> None:
    from http_fallback.fcm.emulator import FcmEmulator

    with FcmEmulator(pki, "proj-handback") as fcm:
        s = ccs_settings(emu, tmp_path / "h.sqlite", gateway__providers=["ccs", "http"],
                         ccs__no_session_timeout=0.3, fcm__credentials=fcm.credentials_file,
                         fcm__url=fcm.url, fcm__iid_url=fcm.url)
        sup = Supervisor(s).start()
        try:
            first = sup.enqueue({"to": "before"})
            assert sup.result(first).get(timeout=10).via == "ccs"
            # Hold acks so messages sit in the CCS client, then take CCS away entirely.
            emu.set_faults(stall=True)
            ids = sup.enqueue_many([{"to": f"t{i}"} for i in range(5)])
            wait_until(lambda: sup.stats()["in_flight"] == 5, what="messages held by CCS")
            emu.set_faults(stall=False, refuse_auth=True)
            emu.drop()
            outcomes = [sup.result(i).get(timeout=10) for i in ids]
        finally:
            sup.stop()
    assert [(o.status, o.via) for o in outcomes] == [(Status.OK, "http")] * 5
    assert {x.target for x in fcm.seen if x.path.endswith("messages:send")} == {
        f"t{i}" for i in range(5)}
