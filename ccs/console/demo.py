"""`ccs demo`: the gateway on embedded defaults (SQLite outbox, emulators on loopback), narrated.

An embedded Supervisor with CCS, FCM HTTP v1 and APNs providers, each pointed at its emulator;
a scripted exchange shows downstream with receipts, an upstream echo, a drain with failover,
a dead token reaching the feedback stream, the fallback to HTTP v1 and APNs.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

import click
from gevent.queue import Queue


def _say(text: str) -> None:
    click.echo(text)
    sys.stdout.flush()


@click.command()
@click.option("--messages", type=click.IntRange(1, 100000), default=200, show_default=True,
              help="How many downstream messages in the drain step.")
def demo(messages: int) -> None:
    """Run the gateway against the emulators and narrate a scripted exchange."""
    from ccs.gateway.settings import Settings
    from ccs.gateway.supervisor import Supervisor
    from ccs.testing.pki import make_test_pki
    from ccs.xmpp.emulator import CcsEmulator
    from http_fallback.apns.emulator import ApnsEmulator
    from http_fallback.fcm.emulator import FcmEmulator

    work = Path(tempfile.mkdtemp(prefix="ccs-demo-"))
    pki = make_test_pki(work / "pki")
    apns_key, apns_public = _apns_key(work)
    sender, key = "1029384756", "demo-server-key"
    with CcsEmulator(sender_id=sender, server_key=key, pki=pki, receipt_delay=0.05,
                     upstream_redeliver=1.0, drain_grace=0.2) as ccs_emu, \
            FcmEmulator(pki, "demo-project") as fcm_emu, \
            ApnsEmulator(pki, keys={"DEMOKEY123": apns_public}, team_id="DEMOTEAM12",
                         topics=("com.example.demo",)) as apns_emu:
        _say(f"emulators on loopback: CCS {ccs_emu.port}, FCM HTTP v1 {fcm_emu.port}, "
             f"APNs {apns_emu.port} (TLS, throw-away CA {pki.ca_file})")
        settings = Settings.defaults().replace(
            outbox__path=str(work / "outbox.sqlite"), admin__enabled=False,
            gateway__providers=["ccs", "http", "apns"], gateway__ccs_startup_grace=10.0,
            ccs__no_session_timeout=2.0,
            ccs__host=ccs_emu.host, ccs__port=ccs_emu.port, ccs__sender_id=sender,
            ccs__server_key=key, ccs__ca_file=pki.ca_file, ccs__connections=2,
            fcm__credentials=fcm_emu.credentials_file, fcm__url=fcm_emu.url,
            fcm__iid_url=fcm_emu.url, apns__host="127.0.0.1", apns__port=apns_emu.port,
            apns__key_file=str(apns_key), apns__key_id="DEMOKEY123",
            apns__team_id="DEMOTEAM12", apns__topic="com.example.demo", apns__connections=1)
        sup = Supervisor(settings).start()
        receipts: Queue = Queue()
        upstream: Queue = Queue()
        tokens: Queue = Queue()
        sup.receipts.add(receipts.put)
        sup.upstream.add(upstream.put)
        sup.token_events.add(tokens.put)
        _say(f"gateway started: SQLite outbox {work / 'outbox.sqlite'}")
        try:
            ok = _script(sup, ccs_emu, receipts, upstream, tokens, messages)
        finally:
            sup.stop(timeout=5)
    _say("done: every message ended in exactly one recorded outcome." if ok else
         "demo FAILED: see above")
    sys.exit(0 if ok else 1)


def _wait(sup: Any, mid: str) -> Any:
    return sup.result(mid).get(timeout=30)


def _script(sup: Any, ccs_emu: Any, receipts: Queue, upstream: Queue, tokens: Queue,
            messages: int) -> bool:
    good = True

    _say("\n1. downstream through CCS with a delivery receipt")
    mid = sup.enqueue({"to": "demo-device-1", "data": {"greeting": "hello <world> & all"},
                       "delivery_receipt_requested": True})
    out = _wait(sup, mid)
    _say(f"   {out.status} via {out.via}: outbox id {mid}")
    rec = receipts.get(timeout=10)
    _say(f"   receipt stored as record {rec.seq} ({rec.body.get('status')}), then acked to CCS")
    good &= out.ok

    _say("\n2. an upstream message from a device, stored, acked, echoed back")
    ccs_emu.send_upstream("demo-device-2", {"text": "ping from the phone"})
    up = upstream.get(timeout=10)
    _say(f"   upstream record {up.seq} from {up.body['from']}: {up.body['data']}")
    echo = _wait(sup, sup.enqueue({"to": up.body["from"],
                                   "data": {"echo": up.body["data"]["text"]}}))
    _say(f"   echo {echo.status} via {echo.via}")
    good &= echo.ok

    _say(f"\n3. {messages} messages while CCS drains a connection")
    ccs_emu.set_faults(drain_after=max(10, messages // 4))
    ids = sup.enqueue_many([{"to": f"bulk-{i}", "data": {"n": str(i)}}
                            for i in range(messages)])
    outs = [_wait(sup, i) for i in ids]
    ccs_emu.set_faults(drain_after=None)
    n_ok = sum(o.ok for o in outs)
    drains = sup.stats()["providers"]["ccs"].get("drains", 0)
    _say(f"   {n_ok}/{messages} ok, none lost; {drains} draining connections were replaced "
         f"and their unanswered messages re-sent elsewhere")
    good &= n_ok == messages

    _say("\n4. a token CCS says is gone reaches the token feedback stream")
    ccs_emu.set_token_error("demo-dead-token", "DEVICE_UNREGISTERED")
    dead = _wait(sup, sup.enqueue({"to": "demo-dead-token"}))
    event = tokens.get(timeout=10)
    _say(f"   {dead.status}: {dead.error}; token event: {event.kind} {event.token} "
         f"(from {event.provider})")
    good &= not dead.ok and event.token == "demo-dead-token"

    _say("\n5. CCS goes away: after 2 s without a session, FCM messages fall back to HTTP v1")
    ccs_emu.set_faults(refuse_auth=True)
    ccs_emu.drop()
    fb = _wait(sup, sup.enqueue({"to": "demo-device-4", "data": {"k": "v"}}))
    _say(f"   {fb.status} via {fb.via}: {fb.message_id}")
    ccs_emu.set_faults(refuse_auth=False)
    good &= fb.ok and fb.via == "http"

    _say("\n6. FCM HTTP v1 (a live service; here its emulator), asked for by name")
    v1 = _wait(sup, sup.enqueue({"to": "demo-device-3", "data": {"k": "v"}}, via="http"))
    _say(f"   {v1.status} via {v1.via}: {v1.message_id}")
    good &= v1.ok

    _say("\n7. APNs over HTTP/2 with token auth")
    apns_ok = _wait(sup, sup.enqueue({"to": "ab" * 32, "alert": "Hello from the demo",
                                      "badge": 1}, via="apns"))
    _say(f"   {apns_ok.status} via {apns_ok.via}: apns-id {apns_ok.message_id}")
    good &= apns_ok.ok

    stats = sup.stats()
    _say(f"\nstats: outbox {stats.get('outbox')}")
    return good


def _apns_key(work: Path) -> tuple[Path, Any]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    path = work / "AuthKey_DEMOKEY123.p8"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path, key.public_key()
