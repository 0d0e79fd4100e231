"""Transport pieces shared by the HTTP providers: TLS sockets on gevent and HTTP/2 connections."""
