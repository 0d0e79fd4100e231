"""The CCS emulator against slixmpp's ClientXMPP: an independent XMPP implementation checks our
TLS, stream features, SASL PLAIN, bind, session, pings and the gcm stanzas.

slixmpp runs its asyncio loop in a real thread; the emulator stays on this thread's gevent hub,
which keeps running while we wait on the thread's future with gevent-friendly polling.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from concurrent.futures import Future
from typing import Any

import pytest
import slixmpp
from slixmpp.xmlstream import ET
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from ccs.xmpp.emulator import CcsEmulator
from tests.helpers import wait_until

GCM = "{google:mobile:data}gcm"


def run_slixmpp(emu: CcsEmulator, password: str, script: Any, authcid_domain: str = "gcm",
                timeout: float = 10.0) -> dict[str, Any]:
    """Connect slixmpp to the emulator in a thread, run `script(client, result)` on session
    start, and return `result` once the client has disconnected."""
    result: dict[str, Any] = {"gcm": []}
    done: Future = Future()

    def main() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            c = slixmpp.ClientXMPP(f"{emu.sender_id}@gcm.googleapis.com/slix", password)
            # slixmpp's PLAIN authcid defaults to the JID's local part; CCS wants the full form.
            c.credentials["username"] = f"{emu.sender_id}@{authcid_domain}.googleapis.com"
            c.enable_direct_tls, c.enable_starttls, c.enable_plaintext = True, False, False
            c.ssl_context = ssl.create_default_context(cafile=emu.ca_file)
            c.register_plugin("xep_0199")

            def on_gcm(msg: Any) -> None:
                result["gcm"].append(json.loads(msg.xml.find(GCM).text))

            c.register_handler(Callback("gcm", MatchXPath(f"{{jabber:client}}message/{GCM}"),
                                        on_gcm))

            async def started(_: Any) -> None:
                result["jid"] = str(c.boundjid)
                await script(c, result)
                c.disconnect()

            c.add_event_handler("session_start", started)
            c.add_event_handler("failed_all_auth", lambda _: (result.update(failed=True),
                                                              c.disconnect()))
            c.connect(emu.host, emu.port)
            loop.run_until_complete(asyncio.wait_for(c.disconnected, timeout))
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            done.set_result(result)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            done.set_exception(exc)
        finally:
            loop.close()

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    wait_until(done.done, timeout + 5, "slixmpp client")
    return done.result()


async def nothing(c: Any, result: dict[str, Any]) -> None:
    return None


def gcm_message(c: Any, payload: dict[str, Any]) -> Any:
    msg = c.Message()
    el = ET.Element(GCM)
    el.text = json.dumps(payload)
    msg.append(el)
    return msg


@pytest.fixture
def emu(pki):
    with CcsEmulator(sender_id="1234", server_key="secret", pki=pki,
                     prefixed_fraction=0.5) as emu:
        yield emu


@pytest.mark.parametrize("domain", ["gcm", "fcm"])
def test_slixmpp_logs_in_and_binds(emu, domain):
    result = run_slixmpp(emu, "secret", nothing, authcid_domain=domain)
    assert result["jid"] == "1234@gcm.googleapis.com/slix"
    assert "failed" not in result
    assert emu.record.auth_ok[0].detail == f"1234@{domain}.googleapis.com"


def test_slixmpp_wrong_key_is_refused(emu):
    result = run_slixmpp(emu, "wrong", nothing)
    assert result.get("failed") is True
    assert "jid" not in result
    assert emu.record.auth_failures[0].detail == "wrong server key"


def test_slixmpp_downstream_acked_and_ping_answered(pki):
    # Every answer in the prefixed <data:gcm> form: slixmpp must match it by namespace.
    emu = CcsEmulator(sender_id="1234", server_key="secret", pki=pki,
                      prefixed_fraction=1.0).start()
    try:
        _downstream_and_ping(emu)
    finally:
        emu.stop()


def _downstream_and_ping(emu):
    emu.set_canonical("old-token", "new-token")

    async def script(c: Any, result: dict[str, Any]) -> None:
        result["rtt"] = await c.plugin["xep_0199"].ping(timeout=5)
        for i in range(10):
            gcm_message(c, {"to": "old-token" if i == 0 else f"tok-{i}",
                            "message_id": f"m{i}", "data": {"q": "<&>"}}).send()
        while len(result["gcm"]) < 10:
            await asyncio.sleep(0.01)

    result = run_slixmpp(emu, "secret", script)
    assert result["rtt"] is not None
    acks = {m["message_id"]: m for m in result["gcm"]}
    assert set(acks) == {f"m{i}" for i in range(10)}
    assert all(m["message_type"] == "ack" for m in acks.values())
    assert acks["m0"]["registration_id"] == "new-token"
    assert emu.record.downstream[0].payload["data"] == {"q": "<&>"}


def test_slixmpp_receives_upstream_and_acks_it(emu):
    mid = emu.send_upstream("dev-1", {"hello": "world"})

    async def script(c: Any, result: dict[str, Any]) -> None:
        while not result["gcm"]:
            await asyncio.sleep(0.01)
        up = result["gcm"][0]
        gcm_message(c, {"to": up["from"], "message_id": up["message_id"],
                        "message_type": "ack"}).send()
        await asyncio.sleep(0)

    result = run_slixmpp(emu, "secret", script)
    assert result["gcm"][0]["message_id"] == mid
    emu.wait_for(lambda: emu.record.acks_received)
    assert emu.record.acks_received[0].kind == "upstream"
    assert emu.outstanding == {}
