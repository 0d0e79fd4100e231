"""Token feedback: one stream of TokenEvents from every provider.

Each event goes to Python callbacks, to the live event stream (`ccs tail`), and, when a webhook
URL is set, into the store as a pending POST. The poster signs each body with HMAC-SHA256
(header X-CCS-Signature: sha256=<hex>; the secret is never in the body) and retries failed
POSTs from the store with exponential backoff: a failure delays an event, never drops it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from gevent.event import Event

from ccs.backoff import equal_jitter, exponential
from ccs.gateway.events import EventBus
from ccs.gateway.outbox.base import Store
from ccs.gateway.settings import ConfigError, mask_urls
from ccs.outcome import Listeners, TokenEvent

log = logging.getLogger(__name__)

WEBHOOK = "webhook"
SIGNATURE_HEADER = "X-CCS-Signature"


def sign(secret: str, body: bytes) -> str:
    """The signature header value for `body`: sha256=<hex HMAC-SHA256 with `secret`>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str | bytes | None) -> bool:
    """Check a signature header in constant time (for webhook receivers); False for anything
    that is not the right signature, whatever its type or characters."""
    if isinstance(header, str):
        try:
            header = header.encode("ascii")
        except UnicodeEncodeError:
            return False  # a signature is ASCII hex; compare_digest refuses other str
    if not isinstance(header, bytes):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header)


def backoff(attempts: int, first: float, most: float, rnd: Callable[[], float] = random.random
            ) -> float:
    """Delay before retry number `attempts` (1-based): doubling, capped, with jitter."""
    return equal_jitter(exponential(attempts, first, most), rnd())


class PostError(Exception):
    """A webhook POST got no 2xx answer (or none at all)."""


class Webhook:
    """Where and how token events are POSTed (keep-alive HTTP/1.1, TLS verified)."""

    def __init__(self, url: str, secret: str, timeout: float = 10.0,
                 max_backoff: float = 300.0, first_backoff: float = 1.0,
                 ca_file: str | None = None) -> None:
        if not secret:
            raise ConfigError("webhook.secret", "required when webhook.url is set")
        if not url.startswith(("http://", "https://")):
            raise ConfigError("webhook.url", f"must start with http:// or https://, got "
                                             f"{mask_urls(url)!r}")
        self.url = url
        self._secret = secret
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.first_backoff = min(first_backoff, max_backoff)
        self.ca_file = ca_file
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigError("webhook.url", f"no host in {mask_urls(url)!r}")
        self._origin = f"{parts.scheme}://{parts.netloc}"
        self._path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._pool: Any = None

    def __repr__(self) -> str:
        return f"Webhook({mask_urls(self.url)!r})"

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def deliver(self, seq: int, body: dict[str, Any]) -> None:
        """POST one event; raises PostError unless the receiver answers 2xx."""
        data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
        headers = {"Content-Type": "application/json", SIGNATURE_HEADER: sign(self._secret, data),
                   "X-CCS-Delivery": str(seq)}
        from ccs.transport.http11 import HttpError, HttpPool

        if self._pool is None:
            self._pool = HttpPool(self._origin, ca_file=self.ca_file, max_connections=4,
                                  connect_timeout=self.timeout, timeout=self.timeout)
        try:  # the receiver de-duplicates by X-CCS-Delivery, so a re-send is harmless
            response = self._pool.request("POST", self._path, headers, data, idempotent=True)
        except HttpError as exc:
            raise PostError(str(exc)) from None
        if not 200 <= response.status < 300:
            raise PostError(f"HTTP {response.status}")


class Feedback:
    def __init__(self, store: Store, bus: EventBus, webhook: Webhook | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.bus = bus
        self.webhook = webhook
        self.clock = clock
        self.listeners = Listeners()  # TokenEvent, for Python callbacks
        self.counts: dict[tuple[str, str], int] = {}  # (provider, kind) -> events
        self.posted = 0
        self.poll = 1.0  # seconds between looks for retries that came due
        self.post_failures = 0
        self._pending: deque[TokenEvent] = deque()
        self._wake = Event()
        self._post_wake = Event()

    def observe(self, event: TokenEvent) -> None:
        """Attach to every provider's token_events; never blocks the provider."""
        self._pending.append(event)
        self._wake.set()

    def run(self) -> None:
        """Deliver events to the webhook store, callbacks and the stream (a supervisor child).

        An event leaves the queue only once handled: if storing it fails, the restarted child
        tries it again, and callbacks never see it twice."""
        while True:
            while self._pending:
                event = self._pending[0]
                body = {"type": "token", **event.as_json()}
                if self.webhook is not None:
                    self.store.add_event(WEBHOOK, uuid.uuid4().hex, body, self.clock())
                    self._post_wake.set()
                self._pending.popleft()
                key = (event.provider, str(event.kind))
                self.counts[key] = self.counts.get(key, 0) + 1
                self.listeners.emit(event)
                self.bus.publish("token", body)
            self._wake.wait()
            self._wake.clear()

    def run_webhook(self) -> None:
        """POST stored events, retrying failures with backoff (a supervisor child)."""
        assert self.webhook is not None
        hook = self.webhook
        while True:
            self._post_wake.clear()
            due = self.store.pending_events(WEBHOOK, self.clock(), limit=100)
            for e in due:
                try:
                    hook.deliver(e.seq, e.body)
                except PostError as exc:
                    self.post_failures += 1
                    delay = backoff(e.attempts + 1, hook.first_backoff, hook.max_backoff)
                    said = mask_urls(str(exc))  # an error may quote the URL and its password
                    log.warning("webhook POST of event %s failed (%s); retry in %.1fs",
                                e.seq, said, delay)
                    self.store.event_retry(e.seq, self.clock() + delay, said, self.clock())
                else:
                    self.posted += 1
                    self.store.event_done([e.seq], self.clock())
            if not due:
                self._post_wake.wait(timeout=self.poll)

    def rate_limited(self, provider: str) -> int:
        return self.counts.get((provider, "rate_limited"), 0)
