"""`ccs emulate legacy|c2dm|mpns` as real subprocesses, driven by `requests` (an independent
HTTP client) and by our own clients."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.parse
from contextlib import contextmanager

import requests

from http_fallback.c2dm.client import C2dmClient, C2dmConfig
from http_fallback.c2dm.model import C2dmMessage
from http_fallback.legacy.client import LegacyClient, LegacyConfig
from http_fallback.legacy.model import LegacyMessage
from http_fallback.mpns.client import MpnsClient, MpnsConfig
from http_fallback.mpns.model import MpnsMessage, Toast
from tests.helpers import ROOT, ccs_env


@contextmanager
def emulator(name: str, *args: str):
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "emulate", name, *args],
                            env=ccs_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        yield json.loads(line)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
            proc.stdout.close()
            proc.stderr.close()


def test_emulate_legacy():
    with emulator("legacy", "--server-key", "k-123") as info:
        assert info["emulator"] == "legacy" and info["port"] > 0
        answer = requests.post(info["url"], json={"registration_ids": ["a", "b"]},
                               headers={"Authorization": "key=k-123"}, verify=info["ca_file"],
                               timeout=10)
        doc = answer.json()
        assert answer.status_code == 200 and doc["success"] == 2 and len(doc["results"]) == 2
        denied = requests.post(info["url"], json={"to": "a"}, verify=info["ca_file"], timeout=10)
        assert denied.status_code == 401
        client = LegacyClient(LegacyConfig.from_env({
            "CCS_LEGACY_URL": info["url"], "CCS_LEGACY_KEY": "k-123",
            "CCS_CA_FILE": info["ca_file"]}))
        client.start()
        outcome = client.send(LegacyMessage(to="tok", data={"k": "v"})).get(timeout=10)
        client.stop()
        assert outcome.ok


def test_emulate_c2dm():
    with emulator("c2dm") as info:
        login = requests.post(info["login_url"], verify=info["ca_file"], timeout=10, data={
            "accountType": "HOSTED_OR_GOOGLE", "Email": info["email"],
            "Passwd": info["password"], "service": "ac2dm", "source": "test"})
        auth = dict(line.split("=", 1) for line in login.text.splitlines())["Auth"]
        sent = requests.post(info["url"], verify=info["ca_file"], timeout=10,
                             headers={"Authorization": f"GoogleLogin auth={auth}"},
                             data={"registration_id": "r", "collapse_key": "c", "data.x": "y"})
        assert sent.status_code == 200 and sent.text.startswith("id=")
        client = C2dmClient(C2dmConfig.from_env({
            "CCS_C2DM_URL": info["url"], "CCS_C2DM_LOGIN_URL": info["login_url"],
            "CCS_C2DM_EMAIL": info["email"], "CCS_C2DM_PASSWORD": info["password"],
            "CCS_CA_FILE": info["ca_file"]}))
        client.start()
        outcome = client.send(C2dmMessage("r2", "ck", {"a": "b"})).get(timeout=10)
        client.stop()
        assert outcome.ok


def test_emulate_mpns():
    with emulator("mpns") as info:
        cert = (info["client_cert_file"], info["client_key_file"])
        xml = ('<?xml version="1.0" encoding="utf-8"?><wp:Notification xmlns:wp="WPNotification">'
               "<wp:Toast><wp:Text1>hi</wp:Text1></wp:Toast></wp:Notification>")
        headers = {"Content-Type": "text/xml", "X-WindowsPhone-Target": "toast",
                   "X-NotificationClass": "2"}
        answer = requests.post(info["authenticated_channel_uri"], data=xml, headers=headers,
                               cert=cert, verify=info["ca_file"], timeout=10)
        assert answer.status_code == 200
        assert answer.headers["X-NotificationStatus"] == "Received"
        no_cert = requests.post(info["authenticated_channel_uri"], data=xml, headers=headers,
                                verify=info["ca_file"], timeout=10)
        assert no_cert.status_code == 401
        uri = urllib.parse.urljoin(info["channel_base"], "my-own-channel")
        client = MpnsClient(MpnsConfig.from_env({"CCS_CA_FILE": info["ca_file"]}))
        client.start()
        outcome = client.send(MpnsMessage(uri, Toast("a", "b"))).get(timeout=10)
        client.stop()
        assert outcome.ok and outcome.extra["subscriptionStatus"] == "Active"
