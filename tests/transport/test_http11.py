"""The HTTP/1.1 keep-alive pool against real gevent servers on loopback."""

import json

import gevent
import pytest
from gevent import socket
from gevent.pywsgi import WSGIServer
from gevent.server import StreamServer

from ccs.transport.http11 import HttpClient, HttpError, HttpPool
from ccs.transport.tls import server_context
from tests.helpers import wait_until


class App:
    """A WSGI app that records the client port of each request."""

    def __init__(self):
        self.ports = []
        self.bodies = []

    def __call__(self, environ, start_response):
        self.ports.append(environ["REMOTE_PORT"])
        path = environ["PATH_INFO"]
        body = environ["wsgi.input"].read()
        self.bodies.append(body)
        if path == "/json":
            data = json.dumps({"got": body.decode(), "q": environ["QUERY_STRING"]}).encode()
            start_response("200 OK", [("Content-Type", "application/json"),
                                      ("X-Mixed-Case", "yes"), ("Content-Length", str(len(data)))])
            return [data]
        if path == "/chunked":
            start_response("200 OK", [("Content-Type", "text/plain")])
            return iter([b"hello ", b"chunked ", b"world"])
        if path == "/close":
            start_response("200 OK", [("Connection", "close"), ("Content-Length", "2")])
            return [b"ok"]
        if path == "/big":
            start_response("200 OK", [("Content-Length", "5000")])
            return [b"x" * 5000]
        if path == "/slow":
            gevent.sleep(5)
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]


@pytest.fixture
def tls_server(pki):
    app = App()
    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None,
                        ssl_context=server_context(pki.cert_file, pki.key_file))
    server.start()
    yield server, app
    server.stop(timeout=1)


@pytest.fixture
def plain_server():
    app = App()
    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
    server.start()
    yield server, app
    server.stop(timeout=1)


def test_https_keep_alive_reuses_one_connection(tls_server, pki):
    server, app = tls_server
    pool = HttpPool(f"https://127.0.0.1:{server.server_port}", ca_file=pki.ca_file)
    for i in range(3):
        r = pool.request("POST", "/json?a=1", {"Content-Type": "text/plain"}, f"b{i}".encode())
        assert r.status == 200
        assert r.json() == {"got": f"b{i}", "q": "a=1"}
        assert r.headers["x-mixed-case"] == "yes" and r.headers["X-MIXED-CASE"] == "yes"
    assert len(set(app.ports)) == 1
    assert pool.connections_opened == 1
    pool.close()


def test_chunked_response_over_plain_http(plain_server):
    server, _ = plain_server
    client = HttpClient()
    r = client.request("GET", f"http://127.0.0.1:{server.server_port}/chunked")
    assert r.headers["Transfer-Encoding"] == "chunked"
    assert r.body == b"hello chunked world"
    r = client.request("GET", f"http://127.0.0.1:{server.server_port}/nothing")
    assert r.status == 404 and r.body == b""
    assert client.pool(f"http://127.0.0.1:{server.server_port}/").connections_opened == 1
    client.close()


def test_connection_close_opens_a_new_connection(plain_server):
    server, app = plain_server
    pool = HttpPool(f"http://127.0.0.1:{server.server_port}")
    assert pool.request("GET", "/close").body == b"ok"
    assert pool.request("GET", "/close").body == b"ok"
    assert len(set(app.ports)) == 2 and pool.connections_opened == 2


def test_server_closing_an_idle_connection_is_noticed_before_reuse():
    # the server answers, then closes; the pool must not write a POST into the dead socket
    raw = RawServer(lambda n: OK, close_after=True)
    pool = HttpPool(f"http://127.0.0.1:{raw.server.server_port}")
    assert pool.request("POST", "/", body=b"1").body == b"ok"
    wait_until(lambda: not pool._idle[0].usable(60), what="server close seen")
    assert pool.request("POST", "/", body=b"2").body == b"ok"
    assert pool.connections_opened == 2 and raw.requests == 2
    raw.server.stop()


def test_concurrency_is_bounded_by_max_connections(plain_server):
    server, app = plain_server
    pool = HttpPool(f"http://127.0.0.1:{server.server_port}", max_connections=3)
    jobs = [gevent.spawn(pool.request, "POST", "/json", None, b"x") for _ in range(30)]
    gevent.joinall(jobs, raise_error=True)
    assert all(j.value.status == 200 for j in jobs)
    assert pool.connections_opened <= 3 and len(set(app.ports)) <= 3


def test_response_size_cap(plain_server):
    server, _ = plain_server
    pool = HttpPool(f"http://127.0.0.1:{server.server_port}", max_response_bytes=1000)
    with pytest.raises(HttpError) as e:
        pool.request("GET", "/big")
    assert e.value.kind == "too_large"
    assert pool.request("GET", "/chunked").body == b"hello chunked world"


def test_timeout_says_so(plain_server):
    server, _ = plain_server
    pool = HttpPool(f"http://127.0.0.1:{server.server_port}")
    with pytest.raises(HttpError) as e:
        pool.request("GET", "/slow", timeout=0.2)
    assert e.value.kind == "timeout"


def test_connection_refused():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(HttpError) as e:
        HttpPool(f"http://127.0.0.1:{port}").request("GET", "/")
    assert e.value.kind == "refused"


def test_tls_to_an_untrusted_server_fails(tls_server):
    server, _ = tls_server
    with pytest.raises(HttpError) as e:
        HttpPool(f"https://127.0.0.1:{server.server_port}").request("GET", "/json")
    assert e.value.kind == "tls"


def test_header_injection_is_refused(plain_server):
    server, _ = plain_server
    pool = HttpPool(f"http://127.0.0.1:{server.server_port}")
    with pytest.raises(ValueError):
        pool.request("GET", "/json", {"X-A": "1\r\nX-B: 2"})


class RawServer:
    """A raw HTTP server: answers the first request per connection, then follows `script`."""

    def __init__(self, script, close_after=False):
        self.script = script
        self.close_after = close_after
        self.requests = 0
        self.server = StreamServer(("127.0.0.1", 0), self.handle)
        self.server.start()

    def handle(self, sock, _addr):
        f = sock.makefile("rb")
        n = 0
        while True:
            line = f.readline()
            if not line:
                return
            length = 0
            while True:
                h = f.readline()
                if h in (b"\r\n", b""):
                    break
                if h.lower().startswith(b"content-length:"):
                    length = int(h.split(b":")[1])
            f.read(length)
            self.requests += 1
            action = self.script(n)
            n += 1
            if action == "drop":
                sock.close()
                return
            sock.sendall(action)
            if self.close_after:
                sock.close()
                return


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize("method,idempotent,retried", [
    ("GET", None, True), ("POST", None, False), ("POST", True, True)])
def test_stale_reused_connection_retry_rule(method, idempotent, retried):
    # the server reads the second request on a reused connection and closes without answering
    raw = RawServer(lambda n: OK if n == 0 else "drop")
    pool = HttpPool(f"http://127.0.0.1:{raw.server.server_port}")
    assert pool.request(method, "/", idempotent=idempotent).body == b"ok"
    if retried:
        assert pool.request(method, "/", idempotent=idempotent).body == b"ok"
        assert raw.requests == 3
    else:
        with pytest.raises(HttpError) as e:
            pool.request(method, "/", idempotent=idempotent)
        assert e.value.kind in ("closed", "reset") and not e.value.response_started
        assert raw.requests == 2
    raw.server.stop()


def test_no_retry_once_part_of_the_response_arrived():
    raw = RawServer(lambda n: OK if n == 0 else b"HTTP/1.1 200 OK\r\nContent-Le")
    pool = HttpPool(f"http://127.0.0.1:{raw.server.server_port}", timeout=2)
    pool.request("GET", "/")
    with pytest.raises(HttpError) as e:
        pool.request("GET", "/", timeout=0.3)
    assert e.value.kind == "timeout"
    assert raw.requests == 2
    raw.server.stop()


def test_malformed_status_line():
    raw = RawServer(lambda n: b"SPDY/9 what\r\n\r\n")
    with pytest.raises(HttpError) as e:
        HttpPool(f"http://127.0.0.1:{raw.server.server_port}").request("GET", "/")
    assert e.value.kind == "malformed"
    raw.server.stop()


def test_body_read_to_close_without_length():
    raw = RawServer(lambda n: b"HTTP/1.0 200 OK\r\n\r\nuntil close", close_after=True)
    pool = HttpPool(f"http://127.0.0.1:{raw.server.server_port}", timeout=2)
    assert pool.request("GET", "/").body == b"until close"
    assert pool._idle == []
    raw.server.stop()


@pytest.mark.parametrize("answer,method,body", [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", "HEAD", b""),
    (b"HTTP/1.1 204 No Content\r\n\r\n", "DELETE", b""),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi", "POST",
     b"hi"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n"
     b"0\r\nX-Trailer: 1\r\n\r\n", "GET", b"abcde"),
])
def test_bodyless_interim_and_chunked_answers_keep_the_connection(answer, method, body):
    raw = RawServer(lambda n: answer)
    pool = HttpPool(f"http://127.0.0.1:{raw.server.server_port}", timeout=2)
    for _ in range(2):
        r = pool.request(method, "/")
        assert r.body == body and r.status in (200, 204)
    assert pool.connections_opened == 1 and raw.requests == 2
    raw.server.stop()


def test_chunked_body_over_the_cap_is_refused():
    chunk = b"400\r\n" + b"x" * 1024 + b"\r\n"
    raw = RawServer(lambda n: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                    + chunk * 3 + b"0\r\n\r\n")
    pool = HttpPool(f"http://127.0.0.1:{raw.server.server_port}", max_response_bytes=2048)
    with pytest.raises(HttpError) as e:
        pool.request("GET", "/")
    assert e.value.kind == "too_large" and e.value.response_started
    raw.server.stop()
