"""The emulator's topic subscription endpoints: the Instance ID batch API
(`/iid/v1:batchAdd|batchRemove`, 1000 tokens a request) and the per-token v1 registrations API
that firebase-admin 7 uses (`POST .../registrations/{token}/topicSubscriptions?topic_name=t`,
`DELETE .../topicSubscriptions/{topic}?allow_missing=true`).

Documented choices: a subscription answers `{"name": ".../topicSubscriptions/<topic>"}`;
subscribing twice answers 409 ALREADY_EXISTS; tokens scripted "unregistered" are NOT_FOUND and
"invalid" ones INVALID_ARGUMENT, as in sends.
"""

from __future__ import annotations

import json
import re
from typing import Any, Protocol
from urllib.parse import parse_qs

from http_fallback.fcm.emulator_errors import error_body
from http_fallback.fcm.emulator_rules import TOKEN_RE, TOPIC_RE


class Subscriptions(Protocol):
    """What these endpoints use of the emulator (FcmEmulator)."""

    topics: dict[str, set[str]]

    def authorized(self, environ: dict[str, Any]) -> bool: ...

    def peek_failure(self, token: Any) -> str | None: ...

REGISTRATION_RE = re.compile(
    r"^/v1/projects/(?P<project>[^/]+)/registrations/(?P<token>[^/]+)/topicSubscriptions"
    r"(?:/(?P<topic>[^/]+))?$")


def _token_problem(emu: Subscriptions, token: Any) -> str | None:
    kind = emu.peek_failure(token)
    if not isinstance(token, str) or not TOKEN_RE.match(token) or kind == "invalid":
        return "INVALID_ARGUMENT"
    if kind == "unregistered":
        return "NOT_FOUND"
    return None


def iid_batch(emu: Subscriptions, operation: str, environ: dict[str, Any], body: bytes
              ) -> tuple[int, dict[str, Any]]:
    """batchAdd / batchRemove: per-token results, in order."""
    if not emu.authorized(environ):
        return 401, {"error": "Unauthorized"}
    if environ.get("fcm.access_token_auth", "").lower() != "true":
        return 401, {"error": "Unauthorized: missing access_token_auth header"}
    if operation not in ("batchAdd", "batchRemove"):
        return 404, {"error": "NotFound"}
    try:
        request = json.loads(body)
        topic = request["to"]
        tokens = request["registration_tokens"]
    except (ValueError, KeyError, TypeError):
        return 400, {"error": "InvalidRequest"}
    if not isinstance(topic, str) or not topic.startswith("/topics/") \
            or not TOPIC_RE.match(topic):
        return 400, {"error": "InvalidTopicName"}
    if not isinstance(tokens, list) or not tokens or len(tokens) > 1000:
        return 400, {"error": "InvalidRequest: 1 to 1000 registration_tokens"}
    members = emu.topics.setdefault(topic[len("/topics/"):], set())
    results: list[dict[str, str]] = []
    for token in tokens:
        problem = _token_problem(emu, token)
        if problem:
            results.append({"error": problem})
        else:
            (members.add if operation == "batchAdd" else members.discard)(token)
            results.append({})
    return 200, {"results": results}


def _err(code: int, status: str, message: str, error_code: str | None = None
         ) -> dict[str, Any]:

    return error_body(code, status, message, error_code)


def registration(emu: Subscriptions, method: str, path: str, environ: dict[str, Any]
                 ) -> tuple[int, dict[str, Any], str | None]:
    """One token's subscription to one topic, on the v1 registrations resource."""
    match = REGISTRATION_RE.match(path)
    if not match:
        return 404, _err(404, "NOT_FOUND", "Not found"), None
    token = match["token"]
    if not emu.authorized(environ):
        return 401, _err(401, "UNAUTHENTICATED", "Invalid credentials"), token
    if match["project"] != emu.project_id:
        return 403, _err(403, "PERMISSION_DENIED", "Permission denied"), token
    query = {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
    if method == "POST" and match["topic"] is None:
        topic = query.get("topic_name", "")
    elif method == "DELETE" and match["topic"] is not None:
        topic = match["topic"]
    else:
        return 405, _err(405, "METHOD_NOT_ALLOWED", "Method not allowed"), token
    topic = topic.removeprefix("/topics/")
    if not TOPIC_RE.match(topic):
        return 400, _err(400, "INVALID_ARGUMENT", "Invalid topic name"), token
    problem = _token_problem(emu, token)
    if problem == "NOT_FOUND":
        return 404, _err(404, "NOT_FOUND", "Requested entity was not found.",
                         "UNREGISTERED"), token
    if problem:
        return 400, _err(400, "INVALID_ARGUMENT", "The registration token is not a valid FCM "
                         "registration token", "INVALID_ARGUMENT"), token
    members = emu.topics.setdefault(topic, set())
    name = f"projects/{emu.project_id}/registrations/{token}/topicSubscriptions/{topic}"
    if method == "POST":
        if token in members:
            return 409, _err(409, "ALREADY_EXISTS", "Already subscribed"), token
        members.add(token)
        return 200, {"name": name}, token
    if token not in members and query.get("allow_missing", "").lower() != "true":
        return 404, _err(404, "NOT_FOUND", "Not subscribed"), token
    members.discard(token)
    return 200, {}, token
