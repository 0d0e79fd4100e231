"""ApnsClient against the APNs emulator over real TLS loopback sockets: outcomes and auth."""

import datetime

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from ccs.outcome import Status, TokenEventKind
from http_fallback.apns.model import Notification
from tests.apns_support import TOPIC, Clock, client, emulator, token


@pytest.fixture
def emu(pki):
    with emulator(pki) as e:
        yield e


def send(c, tok, **kw):
    return c.send(Notification(device=tok, alert=kw.pop("alert", "hello"), **kw)).get(10)


def test_accepted_has_apns_id_and_emulator_saw_request(emu):
    c = client(emu)
    sent, rejected, connected = [], [], []
    c.events.transmitted.add(sent.append)
    c.events.rejected.add(rejected.append)
    c.events.connected.add(connected.append)
    try:
        n = Notification(device=token(1), alert="Hi 😀", badge=2, payload={"k": "v"},
                         collapse_id="c1", expiry=0)
        out = c.send(n).get(10)
        assert out.status is Status.OK and out.message_id
        seen = emu.seen[-1]
        assert seen.headers["apns-id"] == out.message_id and seen.token == token(1)
        assert seen.topic == TOPIC and seen.payload["aps"]["alert"] == "Hi 😀"
        assert seen.headers["apns-collapse-id"] == "c1" and "authorization" not in seen.headers
        assert {":path", "authorization"} <= seen.never_indexed  # as Apple asks
        emu.reject(token(2), "BadDeviceToken")
        bad = c.send(Notification(device=token(2), alert="x")).get(10)
        assert [p.apns_id for p in sent] == [out.message_id, bad.message_id]
        assert rejected == [bad] and len(connected) == 1
        stats = c.stats()
        assert (stats["ok"], stats["failed"], stats["sent"], stats["connections"]) == (1, 1, 2, 1)
        assert c.healthy()
    finally:
        c.stop()


def test_token_gone_reasons_emit_token_events(emu):
    c = client(emu)
    events = []
    c.token_events.add(events.append)
    try:
        emu.reject(token(1), "Unregistered", timestamp_ms=1_700_000_000_500)
        emu.reject(token(2), "BadDeviceToken")
        emu.reject(token(3), "ExpiredToken")
        gone = send(c, token(1))
        assert gone.status is Status.FAILED and gone.error == "Unregistered"
        assert not gone.retryable and gone.attempts == 1
        assert gone.extra["timestamp"] == datetime.datetime(2023, 11, 14, 22, 13, 20, 500000,
                                                            tzinfo=datetime.UTC)
        assert send(c, token(2)).error == "BadDeviceToken"
        assert send(c, token(3)).error == "ExpiredToken"
        kinds = {(e.token, e.kind) for e in events}
        assert kinds == {(token(1), TokenEventKind.UNREGISTERED),
                         (token(2), TokenEventKind.INVALID),
                         (token(3), TokenEventKind.UNREGISTERED)}
    finally:
        c.stop()


def test_request_and_configuration_reasons_are_final(emu):
    c = client(emu)
    try:
        emu.reject(token(1), "BadCollapseId")
        out = send(c, token(1))
        assert (out.error, out.retryable, out.attempts) == ("BadCollapseId", False, 1)
        out = send(c, token(2), topic="com.not.allowed")
        assert out.error == "TopicDisallowed" and out.extra["class"] == "configuration"
        assert emu.rejected == 2
    finally:
        c.stop()


def test_invalid_notification_never_reaches_the_wire(emu):
    c = client(emu)
    try:
        out = send(c, token(1), priority=3)
        assert out.status is Status.FAILED and out.error == "InvalidNotification"
        assert "priority" in out.description and not emu.seen
    finally:
        c.stop()


def test_dict_messages(emu):
    c = client(emu)
    try:
        out = c.send({"device": token(1), "alert": {"title": "T", "body": "B"}}).get(10)
        assert out.ok and emu.seen[-1].payload["aps"]["alert"] == {"title": "T", "body": "B"}
        out = c.send({"device": token(1), "colour": "red"}).get(10)
        assert out.error == "InvalidNotification" and "colour" in out.description
    finally:
        c.stop()


def test_retryable_and_backoff_reasons_are_retried(emu):
    c = client(emu, retries=3)
    rate = []
    c.token_events.add(lambda e: rate.append(e.kind))
    try:
        emu.reject(token(1), "ServiceUnavailable", times=2)
        out = send(c, token(1))
        assert out.status is Status.OK and out.attempts == 3
        emu.reject(token(2), "TooManyRequests")
        out = send(c, token(2))
        assert out.status is Status.OK and out.attempts == 2
        assert TokenEventKind.RATE_LIMITED in rate
        emu.reject(token(3), "InternalServerError", times=10)
        out = send(c, token(3))
        assert (out.status, out.error, out.retryable, out.attempts) == (
            Status.FAILED, "InternalServerError", True, 4)
    finally:
        c.stop()


def test_provider_token_refreshed_per_connection(pki):
    clock = Clock()
    with emulator(pki, clock=clock) as emu:
        c = client(emu, clock=clock)
        try:
            assert send(c, token(1)).ok
            clock.now += 30 * 60  # young enough: same token
            assert send(c, token(1)).ok
            clock.now += 21 * 60  # past the 50-minute refresh
            assert send(c, token(1)).ok
            assert [len(t) for t in emu.tokens_by_conn.values()] == [2]
            assert emu.connections() == 1
        finally:
            c.stop()


def test_expired_provider_token_replaces_the_connection(pki):
    clock = Clock()
    with emulator(pki, clock=clock, token_max_age=30 * 60) as emu:
        c = client(emu, clock=clock)
        drops = []
        c.events.disconnected.add(drops.append)
        try:
            assert send(c, token(1)).ok
            clock.now += 40 * 60  # too old for this emulator, not yet due for refresh
            out = send(c, token(1))
            assert out.ok and out.attempts == 2
            assert drops and drops[0].reason == "ExpiredProviderToken"
            assert len(emu.tokens_by_conn) == 2
        finally:
            c.stop()


def test_too_many_token_updates_moves_to_a_new_connection(pki):
    clock = Clock()
    with emulator(pki, clock=clock, token_min_interval=60 * 60) as emu:
        c = client(emu, clock=clock, token_refresh=20 * 60)
        try:
            assert send(c, token(1)).ok
            clock.now += 21 * 60
            out = send(c, token(1))
            assert out.ok and out.attempts == 2
            assert emu.rejected == 1 and len(emu.tokens_by_conn) == 2
        finally:
            c.stop()


def test_wrong_key_is_a_configuration_failure(pki):
    with emulator(pki, team_id="OTHERTEAM") as emu:
        c = client(emu)
        try:
            out = send(c, token(1))
            assert (out.error, out.retryable) == ("InvalidProviderToken", False)
        finally:
            c.stop()


def test_certificate_auth_pem_and_pfx(pki, tmp_path):
    with emulator(pki, cert_auth=True) as emu:
        c = client(emu, cert_file=pki.client_cert_file, key_for_cert=pki.client_key_file)
        try:
            assert send(c, token(1)).ok
        finally:
            c.stop()
        key = serialization.load_pem_private_key(open(pki.client_key_file, "rb").read(), None)
        from cryptography import x509
        cert = x509.load_pem_x509_certificate(open(pki.client_cert_file, "rb").read())
        pfx = pkcs12.serialize_key_and_certificates(
            b"client", key, cert, None, serialization.BestAvailableEncryption(b"s3cret"))
        c = client(emu, pfx_data=pfx, passphrase="s3cret")
        try:
            assert send(c, token(2)).ok
        finally:
            c.stop()
        c = client(emu, cert_data=open(pki.client_cert_file, "rb").read()
                   + open(pki.client_key_file, "rb").read())
        try:
            assert send(c, token(3)).ok
        finally:
            c.stop()
        assert emu.accepted == 3


def test_certificate_required_by_server(pki):
    with emulator(pki, cert_auth=True) as emu:
        c = client(emu, request_timeout=0.5)  # token auth only: no certificate
        try:
            out = send(c, token(1))
            assert out.status is Status.FAILED and out.error == "Timeout" and out.retryable
            assert "last error" in out.description and emu.accepted == 0
        finally:
            c.stop()


def test_wrong_pfx_passphrase_names_the_problem(pki):
    with pytest.raises(ValueError, match="PFX"):
        from http_fallback.apns.auth import certificate_context
        certificate_context(pfx_data=b"not a pfx", passphrase="x")
