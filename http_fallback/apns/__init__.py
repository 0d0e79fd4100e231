"""Apple Push Notification service: the HTTP/2 client, its emulator, the binary interface."""

from http_fallback.lazy import exports

# Imported on first use, so reading the provider's declaration stays cheap.
__getattr__, __all__ = exports(__name__, {
    "client": ("ApnsClient",),
    "config": ("ApnsConfig",),
    "model": ("Alert", "Notification", "NotificationError", "PushType"),
})
