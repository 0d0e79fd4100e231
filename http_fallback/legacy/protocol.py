"""Legacy HTTP wire format (pure): JSON and plain-text bodies out, answers judged per target.

Nothing here does I/O or reads a clock: the caller hands in status, body, Retry-After and `now`.
"""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from ccs.outcome import Status, TokenEventKind
from http_fallback.legacy.model import LegacyMessage, MessageError
from http_fallback.retry_policy import parse_retry_after

JSON_TYPE = "application/json"
FORM_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"
OPTIONS = ("collapse_key", "priority", "content_available", "mutable_content", "delay_while_idle",
           "time_to_live", "restricted_package_name", "dry_run", "data", "notification")
FORM_OPTIONS = ("collapse_key", "delay_while_idle", "time_to_live", "restricted_package_name",
                "dry_run")

# Table 11: retry these with backoff; everything else is a final answer for that target.
RETRYABLE_ERRORS = frozenset({"Unavailable", "InternalServerError"})
TOKEN_EVENTS = {
    "NotRegistered": TokenEventKind.UNREGISTERED,
    "InvalidRegistration": TokenEventKind.INVALID,
    "MismatchSenderId": TokenEventKind.INVALID,
    "DeviceMessageRateExceeded": TokenEventKind.RATE_LIMITED,
}


def request_headers(server_key: str, plain_text: bool = False) -> dict[str, str]:
    return {"Authorization": f"key={server_key}",
            "Content-Type": FORM_TYPE if plain_text else JSON_TYPE}


def encode_json(msg: LegacyMessage) -> bytes:
    body: dict[str, Any] = {}
    if msg.registration_ids is not None:
        body["registration_ids"] = list(msg.registration_ids)
    for name in ("to", "notification_key", "condition", *OPTIONS):
        value = getattr(msg, name)
        if value is not None:
            body[name] = value
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def encode_form(msg: LegacyMessage) -> bytes:
    """Plain text (table 2): one registration_id, options, data.<key> strings."""
    if msg.kind != "token":
        raise MessageError("to: plain text carries exactly one registration id "
                           "(multicast, topics, conditions and groups need JSON)")
    if msg.notification is not None or msg.priority is not None:
        raise MessageError("notification/priority: not available in plain text; use JSON")
    fields: list[tuple[str, str]] = [("registration_id", msg.target)]
    for name in FORM_OPTIONS:
        value = getattr(msg, name)
        if value is None:
            continue
        fields.append((name, ("1" if value else "0") if isinstance(value, bool) else str(value)))
    for key, value in (msg.data or {}).items():
        if not isinstance(value, str):
            raise MessageError(f"data.{key}: plain text values must be strings")
        fields.append((f"data.{key}", value))
    return urllib.parse.urlencode(fields).encode()


class AnswerKind(StrEnum):
    RESULTS = "results"  # 200 with a results array (or a plain-text id/Error)
    TOPIC = "topic"  # 200 with message_id or error for a topic or condition
    GROUP = "group"  # 200 with success/failure/failed_registration_ids
    AUTH = "auth"  # 401
    BAD_REQUEST = "bad_request"  # 400
    UNAVAILABLE = "unavailable"  # 5xx
    TRANSPORT = "transport"  # no answer: connection failed
    UNEXPECTED = "unexpected"  # an answer we cannot read


@dataclass(frozen=True)
class TokenResult:
    token: str
    message_id: str | None = None
    canonical_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Answer:
    kind: AnswerKind
    status: int = 0
    results: tuple[TokenResult, ...] = ()
    retry_after: float | None = None
    multicast_id: str | None = None
    description: str | None = None
    group: dict[str, Any] = field(default_factory=dict)


def parse_answer(msg: LegacyMessage, status: int, body: bytes, *, plain_text: bool = False,
                 retry_after: str | None = None, now: float = 0.0) -> Answer:
    """Read one HTTP answer to `msg` (status, body, Retry-After header)."""
    if status == 401:
        return Answer(AnswerKind.AUTH, status, description=_text(body) or "authentication failed")
    if status == 400:
        return Answer(AnswerKind.BAD_REQUEST, status, description=_text(body) or "bad request")
    if 500 <= status <= 599:
        return Answer(AnswerKind.UNAVAILABLE, status,
                      retry_after=parse_retry_after(retry_after, now),
                      description=_text(body) or f"HTTP {status}")
    if status != 200:
        return Answer(AnswerKind.UNEXPECTED, status, description=f"HTTP {status}: {_text(body)}")
    answer = _parse_plain(msg, body) if plain_text else _parse_json(msg, body)
    # table 11: a 200 carrying Unavailable may come with Retry-After too
    delay = parse_retry_after(retry_after, now)
    return answer if delay is None else dataclasses.replace(answer, retry_after=delay)


def _text(body: bytes) -> str:
    return body.decode("utf-8", "replace").strip()[:500]


def _parse_plain(msg: LegacyMessage, body: bytes) -> Answer:
    lines = dict(line.split("=", 1) for line in _text(body).splitlines() if "=" in line)
    if "id" in lines:
        return Answer(AnswerKind.RESULTS, 200, (TokenResult(
            msg.target, message_id=lines["id"], canonical_id=lines.get("registration_id")),))
    if "Error" in lines:
        return Answer(AnswerKind.RESULTS, 200, (TokenResult(msg.target, error=lines["Error"]),))
    return Answer(AnswerKind.UNEXPECTED, 200, description=f"unreadable answer: {_text(body)!r}")


def _parse_json(msg: LegacyMessage, body: bytes) -> Answer:
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError):
        doc = None
    if not isinstance(doc, dict):
        return Answer(AnswerKind.UNEXPECTED, 200, description=f"not a JSON object: {_text(body)!r}")
    if isinstance(doc.get("results"), list):
        results = doc["results"]
        targets = msg.targets
        if len(results) != len(targets) or not all(isinstance(r, dict) for r in results):
            return Answer(AnswerKind.UNEXPECTED, 200, description=(
                f"{len(results)} results for {len(targets)} registration ids"))
        return Answer(AnswerKind.RESULTS, 200, tuple(
            TokenResult(token, _str(r.get("message_id")), _str(r.get("registration_id")),
                        _str(r.get("error"))) for token, r in zip(targets, results, strict=True)),
            multicast_id=_str(doc.get("multicast_id")))
    if "message_id" in doc or "error" in doc:
        return Answer(AnswerKind.TOPIC, 200, (TokenResult(
            msg.target, _str(doc.get("message_id")), error=_str(doc.get("error"))),))
    if "success" in doc and "failure" in doc:
        success, failure = _count(doc.get("success")), _count(doc.get("failure"))
        failed_ids = doc.get("failed_registration_ids") or []
        if success is None or failure is None or not isinstance(failed_ids, list) \
                or not all(isinstance(t, str) for t in failed_ids):
            return Answer(AnswerKind.UNEXPECTED, 200,
                          description=f"bad device group answer: {_text(body)!r}")
        return Answer(AnswerKind.GROUP, 200, group={
            "success": success, "failure": failure, "failed_registration_ids": failed_ids})
    return Answer(AnswerKind.UNEXPECTED, 200, description=f"unknown answer shape: {_text(body)!r}")


def _count(value: Any) -> int | None:
    """A non-negative JSON integer, else None."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True)
class Verdict:
    """What to do about one target after one answer."""

    status: Status
    error: str | None = None
    retryable: bool = False
    message_id: str | None = None
    canonical_id: str | None = None
    description: str | None = None
    event: TokenEventKind | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def judge(answer: Answer, count: int) -> list[Verdict]:
    """One verdict per target of the request, in request order (`count` targets)."""
    kind = answer.kind
    if kind in (AnswerKind.RESULTS, AnswerKind.TOPIC):
        if len(answer.results) == count:
            return [judge_result(r) for r in answer.results]
        # e.g. a single-target answer shape to a multicast: nothing lines up with the ids
        return [Verdict(Status.UNKNOWN, "UnexpectedAnswer", description=(
            f"{len(answer.results)} results for {count} targets"))] * count
    if kind is AnswerKind.GROUP:
        return [_judge_group(answer.group)] * count
    if kind is AnswerKind.AUTH:
        v = Verdict(Status.FAILED, "Unauthorized", description=answer.description)
    elif kind is AnswerKind.BAD_REQUEST:
        v = Verdict(Status.FAILED, "InvalidJson", description=answer.description)
    elif kind is AnswerKind.UNAVAILABLE:
        v = Verdict(Status.FAILED, "Unavailable", retryable=True, description=answer.description,
                    extra={"http_status": answer.status})
    elif kind is AnswerKind.TRANSPORT:
        v = Verdict(Status.FAILED, "ConnectionError", retryable=True,
                    description=answer.description)
    else:
        v = Verdict(Status.UNKNOWN, "UnexpectedAnswer", description=answer.description)
    return [v] * count


def judge_result(r: TokenResult) -> Verdict:
    if r.error is None and r.message_id is not None:
        if r.canonical_id and r.canonical_id != r.token:
            return Verdict(Status.OK, message_id=r.message_id, canonical_id=r.canonical_id,
                           event=TokenEventKind.CANONICAL)
        return Verdict(Status.OK, message_id=r.message_id)
    error = r.error or "MissingMessageId"
    return Verdict(Status.FAILED, error, retryable=error in RETRYABLE_ERRORS,
                   event=TOKEN_EVENTS.get(error))


def _judge_group(group: dict[str, Any]) -> Verdict:
    success, failure = group.get("success") or 0, group.get("failure") or 0
    if failure and not success:
        return Verdict(Status.FAILED, "DeviceGroupFailed", retryable=True,
                       description=f"all {failure} members failed", extra=group)
    note = f"{failure} of {success + failure} members failed" if failure else None
    return Verdict(Status.OK, description=note, extra=group)
