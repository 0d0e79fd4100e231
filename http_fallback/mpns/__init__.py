"""Microsoft MPNS (Windows Phone; switched off around 2018): client, protocol core, emulator."""

from http_fallback.lazy import exports

# Imported on first use, so reading the provider's declaration stays cheap.
__getattr__, __all__ = exports(__name__, {
    "client": ("MpnsClient", "MpnsConfig"),
    "model": ("CLEAR", "CycleTile", "FlipTile", "IconicTile", "MessageError", "MpnsMessage", "Raw",
              "Tile", "Toast"),
    "protocol": ("MpnsPolicy",),
})
