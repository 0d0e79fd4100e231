"""gunicorn settings for the chat app: from the repository root,

    CCS_OUTBOX=redis://127.0.0.1:6379/0?prefix=chat \\
        gunicorn -c examples/chat/gunicorn.conf.py -b 127.0.0.1:8000 -w 2

Each worker starts its own gateway after the fork and stops it on the way out. Nothing from the
app or ccs' gevent side is imported here: this file also runs in the master, before the fork and
before the gevent worker monkey-patches the standard library.
"""

import sys
import time
from typing import Any

wsgi_app = "examples.chat.app:app"
worker_class = "gevent"
worker_connections = 1000
graceful_timeout = 30  # requests, then the gateway's stop, must fit in it (and in `timeout`)
control_socket_disable = True  # gunicorn >= 24: no shared control socket in $HOME
STOP_MARGIN = 2.0  # seconds kept for closing the outbox and exiting


def on_starting(server: Any) -> None:
    """Several workers need an outbox they can share: refuse a SQLite file up front."""
    from ccs.gateway.outbox import is_redis
    from ccs.gateway.settings import ConfigError, Settings

    try:
        path = Settings.load()["outbox.path"]
    except ConfigError as exc:
        raise RuntimeError(f"ccs gateway settings: {exc}") from None
    if server.cfg.workers > 1 and not is_redis(path):
        raise RuntimeError(
            f"outbox.path: {server.cfg.workers} workers cannot share the SQLite outbox {path} "
            f"(one gateway process per file); set CCS_OUTBOX=redis://... or run one worker")


def post_worker_init(worker: Any) -> None:
    """After the fork and gevent's monkey-patching: start this worker's gateway."""
    import gevent

    from ccs.gateway.settings import ConfigError
    from examples.chat.app import gateway

    try:
        gateway.start()
    except ConfigError as exc:
        worker.log.error("ccs gateway did not start: %s", exc)
        sys.exit(3)  # gunicorn's "worker failed to boot": the master stops instead of looping
    worker.ccs_told_at = None

    def watch() -> None:  # gunicorn has no hook for "told to stop"; it notices within a second too
        while worker.alive:
            gevent.sleep(0.2)
        worker.ccs_told_at = time.monotonic()

    gevent.spawn(watch)


def worker_exit(server: Any, worker: Any) -> None:
    """After the last request: stop the gateway within what is left of graceful_timeout.
    Unsent messages go back to the shared queue for the other workers."""
    app = sys.modules.get("examples.chat.app")
    if app is None or not app.gateway.running:
        return  # the master (it calls this hook too), or a worker that never started one
    told = getattr(worker, "ccs_told_at", None) or time.monotonic()
    left_s = worker.cfg.graceful_timeout - (time.monotonic() - told) - STOP_MARGIN
    stop_timeout = app.gateway.supervisor.settings["gateway.stop_timeout"]
    started = time.monotonic()
    left = app.gateway.stop(timeout=max(0.0, min(stop_timeout, left_s)))
    worker.log.info("ccs gateway stopped in %.2fs; %d in-flight messages put back",
                    time.monotonic() - started, len(left))
