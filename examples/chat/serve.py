"""The chat app under gevent.pywsgi, one process, any outbox (SQLite by default):

    python -m examples.chat.serve --port 8000

Not monkey-patched: the gateway's sockets are gevent's own. SIGTERM or SIGINT: stop accepting,
finish the requests in progress, then stop the gateway (unsent messages stay queued).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any

import gevent
from gevent.event import Event
from gevent.pool import Pool
from gevent.pywsgi import WSGIServer

from ccs.gateway.outbox import shown
from ccs.gateway.settings import ConfigError
from examples.chat.app import app, gateway

REQUEST_GRACE = 10.0  # seconds requests in progress get after a stop signal


class Active:
    """WSGI middleware counting requests in progress: a stop waits for those, not for idle
    keep-alive connections."""

    def __init__(self, wsgi: Any) -> None:
        self.wsgi = wsgi
        self.count = 0
        self.idle = Event()
        self.idle.set()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.count += 1
        self.idle.clear()
        try:
            return self.wsgi(environ, start_response)  # Flask's bodies are built by now
        finally:
            self.count -= 1
            if not self.count:
                self.idle.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m examples.chat.serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    args = parser.parse_args(argv)
    try:
        sup = gateway.start()
    except ConfigError as exc:
        print(f"chat: {exc}", file=sys.stderr)
        return 2
    active = Active(app)
    server = WSGIServer((args.host, args.port), active, spawn=Pool(1000), log=None)
    server.start()
    # one JSON line on stdout: where it listens (tests and scripts read the port from it)
    print(json.dumps({"url": f"http://{args.host}:{server.server_port}",
                      "outbox": shown(sup.settings["outbox.path"])}), flush=True)
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait()
    began = time.monotonic()
    server.close()  # no new connections
    active.idle.wait(timeout=REQUEST_GRACE)  # requests in progress finish first
    server.stop(timeout=1)  # then idle keep-alive connections are closed
    left = gateway.stop()
    print(f"chat: stopped in {time.monotonic() - began:.2f}s; {len(left)} in-flight messages "
          f"left queued for the next start", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
