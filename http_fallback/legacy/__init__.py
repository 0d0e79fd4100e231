"""Legacy GCM/FCM HTTP (retired by Google in June 2024): client, protocol core and emulator."""

from http_fallback.lazy import exports

# Imported on first use, so reading the provider's declaration stays cheap.
__getattr__, __all__ = exports(__name__, {
    "client": ("LegacyClient", "LegacyConfig"),
    "model": ("LegacyMessage", "MessageError"),
})
