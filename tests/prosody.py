"""A private Prosody (Debian's package: an XMPP server we did not write) for interop tests.

Each instance gets a temporary config and data directory, one direct-TLS c2s port on loopback
(the throw-away test certificate, VirtualHost "localhost"), runs in the foreground as a
subprocess and logs at debug level to a file. Readiness is a verified TLS handshake: only our
instance holds a certificate signed by the test CA, so a foreign listener cannot pass for it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket as stdsocket
import ssl as stdssl
import threading
import time
from pathlib import Path
from typing import Any

import gevent
import pytest
import slixmpp
from gevent import socket, subprocess
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from ccs.testing.pki import TestPKI
from ccs.transport.tls import client_context
from tests.helpers import wait_until

HOST = "127.0.0.1"
DOMAIN = "localhost"
GCM = "{google:mobile:data}gcm"

CONFIG = """\
-- written by tests/prosody.py for one test run
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
run_as_root = true
prosody_user = "{user}"
interfaces = {{ "{host}" }}
c2s_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_direct_tls_ports = {{ {port} }}
-- no SNI for an IP address: the default certificate of the direct-TLS port
c2s_direct_tls_ssl = {{ certificate = "{cert}", key = "{key}" }}
certificates = "{dir}/certs"
modules_enabled = {{ "saslauth", "tls", "roster", "disco", "ping" }}
-- no offline storage: a message for an account with no available resource bounces
modules_disabled = {{ "s2s", "offline" }}
authentication = "internal_plain"
storage = "internal"
log = {{ debug = "{dir}/prosody.log" }}

VirtualHost "{domain}"
"""


def missing_reason() -> str | None:
    """Why Prosody cannot run here, or None."""
    for tool in ("prosody", "prosodyctl"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: apt-get install prosody)"
    return None


def require_prosody() -> None:
    """Skip without Prosody on a developer machine; fail in CI (CI=true), which installs it."""
    reason = missing_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true but {reason}; .ci/run installs it")
    pytest.skip(reason)


def free_port() -> int:
    """A port the kernel just handed out (bound to 0, then released)."""
    with stdsocket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Prosody:
    """One Prosody process: start(), register(), stop(); the port survives a restart."""

    def __init__(self, directory: Path, pki: TestPKI) -> None:
        self.directory = directory
        self.pki = pki
        self.host = HOST
        self.domain = DOMAIN
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.config = directory / "prosody.cfg.lua"
        self.log_file = directory / "prosody.log"
        certs = directory / "certs"
        certs.mkdir(parents=True, exist_ok=True)
        # Prosody finds a host's certificate by name (for SNI "localhost"): <host>.crt/.key
        shutil.copy(pki.cert_file, certs / f"{DOMAIN}.crt")
        shutil.copy(pki.key_file, certs / f"{DOMAIN}.key")

    def _write_config(self) -> None:
        user = "root" if os.geteuid() == 0 else os.environ.get("USER", "prosody")
        self.config.write_text(CONFIG.format(
            dir=self.directory, user=user, host=HOST, port=self.port, domain=DOMAIN,
            cert=self.pki.cert_file, key=self.pki.key_file))

    def register(self, user: str, password: str) -> None:
        if not self.config.exists():
            self._write_config()
        subprocess.run(["prosodyctl", "--config", str(self.config), "register", user, DOMAIN,
                        password], check=True, capture_output=True, timeout=30)

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self, timeout: float = 15.0) -> None:
        """Start on the current port (a restart) or on a fresh one, retrying on a collision."""
        keep = self.port != 0
        for _attempt in range(5):
            if not keep:
                self.port = free_port()
            self._write_config()
            start = len(self.log())
            with open(self.directory / "stderr.txt", "ab") as err:
                self.proc = subprocess.Popen(["prosody", "-F", "--config", str(self.config)],
                                             stdout=subprocess.DEVNULL, stderr=err)
            if self._wait_ready(start, timeout):
                return
            self.stop()
            if keep:
                break
        raise RuntimeError(f"prosody did not start; log tail:\n{self.log()[-3000:]}")

    def _wait_ready(self, log_start: int, timeout: float) -> bool:
        """True once a verified TLS handshake succeeds; False if the port was taken."""
        ctx = client_context(self.pki.ca_file)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                err = (self.directory / "stderr.txt").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prosody exited: {err}\n{self.log()[log_start:][-3000:]}")
            if "Failed to open server port" in self.log()[log_start:]:
                return False
            try:
                with socket.create_connection((HOST, self.port), timeout=1) as raw:
                    ctx.wrap_socket(raw, server_hostname=DOMAIN).close()
                return True
            except OSError:  # ssl.SSLError is an OSError
                gevent.sleep(0.02)  # polling a condition: the listener is not up yet
        raise RuntimeError(f"prosody not ready in {timeout}s:\n{self.log()[log_start:][-3000:]}")

    def stop(self, timeout: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class SlixPeer:
    """slixmpp's ClientXMPP (a second independent implementation) logged in to Prosody, on its
    own asyncio loop in a thread; the gevent hub keeps running while tests wait on it."""

    def __init__(self, prosody: Prosody, user: str, password: str, resource: str = "slix"):
        self.prosody = prosody
        self.jid = f"{user}@{DOMAIN}/{resource}"
        self.password = password
        self.gcm: list[str] = []  # text of each gcm element received, in arrival order
        self.ready = threading.Event()
        self.failure: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: slixmpp.ClientXMPP | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def start(self, timeout: float = 10.0) -> SlixPeer:
        self._thread.start()
        wait_until(lambda: self.ready.is_set() or self.failure is not None, timeout,
                   "slixmpp session start")
        if self.failure:
            raise AssertionError(f"slixmpp: {self.failure}")
        return self

    def _main(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            c = self._client = slixmpp.ClientXMPP(self.jid, self.password)
            c.enable_direct_tls, c.enable_starttls, c.enable_plaintext = True, False, False
            c.ssl_context = stdssl.create_default_context(cafile=self.prosody.pki.ca_file)
            c.register_plugin("xep_0199")
            c.register_handler(Callback("gcm", MatchXPath(f"{{jabber:client}}message/{GCM}"),
                                        lambda msg: self.gcm.append(msg.xml.find(GCM).text)))

            def started(_: Any) -> None:
                c.send_presence()  # available, priority 0: a bare-JID message may come here
                self.ready.set()

            c.add_event_handler("session_start", started)
            c.add_event_handler("failed_all_auth",
                                lambda _: setattr(self, "failure", "authentication failed"))
            c.connect(self.prosody.host, self.prosody.port)
            loop.run_until_complete(c.disconnected)
        except BaseException as exc:  # noqa: BLE001 - reported to the test's thread
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def ping(self, jid: str, timeout: float = 5.0) -> Any:
        """XEP-0199 ping from this client to `jid`; the reply iq (raises on an error reply)."""
        assert self._loop is not None and self._client is not None
        client = self._client

        async def ping() -> Any:
            return await client.plugin["xep_0199"].send_ping(jid, timeout=timeout)

        fut = asyncio.run_coroutine_threadsafe(ping(), self._loop)
        wait_until(fut.done, timeout + 2, f"ping reply from {jid}")
        return fut.result()

    def stop(self) -> None:
        if self._loop is not None and self._client is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._client.disconnect)
            wait_until(lambda: not self._thread.is_alive(), 10, "slixmpp thread end")
