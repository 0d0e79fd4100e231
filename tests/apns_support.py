"""Shared pieces for the APNs tests: a signing key, an emulator and a client on loopback."""

from __future__ import annotations

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from http_fallback.apns.client import ApnsClient
from http_fallback.apns.config import ApnsConfig
from http_fallback.apns.emulator import ApnsEmulator

TOPIC = "com.example.app"
KEY_ID = "ABC123DEFG"
TEAM_ID = "TEAM123456"
_KEY = ec.generate_private_key(ec.SECP256R1())
KEY_PEM = _KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def token(n: int) -> str:
    return f"{n:064x}"


class Clock:
    """A wall clock the test moves by hand (JWT ages)."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def emulator(pki, **kw) -> ApnsEmulator:
    kw.setdefault("keys", {KEY_ID: _KEY.public_key()})
    kw.setdefault("team_id", TEAM_ID)
    kw.setdefault("topics", (TOPIC,))
    return ApnsEmulator(pki, **kw)


def config(emu: ApnsEmulator, **kw) -> ApnsConfig:
    base = dict(host="127.0.0.1", port=emu.port, ca_file=emu.ca_file, topic=TOPIC,
                connections=1, request_timeout=5.0, backoff_base=0.01, reconnect_base=0.01)
    if not (kw.keys() & {"cert_file", "cert_data", "pfx_file", "pfx_data"}):
        base.update(key_data=KEY_PEM, key_id=KEY_ID, team_id=TEAM_ID)
    base.update(kw)
    return ApnsConfig(**base)


def client(emu: ApnsEmulator, clock=None, **kw) -> ApnsClient:
    c = ApnsClient(config(emu, **kw), **({"clock": clock} if clock else {}))
    c.start()
    return c
