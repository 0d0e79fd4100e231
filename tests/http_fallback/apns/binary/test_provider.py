"""The binary interface as the `apns-binary` provider: through the gateway and `ccs send`,
against the binary emulator (TLS with client certificates)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ccs.gateway.settings import Settings
from ccs.gateway.supervisor import Supervisor
from ccs.outcome import Status, TokenEventKind
from http_fallback.apns.binary.emulator import BinaryEmulator
from tests.helpers import run_ccs, wait_until


def tok(i: int) -> str:
    return f"{i:02x}" * 32


def env_for(pki: Any, gw: BinaryEmulator) -> dict[str, str]:
    return {"CCS_APNS_LEGACY_HOST": "127.0.0.1", "CCS_APNS_LEGACY_PORT": str(gw.gateway_port),
            "CCS_APNS_CERT": pki.client_cert_file, "CCS_APNS_CERT_KEY": pki.client_key_file,
            "CCS_CA_FILE": pki.ca_file, "CCS_APNS_BINARY_QUIET": "0.2"}


def test_apns_binary_lane_through_the_gateway(pki: Any, tmp_path: Path) -> None:
    with BinaryEmulator(pki) as gw:
        gw.reject(tok(2), 8)
        s = Settings.defaults().replace(
            admin__enabled=False, gateway__providers=["apns-binary"], ccs__ca_file=pki.ca_file,
            apns__legacy_host="127.0.0.1", apns__legacy_port=gw.gateway_port,
            apns__cert=pki.client_cert_file, apns__cert_key=pki.client_key_file,
            apns__binary_quiet=0.2, outbox__path=str(tmp_path / "b.sqlite"))
        sup = Supervisor(s).start()
        events: list[Any] = []
        sup.token_events.add(events.append)
        try:
            ids = [sup.enqueue({"to": tok(i), "alert": f"n{i}", "badge": i}, via="apns-binary")
                   for i in range(1, 5)]
            outs = [sup.result(i).get(timeout=10) for i in ids]
            assert [o.status for o in outs] == [Status.OK, Status.FAILED, Status.OK, Status.OK]
            assert outs[1].error == "InvalidToken" and outs[1].via == "apns-binary"
            assert sup.status(ids[0])["via"] == "apns-binary"
            wait_until(lambda: events, what="the invalid-token event")
            assert (events[0].kind, events[0].token) == (TokenEventKind.INVALID, tok(2))
            assert sorted(s.token for s in gw.seen if s.status == 0) == [tok(1), tok(3), tok(4)]
            assert next(s for s in gw.seen if s.token == tok(3)).payload == {
                "aps": {"alert": "n3", "badge": 3}}
            with pytest.raises(ValueError) as exc:
                sup.enqueue({"to": tok(5), "colour": "red"}, via="apns-binary")
            assert "colour" in str(exc.value)
            with pytest.raises(ValueError) as exc:
                sup.enqueue({"to": tok(5), "alert": "x", "collapse_id": "c"}, via="apns-binary")
            assert "collapse_id" in str(exc.value)
        finally:
            sup.stop()


def test_ccs_send_via_apns_binary_with_a_tokens_file(pki: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text("".join(f"{tok(i)}\n" for i in range(1, 8)) + "# a comment\n")
    with BinaryEmulator(pki) as gw:
        gw.reject(tok(4), 8)
        res = run_ccs(["send", "--json", "--via", "apns-binary", "--apns-tokens-file",
                       str(tokens), "--alert", "Hello", "--sound", "ping.aiff",
                       "--priority", "5", "--data", "k=v"], env=env_for(pki, gw))
        seen = list(gw.seen)
    assert res.returncode == 1, res.stderr
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [(x["to"], x["via"], x["status"], x["error"]) for x in lines] == [
        (tok(i), "apns-binary", "failed" if i == 4 else "ok",
         "InvalidToken" if i == 4 else None) for i in range(1, 8)]
    accepted = [s for s in seen if s.status == 0]
    assert sorted(s.token for s in accepted) == sorted(tok(i) for i in range(1, 8) if i != 4)
    assert accepted[0].payload == {"aps": {"alert": "Hello", "sound": "ping.aiff"}, "k": "v"}
    assert {s.command for s in seen} == {2}


@pytest.mark.parametrize("args, needle", [
    (["--push-type", "voip"], "--push-type"),
    (["--collapse-id", "c"], "--collapse-id"),
    (["--priority", "1"], "--priority"),
])
def test_ccs_send_refuses_what_the_binary_interface_cannot_carry(args, needle):
    res = run_ccs(["send", "--via", "apns-binary", "--apns-token", tok(1), "--alert", "x",
                   *args])
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr


def test_ccs_send_needs_a_certificate_and_a_reachable_gateway(pki: Any) -> None:
    res = run_ccs(["send", "--via", "apns-binary", "--apns-token", tok(1), "--alert", "x"])
    assert res.returncode == 2 and "CCS_APNS_CERT" in res.stderr, res.stderr
    env = {"CCS_APNS_LEGACY_HOST": "127.0.0.1", "CCS_APNS_LEGACY_PORT": "1",
           "CCS_APNS_CERT": pki.client_cert_file, "CCS_APNS_CERT_KEY": pki.client_key_file}
    res = run_ccs(["send", "--via", "apns-binary", "--apns-token", tok(1), "--alert", "x",
                   "--connect-timeout", "1"], env=env)
    assert res.returncode == 3 and "could not reach apns-binary" in res.stderr, res.stderr


@pytest.mark.parametrize("var, value", [("CCS_APNS_BINARY_QUIET", "soon"),
                                        ("CCS_APNS_BINARY_COMMAND", "3"),
                                        ("CCS_APNS_BINARY_CACHE", "0")])
def test_a_bad_binary_setting_is_named(pki: Any, var: str, value: str) -> None:
    env = {"CCS_APNS_CERT": pki.client_cert_file, "CCS_APNS_CERT_KEY": pki.client_key_file,
           var: value}
    res = run_ccs(["send", "--via", "apns-binary", "--apns-token", tok(1), "--alert", "x"],
                  env=env)
    assert res.returncode == 2 and var in res.stderr and "Traceback" not in res.stderr, res.stderr
