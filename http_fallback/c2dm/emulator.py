"""C2dmEmulator: Google ClientLogin (service ac2dm) and the C2DM send endpoint on loopback.

Choices where the references are silent: a login form missing a field or with another
accountType/service gets 400 `Error=BadRequest`; wrong credentials get 403
`Error=BadAuthentication`. After rotate_auth() the old token stops working.
"""

from __future__ import annotations

import itertools
import secrets
import urllib.parse
from collections import Counter, defaultdict, deque
from dataclasses import dataclass
from typing import Any

from http_fallback.c2dm.model import MAX_PAYLOAD_BYTES, payload_size
from http_fallback.c2dm.protocol import ACCOUNT_TYPE, SERVICE
from http_fallback.emulator_base import HttpEmulator, Reply, SeenRequest

LOGIN_PATH = "/accounts/ClientLogin"
SEND_PATH = "/c2dm/send"
_TEXT = {"Content-Type": "text/plain"}


@dataclass(frozen=True)
class Delivery:
    registration_id: str
    collapse_key: str
    data: dict[str, str]
    delay_while_idle: bool


class C2dmEmulator(HttpEmulator):
    """ClientLogin at /accounts/ClientLogin and C2DM at /c2dm/send, on one loopback server."""

    def __init__(self, accounts: dict[str, str] | None = None, *, quota: int | None = None,
                 device_quota: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.accounts = dict(accounts or {"sender@example.com": "emulator-password"})
        self.quota = quota  # sends left today (None: no limit)
        self.device_quota = device_quota  # sends allowed per token (None: no limit)
        self.unregistered: set[str] = set()
        self.invalid: set[str] = set()
        self.delivered: list[Delivery] = []
        self.logins: list[str] = []  # the Email of each successful login
        self._tokens: set[str] = set()
        self._per_token: Counter[str] = Counter()
        self._scripted: dict[str, deque[str]] = defaultdict(deque)
        self._failures: deque[tuple[int, int | None]] = deque()
        self._rotate = 0
        self._ids = itertools.count(1)

    @property
    def login_url(self) -> str:
        return self.origin + LOGIN_PATH

    @property
    def url(self) -> str:
        return self.origin + SEND_PATH

    # scripting
    def script(self, registration_id: str, *errors: str) -> None:
        """The next sends to this token answer `Error=<code>`, one per send."""
        self._scripted[registration_id].extend(errors)

    def fail_next(self, status: int = 503, retry_after: int | None = None, times: int = 1) -> None:
        self._failures.extend([(status, retry_after)] * times)

    def expire_auth(self) -> None:
        """Every issued Auth token stops working: the next send gets 401."""
        self._tokens.clear()

    def rotate_auth(self, times: int = 1) -> None:
        """The next successful sends carry Update-Client-Auth with a new token."""
        self._rotate += times

    # serving
    def handle(self, request: SeenRequest) -> Reply:
        if request.path not in (LOGIN_PATH, SEND_PATH):
            return Reply(404, b"Not Found")
        if request.method != "POST":
            return Reply(405, b"Method Not Allowed", {"Allow": "POST"})
        try:
            form = urllib.parse.parse_qs(request.body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            return Reply(400, b"Error=BadRequest", _TEXT)
        if request.path == LOGIN_PATH:
            return self._login({k: v[0] for k, v in form.items()})
        return self._send(request, form)

    def _login(self, form: dict[str, str]) -> Reply:
        if (form.get("accountType") != ACCOUNT_TYPE or form.get("service") != SERVICE
                or not form.get("source") or "Email" not in form or "Passwd" not in form):
            return Reply(400, b"Error=BadRequest", _TEXT)
        if self.accounts.get(form["Email"]) != form["Passwd"]:
            return Reply(403, b"Error=BadAuthentication", _TEXT)
        token = secrets.token_urlsafe(24)
        self._tokens.add(token)
        self.logins.append(form["Email"])
        body = f"SID={secrets.token_hex(16)}\nLSID={secrets.token_hex(16)}\nAuth={token}\n"
        return Reply(200, body.encode(), _TEXT)

    def _send(self, request: SeenRequest, form: dict[str, list[str]]) -> Reply:
        auth = request.header("authorization") or ""
        prefix = "GoogleLogin auth="
        token = auth[len(prefix):] if auth.startswith(prefix) else ""
        if token not in self._tokens:
            return Reply(401, b"Unauthorized", _TEXT)
        if self._failures:
            status, retry_after = self._failures.popleft()
            headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
            return Reply(status, b"Service Unavailable", headers)
        error = self._check(form)
        if error:
            return Reply(200, f"Error={error}".encode(), _TEXT)
        reg = form["registration_id"][0]
        self._per_token[reg] += 1
        if self.quota is not None:
            self.quota -= 1
        data = {k[5:]: v[0] for k, v in form.items() if k.startswith("data.")}
        self.delivered.append(Delivery(reg, form["collapse_key"][0], data,
                                       form.get("delay_while_idle", ["0"])[0] in ("1", "true")))
        headers = dict(_TEXT)
        if self._rotate:
            self._rotate -= 1
            self._tokens.discard(token)
            new = secrets.token_urlsafe(24)
            self._tokens.add(new)
            headers["Update-Client-Auth"] = new
        return Reply(200, f"id=0:{next(self._ids)}%c2dm-emulator".encode(), headers)

    def _check(self, form: dict[str, list[str]]) -> str | None:
        reg = (form.get("registration_id") or [""])[0]
        if not reg:
            return "MissingRegistration"
        if self._scripted.get(reg):
            return self._scripted[reg].popleft()
        if self.quota is not None and self.quota <= 0:
            return "QuotaExceeded"
        if self.device_quota is not None and self._per_token[reg] >= self.device_quota:
            return "DeviceQuotaExceeded"
        if reg in self.invalid:
            return "InvalidRegistration"
        if reg in self.unregistered:
            return "NotRegistered"
        if not (form.get("collapse_key") or [""])[0]:
            return "MissingCollapseKey"
        data = {k[5:]: v[0] for k, v in form.items() if k.startswith("data.")}
        if payload_size(data) > MAX_PAYLOAD_BYTES:
            return "MessageTooBig"
        return None
