"""Legacy GCM/FCM HTTP (retired by Google in June 2024): client, protocol core and emulator."""

from http_fallback.legacy.client import LegacyClient, LegacyConfig
from http_fallback.legacy.model import LegacyMessage, MessageError

__all__ = ["LegacyClient", "LegacyConfig", "LegacyMessage", "MessageError"]
