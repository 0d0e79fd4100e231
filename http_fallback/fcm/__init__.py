"""FCM HTTP v1: the live Firebase Cloud Messaging API, its client and its emulator."""

from http_fallback.lazy import exports

# Imported on first use, so reading the provider's declaration stays cheap.
__getattr__, __all__ = exports(__name__, {
    "client": ("BatchResult", "FcmClient"),
    "config": ("FcmConfig",),
    "model": ("AndroidConfig", "AndroidFcmOptions", "AndroidNotification", "ApnsConfig",
              "ApnsFcmOptions", "FcmOptions", "Message", "Notification", "WebpushConfig",
              "WebpushFcmOptions"),
    "topics": ("TopicResult",),
    "validate": ("MessageError",),
})
