"""The settings the CCS provider declares: TOML key, CCS_* variable, type, default, meaning.

Read by the gateway through the declaration, and by the config's `from_env`, so each
variable is named here only.
"""

from __future__ import annotations

from ccs.registry import SERVER_KEY, Setting

SETTINGS: tuple[Setting, ...] = (
    Setting("ccs.host", "CCS_HOST", "str", "fcm-xmpp.googleapis.com", "CCS server host"),
    Setting("ccs.port", "CCS_PORT", "int", 5235, "CCS server port (5236: testing)", minimum=0,
            maximum=65535),
    Setting("ccs.sender_id", "CCS_SENDER_ID", "str", None, "sender id (project number)"),
    SERVER_KEY,
    Setting("ccs.connections", "CCS_CONNECTIONS", "int", 4, "CCS connections in the pool",
            minimum=1, maximum=1000),
    Setting("ccs.domain", "CCS_DOMAIN", "str", "gcm.googleapis.com",
            "XMPP domain of the sender JID"),
    Setting("ccs.connection_budget", "CCS_CONNECTION_BUDGET", "int", 1000,
            "CCS connections per sender across all gateways sharing a Redis outbox (leases)",
            minimum=1, maximum=1000),
    Setting("ccs.window", "CCS_WINDOW", "int", 100, "unanswered messages per CCS session (the CCS "
            "limit is 100)", minimum=1, maximum=100),
    Setting("ccs.ack_timeout", "CCS_ACK_TIMEOUT", "float", 60.0,
            "seconds a message may wait for its ack or nack before its session is closed and the "
            "message re-sent on a fresh one (0: wait forever)", minimum=0),
    Setting("ccs.no_session_timeout", "CCS_NO_SESSION_TIMEOUT", "float", 10.0,
            "seconds without a usable CCS session after which queued messages are handed back "
            "(the gateway sends them through its fallback); 0 waits for CCS", minimum=0),
)
