"""FCM HTTP v1: the live Firebase Cloud Messaging API, its client and its emulator."""

from http_fallback.fcm.client import BatchResult, FcmClient
from http_fallback.fcm.config import FcmConfig
from http_fallback.fcm.model import (
    AndroidConfig,
    AndroidFcmOptions,
    AndroidNotification,
    ApnsConfig,
    ApnsFcmOptions,
    FcmOptions,
    Message,
    Notification,
    WebpushConfig,
    WebpushFcmOptions,
)
from http_fallback.fcm.topics import TopicResult
from http_fallback.fcm.validate import MessageError

__all__ = ["AndroidConfig", "AndroidFcmOptions", "AndroidNotification", "ApnsConfig",
           "ApnsFcmOptions", "BatchResult", "FcmClient", "FcmConfig", "FcmOptions", "Message",
           "MessageError", "Notification", "TopicResult", "WebpushConfig", "WebpushFcmOptions"]
