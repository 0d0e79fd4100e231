"""A throw-away CA and server/client certificates, made at run time with `cryptography`.

Used by our tests, `ccs emulate` and `ccs demo`, and by users' own integration tests: nothing
long-lived is ever written, and nothing turns TLS verification off.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_NAMES = (
    "127.0.0.1",
    "::1",
    "localhost",
    "gcm.googleapis.com",
    "fcm.googleapis.com",
    "fcm-xmpp.googleapis.com",
    "gcm-xmpp.googleapis.com",
)


@dataclass(frozen=True)
class TestPKI:
    directory: Path
    ca_file: str  # PEM of the CA: what clients trust (CCS_CA_FILE)
    cert_file: str  # server certificate chain (PEM)
    key_file: str  # server key (PEM, unencrypted)
    client_cert_file: str  # a client certificate signed by the same CA
    client_key_file: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _san(names: tuple[str, ...]) -> x509.SubjectAlternativeName:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(entries)


def _issue(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    usage: x509.ObjectIdentifier,
    names: tuple[str, ...] = (),
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(_san(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


FILES = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")


def load_test_pki(directory: str | os.PathLike[str]) -> TestPKI:
    """The PKI make_test_pki wrote in `directory` earlier, reused as it is (clients keep
    trusting its CA); ValueError saying why when it is incomplete or its server certificate
    has expired."""
    out = Path(directory)
    missing = [name for name in FILES if not (out / name).is_file()]
    if missing:
        raise ValueError(f"{out} holds a CA but not {', '.join(missing)}")
    cert = x509.load_pem_x509_certificate((out / "server.pem").read_bytes())
    if cert.not_valid_after_utc <= datetime.datetime.now(datetime.UTC):
        raise ValueError(f"the server certificate in {out} expired at {cert.not_valid_after_utc}")
    return _pki(out)


def _pki(out: Path) -> TestPKI:
    return TestPKI(
        directory=out,
        ca_file=str(out / "ca.pem"),
        cert_file=str(out / "server.pem"),
        key_file=str(out / "server.key"),
        client_cert_file=str(out / "client.pem"),
        client_key_file=str(out / "client.key"),
    )


def make_test_pki(directory: str | os.PathLike[str] | None = None,
                  names: tuple[str, ...] = DEFAULT_NAMES) -> TestPKI:
    """Write a fresh CA, a server certificate for `names` and a client certificate."""
    out = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="ccs-pki-"))
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = _key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ccs-gateway throw-away test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = _key()
    server_cert = _issue("ccs-gateway test server", server_key, ca_cert, ca_key,
                         ExtendedKeyUsageOID.SERVER_AUTH, names)
    client_key = _key()
    client_cert = _issue("ccs-gateway test client", client_key, ca_cert, ca_key,
                         ExtendedKeyUsageOID.CLIENT_AUTH)
    pem = serialization.Encoding.PEM
    files = {
        "ca.pem": ca_cert.public_bytes(pem),
        "server.pem": server_cert.public_bytes(pem),
        "server.key": _pem_key(server_key),
        "client.pem": client_cert.public_bytes(pem),
        "client.key": _pem_key(client_key),
    }
    for name, data in files.items():
        path = out / name
        path.write_bytes(data)
        if name.endswith(".key"):
            path.chmod(0o600)
    return _pki(out)
