"""FcmEmulator: FCM HTTP v1, its OAuth token endpoint (emulator_oauth) and the topic APIs
(emulator_topics) on a real HTTPS server on loopback, for our tests, `ccs emulate fcm` and users'
own integration tests.

One TLS port speaks HTTP/1.1 and HTTP/2 (ALPN offers `h2` and `http/1.1`, as
fcm.googleapis.com does; emulator_h2 serves the h2 connections). `latency` delays every answer,
as a round trip to Google would; over HTTP/2 the emulator announces `max_concurrent_streams`
(FCM: 100), can change it while streams are open, send GOAWAY on demand or after
`goaway_after` requests on each connection, and refuse streams (REFUSED_STREAM).

Documented choices where the references are silent: access tokens are opaque random strings;
message names are "projects/<p>/messages/0:<n>" with a counter; a validate_only send answers
"projects/<p>/messages/fake_message_id"; tokens must match [A-Za-z0-9_-:.]{1,4096}.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gevent
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gevent import socket
from gevent.pywsgi import WSGIHandler, WSGIServer
from h2.errors import ErrorCodes

from ccs.testing.pki import TestPKI, make_test_pki
from ccs.transport.tls import server_context
from http_fallback.fcm import emulator_oauth as oauth
from http_fallback.fcm import emulator_topics as topics
from http_fallback.fcm.emulator_errors import error_body
from http_fallback.fcm.emulator_h2 import H2Session
from http_fallback.fcm.emulator_rules import Violation, check_request

# scripted failure kind -> (HTTP status, gRPC status, FcmError errorCode or None, message)
FAILURES = {
    "unregistered": (404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
    "invalid": (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token"),
    "sender_id_mismatch": (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH",
                           "SenderId mismatch"),
    "quota": (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded."),
    "unavailable": (503, "UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
    "internal": (500, "INTERNAL", "INTERNAL", "Internal error encountered."),
    "third_party_auth": (401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR",
                         "Auth error from APNS or Web Push Service"),
    "unauthenticated": (401, "UNAUTHENTICATED", None,
                        "Request had invalid authentication credentials."),
    "invalid_package": (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                        "Invalid package name"),
}
VIOLATIONS = {"invalid": "message.token",
              "invalid_package": "message.android.restricted_package_name"}


@dataclass
class Seen:
    """One request the emulator answered; `at` is time.monotonic() on arrival."""

    at: float
    path: str
    status: int
    target: str | None = None
    error: str | None = None
    message: dict[str, Any] | None = field(default=None, repr=False)
    protocol: str = "http/1.1"  # or "h2"
    connection: int = 0  # the HTTP/2 connection's number (0: HTTP/1.1)


@dataclass
class _Script:
    kind: str
    times: int | None  # None: every time
    retry_after: str | None


@dataclass(frozen=True)
class ServiceAccountFile:
    path: str
    client_email: str
    private_key_id: str
    project_id: str


class _Handler(WSGIHandler):
    """pywsgi drops header names with underscores; the IID API needs `access_token_auth`."""

    def handle(self) -> None:
        # pywsgi writes head and body separately: without NODELAY, Nagle and delayed ACKs
        # would stall every keep-alive exchange for ~40 ms
        try:
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().handle()

    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        env["fcm.access_token_auth"] = self.headers.get("access_token_auth", "")
        return env


class _Server(WSGIServer):
    """pywsgi for HTTP/1.1; a connection whose TLS handshake chose ALPN h2 goes to H2Session."""

    def __init__(self, *args: Any, emulator: FcmEmulator, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.emulator = emulator

    def handle(self, sock: Any, address: Any) -> None:
        alpn = getattr(sock, "selected_alpn_protocol", None)
        if alpn is not None and alpn() == "h2":
            self.emulator.serve_h2(sock)
        else:
            super().handle(sock, address)


class FcmEmulator:
    """A loopback FCM v1 + OAuth + IID server. Use as a context manager, or start()/stop()."""

    def __init__(self, pki: TestPKI | None = None, project_id: str = "emulated-project", *,
                 host: str = "127.0.0.1", port: int = 0, token_lifetime: int = 3600,
                 record_limit: int = 100_000, clock: Callable[[], float] = time.time,
                 latency: float = 0.0, max_concurrent_streams: int = 100,
                 goaway_after: int | None = None, http2: bool = True) -> None:
        self._tmp = None
        if pki is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="ccs-fcm-emulator-")
            pki = make_test_pki(Path(self._tmp.name))
        self.pki = pki
        self.project_id = project_id
        self.token_lifetime = token_lifetime
        self.clock = clock  # wall clock for token expiry and JWT times
        self._address = (host, port)
        self._server: WSGIServer | None = None
        self.keys: dict[str, tuple[Any, str]] = {}  # client_email -> (public key, key id)
        self.access_tokens: dict[str, float] = {}  # access token -> expiry (time.time())
        self._scripts: dict[str, deque[_Script]] = {}
        self._delays: dict[str, float] = {}
        self._lock = threading.Lock()
        self.topics: dict[str, set[str]] = {}
        self.seen: deque[Seen] = deque(maxlen=record_limit)
        self.tokens_issued = 0
        self.messages_accepted = 0
        self.requests = 0
        self.credentials_file: str | None = None
        self._thread: threading.Thread | None = None
        self._wake: Any = None
        self.latency = latency  # seconds before every answer (a WAN round trip)
        self.max_streams = max_concurrent_streams  # SETTINGS_MAX_CONCURRENT_STREAMS over h2
        self.goaway_after = goaway_after  # GOAWAY on each h2 connection after N requests
        self.http2 = http2  # offer ALPN h2 (False: offer no ALPN at all)
        self.sessions: set[H2Session] = set()
        self.h2_connections = 0  # h2 connections served so far
        self.refuse = 0  # the next N h2 streams get REFUSED_STREAM, unprocessed
        self.refused = 0
        self.goaways_sent = 0
        self.max_active = 0  # most h2 streams open at once on one connection
        self.limit_violations = 0  # streams opened over the acknowledged limit

    # -- lifecycle ---------------------------------------------------------------------------

    def _make_server(self) -> WSGIServer:
        # made in the thread that serves: a gevent server belongs to its creator's hub
        alpn = ["h2", "http/1.1"] if self.http2 else None
        self._server = _Server(self._address, self._app, log=None, error_log=None,
                               handler_class=_Handler, emulator=self,
                               ssl_context=server_context(self.pki.cert_file,
                                                          self.pki.key_file, alpn=alpn))
        return self._server

    def start(self) -> FcmEmulator:
        """Serve from this thread's gevent hub (for gevent programs and tests)."""
        self._make_server().start()
        return self

    def start_in_thread(self, timeout: float = 10.0) -> FcmEmulator:
        """Serve from a thread of its own with its own hub, so blocking clients (requests,
        firebase-admin) in this thread can talk to it."""
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve_thread, args=(ready,),
                                        name="fcm-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise RuntimeError("FCM emulator thread did not start")
        return self

    def _serve_thread(self, ready: threading.Event) -> None:
        hub = gevent.get_hub()
        self._wake = hub.loop.async_()
        server = self._make_server()
        server.start()
        ready.set()
        hub.wait(self._wake)  # until stop() sends the async watcher from the other thread
        self._close_sessions()
        server.stop(timeout=1)

    def _close_sessions(self) -> None:
        for session in list(self.sessions):
            session.close()

    def stop(self) -> None:
        if self._thread is not None:
            self._wake.send()
            self._thread.join(10)
            self._thread = None
        elif self._server is not None:
            self._close_sessions()
            self._server.stop(timeout=1)
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> FcmEmulator:
        self.start()
        if self.credentials_file is None:
            self.create_service_account()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the emulator is not started")
        return self._server.server_port

    @property
    def url(self) -> str:
        """Base URL of the send endpoint and of the IID API (both served here)."""
        return f"https://127.0.0.1:{self.port}"

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def send_url(self) -> str:
        return f"{self.url}/v1/projects/{self.project_id}/messages:send"

    # -- credentials -------------------------------------------------------------------------

    def create_service_account(self, path: str | None = None,
                               client_email: str | None = None) -> ServiceAccountFile:
        """Write a throw-away service-account JSON (new RSA key) whose token_uri is this
        emulator, and trust its key. The emulator must be started (its port is in the file)."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        key_id = secrets.token_hex(20)
        email = client_email or f"emulator-{secrets.token_hex(3)}@{self.project_id}" \
                                ".iam.gserviceaccount.com"
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        info = {"type": "service_account", "project_id": self.project_id,
                "private_key_id": key_id, "private_key": pem, "client_email": email,
                "client_id": str(secrets.randbits(60)), "token_uri": self.token_uri,
                "auth_uri": "https://accounts.google.com/o/oauth2/auth"}
        if path is None:
            directory = self._tmp.name if self._tmp else str(self.pki.directory)
            path = str(Path(directory) / f"service-account-{self.port}-{key_id[:6]}.json")
        Path(path).write_text(json.dumps(info, indent=2))
        Path(path).chmod(0o600)
        self.trust(email, key.public_key(), key_id)
        if self.credentials_file is None:
            self.credentials_file = path
        return ServiceAccountFile(path, email, key_id, self.project_id)

    def trust(self, client_email: str, public_key: Any, key_id: str) -> None:
        """Accept JWT assertions from `client_email` signed by `public_key`."""
        self.keys[client_email] = (public_key, key_id)

    # -- HTTP/2 connections ------------------------------------------------------------------

    def serve_h2(self, sock: Any) -> None:
        try:  # as for HTTP/1.1: Nagle and delayed ACKs would pace every connection
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.h2_connections += 1
        session = H2Session(self, sock, self.h2_connections)
        self.sessions.add(session)
        try:
            session.run()
        finally:
            self.sessions.discard(session)

    def goaway(self, last_stream_id: int | None = None, answer_open: bool = True,
               error: ErrorCodes = ErrorCodes.NO_ERROR, reason: str = "") -> None:
        """GOAWAY on every HTTP/2 connection. Streams above `last_stream_id` (default: the
        highest received) are never processed. Those at or below are answered first when
        `answer_open`, else abandoned as the connection closes (their outcome is unknown)."""
        for session in list(self.sessions):
            session.send_goaway(last_stream_id, answer_open, error, reason)

    def set_stream_limit(self, limit: int) -> None:
        """Announce a new SETTINGS_MAX_CONCURRENT_STREAMS on every HTTP/2 connection (and use
        it for new ones); it binds once the client acknowledges it."""
        self.max_streams = limit
        for session in list(self.sessions):
            session.set_stream_limit(limit)

    def refuse_next(self, n: int = 1) -> None:
        """Reset the next `n` HTTP/2 streams with REFUSED_STREAM, unprocessed."""
        self.refuse += n

    def revoke_tokens(self) -> None:
        """Forget every access token issued so far: the next send with one gets a 401."""
        self.access_tokens.clear()

    # -- scripted failures -------------------------------------------------------------------

    def fail(self, target: str, kind: str, times: int | None = None,
             retry_after: float | str | None = None) -> None:
        """Answer sends to `target` with failure `kind` (see FAILURES), `times` times or always;
        queued scripts run in order. `retry_after` is sent as the Retry-After header."""
        if kind not in FAILURES:
            raise ValueError(f"kind: one of {', '.join(FAILURES)}")
        ra = None if retry_after is None else str(retry_after)
        with self._lock:
            self._scripts.setdefault(target, deque()).append(_Script(kind, times, ra))

    def delay(self, target: str, seconds: float) -> None:
        """Answer every send to `target` only after `seconds` (0 removes the delay)."""
        if seconds:
            self._delays[target] = seconds
        else:
            self._delays.pop(target, None)

    @property
    def has_delays(self) -> bool:
        return bool(self._delays)

    def delay_of(self, body: bytes) -> float:
        """The scripted delay for the target a send request's body names (0 if none)."""
        try:
            raw = json.loads(body).get("message", {})
            target = next((raw[k] for k in ("token", "topic", "condition", "fid")
                           if isinstance(raw.get(k), str)), None)
        except (ValueError, AttributeError, TypeError):
            return 0.0
        return self._delays.get(target, 0.0) if target is not None else 0.0

    def _next_failure(self, target: str | None) -> _Script | None:
        if target is None:
            return None
        with self._lock:
            queue = self._scripts.get(target)
            if not queue:
                return None
            script = queue[0]
            if script.times is not None:
                script.times -= 1
                if script.times <= 0:
                    queue.popleft()
            return script

    # -- WSGI --------------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        at = time.monotonic()
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length else environ["wsgi.input"].read()
        wait = self.latency + (self.delay_of(body) if self._delays else 0.0)
        if wait:
            gevent.sleep(wait)  # a slow answer, as set
        status, headers, data = self.answer(environ, body, at)
        start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
        return [data]

    def answer(self, environ: dict[str, Any], body: bytes, at: float,
               protocol: str = "http/1.1", connection: int = 0
               ) -> tuple[int, list[tuple[str, str]], bytes]:
        """Process one request (either protocol): status, headers and body of the answer."""
        self.requests += 1
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "")
        if path.startswith("/v1/projects/") and "/registrations/" in path:
            status, answer, target = topics.registration(self, method, path, environ)
            headers, msg = {}, None
            error = None if status == 200 else answer["error"]["status"]
        elif method != "POST":
            status, answer, headers, target, error, msg = 405, error_body(
                405, "METHOD_NOT_ALLOWED", "Use POST"), {}, None, "METHOD_NOT_ALLOWED", None
        elif path == "/token":
            status, answer = oauth.token_endpoint(self, body)
            headers, target, msg = {}, None, None
            error = answer.get("error") if status != 200 else None
        elif path.startswith("/iid/v1:"):
            status, answer = topics.iid_batch(self, path[len("/iid/v1:"):], environ, body)
            headers, target, msg, error = {}, None, None, None
        elif path.startswith("/v1/projects/") and path.endswith("/messages:send"):
            project = path[len("/v1/projects/"):-len("/messages:send")]
            status, answer, headers, target, error, msg = self._send(project, environ, body)
        else:
            status, answer, headers, target, error, msg = 404, error_body(
                404, "NOT_FOUND", "Not found"), {}, None, "NOT_FOUND", None
        if self.seen.maxlen:
            self.seen.append(Seen(at, path, status, target, error, msg, protocol, connection))
        data = json.dumps(answer).encode()
        hdrs = [("Content-Type", "application/json; charset=UTF-8"),
                ("Content-Length", str(len(data)))] + list(headers.items())
        return status, hdrs, data

    def authorized(self, environ: dict[str, Any]) -> bool:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if not auth.startswith("Bearer "):
            return False
        expiry = self.access_tokens.get(auth[7:])
        return expiry is not None and self.clock() < expiry

    def _send(self, project: str, environ: dict[str, Any], body: bytes) -> tuple:
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        raw = request.get("message") if isinstance(request, dict) else None
        raw = raw if isinstance(raw, dict) else None
        target = None
        if raw is not None:
            target = next((raw[k] for k in ("token", "topic", "condition", "fid")
                           if isinstance(raw.get(k), str)), None)
        if not self.authorized(environ):
            return (401, error_body(401, "UNAUTHENTICATED", FAILURES["unauthenticated"][3]), {},
                    target, "UNAUTHENTICATED", raw)
        if project != self.project_id:
            return (403, error_body(403, "PERMISSION_DENIED", f"Permission denied on project "
                                f"{project}"), {}, target, "PERMISSION_DENIED", raw)
        if request is None:
            return (400, error_body(400, "INVALID_ARGUMENT", "Invalid JSON payload received."),
                    {}, None, "INVALID_ARGUMENT", None)
        try:
            msg = check_request(request)
        except Violation as v:
            token_field = v.field == "message.token"
            return (400, error_body(400, "INVALID_ARGUMENT", v.description,
                                "INVALID_ARGUMENT" if token_field else None,
                                [(v.field, v.description)]), {}, target, "INVALID_ARGUMENT",
                    raw)
        target = msg.get("token") or msg.get("topic") or msg.get("condition") or msg.get("fid")
        script = self._next_failure(target)
        if script is not None:
            code, status, error_code, text = FAILURES[script.kind]
            violations = ([(VIOLATIONS[script.kind], text)] if script.kind in VIOLATIONS
                          else None)
            headers = {"Retry-After": script.retry_after} if script.retry_after else {}
            return (code, error_body(code, status, text, error_code, violations), headers, target,
                    error_code or status, msg)
        if request.get("validate_only"):
            name = f"projects/{self.project_id}/messages/fake_message_id"
        else:
            self.messages_accepted += 1
            name = f"projects/{self.project_id}/messages/0:{self.messages_accepted}"
        return 200, {"name": name}, {}, target, None, msg

    def peek_failure(self, token: Any) -> str | None:
        queue = self._scripts.get(token) if isinstance(token, str) else None
        return queue[0].kind if queue else None


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
            404: "Not Found", 405: "Method Not Allowed", 409: "Conflict", 429: "Too Many Requests",
            500: "Internal Server Error", 503: "Service Unavailable"}
