"""Which provider carries a message, and the message in that provider's shape (pure).

A message's lane is fixed when it is accepted: 'fcm' (CCS when a session is healthy, else the
HTTP fallback) unless the caller names a provider with `via`. The provider chosen at send time
is recorded on the message (`via`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from ccs.errors import RouteError

FCM = "fcm"
CCS_SHAPED = ("fcm", "ccs", "http", "legacy")  # lanes whose messages are CCS JSON


class Router:
    def __init__(self, available: Callable[[], Mapping[str, bool]], fallback: str | None,
                 grace_until: float = 0.0, clock: Callable[[], float] = time.monotonic) -> None:
        """`available()` maps each configured provider name to its health right now; until
        `grace_until` (clock time) an unhealthy CCS is still chosen: it is still connecting."""
        self._available = available
        self.fallback = fallback or None
        self.grace_until = grace_until
        self.clock = clock

    def lanes(self) -> list[str]:
        names = list(self._available())
        fcm = [FCM] if {"ccs", self.fallback} & set(names) else []
        return fcm + names

    def lane_for(self, via: str | None) -> str:
        """The lane for a new message; RouteError naming `via` when nothing can carry it."""
        lane = via or FCM
        if lane not in self.lanes():
            known = ", ".join(self.lanes()) or "none"
            raise RouteError("via", f"no provider {lane!r} configured (configured: {known})")
        return lane

    def choose(self, lane: str) -> str:
        """The provider to send on now."""
        if lane != FCM:
            return lane
        health = self._available()
        if health.get("ccs"):
            self.grace_until = 0.0  # CCS has connected: from now on unhealthy means down
            return "ccs"
        if "ccs" in health and self.clock() < self.grace_until:
            return "ccs"  # starting up: give CCS its first connection before falling back
        if self.fallback in health:
            return self.fallback  # type: ignore[return-value]
        return "ccs"  # no fallback configured: CCS retries until a session is up


def remaining_ttl(payload: Mapping[str, Any], expires_at: float | None, now: float
                  ) -> dict[str, Any]:
    """The payload with time_to_live reduced by the time it waited in the outbox."""
    out = dict(payload)
    if expires_at is not None and "time_to_live" in out:
        out["time_to_live"] = max(0, int(expires_at - now))
    return out


_ANDROID_NOTIFICATION = {
    "icon": "icon", "sound": "sound", "tag": "tag", "color": "color",
    "click_action": "click_action", "body_loc_key": "body_loc_key",
    "body_loc_args": "body_loc_args", "title_loc_key": "title_loc_key",
    "title_loc_args": "title_loc_args", "android_channel_id": "channel_id",
}


def ccs_to_fcm_v1(msg: Mapping[str, Any]) -> dict[str, Any]:
    """A CCS JSON downstream message as an FCM HTTP v1 `message` object."""
    out: dict[str, Any] = {}
    to = msg.get("to")
    if isinstance(to, str) and to.startswith("/topics/"):
        out["topic"] = to[len("/topics/"):]
    elif to is not None:
        out["token"] = to
    if "condition" in msg:
        out["condition"] = msg["condition"]
    if isinstance(msg.get("data"), Mapping):
        out["data"] = {str(k): v if isinstance(v, str) else _json(v)
                       for k, v in msg["data"].items()}
    android: dict[str, Any] = {}
    if "collapse_key" in msg:
        android["collapse_key"] = msg["collapse_key"]
    if "priority" in msg:
        android["priority"] = "HIGH" if msg["priority"] == "high" else "NORMAL"
    if "time_to_live" in msg:
        android["ttl"] = f"{int(msg['time_to_live'])}s"
    note = msg.get("notification")
    if isinstance(note, Mapping):
        out["notification"] = {k: note[k] for k in ("title", "body") if k in note}
        extra = {v: note[k] for k, v in _ANDROID_NOTIFICATION.items() if k in note}
        if extra:
            android["notification"] = extra
    if android:
        out["android"] = android
    return out


def _json(v: Any) -> str:
    import json

    return json.dumps(v, separators=(",", ":"))
