"""The feedback service (retired with the binary interface): tokens that stopped answering.

Connect, read to EOF, parse 38-byte tuples; the service forgets what it has served.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
from gevent import ssl
from gevent.pool import Group

from ccs.transport.h2conn import TransportError, open_tls
from http_fallback.apns.binary.frames import FrameError, parse_feedback
from http_fallback.apns.config import ApnsConfig


class Feedback:
    """Poll every `interval` seconds (0: only on poll()); `callback(time, token_hex)` per
    device, or `callback([(time, token_hex), ...])` once per poll with batch=True."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext,
                 callback: Callable[..., Any] | None = None, interval: float = 3600,
                 batch: bool = False, server_hostname: str | None = None,
                 timeout: float = 30.0) -> None:
        self.host, self.port, self.context = host, port, context
        self.callback, self.interval, self.batch = callback, interval, batch
        self.server_hostname, self.timeout = server_hostname, timeout
        self.last_error: str | None = None
        self._group = Group()

    @classmethod
    def from_config(cls, config: ApnsConfig, **kw: Any) -> Feedback:
        """The feedback service from ApnsConfig (feedback_host/port), with its certificate."""
        from http_fallback.apns.binary.client import _context

        return cls(config.feedback_host, config.feedback_port, _context(config), **kw)

    def poll(self) -> list[tuple[int, str]]:
        """Read the list once; errors are kept in last_error and give an empty list."""
        try:
            sock = open_tls(self.host, self.port, self.context, self.server_hostname,
                            self.timeout, alpn=None)
        except TransportError as e:
            self.last_error = str(e)
            return []
        data = b""
        try:
            with gevent.Timeout(self.timeout):
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except (OSError, gevent.Timeout) as e:
            self.last_error = str(e) or "timeout"
        finally:
            sock.close()
        try:
            tuples, _ = parse_feedback(data)
        except FrameError as e:
            self.last_error = str(e)
            return []
        devices = [(ts, token.hex()) for ts, token in tuples]
        if self.callback is not None:
            if self.batch:
                self.callback(devices)
            else:
                for ts, token in devices:
                    self.callback(ts, token)
        return devices

    def start(self) -> None:
        if self.interval > 0 and not self._group:
            self._group.spawn(self._loop)

    def cancel(self) -> None:
        self._group.kill()

    def _loop(self) -> None:
        while True:
            self.poll()
            gevent.sleep(self.interval)
