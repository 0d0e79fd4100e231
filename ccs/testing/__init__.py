"""Helpers for tests of ccs-gateway and of apps that use it (throw-away PKI)."""
