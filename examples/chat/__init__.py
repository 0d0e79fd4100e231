"""A chat-style Flask app embedding the gateway; see docs/gateway.rst."""
