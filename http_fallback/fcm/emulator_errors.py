"""The error bodies the emulated FCM v1 API answers with (google.rpc.Status, with details)."""

from __future__ import annotations

from typing import Any

FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"


def error_body(code: int, status: str, message: str, error_code: str | None = None,
           violations: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    details: list[dict[str, Any]] = []
    if error_code:
        details.append({"@type": FCM_ERROR, "errorCode": error_code})
    if violations:
        details.append({"@type": BAD_REQUEST, "fieldViolations": [
            {"field": f, "description": d} for f, d in violations]})
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        body["details"] = details
    return {"error": body}
