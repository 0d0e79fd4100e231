"""The emulator's OAuth2 token endpoint: trades an RS256 JWT assertion from a trusted service
account for an opaque access token, checking what Google's endpoint checks (grant type,
signature against the account's public key, key id, audience, iat/exp within an hour, scope).

Documented choice: the audience may be the emulator's own token URL or Google's, since
google-auth sends Google's even when the file names another token_uri.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs

import jwt


class TokenIssuer(Protocol):
    """What the token endpoint uses of the emulator (FcmEmulator)."""

    keys: dict[str, tuple[Any, str]]  # client_email -> (public key, key id)
    access_tokens: dict[str, float]  # access token -> expiry
    token_lifetime: int
    tokens_issued: int
    clock: Callable[[], float]

    @property
    def token_uri(self) -> str: ...

GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
ACCEPTED_SCOPES = ("https://www.googleapis.com/auth/firebase.messaging",
                   "https://www.googleapis.com/auth/cloud-platform")


def token_endpoint(emu: TokenIssuer, body: bytes) -> tuple[int, dict[str, Any]]:
    """Answer a form-encoded jwt-bearer grant: (status, JSON answer)."""
    form = {k: v[0] for k, v in parse_qs(body.decode("latin-1")).items()}
    if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
        return 400, {"error": "unsupported_grant_type",
                     "error_description": "Invalid grant_type"}
    assertion = form.get("assertion", "")
    try:
        claims = jwt.decode(assertion, options={"verify_signature": False})
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError:
        return 400, {"error": "invalid_grant", "error_description": "Malformed assertion"}
    known = emu.keys.get(claims.get("iss", ""))
    if known is None:
        return 400, {"error": "invalid_grant", "error_description": "Invalid issuer"}
    public_key, key_id = known
    if header.get("alg") != "RS256" or header.get("kid") not in (None, key_id):
        return 400, {"error": "invalid_grant", "error_description": "Invalid key id"}
    try:
        claims = jwt.decode(assertion, public_key, algorithms=["RS256"],
                            audience=[emu.token_uri, GOOGLE_TOKEN_URI],
                            options={"require": ["iss", "aud", "iat", "exp"],
                                     "verify_exp": False, "verify_iat": False,
                                     "verify_nbf": False})
    except jwt.InvalidSignatureError:
        return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
    except jwt.PyJWTError as e:
        return 400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {e}"}
    now = emu.clock()
    if not isinstance(claims["exp"], (int, float)) or claims["exp"] < now - 60:
        return 400, {"error": "invalid_grant", "error_description": "Invalid JWT: expired"}
    if not isinstance(claims["iat"], (int, float)) or claims["iat"] > now + 60:
        return 400, {"error": "invalid_grant",
                     "error_description": "Invalid JWT: iat is in the future"}
    if claims["exp"] - claims["iat"] > 3600:
        return 400, {"error": "invalid_grant",
                     "error_description": "Invalid JWT: exp more than 1 hour after iat"}
    scopes = str(claims.get("scope", "")).split()
    if not any(s in ACCEPTED_SCOPES for s in scopes):
        return 400, {"error": "invalid_scope", "error_description": "No FCM scope"}
    token = "ya29.emu-" + secrets.token_urlsafe(32)
    emu.access_tokens[token] = now + emu.token_lifetime
    emu.tokens_issued += 1
    return 200, {"access_token": token, "expires_in": emu.token_lifetime,
                 "token_type": "Bearer"}
