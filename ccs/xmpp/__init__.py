"""The CCS provider: XMPP stream, sessions, pool, client and the CCS emulator."""
