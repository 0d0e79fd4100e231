"""C2DM (retired by Google in 2015), with node2dm's rules: client, protocol core and emulator."""

from http_fallback.lazy import exports

# Imported on first use, so reading the provider's declaration stays cheap.
__getattr__, __all__ = exports(__name__, {
    "client": ("C2dmClient", "C2dmConfig"),
    "model": ("C2dmMessage", "MessageError"),
})
