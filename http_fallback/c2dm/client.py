"""C2dmClient: C2DM with node2dm's rules, one sending greenlet over a queue (as node2dm did).

Blacklist rule: while a token rests after DeviceQuotaExceeded (an hour by default), messages to
it are not sent; each fails at once with error DeviceQuotaExceeded, retryable, and
extra["blacklisted_until"] (wall-clock seconds), so the caller may resend after that time.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent.pool import Group
from gevent.queue import Queue

from ccs.errors import ConfigError
from ccs.outcome import Outcome, SendResult, Status, TokenEvent, TokenEventKind
from ccs.provider import Provider
from ccs.registry import CA_FILE, config_fields, read_env
from http_fallback.c2dm import protocol
from http_fallback.c2dm.model import C2dmMessage
from http_fallback.c2dm.protocol import Action
from http_fallback.c2dm.settings import SETTINGS
from http_fallback.retry_policy import Backoff

log = logging.getLogger(__name__)

DEFAULT_URL = "https://android.apis.google.com/c2dm/send"
DEFAULT_LOGIN_URL = "https://www.google.com/accounts/ClientLogin"


@dataclass(frozen=True)
class C2dmConfig:
    """Account and endpoints; the password never appears in a repr or a log line."""

    email: str
    password: str = field(repr=False)
    source: str = "ccs-gateway"
    url: str = DEFAULT_URL
    login_url: str = DEFAULT_LOGIN_URL
    ca_file: str | None = None
    quota_lock_path: str = "quota.lock"
    blacklist_seconds: float = 3600.0
    backoff: Backoff = Backoff(attempts=10)
    timeout: float = 30.0
    # node2dm's bad-token webhook: POST device_token, message_body, shared_secret
    callback_url: str | None = None
    callback_secret: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        if not self.email:
            raise ConfigError("CCS_C2DM_EMAIL", "the sender account is required")
        if not self.password:
            raise ConfigError("CCS_C2DM_PASSWORD", "the account password is required")
        for name, url in (("CCS_C2DM_URL", self.url), ("CCS_C2DM_LOGIN_URL", self.login_url)):
            if not url.startswith(("https://", "http://")):
                raise ConfigError(name, f"not an http(s) URL: {url!r}")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> C2dmConfig:
        """CCS_C2DM_URL, CCS_C2DM_LOGIN_URL, CCS_C2DM_EMAIL, CCS_C2DM_PASSWORD, CCS_C2DM_SOURCE,
        CCS_C2DM_QUOTA_LOCK, CCS_C2DM_CALLBACK_URL, CCS_C2DM_CALLBACK_SECRET, CCS_CA_FILE."""
        env = os.environ if env is None else env
        return cls.from_settings(read_env((*SETTINGS, CA_FILE), env), **overrides)

    @classmethod
    def from_settings(cls, values: Mapping[str, Any], **overrides: Any) -> C2dmConfig:
        """From typed settings by TOML key (c2dm.*, ccs.ca_file)."""
        kw = config_fields(values, (*SETTINGS, CA_FILE), cls,
                           {"c2dm.quota_lock": "quota_lock_path"})
        kw.update(overrides)
        kw.setdefault("email", "")
        kw.setdefault("password", "")
        return cls(**kw)


_STOP = object()


class C2dmClient(Provider):
    """Sends C2dmMessage values one at a time; each ends in exactly one Outcome."""

    name = "c2dm"

    def __init__(self, config: C2dmConfig, *, http: Any = None) -> None:
        super().__init__()
        self.config = config
        self._http = http
        self._queue: Queue = Queue()
        self._group = Group()
        self._random = random.Random()
        self._blacklist = protocol.Blacklist(config.blacklist_seconds)
        self._auth: str | None = None
        self._auth_at = 0.0
        self._login_error: str | None = None
        self._running = False
        self._busy = False
        self._started_at = time.monotonic()
        self.backing_off = False
        self.messages_sent = 0
        self.total_errors = 0

    def __repr__(self) -> str:
        return f"C2dmClient(email={self.config.email!r}, logged_in={self._auth is not None})"

    # Provider
    def start(self) -> None:
        if self._http is None:
            from ccs.transport.http11 import HttpClient

            self._http = HttpClient(ca_file=self.config.ca_file, timeout=self.config.timeout)
        self._started_at = time.monotonic()
        self._running = True
        if self.quota_locked:
            log.error("c2dm: %s exists: sending stays stopped until it is removed or resume()",
                      self.config.quota_lock_path)
        self._group.spawn(self._worker)

    def stop(self, timeout: float = 10.0) -> None:
        self._running = False
        self._queue.put(_STOP)
        self._group.join(timeout=timeout)
        self._group.kill(block=True)
        while not self._queue.empty():
            item = self._queue.get()
            if item is not _STOP:
                msg, result = item
                self._resolve(result, msg, Status.FAILED, "ProviderStopped", retryable=True,
                              attempts=0, description="stopped before it was sent")
        close = getattr(self._http, "close", None)
        if close:
            close()

    def healthy(self) -> bool:
        return self._running and not self.quota_locked and self._login_error is None

    def stats(self) -> dict[str, Any]:
        """node2dm's stats fields, plus quota_locked and last_login_error."""
        now = time.monotonic()
        return {
            "uptime": int(now - self._started_at),
            "messages_sent": self.messages_sent,
            "messages_in_queue": sum(1 for item in self._queue.queue if item is not _STOP)
            + int(self._busy),
            "backing_off": self.backing_off,
            "total_errors": self.total_errors,
            "rate_limited_tokens": self._blacklist.count(time.time()),
            "logged_in_to_c2dm": self._auth is not None,
            "token_age": int(now - self._auth_at) if self._auth is not None else None,
            "quota_locked": self.quota_locked,
            "last_login_error": self._login_error,
        }

    @property
    def quota_locked(self) -> bool:
        """True while the quota.lock file exists; an operator removing it resumes sending."""
        return os.path.exists(self.config.quota_lock_path)

    def resume(self) -> None:
        """Remove quota.lock (if any) so sending resumes."""
        try:
            os.remove(self.config.quota_lock_path)
        except FileNotFoundError:
            pass
        log.warning("c2dm: quota lock removed, sending resumes")

    def send(self, message: C2dmMessage) -> SendResult:
        result = SendResult(message.id)
        if not self._running:
            self._resolve(result, message, Status.FAILED, "ProviderStopped", retryable=True,
                          attempts=0, description="the c2dm provider is not running")
        elif not self._refuse(message, result, 0):
            self._queue.put((message, result))
        return result

    # internals
    def _refuse(self, msg: C2dmMessage, result: SendResult, attempts: int) -> bool:
        """Resolve at once when quota-locked or the token is blacklisted; True if refused."""
        if self.quota_locked:
            self._resolve(result, msg, Status.FAILED, "QuotaExceeded", retryable=True,
                          attempts=attempts, description=(
                              f"C2DM daily quota exceeded; {self.config.quota_lock_path} exists"))
            return True
        until = self._blacklist.until(msg.registration_id, time.time())
        if until is not None:
            self._resolve(result, msg, Status.FAILED, "DeviceQuotaExceeded", retryable=True,
                          attempts=attempts, description="token blacklisted after "
                          "DeviceQuotaExceeded", extra={"blacklisted_until": until})
            return True
        return False

    def _resolve(self, result: SendResult, msg: C2dmMessage, status: Status, error: str | None,
                 *, retryable: bool = False, attempts: int = 1, description: str | None = None,
                 extra: dict[str, Any] | None = None, message_id: str | None = None) -> None:
        # message_id: the service's id when it gave one (`id=`), else ours.
        result.resolve(Outcome(status, self.name, msg.registration_id, message_id or msg.id,
                               error, description, retryable, None, attempts,
                               {"id": msg.id, **(extra or {})}))

    def _worker(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            msg, result = item
            self._busy = True
            try:
                self._deliver(msg, result)
            finally:
                self._busy = False

    def _deliver(self, msg: C2dmMessage, result: SendResult) -> None:
        attempts = 0
        try:
            while not self._refuse(msg, result, attempts):
                if self._auth is None and not self._login(msg, result, attempts):
                    return
                attempts += 1
                answer = self._post(msg)
                if answer.new_auth:
                    self._auth, self._auth_at = answer.new_auth, time.monotonic()
                    log.info("c2dm: auth token replaced from Update-Client-Auth")
                if answer.action is Action.SENT:
                    self.messages_sent += 1
                    self._resolve(result, msg, Status.OK, None, attempts=attempts,
                                  extra={"provider_message_id": answer.message_id},
                                  message_id=answer.message_id)
                    return
                self.total_errors += 1
                if answer.action in (Action.REAUTH, Action.BACKOFF):
                    if not self.config.backoff.can_retry(attempts):
                        self._resolve(result, msg, Status.FAILED, answer.error, retryable=True,
                                      attempts=attempts, description="retries used up")
                        return
                    if answer.action is Action.REAUTH:
                        log.warning("c2dm: 401 from C2DM, logging in again")
                        self._auth = None
                    else:
                        self._back_off(attempts, answer.retry_after)
                    continue
                self._final(msg, result, answer, attempts)
                return
        finally:
            if not result.ready():  # killed by stop()
                self._resolve(result, msg, Status.UNKNOWN if attempts else Status.FAILED,
                              "ProviderStopped", retryable=True, attempts=attempts)

    def _final(self, msg: C2dmMessage, result: SendResult, answer: protocol.SendAnswer,
               attempts: int) -> None:
        extra: dict[str, Any] = {}
        if answer.action is Action.QUOTA_STOP:
            self._write_quota_lock()
        elif answer.action is Action.BLACKLIST:
            extra["blacklisted_until"] = self._blacklist.add(msg.registration_id, time.time())
        if answer.event is not None:
            self.token_events.emit(TokenEvent(answer.event, self.name, msg.registration_id,
                                              reason=answer.error, message_id=msg.id))
            if answer.event is not TokenEventKind.RATE_LIMITED and self.config.callback_url:
                self._group.spawn(self._bad_token_callback, msg)
        retryable = answer.action in (Action.QUOTA_STOP, Action.BLACKLIST)
        self._resolve(result, msg, Status.FAILED, answer.error, retryable=retryable,
                      attempts=attempts, extra=extra, description=f"C2DM: {answer.action}")

    def _bad_token_callback(self, msg: C2dmMessage) -> None:
        """node2dm's webhook for a bad token; one try, as node2dm did, failures logged."""
        body = protocol.encode_callback(msg, self.config.callback_secret)
        try:
            response = self._http.request("POST", self.config.callback_url,
                                          {"Content-Type": protocol.FORM_TYPE}, body,
                                          timeout=self.config.timeout)
        except Exception as exc:
            log.warning("c2dm: bad-token callback failed: %s", type(exc).__name__)
            return
        if response.status >= 300:
            log.warning("c2dm: bad-token callback answered HTTP %s", response.status)

    def _write_quota_lock(self) -> None:
        path = self.config.quota_lock_path
        with open(path, "w", encoding="utf-8") as fh:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            fh.write(f"QuotaExceeded from C2DM at {stamp}\n"
                     "Remove this file (or call resume()) to send again.\n")
        log.error("c2dm: QuotaExceeded: wrote %s; sending stopped until it is removed", path)

    def _back_off(self, attempts: int, retry_after: float | None) -> None:
        delay = self.config.backoff.delay(attempts, retry_after, self._random.random())
        self.backing_off = True
        try:
            gevent.sleep(delay)
        finally:
            self.backing_off = False

    def _post(self, msg: C2dmMessage) -> protocol.SendAnswer:
        assert self._auth is not None
        try:
            response = self._http.request("POST", self.config.url,
                                          protocol.auth_header(self._auth),
                                          protocol.encode_send(msg), timeout=self.config.timeout)
        except Exception as exc:  # transport failure: no answer, back off and resend
            log.warning("c2dm: send failed: %s", type(exc).__name__)
            return protocol.SendAnswer(Action.BACKOFF, error=f"ConnectionError: {exc}")
        return protocol.parse_send(response.status, response.body,
                                   retry_after=response.headers.get("retry-after"),
                                   update_client_auth=response.headers.get("update-client-auth"),
                                   now=time.time())

    def _login(self, msg: C2dmMessage, result: SendResult, attempts: int) -> bool:
        """ClientLogin until a token arrives; on a refusal fail this message and return False."""
        tries = 0
        while True:
            tries += 1
            body = protocol.encode_login(self.config.email, self.config.password,
                                         self.config.source)
            try:
                response = self._http.request("POST", self.config.login_url, {
                    "Content-Type": protocol.FORM_TYPE}, body, timeout=self.config.timeout)
                answer = protocol.parse_login(response.status, response.body)
                retryable = response.status >= 500
            except Exception as exc:
                answer, retryable = protocol.LoginAnswer(None, type(exc).__name__), True
            if answer.auth:
                self._auth, self._auth_at, self._login_error = answer.auth, time.monotonic(), None
                log.info("c2dm: logged in to ClientLogin as %s", self.config.email)
                return True
            self._login_error = answer.error
            self.total_errors += 1
            log.error("c2dm: ClientLogin refused: %s", answer.error)
            if not retryable or not self.config.backoff.can_retry(tries):
                self._resolve(result, msg, Status.FAILED, answer.error or "LoginFailed",
                              retryable=True, attempts=attempts,
                              description="ClientLogin failed; message not sent")
                return False
            self._back_off(tries, None)
