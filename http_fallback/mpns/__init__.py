"""Microsoft MPNS (Windows Phone; switched off around 2018): client, protocol core, emulator."""

from http_fallback.mpns.client import MpnsClient, MpnsConfig
from http_fallback.mpns.model import (
    CLEAR,
    CycleTile,
    FlipTile,
    IconicTile,
    MessageError,
    MpnsMessage,
    Raw,
    Tile,
    Toast,
)
from http_fallback.mpns.protocol import MpnsPolicy

__all__ = ["CLEAR", "CycleTile", "FlipTile", "IconicTile", "MessageError", "MpnsClient",
           "MpnsConfig", "MpnsMessage", "MpnsPolicy", "Raw", "Tile", "Toast"]
