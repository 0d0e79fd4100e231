"""The admin HTTP API on gevent.pywsgi, bound to 127.0.0.1 only, every route behind a token.

No token configured means the server refuses to start (ConfigError naming admin.token): a
generated token would have to be printed, and secrets are never printed.

Hostile clients on the same host: a connection must send each request within read_timeout and
may sit idle between requests for idle_timeout, then it is closed; event-stream subscribers
have their own bound (a full set answers 503) so they never take the slots requests need.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import parse_qs

import gevent
from gevent.pool import Pool
from gevent.pywsgi import WSGIHandler, WSGIServer

from ccs import limits
from ccs.gateway.admin import metrics
from ccs.gateway.dispatcher import Conflict, Stopping
from ccs.gateway.outbox.base import StoreUnavailable
from ccs.gateway.settings import ConfigError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
MAX_BODY = 16 * 1024 * 1024
KEEPALIVE = 15.0
MIN_TOKEN = 16  # characters; a short token can be guessed by a local process
ROUTES = {"/v1/health": "GET", "/v1/stats": "GET", "/metrics": "GET", "/v1/messages": "POST",
          "/v1/drain": "POST", "/v1/events": "GET"}
StartResponse = Callable[..., Any]


class HttpError(Exception):
    def __init__(self, status: str, message: str, field: str | None = None,
                 headers: list[tuple[str, str]] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.headers = headers or []
        self.extra = extra


class _Handler(WSGIHandler):
    """pywsgi's handler with deadlines: the request line (and the idle wait before it), the
    headers and the body each have one; a stream's socket is handed to the app."""

    def read_requestline(self) -> str:
        with gevent.Timeout(self.server.idle_timeout, TimeoutError("idle")):
            return super().read_requestline()

    def read_request(self, raw_requestline: str) -> Any:
        with gevent.Timeout(self.server.read_timeout, TimeoutError("slow headers")):
            return super().read_request(raw_requestline)

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ["ccs.socket"] = self.socket
        return environ


class AdminServer:
    def __init__(self, supervisor: Any, port: int, token: str | None,
                 connections: int = 1000, event_clients: int = 64, read_timeout: float = 10.0,
                 idle_timeout: float = 30.0) -> None:
        if not token:
            raise ConfigError("admin.token", "the admin API needs a token: set CCS_ADMIN_TOKEN "
                                             "(or admin.enabled = false)")
        if len(token) < MIN_TOKEN:
            raise ConfigError("admin.token", f"too short ({len(token)} characters): use at least "
                                             f"{MIN_TOKEN}, e.g. from `openssl rand -hex 16`")
        self.supervisor = supervisor
        self.port = port
        self._token = token.encode()
        self._connections = connections
        self.event_clients = event_clients
        self.read_timeout = read_timeout
        self.idle_timeout = idle_timeout
        self.streams = 0  # event-stream subscribers now
        self.server: WSGIServer | None = None

    def __repr__(self) -> str:
        return f"AdminServer({HOST}:{self.port})"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def bind(self) -> None:
        """Listen now (so the port is known and busy ports fail at start)."""
        self.server = WSGIServer((HOST, self.port), self.app, spawn=Pool(self._connections),
                                 log=None, error_log=log, handler_class=_Handler)
        self.server.read_timeout = self.read_timeout  # type: ignore[attr-defined]
        self.server.idle_timeout = self.idle_timeout  # type: ignore[attr-defined]
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
            body: dict[str, Any] = {"error": str(exc), **exc.extra}
            if exc.field:
                body["field"] = exc.field
            headers = [("WWW-Authenticate", "Bearer")] if exc.status.startswith("401") else []
            if exc.status.startswith("405"):
                headers.append(("Allow", exc.extra.get("allow", "")))
            headers += exc.headers
            return _json(start_response, exc.status, body, headers)
        except Exception as exc:  # a clear answer, one log line, never pywsgi's bare 500
            log.error("admin API %s %s failed: %s: %s", environ.get("REQUEST_METHOD"),
                      environ.get("PATH_INFO"), type(exc).__name__, exc)
            return _json(start_response, "500 Internal Server Error",
                         {"error": f"internal error: {type(exc).__name__}: {exc}"})

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
            return self._drain(environ, start_response)
        if path == "/v1/events" and method == "GET":
            kinds = parse_qs(environ.get("QUERY_STRING", "")).get("kinds", [""])[0]
            return self._events(environ, start_response,
                                {k for k in kinds.split(",") if k} or None)
        allow = ROUTES.get(path) or ("GET" if path.startswith("/v1/messages/") else None)
        if allow is not None:
            raise HttpError("405 Method Not Allowed", f"{path} takes {allow}, not {method}",
                            allow=allow)
        raise HttpError("404 Not Found", f"no route {method} {path}")

    def _drain(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        body = _read_json(environ, self.read_timeout)
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise HttpError("400 Bad Request", "body must be a JSON object", "body")
        sid = body.get("session_id")
        if isinstance(sid, bool) or (sid is not None and not isinstance(sid, str | int)):
            raise HttpError("400 Bad Request", "session_id must be a string", "session_id")
        try:
            return _json(start_response, "200 OK", self.supervisor.drain(
                None if sid is None else str(sid)))
        except KeyError as exc:
            raise HttpError("404 Not Found", str(exc.args[0]), "session_id") from None
        except LookupError as exc:
            raise HttpError("409 Conflict", str(exc)) from None

    def _post_messages(self, environ: dict[str, Any], start_response: StartResponse
                       ) -> Iterable[bytes]:
        body = _read_json(environ, self.read_timeout)
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
            added = self.supervisor.accept(messages, via)
        except Stopping as exc:
            raise HttpError("503 Service Unavailable", str(exc)) from None
        except Conflict as exc:
            raise HttpError("409 Conflict", str(exc), exc.field, ids=exc.ids) from None
        except StoreUnavailable as exc:  # nothing was stored: the client sends it again later
            raise HttpError("503 Service Unavailable", str(exc), headers=[
                ("Retry-After", str(max(1, math.ceil(exc.retry_after))))]) from None
        except ValueError as exc:
            raise HttpError("400 Bad Request", str(exc), getattr(exc, "field", None)) from None
        except Exception as exc:  # the outbox cannot store (disk full, file gone, Redis down)
            log.error("the outbox refused %d messages: %s: %s", len(messages),
                      type(exc).__name__, exc)
            raise HttpError("503 Service Unavailable", f"the outbox cannot store messages "
                                                       f"now: {exc}") from None
        # All stored before (a repeated message_id with the same content): 200, nothing new.
        status = "202 Accepted" if any(new for _, new in added) or not added else "200 OK"
        return _json(start_response, status, {"ids": [i for i, _ in added]})

    def _events(self, environ: dict[str, Any], start_response: StartResponse,
                kinds: set[str] | None) -> Iterable[bytes]:
        if self.streams >= self.event_clients:
            raise HttpError("503 Service Unavailable", f"{self.streams} event-stream clients "
                            f"already (admin.event_clients); try again later")
        stream = _Stream(self, environ.get("ccs.socket"), kinds)
        start_response("200 OK", [("Content-Type", "text/event-stream"),
                                  ("Cache-Control", "no-cache")])
        return stream


class _Stream:
    """One event-stream subscriber: holds a slot from creation until the server closes it
    (WSGI always calls close()); a client that hangs up is noticed at once, not at the next
    keepalive, by a greenlet reading the socket it will never write to again."""

    def __init__(self, server: AdminServer, sock: Any, kinds: set[str] | None) -> None:
        self.server = server
        server.streams += 1
        self.bus = server.supervisor.bus
        self.sub = self.bus.subscribe(kinds)
        self.closed = False
        self.watcher = None
        if sock is not None:
            sock.settimeout(server.read_timeout)  # a reader that stops reading is let go
            self.watcher = gevent.spawn(self._watch, sock)

    def _watch(self, sock: Any) -> None:
        while True:
            try:
                if not sock.recv(1024):
                    break  # the client hung up
            except TimeoutError:
                continue
            except OSError:
                break
        self.bus.unsubscribe(self.sub)  # the stream's get() returns: the handler finishes

    def __iter__(self) -> Iterator[bytes]:
        yield b": connected\n\n"
        while True:
            item = self.sub.get(timeout=KEEPALIVE)
            if item is None:
                if self.sub.closed:
                    return
                yield b": keepalive\n\n"
                continue
            event_id, kind, data = item
            text = json.dumps(data, separators=(",", ":"))
            yield f"id: {event_id}\nevent: {kind}\ndata: {text}\n\n".encode()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.server.streams -= 1
        self.bus.unsubscribe(self.sub)
        if self.watcher is not None:
            self.watcher.kill(block=False)


def _read_body(environ: dict[str, Any], timeout: float) -> bytes:
    """The request body, by Content-Length or chunked, within `timeout` and MAX_BODY."""
    chunked = environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked"
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise HttpError("400 Bad Request", "bad Content-Length") from None
    if length > MAX_BODY:
        raise HttpError("413 Content Too Large", f"body over {MAX_BODY} bytes")
    if not length and not chunked:
        return b""
    try:
        with gevent.Timeout(timeout, TimeoutError("body")):
            raw = environ["wsgi.input"].read(MAX_BODY + 1 if chunked else length)
    except TimeoutError:
        raise HttpError("408 Request Timeout", f"body not received within {timeout:g}s") \
            from None
    except (OSError, ValueError) as exc:  # a broken chunked encoding
        raise HttpError("400 Bad Request", f"cannot read the body: {exc}", "body") from None
    if len(raw) > MAX_BODY:
        raise HttpError("413 Content Too Large", f"body over {MAX_BODY} bytes")
    return raw


def _read_json(environ: dict[str, Any], timeout: float = 10.0) -> Any:
    raw = _read_body(environ, timeout)
    if not raw:
        return None
    try:  # each message is then held to limits.MAX_DEPTH
        return limits.loads(raw, "body")
    except limits.LimitError as exc:
        raise HttpError("400 Bad Request", str(exc), "body") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise HttpError("400 Bad Request", f"body is not JSON: {exc}", "body") from None


def _json(start_response: StartResponse, status: str, body: Any,
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = json.dumps(body, separators=(",", ":"), default=str).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(data))), *(headers or [])])
    return [data]
