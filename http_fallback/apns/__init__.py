"""Apple Push Notification service: the HTTP/2 client, its emulator, the binary interface."""

from http_fallback.apns.client import ApnsClient
from http_fallback.apns.config import ApnsConfig
from http_fallback.apns.model import Alert, Notification, NotificationError, PushType

__all__ = ["Alert", "ApnsClient", "ApnsConfig", "Notification", "NotificationError", "PushType"]
