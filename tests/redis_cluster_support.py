"""Private Redis servers for tests: a 3-master cluster with a replica each (session-wide), a TLS
server with the test CA, and a server with an append-only file that tests kill and restart."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from ccs.testing.redis_servers import RedisCluster, RedisServer


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisCluster]:
    """Three masters, one replica each, on free loopback ports (tests use their own prefix)."""
    c = RedisCluster(masters=3, replicas=1).start()
    yield c
    c.stop()


@pytest.fixture
def cluster_url(cluster: RedisCluster) -> str:
    return cluster.url(f"ct-{secrets.token_hex(4)}")


@pytest.fixture(scope="session")
def tls_redis(pki: Any) -> Iterator[RedisServer]:
    """A redis-server speaking only TLS (the test CA's server certificate), with a password."""
    s = RedisServer(tls=pki, password="s3cret-pw").start()
    yield s
    s.stop()


@pytest.fixture
def crash_redis() -> Iterator[RedisServer]:
    """A redis-server of this test's own, every write in its append-only file before the reply,
    so a SIGKILL and restart loses nothing acknowledged."""
    s = RedisServer().start()
    yield s
    s.stop()
