"""LegacyClient: the legacy GCM/FCM HTTP provider (one greenlet per request, bounded)."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.lock import BoundedSemaphore
from gevent.pool import Group

from ccs.errors import ConfigError
from ccs.outcome import Outcome, SendResult, Status, TokenEvent
from ccs.provider import Provider
from ccs.registry import CA_FILE, SERVER_KEY, config_fields, read_env
from http_fallback.legacy import protocol
from http_fallback.legacy.model import LegacyMessage, MessageError
from http_fallback.legacy.settings import SETTINGS
from http_fallback.retry_policy import Backoff

log = logging.getLogger(__name__)

DEFAULT_URL = "https://fcm.googleapis.com/fcm/send"


@dataclass(frozen=True)
class LegacyConfig:
    """Where and how to send; the server key never appears in a repr or a log line."""

    server_key: str = field(repr=False)
    url: str = DEFAULT_URL
    ca_file: str | None = None
    plain_text: bool = False
    backoff: Backoff = Backoff()
    timeout: float = 30.0
    concurrency: int = 50

    def __post_init__(self) -> None:
        if not self.server_key:
            raise ConfigError("CCS_LEGACY_KEY", "a server key is required")
        if not self.url.startswith(("https://", "http://")):
            raise ConfigError("CCS_LEGACY_URL", f"not an http(s) URL: {self.url!r}")

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], **overrides: Any) -> LegacyConfig:
        """From typed settings by TOML key: legacy.url, legacy.key (else ccs.server_key),
        ccs.ca_file."""
        kw = config_fields(values, (*SETTINGS, CA_FILE), cls, {"legacy.key": "server_key"})
        kw.setdefault("server_key", values.get(SERVER_KEY.key) or "")
        kw.update(overrides)
        return cls(**kw)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> LegacyConfig:
        """CCS_LEGACY_URL, CCS_LEGACY_KEY (falls back to CCS_SERVER_KEY), CCS_CA_FILE."""
        env = os.environ if env is None else env
        return cls.from_settings(read_env((*SETTINGS, CA_FILE, SERVER_KEY), env), **overrides)


def _default_http(config: LegacyConfig) -> Any:
    from ccs.transport.http11 import HttpClient

    return HttpClient(ca_file=config.ca_file, cert_file=None, key_file=None)


class LegacyClient(Provider):
    """Sends LegacyMessage values; each target ends in exactly one Outcome."""

    name = "legacy"

    def __init__(self, config: LegacyConfig, *, http: Any = None) -> None:
        super().__init__()
        self.config = config
        self._http = http
        self._group = Group()
        self._slots = BoundedSemaphore(config.concurrency)
        self._running = False
        self._random = random.Random()
        self._counts = {"requests": 0, "ok": 0, "failed": 0, "unknown": 0, "retries": 0,
                        "canonical": 0, "token_events": 0}
        self._last_problem: str | None = None

    # Provider
    def start(self) -> None:
        if self._http is None:
            self._http = _default_http(self.config)
        self._running = True

    def stop(self, timeout: float = 10.0) -> None:
        self._running = False
        self._group.join(timeout=timeout)
        self._group.kill(block=True)
        close = getattr(self._http, "close", None)
        if close:
            close()

    def healthy(self) -> bool:
        return self._running and self._last_problem is None

    def stats(self) -> dict[str, Any]:
        return {**self._counts, "in_flight": len(self._group), "running": self._running,
                "last_problem": self._last_problem}

    def send(self, message: LegacyMessage) -> SendResult:
        """Send to one target (token, topic, condition or device group)."""
        if message.registration_ids is not None and len(message.registration_ids) != 1:
            raise MessageError("registration_ids: use send_multicast for more than one id")
        return self._submit(message)[0]

    def send_multicast(self, message: LegacyMessage) -> list[SendResult]:
        """One SendResult per registration id, in input order."""
        if message.registration_ids is None:
            raise MessageError("registration_ids: send_multicast needs registration_ids")
        return self._submit(message)

    # internals
    def _submit(self, message: LegacyMessage) -> list[SendResult]:
        if self.config.plain_text:
            protocol.encode_form(message)  # raises MessageError now, not in the greenlet
        results = [SendResult(message.id) for _ in message.targets]
        if not self._running:
            for token, result in zip(message.targets, results, strict=True):
                result.resolve(Outcome(Status.FAILED, self.name, token, message.id,
                                       "ProviderStopped", "the legacy provider is not running",
                                       retryable=True, attempts=0))
            return results
        self._group.spawn(self._run, message, results)
        return results

    def _run(self, message: LegacyMessage, results: list[SendResult]) -> None:
        tokens = message.targets
        pending = list(range(len(tokens)))
        attempts = 0
        # no retry starts after the message's time to live has run out
        expires = (time.monotonic() + message.time_to_live
                   if message.time_to_live is not None else None)
        try:
            while pending:
                attempts += 1
                sub = message
                if message.registration_ids is not None and len(pending) != len(tokens):
                    sub = message.with_registration_ids(tuple(tokens[i] for i in pending))
                with self._slots:
                    answer = self._request(sub)
                verdicts = protocol.judge(answer, len(pending))
                retry: list[int] = []
                for index, verdict in zip(pending, verdicts, strict=True):
                    if verdict.retryable and self.config.backoff.can_retry(attempts):
                        retry.append(index)
                    else:
                        self._finish(message, tokens[index], results[index], verdict, attempts)
                pending = retry
                if not pending:
                    break
                delay = self.config.backoff.delay(attempts, answer.retry_after,
                                                  self._random.random())
                if expires is not None and time.monotonic() + delay > expires:
                    for index in pending:
                        self._expire(message, tokens[index], results[index], attempts)
                    pending = []
                    break
                self._counts["retries"] += 1
                gevent.sleep(delay)
        finally:
            for index in pending:
                results[index].resolve(Outcome(
                    Status.UNKNOWN if attempts else Status.FAILED, self.name, tokens[index],
                    message.id, "ProviderStopped", "stopped before a final answer",
                    retryable=True, attempts=attempts))

    def _expire(self, message: LegacyMessage, token: str, result: SendResult,
                attempts: int) -> None:
        self._counts["expired"] = self._counts.get("expired", 0) + 1
        result.resolve(Outcome(Status.EXPIRED, self.name, token, message.id, "Expired",
                               "time_to_live ran out before a retry", attempts=attempts))

    def _request(self, sub: LegacyMessage) -> protocol.Answer:
        plain = self.config.plain_text
        body = protocol.encode_form(sub) if plain else protocol.encode_json(sub)
        headers = protocol.request_headers(self.config.server_key, plain)
        self._counts["requests"] += 1
        try:
            response = self._http.request("POST", self.config.url, headers, body,
                                          timeout=self.config.timeout)
        except Exception as exc:  # the transport's errors: refused, reset, timeout, TLS
            self._last_problem = f"transport: {type(exc).__name__}"
            return protocol.Answer(protocol.AnswerKind.TRANSPORT,
                                   description=f"{type(exc).__name__}: {exc}")
        answer = protocol.parse_answer(sub, response.status, response.body, plain_text=plain,
                                       retry_after=response.headers.get("retry-after"),
                                       now=time.time())
        if answer.kind in (protocol.AnswerKind.AUTH, protocol.AnswerKind.UNAVAILABLE):
            self._last_problem = f"HTTP {answer.status}"
            log.warning("legacy HTTP answered %s: %s", answer.status, answer.description)
        else:
            self._last_problem = None
        return answer

    def _finish(self, message: LegacyMessage, token: str, result: SendResult,
                verdict: protocol.Verdict, attempts: int) -> None:
        extra = dict(verdict.extra, id=message.id)
        if verdict.message_id is not None:
            extra["provider_message_id"] = verdict.message_id
        # message_id is the service's id when it gave one (the console's result contract);
        # extra keeps both.
        outcome = Outcome(verdict.status, self.name, token, verdict.message_id or message.id,
                          verdict.error,
                          verdict.description, verdict.retryable, verdict.canonical_id,
                          attempts, extra)
        self._counts[str(verdict.status)] = self._counts.get(str(verdict.status), 0) + 1
        if verdict.event is not None:
            self._counts["token_events"] += 1
            if verdict.canonical_id:
                self._counts["canonical"] += 1
            self.token_events.emit(TokenEvent(verdict.event, self.name, token,
                                              new_token=verdict.canonical_id,
                                              reason=verdict.error, message_id=message.id))
        result.resolve(outcome)
