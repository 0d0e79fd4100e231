"""A test-only plugin: `CCS_PLUGINS=tests.plugin_local` makes every provider name a LocalProvider.

Used by the console tests (`ccs run` in a subprocess) until the real providers are on main.
CCS_TEST_DELAY adds a per-message delay (seconds) so a test can kill the process mid-run.
"""

from __future__ import annotations

import os

from ccs.gateway import providers
from ccs.gateway.settings import PROVIDER_NAMES
from tests.providers import LocalProvider

for _name in PROVIDER_NAMES:
    providers.register(_name, lambda env, n=_name: LocalProvider(
        n, delay=float(os.environ.get("CCS_TEST_DELAY", "0"))))


def _recorder(path: str):
    def record(message: dict) -> None:
        with open(path, "a") as f:  # one line per message the "service" received
            f.write(f"{message.get('message_id')}\n")
    return record


if os.environ.get("CCS_TEST_RECORD"):
    _record = _recorder(os.environ["CCS_TEST_RECORD"])

    def _make(env, n):
        p = LocalProvider(n, delay=float(os.environ.get("CCS_TEST_DELAY", "0")))
        p.on_send = _record
        return p

    for _name in PROVIDER_NAMES:
        providers.register(_name, lambda env, n=_name: _make(env, n))
