"""What a Redis outbox URL names: one server or a cluster, TLS or not, credentials, key prefix.

    redis://[user:password@]host:port[/db][?prefix=P]
    rediss://...                         TLS, always verified (?ca_file=PATH adds a CA)
    redis+cluster://host:port[,host:port...][/][?prefix=P]
    rediss+cluster://...                 a cluster over TLS

Pure parsing: no sockets. The password may also come from CCS_OUTBOX_PASSWORD (a URL password
wins). Every message built here shows the URL through ccs.gateway.outbox.shown (password as ***).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from ccs.errors import ConfigError

SCHEMES = {"redis": (False, False), "rediss": (False, True), "redis+cluster": (True, False),
           "rediss+cluster": (True, True)}
# Our own options; anything else in the query is refused (a typo must not pass silently).
OPTIONS = ("prefix", "ca_file", "db")


@dataclass(frozen=True)
class RedisTarget:
    cluster: bool
    tls: bool
    nodes: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    prefix: str = "ccs"
    ca_file: str | None = None

    @property
    def host(self) -> str:
        return self.nodes[0][0]

    @property
    def port(self) -> int:
        return self.nodes[0][1]


def _node(text: str, url: str) -> tuple[str, int]:
    from ccs.gateway.outbox import shown

    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "6379"
    host = host.strip("[]")  # [::1]:6379
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("outbox.path", f"bad host:port {text!r} in {shown(url)!r}")
    return host, int(port)


def parse(url: str, password: str | None = None, ca_file: str | None = None) -> RedisTarget:
    """The target of an outbox URL; `password` and `ca_file` are the CCS_OUTBOX_PASSWORD and
    CCS_CA_FILE settings, used when the URL gives none."""
    from ccs.gateway.outbox import shown

    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ConfigError("outbox.path", f"expected redis://, rediss://, redis+cluster:// or "
                          f"rediss+cluster://, got {shown(url)!r}")
    cluster, tls = SCHEMES[scheme]
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    user = None
    if "@" in netloc:
        auth, netloc = netloc.rsplit("@", 1)
        name, has_pw, pw = auth.partition(":")
        user = unquote(name) or None
        if has_pw:
            password = unquote(pw)
    if not netloc:
        raise ConfigError("outbox.path", f"no host in {shown(url)!r}")
    hosts = netloc.split(",")
    if len(hosts) > 1 and not cluster:
        raise ConfigError("outbox.path", f"several hosts need redis+cluster:// or "
                          f"rediss+cluster://, got {shown(url)!r}")
    nodes = tuple(_node(h, url) for h in hosts)
    opts: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        if k not in OPTIONS:
            raise ConfigError("outbox.path", f"unknown option {k!r} in {shown(url)!r} (known: "
                              f"{', '.join(OPTIONS)})")
        opts[k] = v
    db_text = path.strip("/") or opts.get("db", "0")
    if not db_text.isdigit():
        raise ConfigError("outbox.path", f"the database must be a number, got {db_text!r}")
    db = int(db_text)
    if cluster and db != 0:
        raise ConfigError("outbox.path", "a Redis Cluster has only database 0")
    prefix = opts.get("prefix", "ccs")
    if not prefix or any(c in prefix for c in "{}"):
        raise ConfigError("outbox.path", f"prefix must be non-empty without braces, got "
                          f"{prefix!r}")
    if opts.get("ca_file") and not tls:
        raise ConfigError("outbox.path", "ca_file needs a TLS URL (rediss:// or "
                          "rediss+cluster://)")
    return RedisTarget(cluster, tls, nodes, db, user, password or None, prefix,
                       (opts.get("ca_file") or ca_file) if tls else None)
