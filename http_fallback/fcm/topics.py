"""Topic subscriptions through the Instance ID batch API, 1000 tokens per request."""

from __future__ import annotations

from dataclasses import dataclass

from ccs.transport.http11 import HttpClient, HttpError
from http_fallback.fcm import protocol
from http_fallback.fcm.auth import AuthError, TokenSource
from http_fallback.fcm.validate import TOPIC_RE

MAX_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class TopicResult:
    token: str
    error: str | None = None  # None when done; else the service's code, e.g. NOT_FOUND

    @property
    def ok(self) -> bool:
        return self.error is None


class TopicManager:
    def __init__(self, http: HttpClient, tokens: TokenSource, iid_url: str) -> None:
        self._http = http
        self._tokens = tokens
        self._url = iid_url.rstrip("/")

    def change(self, operation: str, topic: str, tokens: list[str]) -> list[TopicResult]:
        """batchAdd or batchRemove `tokens`; a failed request marks each of its tokens."""
        if not isinstance(topic, str) or not TOPIC_RE.match(topic):
            raise ValueError("topic: must match [a-zA-Z0-9-_.~%]+")
        for i, t in enumerate(tokens):
            if not isinstance(t, str) or not t:
                raise ValueError(f"tokens[{i}]: must be a non-empty string")
        out: list[TopicResult] = []
        for start in range(0, len(tokens), MAX_TOKENS):
            chunk = tokens[start:start + MAX_TOKENS]
            codes = self._batch(operation, topic, chunk)
            out.extend(TopicResult(t, c) for t, c in zip(chunk, codes, strict=True))
        return out

    def _batch(self, operation: str, topic: str, chunk: list[str]) -> list[str | None]:
        body = protocol.topic_body(topic, chunk)
        for attempt in (1, 2):
            try:
                token = self._tokens.get()
                response = self._http.request(
                    "POST", f"{self._url}/iid/v1:{operation}",
                    {"Authorization": f"Bearer {token}", "access_token_auth": "true",
                     "Content-Type": "application/json"}, body)
            except AuthError:
                return ["AUTH_ERROR"] * len(chunk)
            except HttpError:
                return ["NETWORK_ERROR"] * len(chunk)
            if response.status == 401 and attempt == 1:
                self._tokens.invalidate(token)
                continue
            if response.status != 200:
                try:
                    code = str(response.json().get("error") or f"HTTP_{response.status}")
                except (ValueError, AttributeError):
                    code = f"HTTP_{response.status}"
                return [code] * len(chunk)
            try:
                return protocol.parse_topic_results(response.body, len(chunk))
            except ValueError:
                return ["UNKNOWN"] * len(chunk)
        return ["UNAUTHENTICATED"] * len(chunk)
