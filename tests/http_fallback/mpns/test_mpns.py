"""MPNS: payloads, headers and answer judging (pure), and MpnsClient against MpnsEmulator."""

from __future__ import annotations

import uuid

import pytest
from lxml import etree

from ccs.outcome import Status, TokenEventKind
from ccs.transport.http11 import Headers, HttpClient
from ccs.transport.tls import server_context
from http_fallback.mpns import protocol
from http_fallback.mpns.client import MpnsClient, MpnsConfig
from http_fallback.mpns.emulator import MpnsEmulator
from http_fallback.mpns.model import (
    CLEAR,
    CycleTile,
    FlipTile,
    IconicTile,
    MessageError,
    MpnsMessage,
    Raw,
    Tile,
    Toast,
)
from http_fallback.mpns.protocol import MpnsPolicy
from http_fallback.retry_policy import Backoff

FAST = Backoff(initial=0.02, jitter=0.0, attempts=3)
WP = "{WPNotification}"
NASTY = 'Tom & "Jerry" <b>bold</b> ]]> \u00e9\u4e2d'


@pytest.fixture
def emu(pki):
    ctx = server_context(pki.cert_file, pki.key_file, client_ca_file=pki.ca_file)
    with MpnsEmulator(ssl_context=ctx) as e:
        yield e


def make_client(pki, *, cert=True, **kw):
    cfg = MpnsConfig(ca_file=pki.ca_file, backoff=kw.pop("backoff", FAST),
                     cert_file=pki.client_cert_file if cert else None,
                     key_file=pki.client_key_file if cert else None, **kw)
    client = MpnsClient(cfg)
    client.events = []
    client.token_events.add(client.events.append)
    client.start()
    return client


@pytest.fixture
def client(pki):
    c = make_client(pki)
    yield c
    c.stop(timeout=1)


# --- pure core ----------------------------------------------------------------------------

def test_toast_xml_escapes_through_lxml():
    xml = protocol.build_xml(Toast(NASTY, "a<b", "/Page.xaml?x=1&y=2"))
    assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?><wp:Notification '
                          b'xmlns:wp="WPNotification"><wp:Toast><wp:Text1>')
    assert b"<b>" not in xml and b"&amp;" in xml
    toast = etree.fromstring(xml)[0]
    assert [(c.tag, c.text) for c in toast] == [
        (f"{WP}Text1", NASTY), (f"{WP}Text2", "a<b"), (f"{WP}Param", "/Page.xaml?x=1&y=2")]


def test_tile_xml_order_id_and_clear():
    xml = protocol.build_xml(Tile(title="T", count=7, background_image="bg.png",
                                  back_title="BT", back_content=CLEAR,
                                  back_background_image="bb.png", id="/Second.xaml?id=1"))
    tile = etree.fromstring(xml)[0]
    assert tile.get("Id") == "/Second.xaml?id=1"
    assert [c.tag[len(WP):] for c in tile] == ["BackgroundImage", "Count", "Title",
                                               "BackBackgroundImage", "BackTitle", "BackContent"]
    assert tile[5].get("Action") == "Clear" and tile[1].text == "7"
    assert etree.fromstring(xml).get("Version") is None


@pytest.mark.parametrize("tile, template, names", [
    (FlipTile(title="F", wide_back_content="w", small_background_image="s.png"), "FlipTile",
     ["SmallBackgroundImage", "WideBackContent", "Title"]),
    (IconicTile(title="I", wide_content1="one", background_color="#FF00FF00"), "IconicTile",
     ["WideContent1", "Title", "BackgroundColor"]),
    (CycleTile(title="C", cycle_images=("1.png", "2.png")), "CycleTile",
     ["Title", "CycleImage1", "CycleImage2"]),
])
def test_version_2_templates(tile, template, names):
    root = etree.fromstring(protocol.build_xml(tile))
    assert root.get("Version") == "2.0" and root[0].get("Template") == template
    assert [c.tag[len(WP):] for c in root[0]] == names


def test_headers_per_kind_and_class():
    uri = "http://h/throttledthirdparty/01.00/x"
    mid = str(uuid.uuid4())
    toast = protocol.request_headers(MpnsMessage(uri, Toast("a"), message_id=mid))
    assert (toast["X-WindowsPhone-Target"], toast["X-NotificationClass"]) == ("toast", "2")
    assert toast["X-MessageID"] == mid and toast["Content-Type"].startswith("text/xml")
    tile = protocol.request_headers(MpnsMessage(uri, Tile(count=1), delivery="450"))
    assert (tile["X-WindowsPhone-Target"], tile["X-NotificationClass"]) == ("token", "11")
    raw = protocol.request_headers(MpnsMessage(uri, Raw(b"x"), delivery="900"))
    assert "X-WindowsPhone-Target" not in raw and raw["X-NotificationClass"] == "23"
    assert protocol.build_xml(Raw("caf\u00e9")) == "caf\u00e9".encode()


@pytest.mark.parametrize("make, field", [
    (lambda: Tile(count=100), "count"),
    (lambda: Toast(text1=5), "text1"),
    (lambda: Toast(param="x" * 257), "param"),
    (lambda: MpnsMessage("ftp://x", Toast("a")), "channel_uri"),
    (lambda: MpnsMessage("http://x/c", Toast("a"), delivery="10"), "delivery"),
    (lambda: MpnsMessage("http://x/c", Toast("a"), message_id="nope"), "message_id"),
    (lambda: MpnsMessage("http://x/c", "hello"), "notification"),
    (lambda: CycleTile(cycle_images=tuple("abcdefghij")), "cycle_images"),
])
def test_model_errors_name_the_field(make, field):
    with pytest.raises(MessageError) as info:
        make()
    assert str(info.value).startswith(f"{field}:")


def answer(status, note=None, sub=None, conn=None, policy=MpnsPolicy()):
    pairs = [(k, v) for k, v in (("X-NotificationStatus", note), ("X-SubscriptionStatus", sub),
                                 ("X-DeviceConnectionStatus", conn)) if v]
    return protocol.judge(status, Headers(pairs), policy)


def test_judging_answers():
    ok = answer(200, "Received", "Active", "Connected")
    assert ok.status is Status.OK and ok.as_results() == {
        "statusCode": 200, "deviceConnectionStatus": "Connected",
        "notificationStatus": "Received", "subscriptionStatus": "Active"}
    assert answer(200, "QueueFull", "Active", "Connected").retry_now
    inactive = answer(412, "Dropped", "Active", "Inactive")
    assert inactive.minutes_to_delay == 61 and not inactive.retry_now
    assert inactive.as_results()["minutesToDelay"] == 61
    gone = answer(404, "Dropped", "Expired", "Connected")
    assert gone.should_delete_channel and gone.event is TokenEventKind.UNREGISTERED
    assert gone.as_results()["shouldDeleteChannel"] is True
    assert answer(200, "Dropped", "Expired").should_delete_channel
    throttled = answer(406, "Dropped", "Active", "Connected")
    assert throttled.event is TokenEventKind.RATE_LIMITED and throttled.minutes_to_delay == 60
    assert answer(503).retry_now and answer(503).minutes_to_delay == 5
    for status in (400, 401):
        assert not answer(status).should_delete_channel
        strict = MpnsPolicy(delete_channel_on_400=True, delete_channel_on_401=True)
        assert answer(status, policy=strict).should_delete_channel
    assert answer(405).error == "MethodNotAllowed" and not answer(405).retryable
    assert answer(200, "Suppressed", "Active", "Connected").status is Status.OK
    assert answer(200, "Dropped", "Active", "Connected").error == "Dropped"


# --- client against the emulator ----------------------------------------------------------

def test_toast_round_trip_keeps_every_character(emu, client):
    uri = emu.new_channel()
    mid = str(uuid.uuid4())
    outcome = client.send(MpnsMessage(uri, Toast(NASTY, "second", "/P.xaml?a=1&b=<2>"),
                                      message_id=mid)).get(timeout=5)
    assert outcome.ok and outcome.to == uri
    assert outcome.extra["notificationStatus"] == "Received"
    assert outcome.extra["subscriptionStatus"] == "Active"
    assert outcome.extra["deviceConnectionStatus"] == "Connected"
    seen = emu.delivered[0]
    assert seen.fields == {"Text1": NASTY, "Text2": "second", "Param": "/P.xaml?a=1&b=<2>"}
    assert (seen.kind, seen.notification_class, seen.message_id) == ("toast", 2, mid)


def test_tiles_and_raw_on_an_authenticated_channel(emu, client):
    uri = emu.new_channel(authenticated=True)
    tile = Tile(title="T", count=3, back_content="<back>", id="/S.xaml")
    assert client.send(MpnsMessage(uri, tile, delivery="900")).get(timeout=5).ok
    assert client.send(MpnsMessage(uri, FlipTile(title="F", count=CLEAR))).get(timeout=5).ok
    assert client.send(MpnsMessage(uri, Raw(b"\x00raw bytes"))).get(timeout=5).ok
    first, flip, raw = emu.delivered
    assert first.fields == {"@Id": "/S.xaml", "Count": "3", "Title": "T",
                            "BackContent": "<back>"}
    assert first.notification_class == 21
    assert flip.fields["@Template"] == "FlipTile" and flip.fields["Count"] == {"Action": "Clear"}
    assert (raw.kind, raw.body) == ("raw", b"\x00raw bytes")
    assert emu.requests[0].peer_cert  # the client certificate was presented


def test_authenticated_channel_without_certificate_and_the_401_policy(emu, pki):
    uri = emu.new_channel(authenticated=True)
    plain = make_client(pki, cert=False)
    outcome = plain.send(MpnsMessage(uri, Toast("a"))).get(timeout=5)
    assert (outcome.error, outcome.extra["statusCode"]) == ("Unauthorized", 401)
    assert "shouldDeleteChannel" not in outcome.extra and not plain.events
    plain.stop()
    strict = make_client(pki, cert=False, policy=MpnsPolicy(delete_channel_on_401=True))
    outcome = strict.send(MpnsMessage(uri, Toast("a"))).get(timeout=5)
    assert outcome.extra["shouldDeleteChannel"] is True
    assert [e.kind for e in strict.events] == [TokenEventKind.UNREGISTERED]
    strict.stop()


def test_412_sets_minutes_to_delay_and_holds_the_channel(emu, client):
    uri = emu.new_channel()
    emu.script(uri, "Inactive")
    outcome = client.send(MpnsMessage(uri, Toast("a"))).get(timeout=5)
    assert (outcome.error, outcome.retryable) == ("DeviceInactive", True)
    assert outcome.extra["minutesToDelay"] == 61
    assert outcome.extra["deviceConnectionStatus"] == "Inactive"
    posts = len(emu.requests)
    held = client.send(MpnsMessage(uri, Toast("b"))).get(timeout=5)
    assert (held.error, held.attempts) == ("DeviceInactive", 0)
    assert held.extra["held_until"] == pytest.approx(outcome.extra["held_until"])
    assert len(emu.requests) == posts
    assert client.send(MpnsMessage(emu.new_channel(), Toast("c"))).get(timeout=5).ok


def test_expired_channel_should_be_deleted(emu, client):
    uri = emu.new_channel()
    emu.expire(uri)
    outcome = client.send(MpnsMessage(uri, Toast("a"))).get(timeout=5)
    assert (outcome.status, outcome.error, outcome.retryable) == (Status.FAILED, "Expired", False)
    assert outcome.extra["shouldDeleteChannel"] is True
    assert [(e.kind, e.token) for e in client.events] == [(TokenEventKind.UNREGISTERED, uri)]
    assert client.stats()["deleted_channels"] == 1


def test_daily_limit_throttles_unauthenticated_channels(pki):
    ctx = server_context(pki.cert_file, pki.key_file)
    with MpnsEmulator(ssl_context=ctx, daily_limit=2) as emu:
        c = make_client(pki, cert=False)
        uri = emu.new_channel()
        outcomes = [c.send(MpnsMessage(uri, Toast(str(i)))).get(timeout=5) for i in range(3)]
        c.stop()
    assert [o.ok for o in outcomes] == [True, True, False]
    assert (outcomes[2].error, outcomes[2].extra["minutesToDelay"]) == ("Throttled", 60)
    assert [e.kind for e in c.events] == [TokenEventKind.RATE_LIMITED]


def test_queue_full_and_503_are_retried_honouring_retry_after(emu, client):
    uri = emu.new_channel()
    emu.script(uri, "QueueFull")
    emu.script(uri, "Unavailable", retry_after=1)
    outcome = client.send(MpnsMessage(uri, Toast("a"))).get(timeout=5)
    assert outcome.ok and outcome.attempts == 3
    times = [r.at for r in emu.requests]
    assert times[1] - times[0] >= FAST.initial and times[2] - times[1] >= 1.0
    emu.script(uri, "QueueFull", "QueueFull", "QueueFull")
    full = client.send(MpnsMessage(uri, Toast("b"))).get(timeout=5)
    assert (full.error, full.retryable, full.attempts) == ("QueueFull", True, 3)
    assert full.extra["notificationStatus"] == "QueueFull"


def test_plain_http_channels(pki):
    with MpnsEmulator() as emu:  # unauthenticated MPNS channels were plain http
        assert emu.origin.startswith("http://")
        c = make_client(pki, cert=False)
        ok = c.send(MpnsMessage(emu.new_channel(), Toast("a"))).get(timeout=5)
        denied = c.send(MpnsMessage(emu.new_channel(authenticated=True), Toast("a"))).get(5)
        c.stop()
    assert ok.ok
    assert denied.error == "Unauthorized"


def test_config_from_env():
    cfg = MpnsConfig.from_env({"CCS_MPNS_CERT": "/c.pem", "CCS_MPNS_KEY": "/k.pem",
                               "CCS_CA_FILE": "/ca.pem"})
    assert (cfg.cert_file, cfg.key_file, cfg.ca_file) == ("/c.pem", "/k.pem", "/ca.pem")
    with pytest.raises(ValueError, match="CCS_MPNS_KEY"):
        MpnsConfig.from_env({"CCS_MPNS_CERT": "/c.pem"})


# --- the emulator's own checks, through a plain HTTP client --------------------------------

TOAST = protocol.build_xml(Toast("a"))


@pytest.mark.parametrize("headers, body, status", [
    ({"X-WindowsPhone-Target": "toast", "X-NotificationClass": "1"}, TOAST, 400),
    ({"X-WindowsPhone-Target": "tile", "X-NotificationClass": "1"}, TOAST, 400),
    ({"X-WindowsPhone-Target": "token", "X-NotificationClass": "1"}, TOAST, 400),
    ({"X-WindowsPhone-Target": "toast", "X-NotificationClass": "2"}, b"<wp:Notification", 400),
    ({"X-WindowsPhone-Target": "toast", "X-NotificationClass": "2"},
     b'<Notification xmlns="other"><Toast/></Notification>', 400),
    ({"X-WindowsPhone-Target": "toast", "X-NotificationClass": "2"}, TOAST + b" " * 3072, 400),
    ({"X-WindowsPhone-Target": "toast", "X-NotificationClass": "2", "X-MessageID": "1"},
     TOAST, 400),
    ({"X-NotificationClass": "3"}, b"anything", 200),
    ({"X-WindowsPhone-Target": "toast", "X-NotificationClass": "12"}, TOAST, 200),
])
def test_emulator_validates_headers_and_xml(emu, pki, headers, body, status):
    http = HttpClient(ca_file=pki.ca_file)
    response = http.request("POST", emu.new_channel(),
                            {"Content-Type": "text/xml", **headers}, body)
    http.close()
    assert response.status == status, response.body


def test_emulator_method_and_unknown_channels(emu, pki):
    http = HttpClient(ca_file=pki.ca_file)
    assert http.request("GET", emu.new_channel()).status == 405
    gone = http.request("POST", emu.origin + "/throttledthirdparty/01.00/nope",
                        {"X-NotificationClass": "3"}, b"x")
    assert (gone.status, gone.headers["X-SubscriptionStatus"]) == (404, "Expired")
    http.close()
