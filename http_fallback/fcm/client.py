"""FcmClient: the FCM HTTP v1 provider. A bounded queue feeds worker greenlets that hand each
message to the transport (fcm.transport): HTTP/2 connections when the server offers h2, else a
keep-alive HTTP/1.1 pool; retries wait on timers, not on workers."""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent.event import Event
from gevent.lock import Semaphore
from gevent.pool import Group, Pool
from gevent.queue import Queue

from ccs.outcome import Listeners, Outcome, SendResult, Status, TokenEvent, TokenEventKind
from ccs.provider import Provider
from ccs.transport.http11 import HttpClient, HttpError
from http_fallback.fcm import protocol
from http_fallback.fcm.auth import AuthError, ServiceAccount, TokenSource
from http_fallback.fcm.config import FcmConfig
from http_fallback.fcm.model import Message
from http_fallback.fcm.protocol import Action
from http_fallback.fcm.topics import TopicManager, TopicResult
from http_fallback.fcm.transport import (
    H2,
    QUEUED_PER_CONNECTION,
    H1Sender,
    H2Sender,
    choose_protocol,
)
from http_fallback.fcm.validate import MessageError, ttl_seconds, validate_message

log = logging.getLogger(__name__)
MAX_BATCH = 500


class _Job:
    __slots__ = ("body", "result", "to", "to_token", "attempts", "first_at", "expires_at",
                 "reauthed", "sending")

    def __init__(self, body: bytes, result: SendResult, to: str | None, to_token: bool,
                 now: float, ttl: float | None) -> None:
        self.body = body
        self.result = result
        self.to = to
        self.to_token = to_token
        self.attempts = 0
        self.first_at = now
        self.expires_at = None if ttl is None else now + ttl
        self.reauthed = False
        self.sending = False


@dataclass(frozen=True)
class BatchResult:
    """One Outcome per input, in input order."""

    outcomes: list[Outcome]

    @property
    def success_count(self) -> int:
        return sum(1 for o in self.outcomes if o.ok)

    @property
    def failure_count(self) -> int:
        return len(self.outcomes) - self.success_count

    def __iter__(self) -> Iterator[Outcome]:
        return iter(self.outcomes)

    def __len__(self) -> int:
        return len(self.outcomes)

    def __getitem__(self, i: int) -> Outcome:
        return self.outcomes[i]


class FcmClient(Provider):
    """FCM HTTP v1 sender. send() returns a SendResult resolving to one Outcome (via "http")."""

    name = "http"

    def __init__(self, config: FcmConfig, *, validate_only: bool = False,
                 clock: Callable[[], float] = time.time,
                 rng: Callable[[], float] = random.random) -> None:
        super().__init__()
        self.config = config
        self.account = ServiceAccount.load(config.credentials_file)
        project = config.project_id or self.account.project_id
        if not project:
            raise ValueError("project_id: not set and not in the credentials file")
        self.project_id = project
        self.validate_only = validate_only
        self._rng = rng
        self._policy = config.retry
        self._http = HttpClient(ca_file=config.ca_file, timeout=config.timeout,
                                connect_timeout=config.connect_timeout,
                                max_connections_per_origin=config.concurrency)
        prefix = urlsplit(config.base_url).path.rstrip("/")  # a base URL may carry a path
        self._send_path = prefix + protocol.send_path(project)
        self._sender: H1Sender | H2Sender | None = None  # chosen by ALPN on first use
        self._choosing = Semaphore()
        self._tokens = TokenSource(self.account, self._http, clock=clock,
                                   refresh_margin=config.refresh_margin, timeout=config.timeout)
        self.topics = TopicManager(self._http, self._tokens, config.iid_url)
        self._queue: Queue = Queue(maxsize=config.queue_size)
        self._workers = Pool(config.concurrency)  # this provider's own limit
        self._timers = Group()
        self._jobs: set[_Job] = set()
        self._idle = Event()
        self._idle.set()
        self._started = False
        self._stopping = False
        self._auth_failed: str | None = None
        self.outcomes = Listeners()  # every Outcome, for metrics and logs (observers)
        self._counts = {"accepted": 0, "ok": 0, "failed": 0, "expired": 0, "unknown": 0,
                        "requests": 0, "retries": 0, "reauths": 0}

    def __repr__(self) -> str:
        return f"FcmClient(project={self.project_id!r}, url={self.config.base_url!r})"

    # -- Provider ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        for _ in range(self.config.concurrency):
            self._workers.spawn(self._work)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting; let queued and retrying messages finish for up to `timeout`."""
        self._stopping = True
        self._idle.wait(timeout)
        self._workers.kill()
        if self._sender is not None:
            self._sender.close(0.1)  # settles what it holds: answered, or failed below
        self._timers.kill()
        for job in list(self._jobs):
            if job.sending:
                self._finish(job, Status.UNKNOWN, error="STOPPED",
                             description="client stopped while the request was in flight")
            else:
                self._finish(job, Status.FAILED, error="STOPPED", retryable=True,
                             description="client stopped before the message was sent")
        self._tokens.close()
        self._http.close()
        self._started = False

    def send(self, message: Message | dict[str, Any]) -> SendResult:
        """Queue one message (blocks while the queue is full). MessageError names a bad field."""
        return self._accept(self._wire(message))

    def healthy(self) -> bool:
        return self._started and not self._stopping and self._auth_failed is None

    def stats(self) -> dict[str, Any]:
        """Counters, and `protocol` (h2, http/1.1, None before the first send) with
        `connections`: one entry per open connection saying which protocol it speaks."""
        sender = self._sender.stats() if self._sender is not None else {}
        return {**self._counts, "queued": self._queue.qsize(), "pending": len(self._jobs),
                "token_fetches": self._tokens.fetches, "auth_error": self._auth_failed,
                "protocol": self._sender.protocol if self._sender is not None else None,
                **sender}

    # -- many messages -----------------------------------------------------------------------

    def send_each(self, messages: list[Message | dict[str, Any]]) -> BatchResult:
        """Send up to 500 messages concurrently; one Outcome per input, in input order."""
        if len(messages) > MAX_BATCH:
            raise ValueError(f"messages: at most {MAX_BATCH}, got {len(messages)}")
        wires = []
        for i, m in enumerate(messages):
            try:
                wires.append(self._wire(m))
            except MessageError as e:
                raise MessageError(f"messages[{i}].{e.field}", e.problem) from None
        results = [self._accept(w) for w in wires]
        return BatchResult([r.get() for r in results])

    def send_multicast(self, message: Message | dict[str, Any], tokens: list[str]
                       ) -> BatchResult:
        """Send one message to up to 500 tokens; outcomes in token order."""
        if len(tokens) > MAX_BATCH:
            raise ValueError(f"tokens: at most {MAX_BATCH}, got {len(tokens)}")
        base = message.to_json() if isinstance(message, Message) else dict(message)
        if any(base.get(k) for k in ("token", "topic", "condition")):
            raise MessageError("message", "a multicast message names no target; pass tokens")
        return self.send_each([{**base, "token": t} for t in tokens])

    def stream(self, messages: Iterable[Message | dict[str, Any]],
               window: int | None = None) -> Iterator[Outcome]:
        """Send from an iterable of any size, at most `window` in memory; outcomes in input
        order. A message that fails validation yields a FAILED outcome naming the field."""
        window = window or 2 * self._capacity()
        pending: deque[SendResult] = deque()
        for m in messages:
            try:
                pending.append(self._accept(self._wire(m)))
            except MessageError as e:
                bad = SendResult()
                bad.resolve(Outcome(Status.FAILED, self.name, error="INVALID_ARGUMENT",
                                    description=str(e), attempts=0))
                pending.append(bad)
            while len(pending) >= window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def subscribe(self, topic: str, tokens: list[str]) -> list[TopicResult]:
        """Subscribe tokens to a topic (1000 per request); one result per token, in order."""
        return self.topics.change("batchAdd", topic, tokens)

    def unsubscribe(self, topic: str, tokens: list[str]) -> list[TopicResult]:
        return self.topics.change("batchRemove", topic, tokens)

    # -- internals ---------------------------------------------------------------------------

    def _capacity(self) -> int:
        """Requests the transport takes at once."""
        if self.config.http2 and (self._sender is None or self._sender.protocol == H2):
            return self.config.connections * QUEUED_PER_CONNECTION
        return self.config.concurrency

    def _transport(self) -> H1Sender | H2Sender:
        """The sender, chosen once by ALPN; HttpError when the server cannot be reached."""
        with self._choosing:
            if self._sender is None:
                chosen = choose_protocol(self.config, self.config.connect_timeout)
                if chosen == H2:
                    self._sender = H2Sender(self.config, self._send_path, self)
                else:
                    if self.config.http2:
                        log.warning("FCM at %s does not offer HTTP/2 (ALPN h2): sending over "
                                    "HTTP/1.1 on up to %d connections", self.config.base_url,
                                    self.config.concurrency)
                    self._sender = H1Sender(self._http, self.config, self._send_path, self)
                log.info("FCM sends over %s", self._sender.protocol)
            return self._sender

    def _wire(self, message: Message | dict[str, Any]) -> dict[str, Any]:
        wire = message.to_json() if isinstance(message, Message) else message
        validate_message(wire)
        return wire

    def _accept(self, wire: dict[str, Any]) -> SendResult:
        if self._stopping:
            raise RuntimeError("FcmClient is stopping")
        self.start()
        ttl = wire.get("android", {}).get("ttl")
        to = wire.get("token") or wire.get("topic") or wire.get("condition") or wire.get("fid")
        result = SendResult(key=to)
        job = _Job(protocol.send_body(wire, self.validate_only), result, to,
                   wire.get("token") is not None, time.monotonic(),
                   None if ttl is None else ttl_seconds(ttl))
        self._jobs.add(job)
        self._idle.clear()
        self._counts["accepted"] += 1
        self._queue.put(job)
        return result

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            try:
                self._attempt(job)
            except Exception as e:  # a bug must not lose the message
                log.exception("FCM send failed unexpectedly")
                self._finish(job, Status.FAILED, error="INTERNAL_CLIENT_ERROR",
                             description=type(e).__name__)

    def _attempt(self, job: _Job) -> None:
        # a ttl of 0 means "now or never": its first try always goes out
        if job.expires_at is not None and time.monotonic() > job.expires_at \
                and (job.attempts or job.expires_at > job.first_at):
            self._finish(job, Status.EXPIRED, error="EXPIRED",
                         description="ttl passed before the message could be sent")
            return
        job.attempts += 1
        try:
            token = self._tokens.get()
        except AuthError as e:
            self._auth_failed = None if e.retryable else str(e)
            if e.retryable:
                self._retry_later(job, "AUTH_ERROR", None, str(e))
            else:
                self._finish(job, Status.FAILED, error="AUTH_ERROR", description=str(e))
            return
        self._auth_failed = None
        try:
            sender = self._sender or self._transport()
        except HttpError as e:
            self._retry_later(job, "NETWORK_ERROR", None, str(e))
            return
        sender.wait_room()  # killed here (stop), the message was not sent: FAILED, not UNKNOWN
        self._counts["requests"] += 1
        job.sending = True
        sender.send(job, token)

    # -- what the transport reports ----------------------------------------------------------

    def transport_failed(self, job: _Job, description: str, sent: bool, goaway: bool) -> None:
        """No answer came. `sent`: the request may have reached FCM; `goaway`: it was on a
        connection that went away (GOAWAY) and stayed unanswered through the grace."""
        job.sending = False
        if sent and (goaway or self._stopping):
            self._finish(job, Status.UNKNOWN, error="NO_ANSWER", description=description)
        elif self._stopping:
            self._finish(job, Status.FAILED, error="STOPPED", retryable=True,
                         description=f"client stopped before the message was sent "
                                     f"({description})")
        else:
            self._retry_later(job, "NETWORK_ERROR", None, description)

    def transport_answered(self, job: _Job, token: str, status: int, retry_after: str | None,
                           body: bytes) -> None:
        job.sending = False
        if status == 200:
            try:
                name = protocol.parse_name(body)
            except ValueError as e:
                # FCM always names the message; a 200 without one came from something else
                # (a proxy, a captive portal): whether FCM took the message is unknown
                log.warning("FCM answered 200 without a message name: %s", e)
                self._finish(job, Status.UNKNOWN, error="BAD_RESPONSE", description=str(e),
                             http_status=200)
                return
            self._finish(job, Status.OK, message_id=name)
            return
        info = protocol.parse_error(status, body, retry_after, time.time())
        self._on_error(job, info, token)

    def _on_error(self, job: _Job, info: protocol.FcmErrorInfo, token: str) -> None:
        decision = protocol.classify(info, job.to_token, self.config.sender_id_mismatch_is_dead)
        description = info.message or info.code
        if info.violations:
            description += " (" + "; ".join(f"{f}: {d}" for f, d in info.violations) + ")"
        if decision.token_event and job.to:
            self.token_events.emit(TokenEvent(TokenEventKind(decision.token_event), self.name,
                                              job.to, reason=info.code))
        if decision.action is Action.RETRY:
            self._retry_later(job, info.code, info.retry_after, description)
        elif decision.action is Action.REAUTH and not job.reauthed:
            job.reauthed = True
            self._counts["reauths"] += 1
            self._tokens.invalidate(token)
            # a worker takes it: this may run in a transport greenlet that must not block
            self._timers.add(gevent.spawn(self._queue.put, job))
        else:
            self._finish(job, Status.FAILED, error=info.code, description=description,
                         http_status=info.http_status)

    def _retry_later(self, job: _Job, code: str, retry_after: float | None,
                     description: str) -> None:
        now = time.monotonic()
        if job.attempts >= self._policy.max_attempts:
            self._finish(job, Status.FAILED, error=code, retryable=True,
                         description=f"{description} (gave up after {job.attempts} tries)")
            return
        delay = self._policy.delay(job.attempts, code, retry_after, self._rng())
        if job.expires_at is not None and now + delay > job.expires_at:
            self._finish(job, Status.EXPIRED, error=code, retryable=True,
                         description=f"{description} (ttl passes before the next try)")
        elif now + delay > job.first_at + self._policy.deadline:
            self._finish(job, Status.FAILED, error=code, retryable=True,
                         description=f"{description} (retry deadline reached)")
        else:
            self._counts["retries"] += 1
            self._timers.add(gevent.spawn_later(delay, self._queue.put, job))

    def _finish(self, job: _Job, status: Status, *, message_id: str | None = None,
                error: str | None = None, description: str | None = None,
                retryable: bool = False, http_status: int | None = None) -> None:
        extra = {"http_status": http_status} if http_status else {}
        outcome = Outcome(status, self.name, job.to, message_id, error, description, retryable,
                          None, job.attempts, extra)
        if job.result.resolve(outcome):
            self._counts[str(status)] += 1
            if self.outcomes:
                self.outcomes.emit(outcome)
        self._jobs.discard(job)
        if not self._jobs:
            self._idle.set()
