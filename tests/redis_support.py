"""Redis for tests: the real server on 127.0.0.1:6379, a unique key prefix per test, cleaned up."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest
import redis

REDIS = os.environ.get("CCS_TEST_REDIS", "redis://127.0.0.1:6379/0")


def cleanup(prefix: str) -> None:
    r = redis.Redis.from_url(REDIS)
    keys = list(r.scan_iter(match=f"{{{prefix}*", count=1000))  # {P}:... and {P:N}:...
    for i in range(0, len(keys), 1000):
        r.delete(*keys[i:i + 1000])
    r.close()


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A redis:// outbox URL with a key prefix no other test uses; its keys are deleted after."""
    prefix = f"ccstest-{secrets.token_hex(6)}"
    yield f"{REDIS}?prefix={prefix}"
    cleanup(prefix)
