"""One gateway per process inside a web server (gunicorn's gevent workers, gevent.pywsgi).

Nothing is opened at import or construction, so an app module holding an `Embedded` can be
imported before a pre-fork server forks. start() builds the Supervisor in the process that calls
it (each worker, after the fork); stop() ends it there. Both may be called again: start() in a
process that already runs one returns it, stop() in a process that never started one does
nothing (gunicorn also calls worker_exit in the master).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ccs.gateway.dispatcher import Stopping
from ccs.gateway.settings import Settings
from ccs.gateway.supervisor import Supervisor


class Embedded:
    def __init__(self, setup: Callable[[Supervisor], None] | None = None,
                 settings: Callable[[], Settings] = Settings.load) -> None:
        """`setup(sup)` runs before each start (add upstream/receipt handlers there);
        `settings()` gives the settings when start() is not handed any (CCS_* and ccs.toml)."""
        self._setup = setup
        self._settings = settings
        self._sup: Supervisor | None = None

    def _own(self) -> Supervisor | None:
        sup = self._sup
        return sup if sup is not None and sup.pid == os.getpid() else None

    def start(self, settings: Settings | None = None) -> Supervisor:
        """Start this process's gateway (once); ConfigError names a bad setting."""
        sup = self._own()
        if sup is not None and not sup.stopped:
            return sup
        sup = Supervisor(settings if settings is not None else self._settings())
        if self._setup is not None:
            self._setup(sup)
        sup.start()
        self._sup = sup
        return sup

    @property
    def running(self) -> bool:
        """A gateway started in this process and not stopping."""
        sup = self._own()
        return sup is not None and sup.running

    @property
    def supervisor(self) -> Supervisor:
        """This process's running gateway; Stopping when there is none (not started after the
        fork, or stopping)."""
        sup = self._own()
        if sup is None or not sup.running:
            raise Stopping("the gateway is not running in this process")
        return sup

    def stop(self, timeout: float | None = None) -> list[str]:
        """Stop this process's gateway; returns the ids put back in the queue."""
        sup = self._own()
        return sup.stop(timeout) if sup is not None else []
