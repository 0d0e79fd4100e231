"""The provider: one HTTP/1.1 POST per message over gevent sockets, answers to outcomes.

201/200 ok; 404 and 410 failed with a token event (the subscription is gone); 429 and 5xx
failed and retryable; no answer within the timeout: unknown (the POST may have arrived).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import gevent
from gevent import socket
from gevent.pool import Group

from ccs.outcome import Outcome, SendResult, Status, TokenEvent, TokenEventKind
from ccs.provider import Provider


@dataclass(frozen=True)
class WebpushMessage:
    to: str
    data: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = None


class WebpushClient(Provider):
    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        super().__init__()
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"webpush.url: expected http://host:port/path, got {url!r}")
        self.address = (parts.hostname, parts.port or 80)
        self.path = parts.path or "/"
        self.token = token
        self.timeout = timeout
        self.sent = 0
        self.errors = 0
        self._group = Group()

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 10.0) -> None:
        self._group.join(timeout=timeout)
        self._group.kill()

    def healthy(self) -> bool:
        return True

    def stats(self) -> dict[str, Any]:
        return {"messages_sent": self.sent, "total_errors": self.errors}

    def send(self, message: Any) -> SendResult:
        if not isinstance(message, WebpushMessage):
            raise TypeError("webpush sends WebpushMessage values")
        result = SendResult(message.message_id)
        self._group.spawn(self._post, message, result)
        return result

    def _post(self, m: WebpushMessage, result: SendResult) -> None:
        body = json.dumps({"to": m.to, "data": m.data, "id": m.message_id}).encode()
        head = [f"POST {self.path} HTTP/1.1", f"Host: {self.address[0]}",
                "Content-Type: application/json", f"Content-Length: {len(body)}",
                "Connection: close"]
        if self.token:
            head.append(f"Authorization: Bearer {self.token}")
        try:
            with gevent.Timeout(self.timeout):
                status = _exchange(self.address, "\r\n".join(head).encode() + b"\r\n\r\n" + body)
        except (gevent.Timeout, OSError, ValueError) as exc:
            self.errors += 1
            result.resolve(Outcome(Status.UNKNOWN, self.name, m.to, m.message_id,
                                   error="NO_ANSWER", description=str(exc) or "timeout"))
            return
        self.sent += 1
        if status in (200, 201):
            result.resolve(Outcome(Status.OK, self.name, m.to, m.message_id))
            return
        self.errors += 1
        if status in (404, 410):
            self.token_events.emit(TokenEvent(TokenEventKind.UNREGISTERED, self.name, m.to,
                                              reason=f"HTTP {status}",
                                              message_id=m.message_id))
        result.resolve(Outcome(Status.FAILED, self.name, m.to, m.message_id,
                               error=f"HTTP_{status}", retryable=status == 429 or status >= 500))


def _exchange(address: tuple[str, int], request: bytes) -> int:
    """Send one request, read the whole answer (the server closes), return its status code."""
    with socket.create_connection(address) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    line = b"".join(chunks).split(b"\r\n", 1)[0].split()
    if len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit():
        raise ValueError(f"not an HTTP answer: {line!r}")
    return int(line[1])
