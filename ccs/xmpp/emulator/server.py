"""CcsEmulator: a TLS XMPP server on loopback that behaves as Google's CCS did."""

from __future__ import annotations

import hmac
import itertools
import logging
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gevent import socket
from gevent.event import Event
from gevent.pool import Group, Pool
from gevent.server import StreamServer

from ccs.testing.pki import TestPKI, make_test_pki
from ccs.transport.tls import server_context
from ccs.xmpp.emulator.behaviour import Behaviour, Outstanding
from ccs.xmpp.emulator.connection import Connection
from ccs.xmpp.emulator.record import Record, Sent
from ccs.xmpp.emulator.rules import Script
from ccs.xmpp.emulator.settings import FAULT_NAMES, Faults, split_options

log = logging.getLogger(__name__)

DOMAIN = "gcm.googleapis.com"
AUTH_DOMAINS = ("gcm.googleapis.com", "fcm.googleapis.com")
UPSTREAM_FROM = "devices@gcm.googleapis.com"


@dataclass(frozen=True)
class ConnectionInfo:
    id: int
    jid: str | None
    pending: int
    draining: bool
    open: bool


class CcsEmulator:
    """Protocol-faithful CCS on a loopback TLS socket; see docs/providers/ccs.rst."""

    def __init__(self, sender_id: str = "1234567890", server_key: str = "emulator-server-key",
                 pki: TestPKI | None = None, host: str = "127.0.0.1", port: int = 0,
                 domain: str = DOMAIN, **options: Any) -> None:
        self.faults, self.settings = split_options(options)
        self.sender_id = sender_id
        self._server_key = server_key
        self._owns_pki = pki is None
        self.pki = pki or make_test_pki()
        self.domain = domain
        self._bind = (host, port)
        self.record = Record(limit=self.settings.record_limit)
        self.script = Script()
        self.outstanding: dict[str, Outstanding] = {}
        self.behaviour = Behaviour(self)
        self._conns: dict[int, Connection] = {}
        self._ids = itertools.count(1)
        self._rr = itertools.count()
        self._group = Group()
        self._handlers = Pool(10000)
        self._server: StreamServer | None = None
        self._ctx = server_context(self.pki.cert_file, self.pki.key_file)
        self._wake = Event()
        self.ticks = 0  # housekeeping rounds done (tests wait on it)

    def __repr__(self) -> str:
        return f"<CcsEmulator sender={self.sender_id} {self.host}:{self.port}>"

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> CcsEmulator:
        listener = socket.socket(socket.AF_INET6 if ":" in self._bind[0] else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(self._bind)
        listener.listen(1024)
        self._server = StreamServer(listener, self._handle, spawn=self._handlers)
        self._server.start()
        self.spawn(self._tick)
        return self

    def stop(self, timeout: float = 2.0) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns.values()):
            conn.close("emulator stopped")
        self._handlers.kill(timeout=timeout)
        self._group.kill(timeout=timeout)
        if self._server is not None:
            self._server.stop(timeout=0)
            self._server = None
        if self._owns_pki:
            shutil.rmtree(self.pki.directory, ignore_errors=True)

    def __enter__(self) -> CcsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spawn(self, fn: Callable[..., Any], *args: Any) -> gevent.Greenlet:
        return self._group.spawn(fn, *args)

    @property
    def host(self) -> str:
        return self._bind[0]

    @property
    def port(self) -> int:
        assert self._server is not None, "start() the emulator first"
        return self._server.address[1]

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def ca_file(self) -> str:
        return self.pki.ca_file

    @property
    def server_key(self) -> str:
        return self._server_key

    # run-time control ----------------------------------------------------------------------
    def set_faults(self, **faults: Any) -> None:
        """Change faults while running (drain_after, drop_after, ack_delay, stall, ...)."""
        unknown = sorted(set(faults) - FAULT_NAMES)
        if unknown:
            raise TypeError(f"unknown fault(s): {', '.join(unknown)}")
        new = Faults(**{**self.faults.__dict__, **faults})
        new.check()
        self.faults.__dict__.update(new.__dict__)
        if not new.stall:
            for conn in self._conns.values():
                conn.flush()
        self._wake.set()

    def set_token_error(self, token: str, code: str | None, times: int | None = None) -> None:
        """Nack sends to `token` with `code` (the first `times` sends only, or always)."""
        self.script.set_token_error(token, code, times)

    def set_canonical(self, token: str, new_token: str | None) -> None:
        """Acks for `token` carry registration_id=new_token."""
        self.script.set_canonical(token, new_token)

    @property
    def connections(self) -> list[ConnectionInfo]:
        return [ConnectionInfo(c.id, c.jid, c.pending, c.draining, c.open)
                for c in self._conns.values()]

    def connection(self, conn_id: int) -> Connection:
        return self._conns[conn_id]

    def _live(self, conn_id: int | None) -> list[Connection]:
        if conn_id is not None:
            conn = self._conns.get(conn_id)
            return [conn] if conn is not None and conn.open else []
        return [c for c in self._conns.values() if c.open]

    def drain(self, conn_id: int | None = None) -> None:
        """Send CONNECTION_DRAINING on one connection (or all ready ones)."""
        for conn in self._live(conn_id):
            if conn.ready:
                self.drain_connection(conn)
                conn.flush()

    def drain_connection(self, conn: Connection) -> None:
        if conn.draining:
            return
        conn.draining = True
        conn.drained_at = time.monotonic()
        payload = {"message_type": "control", "control_type": "CONNECTION_DRAINING"}
        self.record.add_sent(Sent(conn.id, "control", payload, time.time()))
        conn.send(self.behaviour.gcm(payload))
        self._wake.set()

    def drop(self, conn_id: int | None = None) -> None:
        """Abort one connection (or all) now, with a TCP reset and nothing answered."""
        for conn in self._live(conn_id):
            conn.abort("dropped by test")

    def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0,
                 what: str = "condition") -> Any:
        """Yield until predicate() is truthy and return its value; TimeoutError after timeout."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
            gevent.sleep(0.002)

    # upstream and receipts -----------------------------------------------------------------
    def send_upstream(self, from_token: str, data: dict[str, Any] | None = None,
                      category: str = "com.example", message_id: str | None = None,
                      time_to_live: int | None = None) -> str:
        """Send an upstream message from a device; re-delivered until the app server acks it."""
        mid = message_id or uuid.uuid4().hex
        payload: dict[str, Any] = {"from": from_token, "category": category, "message_id": mid,
                                   "data": data or {}}
        if time_to_live is not None:
            payload["time_to_live"] = time_to_live
        attrs = {"to": f"{self.sender_id}@{self.domain}", "from": UPSTREAM_FROM,
                 "type": "normal"}
        out = Outstanding("upstream", payload, extra=attrs)
        self.outstanding[mid] = out
        self._deliver(out)
        return mid

    def queue_receipt(self, conn: Connection, receipt: dict[str, Any]) -> None:
        """Called once a downstream ack is on its way: the receipt follows on that connection."""
        out = Outstanding("receipt", receipt)
        self.outstanding[receipt["message_id"]] = out
        delay = self.settings.receipt_delay
        if delay > 0:
            out.due = time.monotonic() + delay
            out.conn_id = conn.id  # first choice when it falls due
            self._wake.set()
        else:
            self._deliver(out, conn, flush=False)  # goes out in the same write as its ack

    def _pick(self) -> Connection | None:
        ready = [c for c in self._conns.values() if c.ready]
        fresh = [c for c in ready if not c.draining] or ready
        if not fresh:
            return None
        return fresh[next(self._rr) % len(fresh)]

    def _deliver(self, out: Outstanding, conn: Connection | None = None,
                 flush: bool = True) -> bool:
        if self.faults.stall:
            return False
        conn = conn if conn is not None and conn.ready else self._pick()
        if conn is None:
            return False
        redelivery = out.sends > 0
        out.sends += 1
        out.conn_id = conn.id
        out.sent_at = time.monotonic()
        self.record.add_sent(Sent(conn.id, out.kind, out.payload, time.time(), redelivery))
        conn.send(self.behaviour.gcm(out.payload, **out.extra))
        if flush:
            conn.flush()
        return True

    # connection callbacks ------------------------------------------------------------------
    def _handle(self, sock: socket.socket, address: tuple[Any, ...]) -> None:
        conn_id = next(self._ids)
        try:
            tls = self._ctx.wrap_socket(sock, server_side=True)
        except (OSError, ValueError) as exc:
            self.record.note(self.record.stream_errors, conn_id, f"TLS handshake failed: {exc}")
            sock.close()
            return
        tls.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(self, conn_id, tls)
        self._conns[conn_id] = conn
        self.record.note(self.record.opened, conn_id, f"{address[0]}:{address[1]}")
        conn.serve()

    def check_credentials(self, creds: tuple[str, str, str] | None) -> str | None:
        """None if SASL PLAIN `creds` log in as this sender; otherwise why not."""
        if creds is None:
            return "malformed PLAIN credentials"
        if self.faults.refuse_auth:
            return "refuse_auth fault"
        authzid, authcid, password = creds
        user, _, dom = authcid.partition("@")
        if user != self.sender_id or dom not in AUTH_DOMAINS:
            return f"unknown authcid {authcid!r}"
        if authzid and authzid.split("/")[0] != authcid:
            return f"authzid {authzid!r} differs from authcid"
        if not hmac.compare_digest(password.encode(), self._server_key.encode()):
            return "wrong server key"
        return None

    def authenticated_count(self) -> int:
        return sum(1 for c in self._conns.values()
                   if c.open and c.state in ("authed", "bind", "ready"))

    def on_ready(self, conn: Connection) -> None:
        self._wake.set()  # undelivered upstream may now go out

    def on_closed(self, conn: Connection, reason: str) -> None:
        self.record.note(self.record.closed, conn.id, reason)
        self._wake.set()

    # the one housekeeping greenlet ---------------------------------------------------------
    def _period(self) -> float:
        s = self.settings
        candidates = [s.upstream_redeliver, s.receipt_redeliver, s.drain_grace]
        if s.keepalive:
            candidates.append(s.keepalive)
        if s.receipt_delay:
            candidates.append(s.receipt_delay)
        return max(0.005, min(0.25, min(candidates) / 4))

    def _tick(self) -> None:
        while True:
            self._wake.wait(self._period())
            self._wake.clear()
            try:
                self._housekeeping(time.monotonic())
                self.ticks += 1
            except Exception:  # noqa: BLE001 - keep serving; the test will see the log
                log.exception("emulator housekeeping failed")

    def _housekeeping(self, now: float) -> None:
        s = self.settings
        stalled = self.faults.stall
        for conn in list(self._conns.values()):
            if not conn.open:
                continue
            if conn.draining and conn.pending == 0 and now - conn.drained_at >= s.drain_grace:
                conn.end_stream("drained")
                continue
            if s.keepalive and conn.ready and not stalled and now - conn.last_write >= s.keepalive:
                conn.send(b" ")
                conn.flush()
        for out in list(self.outstanding.values()):
            if out.due > now:
                continue
            interval = s.upstream_redeliver if out.kind == "upstream" else s.receipt_redeliver
            conn = self._conns.get(out.conn_id) if out.conn_id is not None else None
            if out.sends == 0 or now - out.sent_at >= interval:
                self._deliver(out, conn if out.sends == 0 else None)
