"""What the emulated CCS does with each gcm message a client sends: ack, nack, errors, receipts.

Order of decisions for a downstream message: JSON, message_id, flow control, drop_after,
draining, field validation, unavailable_every, scripted token error, then ack (with a canonical
registration_id if scripted) and, when asked for, a delivery receipt.
"""

from __future__ import annotations

import json
import random
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ccs.xmpp.emulator import stanzas
from ccs.xmpp.emulator.record import AckReceived, Record, Sent
from ccs.xmpp.emulator.rules import (
    MISSING_ID_TEXT,
    Rejection,
    Script,
    check_downstream,
    error_description,
)
from ccs.xmpp.emulator.settings import Faults, Settings

if TYPE_CHECKING:
    from ccs.xmpp.emulator.connection import Connection

NOT_THIS_CONNECTION = "Received acks for messages not sent over this connection"


@dataclass
class Outstanding:
    """An upstream message or receipt waiting for the app server's ack."""

    kind: str  # upstream | receipt
    payload: dict[str, Any]
    conn_id: int | None = None  # where it was last sent (None: not yet)
    sent_at: float = 0.0  # monotonic time of the last send
    due: float = 0.0  # monotonic time before which it must not be sent (receipt_delay)
    sends: int = 0
    extra: dict[str, str] = field(default_factory=dict)  # stanza attributes


class Emulator(Protocol):
    """The emulator state the rules read and change (CcsEmulator)."""

    domain: str
    settings: Settings
    faults: Faults
    record: Record
    script: Script
    outstanding: dict[str, Outstanding]

    def queue_receipt(self, conn: Connection, receipt: dict[str, Any]) -> None: ...


class Behaviour:
    """The CCS rules applied to one emulator's connections (state lives on the emulator)."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.record = emu.record
        self.downstream_total = 0
        self._rng = random.Random(emu.settings.seed)

    # building ------------------------------------------------------------------------------
    def gcm(self, payload: dict[str, Any], **attrs: str) -> bytes:
        prefixed = self._rng.random() < self.emu.settings.prefixed_fraction
        return stanzas.gcm_message(payload, prefixed, **attrs)

    def _answer(self, conn: Connection, payload: dict[str, Any],
                receipt: dict[str, Any] | None = None) -> None:
        """Queue an ack/nack (held by ack_delay); it is recorded when it goes to the socket."""

        def written() -> None:
            self.record.add_sent(Sent(conn.id, payload["message_type"], payload, time.time()))
            if receipt is not None:
                self.emu.queue_receipt(conn, receipt)

        conn.answer(self.gcm(payload), written)

    def nack(self, conn: Connection, msg: dict[str, Any], code: str, description: str) -> None:
        payload = {"message_type": "nack", "message_id": msg.get("message_id"),
                   "error": code, "error_description": description}
        if isinstance(msg.get("to"), str):
            payload["from"] = msg["to"]
        self._answer(conn, payload)

    def stanza_error(self, conn: Connection, el: ET.Element, code: str, condition: str,
                     text: str) -> None:
        self.record.note(self.record.stanza_errors, conn.id, f"{code} {text}")
        conn.send(stanzas.message_error(el, code, "modify", condition, text))

    # dispatch ------------------------------------------------------------------------------
    def on_message(self, conn: Connection, el: ET.Element) -> None:
        if el.get("type") == "error":
            self.record.note(self.record.ignored, conn.id, "error stanza from client")
            return
        text = stanzas.gcm_text(el)
        if text is None:
            self.record.note(self.record.ignored, conn.id, "message without gcm payload")
            return
        try:
            msg = json.loads(text)
        except ValueError as exc:
            msg = exc
        if not isinstance(msg, dict):
            detail = str(msg) if isinstance(msg, ValueError) else "payload is not a JSON object"
            self.stanza_error(conn, el, "400", "bad-request",
                              f"InvalidJson: JSON_PARSING_ERROR : {detail}")
            return
        kind = msg.get("message_type")
        if kind == "ack":
            self.on_client_ack(conn, el, msg)
        elif kind is not None:
            # App servers never send nacks (or receipts, or control) to CCS.
            self.record.note(self.record.ignored, conn.id, f"client sent message_type {kind!r}")
        else:
            self.on_downstream(conn, el, msg)

    def on_client_ack(self, conn: Connection, el: ET.Element, msg: dict[str, Any]) -> None:
        mid = msg.get("message_id")
        now = time.time()
        if not isinstance(mid, str):
            self.record.acks_received.append(AckReceived(conn.id, None, "bad", msg, now))
            payload = {"message_type": "nack", "error": "BAD_ACK",
                       "error_description": "Missing Required Field: message_id"}
            self.record.add_sent(Sent(conn.id, "nack", payload, now))
            conn.send(self.gcm(payload))
            return
        out = self.emu.outstanding.get(mid)
        if out is None or out.conn_id != conn.id:
            self.record.acks_received.append(AckReceived(conn.id, mid, "unknown", msg, now))
            self.stanza_error(conn, el, "406", "not-acceptable", NOT_THIS_CONNECTION)
            return
        del self.emu.outstanding[mid]
        self.record.acks_received.append(AckReceived(conn.id, mid, out.kind, msg, now))

    def on_downstream(self, conn: Connection, el: ET.Element, msg: dict[str, Any]) -> None:
        emu, faults, settings = self.emu, self.emu.faults, self.emu.settings
        mid = msg.get("message_id")
        if not isinstance(mid, str) or not mid:
            self.stanza_error(conn, el, "400", "bad-request", MISSING_ID_TEXT)
            return
        self.record.add_downstream(conn.id, msg)
        conn.received += 1
        conn.pending += 1
        self.downstream_total += 1
        if conn.pending > settings.max_pending and settings.strict_flow:
            self.record.note(self.record.flow_violations, conn.id,
                             f"{mid}: {conn.pending} pending > {settings.max_pending}")
            if settings.flow_violation == "close":
                conn.stream_error("policy-violation",
                                  f"more than {settings.max_pending} pending messages")
                return
            if settings.flow_violation == "nack":
                self.nack(conn, msg, "SERVICE_UNAVAILABLE",
                          f"Too many pending messages on this connection "
                          f"(limit {settings.max_pending})")
                return
        if faults.drop_after is not None and conn.received >= faults.drop_after:
            conn.abort(f"drop_after={faults.drop_after}")
            return
        try:
            self._decide(conn, msg)
        except Rejection as rej:
            self.nack(conn, msg, rej.code, rej.description)
        if (faults.drain_after is not None and conn.received >= faults.drain_after
                and not conn.draining):
            emu.drain_connection(conn)

    def _decide(self, conn: Connection, msg: dict[str, Any]) -> None:
        faults = self.emu.faults
        if conn.draining:
            raise Rejection("CONNECTION_DRAINING", error_description("CONNECTION_DRAINING"))
        check_downstream(msg, self.emu.settings.strict_fields)
        every = faults.unavailable_every
        if every is not None and self.downstream_total % every == 0:
            raise Rejection("SERVICE_UNAVAILABLE", error_description("SERVICE_UNAVAILABLE"))
        to = msg.get("to")
        if isinstance(to, str):
            code = self.emu.script.error_for(to)
            if code is not None:
                raise Rejection(code, error_description(code))
        ack: dict[str, Any] = {"from": to if to is not None else msg.get("condition"),
                               "message_id": msg["message_id"], "message_type": "ack"}
        if isinstance(to, str) and to in self.emu.script.canonical:
            ack["registration_id"] = self.emu.script.canonical[to]
        receipt = None
        if msg.get("delivery_receipt_requested") is True and not msg.get("dry_run"):
            receipt = self.receipt(msg)
        self._answer(conn, ack, receipt)

    def receipt(self, msg: dict[str, Any]) -> dict[str, Any]:
        mid = msg["message_id"]
        category = msg.get("restricted_package_name") or self.emu.settings.category
        return {
            "message_type": "receipt",
            "from": self.emu.domain,
            "category": category,
            "message_id": "dr2:" + mid,
            "time_to_live": 0,
            "data": {
                "message_status": "MESSAGE_SENT_TO_DEVICE",
                "original_message_id": mid,
                "device_registration_id": msg.get("to", ""),
                "message_sent_timestamp": str(int(time.time() * 1000)),
            },
        }
