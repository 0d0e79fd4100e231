"""C2DM (retired by Google in 2015), with node2dm's rules: client, protocol core and emulator."""

from http_fallback.c2dm.client import C2dmClient, C2dmConfig
from http_fallback.c2dm.model import C2dmMessage, MessageError

__all__ = ["C2dmClient", "C2dmConfig", "C2dmMessage", "MessageError"]
