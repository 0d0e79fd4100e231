"""Emulator settings and run-time faults: checked by name at construction, settable later."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

FLOW_ACTIONS = ("close", "nack", "record")


@dataclass
class Faults:
    """Faults to inject; every field may be changed while the emulator runs."""

    drain_after: int | None = None  # send CONNECTION_DRAINING after N downstream on a connection
    drop_after: int | None = None  # abort TCP on a connection's Nth downstream, unanswered
    unavailable_every: int | None = None  # nack every Kth downstream SERVICE_UNAVAILABLE
    ack_delay: float = 0.0  # seconds to hold every ack/nack
    refuse_auth: bool = False  # every SASL attempt fails not-authorized
    stall: bool = False  # ignore everything received; write nothing (dead server)

    def check(self) -> None:
        for name in ("drain_after", "drop_after", "unavailable_every"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, not {value!r}")
        if not isinstance(self.ack_delay, int | float) or self.ack_delay < 0:
            raise ValueError(f"ack_delay must be a number of seconds >= 0, not {self.ack_delay!r}")


@dataclass
class Settings:
    """How the emulated CCS behaves where the references leave a choice."""

    keepalive: float | None = None  # seconds between whitespace keepalives (None: off)
    prefixed_fraction: float = 0.25  # share of outbound gcm stanzas sent as <data:gcm>
    strict_flow: bool = True  # a 101st pending downstream is a protocol violation
    flow_violation: str = "close"  # close (stream error) | nack (SERVICE_UNAVAILABLE) | record
    max_pending: int = 100
    strict_fields: bool = False  # nack unknown top-level downstream fields INVALID_JSON
    upstream_redeliver: float = 10.0  # seconds before an un-acked upstream is sent again
    receipt_redeliver: float = 10.0  # seconds before an un-acked receipt is sent again
    receipt_delay: float = 0.0  # seconds between an ack and its delivery receipt
    drain_grace: float = 0.5  # seconds after drain (and no pending) before the server closes
    category: str = "com.example.app"  # package name in receipts when none was given
    max_stanza: int = 256 * 1024
    max_connections: int = 1000  # authenticated connections per sender (GCM documentation)
    max_auth_failures: int = 3  # SASL failures on one stream before it is closed
    seed: int = 0  # for the plain/prefixed choice, so runs repeat
    record_limit: int | None = None  # bound the record's lists (None: keep everything)

    def check(self) -> None:
        if self.flow_violation not in FLOW_ACTIONS:
            raise ValueError(f"flow_violation must be one of {FLOW_ACTIONS}, "
                             f"not {self.flow_violation!r}")
        if not 0.0 <= self.prefixed_fraction <= 1.0:
            raise ValueError("prefixed_fraction must be between 0 and 1")
        for name in ("upstream_redeliver", "receipt_redeliver", "drain_grace"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 seconds")
        if self.keepalive is not None and self.keepalive <= 0:
            raise ValueError("keepalive must be > 0 seconds or None")


FAULT_NAMES = frozenset(f.name for f in fields(Faults))
SETTING_NAMES = frozenset(f.name for f in fields(Settings))


def split_options(options: dict[str, Any]) -> tuple[Faults, Settings]:
    """Sort keyword options into Faults and Settings; an unknown name is an error naming it."""
    unknown = sorted(set(options) - FAULT_NAMES - SETTING_NAMES)
    if unknown:
        raise TypeError(f"unknown CcsEmulator option(s): {', '.join(unknown)}")
    faults = Faults(**{k: v for k, v in options.items() if k in FAULT_NAMES})
    settings = Settings(**{k: v for k, v in options.items() if k in SETTING_NAMES})
    faults.check()
    settings.check()
    return faults, settings
