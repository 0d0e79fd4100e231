"""LegacyEmulator: the legacy GCM/FCM HTTP endpoint on loopback, validating as Google did.

Choices where the reference is silent (documented for users' tests): unknown top-level JSON
fields are a 400; a JSON request without a target is a 400, a plain-text one gets
Error=MissingRegistration; any token is registered unless scripted otherwise.
"""

from __future__ import annotations

import itertools
import json
import re
import urllib.parse
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import Any

from http_fallback.emulator_base import HttpEmulator, Reply, SeenRequest
from http_fallback.legacy.model import MAX_REGISTRATION_IDS, MAX_TTL

PATHS = ("/fcm/send", "/gcm/send")
MAX_DATA_BYTES = 4096
KNOWN_FIELDS = frozenset({
    "registration_ids", "to", "notification_key", "condition", "collapse_key", "priority",
    "content_available", "mutable_content", "delay_while_idle", "time_to_live",
    "restricted_package_name", "dry_run", "data", "notification"})
TYPES: dict[str, type | tuple[type, ...]] = {
    "to": str, "notification_key": str, "condition": str, "collapse_key": str, "priority": str,
    "content_available": bool, "mutable_content": bool, "delay_while_idle": bool,
    "time_to_live": int, "restricted_package_name": str, "dry_run": bool, "data": dict,
    "notification": dict}
TOPIC = re.compile(r"^/topics/[a-zA-Z0-9\-_.~%]+$")


@dataclass(frozen=True)
class Delivery:
    token: str
    payload: dict[str, Any]


class _BadRequest(Exception):
    pass


class LegacyEmulator(HttpEmulator):
    """POST /fcm/send (and /gcm/send) with `Authorization: key=<server_key>`."""

    def __init__(self, server_key: str = "emulator-server-key", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server_key = server_key
        self.unregistered: set[str] = set()
        self.invalid: set[str] = set()
        self.mismatched: set[str] = set()
        self.canonical: dict[str, str] = {}
        self.groups: dict[str, list[str]] = {}
        self.packages: dict[str, str] = {}  # token -> the package it belongs to
        self.delivered: list[Delivery] = []
        self._scripted: dict[str, deque[str]] = defaultdict(deque)
        self._failures: deque[tuple[int, int | None]] = deque()
        self._ids = itertools.count(1)
        self.retry_after_on_unavailable: int | None = None  # Retry-After on 200 + Unavailable

    @property
    def url(self) -> str:
        return self.origin + "/fcm/send"

    # scripting
    def script(self, target: str, *errors: str) -> None:
        """The next sends to `target` (token or /topics/x) answer these errors, one each."""
        self._scripted[target].extend(errors)

    def fail_next(self, status: int = 503, retry_after: int | None = None, times: int = 1) -> None:
        """The next `times` requests get this HTTP status (with Retry-After if given)."""
        self._failures.extend([(status, retry_after)] * times)

    def add_group(self, notification_key: str, tokens: list[str]) -> None:
        self.groups[notification_key] = list(tokens)

    # serving
    def handle(self, request: SeenRequest) -> Reply:
        if request.path not in PATHS:
            return Reply(404, b"Not Found")
        if request.method != "POST":
            return Reply(405, b"Method Not Allowed", {"Allow": "POST"})
        if request.header("authorization") != f"key={self.server_key}":
            return Reply(401, b"<HTML><TITLE>Unauthorized</TITLE>Error 401</HTML>",
                         {"Content-Type": "text/html; charset=UTF-8"})
        if self._failures:
            status, retry_after = self._failures.popleft()
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return Reply(status, b"Service Unavailable", headers)
        ctype = (request.header("content-type") or "").lower()
        try:
            reply = self._json(request.body) if ctype.startswith("application/json") \
                else self._plain(request.body)
        except _BadRequest as exc:
            return Reply(400, str(exc).encode(), {"Content-Type": "text/plain"})
        if self.retry_after_on_unavailable is not None and b"Unavailable" in reply.body:
            reply.headers["Retry-After"] = str(self.retry_after_on_unavailable)
        return reply

    def _message_id(self) -> str:
        return f"0:{next(self._ids)}%emulator"

    def _one(self, token: str, msg: dict[str, Any]) -> dict[str, str]:
        """The result for one token: scripted error, token state, then message checks."""
        if self._scripted.get(token):
            return {"error": self._scripted[token].popleft()}
        if token in self.invalid or not token or any(c.isspace() for c in token):
            return {"error": "InvalidRegistration"}
        if token in self.unregistered:
            return {"error": "NotRegistered"}
        if token in self.mismatched:
            return {"error": "MismatchSenderId"}
        package = msg.get("restricted_package_name")
        if package and self.packages.get(token, package) != package:
            return {"error": "InvalidPackageName"}
        ttl = msg.get("time_to_live")
        if ttl is not None and not 0 <= ttl <= MAX_TTL:
            return {"error": "InvalidTtl"}
        data = msg.get("data") or {}
        if any(k == "from" or k.startswith("google") for k in data):
            return {"error": "InvalidDataKey"}
        if _data_size(data) > MAX_DATA_BYTES:
            return {"error": "MessageTooBig"}
        if msg.get("dry_run"):
            return {"message_id": "fake_message_id"}
        result = {"message_id": self._message_id()}
        if token in self.canonical:
            result["registration_id"] = self.canonical[token]
        self.delivered.append(Delivery(self.canonical.get(token, token), msg))
        return result

    def _json(self, body: bytes) -> Reply:
        try:
            msg = json.loads(body)
        except ValueError as exc:
            raise _BadRequest(f"JSON_PARSING_ERROR: {exc}") from None
        if not isinstance(msg, dict):
            raise _BadRequest("JSON_PARSING_ERROR: the body must be a JSON object")
        _check_fields(msg)
        if "registration_ids" in msg:
            tokens = msg["registration_ids"]
            results = [self._one(t, msg) for t in tokens]
            ok = sum(1 for r in results if "message_id" in r)
            return _json_reply({
                "multicast_id": next(self._ids) * 1000 + 7, "success": ok,
                "failure": len(results) - ok,
                "canonical_ids": sum(1 for r in results if "registration_id" in r),
                "results": results})
        target = msg.get("to") or msg.get("notification_key") or msg.get("condition")
        if target in self.groups:
            members = self.groups[target]
            failed = [t for t in members if "message_id" not in self._one(t, msg)]
            answer: dict[str, Any] = {"success": len(members) - len(failed),
                                      "failure": len(failed)}
            if failed:
                answer["failed_registration_ids"] = failed
            return _json_reply(answer)
        if "condition" in msg or str(target).startswith("/topics/"):
            if "to" in msg and not TOPIC.match(target):
                return _json_reply({"error": "InvalidRegistration"})
            if self._scripted.get(target):
                return _json_reply({"error": self._scripted[target].popleft()})
            self.delivered.append(Delivery(target, msg))
            return _json_reply({"message_id": next(self._ids)})
        if "notification_key" in msg:
            return _json_reply({"success": 0, "failure": 0})
        result = self._one(target, msg)
        ok = "message_id" in result
        return _json_reply({"multicast_id": next(self._ids) * 1000 + 7, "success": int(ok),
                            "failure": int(not ok),
                            "canonical_ids": int("registration_id" in result),
                            "results": [result]})

    def _plain(self, body: bytes) -> Reply:
        try:
            fields = urllib.parse.parse_qs(body.decode("utf-8"), keep_blank_values=True,
                                           strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            return Reply(200, b"Error=MissingRegistration")
        token = (fields.get("registration_id") or [""])[0]
        if not token:
            return Reply(200, b"Error=MissingRegistration")
        msg: dict[str, Any] = {"data": {k[5:]: v[0] for k, v in fields.items()
                                        if k.startswith("data.")}}
        for name in ("collapse_key", "restricted_package_name"):
            if name in fields:
                msg[name] = fields[name][0]
        for name in ("delay_while_idle", "dry_run"):
            if name in fields:
                msg[name] = fields[name][0] in ("1", "true")
        if "time_to_live" in fields:
            try:
                msg["time_to_live"] = int(fields["time_to_live"][0])
            except ValueError:
                return Reply(200, b"Error=InvalidTtl")
        result = self._one(token, msg)
        if "error" in result:
            return Reply(200, f"Error={result['error']}".encode(), {"Content-Type": "text/plain"})
        lines = [f"id={result['message_id']}"]
        if "registration_id" in result:
            lines.append(f"registration_id={result['registration_id']}")
        return Reply(200, "\n".join(lines).encode(), {"Content-Type": "text/plain"})


def _check_fields(msg: dict[str, Any]) -> None:
    unknown = sorted(set(msg) - KNOWN_FIELDS)
    if unknown:
        raise _BadRequest(f"Field \"{unknown[0]}\" is not a known message field")
    for name, kind in TYPES.items():
        value = msg.get(name)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise _BadRequest(f"Field \"{name}\" has the wrong type")
    targets = [n for n in ("registration_ids", "to", "notification_key", "condition") if n in msg]
    if not targets:
        raise _BadRequest("Missing \"registration_ids\" field")
    if len(targets) > 1 and set(targets) != {"to", "notification_key"}:
        raise _BadRequest(f"Only one target is allowed, got {targets}")
    if "registration_ids" in msg:
        ids = msg["registration_ids"]
        if not isinstance(ids, list) or not all(isinstance(t, str) for t in ids):
            raise _BadRequest("Field \"registration_ids\" must be a JSON array of strings")
        if not ids:
            raise _BadRequest("Field \"registration_ids\" is empty")
        if len(ids) > MAX_REGISTRATION_IDS:
            raise _BadRequest(f"Number of messages on bulk ({len(ids)}) exceeds maximum "
                              f"allowed ({MAX_REGISTRATION_IDS})")
    if msg.get("priority") not in (None, "normal", "high"):
        raise _BadRequest("Field \"priority\" must be \"normal\" or \"high\"")


def _data_size(data: dict[str, Any]) -> int:
    return sum(len(str(k).encode()) + len(json.dumps(v, ensure_ascii=False).strip('"').encode())
               for k, v in data.items())


def _json_reply(doc: dict[str, Any]) -> Reply:
    return Reply(200, json.dumps(doc).encode(), {"Content-Type": "application/json; charset=UTF-8"})
