"""The push service the webpush provider talks to: a real HTTP server on 127.0.0.1.

Answers 201 and records the JSON body; a subscription id starting with "gone" is answered 410.
"""

from __future__ import annotations

import json
from typing import Any

from gevent.pywsgi import WSGIServer


class WebpushEmulator:
    def __init__(self, port: int = 0) -> None:
        self.received: list[dict[str, Any]] = []
        self.server = WSGIServer(("127.0.0.1", port), self._app, log=None)

    def start(self) -> WebpushEmulator:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(timeout=1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/push"

    def info(self) -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.server.server_port, "url": self.url}

    def _app(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        try:
            body = json.loads(environ["wsgi.input"].read(length))
        except ValueError:
            start_response("400 Bad Request", [("Content-Length", "0")])
            return [b""]
        body["authorization"] = environ.get("HTTP_AUTHORIZATION")
        self.received.append(body)
        gone = str(body.get("to", "")).startswith("gone")
        start_response("410 Gone" if gone else "201 Created", [("Content-Length", "0")])
        return [b""]
