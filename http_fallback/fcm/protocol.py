"""FCM HTTP v1 wire rules with no I/O: request bodies, response parsing, error classification,
retry delays and the OAuth assertion claims. Clocks and random numbers are passed in."""

from __future__ import annotations

import email.utils
import json
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from ccs.backoff import added_jitter, exponential

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
# a token goes into an Authorization header: visible ASCII only (no CR, LF, NUL or spaces)
_HEADER_SAFE = re.compile(r"[!-~]{1,4096}")
TOKEN_FIELD_RE = re.compile(r"^message\.token$|registration.?token", re.IGNORECASE)

# errorCode (or gRPC status when no errorCode came) for an HTTP status without a JSON body
STATUS_FALLBACK = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                   404: "NOT_FOUND", 429: "QUOTA_EXCEEDED", 500: "INTERNAL",
                   503: "UNAVAILABLE"}


def send_path(project_id: str) -> str:
    return f"/v1/projects/{project_id}/messages:send"


def send_body(message: dict[str, Any], validate_only: bool = False) -> bytes:
    """The JSON body of messages:send."""
    body: dict[str, Any] = {"message": message}
    if validate_only:
        body["validate_only"] = True
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class FcmErrorInfo:
    """A parsed v1 error answer. `code` is the FcmError errorCode, else the gRPC status."""

    http_status: int
    code: str
    status: str | None = None
    message: str | None = None
    violations: tuple[tuple[str, str], ...] = ()
    retry_after: float | None = None

    def names_token(self) -> bool:
        """True when the error is about the registration token itself: a field violation names
        it, or (FCM's other form, with no violations) the message says so."""
        if self.violations:
            return any(TOKEN_FIELD_RE.search(f) for f, _ in self.violations)
        return bool(self.message and "registration token" in self.message.lower())


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date); None if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:  # "inf" and "nan" parse as floats; neither is a delay
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return max(0.0, when.timestamp() - now)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _json_object(body: bytes, what: str) -> dict[str, Any]:
    """The body as a JSON object; ValueError (naming `what`) for anything else."""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise ValueError(f"{what} is not JSON: nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"{what} is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{what} is not a JSON object")
    return doc


def parse_name(body: bytes) -> str:
    """The message name of a success answer; ValueError when the body is not one."""
    name = _json_object(body, "success answer").get("name")
    if not isinstance(name, str):
        raise ValueError("success answer without a message name")
    return name


def parse_error(http_status: int, body: bytes, retry_after: str | None,
                now: float) -> FcmErrorInfo:
    """Read a v1 error body; tolerant of non-JSON bodies from proxies."""
    wait = parse_retry_after(retry_after, now)
    try:
        err = json.loads(body)["error"]
        if not isinstance(err, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError, IndexError, RecursionError):
        code = STATUS_FALLBACK.get(http_status) or (
            "UNAVAILABLE" if http_status >= 500 else f"HTTP_{http_status}")
        return FcmErrorInfo(http_status, code, retry_after=wait)
    status = err.get("status") if isinstance(err.get("status"), str) else None
    error_code = None
    violations: list[tuple[str, str]] = []
    for detail in _list(err.get("details")):
        if not isinstance(detail, dict):
            continue
        kind = detail.get("@type")
        if kind == FCM_ERROR_TYPE and isinstance(detail.get("errorCode"), str):
            error_code = detail["errorCode"]
        elif kind == BAD_REQUEST_TYPE:
            for v in _list(detail.get("fieldViolations")):
                if isinstance(v, dict):
                    violations.append((str(v.get("field", "")), str(v.get("description", ""))))
    code = error_code or status or STATUS_FALLBACK.get(http_status) or f"HTTP_{http_status}"
    message = err.get("message") if isinstance(err.get("message"), str) else None
    return FcmErrorInfo(http_status, code, status, message, tuple(violations), wait)


class Action(StrEnum):
    DEAD_TOKEN = "dead_token"  # final; tell token_events to drop it
    BAD_MESSAGE = "bad_message"  # final; the payload needs fixing
    CREDENTIALS = "credentials"  # final; configuration or credentials are wrong
    REAUTH = "reauth"  # our access token was refused: refresh once and resend
    RETRY = "retry"  # transient: back off and resend


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    token_event: str | None = None  # a TokenEventKind value, when the token is concerned


RETRYABLE = frozenset({"UNAVAILABLE", "INTERNAL", "QUOTA_EXCEEDED", "NETWORK_ERROR"})


def classify(info: FcmErrorInfo, to_token: bool, sender_mismatch_is_dead: bool = False
             ) -> Decision:
    """Which of the four outcomes (dead token, bad message, credentials, retry) an error is."""
    code = info.code
    if code == "UNREGISTERED":
        return Decision(Action.DEAD_TOKEN, "unregistered" if to_token else None)
    if code == "INVALID_ARGUMENT":
        if to_token and info.names_token():
            return Decision(Action.DEAD_TOKEN, "invalid")
        return Decision(Action.BAD_MESSAGE)
    if code == "SENDER_ID_MISMATCH":
        if sender_mismatch_is_dead and to_token:
            return Decision(Action.DEAD_TOKEN, "invalid")
        return Decision(Action.CREDENTIALS)
    if code == "QUOTA_EXCEEDED":
        return Decision(Action.RETRY, "rate_limited" if to_token else None)
    if code in RETRYABLE or (info.http_status >= 500 and code not in ("UNIMPLEMENTED",)):
        return Decision(Action.RETRY)
    if code == "UNAUTHENTICATED":
        return Decision(Action.REAUTH)
    if code in ("THIRD_PARTY_AUTH_ERROR", "PERMISSION_DENIED", "NOT_FOUND",
                "APNS_AUTH_ERROR"):
        return Decision(Action.CREDENTIALS)
    return Decision(Action.BAD_MESSAGE)


@dataclass(frozen=True, slots=True)
class FcmRetryPolicy:
    """When FCM HTTP v1 sends a failed message again: exponential backoff with jitter.

    QUOTA_EXCEEDED starts at `quota_delay` (FCM asks for at least a minute) unless the server's
    Retry-After says otherwise; Retry-After is a floor."""

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 600.0
    quota_delay: float = 60.0
    jitter: float = 0.2  # up to this fraction is added at random
    deadline: float = 900.0  # seconds after the first try when no more tries start

    def delay(self, attempt: int, code: str, retry_after: float | None, rand: float) -> float:
        """Seconds to wait after failed try number `attempt` (1-based); rand in [0, 1)."""
        first = self.quota_delay if code == "QUOTA_EXCEEDED" else self.base_delay
        if code == "QUOTA_EXCEEDED" and retry_after is not None:
            first = min(first, retry_after)
        cap = max(self.max_delay, first)  # the cap never undercuts the quota floor
        backoff = added_jitter(exponential(attempt, first, cap), rand, self.jitter)
        return max(backoff, retry_after or 0.0)


RetryPolicy = FcmRetryPolicy  # the old name; ccs.xmpp.retry.RetryPolicy is the CCS one


def assertion_claims(client_email: str, token_uri: str, now: float,
                     lifetime: int = 3600) -> dict[str, Any]:
    """Claims of the RS256 JWT traded for an access token (exp at most an hour on)."""
    iat = int(now)
    return {"iss": client_email, "scope": SCOPE, "aud": token_uri, "iat": iat,
            "exp": iat + min(lifetime, 3600)}


def token_request_body(assertion: str) -> bytes:
    return urlencode({"grant_type": JWT_GRANT, "assertion": assertion}).encode()


@dataclass(frozen=True, slots=True)
class AccessToken:
    value: str = field(repr=False)
    expires_at: float  # wall-clock seconds
    refresh_at: float


def parse_token_answer(body: bytes, now: float, margin: float) -> AccessToken:
    """An access token from the token endpoint's JSON; refresh `margin` seconds early
    (at most half the lifetime, so short test lifetimes still get used)."""
    answer = _json_object(body, "token answer")
    token = answer.get("access_token")
    expires_in = answer.get("expires_in", 3600)
    if (not isinstance(token, str) or not _HEADER_SAFE.fullmatch(token)
            or isinstance(expires_in, bool)
            or not isinstance(expires_in, (int, float)) or not 0 < expires_in < 10**9):
        raise ValueError("token answer without access_token/expires_in")
    return AccessToken(token, now + expires_in, now + expires_in - min(margin, expires_in / 2))


def topic_body(topic: str, tokens: list[str]) -> bytes:
    name = topic if topic.startswith("/topics/") else f"/topics/{topic}"
    return json.dumps({"to": name, "registration_tokens": tokens}).encode()


def parse_topic_results(body: bytes, count: int) -> list[str | None]:
    """Per-token error codes (None = done) of a batchAdd/batchRemove answer, in order."""
    results = _json_object(body, "topic answer").get("results")
    if not isinstance(results, list) or len(results) != count:
        raise ValueError("topic answer has the wrong number of results")
    return [_topic_error(r) for r in results]


def _topic_error(result: Any) -> str | None:
    if not isinstance(result, dict):
        return "UNKNOWN"
    error = result.get("error")
    return error if error is None or isinstance(error, str) else "UNKNOWN"
