"""Limits on every message, whatever its provider and wherever it enters (pure).

Python's json recurses: a document nested about a thousand deep raises RecursionError, in the
reader or in any later encoder, and a payload stored that way would fail every claim of its
lane. So nesting is measured on the raw text before it is parsed, and every accepted message is
walked without recursion: depth, lone surrogates (UTF-8 cannot carry them) and encoded size.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

from ccs.router import RouteError

MAX_DEPTH = 32  # objects and arrays inside one another in one message (APNs needs about 4)
MAX_TEXT_DEPTH = 4 * MAX_DEPTH  # a whole document (an API body, a line): parsed, then checked
MAX_MESSAGE_BYTES = 64 * 1024  # one message as compact JSON; providers allow 4-5 KB of payload

_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class LimitError(RouteError):
    """A message or document over a limit; `field` names where."""


def text_depth(raw: bytes | str) -> int:
    """How deep arrays and objects nest in a JSON text (brackets inside strings ignored)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogatepass")
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(accumulate(1 if c in b"[{" else -1 for c in brackets), default=0)


def loads(raw: bytes | str, max_depth: int, field: str = "body") -> Any:
    """json.loads that refuses a text nested deeper than `max_depth` (LimitError naming
    `field`) instead of recursing into it; other bad JSON is a ValueError as usual."""
    depth = text_depth(raw)
    if depth > max_depth:
        raise LimitError(field, f"JSON nested {depth} levels deep; at most {max_depth} allowed")
    try:
        return json.loads(raw)
    except RecursionError:  # cannot happen below max_depth; kept as a clear error anyway
        raise LimitError(field, "JSON nested too deep") from None


def _path(base: str, key: Any) -> str:
    return f"{base}[{key}]" if isinstance(key, int) else f"{base}.{key}"


def check_message(message: Mapping[str, Any], field: str) -> None:
    """Refuse (LimitError naming the place) a message nested deeper than MAX_DEPTH, holding a
    string with a lone surrogate, a value JSON cannot carry, or over MAX_MESSAGE_BYTES."""
    stack: list[tuple[str, Any, int]] = [(field, message, 1)]
    while stack:
        where, value, depth = stack.pop()
        if isinstance(value, Mapping | list | tuple):
            if depth > MAX_DEPTH:
                raise LimitError(where, f"nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, Mapping) else enumerate(value)
            for k, v in items:
                if not isinstance(k, str | int):
                    raise LimitError(where, f"key {k!r} is not a string")
                if isinstance(k, str) and not k.isascii() and _SURROGATE.search(k):
                    raise LimitError(_path(where, k.encode("utf-8", "backslashreplace")
                                           .decode()), "a key holds a lone surrogate")
                stack.append((_path(where, k), v, depth + 1))
        elif isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                raise LimitError(where, "holds a lone surrogate (UTF-8 cannot carry it)")
    try:
        size = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False)
                   .encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise LimitError(field, f"not JSON: {exc}") from None
    if size > MAX_MESSAGE_BYTES:
        raise LimitError(field, f"{size} bytes as JSON; at most {MAX_MESSAGE_BYTES} allowed")
