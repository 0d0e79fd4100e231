"""APNs credentials: ES256 provider tokens from a .p8 key, or a TLS client certificate.

Secrets stay in memory; reprs never show them. In-memory certificate data is written to a
private temporary file only long enough for OpenSSL to load it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from gevent import ssl

from ccs.transport.tls import client_context


class TokenSigner:
    """Makes provider tokens: header {alg ES256, kid}, claims {iss team, iat now}."""

    def __init__(self, key: bytes | str, key_id: str, team_id: str) -> None:
        data = key.encode() if isinstance(key, str) else key
        try:
            loaded = serialization.load_pem_private_key(data, password=None)
        except ValueError as e:
            raise ValueError("APNs signing key: not a PEM (.p8) private key") from e
        if not isinstance(loaded, ec.EllipticCurvePrivateKey) or loaded.curve.name != "secp256r1":
            raise ValueError("APNs signing key: must be a P-256 EC key (.p8 from Apple)")
        if not key_id or not team_id:
            raise ValueError("APNs token auth needs both key_id and team_id")
        self._key = loaded
        self.key_id = key_id
        self.team_id = team_id

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], key_id: str, team_id: str) -> TokenSigner:
        return cls(Path(path).read_bytes(), key_id, team_id)

    def make(self, now: float) -> str:
        return jwt.encode({"iss": self.team_id, "iat": int(now)}, self._key, algorithm="ES256",
                          headers={"kid": self.key_id})

    def __repr__(self) -> str:
        return f"TokenSigner(key_id={self.key_id!r}, team_id={self.team_id!r}, key=<hidden>)"


def _load_with_temp(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes,
                    password: str | None) -> None:
    fd, name = tempfile.mkstemp(prefix="ccs-apns-", suffix=".pem")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem + b"\n" + key_pem)
        ctx.load_cert_chain(name, password=password)
    finally:
        os.unlink(name)


def certificate_context(
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    passphrase: str | None = None,
    cert_data: bytes | None = None,
    key_data: bytes | None = None,
    pfx_file: str | None = None,
    pfx_data: bytes | None = None,
    alpn: list[str] | None = None,
) -> ssl.SSLContext:
    """A verified client TLS context presenting a certificate from PEM files, PEM data or PFX."""
    ctx = client_context(ca_file=ca_file, alpn=alpn)
    if pfx_file or pfx_data:
        raw = pfx_data if pfx_data is not None else Path(pfx_file).read_bytes()  # type: ignore[arg-type]
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(
                raw, passphrase.encode() if passphrase else None)
        except ValueError as e:
            raise ValueError("APNs PFX: cannot open (wrong passphrase or not PKCS#12)") from e
        if key is None or cert is None:
            raise ValueError("APNs PFX: must hold a certificate and its private key")
        pem = serialization.Encoding.PEM
        chain = cert.public_bytes(pem) + b"".join(c.public_bytes(pem) for c in extra or [])
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        _load_with_temp(ctx, chain, key_pem, None)
    elif cert_data is not None:
        _load_with_temp(ctx, cert_data, key_data or b"", passphrase)
    elif cert_file:
        ctx.load_cert_chain(cert_file, key_file, password=passphrase)
    else:
        raise ValueError("APNs certificate auth: give cert_file, cert_data, pfx_file or pfx_data")
    return ctx
