"""Shared set-up for the FCM tests: an emulator on loopback and a client pointed at it."""

from __future__ import annotations

from http_fallback.fcm import FcmClient, FcmConfig

FAST = dict(retry_base_delay=0.01, retry_jitter=0.0, quota_delay=0.3, max_attempts=5)


def client_for(emu, pki, **settings) -> FcmClient:
    options = {**FAST, "base_url": emu.url, "iid_url": emu.url,
               "credentials_file": emu.credentials_file, **settings}
    clock = options.pop("clock", None)
    validate_only = options.pop("validate_only", False)
    config = FcmConfig(ca_file=pki.ca_file, **options)
    extra = {"clock": clock} if clock else {}
    return FcmClient(config, validate_only=validate_only, **extra)


def sends(emu, target=None):
    """The emulator's records of send requests, optionally for one target."""
    return [s for s in emu.seen if s.path.endswith("messages:send")
            and (target is None or s.target == target)]
