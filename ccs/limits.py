"""Limits on every message, whatever its provider and wherever it enters (pure).

Python's json recurses: a document nested about a thousand deep raises RecursionError, in the
reader or in any later encoder, and a payload stored that way would fail every claim of its
lane. So the reader's RecursionError is a clear error, and every accepted message is held to
MAX_DEPTH, checked for lone surrogates (UTF-8 cannot carry them) and measured, all without
recursing in Python.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

from ccs.errors import RouteError

MAX_DEPTH = 32  # objects and arrays inside one another in one message (APNs needs about 4)
MAX_MESSAGE_BYTES = 64 * 1024  # one message as compact JSON; providers allow 4-5 KB of payload
MAX_TTL = 2_419_200  # four weeks in seconds: the longest time to live FCM, CCS and GCM allow

_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SURROGATE = re.compile("[\ud800-\udfff]")
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class LimitError(RouteError):
    """A message or document over a limit; `field` names where."""


def text_depth(raw: bytes | str) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings ignored)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    openers = raw.count(b"[") + raw.count(b"{")
    if openers <= 1:
        return openers  # the common case decided without a scan
    # outside strings only: drop escaped backslashes, then escaped quotes, then every second
    # piece between quotes (all at C speed; a regex over each string cost 40 ms per MB)
    plain = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(plain.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    return max(accumulate(1 if c in b"[{" else -1 for c in brackets), default=0)


def loads(raw: bytes | str, field: str = "body") -> Any:
    """json.loads whose RecursionError (a text nested some hundreds deep) is a LimitError
    naming `field`; the reader checks its depth in C, so this is safe. What it returns is
    then held to MAX_DEPTH by check_message."""
    try:
        return json.loads(raw)
    except RecursionError:
        raise LimitError(field, "JSON nested too deep to read (hundreds of levels)") from None


def _path(base: str, key: Any) -> str:
    return f"{base}[{key}]" if isinstance(key, int) else f"{base}.{key}"


def check_message(message: Mapping[str, Any], field: str) -> None:
    """Refuse (LimitError naming the place) a message nested deeper than MAX_DEPTH, holding a
    string with a lone surrogate, a value JSON cannot carry, or over MAX_MESSAGE_BYTES.

    The common case costs one C-speed encoding; only a refused message is walked (without
    recursion) to name the place."""
    try:
        text = _ENCODE(message if isinstance(message, dict) else dict(message))
    except RecursionError:
        _locate(message, field)
        raise LimitError(field, f"nested deeper than {MAX_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:
        _locate(message, field)  # a cycle is "too deep"; the rest is not JSON
        raise LimitError(field, f"not JSON: {exc}") from None
    ascii_only = text.isascii()
    size = len(text) if ascii_only else len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_MESSAGE_BYTES:
        raise LimitError(field, f"{size} bytes as JSON; at most {MAX_MESSAGE_BYTES} allowed")
    # depth <= the number of brackets: most messages are decided by two counts
    deep = text.count("[") + text.count("{") > MAX_DEPTH and text_depth(text) > MAX_DEPTH
    if deep or (not ascii_only and _SURROGATE.search(text)):
        _locate(message, field)


def _locate(message: Mapping[str, Any], field: str) -> None:
    """Raise LimitError at the first place nested too deep or holding a lone surrogate."""
    stack: list[tuple[str, Any, int]] = [(field, message, 1)]
    while stack:
        where, value, depth = stack.pop()
        if isinstance(value, Mapping | list | tuple):
            if depth > MAX_DEPTH:
                raise LimitError(where, f"nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for k, v in items:
                if isinstance(k, str) and not k.isascii() and _SURROGATE.search(k):
                    raise LimitError(_path(where, k.encode("utf-8", "backslashreplace")
                                           .decode()), "a key holds a lone surrogate")
                stack.append((_path(where, k), v, depth + 1))
        elif isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                raise LimitError(where, "holds a lone surrogate (UTF-8 cannot carry it)")
