"""C2DM wire format and node2dm's rules (pure): ClientLogin, send form, answers, blacklist."""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass
from enum import StrEnum

from ccs.outcome import TokenEventKind
from http_fallback.c2dm.model import C2dmMessage
from http_fallback.retry_policy import parse_retry_after

FORM_TYPE = "application/x-www-form-urlencoded;charset=UTF-8"
SERVICE = "ac2dm"
ACCOUNT_TYPE = "HOSTED_OR_GOOGLE"
# an Auth token goes into our Authorization header: visible ASCII only (no CR, LF, NUL, space)
_HEADER_SAFE = re.compile(r"[!-~]{1,4096}")


def encode_login(email: str, password: str, source: str) -> bytes:
    return urllib.parse.urlencode({"accountType": ACCOUNT_TYPE, "Email": email, "Passwd": password,
                                   "service": SERVICE, "source": source}).encode()


@dataclass(frozen=True)
class LoginAnswer:
    auth: str | None  # the Auth= token, None on failure
    error: str | None = None

    def __repr__(self) -> str:  # never show the token
        return f"LoginAnswer(auth={'<set>' if self.auth else None}, error={self.error!r})"


def _lines(body: bytes) -> dict[str, str]:
    text = body.decode("utf-8", "replace")
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def parse_login(status: int, body: bytes) -> LoginAnswer:
    """200 with SID=, LSID=, Auth= lines; 403 with Error=BadAuthentication (or another code)."""
    lines = _lines(body)
    auth = lines.get("Auth")
    if status == 200 and auth and _HEADER_SAFE.fullmatch(auth):
        return LoginAnswer(auth)
    return LoginAnswer(None, lines.get("Error") or f"HTTP {status}")


def auth_header(token: str) -> dict[str, str]:
    return {"Authorization": f"GoogleLogin auth={token}", "Content-Type": FORM_TYPE}


def encode_send(msg: C2dmMessage) -> bytes:
    fields = [("registration_id", msg.registration_id), ("collapse_key", msg.collapse_key)]
    fields += [(f"data.{k}", v) for k, v in msg.data.items()]
    if msg.delay_while_idle:
        fields.append(("delay_while_idle", "1"))
    return urllib.parse.urlencode(fields).encode()


def encode_callback(msg: C2dmMessage, shared_secret: str) -> bytes:
    """node2dm's bad-token webhook form; message_body is the data as compact JSON."""
    body = json.dumps(msg.data, separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    return urllib.parse.urlencode({"device_token": msg.registration_id, "message_body": body,
                                   "shared_secret": shared_secret}).encode()


class Action(StrEnum):
    """What node2dm does after one send answer."""

    SENT = "sent"
    REAUTH = "reauth"  # 401: log in again, then resend
    BACKOFF = "backoff"  # 503/5xx or no answer: wait (Retry-After), then resend
    QUOTA_STOP = "quota_stop"  # QuotaExceeded: write quota.lock, stop the provider
    BLACKLIST = "blacklist"  # DeviceQuotaExceeded: rest the token for an hour
    DROP = "drop"  # bad token or message: drop with an outcome (and a token event)
    FAIL = "fail"  # any other final error


DROP_EVENTS: dict[str, TokenEventKind | None] = {
    "InvalidRegistration": TokenEventKind.INVALID,
    "NotRegistered": TokenEventKind.UNREGISTERED,
    "MismatchSenderId": TokenEventKind.INVALID,
    # MessageTooBig is dropped too, but the token is not at fault: no token event.
    "MessageTooBig": None,
}


@dataclass(frozen=True)
class SendAnswer:
    action: Action
    message_id: str | None = None
    error: str | None = None
    retry_after: float | None = None
    new_auth: str | None = None  # from Update-Client-Auth
    status: int = 0

    @property
    def event(self) -> TokenEventKind | None:
        if self.action is Action.BLACKLIST:
            return TokenEventKind.RATE_LIMITED
        return DROP_EVENTS.get(self.error or "") if self.action is Action.DROP else None

    def __repr__(self) -> str:
        return (f"SendAnswer({self.action}, message_id={self.message_id!r}, error={self.error!r}, "
                f"retry_after={self.retry_after!r}, new_auth={'<set>' if self.new_auth else None})")


def parse_send(status: int, body: bytes, *, retry_after: str | None = None,
               update_client_auth: str | None = None, now: float = 0.0) -> SendAnswer:
    """Judge one send answer: status, body lines, Retry-After and Update-Client-Auth headers."""
    # it goes into our Authorization header: visible ASCII only, else it is ignored
    new_auth = (update_client_auth if update_client_auth
                and _HEADER_SAFE.fullmatch(update_client_auth) else None)
    if status == 401:
        return SendAnswer(Action.REAUTH, error="Unauthorized", status=status)
    if status == 503 or 500 <= status <= 599:
        return SendAnswer(Action.BACKOFF, error=f"HTTP {status}", status=status,
                          retry_after=parse_retry_after(retry_after, now), new_auth=new_auth)
    if status != 200:
        return SendAnswer(Action.FAIL, error=f"HTTP {status}", status=status, new_auth=new_auth)
    lines = _lines(body)
    if "id" in lines:
        return SendAnswer(Action.SENT, message_id=lines["id"], status=200, new_auth=new_auth)
    error = lines.get("Error") or "UnreadableAnswer"
    if error == "QuotaExceeded":
        action = Action.QUOTA_STOP
    elif error == "DeviceQuotaExceeded":
        action = Action.BLACKLIST
    elif error in DROP_EVENTS:
        action = Action.DROP
    else:
        action = Action.FAIL
    return SendAnswer(action, error=error, status=200, new_auth=new_auth)


class Blacklist:
    """Tokens resting after DeviceQuotaExceeded; the clock is handed in."""

    def __init__(self, seconds: float = 3600.0) -> None:
        self.seconds = seconds
        self._until: dict[str, float] = {}

    def add(self, token: str, now: float) -> float:
        until = now + self.seconds
        self._until[token] = until
        return until

    def until(self, token: str, now: float) -> float | None:
        """When the token may be sent to again, or None when it is not blacklisted."""
        until = self._until.get(token)
        if until is None:
            return None
        if until <= now:
            del self._until[token]
            return None
        return until

    def count(self, now: float) -> int:
        for token in [t for t, u in self._until.items() if u <= now]:
            del self._until[token]
        return len(self._until)
