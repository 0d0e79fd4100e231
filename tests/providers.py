"""A test-only in-process provider behind the Provider seam (until the real ones land on main).

It answers every message itself: ok by default, a chosen outcome per token, held until a gate
opens (a slow provider), and it records every message it was handed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Group

from ccs.outcome import Outcome, SendResult, Status, TokenEvent, TokenEventKind
from ccs.provider import Provider


class LocalProvider(Provider):
    def __init__(self, name: str = "local", delay: float = 0.0) -> None:
        super().__init__()
        self.name = name
        self.delay = delay
        self.gate = Event()
        self.gate.set()  # clear() to hold every send until set() again
        self.received: list[dict[str, Any]] = []
        self.fail_tokens: dict[str, str] = {}  # token -> error code (failed + token event)
        self.is_healthy = True
        self.started = 0
        self.stopped = 0
        self.on_send: Callable[[dict[str, Any]], None] | None = None
        self._group = Group()

    def start(self) -> None:
        self.started += 1

    def stop(self, timeout: float = 10.0) -> None:
        self.stopped += 1
        self._group.kill(timeout=timeout)

    def healthy(self) -> bool:
        return self.is_healthy

    def stats(self) -> dict[str, Any]:
        return {"received": len(self.received), "logged_in": self.is_healthy}

    def send(self, message: Any) -> SendResult:
        if dataclasses.is_dataclass(message):  # a provider model object (Notification...)
            message = dataclasses.asdict(message)  # type: ignore[arg-type]
        if not isinstance(message, dict) or not _target(message):
            raise ValueError("to: a message needs a target")
        self.received.append(message)
        if self.on_send is not None:
            self.on_send(message)
        result = SendResult(message.get("message_id"))
        self._group.spawn(self._answer, message, result)
        return result

    def _answer(self, message: dict[str, Any], result: SendResult) -> None:
        self.gate.wait()
        if self.delay:
            gevent.sleep(self.delay)
        to = _target(message)
        code = self.fail_tokens.get(to)
        if code:
            self.token_events.emit(TokenEvent(TokenEventKind.UNREGISTERED, self.name, to,
                                              reason=code, message_id=message.get("message_id")))
            result.resolve(Outcome(Status.FAILED, via=self.name, to=to, error=code,
                                   message_id=message.get("message_id")))
        else:
            result.resolve(Outcome(Status.OK, via=self.name, to=to,
                                   message_id="0:" + str(message.get("message_id"))))


def _target(message: dict[str, Any]) -> Any:
    for key in ("to", "token", "device", "registration_id"):
        if message.get(key):
            return message[key]
    return None
