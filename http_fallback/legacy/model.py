"""The legacy HTTP downstream message (server reference, tables 1 and 2), checked on creation."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ccs.limits import MAX_TTL

MAX_REGISTRATION_IDS = 1000
PRIORITIES = ("normal", "high")


class MessageError(ValueError):
    """Bad input to a message; the text names the field."""


def _check_str(name: str, value: Any, *, empty: bool = False) -> None:
    if value is None:
        return
    if not isinstance(value, str) or (not empty and not value):
        raise MessageError(f"{name}: must be a non-empty string")


def _check_bool(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, bool):
        raise MessageError(f"{name}: must be true or false")


@dataclass(frozen=True)
class LegacyMessage:
    """One request to /fcm/send. Exactly one target: registration_ids, to, notification_key or
    condition. `id` is ours (for outcomes and logs), never sent."""

    registration_ids: tuple[str, ...] | None = None
    to: str | None = None
    notification_key: str | None = None
    condition: str | None = None
    collapse_key: str | None = None
    priority: str | None = None
    content_available: bool | None = None
    mutable_content: bool | None = None
    delay_while_idle: bool | None = None
    time_to_live: int | None = None
    restricted_package_name: str | None = None
    dry_run: bool | None = None
    data: Mapping[str, Any] | None = None
    notification: Mapping[str, Any] | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if self.registration_ids is not None:
            ids = self.registration_ids
            if isinstance(ids, str) or not isinstance(ids, (list, tuple)):
                raise MessageError("registration_ids: must be a list of strings")
            if not 1 <= len(ids) <= MAX_REGISTRATION_IDS:
                raise MessageError(
                    f"registration_ids: must hold 1 to {MAX_REGISTRATION_IDS} ids, not {len(ids)}")
            for i, token in enumerate(ids):
                _check_str(f"registration_ids[{i}]", token)
            object.__setattr__(self, "registration_ids", tuple(ids))
        targets = [n for n in ("registration_ids", "to", "notification_key", "condition")
                   if getattr(self, n) is not None]
        if len(targets) != 1:
            raise MessageError("to: exactly one of registration_ids, to, notification_key, "
                               f"condition is required (got {targets or 'none'})")
        for name in ("to", "notification_key", "condition", "collapse_key",
                     "restricted_package_name"):
            _check_str(name, getattr(self, name))
        for name in ("content_available", "mutable_content", "delay_while_idle", "dry_run"):
            _check_bool(name, getattr(self, name))
        if self.priority is not None and self.priority not in PRIORITIES:
            raise MessageError(f"priority: must be one of {PRIORITIES}")
        ttl = self.time_to_live
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)
                                or not 0 <= ttl <= MAX_TTL):
            raise MessageError(f"time_to_live: must be an integer from 0 to {MAX_TTL}")
        for name in ("data", "notification"):
            value = getattr(self, name)
            if value is None:
                continue
            if not isinstance(value, Mapping):
                raise MessageError(f"{name}: must be an object")
            for key in value:
                if not isinstance(key, str) or not key:
                    raise MessageError(f"{name}: keys must be non-empty strings")
            object.__setattr__(self, name, dict(value))

    @property
    def targets(self) -> tuple[str, ...]:
        """The tokens the answer's results line up with (one for every non-multicast target)."""
        if self.registration_ids is not None:
            return self.registration_ids
        return (self.target,)

    @property
    def target(self) -> str:
        """The single target as a string (the first id for a multicast)."""
        if self.registration_ids is not None:
            return self.registration_ids[0]
        return str(self.to or self.notification_key or self.condition)

    @property
    def kind(self) -> str:
        """'multicast', 'token', 'topic', 'condition' or 'group': decides the answer's shape."""
        if self.registration_ids is not None:
            return "multicast"
        if self.condition is not None:
            return "condition"
        if self.notification_key is not None:
            return "group"
        assert self.to is not None
        return "topic" if self.to.startswith("/topics/") else "token"

    def with_registration_ids(self, ids: tuple[str, ...]) -> LegacyMessage:
        """The same message for a subset of its ids (retrying the failed part of a multicast)."""
        fields = {n: getattr(self, n) for n in self.__dataclass_fields__}
        fields["registration_ids"] = ids
        return LegacyMessage(**fields)
