"""Shared test helpers: run the console as a real subprocess, wait on conditions (never sleep)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import gevent
from gevent import subprocess as gsubprocess

ROOT = Path(__file__).resolve().parents[1]


def ccs_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a `ccs` subprocess: this checkout first on the import path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCS_")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra or {})
    return env


def run_ccs(args: list[str], env: Mapping[str, str] | None = None, input: str | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m ccs ARGS` to completion and capture its output.

    gevent's subprocess waits cooperatively, so an emulator in this process keeps serving.
    """
    return gsubprocess.run([sys.executable, "-m", "ccs", *args], env=ccs_env(env), input=input,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0,
               what: str = "condition") -> None:
    """Yield to other greenlets until predicate() holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        gevent.sleep(0.005)


def stop_gateways(killed: subprocess.Popen, survivor: subprocess.Popen) -> str:
    """SIGTERM whichever of two `ccs run` processes still runs; wait for both; the survivor's
    stderr."""
    for p in (killed, survivor):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    err = survivor.communicate(timeout=30)[1]
    killed.communicate(timeout=30)
    return err
