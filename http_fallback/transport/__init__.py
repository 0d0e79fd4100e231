"""Transports for the HTTP providers: TLS sockets on gevent and an HTTP/1.1 keep-alive pool."""
