"""A small blocking client of the admin API, for the console (`ccs stats`, `tail`, `drain`)."""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from typing import Any

from ccs.gateway.admin.server import HOST


class AdminError(Exception):
    """The admin API could not be reached or answered an error."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class AdminClient:
    def __init__(self, port: int, token: str | None, host: str = HOST,
                 timeout: float = 30.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self._token = token or ""

    def __repr__(self) -> str:
        return f"AdminClient({self.host}:{self.port})"

    def _conn(self, timeout: float | None) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None) -> Any:
        conn = self._conn(self.timeout)
        headers = {"Authorization": f"Bearer {self._token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            raw = resp.read()
        except OSError as exc:
            raise AdminError(f"cannot reach the gateway at {self.host}:{self.port} ({exc}); "
                             "is `ccs run` running with the same admin settings?") from None
        finally:
            conn.close()
        try:
            payload = json.loads(raw) if raw else None
        except ValueError:
            payload = raw.decode(errors="replace")
        if resp.status >= 400 and not (path == "/v1/health" and resp.status == 503):
            msg = payload.get("error") if isinstance(payload, dict) else payload
            raise AdminError(f"HTTP {resp.status}: {msg}", resp.status)
        return payload

    def events(self, kinds: list[str] | None = None,
               on_connected: Callable[[], Any] | None = None
               ) -> Iterator[tuple[str, dict[str, Any]]]:
        """Read the server-sent event stream: (event kind, data) until the server closes it.

        `on_connected` runs once the server has subscribed this stream (its `: connected`
        comment): events from then on will all arrive."""
        conn = self._conn(None)
        path = "/v1/events" + (f"?kinds={','.join(kinds)}" if kinds else "")
        try:
            conn.request("GET", path, headers={"Authorization": f"Bearer {self._token}",
                                               "Accept": "text/event-stream"})
            resp = conn.getresponse()
        except OSError as exc:
            raise AdminError(f"cannot reach the gateway at {self.host}:{self.port} "
                             f"({exc})") from None
        if resp.status != 200:
            raise AdminError(f"HTTP {resp.status}: {resp.read()[:200]!r}", resp.status)
        kind, data = "message", []
        try:
            for raw in resp:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        yield kind, json.loads("\n".join(data))
                    kind, data = "message", []
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())
                elif line == ": connected" and on_connected is not None:
                    on_connected()
        finally:
            conn.close()
