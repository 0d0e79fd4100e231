"""TLS contexts on gevent: verified by default; a CA file adds trust, never removes checks.

Built as gevent.ssl.SSLContext explicitly: without monkey-patching,
gevent.ssl.create_default_context() hands back a blocking stdlib context.
"""

from __future__ import annotations

import ssl as stdlib_ssl

from gevent import ssl


def client_context(
    ca_file: str | None = None,
    alpn: list[str] | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    password: str | None = None,
) -> ssl.SSLContext:
    """A client context with system trust plus `ca_file`; hostname and chain always checked."""
    ctx = ssl.SSLContext(stdlib_ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = stdlib_ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = stdlib_ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.load_default_certs()
    if ca_file:
        ctx.load_verify_locations(cafile=ca_file)
    if cert_file:
        ctx.load_cert_chain(cert_file, key_file, password=password)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def server_context(
    cert_file: str,
    key_file: str,
    alpn: list[str] | None = None,
    client_ca_file: str | None = None,
) -> ssl.SSLContext:
    """A server context; with `client_ca_file` it asks for a client certificate (optional)."""
    ctx = ssl.SSLContext(stdlib_ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = stdlib_ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        ctx.load_verify_locations(cafile=client_ca_file)
        ctx.verify_mode = stdlib_ssl.CERT_OPTIONAL
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx
