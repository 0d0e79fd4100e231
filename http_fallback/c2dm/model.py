"""The C2DM message: registration_id, collapse_key (required), data.<key>, delay_while_idle."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_PAYLOAD_BYTES = 1024


class MessageError(ValueError):
    """Bad input to a message; the text names the field."""


def payload_size(data: Mapping[str, str]) -> int:
    """Bytes C2DM counts against its 1024-byte limit: every data key and value, UTF-8."""
    return sum(len(k.encode()) + len(v.encode()) for k, v in data.items())


@dataclass(frozen=True)
class C2dmMessage:
    """One message to one device. `id` is ours (for outcomes and logs), never sent."""

    registration_id: str
    collapse_key: str
    data: Mapping[str, str] = field(default_factory=dict)
    delay_while_idle: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def __post_init__(self) -> None:
        if not isinstance(self.registration_id, str) or not self.registration_id:
            raise MessageError("registration_id: must be a non-empty string")
        if not isinstance(self.collapse_key, str) or not self.collapse_key:
            raise MessageError("collapse_key: required by C2DM (a non-empty string)")
        if not isinstance(self.data, Mapping):
            raise MessageError("data: must be a mapping of strings to strings")
        for key, value in self.data.items():
            if not isinstance(key, str) or not key:
                raise MessageError("data: keys must be non-empty strings")
            if not isinstance(value, str):
                raise MessageError(f"data.{key}: C2DM values must be strings")
        if not isinstance(self.delay_while_idle, bool):
            raise MessageError("delay_while_idle: must be true or false")
        size = payload_size(self.data)
        if size > MAX_PAYLOAD_BYTES:
            raise MessageError(f"data: payload is {size} bytes, C2DM allows {MAX_PAYLOAD_BYTES}")
        object.__setattr__(self, "data", dict(self.data))
