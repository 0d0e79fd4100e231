"""The gateway: supervisor, dispatcher, router, outbox, admin API, settings."""
