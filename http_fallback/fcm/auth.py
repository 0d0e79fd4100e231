"""OAuth2 access tokens from a service-account file, shared by every greenlet of a client.

One fetch at a time: greenlets that need a token while a fetch runs wait for that fetch. A token
close to expiry is refreshed in the background while the old one is still handed out.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from gevent.event import AsyncResult
from gevent.pool import Group

from ccs.transport.http11 import HttpClient, HttpError
from http_fallback.fcm import protocol
from http_fallback.fcm.config import url_problem

log = logging.getLogger(__name__)
DEFAULT_TOKEN_URI = "https://oauth2.googleapis.com/token"


class AuthError(Exception):
    """No access token could be had; `retryable` is False for refused credentials."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class ServiceAccount:
    """The fields of a service-account JSON file that FCM needs; the key never shows in repr."""

    client_email: str
    private_key: str = field(repr=False)
    private_key_id: str | None
    token_uri: str
    project_id: str | None
    path: str | None = None

    @classmethod
    def load(cls, path: str) -> ServiceAccount:
        """Read and check a service-account file; ValueError names a missing field."""
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
        except OSError as e:
            raise ValueError(f"credentials file {path}: {e.strerror}") from None
        except ValueError:
            raise ValueError(f"credentials file {path}: not JSON") from None
        return cls.from_info(info, path)

    @classmethod
    def from_info(cls, info: dict[str, Any], path: str | None = None) -> ServiceAccount:
        where = f"credentials file {path}" if path else "service account"
        if info.get("type", "service_account") != "service_account":
            raise ValueError(f"{where}: type must be service_account")
        for key in ("client_email", "private_key"):
            if not isinstance(info.get(key), str) or not info[key]:
                raise ValueError(f"{where}: missing {key}")
        token_uri = info.get("token_uri") or DEFAULT_TOKEN_URI
        if not isinstance(token_uri, str) or url_problem(token_uri):
            raise ValueError(f"{where}: token_uri {url_problem(str(token_uri))}")
        return cls(info["client_email"], info["private_key"], info.get("private_key_id"),
                   token_uri, info.get("project_id"), path)


class TokenSource:
    """Hands out a valid access token; fetches it once however many greenlets ask."""

    def __init__(self, account: ServiceAccount, http: HttpClient, *,
                 refresh_margin: float = 225.0, timeout: float = 30.0,
                 refused_hold: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.account = account
        self._http = http
        self._margin = refresh_margin
        self._timeout = timeout
        self._clock = clock
        try:
            self._key = serialization.load_pem_private_key(account.private_key.encode(), None)
        except ValueError:
            raise ValueError("service account private_key is not a PEM private key") from None
        self._token: protocol.AccessToken | None = None
        # refused credentials are not asked about again for `refused_hold` seconds, so a
        # queue of messages does not turn into a storm of token requests
        self._refused_hold = refused_hold
        self._refused: tuple[float, AuthError] | None = None
        self._quiet_until = 0.0  # no background refresh before this (after one failed)
        self._pending: AsyncResult | None = None
        self._background = Group()
        self.fetches = 0

    def __repr__(self) -> str:
        return f"TokenSource({self.account.client_email!r})"

    def get(self) -> str:
        """A valid access token; waits for a fetch when there is none. Raises AuthError."""
        token = self._token
        now = self._clock()
        if token is not None and now < token.expires_at - 1:
            if now >= max(token.refresh_at, self._quiet_until) and self._pending is None \
                    and not len(self._background):
                self._background.spawn(self._quiet_refresh)
            return token.value
        return self._refresh().value

    def invalidate(self, value: str) -> None:
        """The server refused `value`: forget it, unless a newer token already replaced it."""
        if self._token is not None and self._token.value == value:
            self._token = None

    def close(self) -> None:
        self._background.kill()

    def _quiet_refresh(self) -> None:
        try:
            self._refresh()
        except AuthError as e:
            # the old token still works: try again later, not on every send
            token = self._token
            left = token.expires_at - self._clock() if token else 0
            self._quiet_until = self._clock() + min(30.0, max(left, 0) / 4)
            log.warning("background token refresh failed: %s", e)

    def _refresh(self) -> protocol.AccessToken:
        pending = self._pending
        if pending is not None:
            return pending.get()
        if self._refused is not None and self._clock() < self._refused[0]:
            raise self._refused[1]
        pending = self._pending = AsyncResult()
        try:
            token = self._fetch()
        except AuthError as e:
            if not e.retryable:
                self._refused = (self._clock() + self._refused_hold, e)
            pending.set_exception(e)
            raise
        except BaseException as e:  # killed mid-fetch: waiters must not hang
            pending.set_exception(AuthError(f"token fetch interrupted: {type(e).__name__}", True))
            raise
        else:
            self._token = token
            pending.set(token)
            return token
        finally:
            self._pending = None

    def _fetch(self) -> protocol.AccessToken:
        self.fetches += 1
        now = self._clock()
        claims = protocol.assertion_claims(self.account.client_email, self.account.token_uri, now)
        headers = {"kid": self.account.private_key_id} if self.account.private_key_id else None
        assertion = jwt.encode(claims, self._key, algorithm="RS256", headers=headers)
        try:
            response = self._http.request(
                "POST", self.account.token_uri,
                {"Content-Type": "application/x-www-form-urlencoded"},
                protocol.token_request_body(assertion), timeout=self._timeout)
        except HttpError as e:
            raise AuthError(f"token endpoint unreachable: {e}", True) from None
        if response.status != 200:
            try:
                answer = response.json()
                reason = f"{answer.get('error')}: {answer.get('error_description', '')}"
            except (ValueError, AttributeError, RecursionError):
                reason = f"HTTP {response.status}"
            raise AuthError(f"token endpoint refused the assertion ({reason})",
                            response.status >= 500 or response.status == 429)
        try:
            return protocol.parse_token_answer(response.body, self._clock(), self._margin)
        except ValueError as e:
            raise AuthError(f"bad token answer: {e}", True) from None
