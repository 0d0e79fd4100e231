"""Parser for FCM topic conditions such as ``'a' in topics && ('b' in topics || 'c' in topics)``.

Grammar (FCM send guide: operators ``&&`` and ``||``, parentheses, at most five topics):

    expr  := term (("&&" | "||") term)*
    term  := "(" expr ")" | QUOTED "in" "topics"

Topic names are quoted with ' or " and match ``[a-zA-Z0-9-_.~%]+``. Pure; no I/O.
"""

from __future__ import annotations

import re
from functools import lru_cache

MAX_CONDITION_TOPICS = 5
MAX_CONDITION_DEPTH = 32  # parentheses; keeps recursion bounded on hostile input

TOPIC_NAME = re.compile(r"[a-zA-Z0-9\-_.~%]+")
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<op>&&|\|\|)
      | (?P<paren>[()])
      | (?P<quoted>'[^']*'|"[^"]*")
      | (?P<word>[A-Za-z_]+)
      | (?P<bad>\S)
    )""",
    re.VERBOSE,
)


class ConditionError(ValueError):
    """The condition is not well-formed; str() says why."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos, end = 0, len(text)
    while pos < end:
        if text[pos:].isspace():
            break
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the pattern always matches a non-space char
            raise ConditionError(f"cannot read at offset {pos}")
        kind = m.lastgroup or "bad"
        value = m.group(kind)
        if kind == "bad":
            if value in "'\"":
                raise ConditionError(f"unterminated quote at offset {m.start(kind)}")
            if value in "!&|":
                raise ConditionError(f"unsupported operator at offset {m.start(kind)}")
            raise ConditionError(f"unexpected {value!r} at offset {m.start(kind)}")
        out.append((kind, value))
        pos = m.end()
    return out


class _Parser:
    __slots__ = ("toks", "i", "topics")

    def __init__(self, toks: list[tuple[str, str]]) -> None:
        self.toks = toks
        self.i = 0
        self.topics: list[str] = []

    def _peek(self) -> tuple[str, str] | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def _take(self, kind: str, value: str | None, what: str) -> str:
        tok = self._peek()
        if tok is None or tok[0] != kind or (value is not None and tok[1] != value):
            found = "end of condition" if tok is None else repr(tok[1])
            raise ConditionError(f"expected {what}, found {found}")
        self.i += 1
        return tok[1]

    def expr(self, depth: int) -> None:
        self.term(depth)
        while (tok := self._peek()) is not None and tok[0] == "op":
            self.i += 1
            self.term(depth)

    def term(self, depth: int) -> None:
        tok = self._peek()
        if tok is not None and tok == ("paren", "("):
            if depth >= MAX_CONDITION_DEPTH:
                raise ConditionError("parentheses nested too deeply")
            self.i += 1
            self.expr(depth + 1)
            self._take("paren", ")", "')'")
            return
        quoted = self._take("quoted", None, "a quoted topic name or '('")
        name = quoted[1:-1]
        if not TOPIC_NAME.fullmatch(name):
            raise ConditionError(f"bad topic name {quoted}: must match [a-zA-Z0-9-_.~%]+")
        self._take("word", "in", "'in'")
        self._take("word", "topics", "'topics'")
        if name not in self.topics:
            self.topics.append(name)


@lru_cache(maxsize=1024)
def parse_condition(text: str) -> tuple[str, ...]:
    """Check a condition; return its distinct topic names in order. Raises ConditionError."""
    toks = _tokens(text)
    if not toks:
        raise ConditionError("empty condition")
    p = _Parser(toks)
    p.expr(0)
    if p.i != len(toks):
        tok = toks[p.i]
        what = "unbalanced ')'" if tok == ("paren", ")") else f"unexpected {tok[1]!r}"
        raise ConditionError(f"{what} after a complete expression (missing operator?)")
    if len(p.topics) > MAX_CONDITION_TOPICS:
        raise ConditionError(
            f"{len(p.topics)} topics; at most {MAX_CONDITION_TOPICS} are allowed"
        )
    return tuple(p.topics)
