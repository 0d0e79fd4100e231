"""ccs-gateway: a push-notification gateway on gevent, with Google CCS (XMPP) at its heart."""

__version__ = "0.1.0"
