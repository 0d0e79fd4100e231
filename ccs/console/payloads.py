"""What `ccs send` puts on the wire for each provider, from one set of console options.

Each builder returns the stored-message JSON the gateway uses for that provider (see
ccs/gateway/providers.py); `ccs.gateway.providers.adapter_for` turns it into the provider's own
message, so a message sent from the console and one queued in the gateway are built the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ccs import registry
from ccs.gateway.router import ccs_to_fcm_v1
from ccs.xmpp.message import build_message

VIAS = ("ccs", "http", "legacy", "c2dm", "mpns", "apns", "apns-binary")
FCM_VIAS = ("ccs", "http", "legacy")  # the ones that take --topic / --condition


@dataclass(frozen=True)
class Options:
    data: dict[str, Any] | None = None
    title: str | None = None
    body: str | None = None
    collapse_key: str | None = None
    ttl: int | None = None
    priority: str | None = None  # normal | high | 10 | 5 | 1
    delivery_receipt: bool = False
    dry_run: bool = False
    condition: str | None = None
    # APNs
    alert: str | None = None
    badge: int | None = None
    sound: str | None = None
    push_type: str | None = None
    expiration: int | None = None
    collapse_id: str | None = None
    apns_topic: str | None = None  # the default topic plus --topic-suffix, when given
    # MPNS
    mpns_param: str | None = None


class OptionError(ValueError):
    """An option that does not fit the chosen provider; `option` names it."""

    def __init__(self, option: str, reason: str) -> None:
        super().__init__(f"{option}: {reason}")
        self.option = option


def _fcm_priority(p: str | None) -> str | None:
    if p is None or p in ("normal", "high"):
        return p
    if p == "10":
        return "high"
    if p == "5":
        return "normal"
    raise OptionError("--priority", f"{p} is an APNs priority; FCM takes normal or high")


def ccs_json(target: str | None, o: Options) -> dict[str, Any]:
    """CCS JSON (also the legacy HTTP body), validated by ccs.xmpp.message."""
    note = {k: v for k, v in (("title", o.title), ("body", o.body)) if v is not None}
    return build_message(
        target, condition=o.condition, data=o.data, notification=note or None,
        collapse_key=o.collapse_key, time_to_live=o.ttl, priority=_fcm_priority(o.priority),
        delivery_receipt_requested=o.delivery_receipt or None, dry_run=o.dry_run or None)


def fcm_v1_json(target: str | None, o: Options) -> dict[str, Any]:
    if o.delivery_receipt:
        raise OptionError("--delivery-receipt", "FCM HTTP v1 has no delivery receipts")
    msg = ccs_to_fcm_v1(ccs_json(target, o))
    if o.dry_run:
        msg["validate_only"] = True
    return msg


def legacy_json(target: str | None, o: Options) -> dict[str, Any]:
    msg = ccs_json(target, o)
    msg.pop("delivery_receipt_requested", None)
    return msg


def c2dm_json(target: str | None, o: Options) -> dict[str, Any]:
    for opt, value in (("--title", o.title), ("--body", o.body), ("--ttl", o.ttl),
                       ("--priority", o.priority), ("--condition", o.condition)):
        if value is not None:
            raise OptionError(opt, "C2DM has no such field")
    # C2DM requires a collapse key; node2dm's callers always gave one.
    msg: dict[str, Any] = {"to": target, "collapse_key": o.collapse_key or "ccs"}
    if o.data:
        msg["data"] = o.data
    return msg


def mpns_json(target: str | None, o: Options) -> dict[str, Any]:
    if o.data and (o.title or o.body):
        raise OptionError("--data", "MPNS sends a toast (--title/--body) or raw data, not both")
    if o.data:
        import json

        return {"to": target, "raw": json.dumps(o.data, separators=(",", ":"))}
    toast = {k: v for k, v in (("text1", o.title), ("text2", o.body),
                               ("param", o.mpns_param)) if v is not None}
    if not toast:
        raise OptionError("--title", "give --title/--body for a toast, or --data for raw")
    return {"to": target, "toast": toast}


def apns_json(target: str | None, o: Options) -> dict[str, Any]:
    msg: dict[str, Any] = {"to": target}
    if o.title or o.body:
        alert = {k: v for k, v in (("title", o.title), ("body", o.body or o.alert))
                 if v is not None}
        msg["alert"] = alert
    elif o.alert is not None:
        msg["alert"] = o.alert
    priority = {"high": 10, "normal": 5}.get(o.priority or "", None)
    if priority is None and o.priority is not None:
        priority = int(o.priority)
    for key, value in (("badge", o.badge), ("sound", o.sound), ("push_type", o.push_type),
                       ("expiry", o.expiration), ("collapse_id", o.collapse_id),
                       ("priority", priority)):
        if value is not None:
            msg[key] = value
    if o.data:
        msg["payload"] = dict(o.data)
    if o.apns_topic:
        msg["topic"] = o.apns_topic
    return msg


def apns_binary_json(target: str | None, o: Options) -> dict[str, Any]:
    """The binary interface carries token, payload, expiry and priority (10 or 5) only."""
    for opt, value in (("--push-type", o.push_type), ("--collapse-id", o.collapse_id),
                       ("--topic-suffix", o.apns_topic)):
        if value is not None:
            raise OptionError(opt, "the APNs binary interface has no such field")
    if o.priority == "1":
        raise OptionError("--priority", "the APNs binary interface takes 10 or 5")
    return apns_json(target, o)


BUILDERS: dict[str, Callable[[str | None, Options], dict[str, Any]]] = {
    "ccs": ccs_json, "http": fcm_v1_json, "legacy": legacy_json, "c2dm": c2dm_json,
    "mpns": mpns_json, "apns": apns_json, "apns-binary": apns_binary_json,
}


def builder_for(via: str) -> Callable[[str | None, Options], dict[str, Any]] | None:
    """How `ccs send` builds provider `via`'s stored message: a built-in builder, or the one a
    plugin's declaration gives; None when there is neither."""
    declared = registry.spec(via)
    if declared is not None and declared.payload is not None:
        return declared.payload
    return BUILDERS.get(via)


def sendable() -> list[str]:
    """Every provider `ccs send --via` takes now (plugins loaded with the settings)."""
    return [*VIAS, *(s.name for s in registry.specs()
                     if s.payload is not None and s.name not in VIAS)]


def endpoints(via: str, first_target: str | None,
              settings: Mapping[str, Any] | None = None) -> list[tuple[str, int]]:
    """Where provider `via` connects, to tell "could not reach the service" (exit 3) apart."""
    declared = registry.spec(via)
    if declared is not None and declared.endpoints is not None:
        return declared.endpoints(settings or {}, first_target)
    return []
