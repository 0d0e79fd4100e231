"""The official firebase-admin SDK, pointed at our emulator, works unchanged but for the URLs.

firebase-admin blocks (requests and threads), so the emulator serves from its own thread.
"""

import firebase_admin
import pytest
from firebase_admin import credentials, messaging

from http_fallback.fcm.emulator import FcmEmulator
from tests.fcm_helpers import sends


@pytest.fixture
def emu(pki, monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", pki.ca_file)
    monkeypatch.setenv("SSL_CERT_FILE", pki.ca_file)
    emulator = FcmEmulator(pki, "admin-project").start_in_thread()
    emulator.create_service_account()
    yield emulator
    emulator.stop()


@pytest.fixture
def app(emu):
    app = firebase_admin.initialize_app(credentials.Certificate(emu.credentials_file),
                                        name=f"emu-{emu.port}")
    service = messaging._get_messaging_service(app)
    service._fcm_url = emu.send_url
    service._fcm_topic_url = f"{emu.url}/v1/projects/{emu.project_id}/registrations"
    yield app
    firebase_admin.delete_app(app)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_send_with_every_platform_block(emu, app):
    message = messaging.Message(
        token="device-token-1", data={"score": "850", "time": "2:45"},
        notification=messaging.Notification(title="t", body="b", image="https://x/i.png"),
        android=messaging.AndroidConfig(
            ttl=3600, priority="high", collapse_key="k", restricted_package_name="com.x",
            notification=messaging.AndroidNotification(
                icon="ic", color="#f45342", body_loc_key="B", body_loc_args=["1"],
                channel_id="c", light_settings=messaging.LightSettings(
                    color="#112233", light_on_duration_millis=100,
                    light_off_duration_millis=200), vibrate_timings_millis=[100, 200],
                priority="high", visibility="public", notification_count=2),
            fcm_options=messaging.AndroidFCMOptions(analytics_label="a1")),
        apns=messaging.APNSConfig(
            headers={"apns-priority": "10"},
            payload=messaging.APNSPayload(aps=messaging.Aps(
                alert=messaging.ApsAlert(title="t", loc_key="L", loc_args=["x"]), badge=3,
                sound="default", content_available=True)),
            fcm_options=messaging.APNSFCMOptions(image="https://x/i.png")),
        webpush=messaging.WebpushConfig(
            headers={"Urgency": "high"}, data={"w": "1"},
            notification=messaging.WebpushNotification(title="w", body="b"),
            fcm_options=messaging.WebpushFCMOptions(link="https://example.com/")),
        fcm_options=messaging.FCMOptions(analytics_label="label"))
    name = messaging.send(message, app=app)
    assert name == "projects/admin-project/messages/0:1"
    seen = sends(emu)[-1]
    assert seen.status == 200 and seen.message["android"]["ttl"] == "3600s"
    assert messaging.send(message, dry_run=True, app=app).endswith("/fake_message_id")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_send_each_mixed_results_in_order(emu, app):
    emu.fail("tok-3", "unregistered")
    emu.fail("tok-5", "invalid")
    tokens = [f"tok-{i}" for i in range(20)]
    response = messaging.send_each([messaging.Message(token=t, data={"i": t}) for t in tokens],
                                   app=app)
    assert response.success_count == 18 and response.failure_count == 2
    assert isinstance(response.responses[3].exception, messaging.UnregisteredError)
    assert response.responses[5].exception.code == "INVALID_ARGUMENT"
    ids = [r.message_id for r in response.responses if r.success]
    assert len(set(ids)) == 18 and all(i.startswith("projects/admin-project/messages/")
                                       for i in ids)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_unregistered_raises_the_sdks_error(emu, app):
    emu.fail("gone", "unregistered")
    with pytest.raises(messaging.UnregisteredError):
        messaging.send(messaging.Message(token="gone"), app=app)
    emu.fail("other", "sender_id_mismatch")
    with pytest.raises(messaging.SenderIdMismatchError):
        messaging.send(messaging.Message(token="other"), app=app)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_sdk_retries_unavailable_and_our_emulator_counts_it(emu, app):
    emu.fail("busy", "unavailable", times=1)
    assert messaging.send(messaging.Message(token="busy"), app=app)
    assert [s.status for s in sends(emu, "busy")] == [503, 200]


def test_topic_management_on_the_registrations_api(emu, app):
    emu.fail("dead", "unregistered")
    response = messaging.subscribe_to_topic(["a", "dead", "b"], "news", app=app)
    assert response.success_count == 2 and response.failure_count == 1
    assert response.errors[0].index == 1 and response.errors[0].reason == "UNREGISTERED"
    assert emu.topics["news"] == {"a", "b"}
    again = messaging.subscribe_to_topic(["a"], "news", app=app)  # 409: already there
    assert again.success_count == 1
    messaging.unsubscribe_from_topic(["a"], "/topics/news", app=app)
    assert emu.topics["news"] == {"b"}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_send_each_async_speaks_http2_with_mixed_results(emu, app):
    import asyncio

    emu.fail("tok-2", "unregistered")
    emu.fail("tok-4", "unavailable", times=1)  # the SDK re-sends a 503
    tokens = [f"tok-{i}" for i in range(150)]

    async def go():
        try:
            return await messaging.send_each_async(
                [messaging.Message(token=t, data={"i": t}) for t in tokens], app=app)
        finally:  # its connections belong to this event loop: close them while it runs
            await messaging._get_messaging_service(app)._async_client.aclose()

    response = asyncio.run(go())
    assert response.success_count == 149 and response.failure_count == 1
    assert isinstance(response.responses[2].exception, messaging.UnregisteredError)
    assert [s.status for s in sends(emu, "tok-4")] == [503, 200]
    assert {s.protocol for s in sends(emu)} == {"h2"}
    assert emu.max_active <= emu.max_streams and emu.limit_violations == 0
