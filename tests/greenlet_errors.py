"""A fixture that fails a test when any greenlet died of an unhandled exception during it."""

from __future__ import annotations

import io
from collections.abc import Iterator

import gevent
import pytest


@pytest.fixture(autouse=True)
def no_greenlet_errors() -> Iterator[None]:
    """gevent writes each unhandled greenlet error to the hub's exception_stream: capture it."""
    hub = gevent.get_hub()
    saved, stream = hub.exception_stream, io.StringIO()
    hub.exception_stream = stream
    try:
        yield
    finally:
        hub.exception_stream = saved
    assert not stream.getvalue(), f"a greenlet died:\n{stream.getvalue()}"
