"""Transports for the HTTP providers: TLS sockets on gevent, HTTP/1.1 keep-alive pool, HTTP/2."""
