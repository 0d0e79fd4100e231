"""Private redis-server processes for tests and scripts: one server (optionally TLS, with an
append-only file so a SIGKILL loses nothing acknowledged) or a Redis Cluster with replicas.

Each process listens on a free loopback port with its own temporary directory; nothing else on
the machine is touched. Needs `redis-server` on PATH (Debian's build has TLS).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import gevent
import redis


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        gevent.sleep(0.02)  # lets a gateway in this process run meanwhile


class PortTaken(RuntimeError):
    """Another process bound the free port picked for redis-server first."""


class RedisServer:
    """One redis-server on 127.0.0.1 (plain port; with `tls` a TLS port instead)."""

    def __init__(self, directory: Path | None = None, *, tls: Any = None, cluster: bool = False,
                 appendonly: bool = True, password: str | None = None, port: int = 0) -> None:
        self._made_dir = directory is None  # removed by stop()
        self.dir = Path(directory or tempfile.mkdtemp(prefix="ccs-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.bus_port = free_port() if cluster else 0
        self.tls = tls  # a ccs.testing.pki.TestPKI
        self.cluster = cluster
        self.appendonly = appendonly
        self.password = password
        self.proc: subprocess.Popen[bytes] | None = None
        self._fresh = not port  # its port was picked here and never used yet

    def args(self) -> list[str]:
        a = ["redis-server", "--bind", "127.0.0.1", "--dir", str(self.dir), "--save", "",
             "--logfile", str(self.dir / "redis.log"), "--protected-mode", "no"]
        if self.tls is not None:
            a += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
                  self.tls.cert_file, "--tls-key-file", self.tls.key_file, "--tls-ca-cert-file",
                  self.tls.ca_file, "--tls-auth-clients", "no"]
            if self.cluster:  # the bus: nodes connect to each other with the client certificate
                a += ["--tls-cluster", "yes", "--tls-replication", "yes",
                      "--tls-client-cert-file", self.tls.client_cert_file,
                      "--tls-client-key-file", self.tls.client_key_file]
        else:
            a += ["--port", str(self.port)]
        if self.appendonly:  # every write on disk before the reply: a SIGKILL loses nothing
            a += ["--appendonly", "yes", "--appendfsync", "always"]
        if self.cluster:  # the bus port given: port + 10000 may not exist
            a += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                  "--cluster-node-timeout", "2000", "--cluster-port", str(self.bus_port)]
        if self.password:
            a += ["--requirepass", self.password, "--masterauth", self.password]
        return a

    def client(self, **kw: Any) -> redis.Redis:
        if self.tls is not None:
            kw.update(ssl=True, ssl_ca_certs=self.tls.ca_file)
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           decode_responses=True, socket_timeout=5, **kw)

    def start(self) -> RedisServer:
        """Start (or start again, on the same port and directory). A port picked here that
        another process took meanwhile is picked again, before the first start only."""
        for attempt in range(3):
            try:
                return self._start()
            except PortTaken:
                if not self._fresh or attempt == 2:
                    raise
                self.port = free_port()
                if self.cluster:
                    self.bus_port = free_port()
        raise AssertionError("unreachable")

    def _start(self) -> RedisServer:
        self.proc = subprocess.Popen(self.args(), cwd=self.dir, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        c = self.client()
        proc = self.proc

        def up() -> bool:
            if proc.poll() is not None:
                log = self.log()
                if "Address already in use" in log[-2000:]:
                    raise PortTaken(log[-600:])
                raise RuntimeError(f"redis-server exited: {log[-600:]}")
            return bool(c.ping())

        try:
            _wait(up, 20, f"redis-server on port {self.port}")
        except BaseException:
            self.kill()
            raise
        finally:
            c.close()
        self._fresh = False
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown save, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._made_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        p = self.dir / "redis.log"
        return p.read_text(errors="replace") if p.exists() else ""


class RedisCluster:
    """`masters` masters (the slots split evenly) with `replicas` replicas each."""

    def __init__(self, masters: int = 3, replicas: int = 0, *, tls: Any = None,
                 password: str | None = None) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ccs-redis-cluster-"))
        n = masters * (1 + replicas)
        self.nodes = [RedisServer(self.root / str(i), tls=tls, cluster=True, password=password)
                      for i in range(n)]
        self.masters = masters
        self.replicas = replicas
        self.tls = tls
        self.password = password

    def url(self, prefix: str, scheme: str | None = None) -> str:
        scheme = scheme or ("rediss+cluster" if self.tls is not None else "redis+cluster")
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.nodes[:self.masters])
        return f"{scheme}://{hosts}/?prefix={prefix}"

    def start(self) -> RedisCluster:
        try:
            return self._start()
        except BaseException:
            self.stop()  # no redis-server left behind
            raise

    def _start(self) -> RedisCluster:
        for s in self.nodes:
            s.start()
        clients = [s.client() for s in self.nodes]
        try:
            ids = [c.execute_command("CLUSTER MYID") for c in clients]
            per = 16384 // self.masters
            for i in range(self.masters):
                last = 16383 if i == self.masters - 1 else (i + 1) * per - 1
                clients[i].execute_command("CLUSTER ADDSLOTSRANGE", i * per, last)
            for c in clients[1:]:
                c.execute_command("CLUSTER MEET", "127.0.0.1", self.nodes[0].port,
                                  self.nodes[0].bus_port)
            _wait(lambda: all(len(c.execute_command("CLUSTER NODES")) == len(ids)
                              for c in clients), 60, "every node to know every other")
            for j, c in enumerate(clients[self.masters:]):
                c.execute_command("CLUSTER REPLICATE", ids[j % self.masters])
            _wait(lambda: all(c.cluster("info")["cluster_state"] == "ok" for c in clients),
                  60, "cluster_state:ok on every node")
            if self.replicas:
                _wait(lambda: all(c.info("replication")["master_link_status"] == "up"
                                  for c in clients[self.masters:]), 60, "replicas in sync")
        finally:
            for c in clients:
                c.close()
        return self

    def master_of(self, key: str) -> RedisServer:
        """The server that owns `key`'s slot now."""
        c = self.nodes[0].client()
        try:
            slot = c.execute_command("CLUSTER KEYSLOT", key)
            for start, end, master, *_ in c.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    port = int(master[1])
                    return next(s for s in self.nodes if s.port == port)
        finally:
            c.close()
        raise LookupError(key)

    def failover(self, master: RedisServer, timeout: float = 30) -> RedisServer:
        """Promote a replica of `master` (CLUSTER FAILOVER: the replica takes over once it has
        every write); returns the new master."""
        mc = master.client()
        try:
            my = mc.execute_command("CLUSTER MYID")
        finally:
            mc.close()
        for s in self.nodes:
            c = s.client()
            try:
                role = c.info("replication")
                if role["role"] == "slave" and role.get("master_port") == master.port:
                    c.execute_command("CLUSTER FAILOVER")
                    _wait(lambda c=c: c.info("replication")["role"] == "master", timeout,
                          "the replica to become master")
                    _wait(lambda: all(self._owner_known(x, my) for x in self.nodes), timeout,
                          "every node to see the new master")
                    return s
            finally:
                c.close()
        raise LookupError(f"no replica of port {master.port}")

    @staticmethod
    def _owner_known(s: RedisServer, old_id: str) -> bool:
        c = s.client()
        try:
            return any(n["node_id"] == old_id and "slave" in n["flags"]
                       for n in c.execute_command("CLUSTER NODES").values())
        finally:
            c.close()

    def stop(self) -> None:
        for s in self.nodes:
            s.stop()
        shutil.rmtree(self.root, ignore_errors=True)


__all__ = ["RedisCluster", "RedisServer", "free_port"]
