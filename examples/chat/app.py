"""The chat app: POST /notify stores a push, GET /messages/<id> shows it, and every upstream
message from a device is answered by one downstream message to it.

Importing this module opens nothing: `gateway.start()` runs in each worker after the fork
(examples/chat/gunicorn.conf.py) or once in examples/chat/serve.py.
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

import redis
from flask import Flask, Response, jsonify, request

from ccs.gateway.dispatcher import Conflict, Stopping, new_id
from ccs.gateway.embed import Embedded
from ccs.gateway.inbound import InboundRecord
from ccs.gateway.outbox.base import StoreUnavailable
from ccs.gateway.router import RouteError
from ccs.gateway.supervisor import Supervisor
from ccs.xmpp.message import InvalidMessage, validate_downstream

RETRY_STOPPING = 1  # seconds: another worker (or this one restarted) takes writes by then
RETRY_OUTBOX = 5  # seconds: the outbox itself failed (Redis away, disk full)
OUTBOX_ERRORS = (StoreUnavailable, redis.RedisError, sqlite3.Error, OSError)


def answer_id(body: dict[str, Any]) -> str:
    """The answer's message_id, derived from the upstream's (sender, message_id): handled twice
    (two workers, or a worker that died before marking it done), it is still stored once."""
    key = f"{body.get('from')}\x00{body.get('message_id')}".encode()
    return "echo-" + hashlib.sha256(key).hexdigest()[:40]


def answer(sup: Supervisor, rec: InboundRecord) -> None:
    """Echo an upstream message back to its sender; raising makes the gateway retry it."""
    data = rec.body.get("data") or {}
    text = data.get("text", "") if isinstance(data, dict) else ""
    sup.enqueue({"to": rec.body["from"], "message_id": answer_id(rec.body),
                 "data": {"echo": str(text)}})


def setup(sup: Supervisor) -> None:
    sup.upstream.add(lambda rec: answer(sup, rec))


gateway = Embedded(setup)


def _error(status: int, message: str, field: str | None = None,
           retry_after: int | None = None) -> Response:
    body: dict[str, Any] = {"error": message}
    if field is not None:
        body["field"] = field
    resp = jsonify(body)
    resp.status_code = status
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def _bad(exc: InvalidMessage | RouteError) -> Response:
    field = exc.field.split("].", 1)[1] if exc.field.startswith("messages[") and "]." in \
        exc.field else exc.field
    return _error(400, str(exc) if isinstance(exc, RouteError) else f"{exc.field}: {exc.reason}",
                  field)


def _unavailable(exc: Exception) -> Response:
    if isinstance(exc, Stopping):
        return _error(503, f"not taking messages: {exc}", retry_after=RETRY_STOPPING)
    return _error(503, f"the outbox cannot take writes: {type(exc).__name__}",
                  retry_after=RETRY_OUTBOX)


def create_app(gw: Embedded) -> Flask:
    app = Flask(__name__)

    @app.post("/notify")
    def notify() -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object", "body")
        for key in body:
            if key not in ("to", "data", "message_id"):
                return _error(400, f"{key}: unknown field", key)
        to, data, mid = body.get("to"), body.get("data"), body.get("message_id")
        if not isinstance(to, str) or not to:
            return _error(400, "to: must be a non-empty string (a device token)", "to")
        if not isinstance(data, dict):
            return _error(400, "data: must be a JSON object", "data")
        # message_id (optional): the client's idempotency key, so a retried POST stores once
        message = {"to": to, "data": data, "message_id": new_id() if mid is None else mid}
        try:
            validate_downstream(message)
            ident = gw.supervisor.enqueue(message)
        except Conflict as exc:  # the body's message_id was stored before with other content
            return _error(409, str(exc), "message_id")
        except (InvalidMessage, RouteError) as exc:
            return _bad(exc)
        except (Stopping, *OUTBOX_ERRORS) as exc:
            return _unavailable(exc)
        resp = jsonify({"id": ident})
        resp.status_code = 202
        return resp

    @app.get("/messages/<ident>")
    def message(ident: str) -> Response:
        try:
            record = gw.supervisor.status(ident)
        except (Stopping, *OUTBOX_ERRORS) as exc:
            return _unavailable(exc)
        if record is None:
            return _error(404, f"no message {ident!r}", "id")
        return jsonify(record)

    return app


app = create_app(gateway)
