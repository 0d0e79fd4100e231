"""MpnsClient: posts notifications to channel URIs; results drive backoff and token feedback.

Hold rule: after 412 (device inactive) or 406 (throttled) a channel rests for minutesToDelay;
sends to it meanwhile are not posted and fail at once with the same error, retryable, and
extra["held_until"] (wall-clock seconds).
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.lock import BoundedSemaphore
from gevent.pool import Group

from ccs.errors import ConfigError
from ccs.outcome import Outcome, SendResult, Status, TokenEvent
from ccs.provider import Provider
from ccs.registry import CA_FILE, config_fields, read_env
from http_fallback.mpns import protocol
from http_fallback.mpns.model import MpnsMessage
from http_fallback.mpns.protocol import MpnsPolicy, MpnsResult
from http_fallback.mpns.settings import SETTINGS
from http_fallback.retry_policy import Backoff, parse_retry_after

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MpnsConfig:
    """TLS material for authenticated channels, answer policy, retries."""

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    policy: MpnsPolicy = MpnsPolicy()
    backoff: Backoff = Backoff(attempts=4)
    timeout: float = 30.0
    concurrency: int = 50

    def __post_init__(self) -> None:
        if bool(self.cert_file) != bool(self.key_file):
            raise ConfigError("CCS_MPNS_CERT", "set CCS_MPNS_CERT and CCS_MPNS_KEY both or neither")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> MpnsConfig:
        """CCS_MPNS_CERT, CCS_MPNS_KEY (client certificate for authenticated channels),
        CCS_CA_FILE."""
        env = os.environ if env is None else env
        return cls.from_settings(read_env((*SETTINGS, CA_FILE), env), **overrides)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], **overrides: Any) -> MpnsConfig:
        """From typed settings by TOML key (mpns.cert, mpns.key, ccs.ca_file)."""
        kw = config_fields(values, (*SETTINGS, CA_FILE), cls,
                           {"mpns.cert": "cert_file", "mpns.key": "key_file"})
        kw.update(overrides)
        return cls(**kw)


class MpnsClient(Provider):
    """Sends MpnsMessage values; each ends in exactly one Outcome whose extra is the results
    object (deviceConnectionStatus, notificationStatus, subscriptionStatus, ...)."""

    name = "mpns"

    def __init__(self, config: MpnsConfig | None = None, *, http: Any = None) -> None:
        super().__init__()
        self.config = config or MpnsConfig()
        self._http = http
        self._group = Group()
        self._slots = BoundedSemaphore(self.config.concurrency)
        self._random = random.Random()
        # channel URI -> (wall-clock time it may be used again, the error that put it to rest)
        self._held: dict[str, tuple[float, str]] = {}
        self._running = False
        self._counts = {"sent": 0, "ok": 0, "failed": 0, "unknown": 0, "retries": 0,
                        "deleted_channels": 0}

    # Provider
    def start(self) -> None:
        if self._http is None:
            from ccs.transport.http11 import HttpClient

            c = self.config
            self._http = HttpClient(ca_file=c.ca_file, cert_file=c.cert_file,
                                    key_file=c.key_file, timeout=c.timeout)
        self._running = True

    def stop(self, timeout: float = 10.0) -> None:
        self._running = False
        self._group.join(timeout=timeout)
        self._group.kill(block=True)
        close = getattr(self._http, "close", None)
        if close:
            close()

    def healthy(self) -> bool:
        return self._running

    def stats(self) -> dict[str, Any]:
        now = time.time()
        held = sum(1 for until, _ in self._held.values() if until > now)
        return {**self._counts, "in_flight": len(self._group), "held_channels": held,
                "running": self._running}

    def held_until(self, channel_uri: str) -> float | None:
        """When a resting channel may be sent to again; None when it is not resting."""
        held = self._held.get(channel_uri)
        return held[0] if held is not None and held[0] > time.time() else None

    def send(self, message: MpnsMessage) -> SendResult:
        result = SendResult(message.id)
        if not self._running:
            result.resolve(self._outcome(message, Status.FAILED, "ProviderStopped", 0,
                                         retryable=True, description="mpns provider not running"))
            return result
        self._group.spawn(self._run, message, result)
        return result

    # internals
    def _outcome(self, msg: MpnsMessage, status: Status, error: str | None, attempts: int, *,
                 retryable: bool = False, description: str | None = None,
                 extra: dict[str, Any] | None = None) -> Outcome:
        payload = {"pushType": msg.notification.kind, **(extra or {})}
        return Outcome(status, self.name, msg.channel_uri, msg.id, error, description, retryable,
                       None, attempts, payload)

    def _run(self, msg: MpnsMessage, result: SendResult) -> None:
        attempts = 0
        try:
            until = self.held_until(msg.channel_uri)
            if until is not None:
                error = self._held[msg.channel_uri][1]
                self._counts["failed"] += 1
                result.resolve(self._outcome(msg, Status.FAILED, error, 0, retryable=True,
                                             description="channel resting; not sent",
                                             extra={"held_until": until}))
                return
            body = protocol.build_xml(msg.notification)
            headers = protocol.request_headers(msg)
            while True:
                attempts += 1
                with self._slots:
                    judged, retry_after = self._post(msg, headers, body)
                if judged.retry_now and self.config.backoff.can_retry(attempts):
                    self._counts["retries"] += 1
                    gevent.sleep(self.config.backoff.delay(attempts, retry_after,
                                                           self._random.random()))
                    continue
                self._finish(msg, result, judged, attempts)
                return
        finally:
            if not result.ready():
                result.resolve(self._outcome(msg, Status.UNKNOWN if attempts else Status.FAILED,
                                             "ProviderStopped", attempts, retryable=True))

    def _post(self, msg: MpnsMessage, headers: dict[str, str],
              body: bytes) -> tuple[MpnsResult, float | None]:
        self._counts["sent"] += 1
        try:
            response = self._http.request("POST", msg.channel_uri, headers, body,
                                          timeout=self.config.timeout)
        except Exception as exc:  # refused, reset, TLS, timeout
            log.warning("mpns: post failed: %s", type(exc).__name__)
            return protocol.transport_failure(f"{type(exc).__name__}: {exc}",
                                              self.config.policy), None
        judged = protocol.judge(response.status, response.headers, self.config.policy)
        return judged, parse_retry_after(response.headers.get("retry-after"), time.time())

    def _finish(self, msg: MpnsMessage, result: SendResult, judged: MpnsResult,
                attempts: int) -> None:
        extra = judged.as_results()
        if judged.minutes_to_delay is not None and not judged.retry_now:
            until = time.time() + judged.minutes_to_delay * 60
            self._held[msg.channel_uri] = (until, judged.error or "Held")
            extra["held_until"] = until
        if judged.should_delete_channel:
            self._counts["deleted_channels"] += 1
        if judged.event is not None:
            self.token_events.emit(TokenEvent(judged.event, self.name, msg.channel_uri,
                                              reason=judged.error, message_id=msg.id))
        self._counts[str(judged.status)] = self._counts.get(str(judged.status), 0) + 1
        result.resolve(self._outcome(msg, judged.status, judged.error, attempts,
                                     retryable=judged.retryable, description=judged.description,
                                     extra=extra))
