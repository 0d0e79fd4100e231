"""A chat-style Flask app embedding the gateway; see README "Embedding in a gevent server"."""
