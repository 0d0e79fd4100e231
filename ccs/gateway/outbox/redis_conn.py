"""redis-py clients on gevent sockets: one server or redis-py's own cluster client, TLS or not.

redis-py does blocking socket I/O through the stdlib `socket` module. Without monkey-patching that
would block the hub, so connections are made with gevent.socket (and TLS with the gevent SSLContext
of ccs.transport.tls) and each call waits cooperatively. Measured on the shared 2-core machine
(scripts/bench_scale.py prints it): a PING round trip of 30-85 us on a gevent socket against 55-150
us when each call goes through gevent's threadpool (two thread switches per call). With patch_all()
the stdlib socket is gevent's anyway, so both modes run the same code.
"""

from __future__ import annotations

import socket as std_socket
from typing import Any

import redis
from gevent import socket as gsocket
from redis.cluster import ClusterNode, RedisCluster

from ccs.gateway.outbox.redis_url import RedisTarget
from ccs.transport.tls import client_context


def _gevent_socket(conn: Any) -> Any:
    sock = gsocket.create_connection((conn.host, conn.port), timeout=conn.socket_connect_timeout)
    sock.setsockopt(std_socket.IPPROTO_TCP, std_socket.TCP_NODELAY, 1)
    sock.settimeout(conn.socket_timeout)
    return sock


class GeventConnection(redis.connection.Connection):
    """A redis-py connection on a gevent socket: waits yield to the hub, patched or not."""

    def _connect(self) -> Any:
        return _gevent_socket(self)


class GeventSSLConnection(redis.connection.SSLConnection):
    """TLS on a gevent socket: chain and host name always verified (ssl_ca_certs adds a CA)."""

    def _connect(self) -> Any:
        sock = _gevent_socket(self)
        try:
            sock.settimeout(self.socket_connect_timeout)
            tls = client_context(self.ca_certs).wrap_socket(sock, server_hostname=self.host)
            tls.settimeout(self.socket_timeout)
            return tls
        except BaseException:
            sock.close()
            raise


# socket_timeout: a Redis that stops answering fails the call (the caller backs off and tries
# again) instead of hanging it; blocking reads here wait at most a few seconds.
TIMEOUTS = {"socket_connect_timeout": 5, "socket_timeout": 30, "health_check_interval": 30}


def connect(t: RedisTarget) -> Any:
    """A client for `t` (redis.Redis or redis.cluster.RedisCluster) on gevent sockets."""
    kw: dict[str, Any] = {"decode_responses": True, "username": t.username,
                          "password": t.password, **TIMEOUTS}
    if t.tls:
        kw.update(connection_class=GeventSSLConnection, ssl_ca_certs=t.ca_file)
    else:
        kw["connection_class"] = GeventConnection
    if t.cluster:
        # Topology errors (MOVED after a failover, a node gone) are retried by the cluster
        # client itself; what still fails reaches the store as a RedisError.
        return RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in t.nodes],
                            ssl=t.tls, **kw)
    pool = redis.ConnectionPool(host=t.host, port=t.port, db=t.db, **kw)
    return redis.Redis(connection_pool=pool)
