"""The admin HTTP API on gevent.pywsgi, bound to 127.0.0.1 only, every route behind a token.

No token configured means the server refuses to start (ConfigError naming admin.token): a
generated token would have to be printed, and secrets are never printed.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from ccs.admin import metrics
from ccs.dispatcher import Stopping
from ccs.outbox.base import StoreUnavailable
from ccs.settings import ConfigError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY = 16 * 1024 * 1024
KEEPALIVE = 15.0
StartResponse = Callable[..., Any]


class HttpError(Exception):
    def __init__(self, status: str, message: str, field: str | None = None,
                 headers: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.headers = headers or []


class AdminServer:
    def __init__(self, supervisor: Any, port: int, token: str | None,
                 connections: int = 64) -> None:
        if not token:
            raise ConfigError("admin.token", "the admin API needs a token: set CCS_ADMIN_TOKEN "
                                             "(or admin.enabled = false)")
        self.supervisor = supervisor
        self.port = port
        self._token = token.encode()
        self._connections = connections
        self.server: WSGIServer | None = None

    def __repr__(self) -> str:
        return f"AdminServer({HOST}:{self.port})"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def bind(self) -> None:
        """Listen now (so the port is known and busy ports fail at start)."""
        self.server = WSGIServer((HOST, self.port), self.app, spawn=Pool(self._connections),
                                 log=None, error_log=log)
        try:
            self.server.init_socket()
        except OSError as exc:
            raise ConfigError("admin.port", f"cannot listen on {HOST}:{self.port}: "
                                            f"{exc.strerror or exc}") from None
        self.port = self.server.server_port

    def serve(self) -> None:
        if self.server is None or self.server.closed:
            self.bind()
        assert self.server is not None
        self.server.serve_forever()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop(timeout=1)

    # WSGI
    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        try:
            self._authorise(environ)
            return self._route(environ, start_response)
        except HttpError as exc:
            body = {"error": str(exc)}
            if exc.field:
                body["field"] = exc.field
            headers = [("WWW-Authenticate", "Bearer")] if exc.status.startswith("401") else []
            headers += exc.headers
            return _json(start_response, exc.status, body, headers)

    def _authorise(self, environ: dict[str, Any]) -> None:
        given = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(),
                                                                  self._token):
            raise HttpError("401 Unauthorized", "a valid bearer token is required")

    def _route(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "/").rstrip("/") or "/"
        sup = self.supervisor
        if path == "/v1/health" and method == "GET":
            h = sup.health()
            return _json(start_response, "200 OK" if h["ok"] else "503 Service Unavailable", h)
        if path == "/v1/stats" and method == "GET":
            return _json(start_response, "200 OK", sup.stats())
        if path == "/metrics" and method == "GET":
            start_response("200 OK", [("Content-Type", metrics.CONTENT_TYPE)])
            return [metrics.render(sup)]
        if path == "/v1/messages" and method == "POST":
            return self._post_messages(environ, start_response)
        if path.startswith("/v1/messages/") and method == "GET":
            record = sup.status(path[len("/v1/messages/"):])
            if record is None:
                raise HttpError("404 Not Found", "no such message")
            return _json(start_response, "200 OK", record)
        if path == "/v1/drain" and method == "POST":
            body = _read_json(environ) or {}
            try:
                return _json(start_response, "200 OK", sup.drain(body.get("session_id")))
            except LookupError as exc:
                raise HttpError("409 Conflict", str(exc)) from None
        if path == "/v1/events" and method == "GET":
            kinds = parse_qs(environ.get("QUERY_STRING", "")).get("kinds", [""])[0]
            start_response("200 OK", [("Content-Type", "text/event-stream"),
                                      ("Cache-Control", "no-cache")])
            return self._events({k for k in kinds.split(",") if k} or None)
        raise HttpError("404 Not Found", f"no route {method} {path}")

    def _post_messages(self, environ: dict[str, Any], start_response: StartResponse
                       ) -> Iterable[bytes]:
        body = _read_json(environ)
        if not isinstance(body, dict):
            raise HttpError("400 Bad Request", "body must be a JSON object", "body")
        via = body.get("via")
        if via is not None and not isinstance(via, str):
            raise HttpError("400 Bad Request", "via must be a string", "via")
        if "messages" in body:
            messages = body["messages"]
            if not isinstance(messages, list):
                raise HttpError("400 Bad Request", "messages must be a list", "messages")
        elif "message" in body:
            messages = [body["message"]]
        else:
            raise HttpError("400 Bad Request", "give message or messages", "message")
        try:
            ids = self.supervisor.enqueue_many(messages, via)
        except Stopping as exc:
            raise HttpError("503 Service Unavailable", str(exc)) from None
        except StoreUnavailable as exc:  # nothing was stored: the client sends it again later
            raise HttpError("503 Service Unavailable", str(exc), headers=[
                ("Retry-After", str(max(1, math.ceil(exc.retry_after))))]) from None
        except ValueError as exc:
            raise HttpError("400 Bad Request", str(exc), getattr(exc, "field", None)) from None
        return _json(start_response, "202 Accepted", {"ids": ids})

    def _events(self, kinds: set[str] | None) -> Iterator[bytes]:
        bus = self.supervisor.bus
        sub = bus.subscribe(kinds)
        try:
            yield b": connected\n\n"
            while True:
                item = sub.get(timeout=KEEPALIVE)
                if item is None:
                    if sub.closed:
                        return
                    yield b": keepalive\n\n"
                    continue
                event_id, kind, data = item
                text = json.dumps(data, separators=(",", ":"))
                yield f"id: {event_id}\nevent: {kind}\ndata: {text}\n\n".encode()
        finally:
            bus.unsubscribe(sub)


def _read_json(environ: dict[str, Any]) -> Any:
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise HttpError("400 Bad Request", "bad Content-Length") from None
    if length > MAX_BODY:
        raise HttpError("413 Content Too Large", f"body over {MAX_BODY} bytes")
    raw = environ["wsgi.input"].read(length) if length else b""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError("400 Bad Request", f"body is not JSON: {exc}", "body") from None


def _json(start_response: StartResponse, status: str, body: Any,
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = json.dumps(body, separators=(",", ":"), default=str).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data))), *(headers or [])])
    return [data]
