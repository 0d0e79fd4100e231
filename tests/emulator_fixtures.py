"""The make_emu fixture shared by the emulator test modules (loaded through pytest_plugins)."""

from __future__ import annotations

import pytest

from ccs.xmpp.emulator import CcsEmulator
from tests.ccs_raw import RawCcs


@pytest.fixture
def make_emu(pki):
    """make_emu(**options) starts a CcsEmulator (sender 1234, key "secret");
    make_emu.client(emu) logs a RawCcs in. Everything is stopped after the test."""
    started: list[CcsEmulator] = []
    clients: list[RawCcs] = []

    def make(**options):
        emu = CcsEmulator(sender_id="1234", server_key="secret", pki=pki, **options).start()
        started.append(emu)
        return emu

    def client(emu, login=True, resource="test", **kw):
        c = RawCcs(emu, **kw)
        clients.append(c)
        if login:
            c.login(resource)
        return c

    make.client = client
    yield make
    for c in clients:
        c.close()
    for emu in started:
        emu.stop()
