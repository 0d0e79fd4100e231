"""`ccs emulate apns`: the APNs emulators with a throw-away PKI and key; prints one JSON line."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
from pathlib import Path
from typing import Any

import gevent
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from gevent.event import Event

from ccs.testing.pki import DEFAULT_NAMES, make_test_pki
from http_fallback.apns.binary.emulator import BinaryEmulator
from http_fallback.apns.emulator import ApnsEmulator

NAMES = (*DEFAULT_NAMES, "api.push.apple.com", "api.sandbox.push.apple.com",
         "gateway.push.apple.com", "feedback.push.apple.com")


def run(host: str, port: int, topic: str, key_id: str, team_id: str, streams: int,
        directory: str | None, record: bool, extra: dict[str, Any] | None = None) -> None:
    out = Path(directory or tempfile.mkdtemp(prefix="ccs-apns-"))
    pki = make_test_pki(out / "pki", names=NAMES)
    key = ec.generate_private_key(ec.SECP256R1())
    key_file = out / f"AuthKey_{key_id}.p8"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_file.chmod(0o600)
    binary = BinaryEmulator(pki, host=host).start()
    emu = ApnsEmulator(pki, keys={key_id: key.public_key()}, team_id=team_id, topics=(topic,),
                       host=host, port=port, max_concurrent_streams=streams,
                       record=100_000 if record else None).start()
    stopping = Event()
    gevent.signal_handler(signal.SIGTERM, stopping.set)
    gevent.signal_handler(signal.SIGINT, stopping.set)
    info = {"emulator": "apns", "host": host, "port": emu.port, "ca_file": pki.ca_file,
            "key_id": key_id, "team_id": team_id, "key_file": str(key_file), "topic": topic,
            "client_cert_file": pki.client_cert_file, "client_key_file": pki.client_key_file}
    info.update({"binary_port": binary.gateway_port, "feedback_port": binary.feedback_port})
    info.update(extra or {})
    print(json.dumps(info), flush=True)
    stopping.wait()
    emu.stop()
    binary.stop()
    if directory is None:
        shutil.rmtree(out, ignore_errors=True)
