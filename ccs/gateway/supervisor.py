"""The supervisor: one tree of greenlets (providers, outbox dispatcher, feedback, admin API).

Embeddable: `Supervisor(settings).start()` inside any gevent program returns at once; `stop()`
stops accepting, waits for in-flight messages up to a deadline and leaves the rest queued.
A child that crashes is restarted with doubling backoff and its restarts are reported.
start() and stop() may be called again (the second start is a no-op, a second stop waits for the
first). A supervisor belongs to the process that started it: after a fork (a pre-fork server's
worker) the child must start its own; the inherited one refuses work and its stop() touches
nothing the parent still uses.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.event import AsyncResult
from gevent.pool import Group

from ccs.gateway import providers as registry
from ccs.gateway.dispatcher import Dispatcher, Stopping
from ccs.gateway.events import EventBus
from ccs.gateway.feedback import Feedback, Webhook
from ccs.gateway.inbound import Inbound
from ccs.gateway.outbox import Store, is_redis, open_store
from ccs.gateway.outbox.base import StoreUnavailable
from ccs.gateway.outbox.sqlite import OutboxLock
from ccs.gateway.router import Router
from ccs.gateway.settings import ConfigError, Settings
from ccs.gateway.stats import GatewayStats, percentiles
from ccs.outcome import Listeners, SendResult
from ccs.provider import Drains, Provider, TakesReceipts, TakesUpstream

log = logging.getLogger(__name__)

MAX_BACKOFF = 60.0
STABLE_AFTER = 60.0  # a child that ran this long without crashing starts its backoff afresh
STORE_BACKOFF = 5.0  # longest wait before a child stopped by an unavailable store runs again


@dataclass(slots=True)
class Child:
    name: str
    fn: Callable[[], Any]
    restarts: int = 0
    last_error: str | None = None
    running: bool = False
    greenlet: gevent.Greenlet | None = None


class Supervisor:
    def __init__(self, settings: Settings | None = None, *, store: Store | None = None,
                 providers: Mapping[str, Provider] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        """`store`/`providers` override what the settings would build (tests, embedding)."""
        self.settings = settings or Settings.defaults()
        self.clock = clock
        self._own_store = store is None
        self._store = store
        self._given = dict(providers) if providers is not None else None
        self.providers: dict[str, Provider] = {}
        self.children: dict[str, Child] = {}
        self.group = Group()
        self.bus = EventBus()
        self.stats_observer = GatewayStats()
        self.recovered = 0
        self.started = False
        self.stopped = False
        self.pid: int | None = None  # the process that started it
        self._stopping: AsyncResult | None = None  # the first stop()'s result
        self.dispatcher: Dispatcher | None = None
        self._lock: OutboxLock | None = None
        self.admin: Any = None
        self.inbound: Inbound | None = None
        self.feedback: Feedback | None = None
        self.token_events = Listeners()  # every provider's TokenEvents, for Python callbacks
        self.upstream = Listeners()  # InboundRecord of stored upstream messages
        self.receipts = Listeners()  # InboundRecord of stored delivery receipts

    # starting
    def start(self) -> Supervisor:
        """Open the outbox, start providers, then dispatcher, feedback and admin API, in order.

        If any step fails, what was started is stopped again and the error propagates.
        Calling it again in the same process does nothing."""
        self._check_process()
        if self.stopped or self._stopping is not None:
            raise RuntimeError("this Supervisor was stopped; make a new one to start again")
        if self.started:
            return self
        self.pid = os.getpid()
        try:
            return self._start()
        except BaseException:
            self.started = True
            self.stop(timeout=0)
            raise

    def _check_process(self) -> None:
        if self.pid is not None and self.pid != os.getpid():
            raise RuntimeError(
                f"this Supervisor was started in process {self.pid}, before a fork; start one "
                f"in each process after the fork (gunicorn: the post_worker_init hook)")

    def _start(self) -> Supervisor:
        s = self.settings
        webhook = None
        if s["webhook.url"]:
            webhook = Webhook(s["webhook.url"], s["webhook.secret"] or "",
                              timeout=s["webhook.timeout"], max_backoff=s["webhook.max_backoff"],
                              ca_file=s["webhook.ca_file"])
        if s["admin.enabled"]:
            from ccs.gateway.admin.server import AdminServer

            self.admin = AdminServer(  # checks the token
                self, s["admin.port"], s["admin.token"], connections=s["admin.connections"],
                event_clients=s["admin.event_clients"], read_timeout=s["admin.read_timeout"],
                idle_timeout=s["admin.idle_timeout"])
        if self._given is None:
            registry.load_plugins(s["gateway.plugins"])
        built = self._given if self._given is not None else {
            name: registry.create(name, s) for name in s["gateway.providers"]}
        if self._store is None:
            if s["outbox.path"] != ":memory:" and not is_redis(s["outbox.path"]):
                self._lock = OutboxLock(s["outbox.path"])
                try:
                    self._lock.acquire()
                except BlockingIOError:
                    holder, self._lock = self._lock.holder(), None
                    raise ConfigError("outbox.path", f"{s['outbox.path']} is in use by another "
                                      f"running gateway{holder} (one gateway process per SQLite "
                                      "outbox: several workers or processes need a Redis "
                                      "outbox, CCS_OUTBOX=redis://...)") from None
            extra = redis_options(s) if is_redis(s["outbox.path"]) else {}
            self._store = open_store(s["outbox.path"], sync=s["outbox.sync"],
                                     threadpool=s["outbox.threadpool"], batch=s["outbox.batch"],
                                     **extra)
        store = self._store
        self._share(store, built)
        self.recovered = store.recover(self.clock())
        if self.recovered:
            log.warning("%d messages were in flight at the last stop; sending them again",
                        self.recovered)
        self.inbound = Inbound(store, self.bus, self.clock)
        self.inbound.upstream = self.upstream  # the app's handlers; one raising means "again"
        self.inbound.receipts = self.receipts
        self.feedback = Feedback(store, self.bus, webhook, self.clock)
        self.feedback.listeners.add(self.token_events.emit)
        for name, provider in built.items():
            provider.token_events.add(self.feedback.observe)
            if isinstance(provider, TakesUpstream):
                provider.on_upstream(self.inbound.store_upstream)
            if isinstance(provider, TakesReceipts):
                provider.on_receipt(self.inbound.store_receipt)
            provider.start()
            self.providers[name] = provider
        router = Router(lambda: {n: p.healthy() for n, p in self.providers.items()},
                        s["gateway.fcm_fallback"],
                        grace_until=time.monotonic() + s["gateway.ccs_startup_grace"])
        self.dispatcher = Dispatcher(store, self.providers, router,
                                     concurrency=s["gateway.concurrency"], clock=self.clock)
        self.dispatcher.outcomes.add(self.stats_observer.observe)
        self.dispatcher.outcomes.add(self._publish_outcome)
        self.add_child("inbound", self.inbound.run)
        self.add_child("feedback", self.feedback.run)
        if webhook is not None:
            self.add_child("webhook", self.feedback.run_webhook)
        self.add_child("finisher", self.dispatcher.run_finisher)
        for lane in self.dispatcher.lanes():
            self.add_child(f"lane:{lane}", lambda lane=lane: self.dispatcher.run_lane(lane))
        if self.admin is not None:
            self.admin.bind()
            self.add_child("admin", self.admin.serve)
        if hasattr(store, "beat"):
            store.beat()  # announce the providers and sessions started just now
        log.debug("started: providers %s, lanes %s, children %s", ", ".join(self.providers),
                  ", ".join(self.dispatcher.lanes()), ", ".join(self.children))
        self.started = True
        return self

    def _share(self, store: Store, built: Mapping[str, Provider]) -> None:
        """With a store shared by many gateways (Redis): announce this one, take CCS
        connection leases from the common budget, publish token events."""
        if not hasattr(store, "start_heartbeat"):
            return
        ccs = built.get("ccs")
        config = getattr(ccs, "config", None)
        if config is not None and hasattr(config, "lease"):
            config.lease = store.connection_lease(config.sender_id,  # type: ignore[attr-defined]
                                                  self.settings["ccs.connection_budget"])
        store.start_heartbeat(self._presence)  # type: ignore[attr-defined]
        publish = store.publish  # type: ignore[attr-defined]
        self.token_events.add(lambda ev: publish("token", ev.as_json()))

    def _presence(self) -> dict[str, Any]:
        """What `ccs status` shows for this gateway (written with each heartbeat)."""
        provs = {n: p.healthy() for n, p in self.providers.items()}
        ccs = self.providers.get("ccs")
        sessions = [{k: v for k, v in row.items() if k in ("id", "state", "pending", "sent")}
                    for row in _safe_stats(ccs).get("sessions", [])] if ccs else []
        in_flight = self.dispatcher.in_flight() if self.dispatcher else {}
        return {"providers": provs, "sessions": sessions, "in_flight": sum(in_flight.values()),
                "sent": {n: self.stats_observer.provider(n).get("messages_sent", 0)
                         for n in self.providers}}

    def add_child(self, name: str, fn: Callable[[], Any]) -> Child:
        """Run fn in the supervised tree; restarted with backoff whenever it raises."""
        child = Child(name, fn)
        self.children[name] = child
        child.greenlet = self.group.spawn(self._run_child, child)
        return child

    def _run_child(self, child: Child) -> None:
        first = self.settings["gateway.restart_backoff"]
        delay = first
        while not self.stopped:
            began = time.monotonic()
            child.running = True
            try:
                child.fn()
                return  # a child that returns is finished, not crashed
            except StoreUnavailable as exc:  # Redis away: not a bug; ask again soon
                child.last_error = f"{type(exc).__name__}: {exc}"
                delay = min(delay, STORE_BACKOFF)
                log.warning("child %s: %s; restarting in %.2fs", child.name, exc, delay)
            except Exception as exc:
                child.last_error = f"{type(exc).__name__}: {exc}"
                if isinstance(exc, OSError | sqlite3.Error):  # the disk or network, not a bug
                    log.error("child %s stopped: %s; restarting in %.2fs", child.name,
                              child.last_error, delay)
                else:
                    log.exception("child %s crashed; restarting in %.2fs", child.name, delay)
            finally:
                child.running = False
            if time.monotonic() - began > STABLE_AFTER:
                delay = first
            child.restarts += 1
            gevent.sleep(delay)
            delay = min(MAX_BACKOFF, max(delay * 2, 0.001))

    def _publish_outcome(self, item: Any) -> None:
        if len(self.bus):
            record, outcome, _ = item
            self.bus.publish("outcome", {"id": record.id, **outcome.as_json()})

    # the Python API
    def enqueue(self, message: Mapping[str, Any], via: str | None = None) -> str:
        """Store one message (returns its id once it is durable); RouteError names a bad field."""
        return self.enqueue_many([message], via)[0]

    def enqueue_many(self, messages: Iterable[Mapping[str, Any]], via: str | None = None
                     ) -> list[str]:
        """Store messages; a repeated message_id with the same content returns the same id,
        with other content raises Conflict (a ValueError naming the message_id)."""
        return [id_ for id_, _ in self.accept(messages, via)]

    def accept(self, messages: Iterable[Mapping[str, Any]], via: str | None = None
               ) -> list[tuple[str, bool]]:
        """As enqueue_many, each id with whether it is newly stored."""
        self._check_process()
        if self.dispatcher is None:
            raise Stopping("the supervisor is not started")
        return self.dispatcher.accept(messages, via)

    def result(self, id: str) -> SendResult:
        self._check_process()
        assert self.dispatcher is not None
        return self.dispatcher.result(id)

    def status(self, id: str) -> dict[str, Any] | None:
        self._check_process()
        assert self._store is not None
        r = self._store.get(id)
        return r.as_json() if r else None

    def drain(self, session_id: str | None = None) -> dict[str, Any]:
        """Ask the CCS client to drain a session (all when None), as on CONNECTION_DRAINING."""
        ccs = self.providers.get("ccs")
        if not isinstance(ccs, Drains):
            raise LookupError("no CCS provider is running")
        sid: Any = int(session_id) if isinstance(session_id, str) and session_id.isdigit() \
            else session_id
        result = ccs.drain(sid)
        if sid is not None and result == 0:
            known = {str(row.get("id")) for row in _safe_stats(ccs).get("sessions", [])}
            if str(sid) not in known:  # KeyError: the admin API answers 404
                raise KeyError(f"no CCS session {session_id!r} (sessions: "
                               f"{', '.join(sorted(known)) or 'none'})")
        return {"drained": result if result is not None else session_id or "all"}

    @property
    def running(self) -> bool:
        """Started in this process and no stop() begun."""
        return (self.started and not self.stopped and self._stopping is None
                and self.pid == os.getpid())

    @property
    def store(self) -> Store:
        assert self._store is not None
        return self._store

    def health(self) -> dict[str, Any]:
        children = {c.name: {"running": c.running, "restarts": c.restarts,
                             "last_error": c.last_error} for c in self.children.values()}
        provs = {n: p.healthy() for n, p in self.providers.items()}
        outbox = self._outbox_health()
        ok = (self.started and not self.stopped and all(c.running for c in self.children.values())
              and (not provs or any(provs.values())) and outbox["ok"])
        return {"ok": ok, "providers": provs, "children": children, "outbox": outbox}

    def _outbox_health(self) -> dict[str, Any]:
        """A shared store (Redis) can go away while the gateway runs: say so."""
        store = self._store
        if store is None or not hasattr(store, "healthy"):
            return {"ok": True}
        up = store.healthy()
        return {"ok": up} if up else {"ok": False, "error": f"Redis unavailable: "
                                                            f"{store.last_error}"}

    def stats(self) -> dict[str, Any]:
        """node2dm-style counters per provider, plus outbox depth, in-flight and latency."""
        counts = self.store.counts()
        in_flight = self.dispatcher.in_flight() if self.dispatcher else {}
        provs = {}
        for name, p in self.providers.items():
            own = _safe_stats(p)
            row = {"uptime": self.stats_observer.uptime(), "messages_sent": 0,
                   "messages_in_queue": in_flight.get(name, 0), "backing_off": False,
                   "total_errors": 0, "rate_limited_tokens": self.feedback.rate_limited(name)
                   if self.feedback else 0, "logged_in": p.healthy(), "token_age": None}
            row.update(self.stats_observer.provider(name))
            row.update({k: v for k, v in own.items() if v is not None})
            row["healthy"] = p.healthy()
            row["dispatching"] = in_flight.get(name, 0)  # held by the gateway, awaiting outcome
            provs[name] = row
        return {
            "uptime": self.stats_observer.uptime(),
            "outbox": {**counts, "depth": counts.get("queued", 0),
                       "recovered_at_start": self.recovered},
            "in_flight": sum(in_flight.values()),
            "latency_ms": percentiles(list(self.stats_observer.latencies)),
            "events_pending": self.store.event_counts(),
            "upstream_duplicates": self.inbound.duplicates if self.inbound else 0,
            "webhook": {"posted": self.feedback.posted, "failures": self.feedback.post_failures}
            if self.feedback else {},
            "providers": provs,
            "children": {c.name: {"running": c.running, "restarts": c.restarts}
                         for c in self.children.values()},
        }

    # stopping
    def stop(self, timeout: float | None = None) -> list[str]:
        """Stop accepting, drain in-flight up to `timeout`, leave the rest queued; returns the
        ids put back in the queue. A second call waits for the first and returns the same ids;
        in a process forked after start() it only marks this copy stopped."""
        if self.pid is not None and self.pid != os.getpid():
            self.stopped = True  # the parent's sockets and files: not ours to close
            return []
        if self._stopping is not None:
            return list(self._stopping.get())
        if self.stopped or not self.started:
            self.stopped = True
            return []
        self._stopping = AsyncResult()
        try:
            left = self._stop(timeout)
        except BaseException as exc:
            self._stopping.set_exception(exc)
            raise
        self._stopping.set(left)
        return left

    def _stop(self, timeout: float | None) -> list[str]:
        timeout = self.settings["gateway.stop_timeout"] if timeout is None else timeout
        deadline = time.monotonic() + timeout
        left: list[str] = []
        if self.dispatcher is not None:
            self.dispatcher.stop_claiming()
            try:
                left = self.dispatcher.drain(timeout)
            except Exception as exc:  # e.g. a full disk: nothing is lost, it stays in flight
                log.error("could not record the last outcomes or requeue in-flight messages "
                          "(%s: %s); they stay in flight and go out again at the next start",
                          type(exc).__name__, exc)
                left = list(self.dispatcher._in_flight)
        self.stopped = True
        self.bus.close()  # ends event streams, so the admin server need not wait for them
        if self.admin is not None:
            self.admin.stop()
        self.group.kill(block=True, timeout=5)
        for name, p in reversed(list(self.providers.items())):
            try:
                p.stop(max(0.0, deadline - time.monotonic()))
            except Exception:
                log.exception("provider %s failed to stop", name)
        if self.feedback is not None and self.feedback.webhook is not None:
            self.feedback.webhook.close()
        if self._own_store and self._store is not None:
            try:
                self._store.close()
            except Exception as exc:
                log.error("closing the outbox failed: %s: %s", type(exc).__name__, exc)
        if self._lock is not None:
            self._lock.release()
        return left


def redis_options(s: Settings) -> dict[str, Any]:
    return {"reclaim_idle": s["outbox.reclaim_idle"], "heartbeat": s["outbox.heartbeat"],
            "stream_maxlen": s["outbox.stream_maxlen"], "record_ttl": s["outbox.record_ttl"],
            "shards": s["outbox.shards"], "password": s["outbox.password"],
            "ca_file": s["ccs.ca_file"], "dedup_horizon": s["outbox.dedup_horizon"]}


def _safe_stats(p: Provider) -> dict[str, Any]:
    try:
        return dict(p.stats())
    except Exception as exc:  # stats must never take the gateway down
        return {"stats_error": f"{type(exc).__name__}: {exc}"}
