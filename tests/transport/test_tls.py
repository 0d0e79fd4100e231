"""The TLS helpers verify by default and trust only what they are given."""

import gevent
import pytest
from gevent import socket
from gevent.server import StreamServer
from gevent.ssl import SSLError

from ccs.transport.tls import client_context, server_context


def _serve(pki):
    ctx = server_context(pki.cert_file, pki.key_file)

    def handle(sock, _addr):
        try:
            tls = ctx.wrap_socket(sock, server_side=True)
            tls.sendall(b"hi")
            tls.close()
        except OSError:
            pass

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    return server


@pytest.mark.parametrize("name", ["localhost", "127.0.0.1", "gcm.googleapis.com"])
def test_client_trusts_the_test_ca_for_each_name(pki, name):
    server = _serve(pki)
    try:
        raw = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
        tls = client_context(pki.ca_file).wrap_socket(raw, server_hostname=name)
        assert tls.recv(2) == b"hi"
        tls.close()
    finally:
        server.stop()


def test_client_refuses_an_unknown_ca(pki):
    server = _serve(pki)
    try:
        raw = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
        with pytest.raises(SSLError):
            client_context().wrap_socket(raw, server_hostname="localhost")
    finally:
        server.stop()
        gevent.sleep(0)


def test_client_refuses_a_name_not_in_the_certificate(pki):
    server = _serve(pki)
    try:
        raw = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
        with pytest.raises(SSLError):
            client_context(pki.ca_file).wrap_socket(raw, server_hostname="example.org")
    finally:
        server.stop()
