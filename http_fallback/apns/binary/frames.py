"""Binary interface frames (pure): commands 0, 1 and 2, the error response, feedback tuples.

Big-endian throughout; device tokens are 32 bytes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

TOKEN_SIZE = 32
MAX_PAYLOAD = 2048  # 256 before iOS 8; 4096 with a VoIP certificate
ERROR_SIZE = 6
FEEDBACK_SIZE = 38
STATUS = {0: "NoErrors", 1: "ProcessingError", 2: "MissingDeviceToken", 3: "MissingTopic",
          4: "MissingPayload", 5: "InvalidTokenSize", 6: "InvalidTopicSize",
          7: "InvalidPayloadSize", 8: "InvalidToken", 10: "Shutdown", 128: "ProtocolError",
          255: "Unknown"}
ITEM_TOKEN, ITEM_PAYLOAD, ITEM_ID, ITEM_EXPIRY, ITEM_PRIORITY = 1, 2, 3, 4, 5


class FrameError(ValueError):
    """A frame that cannot be built; `field` names the culprit."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Frame:
    """One notification as the gateway reads it."""

    command: int
    token: bytes
    payload: bytes
    identifier: int = 0
    expiry: int = 0
    priority: int = 10


def _token(token: bytes | str) -> bytes:
    try:
        raw = bytes.fromhex(token) if isinstance(token, str) else token
    except ValueError:
        raise FrameError("device", "must be hex digits") from None
    if len(raw) != TOKEN_SIZE:
        raise FrameError("device", f"binary interface tokens are {TOKEN_SIZE} bytes")
    return raw


def encode_simple(token: bytes | str, payload: bytes) -> bytes:
    return struct.pack(">BH32sH", 0, TOKEN_SIZE, _token(token), len(payload)) + payload


def encode_enhanced(identifier: int, expiry: int, token: bytes | str, payload: bytes) -> bytes:
    return struct.pack(">BIIH32sH", 1, identifier, expiry, TOKEN_SIZE, _token(token),
                       len(payload)) + payload


def encode_frame(identifier: int, expiry: int, token: bytes | str, payload: bytes,
                 priority: int = 10) -> bytes:
    """Command 2: a frame of items (token, payload, identifier, expiry, priority)."""
    if priority not in (10, 5):
        raise FrameError("priority", "must be 10 or 5")
    items = b"".join((
        struct.pack(">BH", ITEM_TOKEN, TOKEN_SIZE) + _token(token),
        struct.pack(">BH", ITEM_PAYLOAD, len(payload)) + payload,
        struct.pack(">BHI", ITEM_ID, 4, identifier),
        struct.pack(">BHI", ITEM_EXPIRY, 4, expiry),
        struct.pack(">BHB", ITEM_PRIORITY, 1, priority),
    ))
    return struct.pack(">BI", 2, len(items)) + items


def encode_error(status: int, identifier: int) -> bytes:
    return struct.pack(">BBI", 8, status, identifier)


def parse_error(data: bytes) -> tuple[int, int]:
    """(status, identifier) from a 6-byte error response; FrameError for anything else."""
    if len(data) < ERROR_SIZE:
        raise FrameError("error response", f"{len(data)} bytes, expected {ERROR_SIZE}")
    command, status, identifier = struct.unpack(">BBI", data[:ERROR_SIZE])
    if command != 8:
        raise FrameError("error response", f"command {command}, expected 8")
    return status, identifier


def encode_feedback(timestamp: int, token: bytes | str) -> bytes:
    return struct.pack(">IH32s", timestamp, TOKEN_SIZE, _token(token))


def parse_feedback(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Whole 38-byte tuples (time, token) and the bytes left over. A token length other
    than 32 means the stream is out of step: FrameError."""
    out = []
    end = len(data) - len(data) % FEEDBACK_SIZE
    for i in range(0, end, FEEDBACK_SIZE):
        ts, size = struct.unpack_from(">IH", data, i)
        if size != TOKEN_SIZE:
            raise FrameError("feedback", f"token length {size} in tuple {i // FEEDBACK_SIZE}")
        out.append((ts, data[i + 6:i + FEEDBACK_SIZE]))
    return out, data[end:]


def _num(items: dict[int, bytes], key: int, default: int) -> int:
    return int.from_bytes(items[key], "big") if key in items else default


class FrameReader:
    """Incremental parser for the gateway side; a malformed frame raises FrameError."""

    def __init__(self) -> None:
        self.buf = b""

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        frames = []
        while True:
            frame, used = self._one(self.buf)
            if frame is None:
                return frames
            frames.append(frame)
            self.buf = self.buf[used:]

    @staticmethod
    def _one(b: bytes) -> tuple[Frame | None, int]:
        if not b:
            return None, 0
        cmd = b[0]
        if cmd == 0:
            if len(b) < 37:
                return None, 0
            tlen = struct.unpack_from(">H", b, 1)[0]
            plen_at = 3 + tlen
            if len(b) < plen_at + 2:
                return None, 0
            plen = struct.unpack_from(">H", b, plen_at)[0]
            end = plen_at + 2 + plen
            if len(b) < end:
                return None, 0
            return Frame(0, b[3:3 + tlen], b[plen_at + 2:end]), end
        if cmd == 1:
            if len(b) < 11:
                return None, 0
            ident, expiry, tlen = struct.unpack_from(">IIH", b, 1)
            plen_at = 11 + tlen
            if len(b) < plen_at + 2:
                return None, 0
            plen = struct.unpack_from(">H", b, plen_at)[0]
            end = plen_at + 2 + plen
            if len(b) < end:
                return None, 0
            return Frame(1, b[11:11 + tlen], b[plen_at + 2:end], ident, expiry), end
        if cmd == 2:
            if len(b) < 5:
                return None, 0
            size = struct.unpack_from(">I", b, 1)[0]
            if len(b) < 5 + size:
                return None, 0
            items: dict[int, bytes] = {}
            i = 5
            while i < 5 + size:
                if i + 3 > 5 + size:
                    raise FrameError("frame", "item header runs past the frame")
                item, ilen = struct.unpack_from(">BH", b, i)
                if i + 3 + ilen > 5 + size:
                    raise FrameError("frame", f"item {item} runs past the frame")
                items[item] = b[i + 3:i + 3 + ilen]
                i += 3 + ilen
            return Frame(2, items.get(ITEM_TOKEN, b""), items.get(ITEM_PAYLOAD, b""),
                         _num(items, ITEM_ID, 0), _num(items, ITEM_EXPIRY, 0),
                         _num(items, ITEM_PRIORITY, 10)), 5 + size
        raise FrameError("command", f"unknown command {cmd}")
