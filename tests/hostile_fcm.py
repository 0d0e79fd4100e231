"""tests/hostile_h2.py's unkind HTTP/2 server, answering like FCM HTTP v1 instead of APNs.

Same switches (limit dropped to 1 after every error, GOAWAY with hundreds of streams open, tiny
windows, latency, held answers); the target is read from the JSON body, and a quarter of the
tokens get FCM's errors: 404 UNREGISTERED, 400 INVALID_ARGUMENT (the token), 429
QUOTA_EXCEEDED, 500 INTERNAL, 503 UNAVAILABLE (the last three until the client gives up).
"""

from __future__ import annotations

import json
from typing import Any

from h2 import events as ev

from tests.hostile_h2 import HostileApns, _Link, verdict

# APNs status from hostile_h2.verdict -> FCM's (status, gRPC status, errorCode)
FCM_ERRORS = {410: (404, "NOT_FOUND", "UNREGISTERED"),
              400: (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT"),
              429: (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED"),
              500: (500, "INTERNAL", "INTERNAL"),
              503: (503, "UNAVAILABLE", "UNAVAILABLE")}
FINAL = {200, 400, 404}  # answers after which a message must never come back


def fcm_verdict(token: str) -> tuple[int, str | None]:
    """The FCM status and errorCode the server answers `token` with."""
    status, _ = verdict(token)
    if status == 200:
        return 200, None
    return FCM_ERRORS[status][0], FCM_ERRORS[status][2]


class HostileFcm(HostileApns):
    """`by_id` maps each token to the statuses it was answered; `missing_auth` is not used."""

    def _on_events(self, link: _Link, events: list[Any]) -> list[int]:
        bodies = link.__dict__.setdefault("bodies", {})
        for e in events:
            if type(e) is ev.DataReceived:
                bodies[e.stream_id] = bodies.get(e.stream_id, b"") + e.data
        return super()._on_events(link, events)

    def _answer(self, link: _Link, sids: list[int]) -> None:
        b = self.b
        bodies = link.__dict__.setdefault("bodies", {})
        with link.lock:
            for sid in sids:
                if sid not in link.open:
                    continue
                link.requests.pop(sid, None)
                try:
                    token = json.loads(bodies.pop(sid, b"{}"))["message"]["token"]
                except (ValueError, KeyError, TypeError):
                    token = ""
                if any(s in FINAL for s in self.by_id.get(token, ())):
                    self.resent_after_final += 1
                status, code = fcm_verdict(token) if b.refusals else (200, None)
                headers = [(":status", str(status)), ("content-type", "application/json")]
                if status == 200:
                    body = json.dumps({"name": f"projects/p/messages/{sid}"}).encode()
                else:
                    _, grpc, _ = FCM_ERRORS[verdict(token)[0]]
                    details: list[dict[str, Any]] = [
                        {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                         "errorCode": code}]
                    if code == "INVALID_ARGUMENT":
                        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest",
                                        "fieldViolations": [{"field": "message.token",
                                                             "description": "bad token"}]})
                    body = json.dumps({"error": {"code": status, "message": code,
                                                 "status": grpc, "details": details}}).encode()
                    body += b" " * b.error_pad
                    if status in (429, 503):
                        headers.append(("retry-after", "0"))
                self._reply(link, sid, token, status, body, headers)
                self._answered(link, status)
            try:
                link.sock.sendall(link.h2.data_to_send())
            except OSError:
                return
