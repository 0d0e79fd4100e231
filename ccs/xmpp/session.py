"""One CCS connection: a thin gevent shell around XmppStream. Holds no CCS rules of its own.

A reader greenlet feeds socket bytes to the stream and tells its listener (the pool, given at
construction) what happened; the listener decides. The session never calls into its owner's
internals and the owner asks the session through its methods. A
writer greenlet sends everything queued since it last ran in one `sendall` (write coalescing:
a burst of acks and new messages costs one TLS record, not one per stanza); a pinger notices a
dead peer within ping_interval + ping_timeout.
"""

from __future__ import annotations

import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import gevent
from gevent import socket
from gevent.event import Event

from ccs.transport.tls import client_context
from ccs.xmpp.stream import (
    AuthFailed,
    GcmReceived,
    Pong,
    ProtocolViolation,
    Ready,
    StanzaError,
    State,
    StreamClosed,
    XmppStream,
    plain_credentials,
)
from ccs.xmpp.window import Window

if TYPE_CHECKING:
    from ccs.xmpp.config import CcsConfig

log = logging.getLogger(__name__)

_ids = itertools.count(1)
RECV_BYTES = 65536


T = TypeVar("T")


class SessionClosed(Exception):
    pass


class SessionListener(Protocol[T]):
    """What a session tells its owner; each call runs in the session's reader greenlet."""

    def session_ready(self, session: Session[T]) -> None: ...

    def session_gcm(self, session: Session[T], ev: GcmReceived) -> None: ...

    def session_stanza_error(self, session: Session[T], ev: StanzaError) -> None: ...

    def session_closed(self, session: Session[T], pending: list[T]) -> None:
        """The session is gone; `pending` are the messages sent on it and never answered."""


class Session(Generic[T]):
    """States: connecting -> ready -> (draining) -> closed. `retired` is set on drain or close.

    T is whatever the owner tracks per message (the pool's Entry); the session only keeps it in
    its window until the owner takes it back with `answer` / `reject`, or gets it in
    `session_closed`."""

    def __init__(self, config: CcsConfig, listener: SessionListener[T]) -> None:
        self.id = next(_ids)
        self.config = config
        self._listener = listener
        self._window: Window[T] = Window(config.window)
        self.draining = False
        self.closed = False
        self.close_reason: str | None = None
        self.auth_failed = False
        self.ready = Event()
        self.retired = Event()
        self.jid: str | None = None
        self.sent = 0
        self._answered = 0
        self.connected_at: float | None = None
        self._last_rx = time.monotonic()
        self._sock: Any = None
        self._wake = Event()
        self._writer: gevent.Greenlet | None = None
        self._pinger: gevent.Greenlet | None = None
        self._stream = XmppStream(
            config.domain,
            config.authcid or plain_credentials(config.sender_id, config.domain),
            config.server_key,
            f"{config.resource_prefix}-{self.id}",
        )

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.state} pending={len(self._window)}>"

    @property
    def state(self) -> str:
        if self.closed:
            return "closed"
        if self.draining:
            return "draining"
        return "ready" if self.ready.is_set() else "connecting"

    def lived(self) -> float:
        """Seconds since the TLS connection was made (0 before)."""
        return time.monotonic() - self.connected_at if self.connected_at else 0.0

    @property
    def usable(self) -> bool:
        return self.ready.is_set() and not self.draining and not self.closed

    @property
    def pending(self) -> int:
        """Messages sent on this session and not yet answered."""
        return len(self._window)

    @property
    def room(self) -> int:
        """How many more messages the window takes now."""
        return self._window.room

    @property
    def answered(self) -> int:
        """Acks and nacks received (taken back with `answer`)."""
        return self._answered

    def oldest(self) -> T | None:
        """The message waiting longest for its answer, or None."""
        return self._window.oldest()

    # the greenlet body ---------------------------------------------------------------------

    def run(self) -> None:
        """Connect, log in, then read until the connection ends. Never raises."""
        reason = "closed"
        try:
            self._connect()
            self._read_loop()
        except ProtocolViolation as exc:
            reason = f"protocol violation: {exc}"
            log.warning("session %s closing: %s", self.id, reason)
        except SessionClosed as exc:
            reason = str(exc)
        except (OSError, ValueError, gevent.Timeout) as exc:
            # ValueError: the SSL socket was closed under a pending read (stop, ping timeout).
            reason = f"{type(exc).__name__}: {exc}"
            log.info("session %s connection lost: %s", self.id, reason)
        except Exception as exc:  # a bug must close this session, not leave it half alive
            reason = f"internal error: {type(exc).__name__}"
            log.exception("session %s closing: %s", self.id, reason)
        finally:
            self._close(reason)

    def _connect(self) -> None:
        cfg = self.config
        with gevent.Timeout(cfg.connect_timeout, SessionClosed("connect timeout")):
            raw = socket.create_connection((cfg.host, cfg.port))
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            ctx = client_context(cfg.ca_file)
            self._sock = ctx.wrap_socket(raw, server_hostname=cfg.tls_server_name or cfg.host)
        self.connected_at = time.monotonic()
        self._writer = gevent.spawn(self._write_loop)
        self._flush()

    def _read_loop(self) -> None:
        stream = self._stream
        listener = self._listener
        deadline = gevent.Timeout(self.config.connect_timeout, SessionClosed("login timeout"))
        deadline.start()
        try:
            while True:
                data = self._sock.recv(RECV_BYTES)
                if not data:
                    raise SessionClosed("server closed the connection")
                self._last_rx = time.monotonic()
                for ev in stream.receive(data):
                    if isinstance(ev, GcmReceived):
                        listener.session_gcm(self, ev)
                    elif isinstance(ev, StanzaError):
                        listener.session_stanza_error(self, ev)
                    elif isinstance(ev, Pong):
                        pass
                    elif isinstance(ev, Ready):
                        deadline.close()
                        self.jid = ev.jid
                        self.ready.set()
                        self._pinger = gevent.spawn(self._ping_loop)
                        listener.session_ready(self)
                    elif isinstance(ev, AuthFailed):
                        self.auth_failed = True
                        raise SessionClosed(f"authentication refused: {ev.condition}")
                    elif isinstance(ev, StreamClosed):
                        raise SessionClosed(f"stream closed by server: {ev.condition or ev.text}")
                self._flush()
        finally:
            deadline.close()

    def _write_loop(self) -> None:
        wake = self._wake
        stream = self._stream
        try:
            while True:
                wake.wait()
                wake.clear()
                data = stream.data_to_send()
                if data:
                    self._sock.sendall(data)
        except OSError as exc:
            log.info("session %s write failed: %s", self.id, exc)
            self._kill_reader()

    def _ping_loop(self) -> None:
        interval = self.config.ping_interval
        timeout = self.config.ping_timeout
        while not self.closed:
            gevent.sleep(interval)
            if time.monotonic() - self._last_rx < interval:
                continue
            sent_at = time.monotonic()
            self._stream.send_ping()
            self._flush()
            gevent.sleep(timeout)
            if self._last_rx < sent_at:
                log.warning("session %s: no answer to ping in %.1fs", self.id, timeout)
                self._kill_reader("no answer to keepalive ping")
                return

    # asked by the owner -----------------------------------------------------------------------

    def send(self, message_id: str, json_text: str, item: T) -> None:
        """Put a message in the window and queue its stanza (sent on the next writer pass).
        Raises WindowFull when there is no room."""
        self._window.add(message_id, item)
        self.sent += 1
        self._stream.send_gcm(json_text)
        self._flush()

    def answer(self, message_id: str) -> T | None:
        """Take back a message CCS acked or nacked; None when it is not pending here."""
        item = self._window.pop(message_id)
        if item is not None:
            self._answered += 1
        return item

    def reject(self, message_id: str) -> T | None:
        """Take back a message the server refused with a stanza error (not an answer)."""
        return self._window.pop(message_id)

    def send_ack(self, json_text: str) -> bool:
        """Queue an ack for an upstream message or receipt; False when the session is gone."""
        if self.closed:
            return False
        self._stream.send_gcm(json_text)
        self._flush()
        return True

    def mark_draining(self) -> None:
        if not self.draining and not self.closed:
            self.draining = True
            self.retired.set()

    def close(self, reason: str = "closed by client") -> None:
        """Close politely: end the stream, then the socket."""
        if self.closed:
            return
        if self._sock is not None and self._stream.state is not State.CLOSED:
            self._stream.close()
            try:
                self._sock.sendall(self._stream.data_to_send())
            except OSError:
                pass
        self._kill_reader(reason)

    def abort(self, reason: str) -> None:
        """Close the socket at once (no polite end of stream: the peer may not be reading)."""
        self._kill_reader(reason)

    # internals -------------------------------------------------------------------------------

    def _flush(self) -> None:
        self._wake.set()

    def _kill_reader(self, reason: str = "closed") -> None:
        self.close_reason = self.close_reason or reason
        sock = self._sock
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = self.close_reason or reason
        for g in (self._writer, self._pinger):
            if g is not None and g is not gevent.getcurrent():
                g.kill(block=False)
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self.retired.set()
        self._listener.session_closed(self, self._window.take_all())
