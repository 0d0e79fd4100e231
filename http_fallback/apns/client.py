"""ApnsClient: the APNs provider (HTTP/2, token or certificate auth) behind ccs.provider."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ccs.outcome import Outcome, SendResult, Status
from ccs.provider import Provider
from ccs.transport.h2pool import H2Pool
from ccs.transport.tls import client_context
from http_fallback.apns.auth import TokenSigner, certificate_context
from http_fallback.apns.config import ApnsConfig
from http_fallback.apns.model import Alert, Notification, NotificationError
from http_fallback.apns.pool import VIA, ApnsEvents, ApnsHandler, to_request
from http_fallback.apns.protocol import Prepared, prepare


class ApnsClient(Provider):
    """send(Notification) -> SendResult resolving to ok (message_id = apns-id), failed, unknown."""

    name = "apns"

    def __init__(self, config: ApnsConfig, clock: Callable[[], float] = time.time) -> None:
        super().__init__()
        self.config = config
        self.events = ApnsEvents()
        signer = None
        if config.uses_certificate:
            context = certificate_context(
                ca_file=config.ca_file, cert_file=config.cert_file,
                key_file=config.key_for_cert, passphrase=config.passphrase,
                cert_data=config.cert_data, pfx_file=config.pfx_file,
                pfx_data=config.pfx_data, alpn=["h2"])
        elif config.uses_token:
            context = client_context(ca_file=config.ca_file, alpn=["h2"])
            key = config.key_data
            if key is None:
                with open(config.key_file, "rb") as f:  # type: ignore[arg-type]
                    key = f.read()
            signer = TokenSigner(key, config.key_id, config.team_id)  # type: ignore[arg-type]
        else:
            raise ValueError("ApnsConfig: give a signing key (key_file, key_id, team_id; "
                             "CCS_APNS_KEY_FILE, CCS_APNS_KEY_ID, CCS_APNS_TEAM_ID) or a "
                             "certificate (cert_file, cert_data, pfx_file; CCS_APNS_CERT + "
                             "CCS_APNS_CERT_KEY, or CCS_APNS_PFX)")
        self.handler = ApnsHandler(config, signer, self.events, self.token_events, clock)
        self.pool = H2Pool(config.pool_config(), context, self.handler, self.events, name="APNs")
        self._started = False

    def start(self) -> None:
        if not self._started:
            self._started = True
            self.pool.start()

    def stop(self, timeout: float = 10.0) -> None:
        if self._started:
            self._started = False
            self.pool.stop(timeout)

    def __enter__(self) -> ApnsClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def prepare(self, notification: Notification) -> Prepared:
        """Check a notification without sending it; raises NotificationError naming the field."""
        return prepare(notification, self.config.topic)

    def send(self, message: Notification | dict[str, Any]) -> SendResult:
        """Queue one notification (or a dict of Notification's fields)."""
        result = SendResult()
        try:
            if isinstance(message, dict):
                message = _from_dict(message)
            prepared = prepare(message, self.config.topic)
        except NotificationError as e:
            device = message.get("device") if isinstance(message, dict) else message.device
            result.resolve(Outcome(Status.FAILED, VIA, device, error="InvalidNotification",
                                   description=str(e)))
            return result
        if not self._started:
            result.resolve(Outcome(Status.FAILED, VIA, prepared.token, prepared.apns_id,
                                   error="NotStarted", description="call start() first",
                                   retryable=True, attempts=0))
            return result
        result.key = prepared.apns_id
        self.pool.submit(to_request(prepared, result))
        return result

    def healthy(self) -> bool:
        return self._started and (bool(self.pool.open_connections())
                                  or self.pool.last_error is None)

    def stats(self) -> dict[str, Any]:
        pool = self.pool.stats()
        conns = pool.pop("connections")
        return {**pool, **self.handler.counts, "connections": len(conns),
                "stream_limits": [c["limit"] for c in conns], "connection_details": conns}


_FIELDS = set(Notification.__dataclass_fields__)


def _from_dict(data: dict[str, Any]) -> Notification:
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise NotificationError(unknown[0], "is not a notification field")
    alert = data.get("alert")
    if isinstance(alert, dict) and set(alert) <= set(Alert.__dataclass_fields__):
        data = {**data, "alert": Alert(**alert)}
    return Notification(**data)
