"""A small WSGI server on loopback for the HTTP emulators: recording, TLS, client certificates."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from gevent import pywsgi

from ccs.outcome import Listeners

log = logging.getLogger(__name__)

REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 406: "Not Acceptable", 411: "Length Required",
    412: "Precondition Failed", 413: "Payload Too Large", 415: "Unsupported Media Type",
    500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
}


@dataclass(frozen=True)
class SeenRequest:
    """One request as the emulator received it; `at` is time.monotonic() on arrival."""

    at: float
    method: str
    path: str
    query: str
    headers: Mapping[str, str]  # lower-case names
    body: bytes
    peer_cert: Mapping[str, Any] | None = None

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(pywsgi.WSGIHandler):
    def get_environ(self) -> dict[str, Any]:
        env = super().get_environ()
        getpeercert = getattr(self.socket, "getpeercert", None)
        env["ccs.peer_cert"] = getpeercert() if getpeercert else None
        return env


class HttpEmulator:
    """Base class: subclasses implement handle(request) -> Reply. Binds port 0 by default."""

    scheme_tls = "https"

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, ssl_context: Any = None) -> None:
        self._addr = (host, port)
        self._ssl_context = ssl_context
        self._server: pywsgi.WSGIServer | None = None
        self.requests: list[SeenRequest] = []
        self.seen = Listeners()  # observers called with each SeenRequest as it arrives

    # lifecycle
    def start(self) -> HttpEmulator:
        kwargs: dict[str, Any] = {}
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        self._server = pywsgi.WSGIServer(self._addr, self._app, handler_class=_Handler,
                                         log=None, error_log=log, **kwargs)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=1)
            self._server = None

    def __enter__(self) -> HttpEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def host(self) -> str:
        assert self._server is not None, "emulator not started"
        return self._server.server_host

    @property
    def port(self) -> int:
        assert self._server is not None, "emulator not started"
        return self._server.server_port

    @property
    def origin(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"

    def requests_to(self, path: str) -> list[SeenRequest]:
        return [r for r in self.requests if r.path == path]

    # subclass hook
    def handle(self, request: SeenRequest) -> Reply:  # pragma: no cover - abstract
        raise NotImplementedError

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items()
                   if k.startswith("HTTP_")}
        if environ.get("CONTENT_TYPE"):
            headers["content-type"] = environ["CONTENT_TYPE"]
        if environ.get("CONTENT_LENGTH"):
            headers["content-length"] = environ["CONTENT_LENGTH"]
        seen = SeenRequest(at=time.monotonic(), method=environ["REQUEST_METHOD"],
                           path=environ.get("PATH_INFO", ""), query=environ.get("QUERY_STRING", ""),
                           headers=headers, body=body, peer_cert=environ.get("ccs.peer_cert"))
        self.requests.append(seen)
        self.seen.emit(seen)
        try:
            reply = self.handle(seen)
        except Exception:
            log.exception("emulator handler failed")
            reply = Reply(500, b"emulator error")
        out_headers = [(k, v) for k, v in reply.headers.items()]
        out_headers.append(("Content-Length", str(len(reply.body))))
        start_response(f"{reply.status} {REASONS.get(reply.status, 'Status')}", out_headers)
        return [reply.body]
