"""Independent checks: aioapns (asyncio, its own process) against our emulator, and the
`ccs emulate apns` console command against our client."""

import json
import subprocess
import sys

from gevent import subprocess as gsubprocess

from ccs.outcome import Status
from http_fallback.apns.binary.client import BinaryClient
from http_fallback.apns.binary.feedback import Feedback
from http_fallback.apns.client import ApnsClient
from http_fallback.apns.config import ApnsConfig
from http_fallback.apns.model import Notification
from tests.apns_support import KEY_ID, KEY_PEM, TEAM_ID, TOPIC, emulator, token
from tests.helpers import ROOT, ccs_env


def test_aioapns_against_emulator(pki, tmp_path):
    key_file = tmp_path / "AuthKey.p8"
    key_file.write_bytes(KEY_PEM)
    with emulator(pki) as emu:
        emu.reject(token(2), "BadDeviceToken")
        spec = {"host": "127.0.0.1", "port": emu.port, "ca_file": emu.ca_file,
                "key_file": str(key_file), "key_id": KEY_ID, "team_id": TEAM_ID, "topic": TOPIC,
                "tokens": [token(1), token(2)]}
        # gevent's subprocess keeps the hub (and so the emulator) running while we wait
        proc = gsubprocess.Popen([sys.executable, str(ROOT / "scripts" / "aioapns_peer.py"),
                                  json.dumps(spec)], stdout=subprocess.PIPE, text=True)
        stdout, _ = proc.communicate(timeout=60)
        out = json.loads(stdout)["results"]
        assert out[0]["status"] == "200"
        assert out[1]["status"] == "400" and out[1]["description"] == "BadDeviceToken"
        assert [s.token for s in emu.seen] == [token(1), token(2)]
        assert emu.seen[0].headers["apns-id"] == out[0]["notification_id"]


def test_ccs_emulate_apns_serves_our_client(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "ccs", "emulate", "apns", "--dir",
                             str(tmp_path)], stdout=subprocess.PIPE, text=True, env=ccs_env(),
                            cwd=ROOT)
    try:
        info = json.loads(proc.stdout.readline())
        cfg = ApnsConfig(host=info["host"], port=info["port"], ca_file=info["ca_file"],
                         key_file=info["key_file"], key_id=info["key_id"],
                         team_id=info["team_id"], topic=info["topic"], connections=1)
        with ApnsClient(cfg) as c:
            out = c.send(Notification(device=token(5), alert="hi")).get(10)
            assert out.status is Status.OK
        legacy = ApnsConfig(ca_file=info["ca_file"], cert_file=info["client_cert_file"],
                            key_for_cert=info["client_key_file"], legacy_host=info["host"],
                            legacy_port=info["binary_port"], feedback_host=info["host"],
                            feedback_port=info["feedback_port"])
        binary = BinaryClient.from_config(legacy, quiet_period=0.05)
        binary.start()
        try:
            assert binary.send(Notification(device="ab" * 32, alert="hi")).get(10).ok
        finally:
            binary.stop()
        assert Feedback.from_config(legacy).poll() == []
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
